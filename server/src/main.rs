//! The `souk-server` binary.

use anyhow::Context;
use clap::Parser;
use souk_server::admin;
use souk_server::config::{Cli, Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's malloc: after a 1M ingest glibc kept the freed batches'
/// memory in its arenas (1,428–1,449 MiB held against 858–959 with mimalloc), and 16 searching
/// clients ran faster (README, "A shared key cache and mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.options)?;
    let command = cli.command.unwrap_or(Command::Serve);
    // The operator commands print their own progress and summary; their log shows warnings.
    let quiet = !matches!(command, Command::Serve | Command::Demo(_));
    init_logging(
        config.log_format,
        if quiet { "warn,sqlx=error" } else { "info" },
    );
    match command {
        Command::Serve => {
            tracing::info!(
                listen = %config.listen,
                data_dir = %config.data_dir.display(),
                database = %souk_server::server::redact(&config.database_url),
                "starting souk-server {}",
                env!("CARGO_PKG_VERSION")
            );
            let listen = config.listen;
            // Listen first: `/healthz` and `/readyz` answer while the server opens.
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let listen = listener.local_addr().unwrap_or(listen);
            tracing::info!(%listen, "listening; /readyz says when the API is ready");
            souk_server::server::run(config, listener, souk_server::server::shutdown_signal())
                .await?;
            tracing::info!("stopped");
        }
        Command::Demo(args) => {
            let state = souk_server::server::open(config).await?;
            souk_server::demo::run(&state, &args).await?;
        }
        Command::Migrate => admin::migrate(&config).await?,
        Command::Reindex => admin::reindex(&config).await?,
        Command::Check(args) => admin::check(&config, &args).await?,
        Command::Backup(args) => admin::backup(&config, &args).await?,
        Command::Restore(args) => admin::restore(&config, &args).await?,
        Command::Export(args) => admin::export(&config, &args).await?,
        Command::Import(args) => admin::import(&config, &args).await?,
    }
    Ok(())
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_env("SOUK_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
