//! The operator commands of the real binary: migrate, check (and --repair), backup while the
//! server runs, restore (and its refusals), export and import (and their refusals). Bad input
//! always exits non-zero with a message naming the problem, and leaves stored data unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sqlx::{Connection, Row};

/// Runs `souk-server <args>` on `data_dir` (and `database`, if PostgreSQL) to completion,
/// within two minutes.
fn run(data_dir: &Path, database: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_souk-server"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--p2p", "false"])
        .args(args)
        .env_remove("SOUK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = database {
        command.args(["--database-url", url]);
    }
    let mut child = command.spawn().expect("souk-server starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("status").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("souk-server {args:?} did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "expected success:\n{}",
        text(output)
    );
    text(output)
}

#[track_caller]
fn refused(output: &Output, needle: &str) -> String {
    let all = text(output);
    assert!(
        !output.status.success(),
        "expected a failure naming {needle:?}:\n{all}"
    );
    assert!(all.contains(needle), "expected {needle:?} in:\n{all}");
    all
}

async fn envelope_count(db: &Path) -> i64 {
    count(db, None, "SELECT COUNT(*) FROM envelopes").await
}

/// The one number a `SELECT COUNT(*) ...` answers, from `database` or else the SQLite file `db`.
async fn count(db: &Path, database: Option<&str>, sql: &'static str) -> i64 {
    macro_rules! count {
        ($connection:expr) => {{
            let mut connection = $connection;
            let count: i64 = sqlx::query(sql)
                .fetch_one(&mut connection)
                .await
                .expect("count")
                .get(0);
            connection.close().await.expect("close");
            count
        }};
    }
    match database {
        Some(url) => count!(sqlx::PgConnection::connect(url).await.expect("connect")),
        None => count!(
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .expect("open the database")
        ),
    }
}

fn demo(dir: &Path, database: Option<&str>, listings: usize) {
    ok(&run(
        dir,
        database,
        &[
            "demo",
            "--listings",
            &listings.to_string(),
            "--stores",
            "10",
        ],
    ));
}

/// Flips the last bit of the envelope stored at `seq` 20, behind the server's back, in its
/// SQLite file in `dir` or in `database`.
async fn tamper_with_seq_20(dir: &Path, database: Option<&str>) {
    macro_rules! tamper {
        ($connection:expr) => {{
            let mut connection = $connection;
            let mut bytes: Vec<u8> = sqlx::query("SELECT bytes FROM envelopes WHERE seq = 20")
                .fetch_one(&mut connection)
                .await
                .expect("read")
                .get(0);
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            sqlx::query("UPDATE envelopes SET bytes = $1 WHERE seq = 20")
                .bind(bytes)
                .execute(&mut connection)
                .await
                .expect("tamper");
            connection.close().await.expect("close");
        }};
    }
    match database {
        Some(url) => tamper!(sqlx::PgConnection::connect(url).await.expect("connect")),
        None => tamper!(
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("souk.db").display()))
                .await
                .expect("open")
        ),
    }
}

/// Stored envelopes, in the SQLite file in `dir` or in `database`.
async fn stored_envelopes(dir: &Path, database: Option<&str>) -> i64 {
    count(
        &dir.join("souk.db"),
        database,
        "SELECT COUNT(*) FROM envelopes",
    )
    .await
}

/// Whether the store (the SQLite file in `dir`, or `database`) has the `envelopes` table.
async fn has_envelopes_table(dir: &Path, database: Option<&str>) -> bool {
    let file = dir.join("souk.db");
    let sql = if database.is_some() {
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'envelopes'"
    } else if file.exists() {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'envelopes'"
    } else {
        return false;
    };
    count(&file, database, sql).await == 1
}

async fn migrate_check_and_repair(database: Option<&str>) {
    let dir = tempfile::tempdir().expect("tmp");
    assert!(
        !has_envelopes_table(dir.path(), database).await,
        "the store starts empty"
    );
    let out = ok(&run(dir.path(), database, &["migrate"]));
    assert!(
        has_envelopes_table(dir.path(), database).await,
        "migrate created the schema"
    );
    assert!(
        out.contains("schema version 6") && out.contains("(applied)"),
        "{out}"
    );
    // Again: nothing left to do, and it says so the same way.
    let out = ok(&run(dir.path(), database, &["migrate"]));
    assert!(
        out.contains("schema version 6 (6 migrations applied)") && !out.contains("(pending)"),
        "{out}"
    );
    demo(dir.path(), database, 150);
    let out = ok(&run(dir.path(), database, &["check"]));
    assert!(
        out.contains("checked 160 stored envelopes and 150 current listings")
            && out.contains("search index matches the store"),
        "{out}"
    );

    // The index loses its files: check says so and fails; --repair rebuilds it.
    std::fs::remove_dir_all(dir.path().join("search")).expect("remove the index");
    refused(
        &run(dir.path(), database, &["check"]),
        "the search index cannot be read",
    );
    let out = ok(&run(dir.path(), database, &["check", "--repair"]));
    assert!(
        out.contains("repaired: search index rebuilt from the store (150 listings"),
        "{out}"
    );
    ok(&run(dir.path(), database, &["check"]));
    let out = ok(&run(dir.path(), database, &["reindex"]));
    assert!(out.contains("search index rebuilt: 150 listings"), "{out}");

    // A stored envelope is altered behind the server's back: check names it, fails, and
    // changes nothing.
    tamper_with_seq_20(dir.path(), database).await;
    let out = refused(
        &run(dir.path(), database, &["check", "--repair"]),
        "1 bad envelope",
    );
    assert!(out.contains("(seq 20): "), "{out}");
    assert_eq!(
        stored_envelopes(dir.path(), database).await,
        160,
        "check never deletes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_and_repair_on_sqlite() {
    migrate_check_and_repair(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_and_repair_on_postgres() {
    let database = PgDatabase::create_empty().await;
    migrate_check_and_repair(Some(&database.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_then_restore_and_its_refusals() {
    let dir = tempfile::tempdir().expect("tmp");
    let spare = tempfile::tempdir().expect("tmp");
    demo(dir.path(), None, 100);
    let db = dir.path().join("souk.db");

    // A backup while a server runs on the same data.
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_souk-server"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--p2p", "false", "--grpc-addr", "127.0.0.1:0"])
        .env("SOUK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the server did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backup = spare.path().join("souk-backup.db");
    let out = ok(&run(
        dir.path(),
        None,
        &["backup", backup.to_str().expect("utf-8")],
    ));
    assert!(out.contains("110 envelopes, schema version 6"), "{out}");
    refused(
        &run(
            dir.path(),
            None,
            &["backup", backup.to_str().expect("utf-8")],
        ),
        "exists; pass --force",
    );
    // Restoring or reindexing under a running server is refused.
    refused(
        &run(
            dir.path(),
            None,
            &["restore", backup.to_str().expect("utf-8")],
        ),
        "stop it first",
    );
    refused(&run(dir.path(), None, &["reindex"]), "stop it first");
    let _ = server.kill();
    let _ = server.wait();

    // More data after the backup; then refusals that must change nothing.
    ok(&run(
        dir.path(),
        None,
        &["demo", "--listings", "130", "--stores", "10", "--seed", "9"],
    ));
    let before = envelope_count(&db).await;
    assert!(before > 110);
    let not_sqlite = spare.path().join("notes.txt");
    std::fs::write(&not_sqlite, "hello").expect("write");
    refused(
        &run(
            dir.path(),
            None,
            &["restore", not_sqlite.to_str().expect("utf-8")],
        ),
        "is not a SQLite database",
    );
    let corrupt = spare.path().join("corrupt.db");
    let mut bytes = std::fs::read(&backup).expect("backup bytes");
    let len = bytes.len();
    for byte in &mut bytes[len / 2..len / 2 + 4096] {
        *byte ^= 0x5a;
    }
    std::fs::write(&corrupt, &bytes).expect("write");
    refused(
        &run(
            dir.path(),
            None,
            &["restore", corrupt.to_str().expect("utf-8")],
        ),
        "is corrupt",
    );
    let newer = spare.path().join("newer.db");
    std::fs::copy(&backup, &newer).expect("copy");
    {
        let mut connection =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", newer.display()))
                .await
                .expect("open");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&mut connection)
        .await
        .expect("future schema");
        connection.close().await.expect("close");
    }
    refused(
        &run(
            dir.path(),
            None,
            &["restore", newer.to_str().expect("utf-8")],
        ),
        "schema version 9999, newer than this souk-server knows",
    );
    assert_eq!(envelope_count(&db).await, before, "refusals change nothing");

    // The real restore.
    let out = ok(&run(
        dir.path(),
        None,
        &["restore", backup.to_str().expect("utf-8")],
    ));
    assert!(
        out.contains("restored 110 envelopes") && out.contains("pre-restore"),
        "{out}"
    );
    assert!(out.contains("search index rebuilt: 100 listings"), "{out}");
    assert_eq!(envelope_count(&db).await, 110);
    ok(&run(dir.path(), None, &["check"]));
}

/// Splits an export stream into its records: sequence, envelope bytes, where the record starts,
/// where its envelope starts.
fn records(stream: &[u8]) -> Vec<(u64, Vec<u8>, usize, usize)> {
    fn varint(bytes: &[u8], at: &mut usize) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }
    assert_eq!(&stream[..8], b"SOUKEXP1");
    let mut at = 8;
    let mut out = Vec::new();
    while at < stream.len() {
        let start = at;
        let seq = varint(stream, &mut at);
        let len = usize::try_from(varint(stream, &mut at)).expect("length");
        out.push((seq, stream[at..at + len].to_vec(), start, at));
        at += len;
    }
    out
}

async fn export_import_round_trip(source: Option<&str>, target: Option<&str>) {
    let dir = tempfile::tempdir().expect("tmp");
    let other = tempfile::tempdir().expect("tmp");
    demo(dir.path(), source, 120);
    let file = dir.path().join("all.export");
    let out = ok(&run(
        dir.path(),
        source,
        &["export", "--output", file.to_str().expect("utf-8")],
    ));
    assert!(
        out.contains("exported 130 envelopes") && out.contains("--since 130"),
        "{out}"
    );
    let stream = std::fs::read(&file).expect("export");
    let all = records(&stream);
    assert_eq!(all.len(), 130);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ingest order");

    // Only profiles, after a cursor.
    let profiles = dir.path().join("profiles.export");
    ok(&run(
        dir.path(),
        source,
        &[
            "export",
            "--kinds",
            "profile",
            "--since",
            "2",
            "--output",
            profiles.to_str().expect("utf-8"),
        ],
    ));
    assert_eq!(records(&std::fs::read(&profiles).expect("read")).len(), 8);
    refused(
        &run(
            dir.path(),
            source,
            &["export", "--since", "100000", "--output", "x"],
        ),
        "past the newest stored envelope (130)",
    );

    // Import everything into an empty server: every envelope verified again.
    let out = ok(&run(
        other.path(),
        target,
        &["import", file.to_str().expect("utf-8")],
    ));
    assert!(out.contains("imported 130 records: 130 accepted"), "{out}");
    let out = ok(&run(
        other.path(),
        target,
        &["import", file.to_str().expect("utf-8")],
    ));
    assert!(out.contains("130 already stored"), "{out}");
    ok(&run(other.path(), target, &["check"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_on_sqlite() {
    export_import_round_trip(None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_on_postgres() {
    let source = PgDatabase::create().await;
    let target = PgDatabase::create().await;
    export_import_round_trip(Some(&source.url), Some(&target.url)).await;
    let dir = tempfile::tempdir().expect("tmp");
    refused(
        &run(dir.path(), Some(&source.url), &["backup", "b.db"]),
        "pg_dump",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_skips_forged_records_and_stops_at_a_truncation() {
    let dir = tempfile::tempdir().expect("tmp");
    let other = tempfile::tempdir().expect("tmp");
    demo(dir.path(), None, 40);
    let file: PathBuf = dir.path().join("all.export");
    ok(&run(
        dir.path(),
        None,
        &["export", "--output", file.to_str().expect("utf-8")],
    ));
    let mut stream = std::fs::read(&file).expect("export");
    let all = records(&stream);
    // Record 5's envelope gets a flipped byte (a forged signature); the file loses its last
    // 10 bytes (the last record is truncated).
    let (_, envelope, start, body) = &all[4];
    stream[body + envelope.len() - 1] ^= 1;
    stream.truncate(stream.len() - 10);
    let damaged = dir.path().join("damaged.export");
    std::fs::write(&damaged, &stream).expect("write");
    let out = refused(
        &run(
            other.path(),
            None,
            &["import", damaged.to_str().expect("utf-8")],
        ),
        "problem(s) in the import file",
    );
    assert!(out.contains(&format!("record 5 (byte {start}")), "{out}");
    assert!(out.contains("bad_signature"), "{out}");
    assert!(
        out.contains("record 50 (byte") && out.contains("is truncated"),
        "{out}"
    );
    assert!(
        out.contains("48 accepted") && out.contains("1 rejected"),
        "{out}"
    );
    assert_eq!(envelope_count(&other.path().join("souk.db")).await, 48);

    let garbage = dir.path().join("garbage.export");
    std::fs::write(&garbage, b"PK\x03\x04 not an export").expect("write");
    refused(
        &run(
            other.path(),
            None,
            &["import", garbage.to_str().expect("utf-8")],
        ),
        "is not a Souk export stream",
    );
    assert_eq!(envelope_count(&other.path().join("souk.db")).await, 48);
}

#[test]
fn unknown_config_keys_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("souk.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:9\"\nlisten-port = 8080\n").expect("write");
    refused(
        &run(
            dir.path(),
            None,
            &["--config", config.to_str().expect("utf-8"), "migrate"],
        ),
        "unknown field `listen-port`",
    );
}
