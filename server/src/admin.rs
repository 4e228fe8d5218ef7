//! Operator commands: `souk-server migrate | reindex | check | backup | restore | export |
//! import`. Each shows progress on stderr (hidden when stderr is not a terminal), ends with a
//! summary, and fails with a message that names the problem and leaves stored data as it was.
//!
//! **Export stream format** (`export`, `import`): the 8 bytes `SOUKEXP1`, then one record per
//! envelope in ingest order: the ingest sequence as an unsigned LEB128 varint, the envelope's
//! length as a varint, the envelope bytes. Nothing else: envelopes are self-authenticating, and
//! `import` verifies every one again through the ingest path.

use std::collections::HashSet;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use souk_protocol::{Object, RawEnvelope};

use crate::config::{
    BackupArgs, CheckArgs, Config, ExportArgs, ExportKind, ImportArgs, RestoreArgs,
};
use crate::ingest::{self, IngestResult};
use crate::search::{self, SearchIndex};
use crate::server::redact;
use crate::store::{Store, StoredRow};

/// The first bytes of an export stream.
pub const EXPORT_MAGIC: &[u8; 8] = b"SOUKEXP1";
/// Envelopes per page read from the store, and per batch handed to the ingest path.
const PAGE: i64 = 1_000;

fn progress(length: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:12} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

async fn connect(config: &Config) -> anyhow::Result<Store> {
    Store::connect(&config.database_url, config.sqlite_tuning())
        .await
        .with_context(|| format!("cannot open the database {}", redact(&config.database_url)))
}

fn mib(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "a size for people")]
    let mib = bytes as f64 / 1_048_576.0;
    mib
}

/// The SQLite file a `sqlite:` URL names.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .context("not a sqlite: database URL")?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        bail!("the database URL {url} names no file");
    }
    Ok(PathBuf::from(path))
}

/// `migrate`: apply the migrations and list them.
///
/// # Errors
/// If the database cannot be opened or migrated.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = connect(config).await?;
    let applied = store.applied_migrations().await?;
    println!(
        "{} database {}: schema version {} ({} migrations applied)",
        store.backend(),
        redact(&config.database_url),
        applied.last().copied().unwrap_or(0),
        applied.len()
    );
    for (version, description) in store.known_migrations() {
        let state = if applied.contains(&version) {
            "applied"
        } else {
            "pending"
        };
        println!("  {version:>4}  {description}  ({state})");
    }
    store.close().await;
    Ok(())
}

/// `reindex`: empty the search index and rebuild it from the store.
///
/// # Errors
/// If a server is running on the data directory, or the store or index fails.
pub async fn reindex(config: &Config) -> anyhow::Result<()> {
    let store = connect(config).await?;
    let result = rebuild(config, &store).await;
    store.close().await;
    let (listings, envelopes, took) = result?;
    println!(
        "search index rebuilt: {listings} listings indexed from {envelopes} stored envelopes in {:.1} s",
        took.as_secs_f64()
    );
    Ok(())
}

async fn rebuild(config: &Config, store: &Store) -> anyhow::Result<(u64, i64, Duration)> {
    let dir = config.index_dir();
    if search::in_use(&dir) {
        bail!(
            "a souk-server is running on {} (it holds the search index); stop it first",
            config.data_dir.display()
        );
    }
    let memory = config.search_memory_bytes;
    let open_dir = dir.clone();
    let (index, _) = tokio::task::spawn_blocking(move || SearchIndex::open(&open_dir, memory))
        .await?
        .context("cannot open the search index")?;
    let index = Arc::new(index);
    let started = Instant::now();
    index.clear().context("cannot empty the search index")?;
    let envelopes = store.max_seq().await?;
    let bar = progress(u64::try_from(envelopes).unwrap_or(0), "indexing");
    ingest::catch_up_with(store, &index, true, &|seq| {
        bar.set_position(u64::try_from(seq).unwrap_or(0));
    })
    .await
    .context("cannot rebuild the search index")?;
    bar.finish_and_clear();
    Ok((index.num_docs(), envelopes, started.elapsed()))
}

/// What is wrong with one stored envelope, if anything: it must decode (`decoded` is what
/// decoding its bytes gave), carry a valid signature, hash to the id recorded for it, and be of
/// the recorded kind. `signature_known_good`: a batch check already found its signature valid.
fn verify_row(
    row: &StoredRow,
    decoded: &Result<RawEnvelope, souk_protocol::EnvelopeError>,
    signature_known_good: bool,
) -> Option<String> {
    let envelope = match decoded {
        Ok(envelope) => envelope,
        Err(e) => return Some(format!("does not decode ({})", e.code())),
    };
    if !signature_known_good && let Err(e) = envelope.verify_signature() {
        return Some(format!("signature does not verify ({})", e.code()));
    }
    if envelope.id().as_bytes().as_slice() != row.id.as_slice() {
        return Some("its bytes do not hash to the id recorded for them".into());
    }
    if envelope.kind() as i64 != row.kind {
        return Some("its kind differs from the kind recorded for it".into());
    }
    if let Err(e) = Object::decode(envelope.kind(), envelope.payload()) {
        return Some(format!("payload does not decode ({})", e.code()));
    }
    None
}

/// `check`: re-verify every stored envelope, compare the search index with the store.
///
/// # Errors
/// When anything differs (after `--repair`, what is left), or the store cannot be read.
pub async fn check(config: &Config, args: &CheckArgs) -> anyhow::Result<()> {
    let store = connect(config).await?;
    let result = check_store(config, &store, args).await;
    store.close().await;
    result
}

async fn check_store(config: &Config, store: &Store, args: &CheckArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let max_seq = store.max_seq().await?;
    let bar = progress(u64::try_from(max_seq).unwrap_or(0), "verifying");
    let mut bad: Vec<(i64, String, String)> = Vec::new();
    let mut checked = 0u64;
    let mut after = 0;
    loop {
        let rows = store.since_with_ids(after, PAGE).await?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            break;
        };
        checked += rows.len() as u64;
        let found = tokio::task::spawn_blocking(move || {
            // The page's signatures in one batch (the same verdicts as one by one, at about a
            // third of the cost); only a page with a bad one is checked signature by signature.
            let decoded: Vec<_> = rows
                .iter()
                .map(|row| RawEnvelope::decode(&row.bytes))
                .collect();
            let refs: Vec<&RawEnvelope> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
            let signatures_good = souk_protocol::verify_batch(&refs).is_ok();
            rows.iter()
                .zip(&decoded)
                .filter_map(|(row, decoded)| {
                    verify_row(row, decoded, signatures_good)
                        .map(|why| (row.seq, id_text(&row.id), why))
                })
                .collect::<Vec<_>>()
        })
        .await?;
        bad.extend(found);
        after = last;
        bar.set_position(u64::try_from(last).unwrap_or(0));
    }
    bar.finish_and_clear();
    for (seq, id, why) in &bad {
        println!("envelope {id} (seq {seq}): {why}");
    }

    let expected: HashSet<String> = store
        .current_listing_ids()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let index_problem = match search::indexed_ids(&config.index_dir()) {
        Ok(indexed) => {
            let missing = expected.difference(&indexed).count();
            let extra = indexed.difference(&expected).count();
            for id in expected.difference(&indexed).take(20) {
                println!("search index: listing {id} is current in the store but not indexed");
            }
            for id in indexed.difference(&expected).take(20) {
                println!("search index: {id} is indexed but not a current listing in the store");
            }
            (missing + extra > 0).then(|| {
                format!(
                    "the search index differs from the store: {missing} current listings missing, {extra} entries that should not be there"
                )
            })
        }
        Err(e) => Some(format!("the search index cannot be read: {e}")),
    };
    let mut index_problem = index_problem;
    if let Some(problem) = &index_problem {
        println!("{problem}");
        if args.repair {
            let (listings, _, took) = rebuild(config, store).await?;
            println!(
                "repaired: search index rebuilt from the store ({listings} listings, {:.1} s)",
                took.as_secs_f64()
            );
            index_problem = None;
        }
    }
    println!(
        "checked {checked} stored envelopes and {} current listings in {:.1} s: {} bad envelope(s), search index {}",
        expected.len(),
        started.elapsed().as_secs_f64(),
        bad.len(),
        if index_problem.is_some() {
            "differs (run `souk-server check --repair` with the server stopped)"
        } else {
            "matches the store"
        }
    );
    if !bad.is_empty() || index_problem.is_some() {
        bail!(
            "problems found: {} bad envelope(s){}",
            bad.len(),
            if index_problem.is_some() {
                ", search index out of step"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// A recorded id as object ids are written, or what is wrong with it.
fn id_text(id: &[u8]) -> String {
    <[u8; 32]>::try_from(id).map_or_else(
        |_| format!("(a {}-byte id)", id.len()),
        |bytes| souk_protocol::ObjectId(bytes).to_string(),
    )
}

/// `backup`: a consistent copy of the SQLite database, made while the server runs.
///
/// # Errors
/// On PostgreSQL (use pg_dump or `export`), when the file exists without `--force`, or when
/// the copy fails (then no file is left).
pub async fn backup(config: &Config, args: &BackupArgs) -> anyhow::Result<()> {
    if !config.database_url.starts_with("sqlite") {
        bail!(
            "`backup` copies a SQLite database, and this server uses PostgreSQL: back it up with \
             pg_dump (e.g. `pg_dump -Fc -f souk.dump DBNAME`, restored with pg_restore), or write a \
             portable stream of every envelope with `souk-server export --output FILE`"
        );
    }
    if args.file.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.file.display());
    }
    let partial = partial_path(&args.file);
    let _ = std::fs::remove_file(&partial);
    let store = connect(config).await?;
    let started = Instant::now();
    let bar = spinner("backing up");
    let copied = store.backup_into(&partial).await;
    store.close().await;
    bar.finish_and_clear();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e).context("the backup failed; nothing was written");
    }
    let inspected = inspect_backup(&partial).await;
    let (envelopes, version) = match inspected {
        Ok(found) => found,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("the copy does not read back; nothing was written"));
        }
    };
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .context("cannot flush the backup to disk")?;
    std::fs::rename(&partial, &args.file)
        .with_context(|| format!("cannot move the backup to {}", args.file.display()))?;
    let size = std::fs::metadata(&args.file).map_or(0, |m| m.len());
    println!(
        "backup written to {}: {envelopes} envelopes, schema version {version}, {:.1} MiB, in {:.1} s",
        args.file.display(),
        mib(size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Checks a backup file without changing it: a SQLite database that passes `integrity_check`,
/// holding a souk-server schema no newer than this build's. Returns its envelope count and
/// schema version.
async fn inspect_backup(path: &Path) -> anyhow::Result<(i64, i64)> {
    use sqlx::{ConnectOptions, Connection, Row};
    let mut header = [0u8; 16];
    let readable = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok();
    if !readable || &header != b"SQLite format 3\0" {
        bail!(
            "{} is not a SQLite database, so not a backup written by `souk-server backup`",
            path.display()
        );
    }
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true)
        .connect()
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let corrupt = |e: sqlx::Error| anyhow::anyhow!("{} is corrupt: {e}", path.display());
    let rows = sqlx::query("PRAGMA integrity_check")
        .fetch_all(&mut connection)
        .await
        .map_err(corrupt)?;
    let report: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    if report != ["ok"] {
        bail!(
            "{} is corrupt: {}",
            path.display(),
            report.into_iter().take(5).collect::<Vec<_>>().join("; ")
        );
    }
    let versions: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&mut connection)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} has no souk-server schema table: not a backup written by `souk-server backup`",
                path.display()
            )
        })?
        .iter()
        .filter_map(|r| r.try_get::<i64, _>(0).ok())
        .collect();
    let known = crate::store::sqlite_schema_versions();
    let newest_known = known.iter().copied().max().unwrap_or(0);
    let version = versions.iter().copied().max().unwrap_or(0);
    if version > newest_known {
        bail!(
            "{} has schema version {version}, newer than this souk-server knows ({newest_known}): \
             restore it with the souk-server version that wrote it, or a newer one",
            path.display()
        );
    }
    if let Some(unknown) = versions.iter().find(|v| !known.contains(v)) {
        bail!(
            "{} has schema migration {unknown}, which this souk-server does not know",
            path.display()
        );
    }
    let envelopes: i64 = sqlx::query("SELECT COUNT(*) FROM envelopes")
        .fetch_one(&mut connection)
        .await
        .map_err(corrupt)?
        .try_get(0)
        .map_err(corrupt)?;
    connection.close().await.ok();
    Ok((envelopes, version))
}

/// `restore`: replace the SQLite database with a checked backup and rebuild the search index.
/// The previous database is kept beside it.
///
/// # Errors
/// On PostgreSQL, for a corrupt, foreign or newer-schema backup, or while a server runs; the
/// current data is untouched then.
pub async fn restore(config: &Config, args: &RestoreArgs) -> anyhow::Result<()> {
    if !config.database_url.starts_with("sqlite") {
        bail!(
            "`restore` replaces a SQLite database, and this server uses PostgreSQL: restore a \
             pg_dump with pg_restore, or load an export with `souk-server import FILE`"
        );
    }
    let target = sqlite_path(&config.database_url)?;
    let (envelopes, version) = inspect_backup(&args.file).await?;
    if search::in_use(&config.index_dir()) {
        bail!(
            "a souk-server is running on {}; stop it first (nothing was changed)",
            config.data_dir.display()
        );
    }
    let staging = partial_path(&target);
    std::fs::copy(&args.file, &staging)
        .with_context(|| format!("cannot copy {} beside the database", args.file.display()))?;
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .context("cannot flush the restored copy to disk")?;
    let mut kept = None;
    if target.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut name = target
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_default();
        name.push(format!(".pre-restore-{stamp}"));
        let old = target.with_file_name(name);
        // The write-ahead log and shared-memory files travel with their database.
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", target.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", old.display()));
                std::fs::rename(&from, &to)
                    .with_context(|| format!("cannot move {} aside", from.display()))?;
            }
        }
        kept = Some(old);
    }
    std::fs::rename(&staging, &target)
        .with_context(|| format!("cannot put the backup in place at {}", target.display()))?;
    println!(
        "restored {envelopes} envelopes (schema version {version}) from {} into {}",
        args.file.display(),
        target.display()
    );
    if let Some(old) = kept {
        println!(
            "the previous database is kept as {} (delete it once you are satisfied)",
            old.display()
        );
    }
    reindex(config).await
}

fn write_varint(out: &mut impl Write, mut value: u64) -> std::io::Result<()> {
    loop {
        let byte = u8::try_from(value & 0x7f).unwrap_or(0);
        value >>= 7;
        if value == 0 {
            return out.write_all(&[byte]);
        }
        out.write_all(&[byte | 0x80])?;
    }
}

/// Reads a varint; `Ok(None)` at a clean end of input (before its first byte).
fn read_varint(input: &mut impl Read) -> std::io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "varint longer than 10 bytes",
    ))
}

fn kind_of(kind: ExportKind) -> i64 {
    (match kind {
        ExportKind::Profile => souk_protocol::Kind::Profile,
        ExportKind::Listing => souk_protocol::Kind::Listing,
        ExportKind::Rating => souk_protocol::Kind::Rating,
        ExportKind::Tombstone => souk_protocol::Kind::Tombstone,
    }) as i64
}

/// `export`: the stored envelopes after `--since`, of `--kinds`, in ingest order.
///
/// # Errors
/// For a cursor past the newest envelope, binary output to a terminal, or a write failure (a
/// file output is then not left half-written).
pub async fn export(config: &Config, args: &ExportArgs) -> anyhow::Result<()> {
    let since = args.since.unwrap_or(0);
    if since < 0 {
        bail!("--since must be 0 or more (got {since})");
    }
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "an export is binary: pass --output FILE, or redirect stdout (`souk-server export > souk.export`)"
        );
    }
    let store = connect(config).await?;
    let result = export_store(&store, args, since).await;
    store.close().await;
    result
}

async fn export_store(store: &Store, args: &ExportArgs, since: i64) -> anyhow::Result<()> {
    let newest = store.max_seq().await?;
    if since > newest {
        bail!(
            "--since {since} is past the newest stored envelope ({newest}): a cursor from \
             another server, or from the future; nothing was exported"
        );
    }
    let kinds: Vec<i64> = args.kinds.iter().copied().map(kind_of).collect();
    let (mut out, partial): (Box<dyn Write>, Option<PathBuf>) = match &args.output {
        Some(path) => {
            let partial = partial_path(path);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            (Box::new(std::io::BufWriter::new(file)), Some(partial))
        }
        None => (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            None,
        ),
    };
    let started = Instant::now();
    let written = async {
        out.write_all(EXPORT_MAGIC)?;
        let bar = progress(u64::try_from(newest - since).unwrap_or(0), "exporting");
        let (mut count, mut bytes, mut last) = (0u64, 0u64, since);
        let mut after = since;
        loop {
            let rows = store.since_with_ids(after, PAGE).await?;
            let Some(page_last) = rows.last().map(|r| r.seq) else {
                break;
            };
            for row in rows
                .iter()
                .filter(|r| kinds.is_empty() || kinds.contains(&r.kind))
            {
                write_varint(&mut out, u64::try_from(row.seq).unwrap_or(0))?;
                write_varint(&mut out, row.bytes.len() as u64)?;
                out.write_all(&row.bytes)?;
                count += 1;
                bytes += row.bytes.len() as u64;
                last = row.seq;
            }
            after = page_last;
            bar.set_position(u64::try_from(after - since).unwrap_or(0));
        }
        out.flush()?;
        bar.finish_and_clear();
        anyhow::Ok((count, bytes, last.max(after)))
    }
    .await;
    drop(out);
    let (count, bytes, last) = match written {
        Ok(done) => done,
        Err(e) => {
            if let Some(partial) = &partial {
                let _ = std::fs::remove_file(partial);
            }
            return Err(e.context("the export failed"));
        }
    };
    let destination = match (&args.output, &partial) {
        (Some(path), Some(partial)) => {
            std::fs::File::open(partial)
                .and_then(|f| f.sync_all())
                .context("cannot flush the export to disk")?;
            std::fs::rename(partial, path)
                .with_context(|| format!("cannot move the export to {}", path.display()))?;
            path.display().to_string()
        }
        _ => "stdout".into(),
    };
    // The summary goes to stderr: stdout may be the export itself.
    eprintln!(
        "exported {count} envelopes ({:.1} MiB) after cursor {since} to {destination} in {:.1} s; \
         continue later with --since {last}",
        mib(bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One record of an export stream, with where it was.
struct Record {
    number: u64,
    offset: u64,
    seq: u64,
    bytes: Vec<u8>,
}

/// Counts a reader's bytes, for positions in messages.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// `import`: every record of an export stream through the ingest path, in batches.
///
/// # Errors
/// When the file is not an export stream or cannot be read, when the database cannot be
/// opened, or after the import when records were rejected, corrupt or truncated (those are
/// reported by position and skipped; nothing invalid is stored).
pub async fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<()> {
    let (reader, length): (Box<dyn Read + Send>, u64) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), 0)
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        let length = file.metadata().map_or(0, |m| m.len());
        (Box::new(file), length)
    };
    let mut input = Counting {
        inner: std::io::BufReader::new(reader),
        read: 0,
    };
    let mut magic = [0u8; 8];
    if input.read_exact(&mut magic).is_err() || &magic != EXPORT_MAGIC {
        bail!(
            "{} is not a Souk export stream (it does not start with SOUKEXP1); nothing was imported",
            args.file.display()
        );
    }
    // Import alone: no gossip of what is imported (peers' sync fetches it).
    let mut config = config.clone();
    config.p2p.enabled = false;
    let state = crate::server::open(config)
        .await
        .context("cannot open the server's data")?;
    let bar = progress(length, "importing");
    let mut totals = [0u64; 4]; // accepted, duplicate, stale, rejected
    let mut problems = 0u64;
    let mut framing_error = None;
    let mut number = 0u64;
    loop {
        let mut batch: Vec<Record> = Vec::new();
        while batch.len() < usize::try_from(PAGE).unwrap_or(1_000) {
            let offset = input.read;
            number += 1;
            match read_record(&mut input, number, offset) {
                Ok(Some(record)) => batch.push(record),
                Ok(None) => break,
                Err(message) => {
                    framing_error = Some(message);
                    break;
                }
            }
        }
        bar.set_position(input.read);
        if batch.is_empty() {
            break;
        }
        let envelopes: Vec<Vec<u8>> = batch.iter().map(|r| r.bytes.clone()).collect();
        let results = state
            .ingestor
            .ingest(envelopes)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("the store refused a batch; nothing of that batch was stored")?;
        for (record, result) in batch.iter().zip(results) {
            match result {
                IngestResult::Accepted { .. } => totals[0] += 1,
                IngestResult::Duplicate { .. } => totals[1] += 1,
                IngestResult::Stale { .. } => totals[2] += 1,
                IngestResult::Rejected { code, message } => {
                    totals[3] += 1;
                    problems += 1;
                    bar.suspend(|| {
                        println!(
                            "record {} (byte {}, exported seq {}): rejected, {code}: {message}",
                            record.number, record.offset, record.seq
                        );
                    });
                }
            }
        }
        if framing_error.is_some() {
            break;
        }
    }
    bar.finish_and_clear();
    let store = state.store.clone();
    drop(state);
    store.close().await;
    if let Some(message) = &framing_error {
        println!("{message}");
        problems += 1;
    }
    println!(
        "imported {} records: {} accepted, {} already stored, {} stale, {} rejected{}",
        totals.iter().sum::<u64>(),
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        if framing_error.is_some() {
            "; the rest of the file could not be read"
        } else {
            ""
        }
    );
    if problems > 0 {
        bail!(
            "{problems} problem(s) in the import file (listed above); valid records were imported, nothing invalid was stored"
        );
    }
    Ok(())
}

/// The next record; `Ok(None)` at the clean end of the stream; `Err` names a damaged or
/// truncated record by number and byte offset (the stream cannot be read past it).
fn read_record(input: &mut impl Read, number: u64, offset: u64) -> Result<Option<Record>, String> {
    let at = || format!("record {number} (byte {offset})");
    let seq = match read_varint(input) {
        Ok(Some(seq)) => seq,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("{} is damaged: {e}", at())),
    };
    let length = match read_varint(input) {
        Ok(Some(length)) => length,
        Ok(None) => {
            return Err(format!(
                "{} is truncated: it ends after its sequence number",
                at()
            ));
        }
        Err(e) => return Err(format!("{} is damaged: {e}", at())),
    };
    let limit = souk_protocol::limits::MAX_ENVELOPE_BYTES as u64;
    if length == 0 || length > limit {
        return Err(format!(
            "{} is damaged: it announces {length} bytes (an envelope has 1 to {limit})",
            at()
        ));
    }
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
    let mut filled = 0;
    while filled < bytes.len() {
        match input.read(&mut bytes[filled..]) {
            Ok(0) => {
                return Err(format!(
                    "{} is truncated: {length} bytes announced, {filled} present",
                    at()
                ));
            }
            Ok(n) => filled += n,
            Err(e) => return Err(format!("{} cannot be read: {e}", at())),
        }
    }
    Ok(Some(Record {
        number,
        offset,
        seq,
        bytes,
    }))
}
