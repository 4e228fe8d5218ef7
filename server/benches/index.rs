//! Index server benchmark: ingest throughput (batches of 1,000, through the real ingest path:
//! verify, store, index; from one client, or from `--ingest-clients N` clients at once), then
//! search latency and throughput over the committed query mix (`benches/queries.txt`) at
//! concurrency 1 and 16, then resident memory.
//!
//! ```sh
//! cargo bench -p souk-server --bench index -- --listings 100000            # SQLite
//! cargo bench -p souk-server --bench index -- --listings 100000 --postgres  # PostgreSQL too
//! cargo bench -p souk-server --bench index -- --listings 100000 --ingest-clients 4
//! ```
//! PostgreSQL comes from `SOUK_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/test);
//! a scratch database is created and dropped.

mod support;

use std::sync::Arc;
use std::time::Instant;

use souk_server::api::listings::{SearchParams, parse_search, run_search};
use souk_server::config::Config;
use sqlx::Connection;

struct Args {
    listings: usize,
    postgres: bool,
    queries_per_client: usize,
    ingest_clients: usize,
}

fn args() -> Args {
    let mut out = Args {
        listings: 100_000,
        postgres: false,
        queries_per_client: 400,
        ingest_clients: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listings" => {
                out.listings = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(out.listings)
            }
            "--queries" => {
                out.queries_per_client = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(out.queries_per_client)
            }
            "--ingest-clients" => {
                out.ingest_clients = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or(out.ingest_clients)
            }
            "--postgres" => out.postgres = true,
            _ => {} // cargo bench passes --bench
        }
    }
    out
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn queries() -> Vec<SearchParams> {
    support::query_lines()
        .iter()
        .map(|l| serde_urlencoded::from_str(l).expect("valid query line"))
        .collect()
}

async fn bench(label: &str, database_url: Option<String>, a: &Args) {
    let dir = tempfile::tempdir().expect("tmp");
    let config = Config::for_tests(dir.path(), database_url);
    let state = souk_server::server::open(config).await.expect("open");
    let now = souk_protocol::ValidationContext::now().now;

    // Generate (not timed as ingest), then ingest in batches of 1,000.
    let generated = Instant::now();
    let batches = support::demo_batches(a.listings, now);
    let generation = generated.elapsed();
    let count: usize = batches.iter().map(Vec::len).sum();
    let bytes: usize = batches.iter().flatten().map(Vec::len).sum();
    let started = Instant::now();
    // `ingest_clients` batches in flight at once, as from that many clients or peers.
    use futures::StreamExt as _;
    let ingestor = &state.ingestor;
    futures::stream::iter(batches)
        .map(|batch| async move { ingestor.ingest(batch).await.expect("ingest") })
        .buffer_unordered(a.ingest_clients)
        .for_each(|results| async move {
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, souk_server::ingest::IngestResult::Accepted { .. }))
            );
        })
        .await;
    let ingest = started.elapsed();
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    let rate = count as f64 / ingest.as_secs_f64();
    println!(
        "| {label} | ingest, {} client(s) | {count} envelopes ({:.0} MiB) in {:.1} s | **{rate:.0} envelopes/s** | (signing them took {:.1} s, not counted) |",
        a.ingest_clients,
        bytes as f64 / 1_048_576.0,
        ingest.as_secs_f64(),
        generation.as_secs_f64()
    );

    let mix = queries();
    // Every query computed (cache off), then with the result cache (the default): repeated
    // identical queries within a second and without an index commit are served from it.
    for cache in [0, souk_server::search::DEFAULT_RESULT_CACHE_ENTRIES] {
        state.search.set_result_cache_entries(cache);
        let mode = if cache == 0 {
            "cache off"
        } else {
            "result cache on"
        };
        // Warm up: every query once.
        for params in &mix {
            let q = parse_search(params.clone(), now).expect("query");
            run_search(&state, q).await.expect("search");
        }
        for clients in [1usize, 16] {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for client in 0..clients {
                let state = Arc::clone(&state);
                let mix = mix.clone();
                let per_client = a.queries_per_client;
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let params = mix[(i + client) % mix.len()].clone();
                        let q = parse_search(params, now).expect("query");
                        let t = Instant::now();
                        run_search(&state, q).await.expect("search");
                        latencies.push(t.elapsed());
                    }
                    latencies
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("task"));
            }
            let wall = started.elapsed();
            all.sort();
            #[allow(clippy::cast_precision_loss, reason = "rates")]
            let qps = all.len() as f64 / wall.as_secs_f64();
            println!(
                "| {label} | search, {clients} client(s), {} listings, {mode} | p50 {:.2} ms, p99 {:.2} ms | **{qps:.0} queries/s** | {} queries |",
                a.listings,
                support::percentile_ms(&all, 0.50),
                support::percentile_ms(&all, 0.99),
                all.len()
            );
        }
    }
    println!(
        "| {label} | memory | resident set after ingest and search: **{:.0} MiB** | | |",
        rss_mib()
    );
    state.store.close().await;
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("| database | what | figures | rate | notes |\n|---|---|---|---|---|");
        bench("SQLite", None, &a).await;
        if a.postgres {
            let admin = std::env::var("SOUK_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let name = format!("souk_bench_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL reachable");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
                .expect("create db");
            let url = format!(
                "{}/{name}",
                &admin[..admin.rfind('/').expect("url has a database")]
            );
            bench("PostgreSQL", Some(url), &a).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop db");
        }
    });
}
