"""An outside gRPC client of souk-server that knows nothing of Souk's schema in advance.

It learns the services through server reflection alone (grpcio + grpcio-reflection from PyPI;
no code generated from this repository), checks health, runs a search, then follows the feed:
first the backlog, then live envelopes. `server/tests/grpc_python.rs` runs it against a real
server and publishes the live envelopes once this script says it has caught up.

Usage: grpc_client.py HOST:PORT BACKLOG LIVE
"""

import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def say(*words):
    print(*words, flush=True)


def main():
    address, backlog, live = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)

    # Everything below comes from reflection.
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for wanted in ("souk.v1.IndexService", "souk.v1.IngestService", "souk.v1.FeedService",
                   "grpc.health.v1.Health"):
        assert wanted in services, f"{wanted} not listed by reflection: {sorted(services)}"
    say("SERVICES", " ".join(sorted(services)))
    pool = descriptor_pool.DescriptorPool(database)

    def method(service, name):
        descriptor = pool.FindServiceByName(service).FindMethodByName(name)
        request = message_factory.GetMessageClass(descriptor.input_type)
        response = message_factory.GetMessageClass(descriptor.output_type)
        path = f"/{service}/{name}"
        if descriptor.server_streaming:
            call = channel.unary_stream(path, request_serializer=request.SerializeToString,
                                        response_deserializer=response.FromString)
        else:
            call = channel.unary_unary(path, request_serializer=request.SerializeToString,
                                       response_deserializer=response.FromString)
        return request, call

    request, check = method("grpc.health.v1.Health", "Check")
    answer = check(request(service="souk.v1.FeedService"), timeout=10)
    assert answer.status == 1, f"FeedService not SERVING: {answer}"  # 1 = SERVING

    request, search = method("souk.v1.IndexService", "Search")
    newest = pool.FindEnumTypeByName("souk.v1.SearchSort").values_by_name["SEARCH_SORT_NEWEST"]
    page = search(request(limit=5, sort=newest.number), timeout=10)
    assert page.total == backlog, f"search total {page.total}, expected {backlog}"
    assert len(page.hits) == 5 and page.next_cursor, page
    for hit in page.hits:
        assert len(hit.id) == 32 and hit.envelope and hit.summary.title, hit
    say("SEARCH", page.total, page.hits[0].summary.title)

    request, search_bad = method("souk.v1.IndexService", "Search")
    try:
        search_bad(request(currency="EURO"), timeout=10)
        raise AssertionError("a bad currency was accepted")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        codes = dict(error.trailing_metadata() or ())
        assert codes.get("souk-error-code") == "invalid_parameter", codes

    listing = pool.FindEnumTypeByName("souk.v1.Kind").values_by_name["KIND_LISTING"].number
    request, subscribe = method("souk.v1.FeedService", "Subscribe")
    events = subscribe(request(kinds=[listing]), timeout=120)
    cursors = []
    for event in events:
        assert event.kind == listing and len(event.id) == 32 and event.envelope, event
        if cursors:
            assert int(event.cursor) > int(cursors[-1]), "cursors rise in ingest order"
        cursors.append(event.cursor)
        if len(cursors) == backlog:
            assert not event.live
            say("CAUGHT_UP", event.cursor)
        elif len(cursors) == backlog + 1:
            assert event.live, "the first event after the backlog is marked live"
        if len(cursors) == backlog + live:
            break
    events.cancel()
    assert len(set(cursors)) == backlog + live
    say("FOLLOWED", len(cursors), cursors[-1])


if __name__ == "__main__":
    main()
