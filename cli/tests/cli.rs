//! End-to-end tests: the real `souk` binary against a real index server started in-process.
//! Every child process and the server run under deadlines, so no test can hang.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const PHRASE: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const PASSPHRASE: &str = "correct horse battery staple";
/// Longest any one command may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// An index server on 127.0.0.1, stopped when dropped.
struct Server {
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    runtime: Option<Runtime>,
    _dir: TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = dir.path().to_owned();
        let (url, shutdown) = runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(60), async move {
                let config = souk_server::config::Config::for_tests(&data, None);
                let state = souk_server::server::open(config)
                    .await
                    .expect("the server opens");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let (tx, rx) = oneshot::channel::<()>();
                tokio::spawn(souk_server::server::serve(state, listener, async move {
                    let _ = rx.await;
                }));
                (format!("http://{addr}"), tx)
            })
            .await
            .expect("the server starts within a minute")
        });
        Self {
            url,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// What a run of `souk` gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    fn failed(self) -> Self {
        assert_eq!(self.code, 1, "expected exit code 1: {self:#?}");
        assert!(self.stderr.contains("error: "), "{self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }
}

/// A `souk` invocation with a private home and the test passphrase.
struct Souk {
    home: PathBuf,
    server: String,
    envs: Vec<(String, String)>,
    removed: Vec<String>,
}

impl Souk {
    fn new(home: &Path, server: &str) -> Self {
        Self {
            home: home.to_owned(),
            server: server.to_owned(),
            envs: vec![("SOUK_PASSPHRASE".into(), PASSPHRASE.into())],
            removed: Vec::new(),
        }
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    fn without(mut self, key: &str) -> Self {
        self.removed.push(key.into());
        self
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut command = Command::new(env!("CARGO_BIN_EXE_souk"));
        command
            .args(args)
            .env("SOUK_HOME", &self.home)
            .env("SOUK_SERVER", &self.server)
            .env_remove("SOUK_MNEMONIC")
            .env_remove("SOUK_BIP39_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        for k in &self.removed {
            command.env_remove(k);
        }
        run_bounded(command, args)
    }
}

fn run_bounded(mut command: Command, args: &[&str]) -> Out {
    let mut child = command.spawn().expect("souk starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("souk {args:?} did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example(name: &str) -> String {
    examples().join(name).display().to_string()
}

/// The identity address of the test mnemonic, from the protocol's test vectors.
fn vector_address() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/test-vectors/identity.json");
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    vectors["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["mnemonic"] == PHRASE)
        .expect("a vector for the test mnemonic")["identity_address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A port nothing listens on.
fn dead_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn restore(souk: &Souk) {
    souk.run(&["key", "restore"]).ok();
}

#[test]
fn key_restore_show_and_wrong_passphrase() {
    let home = tempfile::tempdir().unwrap();
    let souk = Souk::new(home.path(), &dead_server()).env("SOUK_MNEMONIC", PHRASE);
    let expected = vector_address();

    // No key yet.
    let out = souk.run(&["key", "show"]).failed();
    assert!(
        out.stderr.contains("no key in") && out.stderr.contains("`souk key new`"),
        "{out:#?}"
    );

    let out = souk.run(&["--json", "key", "restore"]).ok();
    assert_eq!(out.json()["address"], expected.as_str());

    // The file holds no phrase in clear, and only its owner may read it.
    let file = std::fs::read_to_string(home.path().join("key.json")).unwrap();
    assert!(!file.contains("abandon"));
    assert!(file.contains(&expected));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("key.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = souk.run(&["key", "show"]).ok();
    assert!(out.stdout.contains(&expected), "{out:#?}");
    assert!(
        out.stdout
            .contains("30cf05bd9afefe9f9d74d0c9d17bb2743cde55a5d8af24285692115651dd0d18"),
        "{out:#?}"
    );

    let out = souk.run(&["--json", "key", "show", "--mnemonic"]).ok();
    assert_eq!(out.json()["mnemonic"], PHRASE);

    let wrong = Souk::new(home.path(), &dead_server()).env("SOUK_PASSPHRASE", "not it");
    let out = wrong.run(&["key", "show", "--mnemonic"]).failed();
    assert!(
        out.stderr
            .contains("wrong passphrase, or the key file is damaged"),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("abandon"), "{out:#?}");

    // The passphrase from a file works as well as from the environment.
    let pass_file = home.path().join("pass.txt");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let from_file = wrong.without("SOUK_PASSPHRASE");
    let pass_arg = pass_file.display().to_string();
    from_file
        .run(&["--passphrase-file", &pass_arg, "key", "show", "--mnemonic"])
        .ok();

    // Without a passphrase and without a terminal: an error that says what to do.
    let out = from_file.run(&["key", "show", "--mnemonic"]).failed();
    assert!(out.stderr.contains("SOUK_PASSPHRASE"), "{out:#?}");

    // Restoring over an existing key needs --force.
    let out = souk.run(&["key", "restore"]).failed();
    assert!(out.stderr.contains("--force"), "{out:#?}");
    souk.run(&["key", "restore", "--force"]).ok();

    // A phrase with a bad checksum is refused without echoing it.
    let bad = PHRASE.replace("about", "abandon");
    let out = Souk::new(home.path(), &dead_server())
        .env("SOUK_MNEMONIC", &bad)
        .run(&["key", "restore", "--force"])
        .failed();
    assert!(out.stderr.contains("not valid"), "{out:#?}");
    assert!(!out.stderr.contains("abandon abandon"), "{out:#?}");
}

#[test]
fn key_new_makes_a_key_and_refuses_to_overwrite() {
    let home = tempfile::tempdir().unwrap();
    let souk = Souk::new(home.path(), &dead_server());
    let out = souk.run(&["--json", "key", "new"]).ok();
    let doc = out.json();
    let words = doc["mnemonic"].as_str().unwrap().split(' ').count();
    assert_eq!(words, 12);
    assert!(out.stderr.contains("WRITE THESE 12 WORDS DOWN"), "{out:#?}");
    let address = doc["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("souk1"));

    let out = souk.run(&["key", "new"]).failed();
    assert!(out.stderr.contains("already holds"), "{out:#?}");
    assert_eq!(
        souk.run(&["--json", "key", "show"]).ok().json()["address"],
        address.as_str(),
        "the old key is untouched"
    );

    let out = souk.run(&["key", "new", "--words", "24", "--force"]).ok();
    // Human output: 24 numbered words.
    assert!(out.stdout.contains("24. "), "{out:#?}");
    let shown = souk
        .run(&["--json", "key", "show", "--mnemonic"])
        .ok()
        .json();
    assert_eq!(shown["mnemonic"].as_str().unwrap().split(' ').count(), 24);
    assert_ne!(shown["address"], address.as_str());

    let out = Souk::new(home.path(), &dead_server())
        .env("SOUK_PASSPHRASE", "")
        .run(&["key", "new", "--force"])
        .failed();
    assert!(out.stderr.contains("passphrase is empty"), "{out:#?}");
}

#[test]
fn publish_search_show_store_and_withdraw() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let souk = Souk::new(home.path(), &server.url).env("SOUK_MNEMONIC", PHRASE);
    restore(&souk);
    let me = vector_address();

    // Publish one listing.
    let out = souk
        .run(&["--json", "listing", "publish", &example("listing.toml")])
        .ok();
    let report = out.json();
    assert_eq!(report["summary"]["accepted"], 1, "{report:#}");
    let result = &report["results"][0];
    assert_eq!(result["status"], "accepted");
    assert_eq!(result["slug"], "brass-desk-lamp-1960s");
    let first_id = result["id"].as_str().unwrap().to_owned();
    assert_eq!(first_id.len(), 64);

    // Publishing again at once replaces it: the edit is signed after the current version,
    // never in a tie with it.
    let again = souk
        .run(&["--json", "listing", "publish", &example("listing.toml")])
        .ok()
        .json();
    assert_eq!(again["results"][0]["status"], "accepted", "{again:#}");
    let lamp_id = again["results"][0]["id"].as_str().unwrap().to_owned();
    assert_ne!(lamp_id, first_id);
    let old = souk
        .run(&["--json", "listing", "show", &first_id])
        .ok()
        .json();
    assert_eq!(old["current"], false, "{old:#}");

    // Search finds it, verified.
    let page = souk.run(&["--json", "search", "brass"]).ok().json();
    let hits = page["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{page:#}");
    assert_eq!(hits[0]["id"], lamp_id.as_str());
    assert_eq!(hits[0]["seller"], me.as_str());
    assert!(page["dropped"].as_array().unwrap().is_empty());

    let out = souk.run(&["search", "brass", "--ships-to", "de"]).ok();
    assert!(out.stdout.contains("85.00 EUR"), "{out:#?}");
    assert!(out.stdout.contains("Brass desk lamp"), "{out:#?}");
    assert!(out.stdout.contains(&lamp_id[..12]), "{out:#?}");
    assert!(out.stdout.contains("1 of 1"), "{out:#?}");

    let out = souk.run(&["search", "brass", "--ships-to", "US"]).ok();
    assert!(out.stdout.contains("No listings match"), "{out:#?}");

    // The detail view.
    let out = souk.run(&["listing", "show", &lamp_id]).ok();
    for expected in [
        "Brass desk lamp, 1960s, rewired",
        "85.00 EUR",
        me.as_str(),
        "physical",
        "used, good",
        "home/lighting",
        "lamp, brass, vintage",
        "DE, AT",
        "signature verified on this machine",
        lamp_id.as_str(),
    ] {
        assert!(out.stdout.contains(expected), "{expected}: {out:#?}");
    }
    let shown = souk
        .run(&[
            "--json",
            "listing",
            "show",
            "--slug",
            "brass-desk-lamp-1960s",
        ])
        .ok()
        .json();
    assert_eq!(shown["id"], lamp_id.as_str());
    assert_eq!(shown["listing"]["price"]["amount"], 8500);

    // Several files at once: a summary line. Republishing the lamp replaces it.
    let out = souk
        .run(&[
            "listing",
            "publish",
            &example("listing.toml"),
            &example("listing.json"),
        ])
        .ok();
    assert!(
        out.stdout
            .contains("2 accepted · 0 duplicate · 0 stale · 0 failed"),
        "{out:#?}"
    );
    let page = souk
        .run(&["--json", "search", "--type", "digital"])
        .ok()
        .json();
    assert_eq!(
        page["hits"][0]["listing"]["slug"],
        "field-recordings-baltic-coast"
    );
    assert_eq!(page["hits"][0]["listing"]["price"]["currency"], "BTC");
    let out = souk.run(&["search", "--type", "digital"]).ok();
    assert!(out.stdout.contains("0.00045000 BTC"), "{out:#?}");

    // Paging prints the command for the next page.
    let out = souk
        .run(&["search", "--limit", "1", "--sort", "newest"])
        .ok();
    assert!(out.stdout.contains("1 of 2"), "{out:#?}");
    let cursor = out
        .stdout
        .split("--cursor ")
        .nth(1)
        .expect("a next-page command")
        .trim()
        .trim_matches('\'')
        .to_owned();
    assert!(
        out.stdout
            .contains("souk search --sort newest --limit 1 --cursor"),
        "{out:#?}"
    );
    let next = souk
        .run(&[
            "--json", "search", "--limit", "1", "--sort", "newest", "--cursor", &cursor,
        ])
        .ok()
        .json();
    assert_eq!(next["hits"].as_array().unwrap().len(), 1, "{next:#}");

    // The store profile: the file, with flags on top.
    let out = souk
        .run(&[
            "store",
            "set",
            "--file",
            &example("profile.toml"),
            "--about",
            "Lamps, rewired and tested.",
        ])
        .ok();
    assert!(out.stdout.contains("profile accepted"), "{out:#?}");
    let store = souk.run(&["--json", "store", "show", &me]).ok().json();
    assert_eq!(store["profile"]["store_name"], "Lampenwerk Leipzig");
    assert_eq!(store["profile"]["about"], "Lamps, rewired and tested.");
    assert_eq!(store["profile"]["location"]["country"], "DE");

    // Without --file, flags edit the published profile.
    souk.run(&["store", "set", "--currency", "btc"]).ok();
    let out = souk.run(&["store", "show"]).ok();
    for expected in [
        "Lampenwerk Leipzig",
        "Lamps, rewired and tested.",
        "BTC",
        "signature verified on this machine",
    ] {
        assert!(out.stdout.contains(expected), "{expected}: {out:#?}");
    }
    assert!(!out.stdout.contains("EUR"), "{out:#?}");

    // Withdraw the lamp: search no longer finds it.
    let out = souk
        .run(&[
            "listing",
            "withdraw",
            "brass-desk-lamp-1960s",
            "--reason",
            "sold",
        ])
        .ok();
    assert!(out.stdout.contains("withdrawn"), "{out:#?}");
    let page = souk.run(&["--json", "search", "brass"]).ok().json();
    assert!(page["hits"].as_array().unwrap().is_empty(), "{page:#}");
    let out = souk
        .run(&["listing", "show", "--slug", "brass-desk-lamp-1960s"])
        .failed();
    assert!(out.stderr.contains("not found"), "{out:#?}");

    // An unknown id: not found, with a hint.
    let out = souk.run(&["listing", "show", &"0".repeat(64)]).failed();
    assert!(out.stderr.contains("hint: "), "{out:#?}");
}

#[test]
fn bad_listing_files_name_the_problem() {
    let home = tempfile::tempdir().unwrap();
    // Nothing reaches a server: the files fail before publishing.
    let souk = Souk::new(home.path(), &dead_server()).env("SOUK_MNEMONIC", PHRASE);
    restore(&souk);
    let lamp = std::fs::read_to_string(examples().join("listing.toml")).unwrap();

    let upper = home.path().join("upper.toml");
    std::fs::write(
        &upper,
        lamp.replace("\"brass-desk-lamp-1960s\"", "\"Brass-Desk-Lamp\""),
    )
    .unwrap();
    let out = souk
        .run(&["listing", "publish", &upper.display().to_string()])
        .failed();
    assert!(out.stderr.contains("listing.slug"), "{out:#?}");
    assert!(out.stderr.contains("upper.toml"), "{out:#?}");

    let broken = home.path().join("broken.toml");
    std::fs::write(&broken, lamp.replace("amount = 8500", "amount = ")).unwrap();
    let out = souk
        .run(&["listing", "publish", &broken.display().to_string()])
        .failed();
    assert!(out.stderr.contains("broken.toml"), "{out:#?}");
    assert!(out.stderr.contains("line"), "{out:#?}");

    let unknown = home.path().join("unknown.json");
    std::fs::write(
        &unknown,
        r#"{"slug": "x", "type": "digital", "titel": "typo"}"#,
    )
    .unwrap();
    let out = souk
        .run(&[
            "--json",
            "listing",
            "publish",
            &unknown.display().to_string(),
        ])
        .failed();
    assert!(out.stderr.contains("titel"), "{out:#?}");
    assert!(out.stderr.contains("line 1"), "{out:#?}");
    assert_eq!(out.json()["error"]["code"], "bad_file");

    let out = souk.run(&["listing", "publish", "listing.yaml"]).failed();
    assert!(out.stderr.contains(".toml or *.json"), "{out:#?}");

    // With several files, each failure is named and counted.
    let out = souk
        .run(&[
            "listing",
            "publish",
            &upper.display().to_string(),
            &broken.display().to_string(),
        ])
        .failed();
    assert!(
        out.stdout
            .contains("0 accepted · 0 duplicate · 0 stale · 2 failed"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("2 of 2 listings failed"), "{out:#?}");

    // With --json the report is the one document on stdout, and it names each failure.
    let out = souk
        .run(&[
            "--json",
            "listing",
            "publish",
            &upper.display().to_string(),
            &broken.display().to_string(),
        ])
        .failed();
    let report = out.json();
    assert_eq!(report["summary"]["failed"], 2, "{report:#}");
    assert!(out.stderr.contains("2 of 2 listings failed"), "{out:#?}");
}

#[test]
fn unreachable_server_gives_a_hint() {
    let home = tempfile::tempdir().unwrap();
    let server = dead_server();
    let souk = Souk::new(home.path(), &server);
    let out = souk.run(&["search", "lamp"]).failed();
    assert!(out.stderr.contains("cannot reach"), "{out:#?}");
    assert!(out.stderr.contains(&server), "{out:#?}");
    assert!(out.stderr.contains("hint: "), "{out:#?}");

    let out = souk.run(&["--json", "search", "lamp"]).failed();
    let doc = out.json();
    assert_eq!(doc["error"]["code"], "unreachable");
    assert!(doc["error"]["hint"].as_str().unwrap().contains("--server"));

    // Two dead servers: both are named.
    let other = dead_server();
    let out = souk
        .run(&["--server", &server, "--server", &other, "search", "lamp"])
        .failed();
    assert!(out.stderr.contains("no server could answer"), "{out:#?}");
    assert!(out.stderr.contains(&other), "{out:#?}");

    let out = souk
        .run(&["--server", "ftp://example.org", "search"])
        .failed();
    assert!(
        out.stderr.contains("not a usable server address"),
        "{out:#?}"
    );
}

#[test]
fn usage_errors_exit_2_and_version_works() {
    let home = tempfile::tempdir().unwrap();
    let souk = Souk::new(home.path(), &dead_server());
    assert_eq!(souk.run(&["frobnicate"]).code, 2);
    assert_eq!(souk.run(&["search", "--sort", "cheapest"]).code, 2);
    assert_eq!(souk.run(&["listing", "show"]).code, 2);
    let out = souk.run(&["--version"]).ok();
    assert!(out.stdout.starts_with("souk "), "{out:#?}");
    let out = souk.run(&["search", "--help"]).ok();
    for flag in [
        "--price-min",
        "--ships-to",
        "--moderated",
        "--direct",
        "--cursor",
    ] {
        assert!(out.stdout.contains(flag), "{flag}: {out:#?}");
    }
}

/// The Esplora stand-in on a regtest chain, served by its own runtime (the CLI under test is
/// a separate process; the test drives the chain from here).
fn regtest_chain() -> (Runtime, souk_testkit::Esplora) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let chain = runtime
        .block_on(souk_testkit::Esplora::start(
            souk_testkit::bitcoin::Network::Regtest,
        ))
        .unwrap();
    (runtime, chain)
}

/// A direct order from start to end through the command line, for two people with their own
/// homes: place, the seller's inbox sync and confirm, payment on the (stand-in) chain, chain
/// watch, ship, complete, and a rating; then a step the state machine refuses.
#[test]
fn a_direct_order_from_the_command_line() {
    let server = Server::start();
    // The runtime serves the chain stand-in; keep it alive as long as the chain.
    let (_chain_runtime, chain) = regtest_chain();
    let (seller_home, buyer_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = |home: &Path, phrase: &str| {
        Souk::new(home, &server.url)
            .env("SOUK_MNEMONIC", phrase)
            .env("SOUK_NETWORK", "regtest")
            .env("SOUK_ESPLORA", &chain.url)
    };
    let seller = on(seller_home.path(), PHRASE);
    let buyer = on(
        buyer_home.path(),
        "legal winner thank year wave sausage worth useful legal winner thank yellow",
    );
    for (who, name) in [(&seller, "Lamp shop"), (&buyer, "A buyer")] {
        restore(who);
        who.run(&["store", "set", "--name", name, "--inbox", &server.url])
            .ok();
    }
    let published = seller
        .run(&["--json", "listing", "publish", &example("listing.toml")])
        .ok()
        .json();
    let listing = published["results"][0]["id"].as_str().unwrap().to_owned();

    let placed = buyer
        .run(&[
            "--json",
            "order",
            "place",
            &listing,
            "--amount",
            "50000",
            "--ship-to",
            "Hauptstrasse 1, Berlin",
        ])
        .ok()
        .json();
    assert_eq!(placed["state"], "requested", "{placed:#}");
    assert_eq!(placed["messages"][0]["delivered"], true);
    let id = placed["order_id"].as_str().unwrap().to_owned();

    let synced = seller.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(synced["messages"][0]["outcome"], "new_order", "{synced:#}");
    let confirmed = seller.run(&["--json", "order", "confirm", &id]).ok().json();
    assert_eq!(confirmed["state"], "awaiting_payment");
    let synced = buyer.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(
        synced["messages"][0]["state"], "awaiting_payment",
        "{synced:#}"
    );

    let shown = buyer.run(&["--json", "order", "show", &id]).ok().json();
    let address = shown["payment_address"].as_str().unwrap().to_owned();
    chain.pay(&address, 50_000).unwrap();
    chain.mine(1);
    for who in [&buyer, &seller] {
        let watched = who.run(&["--json", "chain", "watch"]).ok().json();
        assert_eq!(watched["moved"][0]["state"], "confirmed", "{watched:#}");
    }

    seller
        .run(&["order", "ship", &id, "--note", "Posted today"])
        .ok();
    let synced = buyer.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(synced["messages"][0]["state"], "shipped", "{synced:#}");
    let done = buyer.run(&["--json", "order", "complete", &id]).ok().json();
    assert_eq!(done["state"], "completed");
    let synced = seller.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(synced["messages"][0]["state"], "completed", "{synced:#}");
    buyer
        .run(&[
            "order",
            "rate",
            &id,
            "--overall",
            "5",
            "--service",
            "4",
            "--review",
            "Lovely lamp",
        ])
        .ok();

    let listed = buyer.run(&["--json", "order", "list"]).ok().json();
    assert_eq!(listed["orders"][0]["state"], "completed");
    let refused = seller.run(&["order", "confirm", &id]).failed();
    assert!(refused.stderr.contains("completed"), "{refused:#?}");
    let unknown = seller
        .run(&["--json", "order", "show", &"0".repeat(64)])
        .failed();
    assert_eq!(unknown.json()["error"]["code"], "unknown_order");
}

/// What each message of an `inbox sync --json` did: `(outcome, state)`, with `""` for no state.
fn outcomes(synced: &Value) -> Vec<(String, String)> {
    synced["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array: {synced:#}"))
        .iter()
        .map(|m| {
            assert!(
                m.get("error").is_none(),
                "a message was refused: {synced:#}"
            );
            (
                m["outcome"].as_str().unwrap_or_default().to_owned(),
                m["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Who each message of an order step's `--json` document went to, checking that every one was
/// delivered.
fn delivered_to(step: &Value) -> Vec<String> {
    step["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array: {step:#}"))
        .iter()
        .map(|m| {
            assert_eq!(m["delivered"], true, "{step:#}");
            m["to"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

fn pair(outcome: &str, state: &str) -> (String, String) {
    (outcome.to_owned(), state.to_owned())
}

/// A moderated order that ends in a dispute, from start to end through the command line, for
/// three people with their own homes: the moderator publishes an offer (its escrow xpub filled
/// in from its key), the seller's listing accepts it, the buyer chooses it with `souk
/// moderators` and pays into the 2-of-3 escrow on the (stand-in) chain; after shipping the
/// buyer disputes and sends evidence quoting the order's signed messages, the moderator reads
/// both and decides 70/30, the buyer carries out the payout (the stand-in's script interpreter
/// accepts it) and rates the moderator and the seller; nothing is left pending.
#[test]
fn a_moderated_order_disputed_and_decided_from_the_command_line() {
    let server = Server::start();
    // The runtime serves the chain stand-in; keep it alive as long as the chain.
    let (_chain_runtime, chain) = regtest_chain();
    let homes = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let on = |home: &Path, phrase: &str| {
        Souk::new(home, &server.url)
            .env("SOUK_MNEMONIC", phrase)
            .env("SOUK_NETWORK", "regtest")
            .env("SOUK_ESPLORA", &chain.url)
    };
    let seller = on(homes[0].path(), PHRASE);
    let buyer = on(
        homes[1].path(),
        "legal winner thank year wave sausage worth useful legal winner thank yellow",
    );
    let moderator = on(
        homes[2].path(),
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage above",
    );
    for who in [&seller, &buyer, &moderator] {
        restore(who);
    }
    let address_of = |who: &Souk| {
        who.run(&["--json", "key", "show"]).ok().json()["address"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (seller_addr, buyer_addr, moderator_addr) = (
        address_of(&seller),
        address_of(&buyer),
        address_of(&moderator),
    );
    for (who, name) in [(&seller, "Lamp shop"), (&buyer, "A buyer")] {
        who.run(&["store", "set", "--name", name, "--inbox", &server.url])
            .ok();
    }

    // The moderator's offer, without an escrow xpub: `store set` adds the key's, for regtest.
    let profile = homes[2].path().join("moderator.toml");
    std::fs::write(
        &profile,
        r#"store_name = "Fair Judge"
about = "I settle disputes about lamps and furniture."

[moderator]
fee_type = "fixed_plus_percentage"
fee_percentage_bp = 150
languages = ["en", "de"]
terms = "I decide within 7 days of hearing both sides."
accepted_currencies = ["BTC"]

[moderator.fee_fixed]
amount = 5000
currency = "BTC"
divisibility = 8
"#,
    )
    .unwrap();
    moderator
        .run(&[
            "--network",
            "regtest",
            "store",
            "set",
            "--file",
            &profile.display().to_string(),
            "--inbox",
            &server.url,
        ])
        .ok();
    let store = moderator.run(&["--json", "store", "show"]).ok().json();
    let xpub = store["profile"]["moderator"]["escrow_xpub"]
        .as_str()
        .unwrap_or_default();
    assert!(xpub.starts_with("tpub"), "a regtest xpub: {store:#}");

    // The seller's lamp, accepting the moderator.
    let lamp = std::fs::read_to_string(examples().join("listing.toml")).unwrap();
    let moderated = lamp.replace(
        "max_quantity_per_order = 1\n",
        &format!("max_quantity_per_order = 1\naccepted_moderators = [\"{moderator_addr}\"]\n"),
    );
    assert_ne!(
        moderated, lamp,
        "the example still has max_quantity_per_order"
    );
    let listing_file = homes[0].path().join("moderated.toml");
    std::fs::write(&listing_file, moderated).unwrap();
    let published = seller
        .run(&[
            "--json",
            "listing",
            "publish",
            &listing_file.display().to_string(),
        ])
        .ok()
        .json();
    assert_eq!(
        published["results"][0]["status"], "accepted",
        "{published:#}"
    );
    let listing = published["results"][0]["id"].as_str().unwrap().to_owned();

    // The buyer chooses the moderator: its signed offer, and no ratings yet.
    let choices = buyer.run(&["--json", "moderators", &listing]).ok().json();
    let list = choices["moderators"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{choices:#}");
    let choice = &list[0];
    assert_eq!(choice["address"], moderator_addr.as_str(), "{choices:#}");
    assert_eq!(choice["name"], "Fair Judge");
    assert_eq!(choice["offer"]["fee_type"], "fixed_plus_percentage");
    assert_eq!(choice["offer"]["fee_fixed"]["amount"], 5000);
    assert_eq!(choice["offer"]["fee_percentage_bp"], 150);
    assert_eq!(choice["offer"]["escrow_xpub"], xpub);
    assert_eq!(choice["ratings"]["count"], 0);
    let out = buyer.run(&["moderators", &listing]).ok();
    assert!(out.stdout.contains("no ratings yet"), "{out:#?}");

    // Place: the escrow's miner fee is estimated first.
    let out = buyer
        .run(&[
            "order",
            "place",
            &listing,
            "--amount",
            "150000",
            "--moderator",
            &moderator_addr,
            "--ship-to",
            "Hauptstrasse 1, Berlin",
            "--fee-rate",
            "2",
        ])
        .ok();
    assert!(
        out.stderr.contains("spending the escrow costs about")
            && out.stderr.contains("sats in miner fees at 2 sat/vB")
            && out.stderr.contains("the cap is 7500 sats"),
        "{out:#?}"
    );
    assert!(out.stdout.starts_with("ordered  "), "{out:#?}");
    assert!(out.stdout.contains("(now requested)"), "{out:#?}");
    let id = out.stdout.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(id.len(), 64, "{out:#?}");

    let synced = seller.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(outcomes(&synced), [pair("new_order", "")], "{synced:#}");
    let confirmed = seller.run(&["--json", "order", "confirm", &id]).ok().json();
    assert_eq!(confirmed["state"], "awaiting_payment", "{confirmed:#}");
    assert_eq!(confirmed["messages"][0]["delivered"], true);
    let synced = buyer.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(
        outcomes(&synced),
        [pair("moved", "awaiting_payment")],
        "{synced:#}"
    );

    // Pay the escrow address from outside, on the stand-in chain.
    let shown = buyer.run(&["--json", "order", "show", &id]).ok().json();
    assert_eq!(shown["role"], "buyer", "{shown:#}");
    assert_eq!(shown["payment"], "moderated", "{shown:#}");
    assert_eq!(shown["amount_sats"], 150_000);
    assert_eq!(shown["seller"], seller_addr.as_str());
    assert_eq!(shown["buyer"], buyer_addr.as_str());
    let address = shown["payment_address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("bcrt1q"), "{shown:#}");
    assert_eq!(
        seller.run(&["--json", "order", "show", &id]).ok().json()["payment_address"],
        address.as_str(),
        "both sides derive the same escrow"
    );
    chain.pay(&address, 150_000).unwrap();
    chain.mine(1);
    for who in [&buyer, &seller] {
        let watched = who.run(&["--json", "chain", "watch"]).ok().json();
        assert_eq!(watched["moved"][0]["id"], id.as_str(), "{watched:#}");
        assert_eq!(watched["moved"][0]["state"], "confirmed", "{watched:#}");
    }
    let paid = buyer.run(&["--json", "order", "paid", &id]).ok().json();
    assert_eq!(paid["state"], "confirmed", "{paid:#}");
    assert_eq!(paid["messages"][0]["to"], seller_addr.as_str());
    assert_eq!(paid["messages"][0]["delivered"], true);
    let synced = seller.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(outcomes(&synced), [pair("noted", "")], "{synced:#}");

    let shipped = seller
        .run(&[
            "--json",
            "order",
            "ship",
            &id,
            "--note",
            "Posted today, DHL 0034",
            "--fee-rate",
            "2",
        ])
        .ok()
        .json();
    assert_eq!(shipped["state"], "shipped", "{shipped:#}");
    let synced = buyer.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(outcomes(&synced), [pair("moved", "shipped")], "{synced:#}");

    // The lamp arrives broken: the buyer disputes and makes its case to the moderator.
    let disputed = buyer
        .run(&[
            "--json",
            "order",
            "dispute",
            &id,
            "--reason",
            "The shade arrived cracked",
        ])
        .ok()
        .json();
    assert_eq!(disputed["state"], "disputed", "{disputed:#}");
    assert_eq!(
        delivered_to(&disputed),
        [moderator_addr.as_str(), seller_addr.as_str()]
    );
    let evidence = buyer
        .run(&[
            "--json",
            "order",
            "evidence",
            &id,
            "--text",
            "Photos of the cracked shade and of the thin packing",
        ])
        .ok()
        .json();
    assert_eq!(evidence["state"], "disputed", "{evidence:#}");
    assert_eq!(evidence["messages"][0]["to"], moderator_addr.as_str());
    assert_eq!(evidence["messages"][0]["delivered"], true);

    let synced = moderator.run(&["--json", "inbox", "sync"]).ok().json();
    let mut got = outcomes(&synced);
    got.sort();
    assert_eq!(
        got,
        [pair("new_order", ""), pair("noted", "")],
        "the dispute and the evidence: {synced:#}"
    );
    let listed = moderator.run(&["--json", "order", "list"]).ok().json();
    assert_eq!(listed["orders"][0]["id"], id.as_str(), "{listed:#}");
    assert_eq!(listed["orders"][0]["role"], "moderator");
    assert_eq!(listed["orders"][0]["state"], "disputed");
    let case = moderator.run(&["--json", "order", "show", &id]).ok().json();
    assert_eq!(case["state"], "disputed", "{case:#}");
    let messages = case["messages"].as_array().unwrap();
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"dispute") && kinds.contains(&"evidence"),
        "{case:#}"
    );
    let dispute = messages.iter().find(|m| m["kind"] == "dispute").unwrap();
    assert_eq!(dispute["sender"], "buyer", "{case:#}");
    assert!(
        dispute["text"]
            .as_str()
            .unwrap()
            .contains("The shade arrived cracked"),
        "{case:#}"
    );
    let evidence = messages.iter().find(|m| m["kind"] == "evidence").unwrap();
    assert_eq!(evidence["sender"], "buyer", "{case:#}");
    assert!(
        evidence["text"]
            .as_str()
            .unwrap()
            .contains("Photos of the cracked shade"),
        "{case:#}"
    );
    let quoted: Vec<(&str, &str)> = evidence["quoted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["sender"].as_str().unwrap(), q["kind"].as_str().unwrap()))
        .collect();
    for expected in [
        ("buyer", "order"),
        ("seller", "confirmation"),
        ("buyer", "payment"),
        ("seller", "fulfillment"),
    ] {
        assert!(
            quoted.contains(&expected),
            "the evidence quotes {expected:?}: {case:#}"
        );
    }
    let out = moderator.run(&["order", "show", &id]).ok();
    assert!(out.stdout.contains("quotes"), "{out:#?}");

    let synced = seller.run(&["--json", "inbox", "sync"]).ok().json();
    assert_eq!(outcomes(&synced), [pair("moved", "disputed")], "{synced:#}");

    // The moderator decides: 70 % of what remains after its fee to the buyer.
    let decided = moderator
        .run(&[
            "--json",
            "order",
            "decide",
            &id,
            "--buyer-share-bps",
            "7000",
            "--reason",
            "Broken in transit; the packing was thin",
            "--fee-rate",
            "2",
        ])
        .ok()
        .json();
    assert_eq!(decided["state"], "resolved", "{decided:#}");
    assert_eq!(
        delivered_to(&decided),
        [buyer_addr.as_str(), seller_addr.as_str()]
    );
    for who in [&buyer, &seller] {
        let synced = who.run(&["--json", "inbox", "sync"]).ok().json();
        assert_eq!(outcomes(&synced), [pair("moved", "resolved")], "{synced:#}");
    }

    // The buyer carries out the payout; the stand-in chain took it.
    let payout = buyer
        .run(&["--json", "order", "accept-decision", &id])
        .ok()
        .json();
    assert_eq!(payout["order_id"], id.as_str(), "{payout:#}");
    assert_eq!(payout["state"], "resolved", "{payout:#}");
    let txid: souk_testkit::bitcoin::Txid = payout["txid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("a txid ({e}): {payout:#}"));
    let tx = chain
        .transaction(&txid)
        .expect("the payout is on the chain");
    let values: Vec<u64> = tx.output.iter().map(|o| o.value.to_sat()).collect();
    assert_eq!(values.len(), 3, "moderator, buyer, seller: {values:?}");
    // The offer: 5,000 sats fixed + 1.5 % of 150,000 = 7,250 sats.
    assert!(values.contains(&7_250), "the moderator's fee: {values:?}");
    let mut shares: Vec<u64> = values.iter().copied().filter(|v| *v != 7_250).collect();
    shares.sort_unstable();
    assert!(shares[1] > shares[0] * 2, "70/30: {values:?}");
    assert!(
        values.iter().sum::<u64>() < 150_000,
        "a miner fee: {values:?}"
    );

    // Ratings: the moderator after its decision, the seller after a decided dispute.
    let rated = buyer
        .run(&[
            "--json",
            "order",
            "rate",
            &id,
            "--moderator",
            "--overall",
            "4",
            "--service",
            "5",
            "--review",
            "Fair and quick",
        ])
        .ok()
        .json();
    assert_eq!(
        rated["rating"].as_str().unwrap_or_default().len(),
        64,
        "{rated:#}"
    );
    let rated = buyer
        .run(&[
            "--json",
            "order",
            "rate",
            &id,
            "--overall",
            "2",
            "--service",
            "2",
        ])
        .ok()
        .json();
    assert_eq!(
        rated["rating"].as_str().unwrap_or_default().len(),
        64,
        "{rated:#}"
    );
    let choices = buyer.run(&["--json", "moderators", &listing]).ok().json();
    let ratings = &choices["moderators"][0]["ratings"];
    assert_eq!(ratings["count"], 1, "{choices:#}");
    assert_eq!(ratings["overall"], 4.0, "{choices:#}");
    assert_eq!(ratings["service"], 5.0, "{choices:#}");
    assert_eq!(ratings["refused"], 0, "{choices:#}");
    assert_eq!(ratings["reviews"][0], "Fair and quick", "{choices:#}");

    // Every message was taken by an inbox server.
    for who in [&buyer, &seller, &moderator] {
        let out = who.run(&["inbox", "pending"]).ok();
        assert!(out.stdout.contains("nothing pending"), "{out:#?}");
        let pending = who.run(&["--json", "inbox", "pending"]).ok().json();
        assert_eq!(pending["pending"], serde_json::json!([]), "{pending:#}");
    }
    let shown = buyer.run(&["--json", "order", "show", &id]).ok().json();
    assert_eq!(shown["state"], "resolved", "{shown:#}");
    assert_eq!(shown["pending_messages"], 0);
}

/// Signed listings from a fixed test key, for the feed.
fn feed_listings(from: usize, count: usize) -> Vec<Vec<u8>> {
    let key = souk_protocol::IdentityKey::from_secret_bytes(&[77; 32]);
    let ctx = souk_protocol::ValidationContext::now();
    (from..from + count)
        .map(|i| {
            let mut listing =
                souk_protocol::samples::listing(ctx.now - 60, &format!("feed-{i}"), None);
            listing.title = format!("Feed item {i}");
            key.seal(&souk_protocol::Object::Listing(listing), &ctx)
                .unwrap()
                .envelope()
                .bytes()
                .to_vec()
        })
        .collect()
}

#[test]
fn watch_follows_the_feed_and_resumes_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = dir.path().to_owned();
    let state = runtime.block_on(async move {
        let config = souk_server::config::Config::for_tests(&data, None);
        souk_server::server::open(config)
            .await
            .expect("the server opens")
    });
    let serve = |listener: tokio::net::TcpListener| {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = runtime.spawn(souk_server::grpc::serve(
            std::sync::Arc::clone(&state),
            listener,
            stopping,
        ));
        (stop, task)
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, task) = serve(listener);
    runtime
        .block_on(state.ingestor.ingest(feed_listings(0, 3)))
        .expect("first listings");

    let mut child = Command::new(env!("CARGO_BIN_EXE_souk"))
        .args(["watch", "--kind", "listing", "--limit", "6"])
        .args(["--grpc", &format!("http://{addr}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("souk watch starts");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let errors = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut printed = Vec::new();
    for _ in 0..3 {
        printed.push(
            lines
                .recv_timeout(Duration::from_secs(60))
                .expect("an object within a minute"),
        );
    }

    // The gRPC server goes away (the feed ends), listings arrive meanwhile, it comes back.
    let _ = stop.send(true);
    runtime.block_on(task).unwrap().expect("a clean stop");
    runtime
        .block_on(state.ingestor.ingest(feed_listings(3, 3)))
        .expect("more listings");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .expect("the same port again");
    let (_stop, _task) = serve(listener);
    for _ in 0..3 {
        printed.push(
            lines
                .recv_timeout(Duration::from_secs(60))
                .expect("an object after the restart within a minute"),
        );
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "souk watch did not stop after --limit"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let stderr = errors.join().unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("resubscribing after cursor"), "{stderr}");
    let objects: Vec<Value> = printed
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let titles: Vec<&str> = objects
        .iter()
        .map(|o| o["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        (0..6).map(|i| format!("Feed item {i}")).collect::<Vec<_>>(),
        "each object once, in order, across the restart"
    );
    let cursors: Vec<u64> = objects
        .iter()
        .map(|o| o["cursor"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    assert!(objects.iter().all(|o| o["kind"] == "listing"));
    runtime.shutdown_timeout(Duration::from_secs(5));
}
