//! The one ingest path. REST, gRPC and P2P hand envelope bytes to [`Ingestor::ingest`]; it runs
//! the protocol's checks (size → decode → validate → verify), then a single writer stores the
//! batch in one transaction and the search index takes it, and only then does the caller get
//! its results. Concurrent requests are grouped into one transaction (group commit), so many
//! small requests cost about as much as one large one.
//!
//! The writer is a pipeline of two tasks: the *store* stage writes a group to the database and
//! works out its index changes; the *index* stage applies them and commits the index, then
//! updates the sync set, tells the live feed and answers the callers. While the index stage
//! commits one group, the store stage writes the next, and every group that is ready when an
//! index commit starts shares it. Each stage keeps its order, so commits stay in ingest order,
//! and a caller is answered only once what it sent is stored *and* searchable.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use souk_protocol::{Object, ObjectId, PublicKey, SignedObject, ValidationContext, open_batch, pb};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::p2p::set::SyncSet;
use crate::search::{Change, ListingDoc, SearchIndex};
use crate::store::{Store, StoreError, WriteOutcome, decode_stored};

/// Most jobs the writer task takes into one transaction.
const GROUP_COMMIT_JOBS: usize = 64;
/// Most stored groups the index stage takes into one index commit.
const GROUP_INDEX_COMMITS: usize = 8;
/// Stored groups waiting for the index stage; when full, the store stage waits.
const INDEX_QUEUE_DEPTH: usize = 2;
/// Sellers whose rating the store stage remembers between groups (emptied when exceeded).
const RATING_CACHE_SELLERS: usize = 100_000;
/// Depth of the writer's queue; when it is full, callers wait (back-pressure).
const QUEUE_DEPTH: usize = 256;

/// The result for one envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestResult {
    /// Stored and indexed.
    Accepted {
        /// Object id.
        id: ObjectId,
        /// Ingest sequence.
        seq: i64,
    },
    /// Already stored; nothing changed.
    Duplicate {
        /// Object id.
        id: ObjectId,
    },
    /// A newer version (or a withdrawal) of the same object is stored; refused.
    Stale {
        /// Object id of the refused version.
        id: ObjectId,
        /// The version that stays current.
        current: ObjectId,
    },
    /// Refused by the protocol's checks.
    Rejected {
        /// The protocol's stable error code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Why a batch could not be stored at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database refused the write (for example a full disk).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The envelopes were stored, but the search index could not take them (the index failed,
    /// or the changes for it could not be read back); the index catches up on restart.
    #[error("stored but not indexed: {0}")]
    Search(String),
    /// The writer task is gone (the server is shutting down).
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Where envelopes came from. Only envelopes first received here (over the public API) are
/// gossiped by this server: gossip forwards what arrived by gossip itself, and what arrives by
/// sync is already held by the peer it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client of this server (REST, later gRPC).
    Local,
    /// A gossipsub message from a peer.
    Gossip,
    /// A set-reconciliation transfer from a peer.
    Sync,
}

/// An envelope this server accepted from a local client, for the network to gossip.
#[derive(Debug, Clone)]
pub struct Published {
    /// The envelope bytes.
    pub bytes: Vec<u8>,
    /// The object, for the network's own uses (inbox records come from profiles).
    pub object: Object,
    /// The signer.
    pub signer: PublicKey,
}

struct Job {
    /// Taken by the store stage, which keeps the count.
    objects: Vec<SignedObject>,
    /// How many objects the job brought (its share of the group's outcomes).
    count: usize,
    reply: oneshot::Sender<Result<Vec<WriteOutcome>, Arc<IngestError>>>,
}

/// Handle to the ingest path; cheap to clone.
#[derive(Clone, Debug)]
pub struct Ingestor {
    jobs: mpsc::Sender<Job>,
    /// Where locally received, accepted envelopes go for gossip (set when the network starts).
    published: Arc<OnceLock<mpsc::Sender<Published>>>,
    /// Every commit that stored something, in commit order (for the live feed).
    committed: broadcast::Sender<Arc<[Committed]>>,
}

/// Commits kept for live feed subscribers that have not read them yet; one that falls further
/// behind reads the store instead.
const COMMITTED_BACKLOG: usize = 1_024;

/// One envelope stored by a commit, as the live feed needs it: decoded once for every
/// subscriber.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Its ingest sequence.
    pub seq: i64,
    /// Its object id.
    pub id: ObjectId,
    /// Its signer.
    pub signer: PublicKey,
    /// The object.
    pub object: Object,
    /// The envelope bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("objects", &self.count).finish()
    }
}

impl Ingestor {
    /// Starts the writer task.
    ///
    /// `sync_set`, when given, is kept equal to the store's set of current objects in the same
    /// step as each commit (the peer-to-peer network reconciles it).
    #[must_use]
    pub fn start(store: Store, search: Arc<SearchIndex>, sync_set: Option<Arc<SyncSet>>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let (committed, _) = broadcast::channel(COMMITTED_BACKLOG);
        let (stored, index_queue) = mpsc::channel(INDEX_QUEUE_DEPTH);
        tokio::spawn(writer(queue, store, stored));
        tokio::spawn(indexer(index_queue, search, sync_set, committed.clone()));
        Self {
            jobs,
            published: Arc::new(OnceLock::new()),
            committed,
        }
    }

    /// Every later commit that stores something (from any origin), in commit order, once the
    /// search index has it too: its envelopes in ingest order. What was committed before the
    /// subscription is in the store; a receiver that falls more than 1,024 commits behind gets
    /// `Lagged` and reads the store from its position instead.
    #[must_use]
    pub fn subscribe_committed(&self) -> broadcast::Receiver<Arc<[Committed]>> {
        self.committed.subscribe()
    }

    /// Sends every envelope accepted from a local client to `sink` from now on. When the sink is
    /// full the envelope is not gossiped (counted in `souk_gossip_dropped_total`); periodic sync
    /// still delivers it to peers.
    pub fn publish_to(&self, sink: mpsc::Sender<Published>) {
        let _ = self.published.set(sink);
    }

    /// Checks, stores and indexes `envelopes` from a local client, returning one result per
    /// envelope, in order.
    ///
    /// # Errors
    /// [`IngestError`] if the batch could not be stored (nothing of it was), or was stored but
    /// could not be indexed (it is then searchable after the next start's catch-up).
    pub async fn ingest(
        &self,
        envelopes: Vec<Vec<u8>>,
    ) -> Result<Vec<IngestResult>, Arc<IngestError>> {
        self.ingest_from(Origin::Local, envelopes).await
    }

    /// [`Ingestor::ingest`] for envelopes from `origin`: the same checks, the same store.
    ///
    /// # Errors
    /// [`IngestError`] if the batch could not be stored (nothing of it was).
    pub async fn ingest_from(
        &self,
        origin: Origin,
        envelopes: Vec<Vec<u8>>,
    ) -> Result<Vec<IngestResult>, Arc<IngestError>> {
        let ctx = ValidationContext::now();
        // The checks are CPU work (about 50 µs an envelope): keep them off the async threads.
        let checked = verify_parallel(envelopes, ctx).await?;
        let mut results: Vec<Option<IngestResult>> = Vec::with_capacity(checked.len());
        let mut accepted = Vec::new();
        let mut positions = Vec::new();
        for (position, outcome) in checked.into_iter().enumerate() {
            match outcome {
                Ok(object) => {
                    positions.push(position);
                    accepted.push(object);
                    results.push(None);
                }
                Err(error) => {
                    metrics::counter!("souk_ingest_total", "result" => "rejected", "code" => error.code()).increment(1);
                    results.push(Some(IngestResult::Rejected {
                        code: error.code(),
                        message: error.to_string(),
                    }));
                }
            }
        }
        if !accepted.is_empty() {
            let ids: Vec<ObjectId> = accepted.iter().map(SignedObject::id).collect();
            let sink = self.published.get().filter(|_| origin == Origin::Local);
            let to_publish: Vec<Published> = match sink {
                Some(_) => accepted
                    .iter()
                    .map(|o| Published {
                        bytes: o.envelope().bytes().to_vec(),
                        object: o.object().clone(),
                        signer: o.signer(),
                    })
                    .collect(),
                None => Vec::new(),
            };
            let (reply, answer) = oneshot::channel();
            self.jobs
                .send(Job {
                    count: accepted.len(),
                    objects: accepted,
                    reply,
                })
                .await
                .map_err(|_| Arc::new(IngestError::ShuttingDown))?;
            let outcomes = answer
                .await
                .map_err(|_| Arc::new(IngestError::ShuttingDown))??;
            let mut to_publish = to_publish.into_iter();
            for ((position, id), outcome) in positions.into_iter().zip(ids).zip(outcomes) {
                let publish = to_publish.next();
                let (label, result) = match outcome {
                    WriteOutcome::Accepted { seq, .. } => {
                        if let (Some(sink), Some(publish)) = (sink, publish)
                            && sink.try_send(publish).is_err()
                        {
                            metrics::counter!("souk_gossip_dropped_total").increment(1);
                        }
                        ("accepted", IngestResult::Accepted { id, seq })
                    }
                    WriteOutcome::Duplicate => ("duplicate", IngestResult::Duplicate { id }),
                    WriteOutcome::Stale { current } => {
                        ("stale", IngestResult::Stale { id, current })
                    }
                };
                metrics::counter!("souk_ingest_total", "result" => label, "origin" => origin.label()).increment(1);
                results[position] = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(IngestResult::Rejected {
                    code: "internal",
                    message: "no result".into(),
                })
            })
            .collect())
    }
}

impl Origin {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Gossip => "gossip",
            Origin::Sync => "sync",
        }
    }
}

/// Runs the protocol's checks on blocking threads, splitting large batches over the cores; each
/// part's signatures are verified as a batch (`open_batch`: the same verdict per envelope as
/// `open`, at about a third of the cost).
async fn verify_parallel(
    envelopes: Vec<Vec<u8>>,
    ctx: ValidationContext,
) -> Result<Vec<Result<SignedObject, souk_protocol::EnvelopeError>>, Arc<IngestError>> {
    let threads = crate::config::cores();
    let per_task = envelopes.len().div_ceil(threads).max(64);
    let mut tasks = Vec::new();
    let mut rest = envelopes;
    while !rest.is_empty() {
        let tail = rest.split_off(per_task.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        tasks.push(tokio::task::spawn_blocking(move || {
            open_batch(&chunk, &ctx)
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(
            task.await
                .map_err(|_| Arc::new(IngestError::ShuttingDown))?,
        );
    }
    Ok(out)
}

/// A group the store stage wrote, on its way to the index stage.
struct Stored {
    jobs: Vec<Job>,
    objects: Vec<SignedObject>,
    outcomes: Vec<WriteOutcome>,
    /// The index changes, or why they could not be worked out.
    changes: Result<Vec<Change>, StoreError>,
    /// The lowest and highest ingest sequence stored (0: nothing new).
    min_seq: i64,
    max_seq: i64,
    /// When the store stage took the group.
    started: std::time::Instant,
}

/// The store stage: groups queued jobs into one transaction, works out the index changes, and
/// hands both to the index stage (waiting when it is [`INDEX_QUEUE_DEPTH`] groups behind).
async fn writer(mut queue: mpsc::Receiver<Job>, store: Store, stored: mpsc::Sender<Stored>) {
    // Sellers' ratings, remembered across groups: only this task stores ratings, and it
    // forgets a seller as soon as it stores a rating of it.
    let mut ratings: HashMap<PublicKey, f64> = HashMap::new();
    while let Some(first) = queue.recv().await {
        let started = std::time::Instant::now();
        let mut jobs = vec![first];
        while jobs.len() < GROUP_COMMIT_JOBS {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Moved, not copied: the jobs keep their counts to share out the outcomes.
        let objects: Vec<SignedObject> = jobs
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.objects))
            .collect();
        let outcomes = match store.write_batch(&objects).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                let error = Arc::new(IngestError::from(error));
                tracing::error!(%error, objects = objects.len(), "ingest batch failed");
                metrics::histogram!("souk_ingest_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                for job in jobs {
                    let _ = job.reply.send(Err(Arc::clone(&error)));
                }
                continue;
            }
        };
        metrics::histogram!("souk_ingest_stage_seconds", "stage" => "store")
            .record(started.elapsed().as_secs_f64());
        let mut accepted = Vec::new();
        let (mut min_seq, mut max_seq) = (i64::MAX, 0);
        for (object, outcome) in objects.iter().zip(&outcomes) {
            if let WriteOutcome::Accepted { seq, replaced } = outcome {
                min_seq = min_seq.min(*seq);
                max_seq = max_seq.max(*seq);
                accepted.push(Accepted {
                    id: object.id(),
                    signer: object.signer(),
                    object: object.object().clone(),
                    first: replaced.is_none(),
                });
            }
        }
        let changes = if max_seq > 0 {
            if ratings.len() > RATING_CACHE_SELLERS {
                ratings.clear();
            }
            let changes = index_changes(&store, &mut ratings, accepted).await;
            if changes.is_err() {
                // A rating may have been stored before the failure: remember none.
                ratings.clear();
            }
            changes
        } else {
            Ok(Vec::new())
        };
        let group = Stored {
            jobs,
            objects,
            outcomes,
            changes,
            min_seq,
            max_seq,
            started,
        };
        if let Err(mpsc::error::SendError(group)) = stored.send(group).await {
            // The index stage is gone (shutting down): the group is stored; say so.
            for job in group.jobs {
                let _ = job.reply.send(Err(Arc::new(IngestError::ShuttingDown)));
            }
            return;
        }
    }
}

/// The index stage: applies every ready group's changes with one index commit, then, group by
/// group in order, updates the sync set, tells the live feed and answers the callers.
async fn indexer(
    mut queue: mpsc::Receiver<Stored>,
    search: Arc<SearchIndex>,
    sync_set: Option<Arc<SyncSet>>,
    committed: broadcast::Sender<Arc<[Committed]>>,
) {
    // Just below the first stored envelope the index does not have (a group whose changes
    // failed, or a failed commit): later commits record at most this, so a restart's catch-up
    // replays from there and nothing stored stays out of search.
    let mut hole: Option<i64> = None;
    while let Some(first) = queue.recv().await {
        let mut groups = vec![first];
        while groups.len() < GROUP_INDEX_COMMITS {
            match queue.try_recv() {
                Ok(group) => groups.push(group),
                Err(_) => break,
            }
        }
        let indexing = std::time::Instant::now();
        // One commit for every group whose changes are known; a group whose changes could not
        // be worked out fails alone (it is stored; the index catches up on restart).
        let mut changes = Vec::new();
        let mut max_seq = 0;
        let mut lowest = i64::MAX;
        let below = |seq: i64| seq.saturating_sub(1);
        for group in &mut groups {
            if group.max_seq == 0 {
                continue;
            }
            lowest = lowest.min(group.min_seq);
            match &mut group.changes {
                Ok(mine) => {
                    changes.append(mine);
                    max_seq = max_seq.max(group.max_seq);
                }
                Err(_) => {
                    hole = Some(hole.map_or(below(group.min_seq), |h| h.min(below(group.min_seq))))
                }
            }
        }
        let indexed = if max_seq > 0 {
            let upto = hole.map_or(max_seq, |h| h.min(max_seq));
            let applied = apply(&search, changes, upto).await.map_err(Arc::new);
            if applied.is_err() {
                hole = Some(hole.map_or(below(lowest), |h| h.min(below(lowest))));
            }
            applied
        } else {
            Ok(())
        };
        metrics::histogram!("souk_ingest_stage_seconds", "stage" => "index")
            .record(indexing.elapsed().as_secs_f64());
        for group in groups {
            finish(group, &indexed, sync_set.as_deref(), &committed);
        }
    }
}

/// After the index commit: the sync set and the live feed follow the store (whatever the index
/// did), then the callers get their results — or the index's error.
fn finish(
    group: Stored,
    indexed: &Result<(), Arc<IngestError>>,
    sync_set: Option<&SyncSet>,
    committed: &broadcast::Sender<Arc<[Committed]>>,
) {
    let Stored {
        jobs,
        objects,
        outcomes,
        changes,
        max_seq,
        started,
        ..
    } = group;
    // The sync set follows the store whatever the index did, and only after the index, so a
    // peer-visible object count never runs ahead of search.
    if let Some(set) = sync_set {
        for (object, outcome) in objects.iter().zip(&outcomes) {
            if let WriteOutcome::Accepted { replaced, .. } = outcome {
                set.replace(object.version().created_at, &object.id(), *replaced);
            }
        }
    }
    // Live feed subscribers get the commit once decoded; the store has it whatever the index
    // did, and a subscriber that misses it reads the store.
    if max_seq > 0 && committed.receiver_count() > 0 {
        let mut stored: Vec<Committed> = objects
            .iter()
            .zip(&outcomes)
            .filter_map(|(object, outcome)| match outcome {
                WriteOutcome::Accepted { seq, .. } => Some(Committed {
                    seq: *seq,
                    id: object.id(),
                    signer: object.signer(),
                    object: object.object().clone(),
                    bytes: object.envelope().bytes().to_vec(),
                }),
                _ => None,
            })
            .collect();
        stored.sort_by_key(|c| c.seq);
        let _ = committed.send(stored.into());
    }
    metrics::histogram!("souk_ingest_commit_seconds").record(started.elapsed().as_secs_f64());
    let result = match (changes, indexed) {
        // Stored all the same: the reply must not say that nothing was.
        (Err(error), _) => Err(Arc::new(IngestError::Search(format!(
            "working out the index changes: {error}"
        )))),
        (Ok(_), Err(error)) => Err(Arc::clone(error)),
        (Ok(_), Ok(())) => Ok(outcomes),
    };
    if let Err(error) = &result {
        tracing::error!(%error, objects = objects.len(), "ingest batch stored but not indexed");
    }
    let mut outcomes = result.map(Vec::into_iter);
    for job in jobs {
        let _ = job.reply.send(match &mut outcomes {
            Ok(outcomes) => Ok(outcomes.by_ref().take(job.count).collect()),
            Err(error) => Err(Arc::clone(error)),
        });
    }
}

/// An object the store stage stored, on its way to [`index_changes`].
struct Accepted {
    id: ObjectId,
    signer: PublicKey,
    object: Object,
    /// The first version of its slot the store has held: no other version can be in the index.
    first: bool,
}

/// The index changes for stored objects, in ingest order: a listing is put in with its seller's
/// rating (remembered in `ratings`; the sellers it does not hold yet are read first, in one
/// query per 500), a withdrawal takes its slot out, and a new seller rating refreshes every
/// listing of that seller.
async fn index_changes(
    store: &Store,
    ratings: &mut HashMap<PublicKey, f64>,
    objects: Vec<Accepted>,
) -> Result<Vec<Change>, StoreError> {
    // The ratings of the listings' sellers not remembered yet, read together.
    let mut unknown: Vec<PublicKey> = objects
        .iter()
        .filter(|o| matches!(o.object, Object::Listing(_)) && !ratings.contains_key(&o.signer))
        .map(|o| o.signer)
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        let overall = store
            .overall_ratings(&unknown, pb::RatingRole::Seller)
            .await?;
        ratings.extend(unknown.into_iter().zip(overall));
    }
    let mut changes = Vec::with_capacity(objects.len());
    let mut rated_sellers = Vec::new();
    for Accepted {
        id,
        signer,
        object,
        first,
    } in objects
    {
        match object {
            Object::Listing(listing) => {
                // Every listing's seller is in `ratings`: remembered, or read above.
                let seller_rating = ratings.get(&signer).copied().unwrap_or_default();
                let doc = Box::new(ListingDoc {
                    id,
                    signer,
                    listing,
                    seller_rating,
                });
                changes.push(if first {
                    Change::Insert(doc)
                } else {
                    Change::Upsert(doc)
                });
            }
            Object::Tombstone(tombstone) => changes.push(Change::remove(&signer, &tombstone.slug)),
            Object::Rating(rating) if rating.role == pb::RatingRole::Seller as i32 => {
                if let Ok(subject) = PublicKey::from_bytes(&rating.subject) {
                    rated_sellers.push(subject);
                }
            }
            Object::Rating(_) | Object::Profile(_) => {}
        }
    }
    rated_sellers.sort();
    rated_sellers.dedup();
    for seller in rated_sellers {
        // Its rating changed: forget the remembered one; the refresh reads it anew.
        ratings.remove(&seller);
        changes.extend(reindex_seller(store, &seller).await?);
    }
    Ok(changes)
}

/// Applies `changes` to the index and commits them as including `seq`.
async fn apply(
    search: &Arc<SearchIndex>,
    changes: Vec<Change>,
    seq: i64,
) -> Result<(), IngestError> {
    on_index(search, move |index| index.apply(&changes, seq)).await
}

/// Runs `work` on the index on a blocking thread (an index commit waits on the disk).
async fn on_index(
    search: &Arc<SearchIndex>,
    work: impl FnOnce(&SearchIndex) -> Result<(), crate::search::SearchError> + Send + 'static,
) -> Result<(), IngestError> {
    let search = Arc::clone(search);
    tokio::task::spawn_blocking(move || work(&search))
        .await
        .map_err(|e| IngestError::Search(e.to_string()))?
        .map_err(|e| IngestError::Search(e.to_string()))
}

/// Changes that refresh every current listing of `seller` (after its rating changed).
async fn reindex_seller(store: &Store, seller: &PublicKey) -> Result<Vec<Change>, StoreError> {
    let seller_rating = store
        .rating_summary(seller, pb::RatingRole::Seller)
        .await?
        .overall;
    let mut changes = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.listings_of(seller, 500, offset).await?;
        if page.is_empty() {
            break;
        }
        offset += i64::try_from(page.len()).unwrap_or(i64::MAX);
        for bytes in page {
            let (envelope, object) = decode_stored(&bytes)?;
            if let Object::Listing(listing) = object {
                changes.push(Change::Upsert(Box::new(ListingDoc {
                    id: envelope.id(),
                    signer: *seller,
                    listing,
                    seller_rating,
                })));
            }
        }
    }
    Ok(changes)
}

/// Brings the search index up to the store: a full rebuild from the current listings when the
/// index is new, otherwise a replay of what was stored after the index's last commit. Logs
/// progress; always terminates (it reads a fixed range of sequences).
///
/// # Errors
/// [`IngestError`].
pub async fn catch_up(
    store: &Store,
    search: &Arc<SearchIndex>,
    rebuild: bool,
) -> Result<(), IngestError> {
    catch_up_with(store, search, rebuild, &|_| {}).await
}

/// [`catch_up`], calling `progress` with the ingest sequence reached after each page.
///
/// # Errors
/// [`IngestError`] if the store or the index fails.
pub async fn catch_up_with(
    store: &Store,
    search: &Arc<SearchIndex>,
    rebuild: bool,
    progress: &(dyn Fn(i64) + Sync),
) -> Result<(), IngestError> {
    let target = store.max_seq().await?;
    let started = std::time::Instant::now();
    // An index that includes more than the store holds was fed by another store (the
    // database was restored from an older backup, replaced, or lost its last commits): it
    // may hold listings the store does not. It is emptied and rebuilt.
    let indexed = search.last_seq();
    let rebuild = if !rebuild && indexed > target {
        tracing::warn!(
            index = indexed,
            store = target,
            "the search index is ahead of the store (was the database restored or replaced?); \
             rebuilding it from the store"
        );
        on_index(search, SearchIndex::clear).await?;
        true
    } else {
        rebuild
    };
    let mut after = if rebuild { 0 } else { indexed };
    if after >= target {
        return Ok(());
    }
    tracing::info!(
        from = after,
        to = target,
        rebuild,
        "search index catching up with the store"
    );
    let mut ratings: HashMap<PublicKey, f64> = HashMap::new();
    let mut done = 0usize;
    while after < target {
        let page = if rebuild {
            store.current_listings_page(after, 1_000).await?
        } else {
            store.since(after, 1_000).await?
        };
        let Some(last) = page.last().map(|(seq, _)| *seq) else {
            break;
        };
        let mut stored = Vec::with_capacity(page.len());
        for (_, bytes) in &page {
            let (envelope, object) = decode_stored(bytes)?;
            // A replay may meet listings the index already holds: replace, never just add.
            stored.push(Accepted {
                id: envelope.id(),
                signer: envelope.signer(),
                object,
                first: false,
            });
        }
        let changes = index_changes(store, &mut ratings, stored).await?;
        done += page.len();
        let commit_seq = if last >= target || page.len() < 1_000 {
            target
        } else {
            last
        };
        apply(search, changes, commit_seq).await?;
        tracing::info!(done, up_to = last, target, "search index: progress");
        after = commit_seq;
        progress(after);
    }
    tracing::info!(
        done,
        seconds = started.elapsed().as_secs_f64(),
        "search index is up to date"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DemoArgs;
    use crate::config::SqliteSync;

    fn envelopes(objects: &[SignedObject]) -> Vec<Vec<u8>> {
        objects
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect()
    }

    fn batch(demo: &DemoArgs, now: u64, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
        envelopes(&crate::demo::listings(demo, now, range))
    }

    /// A SQLite store in `dir`, a search index in `dir/search`, and the ingest path over both.
    async fn open(dir: &std::path::Path) -> (Store, Arc<SearchIndex>, Ingestor) {
        let url = format!("sqlite://{}", dir.join("souk.db").display());
        let store = Store::connect(
            &url,
            crate::store::SqliteTuning::with_sync(SqliteSync::Normal),
        )
        .await
        .expect("store");
        let (search, _) = SearchIndex::open(&dir.join("search"), 15_000_000).expect("index");
        let search = Arc::new(search);
        let ingestor = Ingestor::start(store.clone(), Arc::clone(&search), None);
        (store, search, ingestor)
    }

    /// A slot's first version goes into the index without a delete by slot; versions that
    /// replace it, later in the same batch or in a later one, still take it out: the index holds
    /// exactly the current version of each slot.
    #[tokio::test]
    async fn replacements_in_one_batch_and_across_batches_leave_the_current_version_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, search, ingestor) = open(dir.path()).await;
        let index_dir = dir.path().join("search");
        let ctx = ValidationContext::now();
        let key = souk_protocol::IdentityKey::from_secret_bytes(&[5; 32]);
        let version = |slug: &str, age: u64| {
            let listing = souk_protocol::samples::listing(ctx.now - age, slug, None);
            key.seal(&Object::Listing(listing), &ctx)
                .expect("valid listing")
        };
        let (lamp_1, lamp_2, chair) = (
            version("lamp", 300),
            version("lamp", 200),
            version("chair", 300),
        );
        let results = ingestor
            .ingest(envelopes(&[lamp_1.clone(), lamp_2.clone(), chair.clone()]))
            .await
            .expect("first batch");
        assert!(matches!(
            results.as_slice(),
            [
                IngestResult::Accepted { .. },
                IngestResult::Accepted { .. },
                IngestResult::Accepted { .. }
            ]
        ));
        let ids = |objects: &[&SignedObject]| -> std::collections::HashSet<String> {
            objects.iter().map(|o| o.id().to_string()).collect()
        };
        assert_eq!(
            crate::search::indexed_ids(&index_dir).expect("ids"),
            ids(&[&lamp_2, &chair]),
            "the second version in the batch replaced the first"
        );
        let lamp_3 = version("lamp", 100);
        ingestor
            .ingest(envelopes(std::slice::from_ref(&lamp_3)))
            .await
            .expect("second batch");
        assert_eq!(
            crate::search::indexed_ids(&index_dir).expect("ids"),
            ids(&[&lamp_3, &chair]),
            "a later batch's version replaced it again"
        );
        assert_eq!(search.num_docs(), 2);
        store.close().await;
    }

    /// An index commit that fails leaves a hole: the batch is stored, its caller hears of the
    /// failure, later commits never record a sequence past the hole, and the next start's
    /// catch-up puts the missing listings into search.
    #[tokio::test]
    async fn a_failed_index_commit_is_replayed_by_the_next_catch_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, search, ingestor) = open(dir.path()).await;
        let now = ValidationContext::now().now;
        let demo = DemoArgs {
            listings: 9,
            stores: 3,
            seed: 11,
        };
        let profiles = envelopes(&crate::demo::profiles(&demo, now));
        let accepted = |results: &[IngestResult]| {
            results
                .iter()
                .all(|r| matches!(r, IngestResult::Accepted { .. }))
        };
        let results = ingestor.ingest(profiles).await.expect("profiles");
        assert!(accepted(&results));
        let results = ingestor
            .ingest(batch(&demo, now, 0..3))
            .await
            .expect("first batch");
        assert!(accepted(&results));
        assert_eq!(search.num_docs(), 3);
        let before_hole = store.max_seq().await.expect("seq");
        assert_eq!(search.last_seq(), before_hole);

        // The second batch is stored, but its index commit fails.
        search.fail_next_applies(1);
        assert!(
            ingestor.ingest(batch(&demo, now, 3..6)).await.is_err(),
            "the caller hears that the batch is not searchable"
        );
        assert_eq!(
            store.max_seq().await.expect("seq"),
            before_hole + 3,
            "stored"
        );
        assert_eq!(search.num_docs(), 3);

        // A later batch is indexed, but the recorded sequence stays below the hole.
        let results = ingestor
            .ingest(batch(&demo, now, 6..9))
            .await
            .expect("third batch");
        assert!(accepted(&results));
        assert_eq!(search.num_docs(), 6);
        assert_eq!(
            search.last_seq(),
            before_hole,
            "no commit records a sequence past the failed batch"
        );

        // The next start catches up from the hole: every stored listing is searchable.
        drop(ingestor);
        catch_up(&store, &search, false).await.expect("catch up");
        assert_eq!(search.num_docs(), 9);
        assert_eq!(search.last_seq(), store.max_seq().await.expect("seq"));
        store.close().await;
    }
}
