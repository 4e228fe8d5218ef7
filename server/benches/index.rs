//! Index server benchmark: ingest throughput (batches of 1,000, through the real ingest path:
//! verify, store, index; from one client, or from `--ingest-clients N` clients at once), then
//! search latency and throughput over the committed query mix (`benches/queries.txt`) at
//! concurrency 1 and 16, then resident memory.
//!
//! ```sh
//! cargo bench -p souk-server --bench index -- --listings 100000            # SQLite
//! cargo bench -p souk-server --bench index -- --listings 100000 --postgres  # PostgreSQL too
//! cargo bench -p souk-server --bench index -- --listings 100000 --ingest-clients 4
//! cargo bench -p souk-server --bench index -- --listings 1000000 --data-dir /tmp/souk-1m --per-query
//! ```
//! `--data-dir DIR` keeps the SQLite data set in DIR, and a later run with the same DIR that
//! finds at least `--listings` listings there skips generating and ingesting them (the search
//! index is rebuilt from the store when its schema changed, and the time it took is printed).
//! `--per-query` adds each query's own p50/p99 and the process's CPU time a query (caches off,
//! one client, `--queries` runs each). Every search line gives the CPU time a query too: less at
//! the mercy of a noisy host than the rates (clock ticks of 10 ms, so give it enough queries).
//! `--only TEXT` runs just the queries of the mix whose line contains TEXT, that way and nothing
//! else (to profile one query, e.g. `--only q=handmade --queries 5000` under `perf record`).
//! "Caches off" means the result cache and the decoded-listing cache both off: every query is
//! computed and every hit read from the database and decoded.
//! The ingest line is followed by the time the pipeline's store stage (the SQLite or PostgreSQL
//! transaction) and index stage (the search index commit) were busy: the stage busy nearly all
//! the time is the one that limits ingest. `--sqlite-sync normal` runs SQLite without an fsync
//! per commit (the server's `--sqlite-sync`; the default is `full`), to see what the fsync costs.
//! `--sqlite-cache-mb N` sets the page cache of SQLite's writing connection (the server's
//! `--sqlite-cache-mb`; the default is 256).
//! `--hits-through-pool` reads the hits through sqlx's pool after the search, as the server
//! did before the search threads read them themselves (for comparing the two in one build).
//! PostgreSQL comes from `SOUK_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/test);
//! a scratch database is created and dropped.

mod support;

use std::sync::Arc;
use std::time::Instant;

use souk_server::api::listings::{SearchParams, parse_search, run_search};
use souk_server::config::Config;
use sqlx::Connection;

/// The server binary's allocator (`src/main.rs`), so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    listings: usize,
    postgres: bool,
    queries_per_client: usize,
    ingest_clients: usize,
    data_dir: Option<std::path::PathBuf>,
    per_query: bool,
    only: Option<String>,
    hits_through_pool: bool,
    sqlite_sync: Option<souk_server::config::SqliteSync>,
    sqlite_cache_mb: Option<u32>,
}

fn args() -> Args {
    let mut out = Args {
        listings: 100_000,
        postgres: false,
        queries_per_client: 400,
        ingest_clients: 1,
        data_dir: None,
        per_query: false,
        only: None,
        hits_through_pool: false,
        sqlite_sync: None,
        sqlite_cache_mb: None,
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
            "--data-dir" => out.data_dir = it.next().map(Into::into),
            "--per-query" => out.per_query = true,
            "--only" => out.only = it.next(),
            "--hits-through-pool" => out.hits_through_pool = true,
            "--sqlite-sync" => {
                out.sqlite_sync = match it.next().as_deref() {
                    Some("full") => Some(souk_server::config::SqliteSync::Full),
                    Some("normal") => Some(souk_server::config::SqliteSync::Normal),
                    other => panic!("--sqlite-sync full|normal, not {other:?}"),
                };
            }
            "--sqlite-cache-mb" => {
                out.sqlite_cache_mb = match it.next().map(|v| v.parse()) {
                    Some(Ok(mb)) if mb > 0 => Some(mb),
                    other => panic!("--sqlite-cache-mb takes a number of MiB, not {other:?}"),
                };
            }
            _ => {} // cargo bench passes --bench
        }
    }
    out
}

/// A `VmRSS`-style line of `/proc/self/status` in MiB (0 when unreadable).
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// CPU time this process has used so far, user and system, in seconds (0 when unreadable):
/// fields 14 and 15 of `/proc/self/stat`, in clock ticks of 1/100 s.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are counted from its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn queries() -> Vec<SearchParams> {
    support::query_lines()
        .iter()
        .map(|l| serde_urlencoded::from_str(l).expect("valid query line"))
        .collect()
}

async fn ingest(label: &str, state: &souk_server::api::SharedState, a: &Args, now: u64) {
    // Generate (not timed as ingest), then ingest in batches of 1,000.
    let generated = Instant::now();
    let batches = support::demo_batches(a.listings, now);
    let generation = generated.elapsed();
    let count: usize = batches.iter().map(Vec::len).sum();
    let bytes: usize = batches.iter().flatten().map(Vec::len).sum();
    let stages_before = stage_seconds(state);
    let started = Instant::now();
    let cpu_before = cpu_seconds();
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
    let cpu = cpu_seconds() - cpu_before;
    let stages = stage_seconds(state);
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    let rate = count as f64 / ingest.as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    let cpu_per_envelope = cpu / count as f64 * 1e6;
    println!(
        "| {label} | ingest, {} client(s) | {count} envelopes ({:.0} MiB) in {:.1} s; CPU {cpu_per_envelope:.0} µs an envelope ({:.2} cores busy) | **{rate:.0} envelopes/s** | (signing them took {:.1} s, not counted) |",
        a.ingest_clients,
        bytes as f64 / 1_048_576.0,
        ingest.as_secs_f64(),
        cpu / ingest.as_secs_f64(),
        generation.as_secs_f64()
    );
    // The metrics are the process's: a run over both databases counts the first in the second.
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    if let (Some(before), Some(after)) = (stages_before, stages) {
        let [(store_s, store_n), (index_s, index_n)] =
            [0, 1].map(|i| (after[i].0 - before[i].0, after[i].1 - before[i].1));
        println!(
            "| {label} | ingest stages | store stage busy {store_s:.1} s in {store_n} groups ({:.0} envelopes a group), index stage busy {index_s:.1} s in {index_n} commits, of {:.1} s | | |",
            count as f64 / store_n.max(1) as f64,
            ingest.as_secs_f64()
        );
    }
}

/// The time the ingest pipeline's store and index stages have been busy, and how many groups
/// each has handled, so far (from `souk_ingest_stage_seconds` in the server's metrics; zero
/// before the first group).
fn stage_seconds(state: &souk_server::api::SharedState) -> Option<[(f64, u64); 2]> {
    let text = state.metrics.as_ref()?.render();
    let read = |stage: &str, what: &str| -> Option<f64> {
        let prefix = format!("souk_ingest_stage_seconds_{what}{{stage=\"{stage}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
    };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counts"
    )]
    let stage = |name: &str| {
        (
            read(name, "sum").unwrap_or(0.0),
            read(name, "count").unwrap_or(0.0) as u64,
        )
    };
    Some([stage("store"), stage("index")])
}

async fn bench(label: &str, database_url: Option<String>, a: &Args) {
    let temp = tempfile::tempdir().expect("tmp");
    // A kept data directory holds the SQLite data set only.
    let dir = match (&a.data_dir, &database_url) {
        (Some(dir), None) => dir.clone(),
        _ => temp.path().to_path_buf(),
    };
    let mut config = Config::for_tests(&dir, database_url);
    if let Some(sync) = a.sqlite_sync {
        config.sqlite_sync = sync;
    }
    if let Some(mb) = a.sqlite_cache_mb {
        config.sqlite_cache_mb = mb;
    }
    let opened = Instant::now();
    let mut state = souk_server::server::open(config).await.expect("open");
    if a.hits_through_pool {
        // As before 2026-12-03: hits read through sqlx's pool, after the search thread.
        Arc::get_mut(&mut state)
            .expect("the bench holds the only reference to the state")
            .envelopes = None;
    }
    let now = souk_protocol::ValidationContext::now().now;
    let held = usize::try_from(state.search.num_docs()).unwrap_or(usize::MAX);
    if held >= a.listings && held > 0 {
        println!(
            "| {label} | reused {} | {held} listings; opening took {:.1} s (a search index of another schema is rebuilt from the store then) | | |",
            dir.display(),
            opened.elapsed().as_secs_f64()
        );
    } else {
        ingest(label, &state, a, now).await;
    }
    println!(
        "| {label} | search index | {} segments | | |",
        state.search.segments()
    );

    let mix = queries();
    if let Some(only) = &a.only {
        per_query(label, &state, &mix, a.queries_per_client, now, Some(only)).await;
        state.store.close().await;
        return;
    }
    // Every query computed and every hit read (caches off), then with both caches (the default): repeated
    // identical queries within a second and without an index commit are served from it.
    // "Cache off" turns off the decoded-listing cache too, so every hit is read and decoded.
    for cache in [0, souk_server::search::DEFAULT_RESULT_CACHE_ENTRIES] {
        state.search.set_result_cache_entries(cache);
        state.listings.set_capacity(if cache == 0 {
            0
        } else {
            souk_server::service::LISTING_CACHE_ENTRIES
        });
        let mode = if cache == 0 {
            "caches off"
        } else {
            "caches on"
        };
        // Warm up: every query once.
        for params in &mix {
            let q = parse_search(params.clone(), now).expect("query");
            run_search(&state, q).await.expect("search");
        }
        for clients in [1usize, 16] {
            let started = Instant::now();
            let cpu_before = cpu_seconds();
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
            let cpu = cpu_seconds() - cpu_before;
            all.sort();
            #[allow(clippy::cast_precision_loss, reason = "rates")]
            let qps = all.len() as f64 / wall.as_secs_f64();
            // CPU time is less at the mercy of a noisy host than throughput: 2 cores over
            // 3,000 queries/s is 0.67 ms a query.
            #[allow(clippy::cast_precision_loss, reason = "rates")]
            let cpu_ms = cpu * 1e3 / all.len().max(1) as f64;
            println!(
                "| {label} | search, {clients} client(s), {} listings, {mode} | p50 {:.2} ms, p99 {:.2} ms; CPU {cpu_ms:.2} ms a query ({:.2} cores busy) | **{qps:.0} queries/s** | {} queries |",
                a.listings,
                support::percentile_ms(&all, 0.50),
                support::percentile_ms(&all, 0.99),
                cpu / wall.as_secs_f64(),
                all.len()
            );
        }
    }
    if a.per_query {
        per_query(label, &state, &mix, a.queries_per_client, now, None).await;
    }
    println!(
        "| {label} | memory | resident set after ingest and search: **{:.0} MiB**: {:.0} MiB anonymous (heap), {:.0} MiB file pages mapped (SQLite and tantivy files; the kernel may drop them) | | |",
        status_mib("VmRSS:"),
        status_mib("RssAnon:"),
        status_mib("RssFile:") + status_mib("RssShmem:"),
    );
    state.store.close().await;
}

/// Each query of the mix (or those containing `only`) on its own: caches off, one client, `runs`
/// times.
async fn per_query(
    label: &str,
    state: &souk_server::api::SharedState,
    mix: &[SearchParams],
    runs: usize,
    now: u64,
    only: Option<&str>,
) {
    state.search.set_result_cache_entries(0);
    state.listings.set_capacity(0);
    let lines = support::query_lines();
    println!(
        "\n| {label}: query (caches off, 1 client) | matches | p50 | p99 | CPU a query |\n|---|---|---|---|---|"
    );
    for (line, params) in lines.iter().zip(mix) {
        if only.is_some_and(|only| !line.contains(only)) {
            continue;
        }
        let mut latencies = Vec::with_capacity(runs);
        let mut total = 0;
        let cpu_before = cpu_seconds();
        for _ in 0..runs.max(1) {
            let q = parse_search(params.clone(), now).expect("query");
            let t = Instant::now();
            total = run_search(state, q).await.expect("search").total;
            latencies.push(t.elapsed());
        }
        #[allow(clippy::cast_precision_loss, reason = "rates")]
        let cpu_ms = (cpu_seconds() - cpu_before) * 1e3 / latencies.len() as f64;
        latencies.sort();
        println!(
            "| `{line}` | {total} | {:.2} ms | {:.2} ms | {cpu_ms:.2} ms |",
            support::percentile_ms(&latencies, 0.50),
            support::percentile_ms(&latencies, 0.99)
        );
    }
    println!();
    state
        .search
        .set_result_cache_entries(souk_server::search::DEFAULT_RESULT_CACHE_ENTRIES);
    state
        .listings
        .set_capacity(souk_server::service::LISTING_CACHE_ENTRIES);
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
