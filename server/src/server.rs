//! Starting and stopping a server: open the store and the index, bring the index up to date,
//! start the writer, listen, shut down gracefully.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;

use crate::api::{self, ApiError, AppState, SharedState};
use crate::config::Config;
use crate::ingest::{self, Ingestor};
use crate::mailbox::{Mailbox, Replicator, StoreAndNetwork};
use crate::p2p::{self, set::SyncSet};
use crate::search::{SearchIndex, SearchPool};
use crate::store::Store;

/// The process-wide metrics recorder (installed once, shared by every server in the process).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            register_metrics();
            let upkeep = handle.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .clone()
}

/// Every counter and histogram the server exports, created at zero so that dashboards and
/// alerts see each series from the start (the `metrics` crate creates a series on first use).
/// Each is touched with one typical label set; others appear when they happen.
fn register_metrics() {
    const COUNTERS: &[(&str, &[(&str, &str)])] = &[
        (
            "souk_ingest_total",
            &[("result", "accepted"), ("origin", "local")],
        ),
        (
            "souk_ingest_total",
            &[("result", "rejected"), ("code", "bad_signature")],
        ),
        ("souk_gossip_messages_total", &[("result", "accepted")]),
        ("souk_gossip_messages_total", &[("result", "rejected")]),
        ("souk_gossip_published_total", &[]),
        ("souk_gossip_dropped_total", &[]),
        ("souk_sync_rounds_total", &[("result", "ok")]),
        ("souk_sync_rounds_total", &[("result", "failed")]),
        ("souk_sync_objects_total", &[("direction", "fetched")]),
        ("souk_sync_bytes_total", &[("direction", "sent")]),
        ("souk_sync_bytes_total", &[("direction", "received")]),
        ("souk_search_cache_total", &[("result", "hit")]),
        ("souk_search_cache_total", &[("result", "miss")]),
        ("souk_search_cache_total", &[("result", "shared")]),
        ("souk_inbox_posts_total", &[("result", "stored")]),
        ("souk_inbox_replications_total", &[("result", "sent")]),
        ("souk_inbox_sessions_total", &[("result", "opened")]),
        ("souk_inbox_acknowledged_total", &[]),
        ("souk_inbox_expired_total", &[]),
        ("souk_feed_ended_total", &[("reason", "slow")]),
        ("souk_grpc_rate_limited_total", &[]),
    ];
    for (name, labels) in COUNTERS {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        metrics::counter!(*name, labels).increment(0);
    }
    for name in ["souk_search_seconds", "souk_ingest_commit_seconds"] {
        // A histogram only renders once it has a sample; its buckets are registered here and
        // filled by the first search or commit.
        let _ = metrics::histogram!(name);
    }
    for stage in ["store", "index"] {
        let _ = metrics::histogram!("souk_ingest_stage_seconds", "stage" => stage);
    }
    metrics::gauge!("souk_feed_subscribers").increment(0.0);
    metrics::gauge!("souk_search_queue").increment(0.0);
    // Set by the inbox sweeper on its first round; present (at zero) from the start, so a
    // scrape right after start finds them. Adding zero never hides a value already set.
    metrics::gauge!("souk_inbox_messages").increment(0.0);
    metrics::gauge!("souk_inbox_bytes").increment(0.0);
    metrics::gauge!("souk_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Opens everything a server needs and brings the search index up to date with the store
/// (rebuilding it if it is missing or damaged; progress goes to the log).
///
/// # Errors
/// If the data directory, database or index cannot be opened.
pub async fn open(config: Config) -> anyhow::Result<SharedState> {
    open_reporting(config, &Starting::new(&[])).await
}

/// [`open`], telling `starting` which step it is at (for `/readyz` while it runs).
async fn open_reporting(config: Config, starting: &Starting) -> anyhow::Result<SharedState> {
    starting.set_step("opening the database".into());
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = Store::connect(&config.database_url, config.sqlite_tuning())
        .await
        .with_context(|| format!("cannot open the database {}", redact(&config.database_url)))?;
    starting.set_step("opening the search index".into());
    let index_dir = config.index_dir();
    let memory = config.search_memory_bytes;
    let (search, rebuild) =
        tokio::task::spawn_blocking(move || SearchIndex::open(&index_dir, memory))
            .await?
            .context("cannot open the search index")?;
    search.set_result_cache_entries(config.search_cache_entries);
    let search = Arc::new(search);
    let search_pool =
        SearchPool::new(config.search_threads).context("cannot start the search threads")?;
    let target = store.max_seq().await.context("cannot read the store")?;
    starting.set_step(if rebuild {
        "rebuilding the search index from the store".into()
    } else {
        "bringing the search index up to date".into()
    });
    ingest::catch_up_with(&store, &search, rebuild, &|seq| {
        starting.set_step(format!(
            "{} the search index: ingest sequence {seq} of {target}",
            if rebuild { "rebuilding" } else { "updating" }
        ));
    })
    .await
    .context("cannot bring the search index up to date")?;
    starting.set_step("starting the network and the writer".into());
    let sync_set = if config.p2p.enabled {
        let items = store
            .current_ids()
            .await
            .context("cannot read the current objects")?;
        Some(Arc::new(SyncSet::from_items(items)))
    } else {
        None
    };
    let ingestor = Ingestor::start(store.clone(), Arc::clone(&search), sync_set.clone());
    let network = match sync_set {
        Some(set) => Some(
            p2p::start(
                &config.p2p,
                &config.data_dir,
                p2p::Parts {
                    store: store.clone(),
                    ingestor: ingestor.clone(),
                    set,
                },
            )
            .await
            .context("cannot start the peer-to-peer network")?,
        ),
        None => None,
    };
    let replicator = Replicator::start(
        StoreAndNetwork {
            store: store.clone(),
            network: network.clone(),
        },
        &config.inbox,
    )
    .context("cannot set up inbox replication")?;
    let mailbox = Arc::new(Mailbox::new(
        store.clone(),
        config.inbox.clone(),
        Some(replicator),
    ));
    mailbox.spawn_sweeper(Duration::from_secs(60));
    let envelopes = store.envelope_reader().map(Arc::new);
    Ok(Arc::new(AppState {
        config,
        store,
        search,
        search_pool,
        ingestor,
        metrics: metrics_handle(),
        started: Instant::now(),
        network,
        mailbox,
        listings: Arc::new(crate::service::ListingCache::new(
            crate::service::LISTING_CACHE_ENTRIES,
        )),
        envelopes,
    }))
}

/// A database URL without its password, for logs.
#[must_use]
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The application with per-client rate limiting (needs the peer address, so the server must be
/// served with `into_make_service_with_connect_info::<SocketAddr>()`).
pub fn app(state: SharedState) -> Router {
    let per_second = state.config.rate_limit_per_second.max(1);
    let governor = GovernorConfigBuilder::default()
        .period(Duration::from_nanos(1_000_000_000 / u64::from(per_second)))
        .burst_size(state.config.rate_limit_burst.max(1))
        .finish()
        .map(Arc::new);
    let routes = api::routes(&state);
    match governor {
        Some(config) => {
            let limiter = Arc::clone(&config);
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(60));
                    limiter.limiter().retain_recent();
                }
            });
            // Inside the request ids, the log line and CORS (`api::edge`): a refused request
            // is logged with its id, and a browser can read the 429.
            let limited = routes.layer(GovernorLayer::new(config).error_handler(|error| {
                let wait = match &error {
                    tower_governor::GovernorError::TooManyRequests { wait_time, .. } => *wait_time,
                    // The peer address comes from the connection; without it the server is
                    // served wrongly, which is no fault of the client's.
                    other => {
                        return ApiError::internal(&format_args!(
                            "rate limiter could not tell the client: {other}"
                        ))
                        .into_response();
                    }
                };
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests from this address; retry in {wait} s"),
                )
                .into_response();
                if let Ok(value) = wait.to_string().parse() {
                    response.headers_mut().insert("retry-after", value);
                }
                response
            }));
            api::edge(limited, state)
        }
        None => api::edge(routes, state),
    }
}

/// Serves the REST API of `state` on `listener` until `shutdown` completes, then finishes
/// in-flight requests and closes the database.
///
/// # Errors
/// If serving fails.
pub async fn serve(
    state: SharedState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_all(state, listener, None, shutdown).await
}

/// Serves REST on `rest` and, when given, gRPC on `grpc` until `shutdown` completes; then both
/// stop taking calls (open gRPC feeds end with UNAVAILABLE and a cursor to resume from), finish
/// what is in flight, and the database is closed.
///
/// # Errors
/// If either server fails.
pub async fn serve_all(
    state: SharedState,
    rest: TcpListener,
    grpc: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let starting = Arc::new(Starting::new(&state.config.cors_origins));
    starting.start(app(Arc::clone(&state)));
    let serving = Serving::start(rest, Arc::clone(&starting), shutdown);
    serving.finish(state, grpc).await
}

/// Opens a server with `config` and serves it on `rest` until `shutdown` completes, as the
/// `serve` command does. REST answers from the start: while the server opens (migrations, an
/// index rebuild that may take minutes) `/healthz` is 200, `/readyz` is 503 `not_ready` and
/// says which step it is at, and every other path is 503 `starting` with `retry-after`. Then
/// the API takes over on the same socket (no connection is refused in between) and gRPC
/// starts on `config.grpc.addr` when enabled. A shutdown during the start stops at once.
///
/// # Errors
/// If the server cannot be opened, gRPC cannot listen, or serving fails.
pub async fn run(
    config: Config,
    rest: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grpc = config.grpc.clone();
    let starting = Arc::new(Starting::new(&config.cors_origins));
    let serving = Serving::start(rest, Arc::clone(&starting), shutdown);
    let mut stopping = serving.stopping.clone();
    let opened = tokio::select! {
        opened = open_reporting(config, &starting) => opened,
        _ = stopping.wait_for(|stop| *stop) => {
            tracing::info!("stopping while starting");
            return serving.stop().await;
        }
    };
    let state = match opened {
        Ok(state) => state,
        Err(error) => {
            let _ = serving.stop().await;
            return Err(error);
        }
    };
    let grpc = if grpc.enabled {
        let listener = match TcpListener::bind(grpc.addr).await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = serving.stop().await;
                state.store.close().await;
                return Err(error)
                    .with_context(|| format!("cannot listen for gRPC on {}", grpc.addr));
            }
        };
        let addr = listener.local_addr().unwrap_or(grpc.addr);
        let scheme = if grpc.tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        tracing::info!(grpc = %addr, "gRPC API ready: {addr} ({scheme}; reflection on)");
        Some(listener)
    } else {
        None
    };
    starting.start(app(Arc::clone(&state)));
    tracing::info!(listen = %serving.addr, "REST API ready: http://{}/api/v1/openapi.json", serving.addr);
    serving.finish(state, grpc).await
}

/// A REST listener being served, by [`waiting_app`] until the API is set.
struct Serving {
    addr: SocketAddr,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    rest: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Serves `starting` on `rest`; `shutdown` sets the stop signal.
    fn start(
        rest: TcpListener,
        starting: Arc<Starting>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let addr = rest
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let stop = Arc::new(stop);
        let on_signal = Arc::clone(&stop);
        tokio::spawn(async move {
            shutdown.await;
            let _ = on_signal.send(true);
        });
        let mut rest_stopping = stopping.clone();
        let rest = tokio::spawn(
            axum::serve(
                rest,
                starting_app(starting).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rest_stopping.wait_for(|stop| *stop).await;
            })
            .into_future(),
        );
        Self {
            addr,
            stop,
            stopping,
            rest,
        }
    }

    /// Stops serving (in-flight requests finish).
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        served(self.rest.await)
    }

    /// Serves until the stop signal, with gRPC on `grpc` when given; then closes the database.
    async fn finish(self, state: SharedState, grpc: Option<TcpListener>) -> anyhow::Result<()> {
        let store = state.store.clone();
        let Self {
            stop,
            stopping,
            rest,
            ..
        } = self;
        let result = match grpc {
            None => served(rest.await),
            Some(listener) => {
                let grpc = crate::grpc::serve(state, listener, stopping);
                tokio::pin!(rest, grpc);
                tokio::select! {
                    joined = &mut rest => {
                        // REST stopped (shutdown, or failure): gRPC stops too.
                        let _ = stop.send(true);
                        let grpc_served = grpc.await;
                        served(joined).and(grpc_served)
                    }
                    grpc_served = &mut grpc => {
                        // gRPC stopped first: only a failure (bad TLS files, say) does that.
                        let _ = stop.send(true);
                        let joined = rest.await;
                        grpc_served.and(served(joined))
                    }
                }
            }
        };
        store.close().await;
        result
    }
}

/// The outcome of the REST server's task.
fn served(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    joined
        .context("the REST server's task failed")?
        .context("server failed")
}

/// A server's REST side from the moment it listens: what it is doing while it starts, then
/// the API.
struct Starting {
    step: Mutex<String>,
    app: OnceLock<Router>,
    /// The configured CORS origins, for [`waiting_app`]'s replies.
    cors_origins: Vec<String>,
}

impl Starting {
    fn new(cors_origins: &[String]) -> Self {
        Self {
            step: Mutex::new("starting".into()),
            app: OnceLock::new(),
            cors_origins: cors_origins.to_vec(),
        }
    }

    fn set_step(&self, step: String) {
        if let Ok(mut current) = self.step.lock() {
            *current = step;
        }
    }

    fn step(&self) -> String {
        self.step
            .lock()
            .map_or_else(|_| "starting".into(), |step| step.clone())
    }

    /// Hands every request from now on to `app`.
    fn start(&self, app: Router) {
        let _ = self.app.set(app);
    }
}

/// Answers with the API once [`Starting::start`] has set it, and with [`waiting_app`] before.
fn starting_app(starting: Arc<Starting>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state((Arc::clone(&starting), waiting_app(starting)))
}

async fn dispatch(
    axum::extract::State((starting, waiting)): axum::extract::State<(Arc<Starting>, Router)>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let app = starting.app.get().cloned().unwrap_or(waiting);
    match tower::ServiceExt::oneshot(app, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// What answers while the server opens: `/healthz` 200, `/readyz` 503 `not_ready` naming the
/// step, anything else 503 `starting` (under `/ob/` in OpenBazaar's `{"reason"}` shape), each
/// through the API's edge layers (request id, log line, CORS).
fn waiting_app(starting: Arc<Starting>) -> Router {
    let origins = starting.cors_origins.clone();
    api::with_edge(
        Router::new().fallback(while_starting).with_state(starting),
        &origins,
    )
}

async fn while_starting(
    axum::extract::State(starting): axum::extract::State<Arc<Starting>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let step = starting.step();
    match request.uri().path() {
        "/healthz" => "ok".into_response(),
        "/readyz" => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the server is starting: {step}"),
        )
        .into_response(),
        _ => {
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                format!("the server is starting ({step}); retry shortly"),
            )
            .into_response();
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
            response
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
