//! The peer-to-peer network: every `souk-server` is a libp2p peer.
//!
//! - **Transports**: TCP (noise + yamux) and QUIC; a stable ed25519 peer key in
//!   `<data-dir>/p2p-key`; connection limits; misbehaving peers are blocked for a while.
//! - **Gossip** (gossipsub, topic [`TOPIC`]): every envelope a local client publishes is
//!   gossiped; every envelope received goes through [`Ingestor::ingest_from`] — the very checks
//!   REST uses — before it is accepted and forwarded. Invalid envelopes are rejected, which costs
//!   the sender gossipsub score; below [`DISCONNECT_SCORE`] the peer is disconnected and
//!   blocked for [`BLOCK_TIME`]. Message ids are the envelope's object id (SHA-256 of its
//!   bytes), so duplicates are suppressed by content.
//! - **Sync** ([`codec::PROTOCOL`]): range-based set reconciliation (negentropy) over the set of
//!   current objects ([`set::SyncSet`]) with each peer on connect and every sync interval; only
//!   what is missing moves, in bounded batches, through the same ingest path ([`sync`]).
//! - **Kademlia**: peer discovery beyond the bootstrap list, and inbox records ([`inbox`]).
//!
//! The swarm lives in one task (started by [`start`]); everything else talks to it through [`Network`]
//! (commands over a bounded channel). Work that may take long (ingest, store reads) runs in
//! spawned tasks that report back, so the swarm loop never waits on the database.

pub mod codec;
pub mod inbox;
pub mod set;
pub mod sync;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::kad::{self, GetRecordOk, QueryResult, Record, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify,
    identity, noise, ping, tcp, yamux,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use souk_protocol::{PublicKey, ValidationContext, limits::MAX_ENVELOPE_BYTES, pb};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::P2pConfig;
use crate::ingest::{IngestResult, Ingestor, Origin, Published};
use crate::store::Store;

use self::codec::SyncCodec;
use self::inbox::InboxRecord;
use self::set::SyncSet;

/// The gossipsub topic every envelope is published on.
pub const TOPIC: &str = "souk/v1/envelopes";
/// The Kademlia protocol (a private DHT of Souk servers, not the public IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/souk/kad/1.0.0");
/// The identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/souk/id/1.0.0";
/// A peer whose gossipsub score falls below this is disconnected and blocked.
pub const DISCONNECT_SCORE: f64 = -80.0;
/// How long a disconnected misbehaving peer stays blocked.
pub const BLOCK_TIME: Duration = Duration::from_secs(10 * 60);
/// Gossip messages being checked at once; beyond this, new ones are ignored (not forwarded,
/// no penalty) and left to sync.
const GOSSIP_IN_FLIGHT: usize = 256;
/// Sync requests from peers being answered at once; beyond this a peer is told `busy`.
const SYNC_RESPONDERS: usize = 4;
/// Sync rounds this server runs at once (each with a different peer).
const SYNC_ROUNDS: usize = 2;
/// Longest a sync round may take (a back-fill of millions of objects fits; a peer that stalls
/// a round forever does not hold a round slot forever).
const ROUND_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
/// How often bootstrap peers that are not connected are dialled again.
const REDIAL_INTERVAL: Duration = Duration::from_secs(10);

/// A command for the swarm task.
enum Command {
    /// Send a sync request and hand the answer back.
    Request {
        peer: PeerId,
        request: pb::SyncRequest,
        reply: oneshot::Sender<Result<pb::SyncResponse, String>>,
    },
    /// Look up an inbox record in the DHT.
    FindInbox {
        person: PublicKey,
        reply: oneshot::Sender<Vec<InboxRecord>>,
    },
    /// Report the network's state.
    Status {
        reply: oneshot::Sender<NetworkStatus>,
    },
}

/// Handle to the running network; cheap to clone.
#[derive(Clone, Debug)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Request { peer, .. } => write!(f, "Request({peer})"),
            Command::FindInbox { person, .. } => write!(f, "FindInbox({person})"),
            Command::Status { .. } => f.write_str("Status"),
        }
    }
}

/// The network's state, for `GET /api/v1/network`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NetworkStatus {
    /// Whether this server takes part in the network.
    pub enabled: bool,
    /// This server's peer id.
    pub peer_id: String,
    /// Addresses this server listens on (dial one of these, with `/p2p/<peer_id>`).
    pub listen_addrs: Vec<String>,
    /// Addresses announced to peers.
    pub external_addrs: Vec<String>,
    /// Current objects in the reconciled set.
    pub objects: usize,
    /// Connected peers.
    pub peers: Vec<PeerStatus>,
    /// Peers in the Kademlia routing table.
    pub known_peers: usize,
    /// Gossip counters since start.
    pub gossip: GossipCounters,
    /// Bytes of sync messages this server sent and received since start (payload and length
    /// prefixes, both as initiator and as responder).
    pub sync_bytes: SyncBytes,
}

/// Sync traffic totals.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncBytes {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
}

/// One connected peer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PeerStatus {
    /// Peer id.
    pub peer_id: String,
    /// Remote addresses of the open connections.
    pub addresses: Vec<String>,
    /// Agent string from identify (e.g. `souk-server/0.1.0`).
    pub agent: Option<String>,
    /// Last measured round-trip time in milliseconds.
    pub latency_ms: Option<f64>,
    /// This server's gossipsub score of the peer.
    pub score: Option<f64>,
    /// Whether the peer is subscribed to the envelope topic (gossip flows to it).
    pub subscribed: bool,
    /// Invalid envelopes received from the peer.
    pub invalid_messages: u64,
    /// Sync with this peer.
    pub sync: SyncStatus,
}

/// Sync state with one peer.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// `idle`, `syncing`, `failed` or `unsupported` (the peer does not speak `/souk/sync/1`).
    pub state: &'static str,
    /// Rounds completed.
    pub rounds: u64,
    /// Unix time the last round ended (successfully or not).
    pub last_sync: Option<u64>,
    /// Why the last round failed.
    pub last_error: Option<String>,
    /// The last successful round.
    pub last_round: Option<sync::RoundReport>,
    /// Unix time the last successful round ended.
    pub last_success: Option<u64>,
}

/// Gossip counters.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct GossipCounters {
    /// Envelopes this server published.
    pub published: u64,
    /// Messages received and accepted (stored, forwarded).
    pub accepted: u64,
    /// Messages already stored, or stale (not forwarded, no penalty).
    pub ignored: u64,
    /// Messages refused by the protocol's checks (the sender is penalised).
    pub rejected: u64,
    /// Messages dropped because too many were being checked.
    pub busy: u64,
    /// Peers disconnected and blocked for bad behaviour.
    pub blocked_peers: u64,
}

impl NetworkStatus {
    /// The status of a server with the network switched off.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            peer_id: String::new(),
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            objects: 0,
            peers: Vec::new(),
            known_peers: 0,
            gossip: GossipCounters::default(),
            sync_bytes: SyncBytes::default(),
        }
    }
}

#[derive(Debug, Default)]
struct PeerInfo {
    connections: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
    agent: Option<String>,
    latency: Option<Duration>,
    invalid_messages: u64,
    sync: SyncStatus,
    syncing: bool,
    unsupported: bool,
    last_attempt: Option<Instant>,
}

/// Peers, shared by the swarm task and sync rounds.
type Peers = Arc<Mutex<HashMap<PeerId, PeerInfo>>>;

fn lock(peers: &Peers) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerInfo>> {
    peers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
}

/// Loads the peer key from `path`, or creates one (mode 0600) if there is none.
///
/// # Errors
/// If the file cannot be read or written, or holds no valid key.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<identity::Keypair> {
    if path.exists() {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the peer key {}", path.display()))?;
        return identity::Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} does not hold a valid peer key", path.display()));
    }
    let key = identity::Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .context("cannot encode the new peer key")?;
    let temporary = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot write the peer key {}", path.display()))?;
    Ok(key)
}

fn gossipsub_behaviour(key: &identity::Keypair) -> anyhow::Result<gossipsub::Behaviour> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // The message id is the object id: SHA-256 of the envelope bytes.
        .message_id_fn(|message: &gossipsub::Message| {
            MessageId::from(Sha256::digest(&message.data).to_vec())
        })
        .max_transmit_size(MAX_ENVELOPE_BYTES + 4 * 1024)
        .heartbeat_interval(Duration::from_millis(700))
        // Checking a message waits for the writer's commit; keep it in the cache long enough
        // (12 heartbeats ≈ 8 s) for the verdict to arrive under load.
        .history_length(12)
        .history_gossip(3)
        // Bounded per-peer queues (rust-libp2p gossipsub ran nodes out of memory without them).
        .connection_handler_queue_len(5_000)
        .duplicate_cache_time(Duration::from_secs(120))
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
    let topic = IdentTopic::new(TOPIC);
    let mut params = gossipsub::PeerScoreParams {
        // Servers are few and several may share an address (one operator, or tests on
        // loopback); the penalty that matters here is for invalid envelopes.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // Each invalid envelope counts; the penalty is the square of the (decaying) count.
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..gossipsub::TopicScoreParams::default()
    };
    params.topics.insert(topic.hash(), topic_params);
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: DISCONNECT_SCORE,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    behaviour
        .with_peer_score(params, thresholds)
        .map_err(|e| anyhow::anyhow!("gossipsub scoring: {e}"))?;
    behaviour
        .subscribe(&topic)
        .map_err(|e| anyhow::anyhow!("gossipsub subscribe: {e}"))?;
    Ok(behaviour)
}

fn behaviour(
    key: &identity::Keypair,
    config: &P2pConfig,
    traffic: Arc<codec::Traffic>,
) -> anyhow::Result<Behaviour> {
    let peer_id = key.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(config.max_connections / 2 + 1))
        .with_max_pending_outgoing(Some(config.max_connections / 2 + 1));
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_query_timeout(Duration::from_secs(10))
        .set_max_packet_size(MAX_ENVELOPE_BYTES + 8 * 1024)
        .set_record_ttl(Some(Duration::from_secs(7 * 24 * 3600)))
        .set_publication_interval(Some(Duration::from_secs(12 * 3600)));
    let store = MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_records: 20_000,
            // The store refuses values of this size or more.
            max_value_bytes: MAX_ENVELOPE_BYTES + 1,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
    kad.set_mode(Some(kad::Mode::Server));
    let sync = request_response::Behaviour::with_codec(
        SyncCodec { traffic },
        [(codec::PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(60))
            .with_max_concurrent_streams(16),
    );
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        blocked: allow_block_list::Behaviour::default(),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("souk-server/{}", env!("CARGO_PKG_VERSION"))),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(10))),
        kad,
        gossipsub: gossipsub_behaviour(key)?,
        sync,
    })
}

/// What the network needs of the rest of the server.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The store (sync answers read it).
    pub store: Store,
    /// The one ingest path.
    pub ingestor: Ingestor,
    /// The reconciled set, kept by the ingest writer.
    pub set: Arc<SyncSet>,
}

/// Inbox records a server puts back into the DHT when it starts: its newest stored inbox
/// profiles, up to this many (the record store holds 20,000).
const INBOX_RECORDS_AT_START: i64 = 10_000;

/// Starts the network: loads the peer key, listens, dials the bootstrap peers, puts back the
/// inbox records of the profiles it stores, and runs the swarm in a task until the process
/// ends.
///
/// # Errors
/// If the key cannot be loaded, no listen address can be bound, or the store cannot be read.
pub async fn start(config: &P2pConfig, data_dir: &Path, parts: Parts) -> anyhow::Result<Network> {
    let key = load_or_create_key(&data_dir.join("p2p-key"))?;
    let peer_id = key.public().to_peer_id();
    let traffic = Arc::new(codec::Traffic::default());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .context("TCP transport")?
        .with_quic()
        .with_dns()
        .context("DNS resolver")?
        .with_behaviour(|key| behaviour(key, config, Arc::clone(&traffic)).map_err(Into::into))
        .map_err(|e| anyhow::anyhow!("network behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for address in &config.listen {
        swarm
            .listen_on(address.clone())
            .with_context(|| format!("cannot listen on {address}"))?;
    }
    for address in &config.external {
        swarm.add_external_address(address.clone());
    }
    let mut bootstrap = Vec::new();
    for address in &config.bootstrap {
        if let Some(Protocol::P2p(peer)) = address.iter().last() {
            if peer == peer_id {
                continue;
            }
            swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, address.clone());
            bootstrap.push((peer, address.clone()));
            if let Err(error) = swarm.dial(address.clone()) {
                tracing::warn!(%address, %error, "cannot dial bootstrap peer");
            }
        }
    }
    // Inbox records live in Kademlia's memory: after a restart this server would hold none of
    // those it was given. Records are self-authenticating, so it puts back the newest inbox
    // profiles it stores (checked like any record); peers get them as they join.
    let mut restored = 0;
    for bytes in parts
        .store
        .newest_profiles(INBOX_RECORDS_AT_START)
        .await
        .context("cannot read the stored profiles")?
    {
        // Verified when they were stored: decoded, not verified again (peers check what they
        // are given).
        let Ok((envelope, object)) = crate::store::decode_stored(&bytes) else {
            continue;
        };
        if !inbox::is_inbox_profile(&object) {
            continue;
        }
        let record = Record::new(inbox::record_key(&envelope.signer()), bytes);
        if swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One)
            .is_ok()
        {
            restored += 1;
        }
    }
    if restored > 0 {
        tracing::info!(records = restored, "inbox records put back into the DHT");
    }
    let (commands, queue) = mpsc::channel(256);
    let (published, outbox) = mpsc::channel(4_096);
    parts.ingestor.publish_to(published);
    let network = Network { commands, peer_id };
    let task = Runner {
        swarm,
        parts,
        network: network.clone(),
        config: config.clone(),
        bootstrap,
        peers: Arc::default(),
        listen: Vec::new(),
        gossip: GossipCounters::default(),
        gossip_slots: Arc::new(Semaphore::new(GOSSIP_IN_FLIGHT)),
        responders: Arc::new(Semaphore::new(SYNC_RESPONDERS)),
        rounds: Arc::new(Semaphore::new(SYNC_ROUNDS)),
        pending_requests: HashMap::new(),
        pending_finds: HashMap::new(),
        blocked: HashMap::new(),
        futile: Arc::default(),
        traffic,
    };
    tokio::spawn(task.run(queue, outbox));
    Ok(network)
}

impl Network {
    /// This server's peer id.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The network's state.
    pub async fn status(&self) -> Option<NetworkStatus> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Status { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Looks `person`'s inbox record up in the DHT (this node's own copy included) and returns
    /// the newest valid one. Invalid records found along the way are ignored.
    pub async fn find_inbox(&self, person: PublicKey) -> Option<InboxRecord> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::FindInbox { person, reply })
            .await
            .ok()?;
        let records = tokio::time::timeout(Duration::from_secs(15), answer)
            .await
            .ok()?
            .ok()?;
        inbox::newest(records)
    }

    /// Sends one sync request to `peer`.
    pub(crate) async fn request(
        &self,
        peer: PeerId,
        request: pb::SyncRequest,
    ) -> Result<pb::SyncResponse, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| "the network is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the network is shutting down".to_string())?
    }
}

/// The outcome of checking one gossip message.
struct Validated {
    message_id: MessageId,
    source: PeerId,
    acceptance: MessageAcceptance,
}

struct Runner {
    swarm: Swarm<Behaviour>,
    parts: Parts,
    network: Network,
    config: P2pConfig,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    peers: Peers,
    listen: Vec<Multiaddr>,
    gossip: GossipCounters,
    gossip_slots: Arc<Semaphore>,
    responders: Arc<Semaphore>,
    rounds: Arc<Semaphore>,
    pending_requests: HashMap<
        request_response::OutboundRequestId,
        oneshot::Sender<Result<pb::SyncResponse, String>>,
    >,
    pending_finds: HashMap<kad::QueryId, (Vec<InboxRecord>, oneshot::Sender<Vec<InboxRecord>>)>,
    blocked: HashMap<PeerId, Instant>,
    futile: Arc<Mutex<HashSet<[u8; 32]>>>,
    traffic: Arc<codec::Traffic>,
}

type Responder = (
    request_response::ResponseChannel<pb::SyncResponse>,
    pb::SyncResponse,
);

impl Runner {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Command>,
        mut outbox: mpsc::Receiver<Published>,
    ) {
        let (validated_tx, mut validated) = mpsc::channel::<Validated>(GOSSIP_IN_FLIGHT);
        let (responses_tx, mut responses) = mpsc::channel::<Responder>(SYNC_RESPONDERS * 2);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_redial = Instant::now();
        let mut bootstrapped = false;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_event(event, &validated_tx, &responses_tx);
                }
                Some(command) = queue.recv() => self.on_command(command),
                Some(published) = outbox.recv() => self.publish(published),
                Some(result) = validated.recv() => self.on_validated(result),
                Some((channel, response)) = responses.recv() => {
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, response);
                }
                _ = tick.tick() => {
                    if !bootstrapped && self.connected_count() > 0 {
                        bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                    }
                    if last_redial.elapsed() >= REDIAL_INTERVAL {
                        last_redial = Instant::now();
                        self.redial();
                    }
                    self.unblock_expired();
                    self.schedule_sync();
                }
            }
        }
    }

    fn connected_count(&self) -> usize {
        self.swarm.connected_peers().count()
    }

    fn redial(&mut self) {
        for (peer, address) in self.bootstrap.clone() {
            if !self.swarm.is_connected(&peer) && !self.blocked.contains_key(&peer) {
                let _ = self.swarm.dial(address);
            }
        }
    }

    fn unblock_expired(&mut self) {
        let expired: Vec<PeerId> = self
            .blocked
            .iter()
            .filter(|(_, since)| since.elapsed() >= BLOCK_TIME)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.blocked.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .remove_blacklisted_peer(&peer);
        }
    }

    fn block(&mut self, peer: PeerId, why: &str) {
        if self.blocked.insert(peer, Instant::now()).is_none() {
            tracing::warn!(%peer, why, "blocking peer for {} s", BLOCK_TIME.as_secs());
            self.gossip.blocked_peers += 1;
            metrics::counter!("souk_p2p_blocked_total").increment(1);
        }
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn schedule_sync(&mut self) {
        let interval = self.config.sync_interval;
        let due: Vec<PeerId> = {
            let mut peers = lock(&self.peers);
            let mut due = Vec::new();
            for (peer, info) in peers.iter_mut() {
                if info.connections.is_empty() || info.syncing || info.unsupported {
                    continue;
                }
                if info.last_attempt.is_some_and(|t| t.elapsed() < interval) {
                    continue;
                }
                info.syncing = true;
                info.sync.state = "syncing";
                info.last_attempt = Some(Instant::now());
                due.push(*peer);
            }
            due
        };
        for peer in due {
            let context = sync::Round {
                network: self.network.clone(),
                parts: self.parts.clone(),
                futile: Arc::clone(&self.futile),
            };
            let peers = Arc::clone(&self.peers);
            let rounds = Arc::clone(&self.rounds);
            tokio::spawn(async move {
                let report = match rounds.acquire_owned().await {
                    Ok(_permit) => {
                        use futures::FutureExt;
                        let round = tokio::time::timeout(ROUND_TIMEOUT, context.run(peer));
                        match std::panic::AssertUnwindSafe(round).catch_unwind().await {
                            Ok(Ok(report)) => report,
                            Ok(Err(_)) => Err(sync::RoundError::Transport(format!(
                                "the round took longer than {} s",
                                ROUND_TIMEOUT.as_secs()
                            ))),
                            Err(_) => Err(sync::RoundError::Transport("the round panicked".into())),
                        }
                    }
                    Err(_) => return,
                };
                let mut peers = lock(&peers);
                let Some(info) = peers.get_mut(&peer) else {
                    return;
                };
                info.syncing = false;
                info.sync.last_sync = Some(unix_now());
                // Sync runs again a full interval after a round *ends*.
                info.last_attempt = Some(Instant::now());
                match report {
                    Ok(report) => {
                        metrics::counter!("souk_sync_rounds_total", "result" => "ok").increment(1);
                        info.sync.state = "idle";
                        info.sync.rounds += 1;
                        info.sync.last_error = None;
                        info.sync.last_round = Some(report);
                        info.sync.last_success = info.sync.last_sync;
                    }
                    Err(sync::RoundError::Unsupported) => {
                        info.unsupported = true;
                        info.sync.state = "unsupported";
                    }
                    Err(error) => {
                        metrics::counter!("souk_sync_rounds_total", "result" => "failed")
                            .increment(1);
                        tracing::info!(%peer, %error, "sync round failed");
                        info.sync.state = "failed";
                        info.sync.last_error = Some(error.to_string());
                    }
                }
            });
        }
    }

    fn publish(&mut self, published: Published) {
        let topic = IdentTopic::new(TOPIC);
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, published.bytes.clone())
        {
            Ok(_) => {
                self.gossip.published += 1;
                metrics::counter!("souk_gossip_published_total").increment(1);
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(error) => tracing::debug!(%error, "gossip publish"),
        }
        if inbox::is_inbox_profile(&published.object) {
            let record = Record::new(inbox::record_key(&published.signer), published.bytes);
            // Stored locally too; kad republishes it while this server runs, and it is put
            // again whenever a new peer enters the routing table.
            let kad = &mut self.swarm.behaviour_mut().kad;
            if let Err(error) = kad.put_record(record, kad::Quorum::One) {
                tracing::debug!(?error, "inbox record put");
            }
        }
    }

    fn on_validated(&mut self, result: Validated) {
        let Validated {
            message_id,
            source,
            acceptance,
        } = result;
        let rejected = matches!(acceptance, MessageAcceptance::Reject);
        match acceptance {
            MessageAcceptance::Accept => self.gossip.accepted += 1,
            MessageAcceptance::Ignore => self.gossip.ignored += 1,
            MessageAcceptance::Reject => self.gossip.rejected += 1,
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &source, acceptance);
        if rejected {
            let score = self.swarm.behaviour().gossipsub.peer_score(&source);
            if let Some(info) = lock(&self.peers).get_mut(&source) {
                info.invalid_messages += 1;
            }
            if score.is_some_and(|s| s < DISCONNECT_SCORE) {
                self.block(source, "gossip score below the disconnect threshold");
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending_requests.insert(id, reply);
            }
            Command::FindInbox { person, reply } => {
                let key = kad::RecordKey::new(&inbox::record_key(&person));
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.pending_finds.insert(id, (Vec::new(), reply));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn status(&mut self) -> NetworkStatus {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let subscribed: HashSet<PeerId> = gossipsub
            .all_peers()
            .filter(|(_, topics)| !topics.is_empty())
            .map(|(peer, _)| *peer)
            .collect();
        let peers = lock(&self.peers);
        let mut list: Vec<PeerStatus> = peers
            .iter()
            .filter(|(_, info)| !info.connections.is_empty())
            .map(|(peer, info)| PeerStatus {
                peer_id: peer.to_string(),
                addresses: info.connections.values().map(ToString::to_string).collect(),
                agent: info.agent.clone(),
                latency_ms: info.latency.map(|d| d.as_secs_f64() * 1_000.0),
                score: gossipsub.peer_score(peer),
                subscribed: subscribed.contains(peer),
                invalid_messages: info.invalid_messages,
                sync: SyncStatus {
                    state: if info.sync.state.is_empty() {
                        "idle"
                    } else {
                        info.sync.state
                    },
                    ..info.sync.clone()
                },
            })
            .collect();
        drop(peers);
        list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let known_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        NetworkStatus {
            enabled: true,
            peer_id: self.network.peer_id.to_string(),
            listen_addrs: self.listen.iter().map(ToString::to_string).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(ToString::to_string)
                .collect(),
            objects: self.parts.set.len(),
            peers: list,
            known_peers,
            gossip: self.gossip.clone(),
            sync_bytes: SyncBytes {
                sent: self.traffic.sent.load(std::sync::atomic::Ordering::Relaxed),
                received: self
                    .traffic
                    .received
                    .load(std::sync::atomic::Ordering::Relaxed),
            },
        }
    }

    fn on_event(
        &mut self,
        event: SwarmEvent<BehaviourEvent>,
        validated: &mpsc::Sender<Validated>,
        responses: &mpsc::Sender<Responder>,
    ) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, peer_id = %self.network.peer_id, "p2p listening");
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.blocked.contains_key(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                // Without discovery this server keeps only the connections it was told to
                // make (Kademlia lookups dial whomever peers name; those are closed at once).
                // Peers may still dial in.
                if !self.config.discover
                    && endpoint.is_dialer()
                    && !self.bootstrap.iter().any(|(peer, _)| *peer == peer_id)
                {
                    let _ = self.swarm.close_connection(connection_id);
                    return;
                }
                let address = endpoint.get_remote_address().clone();
                let first = {
                    let mut peers = lock(&self.peers);
                    let info = peers.entry(peer_id).or_default();
                    info.connections.insert(connection_id, address);
                    let first = info.connections.len() == 1;
                    metrics::gauge!("souk_p2p_peers")
                        .set(peers.values().filter(|i| !i.connections.is_empty()).count() as f64);
                    first
                };
                // Sync with a peer as soon as it connects, not at the next tick (up to 500 ms
                // later): a new server's back-fill starts at once. A peer that turns out not to
                // speak the protocol is marked by its round's failure (identify may not have
                // told yet).
                if first {
                    self.schedule_sync();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                let mut peers = lock(&self.peers);
                if let Some(info) = peers.get_mut(&peer_id) {
                    info.connections.remove(&connection_id);
                    // Forget a peer with no connection left (its round, if one runs, finds
                    // no entry and reports nowhere); a reconnect starts afresh.
                    if info.connections.is_empty() && !info.syncing {
                        peers.remove(&peer_id);
                    }
                }
                metrics::gauge!("souk_p2p_peers")
                    .set(peers.values().filter(|i| !i.connections.is_empty()).count() as f64);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event, validated, responses),
            _ => {}
        }
    }

    fn on_behaviour(
        &mut self,
        event: BehaviourEvent,
        validated: &mpsc::Sender<Validated>,
        responses: &mpsc::Sender<Responder>,
    ) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
                let speaks_sync = info.protocols.contains(&codec::PROTOCOL);
                {
                    let mut peers = lock(&self.peers);
                    let entry = peers.entry(peer_id).or_default();
                    entry.agent = Some(info.agent_version.clone());
                    if !speaks_sync {
                        entry.unsupported = true;
                        entry.sync.state = "unsupported";
                    }
                }
                if speaks_kad {
                    for address in info.listen_addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, address);
                    }
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(info) = lock(&self.peers).get_mut(&peer) {
                    info.latency = Some(rtt);
                }
            }
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message.data, validated),
            BehaviourEvent::Sync(event) => self.on_sync(event, responses),
            _ => {}
        }
    }

    fn on_gossip(
        &mut self,
        source: PeerId,
        message_id: MessageId,
        data: Vec<u8>,
        validated: &mpsc::Sender<Validated>,
    ) {
        let Ok(permit) = Arc::clone(&self.gossip_slots).try_acquire_owned() else {
            self.gossip.busy += 1;
            metrics::counter!("souk_gossip_messages_total", "result" => "busy").increment(1);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &source, MessageAcceptance::Ignore);
            return;
        };
        let ingestor = self.parts.ingestor.clone();
        let validated = validated.clone();
        tokio::spawn(async move {
            let acceptance = match ingestor.ingest_from(Origin::Gossip, vec![data]).await {
                Ok(results) => results
                    .first()
                    .map_or(MessageAcceptance::Ignore, acceptance),
                // Our own failure (disk full, shutting down) is not the peer's fault.
                Err(_) => MessageAcceptance::Ignore,
            };
            drop(permit);
            let _ = validated
                .send(Validated {
                    message_id,
                    source,
                    acceptance,
                })
                .await;
        });
    }

    fn on_sync(
        &mut self,
        event: request_response::Event<pb::SyncRequest, pb::SyncResponse>,
        responses: &mpsc::Sender<Responder>,
    ) {
        match event {
            request_response::Event::Message { message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Ok(permit) = Arc::clone(&self.responders).try_acquire_owned() else {
                        let _ = self.swarm.behaviour_mut().sync.send_response(
                            channel,
                            sync::error_response("busy", "too many sync requests; retry later"),
                        );
                        return;
                    };
                    let parts = self.parts.clone();
                    let responses = responses.clone();
                    tokio::spawn(async move {
                        let response = sync::answer(&parts, request).await;
                        drop(permit);
                        let _ = responses.send((channel, response)).await;
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let text = match error {
                        request_response::OutboundFailure::UnsupportedProtocols => {
                            sync::UNSUPPORTED.to_string()
                        }
                        other => other.to_string(),
                    };
                    let _ = reply.send(Err(text));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync request from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Puts the inbox records this server published again (after a new peer entered the routing
    /// table: the first put may have found nobody to store it).
    fn reput_own_records(&mut self) {
        let own = Some(self.network.peer_id);
        let kad = &mut self.swarm.behaviour_mut().kad;
        let records: Vec<Record> = kad::store::RecordStore::records(kad.store_mut())
            .filter(|r| r.publisher == own)
            .take(1_000)
            .map(std::borrow::Cow::into_owned)
            .collect();
        for record in records {
            let _ = kad.put_record(record, kad::Quorum::One);
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                let ctx = ValidationContext::now();
                match inbox::check_record(record.key.as_ref(), &record.value, &ctx) {
                    Ok(checked) => {
                        let store = self.swarm.behaviour_mut().kad.store_mut();
                        let newer = match kad::store::RecordStore::get(store, &record.key) {
                            Some(existing) => {
                                inbox::check_record(existing.key.as_ref(), &existing.value, &ctx)
                                    .map_or(true, |old| {
                                        inbox::newest([old, checked.clone()]).as_ref()
                                            == Some(&checked)
                                    })
                            }
                            None => true,
                        };
                        if newer {
                            let _ = kad::store::RecordStore::put(store, record);
                        }
                    }
                    Err(error) => {
                        tracing::info!(%source, code = error.code(), "refused inbox record");
                        metrics::counter!("souk_inbox_records_refused_total").increment(1);
                    }
                }
            }
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if is_new_peer {
                    self.reput_own_records();
                }
                if self.config.discover
                    && is_new_peer
                    && !self.swarm.is_connected(&peer)
                    && !self.blocked.contains_key(&peer)
                    && self.connected_count() < (self.config.max_connections / 2) as usize
                {
                    let _ = self.swarm.dial(peer);
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetRecord(result),
                step,
                ..
            } => {
                if let Ok(GetRecordOk::FoundRecord(found)) = result
                    && let Some((records, _)) = self.pending_finds.get_mut(&id)
                {
                    let ctx = ValidationContext::now();
                    if let Ok(checked) =
                        inbox::check_record(found.record.key.as_ref(), &found.record.value, &ctx)
                    {
                        records.push(checked);
                    }
                }
                if step.last
                    && let Some((records, reply)) = self.pending_finds.remove(&id)
                {
                    let _ = reply.send(records);
                }
            }
            _ => {}
        }
    }
}

/// How a checked gossip message is reported to gossipsub.
fn acceptance(result: &IngestResult) -> MessageAcceptance {
    match result {
        IngestResult::Accepted { .. } => {
            metrics::counter!("souk_gossip_messages_total", "result" => "accepted").increment(1);
            MessageAcceptance::Accept
        }
        IngestResult::Duplicate { .. } | IngestResult::Stale { .. } => {
            metrics::counter!("souk_gossip_messages_total", "result" => "ignored").increment(1);
            MessageAcceptance::Ignore
        }
        // Time-dependent refusals depend on the receiver's clock as much as on the sender:
        // not forwarded, but no penalty.
        IngestResult::Rejected { code, .. }
            if matches!(*code, "expired" | "timestamp_in_future" | "internal") =>
        {
            metrics::counter!("souk_gossip_messages_total", "result" => "ignored").increment(1);
            MessageAcceptance::Ignore
        }
        IngestResult::Rejected { .. } => {
            metrics::counter!("souk_gossip_messages_total", "result" => "rejected").increment(1);
            MessageAcceptance::Reject
        }
    }
}
