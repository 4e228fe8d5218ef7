//! The [`Client`]: talks to one or more index servers, verifies everything they send, and
//! falls back to the next server when one fails.
//!
//! Network calls run on the core's own tokio runtime (two worker threads, started on first
//! use), so the foreign side may await them from any executor: Kotlin coroutines, Swift
//! async, Python asyncio.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use souk_protocol::{ObjectId, PublicKey, ValidationContext};
use url::Url;

use crate::drafts::{Condition, ListingType};
use crate::error::{ClientError, ServerFailure};
use crate::verify::{
    DroppedHit, HitJson, StoreJson, VerifiedListing, VerifiedStore, verify_hit, verify_hits,
    verify_store,
};

/// Largest answer the client reads from a server by default: a full page of 100 hits of
/// maximum-size envelopes, base64, with summaries, fits.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Default time allowed for a whole request, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default time allowed to connect, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// How the client reaches index servers.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientConfig {
    /// Server base URLs (`https://…`, or `http://` for loopback and tests), tried in order.
    pub servers: Vec<String>,
    /// Time allowed for one request to one server, in milliseconds.
    #[uniffi(default = 10000)]
    pub timeout_ms: u64,
    /// Time allowed to connect to one server, in milliseconds.
    #[uniffi(default = 5000)]
    pub connect_timeout_ms: u64,
    /// Largest answer read from a server, in bytes; a larger one is cut off and the server
    /// counted as failed.
    #[uniffi(default = 16777216)]
    pub max_response_bytes: u64,
}

impl ClientConfig {
    /// A configuration with the defaults for `servers`.
    #[must_use]
    pub fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// How search results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best text match first (the default with text).
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Newest first (the default without text).
    Newest,
    /// Best-rated seller first.
    Rating,
}

impl Sort {
    /// The API name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relevance => "relevance",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
            Self::Newest => "newest",
            Self::Rating => "rating",
        }
    }
}

/// A search: every filter and sort the server's `GET /api/v1/listings/search` has.
#[derive(Debug, Clone, PartialEq, Default, uniffi::Record)]
pub struct SearchQuery {
    /// Free text over title, tags and description; the last word matches as a prefix too.
    #[uniffi(default)]
    pub text: Option<String>,
    /// Category path (includes sub-categories).
    #[uniffi(default)]
    pub category: Option<String>,
    /// Listing type.
    #[uniffi(default)]
    pub listing_type: Option<ListingType>,
    /// Condition.
    #[uniffi(default)]
    pub condition: Option<Condition>,
    /// Currency code.
    #[uniffi(default)]
    pub currency: Option<String>,
    /// Lowest price in major units (e.g. 12.5).
    #[uniffi(default)]
    pub price_min: Option<f64>,
    /// Highest price in major units.
    #[uniffi(default)]
    pub price_max: Option<f64>,
    /// Country (ISO 3166-1 alpha-2) the listing must ship to.
    #[uniffi(default)]
    pub ships_to: Option<String>,
    /// Only this seller's listings (address).
    #[uniffi(default)]
    pub seller: Option<String>,
    /// Lowest average seller rating, 0-5.
    #[uniffi(default)]
    pub min_rating: Option<f64>,
    /// Only listings that accept a moderator (`true`) or that do not (`false`).
    #[uniffi(default)]
    pub moderated: Option<bool>,
    /// Include listings marked not safe for work.
    #[uniffi(default)]
    pub nsfw: Option<bool>,
    /// Order.
    #[uniffi(default)]
    pub sort: Option<Sort>,
    /// Hits per page, 1-100 (server default 20).
    #[uniffi(default)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (it names the server that made it).
    #[uniffi(default)]
    pub cursor: Option<String>,
}

/// One value of a facet and how many listings have it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct FacetValue {
    /// The value, e.g. `home/kitchen` or `new`.
    pub value: String,
    /// Matching listings with it.
    pub count: u64,
}

/// Counts per value of one field over all matches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct Facet {
    /// `category`, `type`, `condition` or `currency`.
    pub name: String,
    /// Values, largest count first.
    pub values: Vec<FacetValue>,
}

/// A page of verified listings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, uniffi::Record)]
pub struct SearchPage {
    /// The server that answered.
    pub server: String,
    /// How many listings match in all (as the server counts them).
    pub total: u64,
    /// The hits that verified, in the server's order.
    pub hits: Vec<VerifiedListing>,
    /// Hits refused because they did not verify: never show them; tell the person how many,
    /// and from which server.
    pub dropped: Vec<DroppedHit>,
    /// Facet counts (as the server counts them).
    pub facets: Vec<Facet>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Servers that failed before this one answered.
    pub failed_servers: Vec<ServerFailure>,
}

/// What happened to a published envelope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Enum)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PublishStatus {
    /// Newly stored.
    Accepted,
    /// Already stored.
    Duplicate,
    /// A newer version (or a withdrawal) is already stored: this one is not current.
    Stale {
        /// Id of the version that stays current.
        current: String,
    },
}

/// Result of publishing one envelope to every configured server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct PublishOutcome {
    /// Object id.
    pub id: String,
    /// Accepted if any server stored it newly, else duplicate, else stale.
    #[serde(flatten)]
    pub status: PublishStatus,
    /// Servers that now hold it (accepted or duplicate).
    pub stored_at: Vec<String>,
    /// Servers that failed (unreachable, timeout, server error).
    pub failed_servers: Vec<ServerFailure>,
}

/// Talks to index servers and verifies every object they send. Cheap to share: hold one per
/// app and call it from any thread.
#[derive(uniffi::Object)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.inner.servers)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    servers: Vec<Url>,
    timeout: Duration,
    max_response_bytes: u64,
}

pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, ClientError> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _guard = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if RUNTIME.get().is_none() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("souk-core")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Unreachable {
                server: "(none)".into(),
                reason: format!("cannot start the network runtime: {e}"),
            })?;
        let _ = RUNTIME.set(rt);
    }
    RUNTIME.get().ok_or_else(|| ClientError::Unreachable {
        server: "(none)".into(),
        reason: "the network runtime did not start".into(),
    })
}

/// Runs `fut` on the core's runtime and waits for it from whatever executor polls us.
pub(crate) async fn on_runtime<T: Send + 'static>(
    fut: impl Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    runtime()?
        .spawn(fut)
        .await
        .map_err(|e| ClientError::BadResponse {
            server: "(core)".into(),
            reason: format!("the request task failed: {e}"),
        })?
}

pub(crate) fn parse_server(text: &str) -> Result<Url, ClientError> {
    let bad = |reason: &str| ClientError::InvalidUrl {
        url: text.into(),
        reason: reason.into(),
    };
    let mut url = Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(bad("use an https:// address"));
    }
    let Some(host) = url.host() else {
        return Err(bad("it has no host name"));
    };
    let loopback = match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    if url.scheme() == "http" && !loopback {
        return Err(bad(
            "use https:// (plain http:// is only for servers on this device)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("give the server's base address, without ? or #"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// An HTTP client as the core builds them: ring for TLS, the compiled-in roots, no redirects.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    reqwest::Client::builder()
        .tls_certs_only(root_certificates())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("souk-mobile-core/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot set up HTTP: {e}"))
}

fn install_crypto_provider() {
    // reqwest is built without a default provider (that would pull in aws-lc); ring is smaller
    // and builds everywhere. If the host app installed one already, that one is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn root_certificates() -> Vec<reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
        .collect()
}

impl Client {
    /// Another handle on the same client (for work moved onto the core's runtime).
    pub(crate) fn handle(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The HTTP client (for the inbox calls in `inbox.rs`).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// One JSON request to one server, with the client's limits and error mapping.
    pub(crate) async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        server: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        self.inner.call(server, request).await
    }

    pub(crate) fn url(server: &Url, path: &str) -> Result<Url, ClientError> {
        Inner::url(server, path)
    }

    /// A client for `config` (the Rust-side constructor; foreign code calls `Client(config)`).
    ///
    /// # Errors
    /// [`ClientError::NoServers`] or [`ClientError::InvalidUrl`].
    pub fn with_config(config: ClientConfig) -> Result<Self, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        let servers = config
            .servers
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<Vec<_>, _>>()?;
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .tls_certs_only(root_certificates())
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .user_agent(concat!("souk-mobile-core/", env!("CARGO_PKG_VERSION")))
            // Servers are named by their URL; a redirect elsewhere (or to http) is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::InvalidUrl {
                url: config.servers.join(", "),
                reason: format!("cannot set up HTTP: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                servers,
                timeout: Duration::from_millis(config.timeout_ms.max(1)),
                max_response_bytes: config.max_response_bytes.max(1024),
            }),
        })
    }
}

#[derive(Debug, Deserialize)]
struct ErrorJson {
    error: ErrorDetailJson,
}

#[derive(Debug, Deserialize)]
struct ErrorDetailJson {
    code: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct SearchJson {
    total: u64,
    hits: Vec<HitJson>,
    #[serde(default)]
    facets: BTreeMap<String, BTreeMap<String, u64>>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PageJson {
    hits: Vec<HitJson>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PublishJson {
    results: Vec<ResultJson>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum ResultJson {
    Accepted { id: String },
    Duplicate { id: String },
    Stale { current: String },
    Rejected { error: ErrorDetailJson },
}

pub(crate) fn server_name(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

impl Inner {
    /// One request to one server, JSON decoded.
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        server: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let body = self.call_raw(server, request).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            server: server_name(server),
            reason: format!("not the JSON the API promises: {e}"),
        })
    }

    /// One request to one server: status checked, body read up to the limit.
    async fn call_raw(
        &self,
        server: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, ClientError> {
        let name = server_name(server);
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ClientError::Timeout {
                    server: name.clone(),
                    seconds: self.timeout.as_secs().max(1),
                }
            } else {
                ClientError::Unreachable {
                    server: name.clone(),
                    reason: std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), ToString::to_string),
                }
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes)
        {
            return Err(ClientError::TooLarge {
                server: name,
                limit: self.max_response_bytes,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > self.max_response_bytes {
                return Err(ClientError::TooLarge {
                    server: name,
                    limit: self.max_response_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorJson>(&body) {
                Ok(e) if status.as_u16() == 404 => ClientError::NotFound {
                    what: e.error.message,
                },
                Ok(e) => ClientError::Server {
                    server: name,
                    status: status.as_u16(),
                    code: e.error.code,
                    detail: e.error.message,
                },
                Err(_) => ClientError::Server {
                    server: name,
                    status: status.as_u16(),
                    code: "http_error".into(),
                    detail: status.canonical_reason().unwrap_or("error").into(),
                },
            });
        }
        Ok(body)
    }

    /// Tries `attempt` on each server in order (starting with `first`, if given) until one
    /// answers without a server fault.
    async fn first_success<T, F, Fut>(
        self: &Arc<Self>,
        first: Option<&Url>,
        attempt: F,
    ) -> Result<(T, Vec<ServerFailure>), ClientError>
    where
        F: Fn(Arc<Self>, Url) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut order: Vec<Url> = first.into_iter().cloned().collect();
        order.extend(self.servers.iter().filter(|s| Some(*s) != first).cloned());
        let mut failures = Vec::new();
        let mut last = None;
        let mut not_found = None;
        for server in order {
            match attempt(Arc::clone(self), server.clone()).await {
                Ok(value) => return Ok((value, failures)),
                Err(e) if e.is_server_fault() => {
                    failures.push(e.as_failure(&server_name(&server)));
                    last = Some(e);
                }
                // Servers may lag each other: "not here" sends the question on.
                Err(e @ ClientError::NotFound { .. }) => not_found = Some(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = not_found {
            return Err(e);
        }
        // With one server, its own error says more than a list of one.
        match last {
            Some(e) if failures.len() == 1 => Err(e),
            _ => Err(ClientError::AllServersFailed { failures }),
        }
    }

    /// Splits an optional client cursor into the server to ask first and that server's own
    /// cursor, refusing one that names a server not configured here.
    fn pin_cursor(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Option<Url>, Option<String>), ClientError> {
        let Some(cursor) = cursor else {
            return Ok((None, None));
        };
        let (server, inner) = decode_cursor(cursor)?;
        if self.servers.contains(&server) {
            Ok((Some(server), Some(inner)))
        } else {
            Err(ClientError::InvalidArgument {
                name: "cursor".into(),
                reason: format!("it belongs to {server}, which is not a configured server"),
            })
        }
    }

    fn url(server: &Url, path: &str) -> Result<Url, ClientError> {
        server.join(path).map_err(|e| ClientError::InvalidUrl {
            url: format!("{server}{path}"),
            reason: e.to_string(),
        })
    }
}

/// The client's cursor: the server's cursor with the name of the server that made it.
fn encode_cursor(server: &str, cursor: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{server}\n{cursor}"))
}

fn decode_cursor(cursor: &str) -> Result<(Url, String), ClientError> {
    let bad = || ClientError::InvalidArgument {
        name: "cursor".into(),
        reason: "not a cursor from this client; start the search again".into(),
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (server, inner) = text.split_once('\n').ok_or_else(bad)?;
    Ok((parse_server(server).map_err(|_| bad())?, inner.to_owned()))
}

fn parse_address(text: &str, name: &str) -> Result<PublicKey, ClientError> {
    text.trim()
        .parse::<PublicKey>()
        .map_err(|_| ClientError::InvalidArgument {
            name: name.into(),
            reason: "must be a souk1… address or 64 hex digits".into(),
        })
}

fn search_params(q: &SearchQuery, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    let mut text = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.trim().is_empty()) {
            p.push((k, v.trim().to_owned()));
        }
    };
    text("q", &q.text);
    text("category", &q.category);
    text("currency", &q.currency);
    text("ships_to", &q.ships_to);
    text("seller", &q.seller);
    if let Some(t) = q.listing_type {
        p.push(("type", t.as_str().into()));
    }
    if let Some(c) = q.condition {
        p.push(("condition", c.as_str().into()));
    }
    for (k, v) in [
        ("price_min", q.price_min),
        ("price_max", q.price_max),
        ("min_rating", q.min_rating),
    ] {
        if let Some(v) = v {
            p.push((k, v.to_string()));
        }
    }
    for (k, v) in [("moderated", q.moderated), ("nsfw", q.nsfw)] {
        if let Some(v) = v {
            p.push((k, v.to_string()));
        }
    }
    if let Some(s) = q.sort {
        p.push(("sort", s.as_str().into()));
    }
    if let Some(l) = q.limit {
        p.push(("limit", l.to_string()));
    }
    if let Some(c) = cursor {
        p.push(("cursor", c.to_owned()));
    }
    p
}

/// Verifies each hit, keeping those that pass and reporting the rest.
fn check_hits(
    hits: &[HitJson],
    server: &str,
    ctx: &ValidationContext,
    expect: impl Fn(&VerifiedListing) -> Result<(), String>,
) -> (Vec<VerifiedListing>, Vec<DroppedHit>) {
    let mut good: Vec<VerifiedListing> = Vec::with_capacity(hits.len());
    let mut dropped = Vec::new();
    for (hit, verified) in hits.iter().zip(verify_hits(hits, ctx)) {
        if good.iter().any(|g| g.id == hit.id.to_ascii_lowercase()) {
            dropped.push(DroppedHit {
                id: hit.id.clone(),
                server: server.into(),
                reason: "the same listing twice on one page".into(),
            });
            continue;
        }
        match verified.and_then(|v| expect(&v).map(|()| v)) {
            Ok(v) => good.push(v),
            Err(reason) => dropped.push(DroppedHit {
                id: hit.id.clone(),
                server: server.into(),
                reason,
            }),
        }
    }
    (good, dropped)
}

fn facets(raw: BTreeMap<String, BTreeMap<String, u64>>) -> Vec<Facet> {
    raw.into_iter()
        .map(|(name, values)| {
            let mut values: Vec<FacetValue> = values
                .into_iter()
                .map(|(value, count)| FacetValue { value, count })
                .collect();
            values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            Facet { name, values }
        })
        .collect()
}

/// Reads and verifies a search answer (`GET /api/v1/listings/search`) from `server`: the
/// sans-I/O half of [`Client::search`], public so that it can be measured and reused.
///
/// # Errors
/// [`ClientError::BadResponse`] when the body is not the API's JSON. Hits that fail
/// verification are not errors: they are listed in [`SearchPage::dropped`].
pub fn read_search_page(
    server: &str,
    body: &[u8],
    ctx: &ValidationContext,
) -> Result<SearchPage, ClientError> {
    let parsed: SearchJson =
        serde_json::from_slice(body).map_err(|e| ClientError::BadResponse {
            server: server.into(),
            reason: format!("not the JSON the API promises: {e}"),
        })?;
    let (hits, dropped) = check_hits(&parsed.hits, server, ctx, |_| Ok(()));
    Ok(SearchPage {
        server: server.into(),
        total: parsed.total,
        hits,
        dropped,
        facets: facets(parsed.facets),
        next_cursor: parsed.next_cursor.map(|c| encode_cursor(server, &c)),
        failed_servers: Vec::new(),
    })
}

#[uniffi::export]
impl Client {
    /// A client for the servers in `config`.
    ///
    /// # Errors
    /// [`ClientError::NoServers`] or [`ClientError::InvalidUrl`] naming the bad address.
    #[uniffi::constructor]
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, ClientError> {
        Self::with_config(config).map(Arc::new)
    }

    /// The configured servers, normalised, in the order they are tried.
    #[must_use]
    pub fn servers(&self) -> Vec<String> {
        self.inner.servers.iter().map(server_name).collect()
    }

    /// Publishes signed envelope bytes to every configured server.
    ///
    /// # Errors
    /// [`ClientError::Rejected`] when a server refuses it by the protocol's rules (every
    /// honest server would); [`ClientError::AllServersFailed`] when no server could be
    /// reached; [`ClientError::InvalidArgument`] for bytes larger than any envelope.
    pub async fn publish(&self, envelope: Vec<u8>) -> Result<PublishOutcome, ClientError> {
        if envelope.len() > souk_protocol::limits::MAX_ENVELOPE_BYTES {
            return Err(ClientError::InvalidArgument {
                name: "envelope".into(),
                reason: format!(
                    "{} bytes is larger than the protocol's {} bytes",
                    envelope.len(),
                    souk_protocol::limits::MAX_ENVELOPE_BYTES
                ),
            });
        }
        let inner = Arc::clone(&self.inner);
        on_runtime(async move {
            let id = ObjectId::of(&envelope).to_string();
            // A batch of one: the answer is always a per-envelope result, whatever happened.
            let body = serde_json::json!({
                "envelopes": [base64::engine::general_purpose::STANDARD.encode(&envelope)]
            });
            let mut tasks = tokio::task::JoinSet::new();
            for (i, server) in inner.servers.iter().enumerate() {
                let inner = Arc::clone(&inner);
                let server = server.clone();
                let body = body.clone();
                tasks.spawn(async move {
                    let result = async {
                        let url = Inner::url(&server, "api/v1/envelopes")?;
                        inner
                            .call::<PublishJson>(&server, inner.http.post(url).json(&body))
                            .await
                    }
                    .await;
                    (i, server, result)
                });
            }
            let mut answers = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                if let Ok(answer) = joined {
                    answers.push(answer);
                }
            }
            answers.sort_by_key(|(i, _, _)| *i);
            let mut outcome = PublishOutcome {
                id: id.clone(),
                status: PublishStatus::Duplicate,
                stored_at: Vec::new(),
                failed_servers: Vec::new(),
            };
            let mut accepted = false;
            let mut stale = None;
            let mut rejected = None;
            for (_, server, result) in answers {
                let name = server_name(&server);
                let first = result.and_then(|r| {
                    r.results
                        .into_iter()
                        .next()
                        .ok_or_else(|| ClientError::BadResponse {
                            server: name.clone(),
                            reason: "no result for the envelope".into(),
                        })
                });
                match first {
                    Ok(ResultJson::Accepted { id: got } | ResultJson::Duplicate { id: got })
                        if got != id =>
                    {
                        outcome.failed_servers.push(
                            ClientError::BadResponse {
                                server: name.clone(),
                                reason: format!("it reported id {got} for envelope {id}"),
                            }
                            .as_failure(&name),
                        );
                    }
                    Ok(ResultJson::Accepted { .. }) => {
                        accepted = true;
                        outcome.stored_at.push(name);
                    }
                    Ok(ResultJson::Duplicate { .. }) => outcome.stored_at.push(name),
                    Ok(ResultJson::Stale { current }) => match current.parse::<ObjectId>() {
                        Ok(current) => stale = Some(current.to_string()),
                        Err(_) => outcome.failed_servers.push(
                            ClientError::BadResponse {
                                server: name.clone(),
                                reason: "its stale answer names no valid id".into(),
                            }
                            .as_failure(&name),
                        ),
                    },
                    Ok(ResultJson::Rejected { error }) => {
                        outcome.failed_servers.push(ServerFailure {
                            server: name.clone(),
                            code: "rejected".into(),
                            message: format!("{} ({})", error.message, error.code),
                        });
                        rejected = Some(ClientError::Rejected {
                            code: error.code,
                            detail: error.message,
                        });
                    }
                    Err(e) => outcome.failed_servers.push(e.as_failure(&name)),
                }
            }
            outcome.status = match (accepted, stale) {
                (true, _) => PublishStatus::Accepted,
                (false, Some(current)) if outcome.stored_at.is_empty() => {
                    PublishStatus::Stale { current }
                }
                _ => PublishStatus::Duplicate,
            };
            if outcome.stored_at.is_empty()
                && !matches!(outcome.status, PublishStatus::Stale { .. })
            {
                // Refused by the protocol's rules, and no server took it.
                if let Some(rejected) = rejected {
                    return Err(rejected);
                }
                return Err(ClientError::AllServersFailed {
                    failures: outcome.failed_servers,
                });
            }
            Ok(outcome)
        })
        .await
    }

    /// Searches listings on the first server that answers (with a cursor: the server that
    /// made it, first). See [`SearchQuery`] for the filters. Every hit is verified on the
    /// device; hits that fail are left out and listed in `dropped`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for a bad cursor; [`ClientError::Server`] when the
    /// server refuses the query (400: a bad filter value); [`ClientError::AllServersFailed`].
    pub async fn search(&self, query: SearchQuery) -> Result<SearchPage, ClientError> {
        let inner = Arc::clone(&self.inner);
        on_runtime(async move {
            let (first, server_cursor) = inner.pin_cursor(query.cursor.as_deref())?;
            let params = search_params(&query, server_cursor.as_deref());
            // A page on which every hit failed verification counts as that server failing:
            // the next server is asked. If none does better, that page (with its report of
            // dropped hits) is the answer.
            let forged: Arc<Mutex<Option<SearchPage>>> = Arc::default();
            let answer = inner
                .first_success(first.as_ref(), |inner, server| {
                    let params = params.clone();
                    let forged = Arc::clone(&forged);
                    async move {
                        let url = Inner::url(&server, "api/v1/listings/search")?;
                        let body = inner
                            .call_raw(&server, inner.http.get(url).query(&params))
                            .await?;
                        let page = read_search_page(
                            &server_name(&server),
                            &body,
                            &ValidationContext::now(),
                        )?;
                        match page.dropped.first() {
                            Some(first_dropped) if page.hits.is_empty() => {
                                let error = ClientError::Tampered {
                                    server: page.server.clone(),
                                    id: first_dropped.id.clone(),
                                    reason: format!(
                                        "all {} hits on the page failed verification; the first: {}",
                                        page.dropped.len(),
                                        first_dropped.reason
                                    ),
                                };
                                *forged.lock().unwrap_or_else(PoisonError::into_inner) =
                                    Some(page);
                                Err(error)
                            }
                            _ => Ok(page),
                        }
                    }
                })
                .await;
            let kept = forged.lock().unwrap_or_else(PoisonError::into_inner).take();
            match (answer, kept) {
                (Ok((mut page, failed_servers)), _) => {
                    page.failed_servers = failed_servers;
                    Ok(page)
                }
                (Err(ClientError::AllServersFailed { failures }), Some(mut page)) => {
                    page.failed_servers = failures;
                    Ok(page)
                }
                (Err(ClientError::Tampered { .. }), Some(page)) => Ok(page),
                (Err(e), _) => Err(e),
            }
        })
        .await
    }

    /// A listing by object id (any stored version; `current` says whether it still is).
    ///
    /// # Errors
    /// [`ClientError::NotFound`]; [`ClientError::Tampered`] (after trying every server) when
    /// what came back does not verify; [`ClientError::AllServersFailed`].
    pub async fn get_listing(&self, id: String) -> Result<VerifiedListing, ClientError> {
        let id: ObjectId = id
            .trim()
            .parse()
            .map_err(|_| ClientError::InvalidArgument {
                name: "id".into(),
                reason: "must be 64 hex digits".into(),
            })?;
        let path = format!("api/v1/listings/{id}");
        self.one_listing(path, move |v| {
            if v.id == id.to_string() {
                Ok(())
            } else {
                Err("it is not the listing asked for".into())
            }
        })
        .await
    }

    /// The current version of the listing `slug` in the store `seller`.
    ///
    /// # Errors
    /// As `get_listing`, and [`ClientError::InvalidArgument`] for a bad address.
    pub async fn get_store_listing(
        &self,
        seller: String,
        slug: String,
    ) -> Result<VerifiedListing, ClientError> {
        let key = parse_address(&seller, "seller")?;
        let address = key.to_address();
        let path = format!(
            "api/v1/stores/{}/listings/{}",
            key.to_hex(),
            url::form_urlencoded::byte_serialize(slug.as_bytes()).collect::<String>()
        );
        self.one_listing(path, move |v| {
            if v.seller == address && v.listing.slug == slug {
                Ok(())
            } else {
                Err("it is not the store's listing with that slug".into())
            }
        })
        .await
    }

    /// A store's profile, verified to be signed by `seller`.
    ///
    /// # Errors
    /// [`ClientError::NotFound`], [`ClientError::Tampered`], [`ClientError::AllServersFailed`].
    pub async fn get_store(&self, seller: String) -> Result<VerifiedStore, ClientError> {
        let key = parse_address(&seller, "seller")?;
        let inner = Arc::clone(&self.inner);
        on_runtime(async move {
            let (store, _) = inner
                .first_success(None, |inner, server| async move {
                    let url = Inner::url(&server, &format!("api/v1/stores/{}", key.to_hex()))?;
                    let body: StoreJson = inner.call(&server, inner.http.get(url)).await?;
                    verify_store(&body, &key, &ValidationContext::now()).map_err(|reason| {
                        ClientError::Tampered {
                            server: server_name(&server),
                            id: key.to_address(),
                            reason,
                        }
                    })
                })
                .await?;
            Ok(store)
        })
        .await
    }

    /// A page of a store's current listings, newest first; each verified to be signed by
    /// `seller`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`], [`ClientError::AllServersFailed`].
    pub async fn store_listings(
        &self,
        seller: String,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<SearchPage, ClientError> {
        let key = parse_address(&seller, "seller")?;
        let inner = Arc::clone(&self.inner);
        on_runtime(async move {
            let (first, server_cursor) = inner.pin_cursor(cursor.as_deref())?;
            let mut params: Vec<(&str, String)> = Vec::new();
            if let Some(l) = limit {
                params.push(("limit", l.to_string()));
            }
            if let Some(c) = server_cursor {
                params.push(("cursor", c));
            }
            let ((server, body), failed_servers) = inner
                .first_success(first.as_ref(), |inner, server| {
                    let params = params.clone();
                    async move {
                        let url = Inner::url(
                            &server,
                            &format!("api/v1/stores/{}/listings", key.to_hex()),
                        )?;
                        let body: PageJson = inner
                            .call(&server, inner.http.get(url).query(&params))
                            .await?;
                        Ok((server, body))
                    }
                })
                .await?;
            let name = server_name(&server);
            let address = key.to_address();
            let (hits, dropped) = check_hits(&body.hits, &name, &ValidationContext::now(), |v| {
                if v.seller == address {
                    Ok(())
                } else {
                    Err(format!("it is signed by {}, not by this store", v.seller))
                }
            });
            let next_cursor = body.next_cursor.map(|c| encode_cursor(&name, &c));
            Ok(SearchPage {
                server: name,
                total: hits.len() as u64,
                hits,
                dropped,
                facets: Vec::new(),
                next_cursor,
                failed_servers,
            })
        })
        .await
    }
}

impl Client {
    async fn one_listing(
        &self,
        path: String,
        expect: impl Fn(&VerifiedListing) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<VerifiedListing, ClientError> {
        let inner = Arc::clone(&self.inner);
        let expect = Arc::new(expect);
        on_runtime(async move {
            let (listing, _) = inner
                .first_success(None, |inner, server| {
                    let path = path.clone();
                    let expect = Arc::clone(&expect);
                    async move {
                        let url = Inner::url(&server, &path)?;
                        let hit: HitJson = inner.call(&server, inner.http.get(url)).await?;
                        verify_hit(&hit, &ValidationContext::now())
                            .and_then(|v| expect(&v).map(|()| v))
                            .map_err(|reason| ClientError::Tampered {
                                server: server_name(&server),
                                id: hit.id.clone(),
                                reason,
                            })
                    }
                })
                .await?;
            Ok(listing)
        })
        .await
    }
}
