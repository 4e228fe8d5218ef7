//! gRPC benchmark, on loopback with real sockets:
//!
//! 1. Search throughput over gRPC and over REST, side by side in one run, with the committed
//!    query mix (`benches/queries.txt`) at 16 concurrent clients (each its own connection, each
//!    decoding the answers: protobuf, or JSON), on the same server and data, in alternating
//!    passes.
//! 2. Feed fan-out: one publisher streams signed listings through `Publish` at a steady rate
//!    while N subscribers follow the feed; reports envelopes/s delivered and the latency from
//!    the publisher's acknowledgement to each delivery (p50/p99 over every delivery).
//!
//! ```sh
//! cargo bench -p souk-server --bench grpc -- --listings 20000 --rate 1000 --subscribers 100
//! ```

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use souk_protocol::pb;
use souk_protocol::pb::feed_service_client::FeedServiceClient;
use souk_protocol::pb::index_service_client::IndexServiceClient;
use souk_protocol::pb::ingest_service_client::IngestServiceClient;
use souk_server::config::Config;
use souk_server::service::SearchParams;

/// The server binary's allocator (`src/main.rs`), so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    listings: usize,
    queries_per_client: usize,
    rate: usize,
    seconds: usize,
    subscribers: usize,
}

fn args() -> Args {
    let mut out = Args {
        listings: 20_000,
        queries_per_client: 300,
        rate: 1_000,
        seconds: 5,
        subscribers: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--listings" => out.listings = value(out.listings),
            "--queries" => out.queries_per_client = value(out.queries_per_client),
            "--rate" => out.rate = value(out.rate),
            "--seconds" => out.seconds = value(out.seconds),
            "--subscribers" => out.subscribers = value(out.subscribers),
            _ => {} // cargo bench passes --bench
        }
    }
    out
}

/// The gRPC request for a query line (the same conversion a gRPC client makes).
fn grpc_request(line: &str) -> pb::SearchRequest {
    let p: SearchParams = serde_urlencoded::from_str(line).expect("query line");
    // The proto enums' names are the REST values upper-cased under a prefix.
    let name = |prefix: &str, value: Option<&str>| {
        value.map(|v| format!("{prefix}_{}", v.to_ascii_uppercase()))
    };
    let sort = p.sort.map(|s| serde_json::to_value(s).expect("sort"));
    pb::SearchRequest {
        q: p.q.unwrap_or_default(),
        category: p.category.unwrap_or_default(),
        r#type: name("LISTING_TYPE", p.kind.as_deref())
            .and_then(|n| pb::ListingType::from_str_name(&n))
            .unwrap_or_default() as i32,
        condition: name("CONDITION", p.condition.as_deref())
            .and_then(|n| pb::Condition::from_str_name(&n))
            .unwrap_or_default() as i32,
        currency: p.currency.unwrap_or_default(),
        price_min: p.price_min,
        price_max: p.price_max,
        ships_to: p.ships_to.unwrap_or_default(),
        seller: Vec::new(),
        min_rating: p.min_rating,
        moderated: p.moderated,
        nsfw: p.nsfw.unwrap_or(false),
        sort: name("SEARCH_SORT", sort.as_ref().and_then(|v| v.as_str()))
            .and_then(|n| pb::SearchSort::from_str_name(&n))
            .unwrap_or_default() as i32,
        limit: 0,
        cursor: String::new(),
    }
}

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

#[allow(clippy::too_many_lines, reason = "one benchmark, read top to bottom")]
async fn run(a: &Args) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = Config::for_tests(dir.path(), None);
    config.search_cache_entries = 0; // every query computed, over both APIs
    let state = souk_server::server::open(config).await.expect("open");
    let now = souk_protocol::ValidationContext::now().now;
    let batches = support::demo_batches(a.listings, now);
    for batch in batches {
        state.ingestor.ingest(batch).await.expect("ingest");
    }

    let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let rest_addr = rest_listener.local_addr().expect("addr");
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc_addr = grpc_listener.local_addr().expect("addr");
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(souk_server::server::serve_all(
        Arc::clone(&state),
        rest_listener,
        Some(grpc_listener),
        async move {
            let _ = stopping.await;
        },
    ));

    // 1. Search: REST and gRPC, alternately, twice each (the first pair warms up).
    let lines = Arc::new(support::query_lines());
    let clients = 16;
    println!("| API | clients | queries | p50 | p99 | throughput, median pass |");
    println!("|---|---|---|---|---|---|");
    // One warm-up pass of each, then `rounds` measured passes alternating which API goes first
    // (the machine is shared: alternating spreads drift over both). Reported: the median
    // pass's throughput and the latency percentiles over every measured query.
    let rounds = 6;
    let mut measured: HashMap<&str, (Vec<f64>, Vec<Duration>)> = HashMap::new();
    for round in 0..=rounds {
        let order = if round % 2 == 0 {
            ["REST", "gRPC"]
        } else {
            ["gRPC", "REST"]
        };
        for api in order {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for client in 0..clients {
                let lines = Arc::clone(&lines);
                let per_client = a.queries_per_client;
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_client);
                    if api == "REST" {
                        let http = reqwest::Client::new();
                        for i in 0..per_client {
                            let line = &lines[(i + client) % lines.len()];
                            let url = format!("http://{rest_addr}/api/v1/listings/search?{line}");
                            let t = Instant::now();
                            let response = http.get(&url).send().await.expect("REST search");
                            assert!(response.status().is_success());
                            // Decoded, as the gRPC client decodes its answer.
                            let page: serde_json::Value =
                                serde_json::from_slice(&response.bytes().await.expect("body"))
                                    .expect("JSON");
                            assert!(page["hits"].is_array());
                            latencies.push(t.elapsed());
                        }
                    } else {
                        let mut index = IndexServiceClient::new(channel(grpc_addr).await);
                        for i in 0..per_client {
                            let request = grpc_request(&lines[(i + client) % lines.len()]);
                            let t = Instant::now();
                            index.search(request).await.expect("gRPC search");
                            latencies.push(t.elapsed());
                        }
                    }
                    latencies
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("client"));
            }
            let wall = started.elapsed();
            if round > 0 {
                #[allow(clippy::cast_precision_loss, reason = "rates")]
                let qps = all.len() as f64 / wall.as_secs_f64();
                let entry = measured.entry(api).or_default();
                entry.0.push(qps);
                entry.1.extend(all);
            }
        }
    }
    for api in ["REST", "gRPC"] {
        let (mut rates, mut latencies) = measured.remove(api).unwrap_or_default();
        rates.sort_by(f64::total_cmp);
        latencies.sort();
        println!(
            "| {api} | {clients} | {rounds} × {} | {:.2} ms | {:.2} ms | **{:.0} queries/s** (passes: {}) |",
            clients * a.queries_per_client,
            support::percentile_ms(&latencies, 0.50),
            support::percentile_ms(&latencies, 0.99),
            support::percentile(&rates, 0.5),
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    // 2. Feed fan-out.
    let total = a.rate * a.seconds;
    let key = souk_protocol::IdentityKey::from_secret_bytes(&[201; 32]);
    let ctx = souk_protocol::ValidationContext::now();
    let envelopes: Vec<Vec<u8>> = (0..total)
        .map(|i| {
            let mut l = souk_protocol::samples::listing(ctx.now - 30, &format!("fan-{i}"), None);
            l.title = format!("Fan-out {i}");
            key.seal(&souk_protocol::Object::Listing(l), &ctx)
                .expect("listing")
                .envelope()
                .bytes()
                .to_vec()
        })
        .collect();
    let acked: Arc<Mutex<HashMap<Vec<u8>, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let since = state
        .store
        .counts()
        .await
        .expect("counts")
        .max_seq
        .to_string();
    let signer = key.public_key().as_bytes().to_vec();
    let mut subscribers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.subscribers);
    for _ in 0..a.subscribers {
        let since = since.clone();
        let signer = signer.clone();
        let ready = ready_tx.clone();
        subscribers.push(tokio::spawn(async move {
            let mut feed = FeedServiceClient::new(channel(grpc_addr).await);
            let mut stream = feed
                .subscribe(pb::SubscribeRequest {
                    signers: vec![signer],
                    since,
                    ..Default::default()
                })
                .await
                .expect("subscribe")
                .into_inner();
            let _ = ready.send(()).await;
            let mut arrivals = Vec::with_capacity(total);
            while arrivals.len() < total {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(event))) => arrivals.push((event.id, Instant::now())),
                    other => panic!("subscriber stopped: {other:?}"),
                }
            }
            arrivals
        }));
    }
    for _ in 0..a.subscribers {
        ready_rx.recv().await.expect("subscriber ready");
    }
    // The publisher: one Publish stream, paced to `rate` envelopes a second in ticks of 10 ms.
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel::<pb::PublishRequest>(1024);
    let mut results = IngestServiceClient::new(channel(grpc_addr).await)
        .publish(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .expect("publish")
        .into_inner();
    let acks = Arc::clone(&acked);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let result = results
                .message()
                .await
                .expect("result")
                .expect("a result per envelope");
            assert_eq!(result.status, pb::PublishStatus::Accepted as i32);
            acks.lock()
                .expect("acks")
                .insert(result.id.clone(), Instant::now());
            n += 1;
        }
    });
    let started = Instant::now();
    let per_tick = (a.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for chunk in envelopes.chunks(per_tick) {
        tick.tick().await;
        for envelope in chunk {
            requests_tx
                .send(pb::PublishRequest {
                    envelope: envelope.clone(),
                })
                .await
                .expect("send");
        }
    }
    drop(requests_tx);
    reader.await.expect("acks");
    let mut latencies = Vec::with_capacity(total * a.subscribers);
    let mut early = 0usize;
    let mut last_delivery = started;
    for subscriber in subscribers {
        let arrivals = subscriber.await.expect("subscriber");
        let acks = acked.lock().expect("acks");
        for (id, at) in arrivals {
            last_delivery = last_delivery.max(at);
            let ack = acks
                .get(&id)
                .copied()
                .expect("delivered envelopes were acknowledged");
            if at < ack {
                early += 1;
                latencies.push(Duration::ZERO);
            } else {
                latencies.push(at - ack);
            }
        }
    }
    latencies.sort();
    let wall = last_delivery - started;
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    let delivered = latencies.len() as f64 / wall.as_secs_f64();
    println!();
    println!("| feed fan-out | value |");
    println!("|---|---|");
    println!(
        "| publisher | {total} listings at {} envelopes/s (one `Publish` stream, {per_tick} per 10 ms) |",
        a.rate
    );
    println!(
        "| subscribers | {} (each its own connection) |",
        a.subscribers
    );
    println!(
        "| delivered | {} events in {:.2} s: **{delivered:.0} envelopes/s** |",
        latencies.len(),
        wall.as_secs_f64()
    );
    println!(
        "| ack → delivered | p50 {:.1} ms, **p99 {:.1} ms**, max {:.1} ms ({early} deliveries arrived before the publisher's ack, counted as 0) |",
        support::percentile_ms(&latencies, 0.50),
        support::percentile_ms(&latencies, 0.99),
        support::percentile_ms(&latencies, 1.0),
    );
    let _ = stop.send(());
    let _ = server.await;
}

fn main() {
    // reqwest is built without a default TLS provider in this workspace; plain HTTP only here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&a));
}
