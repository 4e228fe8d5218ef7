//! The client against real index servers on loopback, and against servers that lie, stall,
//! babble or flood: what the phone shows is always what the seller signed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use prost::Message;
use souk_mobile_core::{
    Client, ClientConfig, ClientError, ListingDraft, ProfileDraft, PublishStatus, SearchQuery,
    Sort, Wallet,
};
use souk_protocol::{pb, samples};
use tokio::net::TcpListener;

/// A real `souk-server` (SQLite in a temp dir) serving on a loopback port.
struct RealServer {
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RealServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = souk_server::config::Config::for_tests(dir.path(), None);
        let state = souk_server::server::open(config)
            .await
            .expect("server opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(souk_server::server::serve(state, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            _dir: dir,
            stop: Some(stop),
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// How the tampering proxy changes what passes through it.
#[derive(Clone, Copy)]
enum Tamper {
    /// Raises the price shown in each hit's summary (the envelope is left alone).
    SummaryPrice,
    /// Re-encodes each hit's envelope with a lower price, keeping the seller's signature.
    EnvelopePrice,
}

fn tamper_hit(hit: &mut serde_json::Value, how: Tamper) {
    match how {
        Tamper::SummaryPrice => {
            hit["summary"]["price"]["amount"] = serde_json::json!("1");
        }
        Tamper::EnvelopePrice => {
            let b64 = hit["envelope"].as_str().expect("envelope");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("b64");
            let mut envelope = pb::Envelope::decode(bytes.as_slice()).expect("envelope");
            let mut listing = pb::Listing::decode(envelope.payload.as_slice()).expect("listing");
            if let Some(price) = listing.price.as_mut() {
                price.amount = 1;
            }
            envelope.payload = listing.encode_to_vec();
            hit["envelope"] = serde_json::json!(
                base64::engine::general_purpose::STANDARD.encode(envelope.encode_to_vec())
            );
            hit["summary"]["price"]["amount"] = serde_json::json!("1");
        }
    }
}

/// A proxy in front of `upstream` that changes every listing it passes on.
async fn tampering_proxy(upstream: &str, how: Tamper) -> String {
    // reqwest is built without a default TLS provider; the proxy needs one to build a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = upstream.to_owned();
    let app = axum::Router::new().fallback(move |request: Request| {
        let upstream = upstream.clone();
        async move {
            let target = format!(
                "{upstream}{}",
                request.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            let response = reqwest::get(&target).await.expect("upstream answers");
            let status = response.status().as_u16();
            let bytes = response.bytes().await.expect("upstream body");
            let mut body: serde_json::Value =
                serde_json::from_slice(&bytes).expect("upstream json");
            if let Some(hits) = body.get_mut("hits").and_then(|h| h.as_array_mut()) {
                hits.iter_mut().for_each(|h| tamper_hit(h, how));
            } else if body.get("summary").is_some() {
                tamper_hit(&mut body, how);
            }
            (
                StatusCode::from_u16(status).expect("status"),
                axum::Json(body),
            )
                .into_response()
        }
    });
    serve(app).await
}

/// A server that accepts connections and never answers.
async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: a test makes a handful of connections.
        while held.len() < 64 {
            match listener.accept().await {
                Ok((socket, _)) => held.push(socket),
                Err(_) => break,
            }
        }
    });
    format!("http://{addr}")
}

/// A server that answers 200 with whatever `body` is.
async fn fixed_server(body: Bytes) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { Response::new(axum::body::Body::from(body)) }
    });
    serve(app).await
}

/// Generous limits: a loaded CI machine must not turn a real server's answer into a timeout.
/// Tests of timeouts set their own.
fn config(servers: Vec<String>) -> ClientConfig {
    ClientConfig {
        timeout_ms: 20_000,
        connect_timeout_ms: 5_000,
        ..ClientConfig::new(servers)
    }
}

fn wallet() -> Arc<Wallet> {
    Wallet::restore(samples::TEST_MNEMONIC.into(), String::new()).expect("test wallet")
}

fn mug(slug: &str) -> ListingDraft {
    let mut draft = ListingDraft::from_wire(&samples::listing(samples::SAMPLE_TIME, slug, None))
        .expect("sample listing");
    draft.expires_at = 0;
    draft
}

fn text(q: &str) -> SearchQuery {
    SearchQuery {
        text: Some(q.into()),
        ..SearchQuery::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_search_get_and_withdraw_against_a_real_server() {
    let server = RealServer::start().await;
    let client = Client::new(config(vec![server.url.clone()])).expect("client");
    let wallet = wallet();

    let signed = wallet.sign_listing(mug("blue-mug")).expect("signs");
    let outcome = client.publish(signed.bytes.clone()).await.expect("publish");
    assert_eq!(outcome.status, PublishStatus::Accepted);
    assert_eq!(outcome.id, signed.id);
    assert_eq!(outcome.stored_at, vec![server.url.clone()]);
    let again = client.publish(signed.bytes.clone()).await.expect("publish");
    assert_eq!(again.status, PublishStatus::Duplicate);

    let page = client.search(text("stonew")).await.expect("search");
    assert_eq!(page.dropped, vec![]);
    assert_eq!(page.hits.len(), 1);
    let hit = &page.hits[0];
    assert_eq!(hit.id, signed.id);
    assert_eq!(hit.seller, wallet.identity_address());
    assert_eq!(hit.listing.title, "Hand-thrown stoneware mug, 350 ml");
    assert_eq!(hit.listing.price.amount, 2_400);
    assert_eq!(hit.envelope, signed.bytes);

    let filtered = client
        .search(SearchQuery {
            currency: Some("EUR".into()),
            price_max: Some(23.99),
            sort: Some(Sort::PriceAsc),
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(filtered.hits.len(), 0, "24.00 EUR is above 23.99");

    let by_id = client.get_listing(signed.id.clone()).await.expect("by id");
    assert!(by_id.current);
    let by_slug = client
        .get_store_listing(wallet.identity_address(), "blue-mug".into())
        .await
        .expect("by slug");
    assert_eq!(by_slug.id, signed.id);

    let profile = ProfileDraft {
        store_name: "Blue Clay Workshop".into(),
        about: "Stoneware from Porto".into(),
        ..ProfileDraft::default()
    };
    let signed_profile = wallet.sign_profile(profile.clone()).expect("profile");
    client
        .publish(signed_profile.bytes)
        .await
        .expect("publish profile");
    let store = client
        .get_store(wallet.identity_hex())
        .await
        .expect("store");
    assert_eq!(store.profile, profile);
    assert_eq!(store.seller, wallet.identity_address());
    let listings = client
        .store_listings(wallet.identity_address(), Some(10), None)
        .await
        .expect("store listings");
    assert_eq!(listings.hits.len(), 1);

    let withdrawal = wallet
        .sign_tombstone("blue-mug".into(), "sold".into())
        .expect("tombstone");
    assert!(withdrawal.created_at > signed.created_at);
    client.publish(withdrawal.bytes).await.expect("withdraw");
    assert!(
        client
            .search(text("stoneware"))
            .await
            .expect("search")
            .hits
            .is_empty()
    );
    let old = client
        .get_listing(signed.id.clone())
        .await
        .expect("old version");
    assert!(!old.current, "a withdrawn listing is not current");
    assert_eq!(
        client.publish(signed.bytes).await.expect("again").status,
        PublishStatus::Duplicate,
        "the old version is still stored, so it is a duplicate"
    );
    let older = wallet
        .sign_listing_at(mug("blue-mug"), signed.created_at - 60)
        .expect("an older version");
    let stale = client.publish(older.bytes).await.expect("publish older");
    assert!(
        matches!(stale.status, PublishStatus::Stale { .. }),
        "{stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_changes_a_price_gets_its_hits_dropped_and_reported() {
    let server = RealServer::start().await;
    let wallet = wallet();
    let honest = Client::new(config(vec![server.url.clone()])).expect("client");
    let signed = wallet.sign_listing(mug("green-mug")).expect("signs");
    honest.publish(signed.bytes).await.expect("publish");

    for (how, expected) in [
        (
            Tamper::SummaryPrice,
            "summary's price.amount does not match",
        ),
        (Tamper::EnvelopePrice, "bad_signature"),
    ] {
        let proxy = tampering_proxy(&server.url, how).await;
        let client = Client::new(config(vec![proxy.clone()])).expect("client");

        let page = client.search(text("mug")).await.expect("search answers");
        assert!(page.hits.is_empty(), "a tampered hit is never shown");
        assert_eq!(page.dropped.len(), 1);
        assert_eq!(page.dropped[0].server, proxy);
        assert_eq!(page.dropped[0].id, signed.id);
        assert!(
            page.dropped[0].reason.contains(expected),
            "{}",
            page.dropped[0].reason
        );

        let err = client
            .get_listing(signed.id.clone())
            .await
            .expect_err("refused");
        match &err {
            ClientError::Tampered { server, id, reason } => {
                assert_eq!(server, &proxy);
                assert_eq!(id, &signed.id);
                assert!(reason.contains(expected), "{reason}");
            }
            other => panic!("expected Tampered, got {other:?}"),
        }
        assert!(err.to_string().contains("failed verification"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_server_is_passed_over_for_the_next_one() {
    let server = RealServer::start().await;
    let wallet = wallet();
    let signed = wallet.sign_listing(mug("red-mug")).expect("signs");
    Client::new(config(vec![server.url.clone()]))
        .expect("client")
        .publish(signed.bytes)
        .await
        .expect("publish");

    let proxy = tampering_proxy(&server.url, Tamper::SummaryPrice).await;
    let lagging = RealServer::start().await;
    let client = Client::new(config(vec![
        lagging.url.clone(),
        proxy.clone(),
        server.url.clone(),
    ]))
    .expect("client");
    let listing = client
        .get_listing(signed.id.clone())
        .await
        .expect("from the honest one");
    assert_eq!(listing.listing.price.amount, 2_400);
    // A page of forged hits sends the search on too; the forger is named.
    let proxy_first = Client::new(config(vec![proxy, server.url.clone()])).expect("client");
    let page = proxy_first.search(text("mug")).await.expect("search");
    assert_eq!(page.server, server.url);
    assert_eq!(page.hits.len(), 1);
    assert!(
        page.failed_servers.iter().any(|f| f.code == "tampered"),
        "{:?}",
        page.failed_servers
    );
    // The lagging server's "not found" and the proxy's forgery did not end the search.
    let only_lagging = Client::new(config(vec![lagging.url.clone()])).expect("client");
    assert_eq!(
        only_lagging
            .get_listing(signed.id.clone())
            .await
            .expect_err("not there")
            .code(),
        "not_found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_garbage_and_flooding_servers_fail_cleanly_and_the_next_answers() {
    let server = RealServer::start().await;
    let silent = silent_server().await;
    let garbage = fixed_server(Bytes::from_static(b"<html>not json</html>")).await;
    let flood = fixed_server(Bytes::from(vec![b'x'; 2 * 1024 * 1024])).await;
    let mut cfg = config(vec![
        silent.clone(),
        garbage.clone(),
        flood.clone(),
        server.url.clone(),
    ]);
    cfg.max_response_bytes = 1024 * 1024;
    cfg.timeout_ms = 1_000;
    let client = Client::new(cfg).expect("client");

    let page = client
        .search(text("anything"))
        .await
        .expect("the real server answers");
    assert_eq!(page.server, server.url);
    let codes: Vec<(&str, &str)> = page
        .failed_servers
        .iter()
        .map(|f| (f.server.as_str(), f.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (silent.as_str(), "timeout"),
            (garbage.as_str(), "bad_response"),
            (flood.as_str(), "too_large"),
        ]
    );

    let mut cfg = config(vec![silent, garbage]);
    cfg.timeout_ms = 300;
    let only_bad = Client::new(cfg).expect("client");
    match only_bad.search(text("anything")).await {
        Err(ClientError::AllServersFailed { failures }) => assert_eq!(failures.len(), 2),
        other => panic!("expected AllServersFailed, got {other:?}"),
    }
    let unreachable = Client::new(config(vec!["http://127.0.0.1:9".into()])).expect("client");
    let err = unreachable
        .publish(vec![1, 2, 3])
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(err.code(), "all_servers_failed", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_page_through_every_hit_once_on_the_server_that_made_them() {
    let server = RealServer::start().await;
    let wallet = wallet();
    let client = Client::new(config(vec![server.url.clone()])).expect("client");
    for i in 0..7 {
        let signed = wallet
            .sign_listing(mug(&format!("mug-{i}")))
            .expect("signs");
        client.publish(signed.bytes).await.expect("publish");
    }
    let mut seen = Vec::new();
    let mut query = SearchQuery {
        limit: Some(3),
        ..SearchQuery::default()
    };
    for _ in 0..10 {
        let page = client.search(query.clone()).await.expect("page");
        assert_eq!(page.total, 7);
        seen.extend(page.hits.iter().map(|h| h.id.clone()));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "seven hits over the pages");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7, "each once");
    let bad = client
        .search(SearchQuery {
            cursor: Some("nonsense".into()),
            ..SearchQuery::default()
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(bad.code(), "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_refuse_what_breaks_the_protocol_and_the_client_says_why() {
    let server = RealServer::start().await;
    let client = Client::new(config(vec![server.url.clone()])).expect("client");
    let mut bytes = wallet().sign_listing(mug("grey-mug")).expect("signs").bytes;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    match client.publish(bytes).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, "bad_signature"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let err = client
        .search(SearchQuery {
            price_min: Some(-1.0),
            ..SearchQuery::default()
        })
        .await
        .expect_err("refused filter");
    match err {
        ClientError::Server { status, code, .. } => {
            assert_eq!((status, code.as_str()), (400, "invalid_parameter"));
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert_eq!(
        client
            .get_listing("00".repeat(32))
            .await
            .expect_err("absent")
            .code(),
        "not_found"
    );
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    assert_eq!(
        Client::new(config(vec![])).expect_err("no servers").code(),
        "no_servers"
    );
    for bad in [
        "ftp://example.org",
        "not a url",
        "https://example.org/?q=1",
        "http://index.example.org",
    ] {
        let err = Client::new(config(vec![bad.into()])).expect_err(bad);
        assert_eq!(err.code(), "invalid_url", "{bad}: {err}");
    }
    let client = Client::new(config(vec!["https://index.example.org/souk".into()])).expect("ok");
    assert_eq!(client.servers(), vec!["https://index.example.org/souk"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_timeout_is_bounded_even_on_a_single_threaded_caller() {
    let silent = silent_server().await;
    let mut cfg = config(vec![silent.clone()]);
    cfg.timeout_ms = 200;
    let client = Client::new(cfg).expect("client");
    let err = tokio::time::timeout(Duration::from_secs(10), client.search(text("x")))
        .await
        .expect("the client gives up by itself")
        .expect_err("timeout");
    assert_eq!(err.code(), "timeout", "{err}");
}

/// A server that holds no profile of a person but finds its inbox record in the DHT: the
/// client takes the inbox servers from the signed profile in the record, and refuses a record
/// signed by someone else. A real server answers first from the stored profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_servers_come_from_a_signed_profile_or_a_checked_dht_record() {
    use base64::Engine;
    let person = souk_protocol::IdentityKey::from_secret_bytes(&[41; 32]);
    let stranger = souk_protocol::IdentityKey::from_secret_bytes(&[42; 32]);
    let record_of = |signer: &souk_protocol::IdentityKey| {
        let mut profile = samples::profile(samples::SAMPLE_TIME);
        profile.inbox_servers = vec!["https://inbox.example.org".into()];
        let signed = signer
            .seal(
                &souk_protocol::Object::Profile(profile),
                &souk_protocol::ValidationContext::at(samples::SAMPLE_TIME),
            )
            .expect("valid profile");
        serde_json::json!({
            "person": person.public_key().to_address(),
            "servers": ["https://inbox.example.org"],
            "created_at": samples::SAMPLE_TIME,
            "envelope": base64::engine::general_purpose::STANDARD.encode(signed.envelope().bytes()),
        })
    };
    let dht = |record: serde_json::Value| {
        axum::Router::new()
            .route(
                "/api/v1/stores/{seller}",
                axum::routing::get(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({"error": {"code": "not_found", "message": "no profile"}})),
                    )
                }),
            )
            .route(
                "/api/v1/network/inbox/{person}",
                axum::routing::get(move || {
                    let record = record.clone();
                    async move { axum::Json(record) }
                }),
            )
    };
    let address = person.public_key().to_address();

    let honest = serve(dht(record_of(&person))).await;
    let client = Client::new(ClientConfig::new(vec![honest])).expect("client");
    assert_eq!(
        client.inbox_servers(address.clone()).await.expect("found"),
        vec!["https://inbox.example.org".to_string()]
    );

    let forged = serve(dht(record_of(&stranger))).await;
    let client = Client::new(ClientConfig::new(vec![forged])).expect("client");
    let refused = client
        .inbox_servers(address.clone())
        .await
        .expect_err("forged");
    assert!(
        matches!(refused, ClientError::BadResponse { .. }),
        "{refused:?}"
    );

    // A real server with the profile answers from it.
    let server = RealServer::start().await;
    let client = Client::new(ClientConfig::new(vec![server.url.clone()])).expect("client");
    let mut profile = samples::profile(samples::SAMPLE_TIME);
    profile.inbox_servers = vec![server.url.clone()];
    let signed = person
        .seal(
            &souk_protocol::Object::Profile(profile),
            &souk_protocol::ValidationContext::now(),
        )
        .expect("valid");
    client
        .publish(signed.envelope().bytes().to_vec())
        .await
        .expect("published");
    assert_eq!(
        client.inbox_servers(address).await.expect("found"),
        vec![server.url.clone()]
    );
}
