//! Federation benchmark with real `souk-server` processes on loopback:
//!
//! 1. **Propagation**: a line of 5 servers (no discovery, so every listing hops 4 times);
//!    each sample publishes one listing at the first server and polls search at the last until
//!    it is found. Reports p50/p99 in ms.
//! 2. **Back-fill**: a server holding `--backfill` demo listings (published over REST), then an
//!    empty server joins over TCP; time until it holds the same set, objects/s, and bytes on the
//!    wire (TCP payload both ways, read from the kernel with `ss -ti`) against the raw envelope
//!    bytes.
//! 3. **Agreeing round**: the next sync round between the two, now equal: round trips and sync
//!    bytes.
//!
//! ```sh
//! cargo bench -p souk-server --bench federation                         # 100,000 listings
//! cargo bench -p souk-server --bench federation -- --backfill 20000 --samples 100
//! ```

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use souk_server::config::DemoArgs;

/// Runs one future to completion on the benchmark's runtime (the benchmark itself is a plain
/// sequential program; only the HTTP client is async).
fn block<F: Future>(future: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        })
        .block_on(future)
}

struct Args {
    backfill: usize,
    samples: usize,
}

fn args() -> Args {
    let mut out = Args {
        backfill: 100_000,
        samples: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |default| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--backfill" => out.backfill = number(out.backfill),
            "--samples" => out.samples = number(out.samples),
            _ => {} // cargo bench passes --bench
        }
    }
    out
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

struct Node {
    child: Child,
    base: String,
    address: String,
    p2p_port: u16,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(bootstrap: Option<&Node>, sync_secs: u64) -> Node {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let p2p_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_souk-server"));
        command
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--p2p-listen", &format!("/ip4/127.0.0.1/tcp/{p2p_port}")])
            .args(["--p2p-discover", "false"])
            .args(["--grpc-addr", "127.0.0.1:0"])
            .args(["--sync-interval-secs", &sync_secs.to_string()])
            .args([
                "--rate-limit-per-second",
                "1000000",
                "--rate-limit-burst",
                "1000000",
            ])
            .args(["--sqlite-sync", "normal"])
            .env("SOUK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(peer) = bootstrap {
            command.args(["--p2p-bootstrap", &peer.address]);
        }
        let child = command.spawn().expect("spawn souk-server");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Ok(response) = block(client.get(format!("{base}/api/v1/network")).send())
                && let Ok(status) = block(response.json::<Value>())
                && status["listen_addrs"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let address = format!(
            "{}/p2p/{}",
            status["listen_addrs"][0].as_str().expect("addr"),
            status["peer_id"].as_str().expect("peer id")
        );
        Node {
            child,
            base,
            address,
            p2p_port,
            client,
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Value {
        block(async {
            let response = self
                .client
                .get(format!("{}{path}", self.base))
                .send()
                .await?;
            response.json::<Value>().await
        })
        .unwrap_or(Value::Null)
    }

    /// The server's Prometheus samples, by series (the name and labels as `/metrics` prints them).
    fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let text = block(async {
            self.client
                .get(format!("{}/metrics", self.base))
                .send()
                .await?
                .text()
                .await
        })
        .unwrap_or_default();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    fn publish(&self, envelopes: &[Vec<u8>]) {
        use base64::Engine;
        let body = serde_json::json!({
            "envelopes": envelopes
                .iter()
                .map(|e| base64::engine::general_purpose::STANDARD.encode(e))
                .collect::<Vec<_>>()
        });
        let response = block(
            self.client
                .post(format!("{}/api/v1/envelopes", self.base))
                .json(&body)
                .send(),
        )
        .expect("publish");
        assert!(
            response.status().is_success(),
            "publish: {}",
            response.status()
        );
    }

    fn objects(&self) -> u64 {
        self.get("/api/v1/network")["objects"].as_u64().unwrap_or(0)
    }

    /// Connected peers known to be subscribed to the envelope topic.
    fn gossip_peers(&self) -> usize {
        self.get("/api/v1/network")["peers"]
            .as_array()
            .map_or(0, |peers| {
                peers.iter().filter(|p| p["subscribed"] == true).count()
            })
    }

    fn wait(&self, what: &str, limit: Duration, mut done: impl FnMut(&Node) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// TCP payload bytes (sent, received) of the established loopback connections to `port`, as
/// the dialling side's kernel counted them (its sent + received covers both directions).
fn tcp_bytes(port: u16) -> (u64, u64) {
    let output = Command::new("ss")
        .args([
            "-tinH",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) is needed for the wire figures");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> u64 {
        text.split_whitespace()
            .filter_map(|w| w.strip_prefix(name))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum()
    };
    (field("bytes_sent:"), field("bytes_received:"))
}

fn propagation(samples: usize) {
    let mut line: Vec<Node> = Vec::new();
    for _ in 0..5 {
        let node = Node::start(line.last(), 60);
        line.push(node);
    }
    for (i, node) in line.iter().enumerate() {
        let expected = if i == 0 || i == 4 { 1 } else { 2 };
        node.wait("gossip along the line", Duration::from_secs(60), |n| {
            n.gossip_peers() >= expected
        });
    }
    // Let gossipsub build its meshes (heartbeats) before measuring.
    let (first, last) = (&line[0], &line[4]);
    let warm = souk_server::demo::listings(
        &DemoArgs {
            listings: 1,
            stores: 1,
            seed: 99,
        },
        now(),
        0..1,
    );
    first.publish(&[warm[0].envelope().bytes().to_vec()]);
    last.wait("warm-up listing", Duration::from_secs(60), |n| {
        n.objects() >= 1
    });

    let key = souk_protocol::IdentityKey::from_secret_bytes(&[7; 32]);
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut listing = souk_protocol::samples::listing(now() - 5, &format!("hop-{i}"), None);
        let word = format!("hopword{i}x");
        listing.title = format!("{word} parcel");
        let object = key
            .seal(
                &souk_protocol::Object::Listing(listing),
                &souk_protocol::ValidationContext::now(),
            )
            .expect("valid");
        let started = Instant::now();
        first.publish(&[object.envelope().bytes().to_vec()]);
        last.wait("propagation", Duration::from_secs(30), |n| {
            n.get(&format!("/api/v1/listings/search?q={word}&limit=1"))["total"].as_u64() == Some(1)
        });
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "propagation over 4 hops ({samples} listings): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        support::percentile(&times, 0.5),
        support::percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0)
    );
}

fn now() -> u64 {
    souk_protocol::ValidationContext::now().now
}

fn backfill(count: usize) {
    let full = Node::start(None, 3_600);
    let args = DemoArgs {
        listings: count,
        stores: 200,
        seed: 1,
    };
    let t = now();
    let mut raw: u64 = 0;
    let profiles: Vec<Vec<u8>> = souk_server::demo::profiles(&args, t)
        .iter()
        .map(|o| o.envelope().bytes().to_vec())
        .collect();
    raw += profiles.iter().map(|e| e.len() as u64).sum::<u64>();
    full.publish(&profiles);
    let started = Instant::now();
    for start in (0..count).step_by(1_000) {
        let batch: Vec<Vec<u8>> =
            souk_server::demo::listings(&args, t, start..(start + 1_000).min(count))
                .iter()
                .map(|o| o.envelope().bytes().to_vec())
                .collect();
        raw += batch.iter().map(|e| e.len() as u64).sum::<u64>();
        full.publish(&batch);
    }
    let objects = full.objects();
    println!(
        "seeded {objects} objects ({:.1} MiB of envelopes) over REST in {:.1} s",
        raw as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    // The joiner syncs every 5 s, so the round after the back-fill is one between equals.
    let empty = Node::start(Some(&full), 5);
    empty.wait("back-fill", Duration::from_secs(3_600), |n| {
        n.objects() >= objects
    });
    let seconds = started.elapsed().as_secs_f64();
    let (sent, received) = tcp_bytes(full.p2p_port);
    let wire = sent + received;
    println!(
        "back-fill of {objects} objects into an empty server: {seconds:.1} s, {:.0} objects/s",
        objects as f64 / seconds
    );
    let metrics = empty.metrics();
    let sample = |series: String| metrics.get(&series).copied().unwrap_or(0.0);
    let stage = |name: &str, what: &str| {
        let count = sample(format!(
            "souk_ingest_stage_seconds_count{{stage=\"{name}\"}}"
        ));
        let busy = sample(format!("souk_ingest_stage_seconds_sum{{stage=\"{name}\"}}"));
        format!("{count:.0} {what} ({busy:.1} s busy)")
    };
    println!(
        "  the new server's ingest pipeline: {}, {}",
        stage("store", "store groups"),
        stage("index", "index commits")
    );
    println!(
        "  on the wire (TCP payload both ways, all protocols on the connection): {:.1} MiB = {:.3}x the raw envelope bytes ({:.1} MiB)",
        wire as f64 / 1_048_576.0,
        wire as f64 / raw as f64,
        raw as f64 / 1_048_576.0
    );
    let rounds = |n: &Node| {
        n.get("/api/v1/network")["peers"][0]["sync"]["rounds"]
            .as_u64()
            .unwrap_or(0)
    };
    empty.wait(
        "the back-fill round to end",
        Duration::from_secs(600),
        |n| rounds(n) >= 1,
    );
    let status = empty.get("/api/v1/network");
    println!(
        "  the back-fill round as the new server reported it: {}",
        status["peers"][0]["sync"]["last_round"]
    );
    let after = rounds(&empty);
    let before = tcp_bytes(full.p2p_port);
    empty.wait("an agreeing round", Duration::from_secs(120), |n| {
        rounds(n) > after
    });
    let later = tcp_bytes(full.p2p_port);
    let status = empty.get("/api/v1/network");
    let round = &status["peers"][0]["sync"]["last_round"];
    println!(
        "sync round between servers that agree ({objects} objects each): {} round trip(s), {} + {} bytes of sync messages, {} fetched; TCP payload meanwhile {} bytes (includes pings and gossip heartbeats)",
        round["round_trips"],
        round["bytes_sent"],
        round["bytes_received"],
        round["fetched"],
        (later.0 + later.1).saturating_sub(before.0 + before.1)
    );
}

fn main() {
    let args = args();
    println!("federation benchmark (souk-server processes on loopback)");
    propagation(args.samples);
    backfill(args.backfill);
}
