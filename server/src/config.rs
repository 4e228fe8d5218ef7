//! One typed configuration. Sources, strongest first: command-line flags, `SOUK_*` environment
//! variables, the TOML file (`--config`), built-in defaults. `souk-server --help` lists every
//! option; `souk-server.example.toml` at the repository root shows the file format.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// The most search threads `--search-threads` accepts.
pub const MAX_SEARCH_THREADS: usize = 256;

/// The cores this process may run on (1 when the system cannot say).
#[must_use]
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// SQLite durability: what a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// fsync on every commit: an acknowledged write survives kill -9 and power loss.
    Full,
    /// fsync at checkpoints only: survives kill -9, may lose the last commits on power loss.
    Normal,
}

/// `souk-server`: a Souk index server.
#[derive(Debug, Parser)]
#[command(name = "souk-server", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub options: Options,
    /// What to do; without a command the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands besides running the server.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Generate realistic signed listings from several stores and ingest them into this
    /// server's data, so that search has something to show.
    Demo(DemoArgs),
    /// Apply the database migrations and exit (the server also applies them at start).
    Migrate,
    /// Rebuild the search index from the store (stop the server first).
    Reindex,
    /// Re-verify every stored envelope and compare the search index with the store; exits
    /// non-zero when anything differs.
    Check(CheckArgs),
    /// Write a consistent copy of the SQLite database while the server runs (PostgreSQL: use
    /// pg_dump, or `export`).
    Backup(BackupArgs),
    /// Replace the SQLite database with a backup (stop the server first); the search index is
    /// rebuilt from it.
    Restore(RestoreArgs),
    /// Write the stored envelopes, in ingest order, as an export stream file.
    Export(ExportArgs),
    /// Feed an export stream file through the ingest path: every envelope is verified again.
    Import(ImportArgs),
}

/// Options of `souk-server check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Rebuild the search index when it differs from the store (needs the server stopped).
    /// Stored envelopes are never changed.
    #[arg(long)]
    pub repair: bool,
}

/// Options of `souk-server backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The file to write (a SQLite database).
    pub file: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Options of `souk-server restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A file written by `souk-server backup`.
    pub file: PathBuf,
}

/// Options of `souk-server export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Only envelopes stored after this cursor (an ingest sequence, as the gRPC feed and
    /// earlier exports give it).
    #[arg(long, value_name = "CURSOR")]
    pub since: Option<i64>,
    /// Only these kinds (comma-separated: profile, listing, rating, tombstone).
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub kinds: Vec<ExportKind>,
    /// Write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A kind of object, for `export --kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportKind {
    /// Profiles.
    Profile,
    /// Listings.
    Listing,
    /// Ratings.
    Rating,
    /// Tombstones.
    Tombstone,
}

/// Options of `souk-server import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// An export stream file (`-` for stdin).
    pub file: PathBuf,
}

/// Options of `souk-server demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many listings to generate.
    #[arg(long, default_value_t = 1_000)]
    pub listings: usize,
    /// How many stores (signing keys) they come from.
    #[arg(long, default_value_t = 50)]
    pub stores: usize,
    /// Seed of the generator: the same seed gives the same listings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Every option; each can also come from the environment or the TOML file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// TOML configuration file.
    #[arg(long, env = "SOUK_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address for the REST API. [default: 127.0.0.1:8080]
    #[arg(long, env = "SOUK_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database and the search index. [default: ./souk-data]
    #[arg(long, env = "SOUK_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database: `sqlite://PATH` or `postgres://USER@HOST/DB`. [default: sqlite in the data directory]
    #[arg(long, env = "SOUK_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Name shown to clients and on the status page. [default: "Souk index"]
    #[arg(long, env = "SOUK_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
    /// Logo URL that OpenBazaar clients show for this search provider (`logo` in
    /// `/ob/listings/search`); an empty value turns the logo off. [default: PUBLIC-URL/ob/logo.svg
    /// when --public-url is set, else none]
    #[arg(long, env = "SOUK_OB_LOGO_URL", global = true)]
    pub ob_logo_url: Option<String>,
    /// Largest request body in bytes. [default: 16777216]
    #[arg(long, env = "SOUK_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Most envelopes in one ingest request. [default: 1000]
    #[arg(long, env = "SOUK_MAX_BATCH", global = true)]
    pub max_batch: Option<usize>,
    /// Requests per second each client IP may make on average. [default: 50]
    #[arg(long, env = "SOUK_RATE_LIMIT_PER_SECOND", global = true)]
    pub rate_limit_per_second: Option<u32>,
    /// Requests a client may make in a burst above the average. [default: 200]
    #[arg(long, env = "SOUK_RATE_LIMIT_BURST", global = true)]
    pub rate_limit_burst: Option<u32>,
    /// Browser origins allowed by CORS, comma-separated, or `*`. [default: *]
    #[arg(long, env = "SOUK_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// Log format. [default: text]
    #[arg(long, env = "SOUK_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Memory for the search index writer, in MiB. [default: 64]
    #[arg(long, env = "SOUK_SEARCH_MEMORY_MB", global = true)]
    pub search_memory_mb: Option<usize>,
    /// Threads that compute searches (each runs one search at a time; more searches wait in
    /// a queue). [default: the number of cores]
    #[arg(long, env = "SOUK_SEARCH_THREADS", global = true)]
    pub search_threads: Option<usize>,
    /// Search results kept for repeated identical queries (served for at most a second and
    /// never across an index commit); 0 turns the cache off. [default: 4096]
    #[arg(long, env = "SOUK_SEARCH_CACHE_ENTRIES", global = true)]
    pub search_cache_entries: Option<usize>,
    /// SQLite durability (`full` or `normal`). [default: full]
    #[arg(long, env = "SOUK_SQLITE_SYNC", global = true, value_enum)]
    pub sqlite_sync: Option<SqliteSync>,
    /// Page cache of SQLite's writing connection, in MiB: it keeps the index pages that ingest
    /// writes to between transactions; fills only as far as writes need. [default: 256]
    #[arg(long, env = "SOUK_SQLITE_CACHE_MB", global = true)]
    pub sqlite_cache_mb: Option<u32>,
    /// Take part in the peer-to-peer network (gossip, sync, Kademlia). [default: true]
    #[arg(long, env = "SOUK_P2P", global = true)]
    pub p2p: Option<bool>,
    /// Peer-to-peer listen addresses (multiaddrs, comma-separated; port 0 picks a free one).
    /// [default: /ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1]
    #[arg(long, env = "SOUK_P2P_LISTEN", global = true)]
    pub p2p_listen: Option<String>,
    /// Peers to join the network through, as multiaddrs ending in `/p2p/<peer id>`,
    /// comma-separated. [default: none]
    #[arg(long, env = "SOUK_P2P_BOOTSTRAP", global = true)]
    pub p2p_bootstrap: Option<String>,
    /// Addresses other peers should dial to reach this server (behind NAT with a forwarded
    /// port), comma-separated multiaddrs. [default: none]
    #[arg(long, env = "SOUK_P2P_EXTERNAL", global = true)]
    pub p2p_external: Option<String>,
    /// Dial peers found through Kademlia, beyond the bootstrap list; with `false` only the
    /// bootstrap peers are dialled (others may still dial in). [default: true]
    #[arg(long, env = "SOUK_P2P_DISCOVER", global = true)]
    pub p2p_discover: Option<bool>,
    /// Most peer-to-peer connections in all (each peer may hold two). [default: 128]
    #[arg(long, env = "SOUK_P2P_MAX_CONNECTIONS", global = true)]
    pub p2p_max_connections: Option<u32>,
    /// Seconds between set reconciliations with each connected peer (one also runs on every
    /// new connection). [default: 60]
    #[arg(long, env = "SOUK_SYNC_INTERVAL_SECS", global = true)]
    pub sync_interval_secs: Option<u64>,
    /// This server's public base URL (for example `https://souk.example.org`), as people list it
    /// among their inbox servers; used to tell itself apart from the other inbox servers it
    /// replicates messages to. [default: none]
    #[arg(long, env = "SOUK_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Days an unfetched inbox message is kept. [default: 30]
    #[arg(long, env = "SOUK_INBOX_TTL_DAYS", global = true)]
    pub inbox_ttl_days: Option<u64>,
    /// Most messages held for one recipient. [default: 1000]
    #[arg(long, env = "SOUK_INBOX_MAX_MESSAGES", global = true)]
    pub inbox_max_messages: Option<u32>,
    /// Most MiB held for one recipient. [default: 32]
    #[arg(long, env = "SOUK_INBOX_MAX_MB", global = true)]
    pub inbox_max_mb: Option<u32>,
    /// Replicate inbox messages to inbox servers at loopback, private or link-local addresses
    /// (test networks, a LAN). Off, a profile cannot make this server post to internal
    /// addresses. [default: false]
    #[arg(long, env = "SOUK_INBOX_REPLICATE_PRIVATE", global = true)]
    pub inbox_replicate_private: Option<bool>,
    /// Serve the gRPC API (IndexService, IngestService, FeedService, health, reflection).
    /// [default: true]
    #[arg(long, env = "SOUK_GRPC", global = true)]
    pub grpc: Option<bool>,
    /// Address for the gRPC API (port 0 picks a free one; the log names it).
    /// [default: 127.0.0.1:8081]
    #[arg(long, env = "SOUK_GRPC_ADDR", global = true)]
    pub grpc_addr: Option<SocketAddr>,
    /// PEM certificate chain for gRPC over TLS (with `grpc-tls-key`). [default: plaintext]
    #[arg(long, env = "SOUK_GRPC_TLS_CERT", global = true)]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for gRPC over TLS (with `grpc-tls-cert`). [default: plaintext]
    #[arg(long, env = "SOUK_GRPC_TLS_KEY", global = true)]
    pub grpc_tls_key: Option<PathBuf>,
    /// Most concurrent gRPC calls (HTTP/2 streams) on one connection. [default: 64]
    #[arg(long, env = "SOUK_GRPC_MAX_STREAMS", global = true)]
    pub grpc_max_streams: Option<u32>,
    /// Seconds a feed subscriber may leave its buffer (256 events) full before it is ended
    /// with RESOURCE_EXHAUSTED and told where to resume. [default: 30]
    #[arg(long, env = "SOUK_FEED_STALL_SECS", global = true)]
    pub feed_stall_secs: Option<u64>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// REST address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Server name.
    pub server_name: String,
    /// The logo URL of the OpenBazaar search-provider reply, if any.
    pub ob_logo_url: Option<String>,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Batch limit.
    pub max_batch: usize,
    /// Rate: requests per second per IP.
    pub rate_limit_per_second: u32,
    /// Rate: burst.
    pub rate_limit_burst: u32,
    /// CORS origins (`*` or a list).
    pub cors_origins: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Search writer memory in bytes.
    pub search_memory_bytes: usize,
    /// Threads computing searches.
    pub search_threads: usize,
    /// Cached search results (0: off).
    pub search_cache_entries: usize,
    /// SQLite durability.
    pub sqlite_sync: SqliteSync,
    /// Page cache of SQLite's writing connection, MiB.
    pub sqlite_cache_mb: u32,
    /// Peer-to-peer settings.
    pub p2p: P2pConfig,
    /// Inbox settings.
    pub inbox: InboxConfig,
    /// gRPC settings.
    pub grpc: GrpcConfig,
}

/// gRPC settings. Message size and per-address rate come from the REST settings
/// (`max_body_bytes`, `rate_limit_*`), so both APIs hold a client to the same limits.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Whether the gRPC API is served.
    pub enabled: bool,
    /// Its address.
    pub addr: SocketAddr,
    /// PEM certificate chain and private key files, for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Concurrent streams per connection.
    pub max_streams: u32,
    /// How long a feed subscriber may stall with a full buffer before it is ended.
    pub feed_stall: std::time::Duration,
}

/// Inbox (mailbox) settings.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// This server's public base URL, without a trailing slash.
    pub public_url: Option<String>,
    /// How long an unfetched message is kept.
    pub ttl: std::time::Duration,
    /// Most messages per recipient.
    pub max_messages: u32,
    /// Most bytes per recipient.
    pub max_bytes: u64,
    /// Replicate to private and loopback addresses too.
    pub replicate_private: bool,
}

/// Peer-to-peer settings.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Whether the server joins the network at all.
    pub enabled: bool,
    /// Listen addresses.
    pub listen: Vec<libp2p::Multiaddr>,
    /// Bootstrap peers (each address ends in `/p2p/<peer id>`).
    pub bootstrap: Vec<libp2p::Multiaddr>,
    /// Addresses announced to peers.
    pub external: Vec<libp2p::Multiaddr>,
    /// Dial peers learnt through Kademlia.
    pub discover: bool,
    /// Connection limit.
    pub max_connections: u32,
    /// Time between sync rounds with each peer.
    pub sync_interval: std::time::Duration,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl Options {
    /// Fills every unset option from `lower`.
    fn or(self, lower: Options) -> Options {
        Options {
            config: self.config.or(lower.config),
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            database_url: self.database_url.or(lower.database_url),
            server_name: self.server_name.or(lower.server_name),
            ob_logo_url: self.ob_logo_url.or(lower.ob_logo_url),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_batch: self.max_batch.or(lower.max_batch),
            rate_limit_per_second: self.rate_limit_per_second.or(lower.rate_limit_per_second),
            rate_limit_burst: self.rate_limit_burst.or(lower.rate_limit_burst),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            log_format: self.log_format.or(lower.log_format),
            search_memory_mb: self.search_memory_mb.or(lower.search_memory_mb),
            search_threads: self.search_threads.or(lower.search_threads),
            search_cache_entries: self.search_cache_entries.or(lower.search_cache_entries),
            sqlite_sync: self.sqlite_sync.or(lower.sqlite_sync),
            sqlite_cache_mb: self.sqlite_cache_mb.or(lower.sqlite_cache_mb),
            p2p: self.p2p.or(lower.p2p),
            p2p_listen: self.p2p_listen.or(lower.p2p_listen),
            p2p_bootstrap: self.p2p_bootstrap.or(lower.p2p_bootstrap),
            p2p_external: self.p2p_external.or(lower.p2p_external),
            p2p_discover: self.p2p_discover.or(lower.p2p_discover),
            p2p_max_connections: self.p2p_max_connections.or(lower.p2p_max_connections),
            sync_interval_secs: self.sync_interval_secs.or(lower.sync_interval_secs),
            public_url: self.public_url.or(lower.public_url),
            inbox_ttl_days: self.inbox_ttl_days.or(lower.inbox_ttl_days),
            inbox_max_messages: self.inbox_max_messages.or(lower.inbox_max_messages),
            inbox_max_mb: self.inbox_max_mb.or(lower.inbox_max_mb),
            inbox_replicate_private: self
                .inbox_replicate_private
                .or(lower.inbox_replicate_private),
            grpc: self.grpc.or(lower.grpc),
            grpc_addr: self.grpc_addr.or(lower.grpc_addr),
            grpc_tls_cert: self.grpc_tls_cert.or(lower.grpc_tls_cert),
            grpc_tls_key: self.grpc_tls_key.or(lower.grpc_tls_key),
            grpc_max_streams: self.grpc_max_streams.or(lower.grpc_max_streams),
            feed_stall_secs: self.feed_stall_secs.or(lower.feed_stall_secs),
        }
    }
}

impl Config {
    /// Resolves flags and environment (already merged by clap, flags first) over the TOML file
    /// over the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable or invalid file or an out-of-range value.
    pub fn load(options: Options) -> Result<Self, ConfigError> {
        let file = match &options.config {
            Some(path) => read_file(path)?,
            None => Options::default(),
        };
        let o = options.or(file);
        let data_dir = o.data_dir.unwrap_or_else(|| PathBuf::from("souk-data"));
        let database_url = o
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("souk.db").display()));
        let public_url = o
            .public_url
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty());
        let config = Self {
            listen: o
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url,
            data_dir,
            server_name: o.server_name.unwrap_or_else(|| "Souk index".into()),
            // Given but empty: no logo, even with a public URL. Not given: the server's own.
            ob_logo_url: match o.ob_logo_url.as_deref().map(str::trim) {
                Some("") => None,
                Some(url) => Some(url.to_string()),
                None => public_url.as_deref().map(|u| format!("{u}/ob/logo.svg")),
            },
            max_body_bytes: o.max_body_bytes.unwrap_or(16 * 1024 * 1024),
            max_batch: o.max_batch.unwrap_or(1_000),
            rate_limit_per_second: o.rate_limit_per_second.unwrap_or(50),
            rate_limit_burst: o.rate_limit_burst.unwrap_or(200),
            cors_origins: o
                .cors_origins
                .unwrap_or_else(|| "*".into())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            log_format: o.log_format.unwrap_or(LogFormat::Text),
            search_memory_bytes: o.search_memory_mb.unwrap_or(64) * 1024 * 1024,
            search_threads: o.search_threads.unwrap_or_else(cores),
            search_cache_entries: o
                .search_cache_entries
                .unwrap_or(crate::search::DEFAULT_RESULT_CACHE_ENTRIES),
            sqlite_sync: o.sqlite_sync.unwrap_or(SqliteSync::Full),
            sqlite_cache_mb: o
                .sqlite_cache_mb
                .unwrap_or(crate::store::SqliteTuning::DEFAULT_WRITER_CACHE_MIB),
            p2p: P2pConfig {
                enabled: o.p2p.unwrap_or(true),
                listen: multiaddrs(
                    "p2p-listen",
                    o.p2p_listen
                        .as_deref()
                        .unwrap_or("/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1"),
                )?,
                bootstrap: multiaddrs("p2p-bootstrap", o.p2p_bootstrap.as_deref().unwrap_or(""))?,
                external: multiaddrs("p2p-external", o.p2p_external.as_deref().unwrap_or(""))?,
                discover: o.p2p_discover.unwrap_or(true),
                max_connections: o.p2p_max_connections.unwrap_or(128),
                sync_interval: std::time::Duration::from_secs(o.sync_interval_secs.unwrap_or(60)),
            },
            inbox: InboxConfig {
                public_url,
                ttl: std::time::Duration::from_secs(
                    o.inbox_ttl_days.unwrap_or(30).saturating_mul(24 * 60 * 60),
                ),
                max_messages: o.inbox_max_messages.unwrap_or(1_000),
                max_bytes: u64::from(o.inbox_max_mb.unwrap_or(32)) * 1024 * 1024,
                replicate_private: o.inbox_replicate_private.unwrap_or(false),
            },
            grpc: GrpcConfig {
                enabled: o.grpc.unwrap_or(true),
                addr: o
                    .grpc_addr
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
                tls: match (o.grpc_tls_cert, o.grpc_tls_key) {
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Invalid {
                            name: "grpc-tls-cert",
                            reason: "give both grpc-tls-cert and grpc-tls-key, or neither",
                        });
                    }
                },
                max_streams: o.grpc_max_streams.unwrap_or(64),
                feed_stall: std::time::Duration::from_secs(o.feed_stall_secs.unwrap_or(30)),
            },
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason| Err(ConfigError::Invalid { name, reason });
        if self.max_batch == 0 {
            return invalid("max-batch", "must be at least 1");
        }
        if self.max_body_bytes < souk_protocol::limits::MAX_ENVELOPE_BYTES * 2 {
            return invalid("max-body-bytes", "must hold at least one envelope (131072)");
        }
        if self.rate_limit_per_second == 0 || self.rate_limit_burst == 0 {
            return invalid("rate-limit", "per-second and burst must be at least 1");
        }
        if self.search_memory_bytes < 16 * 1024 * 1024 {
            return invalid("search-memory-mb", "must be at least 16");
        }
        if !(1..=MAX_SEARCH_THREADS).contains(&self.search_threads) {
            return invalid("search-threads", "must be between 1 and 256");
        }
        if self.p2p.enabled && self.p2p.listen.is_empty() {
            return invalid("p2p-listen", "needs at least one address while p2p is on");
        }
        if self.p2p.max_connections < 2 {
            return invalid("p2p-max-connections", "must be at least 2");
        }
        if self.p2p.sync_interval.is_zero() {
            return invalid("sync-interval-secs", "must be at least 1");
        }
        if self
            .p2p
            .bootstrap
            .iter()
            .any(|a| !matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))))
        {
            return invalid("p2p-bootstrap", "every address must end in /p2p/<peer id>");
        }
        if self.inbox.ttl.is_zero() || self.inbox.ttl.as_secs() > 365 * 24 * 60 * 60 {
            return invalid("inbox-ttl-days", "must be between 1 and 365");
        }
        if self.inbox.max_messages == 0 {
            return invalid("inbox-max-messages", "must be at least 1");
        }
        if self.inbox.max_bytes < souk_protocol::limits::MAX_SEALED_MESSAGE_BYTES as u64 {
            return invalid("inbox-max-mb", "must be at least 1");
        }
        if let Some(url) = &self.inbox.public_url
            && let Err(reason) = web_url(url)
        {
            return invalid("public-url", reason);
        }
        if let Some(url) = &self.ob_logo_url
            && let Err(reason) = web_url(url)
        {
            return invalid("ob-logo-url", reason);
        }
        if self.sqlite_cache_mb == 0 {
            return invalid("sqlite-cache-mb", "must be at least 1");
        }
        if self.grpc.max_streams == 0 {
            return invalid("grpc-max-streams", "must be at least 1");
        }
        if self.grpc.feed_stall.is_zero() {
            return invalid("feed-stall-secs", "must be at least 1");
        }
        if !self.database_url.starts_with("sqlite:") && !self.database_url.starts_with("postgres") {
            return invalid("database-url", "must start with sqlite:// or postgres://");
        }
        Ok(())
    }

    /// How to run a SQLite store.
    #[must_use]
    pub fn sqlite_tuning(&self) -> crate::store::SqliteTuning {
        crate::store::SqliteTuning {
            sync: self.sqlite_sync,
            writer_cache_mib: self.sqlite_cache_mb,
        }
    }

    /// The search index directory.
    #[must_use]
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("search")
    }

    /// A configuration for tests: everything default except the data directory and database.
    #[must_use]
    pub fn for_tests(data_dir: &Path, database_url: Option<String>) -> Self {
        let mut config = Self::load(Options {
            data_dir: Some(data_dir.to_path_buf()),
            database_url,
            ..Options::default()
        })
        .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"));
        config.rate_limit_per_second = 10_000;
        config.rate_limit_burst = 10_000;
        config.p2p.enabled = false;
        config
    }
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host (what a browser or an
/// OpenBazaar client can follow).
fn web_url(url: &str) -> Result<(), &'static str> {
    let parsed = url::Url::parse(url).map_err(|_| "must be an absolute http:// or https:// URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must start with https:// or http://");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host");
    }
    Ok(())
}

/// Parses a comma-separated list of multiaddrs.
fn multiaddrs(name: &'static str, text: &str) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| ConfigError::Invalid {
                name,
                reason: "not a multiaddr (for example /ip4/0.0.0.0/tcp/4001 or /dns4/example.org/tcp/4001/p2p/12D3Koo…)",
            })
        })
        .collect()
}

fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(options: Options) -> Result<Config, ConfigError> {
        Config::load(options)
    }

    /// Whether `result` refuses the configuration for the setting `name`.
    fn refused_as(result: &Result<Config, ConfigError>, name: &str) -> bool {
        matches!(result, Err(ConfigError::Invalid { name: refused, .. }) if *refused == name)
    }

    #[test]
    fn the_sample_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../souk-server.example.toml");
        let from_file = load(Options {
            config: Some(path),
            ..Options::default()
        })
        .expect("the sample config loads");
        let defaults = load(Options::default()).expect("defaults");
        assert_eq!(from_file.listen, defaults.listen);
        assert_eq!(from_file.grpc.addr, defaults.grpc.addr);
        assert_eq!(from_file.grpc.max_streams, defaults.grpc.max_streams);
        assert_eq!(from_file.grpc.feed_stall, defaults.grpc.feed_stall);
        assert!(from_file.grpc.enabled && from_file.grpc.tls.is_none());
    }

    #[test]
    fn the_openbazaar_logo_defaults_to_the_public_url_and_can_be_set() {
        assert_eq!(
            load(Options::default()).expect("defaults").ob_logo_url,
            None
        );
        let public = load(Options {
            public_url: Some("https://souk.example.org/".into()),
            ..Options::default()
        })
        .expect("valid");
        assert_eq!(
            public.ob_logo_url.as_deref(),
            Some("https://souk.example.org/ob/logo.svg")
        );
        let own = load(Options {
            public_url: Some("https://souk.example.org".into()),
            ob_logo_url: Some("https://cdn.example.org/logo.png".into()),
            ..Options::default()
        })
        .expect("valid");
        assert_eq!(
            own.ob_logo_url.as_deref(),
            Some("https://cdn.example.org/logo.png")
        );
        for off in ["", "  "] {
            let none = load(Options {
                public_url: Some("https://souk.example.org".into()),
                ob_logo_url: Some(off.into()),
                ..Options::default()
            })
            .expect("valid");
            assert_eq!(
                none.ob_logo_url, None,
                "ob-logo-url {off:?} turns the logo off"
            );
        }
        for bad in [
            "logo.png",
            "https://",
            "https://a b/logo.png",
            "ftp://x.org/logo.png",
        ] {
            for (setting, options) in [
                (
                    "ob-logo-url",
                    Options {
                        ob_logo_url: Some(bad.into()),
                        ..Options::default()
                    },
                ),
                (
                    "public-url",
                    Options {
                        public_url: Some(bad.into()),
                        ..Options::default()
                    },
                ),
            ] {
                let refused = load(options);
                assert!(
                    refused_as(&refused, setting),
                    "{setting} = {bad}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn search_threads_default_to_the_cores_and_must_be_1_to_256() {
        assert_eq!(
            load(Options::default()).expect("defaults").search_threads,
            cores()
        );
        let with = |threads| {
            load(Options {
                search_threads: Some(threads),
                ..Options::default()
            })
        };
        assert_eq!(with(3).expect("valid").search_threads, 3);
        for bad in [0, MAX_SEARCH_THREADS + 1] {
            let refused = with(bad);
            assert!(refused_as(&refused, "search-threads"), "{bad}: {refused:?}");
        }
    }

    #[test]
    fn the_sqlite_writer_cache_defaults_to_256_mib_can_be_set_and_is_never_zero() {
        let defaults = load(Options::default()).expect("defaults");
        assert_eq!(defaults.sqlite_tuning().writer_cache_mib, 256);
        let set = load(Options {
            sqlite_cache_mb: Some(64),
            sqlite_sync: Some(SqliteSync::Normal),
            ..Options::default()
        })
        .expect("valid");
        assert_eq!(
            set.sqlite_tuning(),
            crate::store::SqliteTuning {
                sync: SqliteSync::Normal,
                writer_cache_mib: 64
            }
        );
        let zero = load(Options {
            sqlite_cache_mb: Some(0),
            ..Options::default()
        });
        assert!(refused_as(&zero, "sqlite-cache-mb"), "{zero:?}");
    }

    #[test]
    fn grpc_settings_are_checked() {
        let half_tls = load(Options {
            grpc_tls_cert: Some("cert.pem".into()),
            ..Options::default()
        });
        assert!(refused_as(&half_tls, "grpc-tls-cert"), "{half_tls:?}");
        let no_streams = load(Options {
            grpc_max_streams: Some(0),
            ..Options::default()
        });
        assert!(
            refused_as(&no_streams, "grpc-max-streams"),
            "{no_streams:?}"
        );
        let flags_win = load(Options {
            grpc_addr: Some("127.0.0.1:9999".parse().expect("addr")),
            grpc: Some(false),
            ..Options::default()
        })
        .expect("valid");
        assert_eq!(flags_win.grpc.addr.port(), 9999);
        assert!(!flags_win.grpc.enabled);
    }
}
