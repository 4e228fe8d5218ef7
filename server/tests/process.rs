//! The real binary on real sockets: acknowledged writes survive `kill -9` (on SQLite and on
//! PostgreSQL); rate limits, CORS and request ids on the wire; graceful shutdown on SIGTERM,
//! with a request in flight; health and readiness while the server is still opening. Every
//! wait has a deadline.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

struct Running {
    child: Child,
    base: String,
}

/// Starts the binary on `data_dir` and waits (at most 60 s) until `/readyz` says it is ready.
async fn start(data_dir: &std::path::Path, extra: &[&str]) -> Running {
    let running = spawn(data_dir, extra);
    answers_ok(&http_client(), &format!("{}/readyz", running.base)).await;
    running
}

/// Waits (at most 60 s) until a GET of `url` succeeds.
async fn answers_ok(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no success from {url} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the binary on `data_dir` without waiting for it.
fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> Running {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_souk-server"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--p2p", "false", "--grpc-addr", "127.0.0.1:0"])
        .args(extra)
        .env("SOUK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn souk-server");
    let base = format!("http://127.0.0.1:{port}");
    Running { child, base }
}

const UNLIMITED: &[&str] = &[
    "--rate-limit-per-second",
    "1000000",
    "--rate-limit-burst",
    "1000000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_envelopes_survive_kill_9_on_sqlite() {
    acknowledged_envelopes_survive_kill_9(UNLIMITED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_envelopes_survive_kill_9_on_postgres() {
    let database = PgDatabase::create().await;
    let mut flags = UNLIMITED.to_vec();
    flags.extend(["--database-url", database.url.as_str()]);
    acknowledged_envelopes_survive_kill_9(&flags).await;
}

/// Four writers stream listings at the server; once 300 are acknowledged it is killed with
/// SIGKILL, restarted on the same data (`flags` name the database), and every acknowledged
/// listing must be in the store and in search.
async fn acknowledged_envelopes_survive_kill_9(flags: &[&str]) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = start(dir.path(), flags).await;
    let key = seller(42);
    let envelopes: Vec<(String, Vec<u8>)> = (0..2_000)
        .map(|i| {
            let object = listing(
                &key,
                &format!("crash-{i}"),
                &format!("crashtest{i} kettle"),
                100,
            );
            (object.id().to_string(), object.envelope().bytes().to_vec())
        })
        .collect();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = http_client();
    let mut writers = Vec::new();
    for worker in 0..4 {
        let mine: Vec<(String, Vec<u8>)> =
            envelopes.iter().skip(worker).step_by(4).cloned().collect();
        let (client, base, acknowledged) = (
            client.clone(),
            server.base.clone(),
            Arc::clone(&acknowledged),
        );
        writers.push(tokio::spawn(async move {
            for (id, bytes) in mine {
                let body = serde_json::json!({ "envelope": b64(&bytes) });
                let Ok(response) = client
                    .post(format!("{base}/api/v1/envelopes"))
                    .json(&body)
                    .send()
                    .await
                else {
                    break; // the server is gone
                };
                if response.status() == reqwest::StatusCode::CREATED {
                    acknowledged.lock().expect("lock").push(id);
                } else {
                    break;
                }
            }
        }));
    }
    // Kill the server while writes are in flight, once a few hundred were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().expect("lock").len() < 300 {
        assert!(
            Instant::now() < deadline,
            "too slow to acknowledge 300 writes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 300);
    assert!(
        acknowledged.len() < envelopes.len(),
        "the kill came mid-stream"
    );

    let mut server = start(dir.path(), flags).await;
    for id in &acknowledged {
        let response = client
            .get(format!("{}/api/v1/listings/{id}", server.base))
            .send()
            .await
            .expect("get");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "acknowledged {id} is lost from the store"
        );
    }
    // And in search: page through the seller's listings.
    let mut found = std::collections::HashSet::new();
    let mut url = format!(
        "{}/api/v1/listings/search?seller={}&limit=100&sort=newest",
        server.base,
        key.public_key()
    );
    for _ in 0..100 {
        let page = get_json(&client, &url).await;
        for hit in page["hits"].as_array().expect("hits") {
            found.insert(hit["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                url = format!(
                    "{}/api/v1/listings/search?seller={}&limit=100&sort=newest&cursor={cursor}",
                    server.base,
                    key.public_key()
                )
            }
            None => break,
        }
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !found.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged listings are not searchable after the crash",
        missing.len()
    );
    server.child.kill().expect("kill");
    let _ = server.child.wait();
}

/// GET `url` and its JSON body.
async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Sends SIGTERM to the server.
fn terminate(running: &Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// Waits (at most 20 s) for the server to exit, and wants a clean exit.
async fn exits_cleanly(running: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = running.child.try_wait().expect("wait") {
            assert!(exit.success(), "clean exit on SIGTERM, got {exit}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first 429 among at most 20 requests to `url` (from a browser origin).
async fn first_rate_limited(client: &reqwest::Client, url: &str) -> reqwest::Response {
    for _ in 0..20 {
        let response = client
            .get(url)
            .header("origin", "https://shop.example")
            .send()
            .await
            .expect("get");
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return response;
        }
    }
    panic!("a burst of 20 requests to {url} is not rate limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_cors_request_ids_and_graceful_shutdown_on_the_wire() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = start(
        dir.path(),
        &["--rate-limit-per-second", "1", "--rate-limit-burst", "3"],
    )
    .await;
    let client = http_client();
    let limited = first_rate_limited(&client, &format!("{}/api/v1/status", server.base)).await;
    assert!(limited.headers().contains_key("retry-after"));
    // The limit sits inside CORS and the request ids: a browser can read the 429, and the
    // log line of the refusal carries the same id as the reply.
    assert!(limited.headers().contains_key("x-request-id"));
    assert!(
        limited
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let body: serde_json::Value = limited.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "rate_limited");
    // The OpenBazaar route is limited alike and answers in its own error shape.
    let limited = first_rate_limited(
        &client,
        &format!("{}/ob/listings/search?q=kettle", server.base),
    )
    .await;
    assert!(limited.headers().contains_key("retry-after"));
    let body: serde_json::Value = limited.json().await.expect("json error body");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too many requests")),
        "{body}"
    );

    let dir2 = tempfile::tempdir().expect("tmp");
    let mut open = start(dir2.path(), &[]).await;
    let response = client
        .get(format!("{}/api/v1/listings/search", open.base))
        .header("origin", "https://shop.example")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    assert!(response.headers().contains_key("x-request-id"));

    for running in [&mut server, &mut open] {
        terminate(running);
        exits_cleanly(running).await;
    }
}

/// Two inbox servers on real sockets: a message posted at one is copied to the other (the one
/// its recipient's profile lists), where the recipient, offline when it was sent, fetches it
/// after proving its key, and acknowledges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_at_one_inbox_server_is_fetched_from_another() {
    use souk_protocol::{IdentityKey, ValidationContext, pb};
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let flags = ["--inbox-replicate-private", "true"];
    let a = start(dir_a.path(), &flags).await;
    let b = start(dir_b.path(), &flags).await;
    let client = http_client();
    let (alice, bob) = (
        IdentityKey::from_secret_bytes(&[1; 32]),
        IdentityKey::from_secret_bytes(&[2; 32]),
    );

    // Bob's profile names both servers; A has it.
    let profile = profile(&bob, |p| {
        p.inbox_servers = vec![a.base.clone(), b.base.clone()]
    });
    let response = client
        .post(format!("{}/api/v1/envelopes", a.base))
        .json(&serde_json::json!({ "envelope": b64(profile.envelope().bytes()) }))
        .send()
        .await
        .expect("publish");
    assert!(response.status().is_success());

    // Alice writes to Bob at A only.
    let message = pb::Message {
        created_at: now(),
        recipient: bob.public_key().as_bytes().to_vec(),
        order_id: Vec::new(),
        body: Some(pb::message::Body::Chat(pb::Chat {
            text: "Sent while you were away".into(),
        })),
    };
    let sealed = alice
        .seal_message(&message, &ValidationContext::at(now()))
        .expect("valid");
    let response = client
        .post(format!("{}/api/v1/inbox", a.base))
        .header("content-type", "application/x-protobuf")
        .body(sealed.bytes.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 201);

    // Bob comes online and asks B.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let login = |base: String| {
        let client = client.clone();
        let bob = bob.clone();
        async move {
            let address = bob.public_key().to_address();
            let body: serde_json::Value = client
                .post(format!("{base}/api/v1/inbox/{address}/challenge"))
                .send()
                .await
                .expect("challenge")
                .json()
                .await
                .expect("json");
            let text = body["challenge"].as_str().expect("challenge");
            let challenge: [u8; 32] = (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
                .collect::<Vec<_>>()
                .try_into()
                .expect("32 bytes");
            let signature = bob.sign_inbox_challenge(&challenge);
            let body: serde_json::Value = client
                .post(format!("{base}/api/v1/inbox/{address}/session"))
                .json(&serde_json::json!({
                    "challenge": text,
                    "signature": signature.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                }))
                .send()
                .await
                .expect("session")
                .json()
                .await
                .expect("json");
            body["token"].as_str().expect("token").to_string()
        }
    };
    let address = bob.public_key().to_address();
    let list = |base: String, token: String| {
        let (client, address) = (client.clone(), address.clone());
        async move {
            client
                .get(format!("{base}/api/v1/inbox/{address}/messages"))
                .bearer_auth(token)
                .send()
                .await
                .expect("list")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let token = login(b.base.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = list(b.base.clone(), token.clone()).await;
        if page["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the message did not reach the second inbox server within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    use base64::Engine;
    let received = base64::engine::general_purpose::STANDARD
        .decode(page["messages"][0]["sealed"].as_str().expect("sealed"))
        .expect("base64");
    assert_eq!(
        received, sealed.bytes,
        "the copy is byte for byte the original"
    );
    let opened = bob
        .open_message(&received, &ValidationContext::at(now()))
        .expect("bob opens it");
    assert_eq!(opened.sender(), alice.public_key());
    assert_eq!(page["messages"][0]["id"], hex(&sealed.id.0));

    // Acknowledged at B, it is gone there; A still holds its copy until Bob acknowledges it there.
    let response = client
        .post(format!("{}/api/v1/inbox/{address}/ack", b.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "ids": [hex(&sealed.id.0)] }))
        .send()
        .await
        .expect("ack");
    assert_eq!(response.status(), 200);
    let empty = list(b.base.clone(), token.clone()).await;
    assert_eq!(empty["messages"].as_array().map(Vec::len), Some(0));
    let token_a = login(a.base.clone()).await;
    let at_a = list(a.base.clone(), token_a).await;
    assert_eq!(at_a["messages"].as_array().map(Vec::len), Some(1));

    for mut server in [a, b] {
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
}

/// SIGTERM while a request is in flight: the server stops taking connections but finishes the
/// request it is reading (a batch whose body is still arriving), answers it, and exits cleanly;
/// a restart finds every envelope the answer acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = start(dir.path(), UNLIMITED).await;
    let key = seller(43);
    let objects: Vec<_> = (0..200)
        .map(|i| {
            listing(
                &key,
                &format!("term-{i}"),
                &format!("termtest{i} lamp"),
                100,
            )
        })
        .collect();
    let body = serde_json::json!({
        "envelopes": objects.iter().map(|o| b64(o.envelope().bytes())).collect::<Vec<_>>()
    })
    .to_string();
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    // One whole request first, so that the connection is known to be accepted and served.
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut reply = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
        .await
        .expect("healthz answered within 10 s")
        .expect("read");
    assert!(
        reply[..n].starts_with(b"HTTP/1.1 200"),
        "healthz on the kept connection"
    );
    // Then the batch's head and half its body: the request is in flight.
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    stream
        .write_all(
            format!(
                "POST /api/v1/envelopes HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    stream.write_all(first).await.expect("write half the body");
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the server waits for the request in flight"
    );
    stream.write_all(rest).await.expect("write the rest");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 30 s of the last byte")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, json) = answer.split_once("\r\n\r\n").expect("a body");
    let json: serde_json::Value = serde_json::from_str(json).expect("json batch reply");
    assert_eq!(json["accepted"], objects.len(), "{json}");
    exits_cleanly(&mut server).await;

    let mut server = start(dir.path(), UNLIMITED).await;
    let page = get_json(
        &http_client(),
        &format!(
            "{}/api/v1/listings/search?seller={}&limit=1",
            server.base,
            key.public_key()
        ),
    )
    .await;
    assert_eq!(page["total"], objects.len(), "{page}");
    server.child.kill().expect("kill");
    let _ = server.child.wait();
}

/// While a server opens (here it waits for a table another session holds locked, as it would
/// wait for a long index rebuild), its port answers: `/healthz` 200, `/readyz` 503
/// `not_ready` naming the step, the API 503 `starting` with `retry-after` (under `/ob/` with a
/// `reason`). Once it can go on, the API takes over on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_answers_health_and_readiness_while_the_server_opens() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tmp");
    let database = PgDatabase::create().await;
    let flags = ["--database-url", database.url.as_str()];
    // A first run creates the tables and stores a listing.
    let mut server = start(dir.path(), &flags).await;
    let client = http_client();
    let object = listing(&seller(44), "opening", "openingtest kettle", 100);
    let response = client
        .post(format!("{}/api/v1/envelopes", server.base))
        .json(&serde_json::json!({ "envelope": b64(object.envelope().bytes()) }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    terminate(&server);
    exits_cleanly(&mut server).await;

    // Another session holds the envelopes table: the next start cannot get past reading it.
    let mut lock = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut lock)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE envelopes IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .expect("lock");
    let mut server = spawn(dir.path(), &flags);
    answers_ok(&client, &format!("{}/healthz", server.base)).await;
    let response = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the server is starting: "), "{message}");
    // A browser integration's request: the 503 carries CORS and a request id like any reply.
    let response = client
        .get(format!(
            "{}/api/v1/listings/search?q=openingtest",
            server.base
        ))
        .header("origin", "https://shop.example")
        .send()
        .await
        .expect("search");
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("retry-after").as_deref(), Some("5"));
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));
    assert!(header("x-request-id").is_some_and(|id| !id.is_empty()));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "starting", "{body}");
    let body = get_json(
        &client,
        &format!("{}/ob/listings/search?q=openingtest", server.base),
    )
    .await;
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("starting")),
        "{body}"
    );

    // Let it go on: the API takes over on the same port.
    sqlx::query("COMMIT")
        .execute(&mut lock)
        .await
        .expect("commit");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .expect("readyz");
        if response.status().is_success() {
            break;
        }
        assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s of the unlock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = get_json(
        &client,
        &format!("{}/api/v1/listings/search?q=openingtest", server.base),
    )
    .await;
    assert_eq!(body["total"], 1, "{body}");
    terminate(&server);
    exits_cleanly(&mut server).await;
}
