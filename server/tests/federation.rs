//! Federation with real `souk-server` processes on loopback: gossip along a line of servers,
//! a stopped server catching up by set reconciliation, a new empty server back-filling and
//! finding peers through Kademlia, a forging peer rejected and disconnected, replacements and
//! tombstones converging (also across servers on SQLite and PostgreSQL, one of them catching
//! up from its PostgreSQL store), and inbox records through the DHT. Every wait polls a condition
//! against a deadline; nothing sleeps a fixed time hoping that something happened.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PgDatabase, b64, free_port, http_client, listing, now, profile, seller, tombstone};
use serde_json::Value;
use souk_protocol::samples;

/// How long any one condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(90);

/// One running server.
struct Node {
    name: &'static str,
    child: Child,
    base: String,
    dir: std::path::PathBuf,
    peer_id: String,
    /// A dialable address ending in /p2p/<peer id>.
    address: String,
    client: reqwest::Client,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {} s waiting for: {what}",
            DEADLINE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Node {
    /// Starts a server with its data in `dir` (SQLite), joining through `bootstrap`.
    async fn start(
        name: &'static str,
        dir: &std::path::Path,
        bootstrap: &[&Node],
        discover: bool,
        sync_secs: u64,
    ) -> Node {
        Self::start_on(name, dir, None, bootstrap, discover, sync_secs).await
    }

    /// Starts a server with its search index in `dir` and its store in `database` (a
    /// `postgres://` URL), or in SQLite in `dir` when that is `None`.
    async fn start_on(
        name: &'static str,
        dir: &std::path::Path,
        database: Option<&str>,
        bootstrap: &[&Node],
        discover: bool,
        sync_secs: u64,
    ) -> Node {
        let port = free_port();
        let bootstrap: Vec<String> = bootstrap.iter().map(|n| n.address.clone()).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_souk-server"));
        command
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
            .args(["--grpc-addr", "127.0.0.1:0"])
            .args(["--p2p-discover", if discover { "true" } else { "false" }])
            .args(["--sync-interval-secs", &sync_secs.to_string()])
            .args([
                "--rate-limit-per-second",
                "100000",
                "--rate-limit-burst",
                "100000",
            ])
            .args(["--sqlite-sync", "normal"])
            .env("SOUK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !bootstrap.is_empty() {
            command.args(["--p2p-bootstrap", &bootstrap.join(",")]);
        }
        if let Some(database) = database {
            command.args(["--database-url", database]);
        }
        let child = command.spawn().expect("spawn souk-server");
        let base = format!("http://127.0.0.1:{port}");
        let client = http_client();
        let status: Value = wait_for(&format!("{name} to come up"), || {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let status: Value = client
                    .get(format!("{base}/api/v1/network"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let listening = status["listen_addrs"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty());
                listening.then_some(status)
            }
        })
        .await;
        let peer_id = status["peer_id"].as_str().expect("peer id").to_string();
        let address = format!(
            "{}/p2p/{peer_id}",
            status["listen_addrs"][0].as_str().expect("address")
        );
        Node {
            name,
            child,
            base,
            dir: dir.to_path_buf(),
            peer_id,
            address,
            client,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        match self.client.get(format!("{}{path}", self.base)).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn publish(&self, envelopes: &[Vec<u8>]) {
        for chunk in envelopes.chunks(500) {
            let body = serde_json::json!({
                "envelopes": chunk.iter().map(|e| b64(e)).collect::<Vec<_>>()
            });
            let response = self
                .client
                .post(format!("{}/api/v1/envelopes", self.base))
                .json(&body)
                .send()
                .await
                .expect("publish");
            assert!(
                response.status().is_success(),
                "{} refused a publish: {}",
                self.name,
                response.status()
            );
        }
    }

    async fn status(&self) -> Value {
        self.get("/api/v1/network").await.1
    }

    async fn objects(&self) -> u64 {
        self.status().await["objects"].as_u64().unwrap_or(0)
    }

    async fn search_total(&self, query: &str) -> u64 {
        let (_, page) = self
            .get(&format!("/api/v1/listings/search?q={query}&limit=1"))
            .await;
        page["total"].as_u64().unwrap_or(0)
    }

    async fn has(&self, id: &str) -> bool {
        self.get(&format!("/api/v1/listings/{id}")).await.0 == 200
    }

    async fn connected_to(&self, other: &Node) -> bool {
        self.status().await["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|p| p["peer_id"] == other.peer_id.as_str()))
    }

    /// Waits until this node reports a peer whose last sync round fetched something, and
    /// returns that peer's entry of `/api/v1/network`.
    async fn fetching_peer(&self) -> Value {
        wait_for(
            &format!("{} to report a sync round that fetched", self.name),
            || async {
                self.status().await["peers"].as_array().and_then(|peers| {
                    peers
                        .iter()
                        .find(|p| p["sync"]["last_round"]["fetched"].as_u64().unwrap_or(0) > 0)
                        .cloned()
                })
            },
        )
        .await
    }

    /// Whether this node knows `other` is subscribed to the envelope topic (gossip flows).
    async fn gossips_with(&self, other: &Node) -> bool {
        self.status().await["peers"]
            .as_array()
            .is_some_and(|peers| {
                peers
                    .iter()
                    .any(|p| p["peer_id"] == other.peer_id.as_str() && p["subscribed"] == true)
            })
    }

    /// Stops the process (SIGKILL: no goodbye to peers) and returns its data directory.
    fn kill(mut self) -> std::path::PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }
}

/// A line of three servers: A ← B ← C (each bootstraps from the one before; no discovery, so
/// each dials only its bootstrap peer), with gossip flowing both ways along the line.
async fn line(dirs: &[tempfile::TempDir], sync_secs: u64) -> (Node, Node, Node) {
    line_on(dirs, [None; 3], sync_secs).await
}

/// [`line`] with each server's store chosen: SQLite in its directory (`None`) or a database.
async fn line_on(
    dirs: &[tempfile::TempDir],
    databases: [Option<&str>; 3],
    sync_secs: u64,
) -> (Node, Node, Node) {
    let [da, db, dc] = databases;
    let a = Node::start_on("A", dirs[0].path(), da, &[], false, sync_secs).await;
    let b = Node::start_on("B", dirs[1].path(), db, &[&a], false, sync_secs).await;
    let c = Node::start_on("C", dirs[2].path(), dc, &[&b], false, sync_secs).await;
    wait_for("gossip along A–B–C", || async {
        (a.gossips_with(&b).await
            && b.gossips_with(&a).await
            && b.gossips_with(&c).await
            && c.gossips_with(&b).await)
            .then_some(())
    })
    .await;
    (a, b, c)
}

fn dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().expect("tmp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_published_at_one_end_of_a_line_is_found_at_the_other() {
    let dirs = dirs::<3>();
    // Sync only on connect (then once an hour): the listing, published after the line is up,
    // can only reach C by gossip relayed through B.
    let (a, _b, c) = line(&dirs, 3_600).await;
    let key = seller(1);
    let object = listing(&key, "copper-kettle", "hammered copperline kettle", 5);
    a.publish(&[object.envelope().bytes().to_vec()]).await;
    wait_for("the listing to be searchable at C", || async {
        (c.search_total("copperline").await == 1).then_some(())
    })
    .await;
    let (status, found) = c.get(&format!("/api/v1/listings/{}", object.id())).await;
    assert_eq!(status, 200);
    assert_eq!(
        found["envelope"],
        b64(object.envelope().bytes()),
        "stored byte for byte"
    );
    assert_eq!(a.status().await["gossip"]["published"].as_u64(), Some(1));
    assert_eq!(c.status().await["gossip"]["accepted"].as_u64(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_catches_up_and_a_new_one_back_fills_and_discovers_peers() {
    let dirs = dirs::<4>();
    let (a, b, c) = line(&dirs, 2).await;
    let key = seller(2);
    let first = listing(&key, "before", "beforestop lamp", 5);
    a.publish(&[first.envelope().bytes().to_vec()]).await;
    wait_for("C to hold the first listing", || async {
        c.has(&first.id().to_string()).await.then_some(())
    })
    .await;

    // (b) C stops; 1,000 listings are published at A; C restarts and converges.
    let c_dir = c.kill();
    let batch: Vec<_> = (0..1_000)
        .map(|i| {
            listing(
                &key,
                &format!("offline-{i}"),
                &format!("offlinebatch item {i}"),
                5,
            )
        })
        .collect();
    a.publish(
        &batch
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect::<Vec<_>>(),
    )
    .await;
    let expected = a.objects().await;
    assert_eq!(expected, 1_001, "A holds the first listing and the batch");
    wait_for("B to hold everything (gossip)", || async {
        (b.objects().await == expected).then_some(())
    })
    .await;
    // Restarted with a long interval, so the round on reconnect is the one it reports.
    let c = Node::start("C", &c_dir, &[&b], false, 3_600).await;
    wait_for("restarted C to converge", || async {
        (c.objects().await == expected).then_some(())
    })
    .await;
    for object in batch.iter().step_by(97) {
        assert!(
            c.has(&object.id().to_string()).await,
            "C has {}",
            object.id()
        );
    }
    assert_eq!(c.search_total("offlinebatch").await, 1_000);
    let rounds = c.fetching_peer().await;
    assert!(
        rounds["sync"]["last_round"]["fetched"].as_u64() >= Some(1_000),
        "C fetched the missing listings by id: {rounds}"
    );

    // (c) A new, empty server D joins through C, ends with the same set, and finds A and B
    // through Kademlia although it was only told about C.
    let d = Node::start("D", dirs[3].path(), &[&c], true, 2).await;
    wait_for("D to back-fill", || async {
        (d.objects().await == expected).then_some(())
    })
    .await;
    assert_eq!(d.search_total("offlinebatch").await, 1_000);
    wait_for("D to connect to A, found through Kademlia", || async {
        d.connected_to(&a).await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_and_tombstones_published_at_one_end_win_everywhere() {
    let dirs = dirs::<3>();
    let (a, _b, c) = line(&dirs, 2).await;
    replacements_and_tombstones_win_everywhere(&a, &c, 3).await;
}

/// The same line with B and C storing in PostgreSQL and A in SQLite: gossip, replacement,
/// withdrawal and set reconciliation do not depend on the store. Then C, killed, misses 300
/// listings and catches up from its PostgreSQL store's set when it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_sqlite_and_postgres_converge_and_a_postgres_one_catches_up() {
    let (pg_b, pg_c) = (PgDatabase::create().await, PgDatabase::create().await);
    let dirs = dirs::<3>();
    let (a, b, c) = line_on(&dirs, [None, Some(&pg_b.url), Some(&pg_c.url)], 2).await;
    replacements_and_tombstones_win_everywhere(&a, &c, 4).await;
    assert!(
        dirs[0].path().join("souk.db").exists(),
        "A stores in SQLite"
    );
    for dir in &dirs[1..] {
        assert!(
            !dir.path().join("souk.db").exists(),
            "B and C store in PostgreSQL"
        );
    }

    let before = a.objects().await;
    let c_dir = c.kill();
    let key = seller(5);
    let batch: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            listing(
                &key,
                &format!("missed-{i}"),
                &format!("missedbatch item {i}"),
                5,
            )
            .envelope()
            .bytes()
            .to_vec()
        })
        .collect();
    a.publish(&batch).await;
    let expected = a.objects().await;
    assert_eq!(expected, before + 300, "A stored the batch");
    wait_for("B to hold everything (gossip)", || async {
        (b.objects().await == expected).then_some(())
    })
    .await;
    let c = Node::start_on("C", &c_dir, Some(&pg_c.url), &[&b], false, 3_600).await;
    wait_for("restarted C to converge", || async {
        (c.objects().await == expected).then_some(())
    })
    .await;
    assert_eq!(c.search_total("missedbatch").await, 300);
    let round = c.fetching_peer().await;
    assert!(
        round["sync"]["last_round"]["fetched"].as_u64() >= Some(300),
        "C fetched what it missed by set reconciliation: {round}"
    );
}

/// Publishes two listings at `a`, replaces one and withdraws the other at `c`, and checks that
/// `a` ends up with `c`'s view, refuses a replay of the old version, and holds the same set.
async fn replacements_and_tombstones_win_everywhere(a: &Node, c: &Node, seller_index: u8) {
    let key = seller(seller_index);
    let old = listing(&key, "chair", "oakwood chair", 100);
    let doomed = listing(&key, "stool", "pinewood stool", 100);
    a.publish(&[
        old.envelope().bytes().to_vec(),
        doomed.envelope().bytes().to_vec(),
    ])
    .await;
    wait_for("both listings at C", || async {
        (c.has(&old.id().to_string()).await && c.search_total("pinewood").await == 1).then_some(())
    })
    .await;
    // At C: a newer version of the chair, and a withdrawal of the stool.
    let new = listing(&key, "chair", "walnutwood chair", 10);
    let gone = tombstone(&key, "stool", 10);
    c.publish(&[
        new.envelope().bytes().to_vec(),
        gone.envelope().bytes().to_vec(),
    ])
    .await;
    wait_for("A to show the new chair and no stool", || async {
        (a.search_total("walnutwood").await == 1
            && a.search_total("oakwood").await == 0
            && a.search_total("pinewood").await == 0)
            .then_some(())
    })
    .await;
    let seller_address = key.public_key().to_address();
    let (status, current) = a
        .get(&format!("/api/v1/stores/{seller_address}/listings/chair"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(current["id"], new.id().to_string());
    // The older chair sent again (a replay) does not come back anywhere.
    a.publish(&[old.envelope().bytes().to_vec()]).await;
    assert_eq!(a.search_total("oakwood").await, 0);
    // And the sets agree.
    let expected = a.objects().await;
    wait_for("C and A to agree", || async {
        (c.objects().await == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_puts_its_inbox_records_back() {
    // Records live in Kademlia's memory. A server that stores the profile puts the record back
    // when it starts, so a restart (here of a server alone, whose peers could not return it)
    // loses no inbox record.
    let dirs = dirs::<1>();
    let a = Node::start("A", dirs[0].path(), &[], false, 3_600).await;
    let key = seller(6);
    let person = profile(&key, |p| {
        p.inbox_servers = vec!["https://inbox-three.example".into()];
    });
    a.publish(&[person.envelope().bytes().to_vec()]).await;
    let address = key.public_key().to_address();
    let path = format!("/api/v1/network/inbox/{address}");
    wait_for("A to hold the record", || async {
        (a.get(&path).await.0 == 200).then_some(())
    })
    .await;
    let dir = a.kill();
    let a = Node::start("A again", &dir, &[], false, 3_600).await;
    let (status, record) = a.get(&path).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["envelope"], b64(person.envelope().bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_records_are_found_through_the_dht_and_checked() {
    let dirs = dirs::<3>();
    let (a, _b, c) = line(&dirs, 2).await;
    let key = seller(4);
    let person = profile(&key, |p| {
        p.inbox_servers = vec![
            "https://inbox-one.example".into(),
            "https://inbox-two.example".into(),
        ];
    });
    a.publish(&[person.envelope().bytes().to_vec()]).await;
    let address = key.public_key().to_address();
    let record = wait_for("C to find the inbox record", || async {
        let (status, body) = c.get(&format!("/api/v1/network/inbox/{address}")).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(
        record["servers"],
        serde_json::json!(["https://inbox-one.example", "https://inbox-two.example"])
    );
    assert_eq!(record["envelope"], b64(person.envelope().bytes()));
    // Nobody published one for this person.
    let stranger = seller(5).public_key().to_address();
    assert_eq!(
        c.get(&format!("/api/v1/network/inbox/{stranger}")).await.0,
        404
    );
    assert_eq!(c.get("/api/v1/network/inbox/not-a-key").await.0, 400);
}

/// A peer that speaks gossipsub like a Souk server but publishes forged and garbage envelopes.
mod rogue {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::gossipsub::{self, IdentTopic, MessageId};
    use libp2p::{Multiaddr, Swarm, identify, noise, tcp, yamux};
    use sha2::{Digest, Sha256};

    #[derive(libp2p::swarm::NetworkBehaviour)]
    pub struct Behaviour {
        pub identify: identify::Behaviour,
        pub gossipsub: gossipsub::Behaviour,
    }

    pub fn swarm() -> Swarm<Behaviour> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .message_id_fn(|m: &gossipsub::Message| {
                        MessageId::from(Sha256::digest(&m.data).to_vec())
                    })
                    .heartbeat_interval(Duration::from_millis(500))
                    .build()
                    .expect("config");
                let mut gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .expect("gossipsub");
                gossipsub
                    .subscribe(&IdentTopic::new("souk/v1/envelopes"))
                    .expect("subscribe");
                Behaviour {
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/souk/id/1.0.0".into(),
                        key.public(),
                    )),
                    gossipsub,
                }
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// Dials `address`, then publishes `messages` one by one as soon as the server's
    /// subscription is known, driving the swarm meanwhile. Returns how many were sent and
    /// whether the server closed the connection before the deadline.
    pub async fn attack(address: Multiaddr, messages: Vec<Vec<u8>>) -> (usize, bool) {
        let mut swarm = swarm();
        swarm.dial(address).expect("dial");
        let deadline = tokio::time::Instant::now() + super::DEADLINE;
        let mut sent = 0;
        let mut was_connected = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    match event {
                        libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => was_connected = true,
                        libp2p::swarm::SwarmEvent::ConnectionClosed { num_established: 0, .. } if was_connected => {
                            return (sent, true);
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    if sent < messages.len() {
                        let topic = IdentTopic::new("souk/v1/envelopes");
                        if swarm.behaviour_mut().gossipsub.publish(topic, messages[sent].clone()).is_ok() {
                            sent += 1;
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => return (sent, false),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gossiping_forgeries_stores_nothing_anywhere_and_is_cut_off() {
    let dirs = dirs::<2>();
    let a = Node::start("A", dirs[0].path(), &[], false, 2).await;
    let b = Node::start("B", dirs[1].path(), &[&a], false, 2).await;
    wait_for("gossip between A and B", || async {
        (a.gossips_with(&b).await && b.gossips_with(&a).await).then_some(())
    })
    .await;
    let key = seller(6);
    let mut forged_ids = Vec::new();
    let mut messages = Vec::new();
    for i in 0..6 {
        let object = listing(&key, &format!("forged-{i}"), "forgedgoods", 5);
        let mut bytes = object.envelope().bytes().to_vec();
        // Flip a bit of the signature (the last bytes of the envelope): a forgery.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        forged_ids.push(souk_protocol::ObjectId::of(&bytes).to_string());
        messages.push(bytes);
        if i % 2 == 0 {
            messages.push(format!("garbage {i}").into_bytes());
        }
    }
    // Signed by the seller but invalid (a listing dated in the future beyond the allowed skew).
    let mut future = samples::listing(now() + 86_400, "from-the-future", None);
    future.title = "forgedgoods".into();
    messages.push(souk_protocol::RawEnvelope::sign_unchecked(
        &key,
        souk_protocol::Kind::Listing as i32,
        prost::Message::encode_to_vec(&future),
    ));
    let address: libp2p::Multiaddr = a.address.parse().expect("address");
    let (sent, cut_off) = rogue::attack(address, messages).await;
    assert!(sent >= 3, "the rogue got some messages out ({sent})");
    assert!(cut_off, "A disconnected the forging peer");
    // Nothing forged is stored at A or at B, and A's REST API answered throughout.
    for id in &forged_ids {
        assert!(!a.has(id).await, "A stored a forgery");
        assert!(!b.has(id).await, "B stored a forgery");
    }
    assert_eq!(a.search_total("forgedgoods").await, 0);
    let status = a.status().await;
    assert!(
        status["gossip"]["rejected"].as_u64() >= Some(3),
        "A rejected the forgeries: {status}"
    );
    assert!(status["gossip"]["blocked_peers"].as_u64() >= Some(1));
    assert_eq!(
        b.status().await["gossip"]["accepted"].as_u64(),
        Some(0),
        "nothing was forwarded"
    );
}
