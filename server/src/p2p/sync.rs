//! Set reconciliation with one peer (`/souk/sync/1`, messages in `souk/v1/sync.proto`).
//!
//! A round, driven by the initiator:
//! 1. If this server holds no objects at all, it pages through the peer's whole set first
//!    (`Dump`), which costs no ids on the wire: a new server's back-fill moves little more than
//!    the envelopes themselves.
//! 2. Negentropy over the set of current objects (`Reconcile`, repeated until it ends). When both
//!    sides agree this is one round trip of a few hundred bytes.
//! 3. `Fetch` what is missing here, in batches of at most [`BATCH`] ids and 7 MiB, stored
//!    through the ingest path with at most [`PIPELINE`] batches in flight (back-pressure: a
//!    back-fill holds at most that many answers in memory and competes with search only for the
//!    writer's turn).
//!
//! Each side only pulls. Both sides run rounds, so what the peer lacks its own round fetches;
//! pushing as well would send the same envelopes twice when both rounds overlap (a new server
//! and its bootstrap peer each start one on connect).
//!
//! Every envelope that arrives is checked exactly like one posted over REST. Ids that turned out
//! useless (stale, rejected) are remembered so later rounds do not fetch them again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::PeerId;
use negentropy::{Id, Negentropy};
use serde::Serialize;
use souk_protocol::{ObjectId, pb};

use super::codec::framed_len;
use super::{Network, Parts};
use crate::ingest::{IngestResult, Origin};

/// Most ids in one `Fetch`, envelopes in one `Dump` page.
pub const BATCH: usize = 1_000;
/// Negentropy frame limit (well inside the 1 MiB request limit).
pub const FRAME_LIMIT: u64 = 512 * 1024;
/// Envelope bytes in one `Fetch`/`Dump` answer (inside the 8 MiB response limit).
const ANSWER_BYTES: usize = 7 * 1024 * 1024;
/// Remembered useless ids (cleared when full).
const FUTILE_MAX: usize = 100_000;
/// Error text for a peer that does not speak the protocol.
pub const UNSUPPORTED: &str = "the peer does not speak /souk/sync/1";

/// Most negentropy exchanges in one round (a million items reconcile in a handful; a peer that
/// keeps the session going beyond this is misbehaving).
const MAX_EXCHANGES: u32 = 256;
/// Most ids one round fetches (the rest waits for the next round).
const MAX_NEED: usize = 2_000_000;
/// Most `Dump` pages in one round.
const MAX_DUMP_PAGES: u32 = 100_000;
/// Batches being stored at once during a round. The writer commits the batches that are ready
/// together, so more in flight means fewer, larger commits: a back-fill of 100,200 objects on
/// one host ran at 16,655 and 15,932 objects/s with 4, 18,236 and 18,780 with 8, 17,346 and
/// 20,005 with 16. Memory: at most this many answers of at most 7 MiB each.
pub const PIPELINE: usize = 8;
/// Envelopes read from the store at a time while answering (bounds memory per answer).
const READ_CHUNK: usize = 100;

/// A sealed snapshot that a negentropy session can own (so the session can move to a blocking
/// thread and back between messages).
#[derive(Debug, Clone)]
struct Shared(Arc<negentropy::NegentropyStorageVector>);

impl negentropy::NegentropyStorageBase for Shared {
    fn size(&self) -> Result<usize, negentropy::Error> {
        self.0.size()
    }

    fn get_item(&self, i: usize) -> Result<Option<negentropy::Item>, negentropy::Error> {
        self.0.get_item(i)
    }

    fn iterate(
        &self,
        begin: usize,
        end: usize,
        cb: &mut dyn FnMut(negentropy::Item, usize) -> Result<bool, negentropy::Error>,
    ) -> Result<(), negentropy::Error> {
        self.0.iterate(begin, end, cb)
    }

    fn find_lower_bound(&self, first: usize, last: usize, value: &negentropy::Bound) -> usize {
        self.0.find_lower_bound(first, last, value)
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RoundReport {
    /// Request/response exchanges.
    pub round_trips: u32,
    /// Bytes of sync messages sent (payload and length prefixes).
    pub bytes_sent: u64,
    /// Bytes of sync messages received.
    pub bytes_received: u64,
    /// Objects the peer holds.
    pub peer_objects: u64,
    /// Envelopes received by paging through the peer's set (a new server's back-fill).
    pub dumped: u64,
    /// Envelopes fetched by id.
    pub fetched: u64,
    /// Current objects here that the peer lacks (its own round fetches them).
    pub peer_lacks: u64,
    /// Envelopes stored here as a result.
    pub accepted: u64,
    /// Milliseconds the round took.
    pub millis: u64,
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The peer does not speak the sync protocol.
    #[error("{UNSUPPORTED}")]
    Unsupported,
    /// The request failed on the way (timeout, connection closed).
    #[error("request failed: {0}")]
    Transport(String),
    /// The peer answered with an error.
    #[error("the peer refused: {code}: {message}")]
    Refused {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The peer's answer makes no sense (bad negentropy frame, wrong answer type).
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// This server could not store what it received.
    #[error("ingest: {0}")]
    Ingest(String),
}

/// An error answer.
#[must_use]
pub fn error_response(code: &str, message: &str) -> pb::SyncResponse {
    pb::SyncResponse {
        response: Some(pb::sync_response::Response::Error(pb::SyncError {
            code: code.into(),
            message: message.into(),
        })),
    }
}

fn envelopes_response(envelopes: Vec<Vec<u8>>, next: u64) -> pb::SyncResponse {
    pb::SyncResponse {
        response: Some(pb::sync_response::Response::Envelopes(pb::Envelopes {
            envelopes,
            next,
        })),
    }
}

/// Answers one request from `peer`.
pub async fn answer(parts: &Parts, request: pb::SyncRequest) -> pb::SyncResponse {
    use pb::sync_request::Request;
    match request.request {
        Some(Request::Reconcile(reconcile)) => {
            let set = Arc::clone(&parts.set);
            let frame = reconcile.frame;
            let answer = tokio::task::spawn_blocking(move || {
                let snapshot = set.snapshot();
                let objects = negentropy::NegentropyStorageBase::size(&*snapshot).unwrap_or(0);
                Negentropy::borrowed(&*snapshot, FRAME_LIMIT)
                    .and_then(|mut n| n.reconcile(&frame))
                    .map(|frame| (frame, objects))
            })
            .await;
            match answer {
                Ok(Ok((frame, objects))) => pb::SyncResponse {
                    response: Some(pb::sync_response::Response::Reconcile(pb::ReconcileReply {
                        frame,
                        objects: objects as u64,
                    })),
                },
                Ok(Err(error)) => error_response("bad_request", &format!("negentropy: {error}")),
                Err(_) => error_response("internal", "reconciliation failed"),
            }
        }
        Some(Request::Fetch(fetch)) => {
            if fetch.ids.len() > BATCH {
                return error_response("too_large", "at most 1000 ids per fetch");
            }
            let mut ids = Vec::with_capacity(fetch.ids.len());
            for id in &fetch.ids {
                match <[u8; 32]>::try_from(id.as_slice()) {
                    Ok(bytes) => ids.push(ObjectId(bytes)),
                    Err(_) => return error_response("bad_request", "ids are 32 bytes"),
                }
            }
            // In request order, stopping when the answer is full; `next` says how many of the
            // requested ids were considered, so the asker can ask again for the rest. Read in
            // small chunks so an answer never holds more than it sends.
            let mut envelopes = Vec::new();
            let mut size = 0;
            let mut considered = 0;
            'chunks: for chunk in ids.chunks(READ_CHUNK) {
                let found = match parts.store.get_many(chunk).await {
                    Ok(found) => found,
                    Err(_) => return error_response("internal", "store unavailable"),
                };
                for id in chunk {
                    if let Some(bytes) = found.get(id) {
                        if size + bytes.len() > ANSWER_BYTES && !envelopes.is_empty() {
                            break 'chunks;
                        }
                        size += bytes.len();
                        envelopes.push(bytes.clone());
                    }
                    considered += 1;
                }
            }
            envelopes_response(envelopes, considered)
        }
        Some(Request::Dump(dump)) => {
            let limit = (dump.limit as usize).clamp(1, BATCH);
            let mut after = i64::try_from(dump.after).unwrap_or(i64::MAX);
            let mut envelopes = Vec::new();
            let mut size = 0;
            let mut last = 0;
            // Pages of READ_CHUNK rows until `limit` envelopes, ANSWER_BYTES, or the end.
            loop {
                let want = READ_CHUNK.min(limit - envelopes.len());
                let page = match parts.store.current_page(after, want as i64).await {
                    Ok(page) => page,
                    Err(_) => return error_response("internal", "store unavailable"),
                };
                let end = page.len() < want;
                for (seq, bytes) in page {
                    if size + bytes.len() > ANSWER_BYTES && !envelopes.is_empty() {
                        return envelopes_response(envelopes, last);
                    }
                    size += bytes.len();
                    last = u64::try_from(seq).unwrap_or(0);
                    after = seq;
                    envelopes.push(bytes);
                }
                if end {
                    return envelopes_response(envelopes, 0);
                }
                if envelopes.len() >= limit {
                    return envelopes_response(envelopes, last);
                }
            }
        }
        None => error_response("bad_request", "empty request"),
    }
}

/// Everything a round needs.
#[derive(Debug, Clone)]
pub struct Round {
    /// To send requests.
    pub network: Network,
    /// Store, ingest path and set.
    pub parts: Parts,
    /// Ids not worth fetching again.
    pub futile: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl Round {
    async fn ask(
        &self,
        peer: PeerId,
        request: pb::sync_request::Request,
        report: &mut RoundReport,
    ) -> Result<pb::sync_response::Response, RoundError> {
        let request = pb::SyncRequest {
            request: Some(request),
        };
        report.round_trips += 1;
        let sent = framed_len(&request);
        report.bytes_sent += sent;
        metrics::counter!("souk_sync_bytes_total", "direction" => "sent").increment(sent);
        let response = self.network.request(peer, request).await.map_err(|e| {
            if e == UNSUPPORTED {
                RoundError::Unsupported
            } else {
                RoundError::Transport(e)
            }
        })?;
        let received = framed_len(&response);
        report.bytes_received += received;
        metrics::counter!("souk_sync_bytes_total", "direction" => "received").increment(received);
        match response.response {
            Some(pb::sync_response::Response::Error(error)) => Err(RoundError::Refused {
                code: error.code,
                message: error.message,
            }),
            Some(other) => Ok(other),
            None => Err(RoundError::BadAnswer("empty answer".into())),
        }
    }

    /// Starts storing `envelopes` through the ingest path and queues the task in `pending`;
    /// when [`PIPELINE`] batches are in flight, waits for the oldest first. The writer commits
    /// queued batches together, so a back-fill pays for one commit per few batches, while
    /// memory stays bounded by `PIPELINE` answers.
    async fn store(
        &self,
        envelopes: Vec<Vec<u8>>,
        pending: &mut VecDeque<tokio::task::JoinHandle<Result<u64, RoundError>>>,
        report: &mut RoundReport,
    ) -> Result<(), RoundError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let ingestor = self.parts.ingestor.clone();
        let futile = Arc::clone(&self.futile);
        pending.push_back(tokio::spawn(async move {
            let ids: Vec<[u8; 32]> = envelopes
                .iter()
                .map(|bytes| ObjectId::of(bytes).0)
                .collect();
            let results = ingestor
                .ingest_from(Origin::Sync, envelopes)
                .await
                .map_err(|e| RoundError::Ingest(e.to_string()))?;
            let mut accepted = 0;
            let mut futile = futile
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, result) in ids.into_iter().zip(results) {
                match result {
                    IngestResult::Accepted { .. } => accepted += 1,
                    IngestResult::Duplicate { .. } => {}
                    IngestResult::Stale { .. } | IngestResult::Rejected { .. } => {
                        if futile.len() >= FUTILE_MAX {
                            futile.clear();
                        }
                        futile.insert(id);
                    }
                }
            }
            Ok(accepted)
        }));
        while pending.len() >= PIPELINE {
            drain_one(pending, report).await?;
        }
        Ok(())
    }

    /// Runs one round with `peer`.
    ///
    /// # Errors
    /// [`RoundError`]; what was stored before the error stays stored.
    pub async fn run(&self, peer: PeerId) -> Result<RoundReport, RoundError> {
        use pb::sync_request::Request;
        use pb::sync_response::Response;
        let started = Instant::now();
        let mut report = RoundReport::default();
        let mut pending = VecDeque::new();

        // 1. A server with nothing pages through the peer's set.
        if self.parts.set.is_empty() {
            let mut after = 0;
            for _ in 0..MAX_DUMP_PAGES {
                let answer = self
                    .ask(
                        peer,
                        Request::Dump(pb::Dump {
                            after,
                            limit: BATCH as u32,
                        }),
                        &mut report,
                    )
                    .await?;
                let Response::Envelopes(page) = answer else {
                    return Err(RoundError::BadAnswer(
                        "dump answered with something else".into(),
                    ));
                };
                if page.envelopes.is_empty() {
                    break;
                }
                report.dumped += page.envelopes.len() as u64;
                metrics::counter!("souk_sync_objects_total", "direction" => "dumped")
                    .increment(page.envelopes.len() as u64);
                self.store(page.envelopes, &mut pending, &mut report)
                    .await?;
                if page.next == 0 || page.next <= after {
                    break;
                }
                after = page.next;
            }
            // Reconcile against what is stored, dump included.
            while !pending.is_empty() {
                drain_one(&mut pending, &mut report).await?;
            }
        }

        // 2. Negentropy. The session moves to a blocking thread for each step (a step walks
        //    the whole set when it is large) and back.
        let set = Arc::clone(&self.parts.set);
        let (mut session, mut message) = tokio::task::spawn_blocking(move || {
            let mut session = Negentropy::owned(Shared(set.snapshot()), FRAME_LIMIT)?;
            let message = session.initiate()?;
            Ok::<_, negentropy::Error>((session, message))
        })
        .await
        .map_err(|e| RoundError::Ingest(e.to_string()))?
        .map_err(|e| RoundError::BadAnswer(e.to_string()))?;
        let mut have: Vec<Id> = Vec::new();
        let mut need: Vec<Id> = Vec::new();
        let mut exchanges = 0;
        loop {
            exchanges += 1;
            if exchanges > MAX_EXCHANGES {
                return Err(RoundError::BadAnswer(format!(
                    "reconciliation did not end within {MAX_EXCHANGES} exchanges"
                )));
            }
            let answer = self
                .ask(
                    peer,
                    Request::Reconcile(pb::Reconcile { frame: message }),
                    &mut report,
                )
                .await?;
            let Response::Reconcile(reply) = answer else {
                return Err(RoundError::BadAnswer(
                    "reconcile answered with something else".into(),
                ));
            };
            report.peer_objects = reply.objects;
            let step = tokio::task::spawn_blocking(move || {
                let next = session.reconcile_with_ids(&reply.frame, &mut have, &mut need);
                (session, have, need, next)
            })
            .await
            .map_err(|e| RoundError::Ingest(e.to_string()))?;
            let next;
            (session, have, need, next) = step;
            if need.len() > MAX_NEED {
                need.truncate(MAX_NEED);
                break;
            }
            match next.map_err(|e| RoundError::BadAnswer(format!("negentropy: {e}")))? {
                Some(frame) => message = frame,
                None => break,
            }
        }
        drop(session);

        // 3. Fetch what is missing here.
        let wanted: Vec<Vec<u8>> = {
            let futile = self
                .futile
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            need.iter()
                .map(|id| *id.as_bytes())
                .filter(|id| !futile.contains(id))
                .map(|id| id.to_vec())
                .collect()
        };
        let mut rest = wanted.as_slice();
        while !rest.is_empty() {
            let batch = &rest[..rest.len().min(BATCH)];
            let answer = self
                .ask(
                    peer,
                    Request::Fetch(pb::Fetch {
                        ids: batch.to_vec(),
                    }),
                    &mut report,
                )
                .await?;
            let Response::Envelopes(found) = answer else {
                return Err(RoundError::BadAnswer(
                    "fetch answered with something else".into(),
                ));
            };
            let considered = usize::try_from(found.next).unwrap_or(0).min(batch.len());
            if considered == 0 {
                return Err(RoundError::BadAnswer("fetch made no progress".into()));
            }
            // Only what was asked for: a peer cannot slip other envelopes in.
            let asked: HashSet<&[u8]> = batch[..considered].iter().map(Vec::as_slice).collect();
            let envelopes: Vec<Vec<u8>> = found
                .envelopes
                .into_iter()
                .filter(|bytes| asked.contains(ObjectId::of(bytes).as_bytes().as_slice()))
                .collect();
            report.fetched += envelopes.len() as u64;
            metrics::counter!("souk_sync_objects_total", "direction" => "fetched")
                .increment(envelopes.len() as u64);
            self.store(envelopes, &mut pending, &mut report).await?;
            rest = &rest[considered..];
        }

        while !pending.is_empty() {
            drain_one(&mut pending, &mut report).await?;
        }
        report.peer_lacks = have.len() as u64;
        report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }
}

/// Waits for the oldest batch in flight and counts what it stored.
async fn drain_one(
    pending: &mut VecDeque<tokio::task::JoinHandle<Result<u64, RoundError>>>,
    report: &mut RoundReport,
) -> Result<(), RoundError> {
    if let Some(task) = pending.pop_front() {
        report.accepted += task
            .await
            .map_err(|e| RoundError::Ingest(e.to_string()))??;
    }
    Ok(())
}

/// Feeds `data` to every parser of a peer's sync traffic: the codec (as a request and as a
/// response) and negentropy (as a frame to answer, and as an answer to an initiated session),
/// over a fixed set of 100 items. For the `sync_messages` fuzz target and its corpus replay;
/// it must return (with errors) for any input, never panic.
pub fn fuzz_one(data: &[u8]) {
    use libp2p::request_response::Codec;
    let mut codec = super::codec::SyncCodec::default();
    let _ = futures::executor::block_on(
        codec.read_request(&super::codec::PROTOCOL, &mut futures::io::Cursor::new(data)),
    );
    let _ = futures::executor::block_on(
        codec.read_response(&super::codec::PROTOCOL, &mut futures::io::Cursor::new(data)),
    );
    let set = super::set::SyncSet::from_items(
        (0..100u8).map(|n| (1_750_000_000 + u64::from(n) * 7, ObjectId([n; 32]))),
    );
    let snapshot = set.snapshot();
    if let Ok(mut responder) = Negentropy::borrowed(&*snapshot, FRAME_LIMIT) {
        let _ = responder.reconcile(data);
    }
    if let Ok(mut initiator) = Negentropy::borrowed(&*snapshot, FRAME_LIMIT)
        && initiator.initiate().is_ok()
    {
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let _ = initiator.reconcile_with_ids(data, &mut have, &mut need);
    }
}
