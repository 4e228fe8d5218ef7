//! `souk`: the Souk command-line client.
//!
//! Keys live in an encrypted file (`keyfile`); everything else goes through
//! `souk-mobile-core`: the [`Wallet`] signs, the [`Client`] publishes and fetches, and every
//! object fetched is verified on this machine before it is shown. `cli/README.md` is the
//! manual.

mod keyfile;
mod output;

use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use souk_mobile_core::{
    Client, ClientConfig, ClientError, Condition, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_MAX_RESPONSE_BYTES, ListingDraft, ListingType, Location, ProfileDraft, PublishOutcome,
    PublishStatus, SearchQuery, ServerFailure, Sort, Wallet, WalletError,
};
use zeroize::Zeroizing;

use crate::keyfile::{KdfParams, KeyFileError, Secret};
use crate::output::shell_quote;

/// Like `println!`, through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => {
        emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to stdout. A closed pipe (`souk search | head`) ends the program quietly.
fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() != ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

mod orders;
mod watch;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
const DEFAULT_ESPLORA: &str = "https://mempool.space/api";
const PASSPHRASE_ENV: &str = "SOUK_PASSPHRASE";
const MNEMONIC_ENV: &str = "SOUK_MNEMONIC";
const BIP39_PASSPHRASE_ENV: &str = "SOUK_BIP39_PASSPHRASE";

const AFTER_HELP: &str = "\
Secrets for scripts: the key passphrase is read from --passphrase-file or SOUK_PASSPHRASE
(otherwise asked on the terminal); `key restore` reads the phrase from --words-file or
SOUK_MNEMONIC, and the BIP 39 passphrase from SOUK_BIP39_PASSPHRASE.

Exit status: 0 on success, 1 on an error, 2 on a usage error.";

/// The Souk command-line client: keep your store key, publish signed listings and profiles,
/// and search index servers. Everything a server sends is verified on this machine.
#[derive(Debug, Parser)]
#[command(name = "souk", version, after_help = AFTER_HELP, max_term_width = 100)]
struct Cli {
    /// Index server base URL; repeat for fallbacks. Searches ask them in order until one
    /// answers; publishing sends to all of them. SOUK_SERVER takes a comma-separated list.
    #[arg(
        long = "server",
        value_name = "URL",
        env = "SOUK_SERVER",
        value_delimiter = ',',
        default_value = DEFAULT_SERVER,
        global = true,
        help_heading = "Global options"
    )]
    servers: Vec<String>,

    /// Directory holding the key file `key.json` [default: $XDG_CONFIG_HOME/souk, or
    /// $HOME/.config/souk]
    #[arg(
        long,
        value_name = "DIR",
        env = "SOUK_HOME",
        global = true,
        help_heading = "Global options"
    )]
    home: Option<PathBuf>,

    /// Print one JSON document on stdout instead of text (messages and warnings still go to
    /// stderr; on failure the document is {"error": {"code", "message", "hint"}})
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,

    /// Seconds allowed for each request to a server
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600),
        global = true,
        help_heading = "Global options"
    )]
    timeout: u64,

    /// Read the key passphrase from the first line of FILE instead of asking (for scripts;
    /// the SOUK_PASSPHRASE environment variable works too)
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Global options"
    )]
    passphrase_file: Option<PathBuf>,

    /// Esplora API for payments and broadcasts (mempool.space, Blockstream, or your own)
    #[arg(
        long,
        value_name = "URL",
        env = "SOUK_ESPLORA",
        default_value = DEFAULT_ESPLORA,
        global = true,
        help_heading = "Global options"
    )]
    esplora: String,

    /// Bitcoin network of new orders: bitcoin, testnet, signet or regtest
    #[arg(
        long,
        value_name = "NAME",
        env = "SOUK_NETWORK",
        default_value = "bitcoin",
        value_parser = ["bitcoin", "testnet", "signet", "regtest"],
        global = true,
        help_heading = "Global options"
    )]
    network: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, restore and show your store key
    #[command(subcommand)]
    Key(KeyCommand),
    /// Publish your store profile, or show a store's
    #[command(subcommand)]
    Store(StoreCommand),
    /// Publish, withdraw and show listings
    #[command(subcommand)]
    Listing(ListingCommand),
    /// Search listings; every hit is verified on this machine
    Search(SearchArgs),
    /// Place, answer and follow orders (kept in `orders.db` in the home directory)
    #[command(subcommand)]
    Order(orders::OrderCommand),
    /// Send pending messages and read your inbox servers
    #[command(subcommand)]
    Inbox(orders::InboxCommand),
    /// Follow your orders' payments on the chain
    #[command(subcommand)]
    Chain(orders::ChainCommand),
    /// The moderators a listing accepts: each one's fee, languages, terms and ratings (every
    /// rating verified on this machine); pass one to `souk order place --moderator`
    Moderators {
        /// The listing's id (64 hex digits)
        listing: String,
    },
    /// Follow a server's live feed over gRPC: one verified JSON line per object, resuming by
    /// itself after a dropped connection
    Watch(watch::WatchArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Words {
    #[value(name = "12")]
    Twelve,
    #[value(name = "24")]
    TwentyFour,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate a new store key and store it encrypted; shows the recovery phrase once
    New {
        /// Number of words of the recovery phrase
        #[arg(long, value_enum, default_value = "12")]
        words: Words,
        /// Replace an existing key file (the old key is lost unless its phrase is written down)
        #[arg(long)]
        force: bool,
    },
    /// Restore a store key from its recovery phrase and store it encrypted
    Restore {
        /// Read the phrase from FILE (`-` for stdin) instead of asking or SOUK_MNEMONIC
        #[arg(long, value_name = "FILE")]
        words_file: Option<PathBuf>,
        /// The key was made with a BIP 39 passphrase: ask for it (or read
        /// SOUK_BIP39_PASSPHRASE). Without this flag the BIP 39 passphrase is empty
        #[arg(long)]
        bip39_passphrase: bool,
        /// Replace an existing key file
        #[arg(long)]
        force: bool,
    },
    /// Show your store's address and public key (no passphrase needed)
    Show {
        /// Also decrypt and print the recovery phrase (needs the passphrase)
        #[arg(long)]
        mnemonic: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Sign and publish your store profile. Starts from --file if given, else from your
    /// current profile on the servers (or an empty one); the flags override its fields
    Set(StoreSetArgs),
    /// Show a store's verified profile
    Show {
        /// The store's address (souk1… or 64 hex digits) [default: yours]
        address: Option<String>,
    },
}

#[derive(Debug, Args)]
struct StoreSetArgs {
    /// Profile file, TOML or JSON by extension (`-`: JSON on stdin); see
    /// cli/examples/profile.toml
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Store name
    #[arg(long)]
    name: Option<String>,
    /// Short handle: lower-case letters, digits and inner hyphens
    #[arg(long)]
    handle: Option<String>,
    /// About the store (plain text or Markdown)
    #[arg(long)]
    about: Option<String>,
    /// Country the store is in (ISO 3166-1 alpha-2, e.g. DE)
    #[arg(long, value_name = "CC")]
    country: Option<String>,
    /// Accepted currency (BTC or ISO 4217); repeat for several; replaces the list
    #[arg(long = "currency", value_name = "CODE")]
    currencies: Vec<String>,
    /// Index server holding your inbox (https URL); repeat for several; replaces the list
    #[arg(long = "inbox", value_name = "URL")]
    inboxes: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum ListingCommand {
    /// Sign and publish listings from files (TOML or JSON by extension; `-`: JSON on stdin);
    /// publishing a slug again replaces that listing. See cli/examples/listing.toml
    Publish {
        /// Listing files
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Withdraw one of your listings: servers drop it from search and refuse older versions
    Withdraw {
        /// The listing's slug
        slug: String,
        /// Why, shown to whoever had it open
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Show one listing, verified: by id, or by slug (in your store or --seller's)
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "slug"])))]
    Show {
        /// Object id (64 hex digits)
        #[arg(conflicts_with_all = ["slug", "seller"])]
        id: Option<String>,
        /// The listing's slug (its current version)
        #[arg(long)]
        slug: Option<String>,
        /// The store that has the slug [default: yours]
        #[arg(long, value_name = "ADDR", requires = "slug")]
        seller: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum TypeArg {
    Physical,
    Digital,
    Service,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum ConditionArg {
    New,
    UsedLikeNew,
    UsedGood,
    UsedFair,
    Refurbished,
    ForParts,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum SortArg {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
    Rating,
}

#[derive(Debug, Args)]
struct SearchArgs {
    /// Words to search for in titles, tags and descriptions (the last one also as a prefix)
    text: Vec<String>,
    /// Category path, e.g. home/lighting (includes sub-categories)
    #[arg(long, value_name = "PATH")]
    category: Option<String>,
    /// Listing type
    #[arg(long = "type", value_name = "TYPE")]
    listing_type: Option<TypeArg>,
    /// Condition of physical goods
    #[arg(long)]
    condition: Option<ConditionArg>,
    /// Price currency (BTC or ISO 4217, e.g. EUR)
    #[arg(long, value_name = "CODE")]
    currency: Option<String>,
    /// Lowest price, in major units (e.g. 12.5)
    #[arg(long, value_name = "AMOUNT")]
    price_min: Option<f64>,
    /// Highest price, in major units
    #[arg(long, value_name = "AMOUNT")]
    price_max: Option<f64>,
    /// Only listings that ship to this country (ISO 3166-1 alpha-2)
    #[arg(long, value_name = "CC")]
    ships_to: Option<String>,
    /// Only this store's listings (souk1… address)
    #[arg(long, value_name = "ADDR")]
    seller: Option<String>,
    /// Lowest average seller rating, 0 to 5
    #[arg(long, value_name = "SCORE")]
    min_rating: Option<f64>,
    /// Only listings that accept a moderator (escrow)
    #[arg(long, conflicts_with = "direct")]
    moderated: bool,
    /// Only listings paid directly, without a moderator
    #[arg(long)]
    direct: bool,
    /// Include listings marked not safe for work
    #[arg(long)]
    nsfw: bool,
    /// Order of the results [default: relevance with text, newest without]
    #[arg(long)]
    sort: Option<SortArg>,
    /// Hits per page, 1 to 100 [default: the server's, 20]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: Option<u32>,
    /// Continue from a previous page (the cursor it printed)
    #[arg(long)]
    cursor: Option<String>,
}

/// An error of the CLI's own, with a code for `--json` and a hint for people.
#[derive(Debug)]
struct Fail {
    code: &'static str,
    message: String,
    hint: Option<String>,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

fn fail(code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        code,
        message: message.into(),
        hint: Some(hint.into()).filter(|h: &String| !h.is_empty()),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, json);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let home = match cli.home.clone() {
        Some(home) => home,
        None => default_home()?,
    };
    let ctx = Ctx {
        home,
        json: cli.json,
        servers: cli.servers.clone(),
        timeout: cli.timeout,
        passphrase_file: cli.passphrase_file.clone(),
        esplora: cli.esplora.clone(),
        network: cli.network.clone(),
    };
    match cli.command {
        Command::Key(KeyCommand::New { words, force }) => key_new(&ctx, words, force),
        Command::Key(KeyCommand::Restore {
            words_file,
            bip39_passphrase,
            force,
        }) => key_restore(&ctx, words_file.as_deref(), bip39_passphrase, force),
        Command::Key(KeyCommand::Show { mnemonic }) => key_show(&ctx, mnemonic),
        Command::Store(StoreCommand::Set(args)) => store_set(&ctx, &args),
        Command::Store(StoreCommand::Show { address }) => store_show(&ctx, address),
        Command::Listing(ListingCommand::Publish { files }) => listing_publish(&ctx, &files),
        Command::Listing(ListingCommand::Withdraw { slug, reason }) => {
            listing_withdraw(&ctx, slug, reason)
        }
        Command::Listing(ListingCommand::Show { id, slug, seller }) => {
            listing_show(&ctx, id, slug, seller)
        }
        Command::Search(args) => search(&ctx, &args),
        Command::Order(command) => orders::order(&ctx, command),
        Command::Inbox(command) => orders::inbox(&ctx, command),
        Command::Chain(command) => orders::chain(&ctx, command),
        Command::Moderators { listing } => orders::moderators(&ctx, listing),
        Command::Watch(args) => watch::watch(&ctx, &args),
    }
}

fn default_home() -> Result<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(config) = nonempty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(config).join("souk"));
    }
    if let Some(home) = nonempty("HOME") {
        return Ok(PathBuf::from(home).join(".config").join("souk"));
    }
    Err(fail(
        "no_home",
        "cannot tell where to keep the key: neither XDG_CONFIG_HOME nor HOME is set",
        "pass --home DIR or set SOUK_HOME",
    ))
}

/// What every command needs.
struct Ctx {
    home: PathBuf,
    json: bool,
    servers: Vec<String>,
    timeout: u64,
    passphrase_file: Option<PathBuf>,
    esplora: String,
    network: String,
}

impl Ctx {
    fn client(&self) -> Result<Arc<Client>> {
        let timeout_ms = self.timeout.saturating_mul(1000);
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Client::new(ClientConfig {
            servers,
            timeout_ms,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS.min(timeout_ms),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })?)
    }

    /// Runs a future of the core to completion. The core does its network I/O on its own
    /// runtime; this one only waits.
    fn block_on<F: Future>(&self, future: F) -> Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("cannot start the async runtime")?;
        Ok(runtime.block_on(future))
    }

    /// Prints `value` as the one JSON document on stdout.
    fn print_json<T: Serialize>(&self, value: &T) -> Result<()> {
        out!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

fn warn(message: &str) {
    eprintln!("warning: {message}");
}

// ---------------------------------------------------------------------------------------------
// Secrets

fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text).map(drop))
    };
    read.with_context(|| format!("cannot read the {what} from {}", path.display()))?;
    Ok(text)
}

fn first_line(text: &str) -> Zeroizing<String> {
    let line = text.split('\n').next().unwrap_or("");
    Zeroizing::new(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    Ok(Zeroizing::new(
        rpassword::prompt_password(text).context("cannot read from the terminal")?,
    ))
}

/// The key passphrase: from --passphrase-file, SOUK_PASSPHRASE, or the terminal (asked twice
/// when `new`).
fn passphrase(ctx: &Ctx, new: bool) -> Result<Zeroizing<String>> {
    let given = if let Some(path) = &ctx.passphrase_file {
        Some(first_line(&read_secret_file(path, "passphrase")?))
    } else if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        Some(Zeroizing::new(value.into_string().map_err(|_| {
            fail(
                "bad_passphrase",
                format!("{PASSPHRASE_ENV} is not valid UTF-8"),
                "",
            )
        })?))
    } else {
        None
    };
    let pass = match given {
        Some(pass) => pass,
        None if std::io::stdin().is_terminal() => {
            if new {
                let first = prompt("New passphrase for the key file: ")?;
                let second = prompt("Repeat the passphrase: ")?;
                if first != second {
                    return Err(fail(
                        "passphrase_mismatch",
                        "the two passphrases differ",
                        "run the command again",
                    ));
                }
                first
            } else {
                prompt("Passphrase for the key file: ")?
            }
        }
        None => {
            return Err(fail(
                "no_passphrase",
                "no passphrase: not on a terminal, and none was given",
                format!("set {PASSPHRASE_ENV} or pass --passphrase-file FILE"),
            ));
        }
    };
    if new && pass.is_empty() {
        return Err(fail(
            "empty_passphrase",
            "the passphrase is empty",
            "choose a passphrase: it protects the key file if someone copies it",
        ));
    }
    Ok(pass)
}

/// Decrypts the key file and opens the wallet, checking it is the key the file names.
fn unlock(ctx: &Ctx) -> Result<Arc<Wallet>> {
    let file = keyfile::load(&ctx.home)?;
    let pass = passphrase(ctx, false)?;
    let secret = file.open(pass.as_bytes())?;
    let wallet = Wallet::restore(
        secret.mnemonic.as_str().to_owned(),
        secret.bip39_passphrase.as_str().to_owned(),
    )?;
    if wallet.identity_address() != file.address {
        return Err(KeyFileError::WrongPassphrase.into());
    }
    Ok(wallet)
}

fn store_key(ctx: &Ctx, wallet: &Wallet, secret: &Secret, force: bool) -> Result<PathBuf> {
    let pass = passphrase(ctx, true)?;
    let file = keyfile::seal(
        secret,
        &wallet.identity_address(),
        &wallet.identity_hex(),
        pass.as_bytes(),
        KdfParams::DEFAULT,
    )?;
    Ok(keyfile::save(&ctx.home, &file, force)?)
}

// ---------------------------------------------------------------------------------------------
// key

#[derive(Serialize)]
struct KeyJson<'a> {
    address: String,
    public_key: String,
    key_file: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    mnemonic: Option<&'a str>,
}

fn key_new(ctx: &Ctx, words: Words, force: bool) -> Result<()> {
    if !force {
        keyfile::refuse_existing(&ctx.home)?;
    }
    let count = match words {
        Words::Twelve => 12,
        Words::TwentyFour => 24,
    };
    let wallet = Wallet::generate(count, String::new())?;
    let secret = Secret {
        mnemonic: Zeroizing::new(wallet.export_mnemonic()?),
        bip39_passphrase: Zeroizing::new(String::new()),
    };
    let path = store_key(ctx, &wallet, &secret, force)?;
    eprintln!(
        "\nWRITE THESE {count} WORDS DOWN, in order, on paper, and keep them somewhere safe.\n\
         They are the only way back to this store if this computer is lost or the passphrase\n\
         forgotten, and anyone who sees them can take it over. They are not shown again\n\
         (`souk key show --mnemonic` decrypts them with the passphrase).\n"
    );
    if ctx.json {
        return ctx.print_json(&KeyJson {
            address: wallet.identity_address(),
            public_key: wallet.identity_hex(),
            key_file: &path,
            mnemonic: Some(&secret.mnemonic),
        });
    }
    emit(&numbered_words(&secret.mnemonic));
    out!("address   {}", wallet.identity_address());
    out!("key file  {}", path.display());
    Ok(())
}

fn numbered_words(phrase: &str) -> Zeroizing<String> {
    // Room for everything up front, so no copy of the phrase is left behind by a reallocation.
    let mut out = Zeroizing::new(String::with_capacity(phrase.len() * 2 + 256));
    let words: Vec<&str> = phrase.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        let last_in_row = i % 4 == 3 || i + 1 == words.len();
        let cell = Zeroizing::new(if last_in_row {
            format!("{:>2}. {word}\n", i + 1)
        } else {
            format!("{:>2}. {word:<10}", i + 1)
        });
        out.push_str(&cell);
    }
    out
}

fn key_restore(ctx: &Ctx, words_file: Option<&Path>, bip39: bool, force: bool) -> Result<()> {
    if !force {
        keyfile::refuse_existing(&ctx.home)?;
    }
    let raw = if let Some(path) = words_file {
        read_secret_file(path, "recovery phrase")?
    } else if let Some(value) = std::env::var_os(MNEMONIC_ENV) {
        Zeroizing::new(value.into_string().map_err(|_| {
            fail(
                "bad_mnemonic",
                format!("{MNEMONIC_ENV} is not valid UTF-8"),
                "",
            )
        })?)
    } else if std::io::stdin().is_terminal() {
        prompt("Recovery phrase (hidden; words separated by spaces): ")?
    } else {
        return Err(fail(
            "no_mnemonic",
            "no recovery phrase given",
            format!("pass --words-file FILE (or - for stdin), or set {MNEMONIC_ENV}"),
        ));
    };
    let lower = Zeroizing::new(raw.to_lowercase());
    let mut phrase = Zeroizing::new(String::with_capacity(lower.len()));
    for (i, word) in lower.split_whitespace().enumerate() {
        if i > 0 {
            phrase.push(' ');
        }
        phrase.push_str(word);
    }
    let bip39_passphrase = if !bip39 {
        Zeroizing::new(String::new())
    } else if let Some(value) = std::env::var_os(BIP39_PASSPHRASE_ENV) {
        Zeroizing::new(value.into_string().map_err(|_| {
            fail(
                "bad_passphrase",
                format!("{BIP39_PASSPHRASE_ENV} is not valid UTF-8"),
                "",
            )
        })?)
    } else if std::io::stdin().is_terminal() {
        let first = prompt("BIP 39 passphrase: ")?;
        let second = prompt("Repeat the BIP 39 passphrase: ")?;
        if first != second {
            return Err(fail(
                "passphrase_mismatch",
                "the two BIP 39 passphrases differ",
                "run the command again",
            ));
        }
        first
    } else {
        return Err(fail(
            "no_passphrase",
            "--bip39-passphrase was given, but not on a terminal and no passphrase is set",
            format!("set {BIP39_PASSPHRASE_ENV}"),
        ));
    };
    let wallet = Wallet::restore(
        phrase.as_str().to_owned(),
        bip39_passphrase.as_str().to_owned(),
    )?;
    let secret = Secret {
        mnemonic: phrase,
        bip39_passphrase,
    };
    let path = store_key(ctx, &wallet, &secret, force)?;
    if ctx.json {
        return ctx.print_json(&KeyJson {
            address: wallet.identity_address(),
            public_key: wallet.identity_hex(),
            key_file: &path,
            mnemonic: None,
        });
    }
    out!("Restored the key of {}", wallet.identity_address());
    out!("key file  {}", path.display());
    Ok(())
}

fn key_show(ctx: &Ctx, mnemonic: bool) -> Result<()> {
    let path = keyfile::path(&ctx.home);
    let file = keyfile::load(&ctx.home)?;
    let phrase = if mnemonic {
        let wallet = unlock(ctx)?;
        Some(Zeroizing::new(wallet.export_mnemonic()?))
    } else {
        None
    };
    if ctx.json {
        return ctx.print_json(&KeyJson {
            address: file.address.clone(),
            public_key: file.public_key.clone(),
            key_file: &path,
            mnemonic: phrase.as_deref().map(String::as_str),
        });
    }
    out!("address     {}", file.address);
    out!("public key  {}", file.public_key);
    out!("key file    {}", path.display());
    if let Some(phrase) = phrase {
        eprintln!("\nThe recovery phrase: anyone who sees it can take over this store.");
        emit("\n");
        emit(&numbered_words(&phrase));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files

/// How a draft file is read.
enum Format {
    Toml,
    Json,
}

/// Reads a TOML or JSON file (`-`: JSON on stdin) into `T`; errors name the file and, from
/// the parsers, the line.
fn read_draft<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let name = path.display().to_string();
    let bad_file = |message: String| {
        fail(
            "bad_file",
            message,
            "fix the file; cli/examples/ has working examples",
        )
    };
    let (format, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        (Format::Json, text)
    } else {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => Format::Toml,
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => {
                return Err(bad_file(format!(
                    "{name}: cannot tell the format; name the file *.toml or *.json"
                )));
            }
        };
        let text = fs::read_to_string(path).map_err(|e| {
            fail(
                "io",
                format!("cannot read {name}: {e}"),
                "check the file name",
            )
        })?;
        (format, text)
    };
    match format {
        Format::Toml => toml::from_str(&text)
            .map_err(|e| bad_file(format!("{name}: {}", e.to_string().trim_end()))),
        Format::Json => serde_json::from_str(&text).map_err(|e| bad_file(format!("{name}: {e}"))),
    }
}

/// A signing failure, named by file.
fn sign_error(name: &str, e: WalletError) -> anyhow::Error {
    let hint = match e {
        WalletError::InvalidDraft { .. } => "fix that field; protocol/SPEC.md has the rules",
        _ => "",
    };
    let code = e.code();
    let message = format!("{name}: {e}");
    fail(code, message, hint)
}

// ---------------------------------------------------------------------------------------------
// Publishing

#[derive(Serialize)]
struct PublishedJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slug: Option<&'a str>,
    kind: &'a str,
    #[serde(flatten)]
    outcome: OutcomeJson,
}

/// A publish outcome in the CLI's JSON: the status as a plain word, and for `stale` the id of
/// the version that stays current.
#[derive(Serialize)]
struct OutcomeJson {
    id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    stored_at: Vec<String>,
    failed_servers: Vec<ServerFailure>,
}

impl From<&PublishOutcome> for OutcomeJson {
    fn from(o: &PublishOutcome) -> Self {
        Self {
            id: o.id.clone(),
            status: status_word(&o.status),
            current: match &o.status {
                PublishStatus::Stale { current } => Some(current.clone()),
                _ => None,
            },
            stored_at: o.stored_at.clone(),
            failed_servers: o.failed_servers.clone(),
        }
    }
}

fn status_word(status: &PublishStatus) -> &'static str {
    match status {
        PublishStatus::Accepted => "accepted",
        PublishStatus::Duplicate => "duplicate",
        PublishStatus::Stale { .. } => "stale",
    }
}

fn warn_failed_servers(outcome: &PublishOutcome) {
    for f in &outcome.failed_servers {
        warn(&format!("{} did not take it: {}", f.server, f.message));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Versions of one slot are ordered by their `created_at` second, and a tie may go either way.
/// So that an edit made right after the last one replaces it, it is signed at least one second
/// after the current version: the `created_at` to use instead of `planned`, if `planned` is not
/// already later than `current`.
fn replacing_stamp(current: Option<u64>, planned: u64) -> Option<u64> {
    let next = current?.checked_add(1)?;
    // Far ahead means a clock is wrong; keep the plan and let the servers say stale.
    (next > planned && next <= planned.saturating_add(60)).then_some(next)
}

fn store_set(ctx: &Ctx, args: &StoreSetArgs) -> Result<()> {
    let file_draft: Option<ProfileDraft> = args.file.as_deref().map(read_draft).transpose()?;
    let address = keyfile::load(&ctx.home)?.address;
    let client = ctx.client()?;
    let current = match ctx.block_on(client.get_store(address))? {
        Ok(store) => Some(store),
        Err(ClientError::NotFound { .. }) => None,
        // With a file, the current profile is only wanted for its time; publishing reports
        // what is wrong with the servers.
        Err(_) if file_draft.is_some() => None,
        Err(e) => return Err(e.into()),
    };
    let stamp = replacing_stamp(current.as_ref().map(|c| c.created_at), unix_now());
    // Without a file, edit what is published, so `--about` alone does not wipe the name.
    let mut draft = match (file_draft, current) {
        (Some(draft), _) => draft,
        (None, Some(current)) => current.profile,
        (None, None) => ProfileDraft::default(),
    };
    if let Some(name) = &args.name {
        draft.store_name.clone_from(name);
    }
    if let Some(handle) = &args.handle {
        draft.handle.clone_from(handle);
    }
    if let Some(about) = &args.about {
        draft.about.clone_from(about);
    }
    if let Some(country) = &args.country {
        draft.location.get_or_insert_with(Location::default).country =
            country.trim().to_uppercase();
    }
    if !args.currencies.is_empty() {
        draft.accepted_currencies = args
            .currencies
            .iter()
            .map(|c| c.trim().to_uppercase())
            .collect();
    }
    if !args.inboxes.is_empty() {
        draft.inbox_servers.clone_from(&args.inboxes);
    }
    if draft.store_name.trim().is_empty() {
        return Err(fail(
            "missing_name",
            "the profile has no store name",
            "pass --name NAME, or set store_name in the --file",
        ));
    }
    let wallet = unlock(ctx)?;
    // A moderator's offer takes escrowed orders only with its moderation xpub: fill it in from
    // this key for --network, so a profile file need not carry it.
    if let Some(offer) = draft.moderator.as_mut()
        && offer.escrow_xpub.trim().is_empty()
    {
        offer.escrow_xpub = wallet
            .moderation_xpub(ctx.network.clone())
            .map_err(|e| sign_error("profile", e))?;
    }
    let envelope = match stamp {
        Some(at) => wallet.sign_profile_at(draft, at),
        None => wallet.sign_profile(draft),
    }
    .map_err(|e| sign_error("profile", e))?;
    let outcome = ctx.block_on(client.publish(envelope.bytes))??;
    warn_failed_servers(&outcome);
    if ctx.json {
        ctx.print_json(&PublishedJson {
            file: None,
            slug: None,
            kind: "profile",
            outcome: OutcomeJson::from(&outcome),
        })?;
    }
    match &outcome.status {
        PublishStatus::Stale { current } => {
            let error = fail(
                "stale",
                format!("the servers hold a newer profile ({current}); this one was not taken"),
                "check this machine's clock",
            );
            // The exit status is the same with and without --json.
            return Err(if ctx.json {
                error.context(JsonPrinted)
            } else {
                error
            });
        }
        _ if ctx.json => {}
        status => out!(
            "profile {}  {}\nstore     {}",
            status_word(status),
            outcome.id,
            wallet.identity_address()
        ),
    }
    Ok(())
}

#[derive(Default, Serialize)]
struct Summary {
    accepted: usize,
    duplicate: usize,
    stale: usize,
    failed: usize,
}

#[derive(Serialize)]
struct FileResult {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    slug: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    outcome: Option<OutcomeJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson>,
}

#[derive(Serialize)]
struct PublishReport {
    results: Vec<FileResult>,
    summary: Summary,
}

fn listing_publish(ctx: &Ctx, files: &[PathBuf]) -> Result<()> {
    if files.iter().filter(|f| *f == Path::new("-")).count() > 1 {
        return Err(fail(
            "bad_arguments",
            "stdin (`-`) can be read only once",
            "",
        ));
    }
    // Read everything first: a broken file is reported before the passphrase is asked.
    let drafts: Vec<(String, Result<ListingDraft>)> = files
        .iter()
        .map(|path| (path.display().to_string(), read_draft(path)))
        .collect();
    let any_ok = drafts.iter().any(|(_, d)| d.is_ok());
    let (wallet, client) = if any_ok {
        (Some(unlock(ctx)?), Some(ctx.client()?))
    } else {
        (None, None)
    };
    let several = files.len() > 1;
    let slug_width = drafts
        .iter()
        .filter_map(|(_, d)| d.as_ref().ok().map(|d| d.slug.len()))
        .max()
        .unwrap_or(0);
    let progress = if several && !ctx.json && std::io::stderr().is_terminal() {
        let bar =
            ProgressBar::with_draw_target(Some(files.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}") {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut report = PublishReport {
        results: Vec::new(),
        summary: Summary::default(),
    };
    let mut single_error = None;
    for (name, draft) in drafts {
        progress.set_message(name.clone());
        let slug = draft.as_ref().ok().map(|d| d.slug.clone());
        let result = draft.and_then(|draft| {
            let (Some(wallet), Some(client)) = (&wallet, &client) else {
                unreachable!("unlocked when any draft parsed")
            };
            // Signing checks the draft against the protocol before anything goes out.
            let signed = wallet
                .sign_listing(draft.clone())
                .map_err(|e| sign_error(&name, e))?;
            let current = ctx
                .block_on(client.get_store_listing(wallet.identity_address(), draft.slug.clone()))?
                .ok()
                .map(|v| v.created_at);
            let envelope = match replacing_stamp(current, signed.created_at) {
                Some(at) => wallet
                    .sign_listing_at(draft, at)
                    .map_err(|e| sign_error(&name, e))?,
                None => signed,
            };
            ctx.block_on(client.publish(envelope.bytes))?
                .map_err(|e| anyhow::Error::new(e).context(name.clone()))
        });
        progress.inc(1);
        match result {
            Ok(outcome) => {
                progress.suspend(|| warn_failed_servers(&outcome));
                match &outcome.status {
                    PublishStatus::Accepted => report.summary.accepted += 1,
                    PublishStatus::Duplicate => report.summary.duplicate += 1,
                    PublishStatus::Stale { .. } => report.summary.stale += 1,
                }
                if !ctx.json {
                    let mut line = format!(
                        "{:<9}  {:<slug_width$}  {}",
                        status_word(&outcome.status),
                        slug.as_deref().unwrap_or(""),
                        outcome.id
                    );
                    if let PublishStatus::Stale { current } = &outcome.status {
                        line.push_str(&format!(
                            "  (a newer version is current: {})",
                            output::short_id(current)
                        ));
                    }
                    progress.suspend(|| out!("{line}"));
                }
                report.results.push(FileResult {
                    file: name,
                    slug,
                    outcome: Some(OutcomeJson::from(&outcome)),
                    error: None,
                });
            }
            Err(e) => {
                report.summary.failed += 1;
                if several {
                    progress.suspend(|| eprintln!("error: {e:#}"));
                }
                report.results.push(FileResult {
                    file: name,
                    slug,
                    outcome: None,
                    error: Some(error_json(&e)),
                });
                if !several {
                    single_error = Some(e);
                }
            }
        }
    }
    progress.finish_and_clear();
    if let Some(e) = single_error {
        return Err(e);
    }
    let s = &report.summary;
    if ctx.json {
        ctx.print_json(&report)?;
    } else if several {
        out!(
            "{} accepted · {} duplicate · {} stale · {} failed",
            s.accepted,
            s.duplicate,
            s.stale,
            s.failed
        );
    }
    if s.failed > 0 {
        let hint = report
            .results
            .iter()
            .find_map(|r| r.error.as_ref().and_then(|e| e.hint.clone()))
            .unwrap_or_else(|| "fix what is named above and publish those files again".into());
        let error = fail(
            "some_failed",
            format!("{} of {} listings failed", s.failed, files.len()),
            hint,
        );
        // With --json the report above is the one document on stdout; it names each failure.
        return Err(if ctx.json {
            error.context(JsonPrinted)
        } else {
            error
        });
    }
    Ok(())
}

/// Marks an error whose JSON document was already printed (so `report` prints only the
/// human-readable lines on stderr).
#[derive(Debug)]
struct JsonPrinted;

impl fmt::Display for JsonPrinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the JSON report was printed")
    }
}

fn listing_withdraw(ctx: &Ctx, slug: String, reason: String) -> Result<()> {
    let wallet = unlock(ctx)?;
    let client = ctx.client()?;
    let current = match ctx
        .block_on(client.get_store_listing(wallet.identity_address(), slug.clone()))?
    {
        Ok(current) => Some(current.created_at),
        Err(ClientError::NotFound { .. }) => {
            warn(&format!(
                "your store has no current listing `{slug}` (a typo?); the withdrawal is published anyway and refuses older versions of it"
            ));
            None
        }
        Err(_) => None,
    };
    // A version published a moment ago may carry a stamp ahead of the clock (see
    // `replacing_stamp`): the withdrawal must come after it.
    let envelope = match replacing_stamp(current, unix_now()) {
        Some(at) => wallet.sign_tombstone_at(slug.clone(), reason, at),
        None => wallet.sign_tombstone(slug.clone(), reason),
    }
    .map_err(|e| sign_error("withdrawal", e))?;
    let outcome = ctx.block_on(client.publish(envelope.bytes))??;
    warn_failed_servers(&outcome);
    if let PublishStatus::Stale { current } = &outcome.status {
        return Err(fail(
            "stale",
            format!(
                "the servers hold a newer version of {slug} ({current}); nothing was withdrawn"
            ),
            "check this machine's clock, then withdraw again",
        ));
    }
    if ctx.json {
        return ctx.print_json(&PublishedJson {
            file: None,
            slug: Some(&slug),
            kind: "tombstone",
            outcome: OutcomeJson::from(&outcome),
        });
    }
    out!(
        "withdrawn  {slug}  ({}: {})",
        status_word(&outcome.status),
        outcome.id
    );
    Ok(())
}

fn listing_show(
    ctx: &Ctx,
    id: Option<String>,
    slug: Option<String>,
    seller: Option<String>,
) -> Result<()> {
    let client = ctx.client()?;
    let listing = match (id, slug) {
        (Some(id), _) => ctx.block_on(client.get_listing(id))??,
        (None, Some(slug)) => {
            let seller = match seller {
                Some(seller) => seller,
                None => keyfile::load(&ctx.home)?.address,
            };
            ctx.block_on(client.get_store_listing(seller, slug))??
        }
        (None, None) => unreachable!("clap requires an id or --slug"),
    };
    if ctx.json {
        return ctx.print_json(&listing);
    }
    emit(&output::listing_detail(&listing));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Stores and search

fn store_show(ctx: &Ctx, address: Option<String>) -> Result<()> {
    let address = match address {
        Some(a) => a,
        None => keyfile::load(&ctx.home)?.address,
    };
    let client = ctx.client()?;
    let store = ctx.block_on(client.get_store(address))??;
    if ctx.json {
        return ctx.print_json(&store);
    }
    emit(&output::store_detail(&store));
    Ok(())
}

fn search_query(args: &SearchArgs) -> SearchQuery {
    let text = args.text.join(" ");
    SearchQuery {
        text: Some(text).filter(|t| !t.trim().is_empty()),
        category: args.category.clone(),
        listing_type: args.listing_type.map(|t| match t {
            TypeArg::Physical => ListingType::Physical,
            TypeArg::Digital => ListingType::Digital,
            TypeArg::Service => ListingType::Service,
        }),
        condition: args.condition.map(|c| match c {
            ConditionArg::New => Condition::New,
            ConditionArg::UsedLikeNew => Condition::UsedLikeNew,
            ConditionArg::UsedGood => Condition::UsedGood,
            ConditionArg::UsedFair => Condition::UsedFair,
            ConditionArg::Refurbished => Condition::Refurbished,
            ConditionArg::ForParts => Condition::ForParts,
        }),
        currency: args.currency.as_ref().map(|c| c.trim().to_uppercase()),
        price_min: args.price_min,
        price_max: args.price_max,
        ships_to: args.ships_to.as_ref().map(|c| c.trim().to_uppercase()),
        seller: args.seller.clone(),
        min_rating: args.min_rating,
        moderated: if args.moderated {
            Some(true)
        } else if args.direct {
            Some(false)
        } else {
            None
        },
        nsfw: args.nsfw.then_some(true),
        sort: args.sort.map(|s| match s {
            SortArg::Relevance => Sort::Relevance,
            SortArg::PriceAsc => Sort::PriceAsc,
            SortArg::PriceDesc => Sort::PriceDesc,
            SortArg::Newest => Sort::Newest,
            SortArg::Rating => Sort::Rating,
        }),
        limit: args.limit,
        cursor: args.cursor.clone(),
    }
}

/// The command that fetches the next page: the same filters and `--cursor`.
fn next_page_command(q: &SearchQuery, cursor: &str) -> String {
    let mut parts = vec!["souk".to_owned(), "search".to_owned()];
    if let Some(text) = &q.text {
        parts.push(shell_quote(text));
    }
    let mut flag = |name: &str, value: String| {
        parts.push(format!("--{name}"));
        parts.push(shell_quote(&value));
    };
    let options: [(&str, Option<String>); 11] = [
        ("category", q.category.clone()),
        ("type", q.listing_type.map(|t| t.as_str().to_owned())),
        ("condition", q.condition.map(|c| c.as_str().to_owned())),
        ("currency", q.currency.clone()),
        ("price-min", q.price_min.map(|p| p.to_string())),
        ("price-max", q.price_max.map(|p| p.to_string())),
        ("ships-to", q.ships_to.clone()),
        ("seller", q.seller.clone()),
        ("min-rating", q.min_rating.map(|r| r.to_string())),
        ("sort", q.sort.map(|s| s.as_str().to_owned())),
        ("limit", q.limit.map(|l| l.to_string())),
    ];
    for (name, value) in options {
        if let Some(value) = value {
            flag(name, value);
        }
    }
    match q.moderated {
        Some(true) => parts.push("--moderated".into()),
        Some(false) => parts.push("--direct".into()),
        None => {}
    }
    if q.nsfw == Some(true) {
        parts.push("--nsfw".into());
    }
    parts.push("--cursor".into());
    parts.push(shell_quote(cursor));
    parts.join(" ")
}

fn search(ctx: &Ctx, args: &SearchArgs) -> Result<()> {
    let query = search_query(args);
    let client = ctx.client()?;
    let page = ctx.block_on(client.search(query.clone()))??;
    for f in &page.failed_servers {
        warn(&format!("{} failed: {}", f.server, f.message));
    }
    if !page.dropped.is_empty() {
        warn(&format!(
            "{} hits from {} failed verification and are hidden",
            page.dropped.len(),
            page.server
        ));
    }
    if ctx.json {
        return ctx.print_json(&page);
    }
    emit(&output::search_table(&page));
    if !page.hits.is_empty() {
        let mut footer = format!("{} of {}", page.hits.len(), page.total);
        if let Some(cursor) = &page.next_cursor {
            footer.push_str(" · next page: ");
            footer.push_str(&next_page_command(&query, cursor));
        }
        out!("{footer}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Serialize)]
struct ErrorJson {
    code: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

fn client_hint(e: &ClientError) -> Option<&'static str> {
    Some(match e {
        ClientError::NoServers | ClientError::InvalidUrl { .. } => {
            "give servers as --server http(s)://host[:port] or in SOUK_SERVER"
        }
        ClientError::Unreachable { .. }
        | ClientError::Timeout { .. }
        | ClientError::AllServersFailed { .. } => {
            "check that the server is running and its address is right (--server URL or SOUK_SERVER); --timeout SECS allows more time"
        }
        ClientError::NotFound { .. } => {
            "check the id or address; `souk search` lists what the servers hold"
        }
        ClientError::Rejected { .. } => "fix what the server names and publish again",
        ClientError::Tampered { .. } | ClientError::BadResponse { .. } => {
            "that server cannot be trusted; use another with --server URL"
        }
        ClientError::InvalidArgument { name, .. } if name == "cursor" => {
            "start the search again without --cursor"
        }
        ClientError::Server { status: 400, .. } => "check the filter values: souk search --help",
        _ => return None,
    })
}

fn wallet_hint(e: &WalletError) -> Option<&'static str> {
    match e {
        WalletError::InvalidMnemonic { .. } => {
            Some("the phrase is 12 or 24 English BIP 39 words, separated by spaces")
        }
        WalletError::InvalidDraft { .. } => Some("fix that field; protocol/SPEC.md has the rules"),
        _ => None,
    }
}

/// The code, message and hint of an error chain.
fn error_json(e: &anyhow::Error) -> ErrorJson {
    let message = format!("{e:#}");
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Fail>() {
            return ErrorJson {
                code: f.code.into(),
                message,
                hint: f.hint.clone(),
            };
        }
        if let Some(k) = cause.downcast_ref::<KeyFileError>() {
            return ErrorJson {
                code: k.code().into(),
                message,
                hint: k.hint().map(Into::into),
            };
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return ErrorJson {
                code: c.code().into(),
                message,
                hint: client_hint(c).map(Into::into),
            };
        }
        if let Some(w) = cause.downcast_ref::<WalletError>() {
            return ErrorJson {
                code: w.code().into(),
                message,
                hint: wallet_hint(w).map(Into::into),
            };
        }
    }
    ErrorJson {
        code: "error".into(),
        message,
        hint: None,
    }
}

fn report(e: &anyhow::Error, json: bool) {
    let printed = e.downcast_ref::<JsonPrinted>().is_some();
    let mut error = error_json(e);
    if printed && let Some(f) = e.chain().find_map(|c| c.downcast_ref::<Fail>()) {
        error.message.clone_from(&f.message);
    }
    let json = json && !printed;
    eprintln!("error: {}", error.message);
    if let Some(hint) = &error.hint {
        eprintln!("hint: {hint}");
    }
    if json {
        #[derive(Serialize)]
        struct Doc<'a> {
            error: &'a ErrorJson,
        }
        if let Ok(text) = serde_json::to_string_pretty(&Doc { error: &error }) {
            out!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn next_page_repeats_the_filters() {
        let cli = Cli::try_parse_from([
            "souk",
            "search",
            "brass",
            "lamp",
            "--ships-to",
            "de",
            "--direct",
            "--sort",
            "price_asc",
            "--limit",
            "5",
        ])
        .unwrap();
        let Command::Search(args) = cli.command else {
            panic!("not a search")
        };
        let q = search_query(&args);
        assert_eq!(
            next_page_command(&q, "abc"),
            "souk search 'brass lamp' --ships-to DE --sort price_asc --limit 5 --direct --cursor abc"
        );
    }

    #[test]
    fn edits_are_signed_after_the_current_version() {
        assert_eq!(replacing_stamp(None, 100), None);
        assert_eq!(replacing_stamp(Some(99), 100), None);
        assert_eq!(replacing_stamp(Some(100), 100), Some(101));
        assert_eq!(replacing_stamp(Some(105), 100), Some(106));
        assert_eq!(replacing_stamp(Some(1_000), 100), None, "a clock is wrong");
        assert_eq!(replacing_stamp(Some(u64::MAX), 100), None);
    }

    #[test]
    fn usage_rules() {
        for bad in [
            vec!["souk", "search", "--moderated", "--direct"],
            vec!["souk", "listing", "show"],
            vec!["souk", "listing", "show", "abc", "--slug", "x"],
            vec!["souk", "listing", "show", "--seller", "souk1x"],
            vec!["souk", "key", "new", "--words", "13"],
            vec!["souk", "search", "--limit", "0"],
            vec!["souk", "listing", "publish"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from([
            "souk", "--server", "http://a", "--server", "http://b", "search",
        ])
        .unwrap();
        assert_eq!(cli.servers, ["http://a", "http://b"]);
    }
}
