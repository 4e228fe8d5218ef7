//! Inboxes: sealed private messages held for people who may be offline (SPEC.md, "Private
//! messages"; README, "Inboxes").
//!
//! - **Post.** Anyone may post a `SealedMessage` for anyone. The server checks only what it can
//!   without a key ([`souk_protocol::message::inspect_sealed`]: size, shape, recipient), files it
//!   by recipient under its id (SHA-256 of the bytes), and answers only after the commit. Per
//!   recipient quotas (messages and bytes) bound what one inbox can hold; the REST rate limit
//!   bounds each client.
//! - **Replicate.** A message posted by a client (not by another server) is copied, after the
//!   commit, to the recipient's other inbox servers: those in the recipient's current profile here,
//!   or else in its Kademlia inbox record. A copy is posted with `replica=true`, so it is not
//!   copied again. Bounded queue, bounded concurrency, three attempts per server.
//! - **Fetch.** A recipient proves its key by signing a single-use challenge
//!   ([`souk_protocol::message::inbox_auth_digest`]) and gets a session token; with it, it lists
//!   its messages in arrival order and acknowledges them. Acknowledged messages are deleted and
//!   their ids remembered until they would have expired, so late copies are not delivered twice.
//! - **Expire.** A sweeper deletes what passed its TTL.
//!
//! Challenges and sessions live in this process's memory (bounded, short-lived): a server
//! restart ends the sessions and clients simply ask again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use souk_protocol::message::{SealedHeader, inspect_sealed, verify_inbox_auth};
use souk_protocol::{MessageError, Object, PublicKey, Slot};
use tokio::sync::{Semaphore, mpsc};

use crate::config::InboxConfig;
use crate::store::{InboxMessage, InboxPut, Store, StoreError, decode_stored};

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(120);
/// How long a session token is valid.
pub const SESSION_TTL: Duration = Duration::from_secs(600);
/// Most outstanding challenges (and, separately, sessions) in all.
pub const MAX_PENDING: usize = 100_000;
/// Most messages in one page.
pub const MAX_PAGE: u32 = 50;
/// Most ids in one acknowledgement.
pub const MAX_ACK_IDS: usize = 1_000;
/// Replications waiting to be sent; more are dropped (and counted).
pub const REPLICATION_QUEUE: usize = 1_024;
/// Replications in flight at once.
pub const REPLICATION_CONCURRENCY: usize = 8;
/// Attempts per target server.
pub const REPLICATION_ATTEMPTS: u32 = 3;

/// Why an inbox request was refused. Each has a stable code and an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The sealed message is refused (size, shape or recipient).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The recipient's inbox is at its quota.
    #[error(
        "the recipient's inbox is full ({messages} messages, {bytes} bytes held; limits {max_messages} messages, {max_bytes} bytes)"
    )]
    Full {
        /// Messages held.
        messages: i64,
        /// Bytes held.
        bytes: i64,
        /// The message limit.
        max_messages: u32,
        /// The byte limit.
        max_bytes: u64,
    },
    /// The challenge is unknown, used, expired or for someone else.
    #[error("unknown or expired challenge; ask for a new one")]
    BadChallenge,
    /// The answer does not verify for this person and challenge.
    #[error("the challenge answer does not verify for this person")]
    BadAnswer,
    /// No valid session token for this person.
    #[error("a valid session token for this inbox is required (Authorization: Bearer …)")]
    Unauthorized,
    /// Too many ids or a malformed one.
    #[error("{0}")]
    BadRequest(&'static str),
    /// Too many pending challenges or sessions.
    #[error("too many pending inbox sessions; try again shortly")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MailboxError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Message(inner) => inner.code(),
            Self::Full { .. } => "inbox_full",
            Self::BadChallenge => "bad_challenge",
            Self::BadAnswer => "bad_answer",
            Self::Unauthorized => "unauthorized",
            Self::BadRequest(_) => "bad_request",
            Self::Busy => "busy",
            Self::Store(_) => "storage",
        }
    }
}

/// What a post did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Filed now.
    Stored,
    /// Already held.
    Duplicate,
    /// Already delivered to (and acknowledged by) the recipient.
    Delivered,
}

impl Posted {
    /// Stable lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Delivered => "delivered",
        }
    }
}

/// The result of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    /// The message id.
    pub id: [u8; 32],
    /// The recipient.
    pub recipient: PublicKey,
    /// What happened.
    pub status: Posted,
    /// When it expires (Unix seconds), if held.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Default)]
struct Auth {
    challenges: HashMap<[u8; 32], (PublicKey, Instant)>,
    sessions: HashMap<[u8; 32], (PublicKey, Instant)>,
}

impl Auth {
    fn prune(&mut self, now: Instant) {
        self.challenges.retain(|_, (_, until)| *until > now);
        self.sessions.retain(|_, (_, until)| *until > now);
    }
}

/// One message to copy to the recipient's other inbox servers.
#[derive(Debug)]
struct Replica {
    recipient: PublicKey,
    bytes: Arc<Vec<u8>>,
}

/// The inboxes of this server.
#[derive(Debug)]
pub struct Mailbox {
    store: Store,
    config: InboxConfig,
    auth: Mutex<Auth>,
    /// Serialises posts, so a quota holds exactly within this process.
    write: tokio::sync::Mutex<()>,
    replicate: Option<mpsc::Sender<Replica>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn random32() -> Result<[u8; 32], MailboxError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| MailboxError::Busy)?;
    Ok(bytes)
}

impl Mailbox {
    /// A mailbox over `store`. Without `replication` nothing is copied to other servers.
    #[must_use]
    pub fn new(store: Store, config: InboxConfig, replication: Option<Replicator>) -> Self {
        Self {
            store,
            config,
            auth: Mutex::new(Auth::default()),
            write: tokio::sync::Mutex::new(()),
            replicate: replication.map(|r| r.sender),
        }
    }

    /// Files a sealed message. `replica` marks a copy from another inbox server, which is not
    /// copied further.
    ///
    /// # Errors
    /// [`MailboxError::Message`] for a refused message, [`MailboxError::Full`],
    /// [`MailboxError::Store`].
    pub async fn post(&self, bytes: Vec<u8>, replica: bool) -> Result<PostOutcome, MailboxError> {
        let header: SealedHeader = inspect_sealed(&bytes)?;
        let now = unix_now();
        let ttl = i64::try_from(self.config.ttl.as_secs()).unwrap_or(i64::MAX);
        let put = {
            let _serialised = self.write.lock().await;
            self.store
                .inbox_put(
                    &header.id.0,
                    &header.recipient,
                    &bytes,
                    now,
                    now.saturating_add(ttl),
                    i64::from(self.config.max_messages),
                    i64::try_from(self.config.max_bytes).unwrap_or(i64::MAX),
                )
                .await?
        };
        let (status, expires_at) = match put {
            InboxPut::Stored { expires_at } => (Posted::Stored, Some(expires_at)),
            InboxPut::Duplicate { expires_at } => (Posted::Duplicate, Some(expires_at)),
            InboxPut::Delivered => (Posted::Delivered, None),
            InboxPut::Full { messages, bytes } => {
                metrics::counter!("souk_inbox_posts_total", "result" => "full").increment(1);
                return Err(MailboxError::Full {
                    messages,
                    bytes,
                    max_messages: self.config.max_messages,
                    max_bytes: self.config.max_bytes,
                });
            }
        };
        metrics::counter!("souk_inbox_posts_total", "result" => status.as_str()).increment(1);
        if status == Posted::Stored
            && !replica
            && let Some(queue) = &self.replicate
        {
            let job = Replica {
                recipient: header.recipient,
                bytes: Arc::new(bytes),
            };
            if queue.try_send(job).is_err() {
                metrics::counter!("souk_inbox_replications_total", "result" => "dropped")
                    .increment(1);
                tracing::warn!(id = %header.id, "inbox replication queue full; copy not sent");
            }
        }
        Ok(PostOutcome {
            id: header.id.0,
            recipient: header.recipient,
            status,
            expires_at,
        })
    }

    /// A fresh single-use challenge for `person`, and when it expires (Unix seconds).
    ///
    /// # Errors
    /// [`MailboxError::Busy`] when too many are pending.
    pub fn challenge(&self, person: PublicKey) -> Result<([u8; 32], i64), MailboxError> {
        let challenge = random32()?;
        let now = Instant::now();
        let mut auth = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if auth.challenges.len() >= MAX_PENDING {
            auth.prune(now);
            if auth.challenges.len() >= MAX_PENDING {
                return Err(MailboxError::Busy);
            }
        }
        auth.challenges
            .insert(challenge, (person, now + CHALLENGE_TTL));
        let ttl = i64::try_from(CHALLENGE_TTL.as_secs()).unwrap_or(0);
        Ok((challenge, unix_now() + ttl))
    }

    /// Checks an answer to a challenge and opens a session: the token and its expiry (Unix
    /// seconds). The challenge is used up whatever the outcome.
    ///
    /// # Errors
    /// [`MailboxError::BadChallenge`], [`MailboxError::BadAnswer`], [`MailboxError::Busy`].
    pub fn open_session(
        &self,
        person: PublicKey,
        challenge: &[u8; 32],
        answer: &[u8],
    ) -> Result<([u8; 32], i64), MailboxError> {
        let now = Instant::now();
        let mut auth = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match auth.challenges.remove(challenge) {
            Some((owner, until)) if owner == person && until > now => {}
            _ => return Err(MailboxError::BadChallenge),
        }
        if !verify_inbox_auth(&person, challenge, answer) {
            metrics::counter!("souk_inbox_sessions_total", "result" => "bad_answer").increment(1);
            return Err(MailboxError::BadAnswer);
        }
        if auth.sessions.len() >= MAX_PENDING {
            auth.prune(now);
            if auth.sessions.len() >= MAX_PENDING {
                return Err(MailboxError::Busy);
            }
        }
        let token = random32()?;
        auth.sessions.insert(token, (person, now + SESSION_TTL));
        metrics::counter!("souk_inbox_sessions_total", "result" => "opened").increment(1);
        let ttl = i64::try_from(SESSION_TTL.as_secs()).unwrap_or(0);
        Ok((token, unix_now() + ttl))
    }

    fn authorize(&self, person: &PublicKey, token: &[u8; 32]) -> Result<(), MailboxError> {
        let auth = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match auth.sessions.get(token) {
            Some((owner, until)) if owner == person && *until > Instant::now() => Ok(()),
            _ => Err(MailboxError::Unauthorized),
        }
    }

    /// The recipient's messages after `after`, at most `limit` (capped at [`MAX_PAGE`]).
    ///
    /// # Errors
    /// [`MailboxError::Unauthorized`], [`MailboxError::Store`].
    pub async fn fetch(
        &self,
        person: &PublicKey,
        token: &[u8; 32],
        after: i64,
        limit: u32,
    ) -> Result<Vec<InboxMessage>, MailboxError> {
        self.authorize(person, token)?;
        let limit = limit.clamp(1, MAX_PAGE);
        Ok(self
            .store
            .inbox_list(person, after, unix_now(), i64::from(limit))
            .await?)
    }

    /// Acknowledges messages: deletes them and remembers their ids. Returns how many were
    /// deleted here.
    ///
    /// # Errors
    /// [`MailboxError::Unauthorized`], [`MailboxError::BadRequest`] for more than
    /// [`MAX_ACK_IDS`] ids, [`MailboxError::Store`].
    pub async fn ack(
        &self,
        person: &PublicKey,
        token: &[u8; 32],
        ids: &[[u8; 32]],
    ) -> Result<u64, MailboxError> {
        self.authorize(person, token)?;
        if ids.len() > MAX_ACK_IDS {
            return Err(MailboxError::BadRequest(
                "at most 1000 ids per acknowledgement",
            ));
        }
        let ttl = i64::try_from(self.config.ttl.as_secs()).unwrap_or(i64::MAX);
        let deleted = self
            .store
            .inbox_ack(person, ids, unix_now().saturating_add(ttl))
            .await?;
        metrics::counter!("souk_inbox_acknowledged_total").increment(deleted);
        Ok(deleted)
    }

    /// Deletes expired messages and forgets expired challenges and sessions.
    ///
    /// # Errors
    /// [`MailboxError::Store`].
    pub async fn sweep(&self) -> Result<(u64, u64), MailboxError> {
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .prune(Instant::now());
        let swept = self.store.inbox_sweep(unix_now()).await?;
        metrics::counter!("souk_inbox_expired_total").increment(swept.0);
        if let Ok(stats) = self.store.inbox_stats().await {
            #[allow(clippy::cast_precision_loss, reason = "a gauge")]
            {
                metrics::gauge!("souk_inbox_messages").set(stats.messages as f64);
                metrics::gauge!("souk_inbox_bytes").set(stats.bytes as f64);
            }
        }
        Ok(swept)
    }

    /// Runs [`Self::sweep`] every `every` until the process ends.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let mailbox = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match mailbox.sweep().await {
                    Ok((0, _)) => {}
                    Ok((messages, _)) => tracing::info!(messages, "expired inbox messages deleted"),
                    Err(error) => tracing::warn!(%error, "inbox sweep failed"),
                }
            }
        })
    }
}

/// Where a person's inbox servers are listed: the replication task asks this.
pub trait InboxDirectory: Send + Sync + 'static {
    /// The person's inbox servers (base URLs), best first; empty if unknown.
    fn inbox_servers(&self, person: PublicKey) -> impl Future<Output = Vec<String>> + Send;
}

/// Looks a person's inbox servers up in this server's store (the current profile), then in the
/// Kademlia DHT.
#[derive(Debug, Clone)]
pub struct StoreAndNetwork {
    /// The store.
    pub store: Store,
    /// The network, if on.
    pub network: Option<crate::p2p::Network>,
}

impl InboxDirectory for StoreAndNetwork {
    async fn inbox_servers(&self, person: PublicKey) -> Vec<String> {
        if let Ok(Some(bytes)) = self.store.current(&person, &Slot::Profile).await
            && let Ok((_, Object::Profile(profile))) = decode_stored(&bytes)
            && !profile.inbox_servers.is_empty()
        {
            return profile.inbox_servers;
        }
        match &self.network {
            Some(network) => network
                .find_inbox(person)
                .await
                .map(|record| record.servers)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// The task that copies posted messages to the recipient's other inbox servers.
#[derive(Debug)]
pub struct Replicator {
    sender: mpsc::Sender<Replica>,
}

impl Replicator {
    /// Starts the task. `own_url` is this server's public base URL (skipped as a target).
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn start(
        directory: impl InboxDirectory,
        config: &InboxConfig,
    ) -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
            .collect::<Vec<_>>();
        let http = reqwest::Client::builder()
            .tls_certs_only(roots)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("souk-server/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (sender, mut queue) = mpsc::channel::<Replica>(REPLICATION_QUEUE);
        let own = config.public_url.clone();
        let allow_private = config.replicate_private;
        let directory = Arc::new(directory);
        let slots = Arc::new(Semaphore::new(REPLICATION_CONCURRENCY));
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (directory, http, own) = (Arc::clone(&directory), http.clone(), own.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let servers = directory.inbox_servers(job.recipient).await;
                    for server in servers {
                        let base = server.trim_end_matches('/').to_string();
                        if own.as_deref() == Some(base.as_str()) {
                            continue;
                        }
                        if let Err(reason) = replication_target_allowed(&base, allow_private) {
                            tracing::debug!(server = %base, reason, "inbox replica not sent");
                            metrics::counter!("souk_inbox_replications_total", "result" => "skipped").increment(1);
                            continue;
                        }
                        send_replica(&http, &base, &job.bytes).await;
                    }
                });
            }
        });
        Ok(Self { sender })
    }
}

async fn send_replica(http: &reqwest::Client, base: &str, bytes: &Arc<Vec<u8>>) {
    let url = format!("{base}/api/v1/inbox?replica=true");
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=REPLICATION_ATTEMPTS {
        let sent = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(bytes.as_ref().clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                metrics::counter!("souk_inbox_replications_total", "result" => "sent").increment(1);
                return;
            }
            // A refusal (full inbox, bad request) will not change on retry.
            Ok(response) if response.status().is_client_error() && response.status() != 429 => {
                tracing::info!(server = %base, status = %response.status(), "inbox replica refused");
                metrics::counter!("souk_inbox_replications_total", "result" => "refused")
                    .increment(1);
                return;
            }
            Ok(response) => {
                tracing::debug!(server = %base, status = %response.status(), attempt, "inbox replica failed");
            }
            Err(error) => tracing::debug!(server = %base, %error, attempt, "inbox replica failed"),
        }
        if attempt < REPLICATION_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 4;
        }
    }
    metrics::counter!("souk_inbox_replications_total", "result" => "failed").increment(1);
}

/// Whether the server may post to `base`: an http(s) URL whose host is not a loopback, private,
/// link-local or unspecified address literal (nor `localhost`), unless `allow_private`.
///
/// # Errors
/// Why not, in words.
pub fn replication_target_allowed(base: &str, allow_private: bool) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(base).map_err(|_| "not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("not http or https");
    }
    if allow_private {
        return Ok(());
    }
    let private = match url.host() {
        None => return Err("no host"),
        Some(url::Host::Domain(name)) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
    };
    if private {
        Err("a loopback, private or link-local address")
    } else {
        Ok(())
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64.0.0/10
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_never_reaches_internal_addresses_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "https://10.1.2.3",
            "https://192.168.1.1",
            "https://172.16.0.1",
            "https://169.254.169.254",
            "https://100.64.0.1",
            "https://[::1]",
            "https://[fd00::1]",
            "https://[fe80::1]",
            "https://[::ffff:127.0.0.1]",
            "https://0.0.0.0",
        ] {
            assert!(replication_target_allowed(url, false).is_err(), "{url}");
            assert!(replication_target_allowed(url, true).is_ok(), "{url}");
        }
        for url in [
            "https://souk.example.org",
            "http://203.0.113.7:8080",
            "https://[2001:db8::1]",
        ] {
            assert!(replication_target_allowed(url, false).is_ok(), "{url}");
        }
        for url in ["ftp://souk.example.org", "not a url", "file:///etc/passwd"] {
            assert!(replication_target_allowed(url, true).is_err(), "{url}");
        }
    }
}
