//! Test harness: a server on SQLite (a file in a temp dir) or on PostgreSQL (a fresh database
//! per test, created from a template migrated once), driven through its router with `oneshot`.
//!
//! PostgreSQL comes from `SOUK_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the user needs CREATEDB.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use souk_protocol::samples;
use souk_protocol::{IdentityKey, Object, PublicKey, SignedObject, ValidationContext, pb};
use souk_server::api::SharedState;
use souk_server::config::Config;
use sqlx::Connection;
use tower::ServiceExt;

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body against both databases: `both!(name, |server| async move { ... })`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server =
                    $crate::common::TestServer::start($crate::common::Backend::Sqlite).await;
                ($body)(server).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let server =
                    $crate::common::TestServer::start($crate::common::Backend::Postgres).await;
                ($body)(server).await;
            }
        }
    };
}

/// A PostgreSQL database that is dropped with the test.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

fn postgres_url() -> String {
    std::env::var("SOUK_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.to_string())
}

fn with_database(url: &str, name: &str) -> String {
    match url.rfind('/') {
        Some(slash) if url[..slash].contains("://") && slash > url.find("://").unwrap_or(0) + 2 => {
            format!("{}/{name}", &url[..slash])
        }
        _ => format!("{url}/{name}"),
    }
}

impl PgDatabase {
    /// A fresh database with the schema already migrated (copied from a template).
    pub async fn create() -> Self {
        Self::create_with(true).await
    }

    /// A fresh, empty database: no tables, no migrations applied.
    #[allow(dead_code)] // Not every test binary starts from an empty database.
    pub async fn create_empty() -> Self {
        Self::create_with(false).await
    }

    async fn create_with(migrated: bool) -> Self {
        let admin_url = postgres_url();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {admin_url} ({e}).\n\
                 The PostgreSQL half of the server tests needs a server: start one, or point\n\
                 SOUK_TEST_POSTGRES_URL at one (the user needs CREATEDB), e.g.\n\
                 SOUK_TEST_POSTGRES_URL=postgres://me@localhost:5432/postgres scripts/test"
                )
            });
        let template = template_name();
        sqlx::query("SELECT pg_advisory_lock(727272)")
            .execute(&mut admin)
            .await
            .expect("lock");
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&template)
            .fetch_optional(&mut admin)
            .await
            .expect("query pg_database");
        if migrated && exists.is_none() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{template}\""
            )))
            .execute(&mut admin)
            .await
            .expect("create template");
            // Migrating through the server's own store code keeps one migration path.
            let store = souk_server::store::Store::connect(
                &with_database(&admin_url, &template),
                souk_server::store::SqliteTuning::with_sync(souk_server::config::SqliteSync::Full),
            )
            .await
            .expect("migrate template");
            store.close().await;
        }
        let name = format!("souk_test_{}", random_suffix());
        let create = if migrated {
            format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")
        } else {
            format!("CREATE DATABASE \"{name}\"")
        };
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .expect("create test database");
        sqlx::query("SELECT pg_advisory_unlock(727272)")
            .execute(&mut admin)
            .await
            .expect("unlock");
        let url = with_database(&admin_url, &name);
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context guarantees: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

fn template_name() -> String {
    // A new template whenever the migrations change.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        for byte in std::fs::read(&file).expect("migration file") {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("souk_template_{hash:016x}")
}

/// A name part no other test (in this or another process) uses: the standard library's
/// randomly keyed hasher, fed a per-process counter.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// A server under test.
pub struct TestServer {
    pub state: SharedState,
    pub router: Router,
    pub dir: tempfile::TempDir,
    pub pg: Option<Arc<PgDatabase>>,
    pub backend: Backend,
    /// Changes the test configuration before every open (start and restarts).
    pub configure: fn(&mut Config),
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server whose test configuration `configure` changes first.
    pub async fn start_with(backend: Backend, configure: fn(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Arc::new(PgDatabase::create().await)),
        };
        Self::open_retrying(backend, dir, pg, configure).await
    }

    /// Serves this server's gRPC API on a loopback port until the returned handle is dropped
    /// or stopped.
    pub async fn grpc(&self) -> GrpcServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gRPC");
        let addr = listener.local_addr().expect("gRPC address");
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(souk_server::grpc::serve(
            Arc::clone(&self.state),
            listener,
            stopping,
        ));
        GrpcServer {
            addr,
            stop,
            task: Some(task),
        }
    }

    /// Closes this server and opens a new one on the same data (a restart).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Closes this server, waits until its search index writer is released, lets `edit` change
    /// the data directory (for example damage the index), and opens a new server on it.
    pub async fn restart_with(self, edit: impl FnOnce(&std::path::Path)) -> Self {
        let Self {
            state,
            dir,
            pg,
            backend,
            router,
            configure,
        } = self;
        drop(router);
        state.store.close().await;
        drop(state);
        // The ingest writer task drops the index writer a moment after its queue closes.
        let search = dir.path().join("search");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while search.join("meta.json").exists() {
            let released = tantivy::Index::open_in_dir(&search)
                .and_then(|index| index.writer::<tantivy::TantivyDocument>(15_000_000))
                .is_ok();
            if released {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the index writer was not released within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        edit(dir.path());
        Self::open_retrying(backend, dir, pg, configure).await
    }

    /// Opens a server on existing data, retrying while the previous one releases the index.
    pub async fn open_retrying(
        backend: Backend,
        dir: tempfile::TempDir,
        pg: Option<Arc<PgDatabase>>,
        configure: fn(&mut Config),
    ) -> Self {
        let mut config = Config::for_tests(dir.path(), pg.as_ref().map(|p| p.url.clone()));
        configure(&mut config);
        let mut attempts = 0;
        let state = loop {
            match souk_server::server::open(config.clone()).await {
                Ok(state) => break state,
                Err(error) if attempts < 500 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(error) => panic!("server does not reopen: {error:#}"),
            }
        };
        let router = souk_server::api::router(Arc::clone(&state));
        Self {
            state,
            router,
            dir,
            pg,
            backend,
            configure,
        }
    }

    /// The whole reply, headers included.
    pub async fn raw(&self, request: Request<Body>) -> axum::response::Response {
        self.router
            .clone()
            .oneshot(request)
            .await
            .expect("response")
    }

    pub async fn request(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.request(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    pub async fn post(&self, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.request(
            Request::post("/api/v1/envelopes")
                .header("content-type", content_type)
                .body(Body::from(body))
                .expect("request"),
        )
        .await
    }

    pub async fn publish(&self, object: &SignedObject) -> (StatusCode, Value) {
        self.publish_bytes(object.envelope().bytes()).await
    }

    pub async fn publish_bytes(&self, bytes: &[u8]) -> (StatusCode, Value) {
        let body = serde_json::json!({ "envelope": b64(bytes) });
        self.post("application/json", body.to_string().into_bytes())
            .await
    }

    pub async fn publish_batch(&self, envelopes: &[Vec<u8>]) -> (StatusCode, Value) {
        let body = serde_json::json!({ "envelopes": envelopes.iter().map(|e| b64(e)).collect::<Vec<_>>() });
        self.post("application/json", body.to_string().into_bytes())
            .await
    }

    pub async fn search(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/listings/search?{query}")).await;
        assert_eq!(status, StatusCode::OK, "search {query}: {body}");
        body
    }

    /// `GET /api/v1/ratings/{subject}`, which must answer 200.
    pub async fn ratings(&self, subject: &PublicKey) -> Value {
        let (status, body) = self.get(&format!("/api/v1/ratings/{subject}")).await;
        assert_eq!(status, StatusCode::OK, "ratings of {subject}: {body}");
        body
    }

    pub async fn titles(&self, query: &str) -> Vec<String> {
        self.search(query).await["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["summary"]["title"].as_str().expect("title").to_string())
            .collect()
    }
}

/// A server's gRPC API on a loopback port, for tests.
pub struct GrpcServer {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl GrpcServer {
    /// A plaintext channel to it.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the gRPC server")
    }

    /// Shuts it down (open feeds end) and waits until it has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.expect("gRPC task"),
            None => Ok(()),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A plain-HTTP client for tests that talk to a server process. reqwest may be built without a
/// default TLS provider (feature unification with mobile-core), so one is installed first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The Python with the test tools (grpcio, PyYAML, Playwright): `SOUK_TEST_PYTHON`, or the
/// virtual environment `.ci/run` makes in `target/test-venv`.
pub fn test_python() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("SOUK_TEST_PYTHON") {
        return path.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python")
}

/// Waits for `child` to exit, killing it and failing the test with `what` after `within`.
pub async fn wait_for_exit(
    child: &mut std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("the child's state") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {within:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs every file of the committed corpus of fuzz target `target` through `run`.
pub fn replay_corpus(target: &str, run: impl Fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        run(&std::fs::read(&path).expect("corpus file"));
        count += 1;
    }
    assert!(count > 0, "the corpus in {} is empty", dir.display());
}

/// A loopback port that was free a moment ago (for a server process to listen on).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The current time: objects must not be in the future or expired for the server's clock.
pub fn now() -> u64 {
    ValidationContext::now().now
}

pub fn seller(n: u8) -> IdentityKey {
    IdentityKey::from_secret_bytes(&[n; 32])
}

pub fn seal(key: &IdentityKey, object: Object) -> SignedObject {
    key.seal(&object, &ValidationContext::now())
        .expect("valid object")
}

/// A listing with a title and slug, created `age` seconds ago.
pub fn listing(key: &IdentityKey, slug: &str, title: &str, age: u64) -> SignedObject {
    let mut l = plain_listing(now() - age, slug);
    l.title = title.into();
    seal(key, Object::Listing(l))
}

pub fn listing_with(
    key: &IdentityKey,
    slug: &str,
    edit: impl FnOnce(&mut pb::Listing),
) -> SignedObject {
    let mut l = plain_listing(now() - 10, slug);
    edit(&mut l);
    seal(key, Object::Listing(l))
}

/// The sample listing without its tags and with a neutral description, so that text searches
/// match only what a test sets.
pub fn plain_listing(created_at: u64, slug: &str) -> pb::Listing {
    let mut l = samples::listing(created_at, slug, None);
    l.tags.clear();
    l.description = "Made with care.".into();
    l
}

pub fn tombstone(key: &IdentityKey, slug: &str, age: u64) -> SignedObject {
    seal(
        key,
        Object::Tombstone(samples::tombstone(now() - age, slug)),
    )
}

pub fn profile(key: &IdentityKey, edit: impl FnOnce(&mut pb::Profile)) -> SignedObject {
    let mut p = samples::profile(now() - 10);
    edit(&mut p);
    seal(key, Object::Profile(p))
}

/// A buyer's rating of `shop` as seller, `age` seconds old, signed by `rating_key` under the
/// permit the shop signed for it when confirming order `[order; 32]`.
pub fn seller_rating(
    shop: &IdentityKey,
    rating_key: &IdentityKey,
    order: u8,
    overall: u32,
    age: u64,
) -> SignedObject {
    let mut r = samples::rating(now() - age, [order; 32], shop, &rating_key.public_key());
    r.overall = overall;
    seal(rating_key, Object::Rating(r))
}

/// A buyer's rating of `moderator` for the dispute of order `[order; 32]`, signed by
/// `rating_key` under the permit the moderator signed in its `Decision`. A moderator is rated on
/// overall and service only.
pub fn moderator_rating(
    moderator: &IdentityKey,
    rating_key: &IdentityKey,
    order: u8,
    overall: u32,
    service: u32,
) -> SignedObject {
    let order_id = [order; 32];
    let rating = pb::Rating {
        created_at: now() - 30,
        order_id: order_id.to_vec(),
        subject: moderator.public_key().as_bytes().to_vec(),
        role: pb::RatingRole::Moderator as i32,
        proof: Some(moderator.sign_rating_permit(
            &order_id,
            &rating_key.public_key(),
            pb::RatingRole::Moderator,
        )),
        overall,
        quality: 0,
        description: 0,
        delivery: 0,
        service,
        review: "Read both sides and decided within a day.".into(),
    };
    seal(rating_key, Object::Rating(rating))
}

/// `rating` signed by `key` without any check: how a forged rating reaches a server.
pub fn unchecked_rating(key: &IdentityKey, rating: &pb::Rating) -> Vec<u8> {
    use prost::Message as _;
    souk_protocol::RawEnvelope::sign_unchecked(
        key,
        souk_protocol::Kind::Rating as i32,
        rating.encode_to_vec(),
    )
}
