//! Inboxes: posting sealed messages to a person's inbox servers, and fetching and acknowledging
//! one's own (README, "Inboxes"; SPEC.md, "Private messages").
//!
//! A message is handed to every inbox server given; it counts as delivered when at least one
//! stored it (that server copies it to the others). Fetching proves the wallet's key with a
//! signed challenge, pages through the inbox, and returns the session so the caller can
//! acknowledge what it has safely stored — and only that.

use std::str::FromStr;

use base64::Engine;
use serde::Deserialize;
use souk_protocol::message::inspect_sealed;

use std::sync::Arc;

use crate::client::{Client, on_runtime, parse_server, server_name};
use crate::drafts::hex;
use crate::error::ClientError;
use crate::wallet::Wallet;

/// Most pages read from one inbox in one fetch (50 messages each).
pub const MAX_INBOX_PAGES: usize = 100;

/// How one inbox server took a message.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Delivery {
    /// The server.
    pub server: String,
    /// `stored`, `duplicate` or `delivered` when it holds (or held) the message; empty when it
    /// failed.
    pub status: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// The result of sending one message to a person's inbox servers.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SendReport {
    /// The message id (hex): SHA-256 of the sealed bytes.
    pub id: String,
    /// Whether at least one server holds it durably.
    pub delivered: bool,
    /// One entry per server tried, in order.
    pub deliveries: Vec<Delivery>,
}

/// A message held for the wallet, as fetched (still sealed).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HeldMessage {
    /// Its id (hex).
    pub id: String,
    /// The `SealedMessage` bytes.
    pub sealed: Vec<u8>,
    /// When the server received it (Unix seconds).
    pub received_at: i64,
}

/// What one fetch brought, with the session to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InboxBatch {
    /// The inbox server.
    pub server: String,
    /// The session token (valid about ten minutes) for [`Client::acknowledge`].
    pub token: String,
    /// The messages, in arrival order.
    pub messages: Vec<HeldMessage>,
}

#[derive(Deserialize)]
struct PostJson {
    status: String,
    id: String,
}

#[derive(Deserialize)]
struct ChallengeJson {
    challenge: String,
}

#[derive(Deserialize)]
struct SessionJson {
    token: String,
}

#[derive(Deserialize)]
struct PageJson {
    messages: Vec<HeldJson>,
    next: Option<i64>,
}

#[derive(Deserialize)]
struct HeldJson {
    id: String,
    sealed: String,
    received_at: i64,
}

#[derive(Deserialize)]
struct InboxRecordJson {
    envelope: String,
}

#[derive(Deserialize)]
struct AckJson {
    deleted: u64,
}

/// The 32 bytes of a 64-hex-digit id (a challenge, a message id), as object ids are written.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    souk_protocol::ObjectId::from_str(text).ok().map(|id| id.0)
}

fn bad(server: &str, reason: impl Into<String>) -> ClientError {
    ClientError::BadResponse {
        server: server.into(),
        reason: reason.into(),
    }
}

#[uniffi::export]
impl Client {
    /// Where `person` receives messages: the inbox servers of its current profile (from the
    /// configured index servers), or, if no server holds a profile naming any, of the newest
    /// profile the servers find in the peer-to-peer network's DHT. Either way the list is read
    /// from a profile signed by `person` and checked here.
    ///
    /// # Errors
    /// [`ClientError::NotFound`] when neither names an inbox server; other [`ClientError`]s
    /// for unreachable servers or a record that does not verify.
    pub async fn inbox_servers(&self, person: String) -> Result<Vec<String>, ClientError> {
        match self.get_store(person.clone()).await {
            Ok(store) if !store.profile.inbox_servers.is_empty() => {
                return Ok(store.profile.inbox_servers);
            }
            Ok(_) | Err(ClientError::NotFound { .. }) => {}
            Err(other) => return Err(other),
        }
        let client = self.handle();
        on_runtime(async move { client.inbox_record_here(&person).await }).await
    }

    /// Posts a sealed message to each of `inbox_servers` (the recipient's, from its profile or
    /// its order). Succeeds when at least one server holds it; the report says what each did.
    /// Keep the message and try again later while `delivered` is false.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] if `sealed` is not a well-formed sealed message or no
    /// server is given.
    pub async fn send_message(
        &self,
        inbox_servers: Vec<String>,
        sealed: Vec<u8>,
    ) -> Result<SendReport, ClientError> {
        let client = self.handle();
        on_runtime(async move { client.send_message_here(inbox_servers, sealed).await }).await
    }

    /// Opens the wallet's inbox at `server` (answering its challenge with the identity key) and
    /// reads every held message, up to [`MAX_INBOX_PAGES`] pages. Nothing is deleted: call
    /// `acknowledge` with the ids once they are stored.
    ///
    /// # Errors
    /// [`ClientError`] for a server that cannot be reached, refuses the answer, or answers
    /// nonsense.
    pub async fn fetch_inbox(
        &self,
        wallet: Arc<Wallet>,
        server: String,
    ) -> Result<InboxBatch, ClientError> {
        let client = self.handle();
        on_runtime(async move { client.fetch_inbox_here(&wallet, server).await }).await
    }

    /// Acknowledges messages the wallet has stored: the server deletes them and will not take
    /// them again. Returns how many it deleted.
    ///
    /// # Errors
    /// [`ClientError`]; [`ClientError::InvalidArgument`] for an id that is not 64 hex digits.
    pub async fn acknowledge(
        &self,
        wallet: Arc<Wallet>,
        server: String,
        token: String,
        ids: Vec<String>,
    ) -> Result<u64, ClientError> {
        let client = self.handle();
        on_runtime(async move { client.acknowledge_here(&wallet, server, token, ids).await }).await
    }
}

impl Client {
    /// The DHT inbox record of `person`, through the first configured server that has one;
    /// the record is the person's signed profile, opened and checked here.
    async fn inbox_record_here(&self, person: &str) -> Result<Vec<String>, ClientError> {
        let key = souk_protocol::PublicKey::from_str(person).map_err(|e| {
            ClientError::InvalidArgument {
                name: "person".into(),
                reason: e.to_string(),
            }
        })?;
        let mut last = None;
        for server in self.servers() {
            let url = parse_server(&server)?;
            let endpoint = Self::url(&url, &format!("api/v1/network/inbox/{}", key.to_hex()))?;
            let record: InboxRecordJson = match self.call(&url, self.http().get(endpoint)).await {
                Ok(record) => record,
                Err(error) => {
                    last = Some(error);
                    continue;
                }
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(record.envelope.as_bytes())
                .map_err(|_| bad(&server, "the inbox record is not base64"))?;
            let opened = souk_protocol::open(&bytes, &souk_protocol::ValidationContext::now())
                .map_err(|e| bad(&server, format!("the inbox record does not verify: {e}")))?;
            match opened.object() {
                souk_protocol::Object::Profile(p)
                    if opened.signer() == key && !p.inbox_servers.is_empty() =>
                {
                    return Ok(p.inbox_servers.clone());
                }
                _ => return Err(bad(&server, "the inbox record is not the person's profile")),
            }
        }
        Err(last.unwrap_or(ClientError::NotFound {
            what: format!("no inbox servers are known for {person}"),
        }))
    }

    /// `send_message`, on the caller's runtime.
    async fn send_message_here(
        &self,
        inbox_servers: Vec<String>,
        sealed: Vec<u8>,
    ) -> Result<SendReport, ClientError> {
        let header = inspect_sealed(&sealed).map_err(|e| ClientError::InvalidArgument {
            name: "sealed".into(),
            reason: e.to_string(),
        })?;
        if inbox_servers.is_empty() {
            return Err(ClientError::InvalidArgument {
                name: "inbox_servers".into(),
                reason: "give at least one inbox server".into(),
            });
        }
        let id = header.id.to_string();
        let mut deliveries = Vec::new();
        for server in inbox_servers {
            let outcome = async {
                let url = parse_server(&server)?;
                let endpoint = Self::url(&url, "api/v1/inbox")?;
                let request = self
                    .http()
                    .post(endpoint)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(sealed.clone());
                let answer: PostJson = self.call(&url, request).await?;
                if answer.id != id {
                    return Err(bad(
                        &server,
                        "the server filed the message under another id",
                    ));
                }
                Ok(answer.status)
            }
            .await;
            deliveries.push(match outcome {
                Ok(status) => Delivery {
                    server,
                    status,
                    error: None,
                },
                Err(error) => Delivery {
                    server,
                    status: String::new(),
                    error: Some(error.to_string()),
                },
            });
        }
        Ok(SendReport {
            id,
            delivered: deliveries.iter().any(|d| d.error.is_none()),
            deliveries,
        })
    }

    /// `fetch_inbox`, on the caller's runtime.
    async fn fetch_inbox_here(
        &self,
        wallet: &Wallet,
        server: String,
    ) -> Result<InboxBatch, ClientError> {
        let url = parse_server(&server)?;
        let name = server_name(&url);
        let person = wallet.keychain().identity().public_key().to_hex();
        let challenge: ChallengeJson = self
            .call(
                &url,
                self.http().post(Self::url(
                    &url,
                    &format!("api/v1/inbox/{person}/challenge"),
                )?),
            )
            .await?;
        let challenge_bytes = unhex32(&challenge.challenge)
            .ok_or_else(|| bad(&name, "the challenge is not 32 bytes of hex"))?;
        let answer = wallet
            .keychain()
            .identity()
            .sign_inbox_challenge(&challenge_bytes);
        let session: SessionJson = self
            .call(
                &url,
                self.http()
                    .post(Self::url(&url, &format!("api/v1/inbox/{person}/session"))?)
                    .json(&serde_json::json!({
                        "challenge": challenge.challenge,
                        "signature": hex(&answer),
                    })),
            )
            .await?;
        let mut messages = Vec::new();
        let mut after = 0;
        for _ in 0..MAX_INBOX_PAGES {
            let mut endpoint = Self::url(&url, &format!("api/v1/inbox/{person}/messages"))?;
            endpoint
                .query_pairs_mut()
                .append_pair("after", &after.to_string())
                .append_pair("limit", "50");
            let page: PageJson = self
                .call(&url, self.http().get(endpoint).bearer_auth(&session.token))
                .await?;
            for held in page.messages {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(held.sealed.as_bytes())
                    .map_err(|_| bad(&name, "a held message is not base64"))?;
                // The server must hand out exactly what was posted: the id is the hash.
                let header = inspect_sealed(&sealed)
                    .map_err(|e| bad(&name, format!("held message: {e}")))?;
                if header.id.to_string() != held.id {
                    return Err(bad(&name, "a held message does not match its id"));
                }
                if header.recipient != wallet.keychain().identity().public_key() {
                    return Err(bad(&name, "the inbox holds a message for someone else"));
                }
                messages.push(HeldMessage {
                    id: held.id,
                    sealed,
                    received_at: held.received_at,
                });
            }
            match page.next {
                Some(next) if next > after => after = next,
                _ => break,
            }
        }
        Ok(InboxBatch {
            server: name,
            token: session.token,
            messages,
        })
    }

    /// `acknowledge`, on the caller's runtime.
    async fn acknowledge_here(
        &self,
        wallet: &Wallet,
        batch_server: String,
        token: String,
        ids: Vec<String>,
    ) -> Result<u64, ClientError> {
        if let Some(bad_id) = ids.iter().find(|id| unhex32(id).is_none()) {
            return Err(ClientError::InvalidArgument {
                name: "ids".into(),
                reason: format!("{bad_id:.70} is not a message id (64 hex digits)"),
            });
        }
        let url = parse_server(&batch_server)?;
        let person = wallet.keychain().identity().public_key().to_hex();
        let mut deleted = 0;
        for chunk in ids.chunks(1_000) {
            let answer: AckJson = self
                .call(
                    &url,
                    self.http()
                        .post(Self::url(&url, &format!("api/v1/inbox/{person}/ack"))?)
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "ids": chunk })),
                )
                .await?;
            deleted += answer.deleted;
        }
        Ok(deleted)
    }
}
