//! Inboxes over REST, on SQLite and PostgreSQL: anyone can post a sealed message; only its
//! recipient, after proving the key, can list and acknowledge it; acknowledged messages are gone
//! and stay gone; quotas, paging and expiry hold.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use souk_protocol::samples::SAMPLE_TIME;
use souk_protocol::{IdentityKey, ValidationContext, pb};
use souk_server::config::InboxConfig;
use souk_server::mailbox::{Mailbox, MailboxError, Posted};

use common::*;

fn person(n: u8) -> IdentityKey {
    IdentityKey::from_secret_bytes(&[n; 32])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of a challenge the server sent as hex.
fn challenge_bytes(hex: &str) -> [u8; 32] {
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect::<Vec<_>>()
        .try_into()
        .expect("32 bytes")
}

fn ctx() -> ValidationContext {
    ValidationContext::at(now())
}

/// A sealed chat message from `from` to `to`.
fn sealed(from: &IdentityKey, to: &IdentityKey, text: &str) -> Vec<u8> {
    let message = pb::Message {
        created_at: now().max(SAMPLE_TIME),
        recipient: to.public_key().as_bytes().to_vec(),
        order_id: Vec::new(),
        body: Some(pb::message::Body::Chat(pb::Chat { text: text.into() })),
    };
    from.seal_message(&message, &ctx()).expect("valid").bytes
}

async fn post_raw(server: &TestServer, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    server
        .request(
            Request::post("/api/v1/inbox")
                .header("content-type", content_type)
                .body(Body::from(body))
                .expect("request"),
        )
        .await
}

async fn post(server: &TestServer, bytes: &[u8]) -> (StatusCode, Value) {
    post_raw(server, "application/x-protobuf", bytes.to_vec()).await
}

async fn post_json(
    server: &TestServer,
    uri: &str,
    body: Value,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::post(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    server
        .request(request.body(Body::from(body.to_string())).expect("request"))
        .await
}

async fn get_with(server: &TestServer, uri: &str, token: &str) -> (StatusCode, Value) {
    server
        .request(
            Request::get(uri)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
}

/// Challenge, answer with `key`, return the token (or the refusal).
async fn session_as(
    server: &TestServer,
    inbox: &IdentityKey,
    key: &IdentityKey,
) -> (StatusCode, Value) {
    let address = inbox.public_key().to_address();
    let (status, body) = post_json(
        server,
        &format!("/api/v1/inbox/{address}/challenge"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let challenge_hex = body["challenge"].as_str().expect("challenge").to_string();
    let challenge = challenge_bytes(&challenge_hex);
    let signature = key.sign_inbox_challenge(&challenge);
    post_json(
        server,
        &format!("/api/v1/inbox/{address}/session"),
        json!({ "challenge": challenge_hex, "signature": hex(&signature) }),
        None,
    )
    .await
}

async fn login(server: &TestServer, who: &IdentityKey) -> String {
    let (status, body) = session_as(server, who, who).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().expect("token").to_string()
}

async fn inbox(server: &TestServer, who: &IdentityKey, token: &str, query: &str) -> Value {
    let (status, body) = get_with(
        server,
        &format!(
            "/api/v1/inbox/{}/messages?{query}",
            who.public_key().to_address()
        ),
        token,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn sealed_of(page: &Value) -> Vec<Vec<u8>> {
    use base64::Engine;
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            base64::engine::general_purpose::STANDARD
                .decode(m["sealed"].as_str().expect("sealed"))
                .expect("base64")
        })
        .collect()
}

both!(
    a_posted_message_reaches_only_its_recipient_unchanged,
    |server: TestServer| async move {
        let (alice, bob, carol) = (person(1), person(2), person(3));
        let bytes = sealed(&alice, &bob, "Is the mug still for sale?");
        let (status, body) = post(&server, &bytes).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "stored");
        assert_eq!(body["recipient"], bob.public_key().to_address());
        let id = body["id"].as_str().expect("id").to_string();

        // Posting the same bytes again changes nothing.
        let (status, body) = post(&server, &bytes).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "duplicate");
        assert_eq!(body["id"], id.as_str());

        // Bob reads exactly what was posted, and only Bob can open it.
        let token = login(&server, &bob).await;
        let page = inbox(&server, &bob, &token, "").await;
        assert_eq!(sealed_of(&page), vec![bytes.clone()]);
        assert_eq!(page["messages"][0]["id"], id.as_str());
        let opened = bob.open_message(&bytes, &ctx()).expect("bob opens it");
        assert_eq!(opened.sender(), alice.public_key());

        // Carol's own token does not open Bob's inbox; nor does a token-less request.
        let carol_token = login(&server, &carol).await;
        let (status, body) = get_with(
            &server,
            &format!("/api/v1/inbox/{}/messages", bob.public_key().to_address()),
            &carol_token,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, body) = server
            .get(&format!(
                "/api/v1/inbox/{}/messages",
                bob.public_key().to_address()
            ))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(
            inbox(&server, &carol, &carol_token, "").await["messages"]
                .as_array()
                .expect("messages")
                .is_empty()
        );
    }
);

both!(
    a_session_needs_the_inbox_key_and_a_fresh_challenge,
    |server: TestServer| async move {
        let (bob, mallory) = (person(2), person(4));
        // Mallory answers a challenge for Bob's inbox with her own key.
        let (status, body) = session_as(&server, &bob, &mallory).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "bad_answer");

        // A challenge is used up by its first answer, right or wrong.
        let address = bob.public_key().to_address();
        let (_, body) = post_json(
            &server,
            &format!("/api/v1/inbox/{address}/challenge"),
            json!({}),
            None,
        )
        .await;
        let challenge_hex = body["challenge"].as_str().expect("challenge").to_string();
        let challenge = challenge_bytes(&challenge_hex);
        let answer = json!({
            "challenge": challenge_hex,
            "signature": hex(&bob.sign_inbox_challenge(&challenge)),
        });
        let uri = format!("/api/v1/inbox/{address}/session");
        let (status, first) = post_json(&server, &uri, answer.clone(), None).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (status, again) = post_json(&server, &uri, answer, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(again["error"]["code"], "bad_challenge");

        // A challenge issued for one inbox does not open another.
        let (_, body) = post_json(
            &server,
            &format!(
                "/api/v1/inbox/{}/challenge",
                mallory.public_key().to_address()
            ),
            json!({}),
            None,
        )
        .await;
        let other = body["challenge"].as_str().expect("challenge").to_string();
        let other_bytes = challenge_bytes(&other);
        let (status, body) = post_json(
            &server,
            &uri,
            json!({ "challenge": other, "signature": hex(&bob.sign_inbox_challenge(&other_bytes)) }),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "bad_challenge");

        // Malformed input is refused with a code.
        let (status, body) = post_json(
            &server,
            &uri,
            json!({ "challenge": "zz", "signature": "00" }),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_parameter");
        let (status, body) = post_json(
            &server,
            "/api/v1/inbox/not-an-address/challenge",
            json!({}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
);

both!(
    acknowledged_messages_are_deleted_and_never_delivered_again,
    |server: TestServer| async move {
        let (alice, bob) = (person(1), person(2));
        let first = sealed(&alice, &bob, "first");
        let second = sealed(&alice, &bob, "second");
        for bytes in [&first, &second] {
            assert_eq!(post(&server, bytes).await.0, StatusCode::CREATED);
        }
        let token = login(&server, &bob).await;
        let page = inbox(&server, &bob, &token, "").await;
        let first_id = page["messages"][0]["id"].as_str().expect("id").to_string();
        let address = bob.public_key().to_address();
        let (status, body) = post_json(
            &server,
            &format!("/api/v1/inbox/{address}/ack"),
            json!({ "ids": [first_id] }),
            Some(&token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["deleted"], 1);
        assert_eq!(
            sealed_of(&inbox(&server, &bob, &token, "").await),
            vec![second]
        );

        // A late copy of the acknowledged message (a retry, a replica) is not held again.
        let (status, body) = post(&server, &first).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "delivered");
        assert_eq!(
            inbox(&server, &bob, &token, "").await["messages"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        // Acknowledging needs the token, and well-formed ids.
        let (status, _) = post_json(
            &server,
            &format!("/api/v1/inbox/{address}/ack"),
            json!({ "ids": [] }),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = post_json(
            &server,
            &format!("/api/v1/inbox/{address}/ack"),
            json!({ "ids": ["xyz"] }),
            Some(&token),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_parameter");
    }
);

both!(
    an_inbox_pages_in_arrival_order,
    |server: TestServer| async move {
        let (alice, bob) = (person(1), person(2));
        let sent: Vec<Vec<u8>> = (0..5)
            .map(|i| sealed(&alice, &bob, &format!("message {i}")))
            .collect();
        for bytes in &sent {
            assert_eq!(post(&server, bytes).await.0, StatusCode::CREATED);
        }
        let token = login(&server, &bob).await;
        let mut received = Vec::new();
        let mut after = 0;
        for _ in 0..10 {
            let page = inbox(&server, &bob, &token, &format!("limit=2&after={after}")).await;
            received.extend(sealed_of(&page));
            match page["next"].as_i64() {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(received, sent);
        let (status, body) = get_with(
            &server,
            &format!(
                "/api/v1/inbox/{}/messages?limit=51",
                bob.public_key().to_address()
            ),
            &token,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
);

both!(
    bad_posts_are_refused_with_a_code_and_nothing_is_stored,
    |server: TestServer| async move {
        let (status, body) = post(&server, b"\xff\xffnot a message").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "message_malformed");
        let huge = vec![0u8; souk_protocol::limits::MAX_SEALED_MESSAGE_BYTES + 1];
        let (status, body) = post(&server, &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "message_too_large");
        let (status, body) = post_raw(&server, "text/plain", b"hello".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body["error"]["code"], "unsupported_media_type");
        let (status, body) = post_raw(
            &server,
            "application/json",
            b"{\"sealed\":\"***\"}".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_base64");
        // A message for an invalid recipient key.
        let mut message: pb::SealedMessage =
            prost::Message::decode(sealed(&person(1), &person(2), "x").as_slice())
                .expect("decodes");
        message.recipient = vec![0; 32];
        let (status, body) = post(&server, &prost::Message::encode_to_vec(&message)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_recipient");
        assert_eq!(
            server
                .state
                .store
                .inbox_stats()
                .await
                .expect("stats")
                .messages,
            0
        );
        // The JSON form works too.
        use base64::Engine;
        let bytes = sealed(&person(1), &person(2), "json");
        let (status, body) = post_raw(
            &server,
            "application/json",
            json!({ "sealed": base64::engine::general_purpose::STANDARD.encode(&bytes) })
                .to_string()
                .into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
);

both!(
    malformed_queries_and_bodies_get_the_json_error_shape,
    |server: TestServer| async move {
        let me = person(7);
        let address = me.public_key().to_address();
        let token = login(&server, &me).await;
        // A query axum cannot parse.
        let (status, body) = server
            .request(
                Request::post("/api/v1/inbox?replica=maybe")
                    .header("content-type", "application/x-protobuf")
                    .body(Body::from(sealed(&person(1), &me, "x")))
                    .expect("request"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{body}");
        // A body over the server's request limit, refused before it is read in full.
        let over = vec![0u8; server.state.config.max_body_bytes + 1];
        let (status, body) = post(&server, &over).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["code"], "message_too_large", "{body}");
        let (status, body) = get_with(
            &server,
            &format!("/api/v1/inbox/{address}/messages?limit=many"),
            &token,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{body}");
        // Bodies that are not the JSON asked for.
        let (status, body) = post_json(
            &server,
            &format!("/api/v1/inbox/{address}/session"),
            json!({ "challenge": 7 }),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_json", "{body}");
        let (status, body) = server
            .request(
                Request::post(format!("/api/v1/inbox/{address}/ack"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "text/plain")
                    .body(Body::from("all of them"))
                    .expect("request"),
            )
            .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
        let (status, body) = post_json(
            &server,
            &format!("/api/v1/inbox/{address}/ack"),
            json!({ "ids": "not a list" }),
            Some(&token),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_json", "{body}");
        assert_eq!(
            server
                .state
                .store
                .inbox_stats()
                .await
                .expect("stats")
                .messages,
            0,
            "nothing was stored"
        );
    }
);

both!(
    a_full_inbox_refuses_more_and_keeps_what_it_holds,
    |server: TestServer| async move {
        // Hold the whole server (its temp dir and database), not only the fields used below.
        let server = server;
        let (alice, bob) = (person(1), person(2));
        let mailbox = Mailbox::new(
            server.state.store.clone(),
            InboxConfig {
                public_url: None,
                ttl: std::time::Duration::from_secs(3600),
                max_messages: 3,
                max_bytes: 1024 * 1024,
                replicate_private: false,
            },
            None,
        );
        for i in 0..3 {
            let outcome = mailbox
                .post(sealed(&alice, &bob, &format!("{i}")), false)
                .await
                .expect("room");
            assert_eq!(outcome.status, Posted::Stored);
        }
        let refused = mailbox
            .post(sealed(&alice, &bob, "one too many"), false)
            .await
            .expect_err("full");
        assert!(
            matches!(refused, MailboxError::Full { messages: 3, .. }),
            "{refused}"
        );
        assert_eq!(refused.code(), "inbox_full");
        // Someone else's inbox is not affected.
        let other = mailbox
            .post(sealed(&alice, &person(3), "hi"), false)
            .await
            .expect("room");
        assert_eq!(other.status, Posted::Stored);
        assert_eq!(
            server
                .state
                .store
                .inbox_stats()
                .await
                .expect("stats")
                .messages,
            4
        );

        // The byte quota counts too.
        let small = Mailbox::new(
            server.state.store.clone(),
            InboxConfig {
                public_url: None,
                ttl: std::time::Duration::from_secs(3600),
                max_messages: 100,
                max_bytes: 300,
                replicate_private: false,
            },
            None,
        );
        let refused = small
            .post(sealed(&alice, &person(5), &"x".repeat(400)), false)
            .await
            .expect_err("over the byte quota");
        assert_eq!(refused.code(), "inbox_full");
    }
);

both!(
    expired_messages_are_swept_and_delivery_records_expire_too,
    |server: TestServer| async move {
        // Hold the whole server (its temp dir and database), not only the fields used below.
        let server = server;
        let store = &server.state.store;
        let bob = person(2).public_key();
        let held = [1u8; 32];
        let acked = [2u8; 32];
        // Times in the future of the real clock, so the server's own sweeper (which runs on the
        // real clock) leaves these rows to the test.
        let t = i64::try_from(now()).expect("fits") + 100_000;
        let put = |id: [u8; 32], now: i64, expires: i64| {
            let store = store.clone();
            async move {
                store
                    .inbox_put(&id, &bob, b"sealed bytes", now, expires, 10, 1 << 20)
                    .await
                    .expect("put")
            }
        };
        // How many of Bob's messages are listed at a time.
        let held_at = |at: i64| {
            let store = store.clone();
            async move { store.inbox_list(&bob, 0, at, 10).await.expect("list").len() }
        };
        put(held, t, t + 1_000).await;
        put(acked, t, t + 1_000).await;
        store
            .inbox_ack(&bob, &[acked], t + 1_000)
            .await
            .expect("ack");
        // Acknowledging is per recipient: Carol acknowledging Bob's id does not block it for Bob.
        let carol = person(3).public_key();
        store
            .inbox_ack(&carol, &[held], t + 1_000)
            .await
            .expect("ack");
        assert_eq!(held_at(t + 500).await, 1);
        // Before expiry: one held, and the acknowledged one is refused as delivered.
        assert_eq!(held_at(t + 500).await, 1);
        assert_eq!(
            put(acked, t + 500, t + 1_500).await,
            souk_server::store::InboxPut::Delivered
        );
        // At expiry both go.
        assert_eq!(store.inbox_sweep(t + 1_000).await.expect("sweep"), (1, 2));
        assert_eq!(held_at(t + 1_000).await, 0);
        // An expired message is not listed even before the sweeper runs.
        put([3; 32], t + 2_000, t + 2_100).await;
        assert_eq!(held_at(t + 2_100).await, 0);
        // A sender posting it again then stores it afresh (a new expiry), instead of being told
        // "duplicate" about a copy that is already gone.
        assert_eq!(
            put([3; 32], t + 2_200, t + 3_000).await,
            souk_server::store::InboxPut::Stored {
                expires_at: t + 3_000
            }
        );
        assert_eq!(held_at(t + 2_300).await, 1);
        // While it is held, the same post is a duplicate that keeps the first expiry.
        assert_eq!(
            put([3; 32], t + 2_400, t + 9_000).await,
            souk_server::store::InboxPut::Duplicate {
                expires_at: t + 3_000
            }
        );
    }
);
