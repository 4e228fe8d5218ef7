//! The real binary on real sockets: acknowledged writes survive `kill -9`; rate limits, CORS
//! and request ids on the wire; graceful shutdown on SIGTERM. Every wait has a deadline.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

struct Running {
    child: Child,
    base: String,
}

async fn start(data_dir: &std::path::Path, extra: &[&str]) -> Running {
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
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_envelopes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tmp");
    const UNLIMITED: &[&str] = &[
        "--rate-limit-per-second",
        "1000000",
        "--rate-limit-burst",
        "1000000",
    ];
    let mut server = start(dir.path(), UNLIMITED).await;
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

    let mut server = start(dir.path(), UNLIMITED).await;
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
        let page: serde_json::Value = client
            .get(&url)
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_cors_request_ids_and_graceful_shutdown_on_the_wire() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = start(
        dir.path(),
        &["--rate-limit-per-second", "1", "--rate-limit-burst", "3"],
    )
    .await;
    let client = http_client();
    let mut limited = None;
    for _ in 0..20 {
        let response = client
            .get(format!("{}/api/v1/status", server.base))
            .header("origin", "https://shop.example")
            .send()
            .await
            .expect("get");
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("a burst of 20 requests is rate limited");
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
        let pid = running.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = running.child.try_wait().expect("wait") {
                assert!(exit.success(), "clean exit on SIGTERM, got {exit}");
                break;
            }
            assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
