//! The search index: tantivy, in `<data-dir>/search`, holding the current, unwithdrawn listings.
//!
//! It is derived data. Each commit records the highest ingest sequence it includes (the commit
//! payload), so on start the server replays only what the index lacks; a missing, damaged or
//! outdated index is rebuilt from the store. One writer (behind a mutex) and a reader reloaded
//! after every commit, so a reply to an ingest request is searchable the moment it is sent.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use souk_protocol::summary::{condition_name, listing_type_name};
use souk_protocol::{ObjectId, PublicKey, pb};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

mod bitmaps;
mod pool;
mod slots;
mod text;

pub use pool::SearchPool;

use text::TextClause;

/// Version of the schema below; an index built with another version is rebuilt.
const SCHEMA_VERSION: &str = "6";
const TEXT_ANALYZER: &str = "souk_text";
const PREFIX_ANALYZER: &str = "souk_prefix";

/// A search index failure.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// tantivy failed.
    #[error("search index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The index directory could not be prepared.
    #[error("search index directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A lock was poisoned by a panic in another thread.
    #[error("search index writer lock poisoned")]
    Poisoned,
    /// Another process holds the index's writer lock.
    #[error(
        "the search index in {0} is in use by another process (is a souk-server running on this data directory? stop it first)"
    )]
    InUse(PathBuf),
    /// The search threads could not be started.
    #[error("cannot start the search threads: {0}")]
    Threads(String),
    /// A search panicked (a bug); its thread lives on.
    #[error("a search failed unexpectedly (it panicked)")]
    Panicked,
}

/// Whether tantivy refused because another writer holds the index lock.
fn lock_busy(error: &tantivy::TantivyError) -> bool {
    matches!(
        error,
        tantivy::TantivyError::LockFailure(tantivy::directory::error::LockError::LockBusy, _)
    )
}

/// Whether another process holds the writer lock of the index in `dir` (a server running on
/// this data directory). A missing or unreadable index is not in use.
#[must_use]
pub fn in_use(dir: &Path) -> bool {
    if !dir.join("meta.json").exists() {
        return false;
    }
    match Index::open_in_dir(dir) {
        Ok(index) => matches!(
            index.writer::<TantivyDocument>(15_000_000),
            Err(ref e) if lock_busy(e)
        ),
        Err(_) => false,
    }
}

/// The object ids (hex) of every listing in the index in `dir`, read without taking the writer
/// lock (so while a server runs).
///
/// # Errors
/// [`SearchError`] if the index cannot be opened or read.
pub fn indexed_ids(dir: &Path) -> Result<std::collections::HashSet<String>, SearchError> {
    let index = Index::open_in_dir(dir)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher: tantivy::Searcher = reader.searcher();
    let mut ids = std::collections::HashSet::new();
    for segment in searcher.segment_readers() {
        let columns = IdColumns::open(segment)?;
        for doc in segment.doc_ids_alive() {
            ids.insert(columns.get(doc).to_string());
        }
    }
    Ok(ids)
}

/// `bytes` (8 × `N` of them) as `N` big-endian words: how ids and slot keys go into u64 columns.
fn be_words<const N: usize>(bytes: &[u8]) -> [u64; N] {
    let mut words = [0u64; N];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut be = [0u8; 8];
        be.copy_from_slice(chunk);
        *word = u64::from_be_bytes(be);
    }
    words
}

/// Names of the four fast fields holding an object id, eight bytes each (big-endian).
const ID_FIELDS: [&str; 4] = ["id0", "id1", "id2", "id3"];

/// Bytes of a seller's key that its `signer` term holds: the first eight.
///
/// The whole key (32 random bytes) as the term put about as many nearly random 32-byte terms
/// into each new segment's dictionary as the segment has sellers, and building those
/// dictionaries (finite-state transducers, whose cost grows with the bytes no two terms share)
/// was the largest single cost of the index stage's commits. Eight bytes are as selective for
/// any honest set of sellers; the other 24 are kept in three fast columns
/// ([`SIGNER_REST_FIELDS`]), and [`SellerDocs`] checks them, so a seller whose key begins
/// with the same eight bytes (chosen or by chance) is never taken for another.
const SIGNER_TERM_LEN: usize = 8;

/// Names of the three fast fields holding bytes 8 to 32 of a seller's key (big-endian words).
const SIGNER_REST_FIELDS: [&str; 3] = ["signer1", "signer2", "signer3"];

/// The `signer` term of a seller (see [`SIGNER_TERM_LEN`]).
fn signer_term(field: Field, signer: &[u8; 32]) -> Term {
    Term::from_field_bytes(field, &signer[..SIGNER_TERM_LEN])
}

/// The rest of a seller's key as the [`SIGNER_REST_FIELDS`] column values.
fn signer_rest(signer: &[u8; 32]) -> [u64; 3] {
    be_words(&signer[SIGNER_TERM_LEN..])
}

/// A segment's fast column `name` of u64 values (ids, slot keys, the rest of a seller's key:
/// one value per document).
fn u64_column(
    segment: &tantivy::SegmentReader,
    name: &str,
) -> tantivy::Result<Arc<dyn tantivy::columnar::ColumnValues<u64>>> {
    Ok(segment.fast_fields().u64(name)?.first_or_default_col(0))
}

/// One segment's way to a seller's documents: the postings of the seller's short term, less
/// the documents whose key differs in the bytes the term leaves out.
struct SellerDocs {
    field: Field,
    postings: Arc<tantivy::InvertedIndexReader>,
    rest: [Arc<dyn tantivy::columnar::ColumnValues<u64>>; 3],
}

impl SellerDocs {
    /// Opens the `signer` postings and columns of `segment`.
    fn open(segment: &tantivy::SegmentReader, field: Field) -> tantivy::Result<Self> {
        Ok(Self {
            field,
            postings: segment.inverted_index(field)?,
            rest: [
                u64_column(segment, SIGNER_REST_FIELDS[0])?,
                u64_column(segment, SIGNER_REST_FIELDS[1])?,
                u64_column(segment, SIGNER_REST_FIELDS[2])?,
            ],
        })
    }

    /// Calls `each` with every document of `signer` in the segment (deleted ones included),
    /// in ascending order.
    fn each(&self, signer: &[u8; 32], mut each: impl FnMut(tantivy::DocId)) -> tantivy::Result<()> {
        use tantivy::DocSet as _;
        let Some(mut postings) = self
            .postings
            .read_postings(&signer_term(self.field, signer), IndexRecordOption::Basic)?
        else {
            return Ok(());
        };
        let rest = signer_rest(signer);
        let mut doc = postings.doc();
        while doc != tantivy::TERMINATED {
            if self
                .rest
                .iter()
                .zip(rest)
                .all(|(column, word)| column.get_val(doc) == word)
            {
                each(doc);
            }
            doc = postings.advance();
        }
        Ok(())
    }
}

/// The object-id columns of one segment: ids of hits are read from them, not from a document
/// store.
struct IdColumns([Arc<dyn tantivy::columnar::ColumnValues<u64>>; 4]);

impl IdColumns {
    fn open(segment: &tantivy::SegmentReader) -> Result<Self, SearchError> {
        Ok(Self([
            u64_column(segment, ID_FIELDS[0])?,
            u64_column(segment, ID_FIELDS[1])?,
            u64_column(segment, ID_FIELDS[2])?,
            u64_column(segment, ID_FIELDS[3])?,
        ]))
    }

    fn get(&self, doc: tantivy::DocId) -> ObjectId {
        let mut bytes = [0u8; 32];
        for (chunk, column) in bytes.chunks_exact_mut(8).zip(&self.0) {
            chunk.copy_from_slice(&column.get_val(doc).to_be_bytes());
        }
        ObjectId(bytes)
    }
}

#[derive(Clone, Copy)]
struct Fields {
    id: [Field; 4],
    /// The slot's key (see [`slot_key`]), in two columns: what a replacement deletes by.
    slot: [Field; 2],
    /// The first [`SIGNER_TERM_LEN`] bytes of the seller's key, indexed.
    signer: Field,
    /// The rest of the seller's key, in three fast columns ([`SIGNER_REST_FIELDS`]).
    signer_rest: [Field; 3],
    title: Field,
    description: Field,
    tags: Field,
    prefix: Field,
    /// Every ancestor path of the category ("home", "home/kitchen"): the filter.
    category: Field,
    /// The full category path, a fast field: the facet counts.
    category_path: Field,
    kind: Field,
    condition: Field,
    currency: Field,
    ships_to: Field,
    price: Field,
    created_at: Field,
    expires_at: Field,
    rating: Field,
    moderated: Field,
    nsfw: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |analyzer: &str, record: IndexRecordOption| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(record),
        )
    };
    // Frequencies for BM25; no positions, as no query matches phrases.
    let freqs = IndexRecordOption::WithFreqs;
    // Filtered by term, counted (facets) from the fast column.
    let keyword = STRING | FAST;
    let fields = Fields {
        id: ID_FIELDS.map(|name| b.add_u64_field(name, FAST)),
        // Fast columns only: a term per listing in the dictionary cost every commit and merge
        // (see `slots.rs`).
        slot: slots::SLOT_FIELDS.map(|name| b.add_u64_field(name, FAST)),
        // A short term and columns for the rest of the key: see `SIGNER_TERM_LEN`.
        signer: b.add_bytes_field("signer", INDEXED),
        signer_rest: SIGNER_REST_FIELDS.map(|name| b.add_u64_field(name, FAST)),
        title: b.add_text_field("title", text(TEXT_ANALYZER, freqs)),
        description: b.add_text_field("description", text(TEXT_ANALYZER, freqs)),
        tags: b.add_text_field("tags", text(TEXT_ANALYZER, freqs)),
        prefix: b.add_text_field("prefix", text(PREFIX_ANALYZER, IndexRecordOption::Basic)),
        category: b.add_text_field("category", STRING),
        category_path: b.add_text_field(FACET_FIELDS[0], FAST),
        kind: b.add_text_field(FACET_FIELDS[1], keyword.clone()),
        condition: b.add_text_field(FACET_FIELDS[2], keyword.clone()),
        currency: b.add_text_field(FACET_FIELDS[3], keyword),
        ships_to: b.add_text_field("ships_to", STRING),
        // Numbers are sorted on and filtered by range, and a range query on a fast field reads
        // the column: no term dictionary, whose nearly unique terms (a price, an expiry) cost
        // every ingest and every merge.
        price: b.add_f64_field("price", FAST),
        created_at: b.add_u64_field("created_at", FAST),
        expires_at: b.add_u64_field("expires_at", FAST),
        rating: b.add_f64_field("rating", FAST),
        moderated: b.add_u64_field("moderated", INDEXED | FAST),
        nsfw: b.add_u64_field("nsfw", INDEXED | FAST),
    };
    (b.build(), fields)
}

/// Title, tags and description: words, lower case, accents folded, English stems.
fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The prefix field (title and tags): as [`text_analyzer`] but unstemmed.
fn prefix_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn register_analyzers(index: &Index) {
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
    index
        .tokenizers()
        .register(PREFIX_ANALYZER, prefix_analyzer());
}

/// Matches one listing against a search text the way [`SearchIndex::search`] does, without the
/// index: every word but the last must occur (after the same analysis: lower case, ASCII
/// folding, English stemming) in the title, tags or description; the last word may also be the
/// prefix of a word of the title or tags. The live feed filters with it.
#[derive(Clone)]
pub struct TextMatcher {
    /// Analysed tokens of each word but the last; each word needs all of its tokens.
    words: Vec<Vec<String>>,
    /// The last word analysed as a whole word.
    last: Vec<String>,
    /// The last word as a prefix (unstemmed).
    last_prefix: Option<String>,
    text: TextAnalyzer,
    prefix: TextAnalyzer,
}

impl std::fmt::Debug for TextMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextMatcher")
            .field("words", &self.words)
            .field("last", &self.last)
            .field("last_prefix", &self.last_prefix)
            .finish_non_exhaustive()
    }
}

impl TextMatcher {
    /// A matcher for `text` that agrees with [`SearchIndex::search`]'s text matching; `None`
    /// when the text has no words (everything matches).
    #[must_use]
    pub fn new(text: &str) -> Option<Self> {
        let words = query_words(text);
        let (last, rest) = words.split_last()?;
        let mut analyzer = text_analyzer();
        let mut prefix = prefix_analyzer();
        Some(Self {
            words: rest
                .iter()
                .map(|w| Self::tokens(&mut analyzer, w))
                .filter(|t| !t.is_empty())
                .collect(),
            last: Self::tokens(&mut analyzer, last),
            last_prefix: Self::tokens(&mut prefix, last).into_iter().next(),
            text: analyzer,
            prefix,
        })
    }

    fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            out.push(token.text.clone());
        }
        out
    }

    /// Whether `listing` matches.
    #[must_use]
    pub fn matches(&self, listing: &pb::Listing) -> bool {
        let mut text = self.text.clone();
        let mut words: std::collections::HashSet<String> = std::collections::HashSet::new();
        for field in std::iter::once(&listing.title)
            .chain(listing.tags.iter())
            .chain(std::iter::once(&listing.description))
        {
            words.extend(Self::tokens(&mut text, field));
        }
        let all =
            |tokens: &Vec<String>| !tokens.is_empty() && tokens.iter().all(|t| words.contains(t));
        if !self.words.iter().all(all) {
            return false;
        }
        if all(&self.last) {
            return true;
        }
        let Some(prefix) = &self.last_prefix else {
            return false;
        };
        let mut analyzer = self.prefix.clone();
        std::iter::once(&listing.title)
            .chain(listing.tags.iter())
            .any(|field| {
                Self::tokens(&mut analyzer, field)
                    .iter()
                    .any(|t| t.starts_with(prefix.as_str()))
            })
    }
}

/// The words of a search text: runs of letters and digits (every other character separates
/// words, so none has a query-syntax meaning). Empty when the text has no words: it browses.
fn query_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A listing to put in the index.
#[derive(Debug, Clone)]
pub struct ListingDoc {
    /// Object id of the listing version.
    pub id: ObjectId,
    /// The seller.
    pub signer: PublicKey,
    /// The listing.
    pub listing: pb::Listing,
    /// The seller's average overall rating (0 without ratings).
    pub seller_rating: f64,
}

/// One change to the index.
#[derive(Debug, Clone)]
pub enum Change {
    /// Put this listing in, replacing any other version of its slot.
    Upsert(Box<ListingDoc>),
    /// Put in the first version of a slot, one the index cannot hold another version of (its
    /// slot was empty in the store). It skips [`Change::Upsert`]'s delete by slot, which the
    /// index commit would otherwise look for among the seller's documents in every segment.
    Insert(Box<ListingDoc>),
    /// Take the listing of this slot out (see [`Change::remove`]).
    Remove {
        /// The seller.
        signer: PublicKey,
        /// The slot's key in the index (see [`Change::remove`]).
        slot_key: [u8; SLOT_KEY_LEN],
    },
}

impl ListingDoc {
    fn slot_key(&self) -> [u8; SLOT_KEY_LEN] {
        slot_key(&self.signer, &self.listing.slug)
    }
}

impl Change {
    /// Takes the listing `slug` of `signer` out of the index.
    #[must_use]
    pub fn remove(signer: &PublicKey, slug: &str) -> Self {
        Self::Remove {
            signer: *signer,
            slot_key: slot_key(signer, slug),
        }
    }
}

/// Bytes of a slot's key in the index.
const SLOT_KEY_LEN: usize = 16;

/// A slot's key in the index: the first 16 bytes of SHA-256 over a domain tag, the seller's key
/// and the slug. Deletions look keys up only among the seller's own documents, so one seller's
/// listing can never delete another's; 128 bits also leave two slugs of one seller sharing a
/// key out of reach.
fn slot_key(signer: &PublicKey, slug: &str) -> [u8; SLOT_KEY_LEN] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"souk/index-slot/v1\0")
        .chain_update(signer.as_bytes())
        .chain_update(slug.as_bytes())
        .finalize();
    let mut key = [0u8; SLOT_KEY_LEN];
    key.copy_from_slice(&digest[..SLOT_KEY_LEN]);
    key
}

/// A price in major units (amount / 10^divisibility), the index's normalised price.
#[must_use]
pub fn normalised_price(price: &pb::Price) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "prices up to 2.1e15 base units; f64 is exact to 9e15"
    )]
    let amount = price.amount as f64;
    amount / 10f64.powi(i32::try_from(price.divisibility).unwrap_or(8))
}

/// Sort orders.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best text match first (newest first when there is no text).
    Relevance,
    /// Cheapest first (normalised price; compare within one currency).
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Most recently published first.
    Newest,
    /// Best-rated sellers first.
    Rating,
}

/// A parsed search request.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Free text.
    pub text: String,
    /// Category path ("home/kitchen").
    pub category: Option<String>,
    /// "physical", "digital" or "service".
    pub kind: Option<String>,
    /// Condition name.
    pub condition: Option<String>,
    /// Currency code.
    pub currency: Option<String>,
    /// Lowest normalised price.
    pub price_min: Option<f64>,
    /// Highest normalised price.
    pub price_max: Option<f64>,
    /// Country code the listing must ship to.
    pub ships_to: Option<String>,
    /// Seller.
    pub seller: Option<PublicKey>,
    /// Lowest seller rating.
    pub min_rating: Option<f64>,
    /// Only listings that accept a moderator (true) or only those that do not (false).
    pub moderated: Option<bool>,
    /// Include NSFW listings.
    pub nsfw: bool,
    /// Order.
    pub sort: Option<Sort>,
    /// Hits to return.
    pub limit: usize,
    /// Hits to skip.
    pub offset: usize,
    /// Current time (expired listings are not returned).
    pub now: u64,
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// Matching listings in order, as object ids.
    pub ids: Vec<ObjectId>,
    /// How many listings match in all.
    pub total: usize,
    /// Counts per value for category (children of the selected category), type, condition and
    /// currency.
    pub facets: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

/// The search index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    dir: PathBuf,
    cache: Mutex<ResultCache>,
    cache_capacity: AtomicUsize,
    /// Searches computed (not answered from the cache or by another caller's computation).
    computations: AtomicUsize,
    /// Bitmaps and sort orders of the segments searched lately.
    views: Arc<bitmaps::Views>,
    /// Whether a background build of views is running.
    warming: Arc<std::sync::atomic::AtomicBool>,
    /// Tests: how many of the next [`SearchIndex::apply`] calls fail.
    #[cfg(test)]
    failing_applies: AtomicUsize,
}

/// Segments of at least this many documents (a merge's output, say) get their search views
/// built in the background as soon as a commit makes them visible, instead of by the first
/// search that meets them (about 120 ns a document: 30 ms for 250,000). Smaller segments are
/// quick to build and often merged away soon, so the first search builds theirs. On opening,
/// every segment's view is built in the background.
const WARM_MIN_DOCS: u32 = 50_000;

/// How long a cached result may be served: bounds how late a listing that just expired can
/// still appear (no other change can be missed: every index commit empties the cache).
pub const RESULT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Default number of cached results.
pub const DEFAULT_RESULT_CACHE_ENTRIES: usize = 4096;

/// Recent results, valid for one reader generation: a commit (which happens before any ingest
/// is acknowledged) starts a new generation and so empties the cache.
#[derive(Default)]
struct ResultCache {
    generation: u64,
    entries: HashMap<String, (Instant, SearchResult)>,
    /// Queries being computed now, in this generation: an identical query that misses the cache
    /// waits for that computation instead of running its own (no stampede when an entry's
    /// second is up and many clients ask for it at once).
    in_flight: HashMap<String, Arc<Flight>>,
}

/// One computation others may wait for: its result once known (`None` until then, and for
/// one that failed — waiters then compute it themselves).
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Option<SearchResult>>>,
    done: Condvar,
}

impl Flight {
    fn finish(&self, result: Option<SearchResult>) {
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(result);
        }
        self.done.notify_all();
    }

    /// The leader's result, waiting at most `timeout`; `None` if it failed or took too long.
    fn wait(&self, timeout: Duration) -> Option<SearchResult> {
        let slot = self.result.lock().ok()?;
        let (slot, _) = self
            .done
            .wait_timeout_while(slot, timeout, |slot| slot.is_none())
            .ok()?;
        slot.clone().flatten()
    }
}

/// Ends a leader's flight however its computation ends (an error or a panic included), so no
/// waiter waits longer than its timeout and the next identical query can lead.
struct FlightGuard<'a> {
    index: &'a SearchIndex,
    key: String,
    flight: Arc<Flight>,
    result: Option<SearchResult>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.flight.finish(self.result.take());
        if let Ok(mut cache) = self.index.cache.lock()
            && cache
                .in_flight
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            cache.in_flight.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, or creates an empty one if it is missing, damaged or of another
    /// schema version. Returns whether it was (re)created, in which case the caller rebuilds it
    /// from the store.
    ///
    /// # Errors
    /// [`SearchError`] if even a fresh index cannot be created.
    pub fn open(dir: &Path, memory_bytes: usize) -> Result<(Self, bool), SearchError> {
        match Self::try_open(dir, memory_bytes) {
            Ok(Some(index)) => {
                // The first searches after a restart would otherwise build every view.
                index.warm_in_background(0);
                Ok((index, false))
            }
            Err(SearchError::Tantivy(ref e)) if lock_busy(e) => {
                Err(SearchError::InUse(dir.to_path_buf()))
            }
            Ok(None) => {
                tracing::info!(dir = %dir.display(), "no search index yet: creating one");
                Ok((Self::create(dir, memory_bytes)?, true))
            }
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "search index unusable: rebuilding it from the store");
                Ok((Self::create(dir, memory_bytes)?, true))
            }
        }
    }

    fn try_open(dir: &Path, memory_bytes: usize) -> Result<Option<Self>, SearchError> {
        if !dir.join("meta.json").exists() {
            return Ok(None);
        }
        let index = Index::open_in_dir(dir)?;
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Err(SearchError::Tantivy(tantivy::TantivyError::SchemaError(
                "schema changed".into(),
            )));
        }
        let version_ok = index
            .load_metas()?
            .payload
            .as_deref()
            .is_some_and(|p| p.starts_with(&format!("v{SCHEMA_VERSION}:")));
        if !version_ok {
            return Err(SearchError::Tantivy(tantivy::TantivyError::SchemaError(
                "missing or old schema version".into(),
            )));
        }
        let damaged = index.validate_checksum()?;
        if !damaged.is_empty() {
            return Err(SearchError::Tantivy(tantivy::TantivyError::SchemaError(
                format!("{} damaged files", damaged.len()),
            )));
        }
        Self::finish(index, fields, dir, memory_bytes).map(Some)
    }

    fn create(dir: &Path, memory_bytes: usize) -> Result<Self, SearchError> {
        let io = |source| SearchError::Io {
            path: dir.to_path_buf(),
            source,
        };
        // An index this process could not open (another schema, say) may still be another
        // process's: never wipe one whose writer lock is held.
        if in_use(dir) {
            return Err(SearchError::InUse(dir.to_path_buf()));
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io)?;
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        let this = Self::finish(index, fields, dir, memory_bytes)?;
        this.commit(0)?;
        Ok(this)
    }

    fn finish(
        index: Index,
        fields: Fields,
        dir: &Path,
        memory_bytes: usize,
    ) -> Result<Self, SearchError> {
        register_analyzers(&index);
        let writer = index.writer_with_num_threads(1, memory_bytes)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            dir: dir.to_path_buf(),
            cache: Mutex::new(ResultCache::default()),
            cache_capacity: AtomicUsize::new(DEFAULT_RESULT_CACHE_ENTRIES),
            computations: AtomicUsize::new(0),
            views: Arc::default(),
            warming: Arc::default(),
            #[cfg(test)]
            failing_applies: AtomicUsize::new(0),
        })
    }

    /// The highest ingest sequence the index includes.
    #[must_use]
    pub fn last_seq(&self) -> i64 {
        self.index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| p.split_once(':').and_then(|(_, seq)| seq.parse().ok()))
            .unwrap_or(0)
    }

    /// Empties the index (every document deleted, committed as including nothing), for a
    /// rebuild from the store.
    ///
    /// # Errors
    /// [`SearchError`].
    pub fn clear(&self) -> Result<(), SearchError> {
        {
            let writer = self.writer.lock().map_err(|_| SearchError::Poisoned)?;
            writer.delete_all_documents()?;
        }
        self.commit(0)
    }

    /// Number of listings in the index.
    #[must_use]
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Makes the next `n` calls of [`SearchIndex::apply`] fail before touching the index.
    #[cfg(test)]
    pub(crate) fn fail_next_applies(&self, n: usize) {
        self.failing_applies.store(n, AtomicOrdering::SeqCst);
    }

    /// Number of segments the index is made of now (each search visits every one).
    #[must_use]
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    fn commit(&self, seq: i64) -> Result<(), SearchError> {
        let mut writer = self.writer.lock().map_err(|_| SearchError::Poisoned)?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&format!("v{SCHEMA_VERSION}:{seq}"));
        prepared.commit()?;
        drop(writer);
        self.reader.reload()?;
        self.warm_in_background(WARM_MIN_DOCS);
        Ok(())
    }

    /// Builds, on a thread of its own, the search views of the current segments of at least
    /// `min_docs` documents that have none yet (at most one such thread at a time). A search
    /// that needs a view being built waits for it rather than building it again.
    fn warm_in_background(&self, min_docs: u32) {
        let searcher = self.reader.searcher();
        if !self.views.missing(&searcher, min_docs)
            || self.warming.swap(true, AtomicOrdering::AcqRel)
        {
            return;
        }
        let views = Arc::clone(&self.views);
        let warming = Arc::clone(&self.warming);
        let ships_to = self.fields.ships_to;
        let spawned = std::thread::Builder::new()
            .name("search-warm".into())
            .spawn(move || {
                if let Err(error) = views.warm(&searcher, ships_to, min_docs) {
                    tracing::warn!(%error, "building search views in the background failed; searches build them");
                }
                warming.store(false, AtomicOrdering::Release);
            });
        if spawned.is_err() {
            self.warming.store(false, AtomicOrdering::Release);
        }
    }

    /// Applies `changes` and commits, recording `seq` as included. Blocking: call it from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// [`SearchError`].
    pub fn apply(&self, changes: &[Change], seq: i64) -> Result<(), SearchError> {
        #[cfg(test)]
        if self
            .failing_applies
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |n| {
                n.checked_sub(1)
            })
            .is_ok()
        {
            return Err(SearchError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("injected failure"),
            });
        }
        // Deletions first, then each slot's final document: tantivy deletes only what was
        // added before a deletion, so this order is what keeps a slot's new version.
        let plan = slots::plan(changes);
        {
            let writer = self.writer.lock().map_err(|_| SearchError::Poisoned)?;
            if !plan.deletions.is_empty() {
                // `delete_query` is how tantivy's own `delete_term` deletes (a query run against
                // every segment at commit, limited to documents added before it).
                writer.delete_query(Box::new(slots::SlotsQuery::new(
                    self.fields.signer,
                    plan.deletions,
                )))?;
            }
            for (doc, slot) in plan.additions {
                writer.add_document(self.document(doc, slot))?;
            }
        }
        self.commit(seq)
    }

    /// The document of `doc`, whose slot's key is `slot` (see [`slots::key_words`]).
    fn document(&self, doc: &ListingDoc, slot: [u64; 2]) -> TantivyDocument {
        let f = &self.fields;
        let l = &doc.listing;
        let mut d = TantivyDocument::new();
        for (field, word) in f.id.iter().zip(be_words::<4>(doc.id.as_bytes())) {
            d.add_u64(*field, word);
        }
        for (field, word) in f.slot.iter().zip(slot) {
            d.add_u64(*field, word);
        }
        d.add_bytes(f.signer, &doc.signer.as_bytes()[..SIGNER_TERM_LEN]);
        for (field, word) in f.signer_rest.iter().zip(signer_rest(doc.signer.as_bytes())) {
            d.add_u64(*field, word);
        }
        d.add_text(f.title, &l.title);
        d.add_text(f.description, &l.description);
        d.add_text(f.prefix, &l.title);
        for tag in &l.tags {
            d.add_text(f.tags, tag);
            d.add_text(f.prefix, tag);
        }
        let category = if l.category.is_empty() {
            "uncategorized"
        } else {
            l.category.as_str()
        };
        for (end, _) in category.match_indices('/') {
            d.add_text(f.category, &category[..end]);
        }
        d.add_text(f.category, category);
        d.add_text(f.category_path, category);
        d.add_text(f.kind, listing_type_name(l.r#type));
        d.add_text(f.condition, condition_name(l.condition));
        let price = l.price.clone().unwrap_or_default();
        d.add_text(f.currency, &price.currency);
        d.add_f64(f.price, normalised_price(&price));
        let mut regions: Vec<&str> = l
            .shipping
            .iter()
            .flat_map(|s| s.regions.iter().map(String::as_str))
            .collect();
        if l.r#type != pb::ListingType::Physical as i32 {
            regions.push("ALL");
        }
        regions.sort_unstable();
        regions.dedup();
        for region in regions {
            d.add_text(f.ships_to, region);
        }
        d.add_u64(f.created_at, l.created_at);
        d.add_u64(
            f.expires_at,
            if l.expires_at == 0 {
                u64::MAX
            } else {
                l.expires_at
            },
        );
        d.add_f64(f.rating, doc.seller_rating);
        d.add_u64(f.moderated, u64::from(!l.accepted_moderators.is_empty()));
        d.add_u64(f.nsfw, u64::from(l.nsfw));
        d
    }
    /// The clauses of a search text, word by word: every word but the last (`rest`), then
    /// `last` (see [`query_words`]). A word matches a listing when one of its clauses does:
    /// its token in the title (boost 3), the tags (2) or the description (1), and for the last
    /// word also its unstemmed form as the prefix of a word of the title or tags (a constant
    /// 0.5). A word that yields no token (longer than any indexed word) is left out; a last word
    /// with neither token nor prefix is an empty word, which matches nothing.
    fn text_words(&self, last: &str, rest: &[String]) -> Vec<Vec<TextClause>> {
        let f = &self.fields;
        let mut analyzer = self
            .index
            .tokenizers()
            .get(TEXT_ANALYZER)
            .unwrap_or_else(text_analyzer);
        let mut prefix_analyzer = self
            .index
            .tokenizers()
            .get(PREFIX_ANALYZER)
            .unwrap_or_else(prefix_analyzer);
        // A word of `query_words` is letters and digits only, which the tokenizer keeps
        // whole: one token, or none when it is too long to be indexed.
        let token = |analyzer: &mut TextAnalyzer, word: &str| {
            let mut stream = analyzer.token_stream(word);
            stream.next().map(|t| t.text.clone())
        };
        let fields = |token: &str| -> Vec<TextClause> {
            [(f.title, 3.0), (f.tags, 2.0), (f.description, 1.0)]
                .into_iter()
                .map(|(field, boost)| TextClause::Term {
                    term: Term::from_field_text(field, token),
                    boost,
                })
                .collect()
        };
        let mut words: Vec<Vec<TextClause>> = rest
            .iter()
            .filter_map(|word| token(&mut analyzer, word))
            .map(|token| fields(&token))
            .collect();
        let mut last_word = token(&mut analyzer, last)
            .map(|token| fields(&token))
            .unwrap_or_default();
        if let Some(prefix) = token(&mut prefix_analyzer, last) {
            last_word.push(TextClause::Prefix(Term::from_field_text(f.prefix, &prefix)));
        }
        words.push(last_word);
        words
    }

    /// The tantivy clauses of a search text's words ([`SearchIndex::text_words`]), for a
    /// conjunction.
    ///
    /// Each word is one flat union of term queries, and the caller adds its filter to the same
    /// conjunction: tantivy then walks one union per word, not unions nested in unions.
    ///
    /// `leaf` may wrap each term and prefix query (the search filters them with it).
    fn conjunction(
        words: Vec<Vec<TextClause>>,
        leaf: &dyn Fn(Box<dyn Query>) -> Box<dyn Query>,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        words
            .into_iter()
            .map(|word| {
                let union: Vec<(Occur, Box<dyn Query>)> = word
                    .into_iter()
                    .map(|clause| (Occur::Should, leaf(clause.query())))
                    .collect();
                let query: Box<dyn Query> = Box::new(BooleanQuery::new(union));
                (Occur::Must, query)
            })
            .collect()
    }

    /// How many results to cache (0 turns the cache off).
    pub fn set_result_cache_entries(&self, entries: usize) {
        self.cache_capacity.store(entries, AtomicOrdering::Relaxed);
        if entries == 0
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.entries.clear();
        }
    }

    /// Runs a search. Blocking: call it on a [`SearchPool`] thread.
    ///
    /// Identical queries (same text, filters, sort and page) within [`RESULT_CACHE_TTL`] and
    /// with no index commit in between are answered from a cache.
    ///
    /// # Errors
    /// [`SearchError`].
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResult, SearchError> {
        let searcher = self.reader.searcher();
        let generation = searcher.generation().generation_id();
        let capacity = self.cache_capacity.load(AtomicOrdering::Relaxed);
        if capacity == 0 {
            return self.compute(&searcher, q);
        }
        // The clock is left out of the key: the TTL bounds how stale `now` may be.
        let key = format!(
            "{:?}",
            SearchQuery {
                now: 0,
                ..q.clone()
            }
        );
        // A poisoned cache is bypassed; `map_err` drops its guard before the search runs.
        let flight = match self.cache.lock().map_err(drop) {
            Ok(mut cache) => {
                if cache.generation != generation {
                    cache.generation = generation;
                    cache.entries.clear();
                    cache.in_flight.clear();
                }
                if let Some((at, result)) = cache.entries.get(&key)
                    && at.elapsed() < RESULT_CACHE_TTL
                {
                    metrics::counter!("souk_search_cache_total", "result" => "hit").increment(1);
                    return Ok(result.clone());
                }
                match cache.in_flight.get(&key) {
                    Some(flight) => Err(Arc::clone(flight)),
                    None => {
                        let flight = Arc::new(Flight::default());
                        cache.in_flight.insert(key.clone(), Arc::clone(&flight));
                        Ok(flight)
                    }
                }
            }
            Err(()) => return self.compute(&searcher, q),
        };
        let flight = match flight {
            Ok(flight) => flight,
            // Someone is computing this very query in this generation: take its answer.
            Err(leader) => {
                if let Some(result) = leader.wait(RESULT_CACHE_TTL) {
                    metrics::counter!("souk_search_cache_total", "result" => "shared").increment(1);
                    return Ok(result);
                }
                metrics::counter!("souk_search_cache_total", "result" => "miss").increment(1);
                return self.compute(&searcher, q);
            }
        };
        metrics::counter!("souk_search_cache_total", "result" => "miss").increment(1);
        let mut guard = FlightGuard {
            index: self,
            key: key.clone(),
            flight,
            result: None,
        };
        let result = self.compute(&searcher, q)?;
        guard.result = Some(result.clone());
        // Cached before the flight ends, so a query arriving in between finds one or the other.
        if let Ok(mut cache) = self.cache.lock()
            && cache.generation == generation
        {
            if cache.entries.len() >= capacity {
                cache
                    .entries
                    .retain(|_, (at, _)| at.elapsed() < RESULT_CACHE_TTL);
                if cache.entries.len() >= capacity {
                    cache.entries.clear();
                }
            }
            cache.entries.insert(key, (Instant::now(), result.clone()));
        }
        drop(guard);
        Ok(result)
    }

    /// How many searches were computed since the index was opened (the rest were answered
    /// from the result cache or shared with an identical one being computed).
    #[must_use]
    pub fn computations(&self) -> usize {
        self.computations.load(AtomicOrdering::Relaxed)
    }

    fn compute(
        &self,
        searcher: &tantivy::Searcher,
        q: &SearchQuery,
    ) -> Result<SearchResult, SearchError> {
        self.computations.fetch_add(1, AtomicOrdering::Relaxed);
        let segments = searcher.segment_readers();
        let views = self.views.of(searcher, self.fields.ships_to)?;
        let mut filtered = Vec::with_capacity(views.len());
        for (view, segment) in views.iter().zip(segments) {
            filtered.push(view.filter(segment, q, self.fields.signer)?);
        }
        let words = query_words(&q.text);
        let text = words.split_last();
        let has_text = text.is_some();
        let sort = q.sort.unwrap_or(if has_text {
            Sort::Relevance
        } else {
            Sort::Newest
        });
        let limit = q.limit.max(1);
        // Hits in relevance order come from tantivy's scoring; every other order from the
        // views' sort orders.
        let mut scored: Option<Vec<DocAddress>> = None;
        let words = text.map(|(last, rest)| self.text_words(last, rest));
        let scan = match &words {
            Some(words) => text::TextScan::new(searcher, words)?,
            None => None,
        };
        let matches: Vec<bitmaps::Bits> = match (words, scan) {
            // One or two words: one pass per segment (`text.rs`).
            (Some(_), Some(scan)) => {
                let mut top = (sort == Sort::Relevance)
                    .then(|| text::TopScores::new(q.offset.saturating_add(limit)));
                let mut matches = Vec::with_capacity(segments.len());
                for (ord, ((segment, filter), view)) in
                    segments.iter().zip(&filtered).zip(views.iter()).enumerate()
                {
                    let ord = u32::try_from(ord).unwrap_or(u32::MAX);
                    matches.push(scan.segment(segment, &view.terms, ord, filter, top.as_mut())?);
                }
                scored = top.map(|top| top.addresses(q.offset));
                matches
            }
            // Longer texts: tantivy's conjunction of the words and the filter.
            (Some(words), None) => {
                let filter = bitmaps::FilterQuery::new(
                    segments
                        .iter()
                        .map(tantivy::SegmentReader::segment_id)
                        .zip(filtered),
                );
                let through_filter = |inner: Box<dyn Query>| -> Box<dyn Query> {
                    Box::new(bitmaps::FilteredQuery {
                        inner,
                        filter: filter.clone(),
                    })
                };
                let mut clauses = Self::conjunction(words, &through_filter);
                clauses.push((Occur::Must, Box::new(filter.clone())));
                let query = BooleanQuery::new(clauses);
                let fruits = if sort == Sort::Relevance {
                    let top = TopDocs::with_limit(limit)
                        .and_offset(q.offset)
                        .order_by_score();
                    let (top, fruits) = searcher.search(&query, &(top, bitmaps::MatchCollector))?;
                    scored = Some(top.into_iter().map(|(_, a)| a).collect());
                    fruits
                } else {
                    searcher.search(&query, &bitmaps::MatchCollector)?
                };
                let mut matches: Vec<bitmaps::Bits> = segments
                    .iter()
                    .map(|s| bitmaps::Bits::empty(s.max_doc()))
                    .collect();
                for (ord, bits) in fruits {
                    if let Some(slot) = matches.get_mut(ord as usize) {
                        *slot = bits;
                    }
                }
                matches
            }
            (None, _) => filtered,
        };
        let wanted = q.offset.saturating_add(limit);
        let mut total = 0u64;
        let mut counts: [HashMap<String, u64>; 4] = Default::default();
        let mut tops = Vec::new();
        for (ord, (view, m)) in views.iter().zip(&matches).enumerate() {
            let count = m.count();
            total += count;
            view.count_facets(m, count, q, &mut counts);
            if scored.is_none() {
                let ord = u32::try_from(ord).unwrap_or(u32::MAX);
                tops.extend(
                    view.top(m, count, sort, wanted)
                        .into_iter()
                        .map(|(key, doc)| (key, ord, doc)),
                );
            }
        }
        let addresses = scored.unwrap_or_else(|| {
            tops.sort_unstable();
            tops.into_iter()
                .skip(q.offset)
                .take(limit)
                .map(|(_, segment, doc)| DocAddress::new(segment, doc))
                .collect()
        });
        let [categories, kinds, conditions, currencies] =
            counts.map(|c| c.into_iter().collect::<Counts>());
        let mut facets = BTreeMap::new();
        facets.insert("category", category_children(q, categories));
        facets.insert("type", kinds);
        facets.insert("condition", conditions);
        facets.insert("currency", currencies);
        Ok(SearchResult {
            ids: Self::ids(searcher, addresses)?,
            total: usize::try_from(total).unwrap_or(usize::MAX),
            facets,
        })
    }

    /// The object ids at `addresses`, each segment's id columns opened once.
    fn ids(
        searcher: &tantivy::Searcher,
        addresses: Vec<DocAddress>,
    ) -> Result<Vec<ObjectId>, SearchError> {
        let mut ids = Vec::with_capacity(addresses.len());
        let mut columns: HashMap<u32, IdColumns> = HashMap::new();
        for address in addresses {
            let segment = address.segment_ord;
            let columns = match columns.entry(segment) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(IdColumns::open(searcher.segment_reader(segment))?)
                }
            };
            ids.push(columns.get(address.doc_id));
        }
        Ok(ids)
    }
}

/// Counts per full category path → counts per child of the query's category (per top-level
/// category when it has none). A listing filed under the category itself is no child's.
fn category_children(q: &SearchQuery, paths: Counts) -> Counts {
    let root = q.category.as_deref().unwrap_or_default().trim_matches('/');
    fold_categories(root, paths)
}

fn fold_categories(root: &str, paths: Counts) -> Counts {
    let mut children = Counts::new();
    for (path, count) in paths {
        let rest = if root.is_empty() {
            Some(path.as_str())
        } else {
            path.strip_prefix(root)
                .and_then(|rest| rest.strip_prefix('/'))
        };
        let Some(rest) = rest.filter(|r| !r.is_empty()) else {
            continue;
        };
        let child = rest.split('/').next().unwrap_or(rest);
        let child = if root.is_empty() {
            child.to_string()
        } else {
            format!("{root}/{child}")
        };
        *children.entry(child).or_default() += count;
    }
    children
}

/// The fast fields counted for facets, in the order of [`FacetCounter`]'s fruit: category path,
/// type, condition, currency.
const FACET_FIELDS: [&str; 4] = ["category_path", "type", "condition", "currency"];

/// Counts per value of one facet.
type Counts = BTreeMap<String, u64>;

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    fn seller(seed: u8) -> PublicKey {
        souk_protocol::IdentityKey::from_secret_bytes(&[seed; 32]).public_key()
    }

    fn listing(slug: &str, category: &str, currency: &str, nsfw: bool) -> pb::Listing {
        pb::Listing {
            slug: slug.into(),
            title: format!("{slug} for sale"),
            category: category.into(),
            r#type: pb::ListingType::Physical as i32,
            condition: 1,
            price: Some(pb::Price {
                amount: 1_000,
                currency: currency.into(),
                divisibility: 2,
            }),
            created_at: 1_000,
            nsfw,
            ..pb::Listing::default()
        }
    }

    fn upsert(id: u8, seller_seed: u8, listing: pb::Listing) -> Change {
        upsert_rated(id, seller_seed, listing, 0.0)
    }

    fn upsert_rated(id: u8, seller_seed: u8, listing: pb::Listing, seller_rating: f64) -> Change {
        Change::Upsert(Box::new(ListingDoc {
            id: ObjectId([id; 32]),
            signer: seller(seller_seed),
            listing,
            seller_rating,
        }))
    }

    fn browse(index: &SearchIndex, category: Option<&str>) -> SearchResult {
        index
            .search(&SearchQuery {
                category: category.map(str::to_string),
                limit: 10,
                now: 2_000,
                ..SearchQuery::default()
            })
            .expect("search")
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    /// The first byte of each hit's id (tests give every listing an id of one repeated byte),
    /// in the order of the results.
    fn ranked_ids(index: &SearchIndex, query: &SearchQuery) -> Vec<u8> {
        index
            .search(query)
            .expect("search")
            .ids
            .iter()
            .map(|id| id.0[0])
            .collect()
    }

    /// [`ranked_ids`], sorted: which listings match, whatever their order.
    fn hit_ids(index: &SearchIndex, query: &SearchQuery) -> Vec<u8> {
        let mut ids = ranked_ids(index, query);
        ids.sort_unstable();
        ids
    }

    /// A slot is its seller's key and its slug together: a withdrawal or a new version takes
    /// out that one listing, never the same slug of another seller nor another slug of the same
    /// seller; the seller filter matches the seller's key.
    #[test]
    fn a_slot_is_replaced_and_removed_only_by_its_own_seller_and_slug() {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 15_000_000).expect("open");
        index.set_result_cache_entries(0);
        let ids = |query: &SearchQuery| hit_ids(&index, query);
        let everything = SearchQuery {
            limit: 10,
            now: 2_000,
            ..SearchQuery::default()
        };
        index
            .apply(
                &[
                    upsert(1, 1, listing("kettle", "home", "EUR", false)),
                    upsert(2, 1, listing("kettles", "home", "EUR", false)),
                    upsert(3, 2, listing("kettle", "home", "EUR", false)),
                ],
                1,
            )
            .expect("apply");
        assert_eq!(ids(&everything), [1, 2, 3]);
        // Seller 2 replaces its kettle: seller 1's kettle stays.
        index
            .apply(&[upsert(4, 2, listing("kettle", "home", "USD", false))], 2)
            .expect("apply");
        assert_eq!(ids(&everything), [1, 2, 4]);
        // Seller 1 withdraws its kettle: its "kettles" and seller 2's kettle stay.
        index
            .apply(&[Change::remove(&seller(1), "kettle")], 3)
            .expect("apply");
        assert_eq!(ids(&everything), [2, 4]);
        for (seed, expected) in [(1, vec![2]), (2, vec![4]), (3, vec![])] {
            let of_seller = SearchQuery {
                seller: Some(seller(seed)),
                ..everything.clone()
            };
            assert_eq!(ids(&of_seller), expected, "seller {seed}");
        }
    }

    /// Two sellers whose keys begin with the same [`SIGNER_TERM_LEN`] bytes, and so share
    /// their `signer` term: the first is `seller(1)`, the second differs from it in one later
    /// byte (the first such change that is still a valid key).
    fn sellers_sharing_a_term() -> (PublicKey, PublicKey) {
        let first = seller(1);
        let second = (1..=u8::MAX)
            .find_map(|flip| {
                let mut bytes = *first.as_bytes();
                bytes[20] ^= flip;
                PublicKey::from_bytes(&bytes).ok()
            })
            .expect("about half of all changes give a valid key");
        assert_eq!(
            first.as_bytes()[..SIGNER_TERM_LEN],
            second.as_bytes()[..SIGNER_TERM_LEN]
        );
        assert_ne!(first, second);
        (first, second)
    }

    /// The index keeps only the first bytes of a seller's key as its term; a seller whose key
    /// shares them (found by chance, or made so on purpose) is still another seller: the
    /// seller filter, with the bitmaps and with tantivy alone, never returns the other's
    /// listings, and replacing or withdrawing a listing never takes out the other's listing of
    /// the same slug.
    #[test]
    fn sellers_whose_keys_share_the_indexed_bytes_stay_apart() {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 15_000_000).expect("open");
        index.set_result_cache_entries(0);
        let (alice, mallory) = sellers_sharing_a_term();
        let put = |id: u8, signer: PublicKey, slug: &str| {
            Change::Upsert(Box::new(ListingDoc {
                id: ObjectId([id; 32]),
                signer,
                listing: listing(slug, "home", "EUR", false),
                seller_rating: 0.0,
            }))
        };
        let everything = SearchQuery {
            limit: 10,
            now: 2_000,
            ..SearchQuery::default()
        };
        let of = |signer: PublicKey| SearchQuery {
            seller: Some(signer),
            ..everything.clone()
        };
        let check = |expected: [&[u8]; 3]| {
            let searcher = index.reader.searcher();
            for (query, want) in [&everything, &of(alice), &of(mallory)]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(hit_ids(&index, query), want, "{:?}", query.seller);
                let reference = index.compute_reference(&searcher, query).expect("tantivy");
                let mut reference: Vec<u8> = reference.ids.iter().map(|id| id.0[0]).collect();
                reference.sort_unstable();
                assert_eq!(reference, want, "tantivy alone, {:?}", query.seller);
            }
        };
        index
            .apply(
                &[
                    put(1, alice, "kettle"),
                    put(2, mallory, "kettle"),
                    put(3, mallory, "mug"),
                ],
                1,
            )
            .expect("apply");
        check([&[1, 2, 3], &[1], &[2, 3]]);
        // In a later commit (another segment): Mallory replaces her kettle, Alice's stays.
        index.apply(&[put(4, mallory, "kettle")], 2).expect("apply");
        check([&[1, 3, 4], &[1], &[3, 4]]);
        // Alice withdraws hers: Mallory's kettle stays.
        index
            .apply(&[Change::remove(&alice, "kettle")], 3)
            .expect("apply");
        check([&[3, 4], &[], &[3, 4]]);
        // And the other way round.
        index
            .apply(
                &[put(5, alice, "kettle"), Change::remove(&mallory, "kettle")],
                4,
            )
            .expect("apply");
        check([&[3, 5], &[5], &[3]]);
    }

    /// A commit of many changes leaves the index exactly as applying them one by one would:
    /// whatever mix of first versions, replacements and withdrawals of the same few slots a
    /// commit holds, and whichever earlier commit (segment) holds a slot's document. The model
    /// is a map from slot to the id of its last version.
    #[test]
    fn a_commit_of_many_changes_ends_as_its_changes_one_by_one_would() {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 15_000_000).expect("open");
        let mut rng = Rng(7);
        let mut model: HashMap<(u8, String), ObjectId> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut next_id = 0u32;
        for batch in 1..=40 {
            let mut changes = Vec::new();
            for _ in 0..rng.below(30) {
                let seller_seed = 1 + u8::try_from(rng.below(3)).expect("small");
                let slug = format!("item-{}", rng.below(12));
                let key = (seller_seed, slug.clone());
                if rng.below(4) == 0 {
                    changes.push(Change::remove(&seller(seller_seed), &slug));
                    model.remove(&key);
                    continue;
                }
                next_id += 1;
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&next_id.to_be_bytes());
                let doc = Box::new(ListingDoc {
                    id: ObjectId(id),
                    signer: seller(seller_seed),
                    listing: random_listing(&mut rng, &slug),
                    seller_rating: 0.0,
                });
                // The ingest path says Insert only for a slot's very first version.
                changes.push(if seen.insert(key.clone()) {
                    Change::Insert(doc)
                } else {
                    Change::Upsert(doc)
                });
                model.insert(key, ObjectId(id));
            }
            index.apply(&changes, batch).expect("apply");
            let expected: std::collections::HashSet<String> =
                model.values().map(ToString::to_string).collect();
            assert_eq!(
                indexed_ids(dir.path()).expect("ids"),
                expected,
                "batch {batch}"
            );
            assert_eq!(index.num_docs(), expected.len() as u64, "batch {batch}");
        }
        assert!(index.segments() > 1, "the changes span segments");
    }

    /// Ranges are read from the columns: a listing is hidden from the second it expires (never,
    /// without an expiry); the price and rating bounds are inclusive; price is compared in whole
    /// units, whatever the divisibility.
    #[test]
    fn expiry_price_and_rating_ranges_select_by_the_column() {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 15_000_000).expect("open");
        index.set_result_cache_entries(0);
        let priced = |id: u8, amount: u64, divisibility: u32, expires_at: u64, rating: f64| {
            let mut l = listing(&format!("item{id}"), "home", "EUR", false);
            l.price = Some(pb::Price {
                amount,
                currency: "EUR".into(),
                divisibility,
            });
            l.expires_at = expires_at;
            upsert_rated(id, id, l, rating)
        };
        index
            .apply(
                &[
                    priced(1, 500, 2, 0, 1.0),            // 5.00, never expires
                    priced(2, 1_000, 0, 2_001, 4.5),      // 1000, expires just after now
                    priced(3, 2_000, 2, 2_000, 5.0),      // 20.00, expires now
                    priced(4, 10_000_000, 6, 1_500, 3.0), // 10, expired
                ],
                1,
            )
            .expect("apply");
        let ids = |query: SearchQuery| {
            hit_ids(
                &index,
                &SearchQuery {
                    limit: 10,
                    now: 2_000,
                    ..query
                },
            )
        };
        assert_eq!(ids(SearchQuery::default()), [1, 2]);
        let price = |min, max| SearchQuery {
            price_min: min,
            price_max: max,
            ..SearchQuery::default()
        };
        assert_eq!(ids(price(Some(5.0), Some(5.0))), [1]);
        assert_eq!(ids(price(Some(5.01), None)), [2]);
        assert_eq!(ids(price(None, Some(999.99))), [1]);
        assert_eq!(ids(price(Some(6.0), Some(999.0))), Vec::<u8>::new());
        let rating = |min| SearchQuery {
            min_rating: Some(min),
            ..SearchQuery::default()
        };
        assert_eq!(ids(rating(4.5)), [2]);
        assert_eq!(ids(rating(1.0)), [1, 2]);
        assert_eq!(ids(rating(4.6)), Vec::<u8>::new());
        // A minute later the second listing is gone too.
        assert_eq!(
            index
                .search(&SearchQuery {
                    limit: 10,
                    now: 2_060,
                    ..SearchQuery::default()
                })
                .expect("search")
                .total,
            1
        );
    }

    /// Filters do not rank: among the listings that ship to DE, the better text match comes
    /// first although it is reached through the common "ships everywhere" term and the other
    /// through the rare "DE".
    #[test]
    fn filters_select_without_changing_the_text_ranking() {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 15_000_000).expect("open");
        index.set_result_cache_entries(0);
        // The better match: "mug" in a shorter title; digital, so it ships everywhere.
        let mut everywhere = listing("mugs", "home", "EUR", false);
        everywhere.title = "mug".into();
        everywhere.r#type = pb::ListingType::Digital as i32;
        // The weaker match: "mug" in a longer title; ships to DE only.
        let mut germany = listing("cup", "home", "EUR", false);
        germany.title = "mug cup".into();
        germany.shipping = vec![pb::ShippingOption {
            name: "Germany".into(),
            regions: vec!["DE".into()],
            ..pb::ShippingOption::default()
        }];
        let mut changes = vec![upsert(1, 1, everywhere), upsert(2, 2, germany)];
        // Many more listings ship everywhere, which makes "ALL" a common term and "DE" a rare one.
        for n in 0..30u8 {
            let mut filler = listing(&format!("poster{n}"), "art", "EUR", false);
            filler.r#type = pb::ListingType::Digital as i32;
            changes.push(upsert(10 + n, 3, filler));
        }
        index.apply(&changes, 1).expect("apply");
        let ranked = |ships_to: Option<&str>| {
            ranked_ids(
                &index,
                &SearchQuery {
                    text: "mug".into(),
                    ships_to: ships_to.map(str::to_string),
                    limit: 10,
                    now: 2_000,
                    ..SearchQuery::default()
                },
            )
        };
        assert_eq!(ranked(None), [1, 2]);
        assert_eq!(ranked(Some("DE")), [1, 2]);
        assert_eq!(ranked(Some("FR")), [1]);
    }

    /// Three segments (a commit each), a replaced listing (a deleted document in an older
    /// segment, so matches are collected one by one rather than in blocks) and a hidden NSFW
    /// listing: the total and facets count each visible listing once, hit ids come back intact.
    /// A small deterministic generator for the differential test.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
            &from[self.below(from.len() as u64) as usize]
        }
    }

    /// A listing with values drawn from small sets, so that filters, facets and sort keys
    /// collide (ties) and free-form values occur rarely.
    fn random_listing(rng: &mut Rng, slug: &str) -> pb::Listing {
        const WORDS: &[&str] = &[
            "mug", "mugs", "kettle", "wool", "sweater", "oak", "table", "boots", "phone", "lamp",
        ];
        const CATEGORIES: &[&str] = &[
            "home",
            "home/kitchen",
            "home/kitchen/drinkware",
            "home/furniture",
            "clothing",
            "clothing/shoes",
            "electronics",
            "",
            "odd/rare/path",
        ];
        const REGIONS: &[&[&str]] = &[&["DE"], &["US", "CA"], &["ALL"], &["DE", "FR"], &[]];
        let kind = *rng.pick(&[
            pb::ListingType::Physical,
            pb::ListingType::Physical,
            pb::ListingType::Digital,
            pb::ListingType::Service,
        ]);
        let title: Vec<&str> = (0..3).map(|_| *rng.pick(WORDS)).collect();
        let mut l = pb::Listing {
            slug: slug.into(),
            title: title.join(" "),
            description: rng.pick(WORDS).to_string(),
            tags: vec![rng.pick(WORDS).to_string()],
            category: rng.pick(CATEGORIES).to_string(),
            r#type: kind as i32,
            condition: i32::try_from(rng.below(4)).expect("small"),
            price: Some(pb::Price {
                amount: rng.below(40) * 250,
                currency: rng.pick(&["EUR", "EUR", "USD", "BTC", "XAU"]).to_string(),
                divisibility: u32::try_from(rng.below(3)).expect("small"),
            }),
            created_at: 1_000 + rng.below(50),
            expires_at: *rng.pick(&[0, 0, 0, 1_500, 2_000, 2_001, 9_000]),
            nsfw: rng.below(8) == 0,
            ..pb::Listing::default()
        };
        if rng.below(100) == 0 {
            l.category = "rare/one".into();
        }
        if rng.below(3) == 0 {
            l.accepted_moderators = vec![Default::default()];
        }
        l.shipping = vec![pb::ShippingOption {
            regions: rng.pick(REGIONS).iter().map(|r| (*r).to_string()).collect(),
            ..pb::ShippingOption::default()
        }];
        l
    }

    #[test]
    fn bitmaps_answer_every_query_as_tantivy_alone_does() {
        // Six small segments, with replacements and removals that delete documents of earlier
        // segments.
        let (_dir, index) = random_index(6, 40, 0x5eed_1234_abcd_0001);
        assert!(index.segments() > 1, "the test needs several segments");
        agree_with_tantivy(&index);
    }

    #[test]
    fn bitmaps_of_a_large_segment_agree_with_tantivy_too() {
        // One segment large enough that rare values are kept as lists rather than bitsets, and
        // narrow searches count facets and rank hits match by match.
        let (_dir, index) = random_index(1, 3_000, 0x5eed_1234_abcd_0002);
        assert_eq!(index.segments(), 1);
        agree_with_tantivy(&index);
    }

    #[test]
    fn one_pass_text_scores_are_tantivys_to_the_bit() {
        // Every match of every text, scored in one pass and by tantivy's query over the same
        // filter: the same documents, in the same order, with identical `f32` scores.
        for (batches, per_batch, seed) in [
            (6, 40, 0x5eed_1234_abcd_0003),
            (1, 3_000, 0x5eed_1234_abcd_0004),
        ] {
            let (_dir, index) = random_index(batches, per_batch, seed);
            let searcher = index.reader.searcher();
            let segments = searcher.segment_readers();
            let views = index
                .views
                .of(&searcher, index.fields.ships_to)
                .expect("views");
            for (text, filtered) in [
                ("mug", SearchQuery::default()),
                ("wool sweat", SearchQuery::default()),
                ("oak table", SearchQuery::default()),
                ("k", SearchQuery::default()),
                (
                    "lamp",
                    SearchQuery {
                        category: Some("home".into()),
                        ..SearchQuery::default()
                    },
                ),
                (
                    "table mu",
                    SearchQuery {
                        ships_to: Some("DE".into()),
                        nsfw: true,
                        ..SearchQuery::default()
                    },
                ),
            ] {
                let q = SearchQuery {
                    now: 2_000,
                    ..filtered
                };
                let filters: Vec<bitmaps::Bits> = views
                    .iter()
                    .zip(segments)
                    .map(|(view, segment)| view.filter(segment, &q, index.fields.signer))
                    .collect::<Result<_, _>>()
                    .expect("filter");
                let words = query_words(text);
                let (last, rest) = words.split_last().expect("words");
                let scan = text::TextScan::new(&searcher, &index.text_words(last, rest))
                    .expect("prepare")
                    .expect("at most two words");
                let mut top = text::TopScores::new(100_000);
                let mut total = 0;
                for (ord, ((segment, filter), view)) in
                    segments.iter().zip(&filters).zip(views.iter()).enumerate()
                {
                    let ord = u32::try_from(ord).expect("few segments");
                    total += scan
                        .segment(segment, &view.terms, ord, filter, Some(&mut top))
                        .expect("scan")
                        .count();
                }
                let one_pass = top.scored();
                let filter = bitmaps::FilterQuery::new(
                    segments
                        .iter()
                        .map(tantivy::SegmentReader::segment_id)
                        .zip(filters),
                );
                let mut clauses =
                    SearchIndex::conjunction(index.text_words(last, rest), &|query| query);
                clauses.push((Occur::Must, Box::new(filter)));
                let by_tantivy = searcher
                    .search(
                        &BooleanQuery::new(clauses),
                        &TopDocs::with_limit(100_000).order_by_score(),
                    )
                    .expect("search");
                assert!(total > 0, "{text}: the test wants matches");
                assert_eq!(one_pass.len() as u64, total, "{text}");
                assert_eq!(one_pass.len(), by_tantivy.len(), "{text}");
                for ((score, address), (tantivy_score, tantivy_address)) in
                    one_pass.iter().zip(&by_tantivy)
                {
                    assert_eq!(address, tantivy_address, "{text}");
                    assert_eq!(
                        score.to_bits(),
                        tantivy_score.to_bits(),
                        "{text} at {address:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn price_and_rating_ranges_from_prefix_bitsets_are_exactly_the_ranges() {
        let (_dir, index) = random_index(1, 3_000, 0x5eed_1234_abcd_0005);
        let searcher = index.reader.searcher();
        let views = index
            .views
            .of(&searcher, index.fields.ships_to)
            .expect("views");
        assert_eq!(views.len(), 1);
        assert!(
            views[0].check_key_ranges() > 100,
            "most ranges use the steps"
        );
    }

    #[test]
    fn a_rare_word_far_before_the_other_words_first_match_is_skipped_not_misread() {
        // "alpha" is the rarer word and occurs long before "beta" first does, so the scan's
        // window starts at beta's first document while alpha's cursor is still far behind it.
        let (_dir, index) = index_of_titles(8_000, |i| {
            match i {
                5 | 7_000 => "alpha beta",
                3_000..3_100 => "beta",
                1 | 6_000 => "alpha",
                _ => "filler",
            }
            .into()
        });
        for text in ["alpha beta", "beta alpha", "alpha be", "beta alph"] {
            assert_eq!(both_paths_agree(&index, text), 2, "{text}");
        }
    }

    #[test]
    fn a_prefix_expands_to_the_same_64_words_on_both_paths() {
        // 100 words start with "pre", three listings each: only the first 64 in term order
        // match the prefix, and the one-pass scan must pick the same ones tantivy's prefix
        // query does.
        let (_dir, index) = index_of_titles(300, |i| format!("pre{:03} oak", (i * 37) % 100));
        assert_eq!(both_paths_agree(&index, "pre"), 192);
        assert_eq!(both_paths_agree(&index, "oak pre"), 192);
        assert_eq!(both_paths_agree(&index, "pre00"), 30);
    }

    #[test]
    fn once_the_top_is_full_windows_of_prefix_matches_alone_are_not_scored() {
        // "refurb" is a word of one title only; every other title has "refurbished", which
        // the prefix alone matches (its stem is another word), for the same constant score.
        let (_dir, index) = index_of_titles(16_384, |i| {
            if i == 15_000 {
                "refurb phone".into()
            } else {
                "refurbished phone".into()
            }
        });
        let searcher = index.reader.searcher();
        let scan = pages_agree_and_scan(&index, &searcher, "refurb", 16_384);
        let mut top = text::TopScores::new(5);
        let matches = scan
            .segment(
                &searcher.segment_readers()[0],
                &text::TermViews::default(),
                0,
                &bitmaps::Bits::full(16_384),
                Some(&mut top),
            )
            .expect("scan");
        assert_eq!(matches.count(), 16_384, "every match counts, scored or not");
        let best: Vec<u32> = top.scored().iter().map(|(_, a)| a.doc_id).collect();
        assert_eq!(best, vec![15_000, 0, 1, 2, 3]);
        // The first window fills the top; of the other three, only the one holding the
        // title with the word itself is scored.
        let stats = scan.stats();
        assert_eq!((stats.windows, stats.scored), (4, 2), "{stats:?}");
    }

    #[test]
    fn windows_whose_best_possible_score_cannot_enter_are_read_for_matches_only() {
        // "oak" is in every title, so its documents are kept as a bitset. Every title but one
        // is "oak stool"; the one is "oak" alone, a shorter field and so a higher score.
        let (_dir, index) = index_of_titles(16_384, |i| {
            if i == 10_000 {
                "oak".into()
            } else {
                "oak stool".into()
            }
        });
        let searcher = index.reader.searcher();
        let scan = pages_agree_and_scan(&index, &searcher, "oak", 16_384);
        let terms = text::TermViews::default();
        let segment = &searcher.segment_readers()[0];
        let filter = bitmaps::Bits::full(16_384);
        for round in 0..2 {
            let mut top = text::TopScores::new(5);
            let matches = scan
                .segment(segment, &terms, 0, &filter, Some(&mut top))
                .expect("scan");
            assert_eq!(matches.count(), 16_384, "every match counts, scored or not");
            let best: Vec<u32> = top.scored().iter().map(|(_, a)| a.doc_id).collect();
            assert_eq!(best, vec![10_000, 0, 1, 2, 3], "round {round}");
            // The title and prefix views are built on the first scan and used by the second.
            assert_eq!(terms.len(), 2, "round {round}");
        }
        // Each round: the first window fills the top with the best score its own documents
        // can have; of the other three, only the one holding the shorter title can beat it.
        let stats = scan.stats();
        assert_eq!((stats.windows, stats.scored), (8, 4), "{stats:?}");
    }

    #[test]
    fn text_scans_over_many_windows_agree_with_tantivy() {
        // One segment of four windows: the best scores of windows decide which are scored.
        let (_dir, index) = random_index(1, 13_000, 0x5eed_1234_abcd_0005);
        assert_eq!(index.segments(), 1);
        agree_with_tantivy(&index);
    }

    /// Searches `text` in three pages (the top 5, 3 after the first 2, all) through the bitmaps
    /// and through tantivy alone, wants the same answers and `total` matches, and returns the
    /// text's one-pass scan for `searcher`.
    fn pages_agree_and_scan(
        index: &SearchIndex,
        searcher: &tantivy::Searcher,
        text: &str,
        total: usize,
    ) -> text::TextScan {
        for (limit, offset) in [(5, 0), (3, 2), (10_000, 0)] {
            let q = SearchQuery {
                text: text.into(),
                limit,
                offset,
                now: 2_000,
                ..SearchQuery::default()
            };
            let got = index.compute(searcher, &q).expect("search");
            let want = index.compute_reference(searcher, &q).expect("tantivy");
            assert_eq!(got.total, total);
            assert_eq!(got.total, want.total, "{limit}");
            assert_eq!(got.ids, want.ids, "{limit}");
            assert_eq!(got.facets, want.facets, "{limit}");
        }
        let words = query_words(text);
        let (last, rest) = words.split_last().expect("a word");
        text::TextScan::new(searcher, &index.text_words(last, rest))
            .expect("prepare")
            .expect("one word")
    }

    /// One segment of `n` listings with the titles `title` gives them.
    fn index_of_titles(n: u32, title: impl Fn(u32) -> String) -> (tempfile::TempDir, SearchIndex) {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 50_000_000).expect("open");
        index.set_result_cache_entries(0);
        let changes: Vec<Change> = (0..n)
            .map(|i| {
                let mut l = listing(&format!("item-{i}"), "home", "EUR", false);
                l.title = title(i);
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                Change::Upsert(Box::new(ListingDoc {
                    id: ObjectId(id),
                    signer: seller(1),
                    listing: l,
                    seller_rating: 0.0,
                }))
            })
            .collect();
        index.apply(&changes, 1).expect("apply");
        (dir, index)
    }

    /// Searches `text` (all hits on one page) through the bitmaps and through tantivy alone,
    /// wants the same answer, and returns its total.
    fn both_paths_agree(index: &SearchIndex, text: &str) -> usize {
        let searcher = index.reader.searcher();
        let q = SearchQuery {
            text: text.into(),
            limit: 10_000,
            now: 2_000,
            ..SearchQuery::default()
        };
        let got = index.compute(&searcher, &q).expect("search");
        let want = index.compute_reference(&searcher, &q).expect("tantivy");
        assert_eq!(got.total, want.total, "{text}");
        assert_eq!(got.ids, want.ids, "{text}");
        assert_eq!(got.facets, want.facets, "{text}");
        got.total
    }

    /// An index of `batches` commits of `per_batch` random changes each.
    fn random_index(batches: i64, per_batch: u32, seed: u64) -> (tempfile::TempDir, SearchIndex) {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, _) = SearchIndex::open(dir.path(), 50_000_000).expect("open");
        index.set_result_cache_entries(0);
        let mut rng = Rng(seed);
        let mut id = 0u32;
        let slots = u64::from(per_batch) * 4;
        for batch in 0..batches {
            let mut changes = Vec::new();
            for _ in 0..per_batch {
                id += 1;
                let seller_seed = 1 + u8::try_from(rng.below(5)).expect("small");
                let slug = format!("item-{}", rng.below(slots));
                let rating = *rng.pick(&[0.0, 3.5, 4.0, 4.0, 5.0]);
                if rng.below(10) == 0 {
                    changes.push(Change::remove(&seller(seller_seed), &slug));
                } else {
                    let mut object_id = [0u8; 32];
                    object_id[..4].copy_from_slice(&id.to_be_bytes());
                    changes.push(Change::Upsert(Box::new(ListingDoc {
                        id: ObjectId(object_id),
                        signer: seller(seller_seed),
                        listing: random_listing(&mut rng, &slug),
                        seller_rating: rating,
                    })));
                }
            }
            index.apply(&changes, batch + 1).expect("apply");
        }
        (dir, index)
    }

    /// Runs a fixed set of queries (every sort, with and without text, each filter alone and
    /// some together, several pages) through the bitmaps and through tantivy alone, and wants
    /// the same hits in the same order, the same total and the same facet counts.
    fn agree_with_tantivy(index: &SearchIndex) {
        let mut queries = Vec::new();
        let texts = [
            "",
            "mug",
            "wool sweat",
            "oak table",
            "k",
            "nothing",
            "oak wool table",
        ];
        let sorts = [
            None,
            Some(Sort::Relevance),
            Some(Sort::Newest),
            Some(Sort::PriceAsc),
            Some(Sort::PriceDesc),
            Some(Sort::Rating),
        ];
        for text in texts {
            for sort in sorts {
                for (limit, offset) in [(5, 0), (7, 6), (300, 0)] {
                    queries.push(SearchQuery {
                        text: text.into(),
                        sort,
                        limit,
                        offset,
                        now: 2_000,
                        ..SearchQuery::default()
                    });
                }
            }
        }
        let filters: Vec<fn(&mut SearchQuery)> = vec![
            |q| q.category = Some("home".into()),
            |q| q.category = Some("/home/kitchen/".into()),
            |q| q.category = Some("odd/rare/path".into()),
            |q| q.category = Some("rare".into()),
            |q| {
                q.category = Some("rare".into());
                q.sort = Some(Sort::Newest);
            },
            |q| q.category = Some("hom".into()),
            |q| q.kind = Some("digital".into()),
            |q| q.condition = Some(condition_name(1).into()),
            |q| q.currency = Some("EUR".into()),
            |q| q.currency = Some("XAU".into()),
            |q| q.currency = Some("JPY".into()),
            |q| q.price_min = Some(20.0),
            |q| q.price_max = Some(5.0),
            |q| (q.price_min, q.price_max) = (Some(2.5), Some(75.0)),
            |q| q.ships_to = Some("DE".into()),
            |q| q.ships_to = Some("US".into()),
            |q| q.seller = Some(seller(2)),
            |q| q.min_rating = Some(4.0),
            |q| q.moderated = Some(true),
            |q| q.moderated = Some(false),
            |q| q.nsfw = true,
            |q| q.now = 1_499,
            |q| q.now = 9_000,
            |q| {
                q.category = Some("home".into());
                q.currency = Some("EUR".into());
                q.ships_to = Some("DE".into());
                q.moderated = Some(true);
            },
        ];
        for (i, filter) in filters.iter().enumerate() {
            for text in ["", "mug", "oak ta"] {
                for sort in [None, Some(Sort::PriceAsc), Some(Sort::Rating)] {
                    let mut q = SearchQuery {
                        text: text.into(),
                        sort,
                        limit: 6,
                        offset: i % 3,
                        now: 2_000,
                        ..SearchQuery::default()
                    };
                    filter(&mut q);
                    queries.push(q);
                }
            }
        }
        let searcher = index.reader.searcher();
        let mut nonempty = 0;
        for q in &queries {
            let got = index.compute(&searcher, q).expect("bitmaps");
            let want = index.compute_reference(&searcher, q).expect("tantivy");
            assert_eq!(got.total, want.total, "{q:?}");
            assert_eq!(got.facets, want.facets, "{q:?}");
            assert_eq!(got.ids, want.ids, "{q:?}");
            nonempty += usize::from(got.total > 0);
        }
        // The queries are not vacuous: most find something.
        assert!(
            nonempty * 3 > queries.len() * 2,
            "{nonempty} of {}",
            queries.len()
        );
    }

    /// Views built ahead of searches are the ones searches then use, and a search on an older
    /// reader generation does not drop the views of a newer one's segments.
    #[test]
    fn warmed_views_are_used_and_an_older_searcher_keeps_newer_views() {
        let (_dir, index) = random_index(3, 200, 11);
        let older = index.reader.searcher();
        let ships_to = index.fields.ships_to;
        // Opening and committing may have started background builds; wait them out.
        while index.warming.load(AtomicOrdering::Acquire) {
            std::thread::yield_now();
        }
        index.views.warm(&older, ships_to, 0).expect("warm");
        assert!(!index.views.missing(&older, 0), "every segment has a view");
        let warmed = index.views.of(&older, ships_to).expect("views");
        let again = index.views.of(&older, ships_to).expect("views");
        assert!(warmed.iter().zip(&again).all(|(a, b)| Arc::ptr_eq(a, b)));

        // A commit adds a segment; its view is built for the newer generation.
        let change = upsert(200, 1, listing("late", "home", "EUR", false));
        index.apply(&[change], 10).expect("apply");
        let newer = index.reader.searcher();
        assert!(newer.generation().generation_id() > older.generation().generation_id());
        index.views.warm(&newer, ships_to, 0).expect("warm");
        assert!(!index.views.missing(&newer, 0));
        // A search still on the older generation does not prune them.
        index.views.of(&older, ships_to).expect("views");
        assert!(
            !index.views.missing(&newer, 0),
            "the newer generation's views survive"
        );
    }

    #[test]
    fn facets_and_ids_are_counted_across_segments_and_deletions() {
        let dir = tempfile::tempdir().expect("tmp");
        let (index, created) = SearchIndex::open(dir.path(), 15_000_000).expect("open");
        assert!(created);
        index.set_result_cache_entries(0);
        index
            .apply(
                &[
                    upsert(1, 1, listing("kettle", "home/kitchen", "EUR", false)),
                    upsert(2, 1, listing("chair", "home/furniture", "EUR", false)),
                ],
                1,
            )
            .expect("first segment");
        index
            .apply(
                &[
                    upsert(3, 2, listing("pan", "home/kitchen/pans", "USD", false)),
                    upsert(4, 2, listing("lamp", "home", "USD", false)),
                    upsert(5, 2, listing("poster", "art", "BTC", true)),
                ],
                2,
            )
            .expect("second segment");
        // The chair moves to another category and currency: its old document is deleted.
        index
            .apply(&[upsert(6, 1, listing("chair", "garden", "BTC", false))], 3)
            .expect("third segment");
        assert_eq!(index.segments(), 3);

        let all = browse(&index, None);
        assert_eq!(
            all.total, 4,
            "the NSFW poster is hidden, the old chair gone"
        );
        assert_eq!(
            all.facets["category"],
            counts(&[("garden", 1), ("home", 3)])
        );
        assert_eq!(
            all.facets["currency"],
            counts(&[("BTC", 1), ("EUR", 1), ("USD", 2)])
        );
        assert_eq!(all.facets["type"], counts(&[("physical", 4)]));
        assert_eq!(all.facets["condition"].values().sum::<u64>(), 4);
        let mut ids: Vec<u8> = all.ids.iter().map(|id| id.0[0]).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 3, 4, 6]);
        assert!(all.ids.iter().all(|id| id.0.iter().all(|b| *b == id.0[0])));

        // Children of the selected category; the lamp filed under "home" itself is a match
        // but no child.
        let home = browse(&index, Some("home"));
        assert_eq!(home.total, 3);
        assert_eq!(home.facets["category"], counts(&[("home/kitchen", 2)]));
        let kitchen = browse(&index, Some("/home/kitchen/"));
        assert_eq!(kitchen.total, 2);
        assert_eq!(
            kitchen.facets["category"],
            counts(&[("home/kitchen/pans", 1)])
        );
        // A category is matched by whole path segments, not by string prefix.
        assert_eq!(browse(&index, Some("hom")).total, 0);

        let with_nsfw = index
            .search(&SearchQuery {
                nsfw: true,
                limit: 10,
                now: 2_000,
                ..SearchQuery::default()
            })
            .expect("search");
        assert_eq!(with_nsfw.total, 5);
        assert_eq!(with_nsfw.facets["category"]["art"], 1);
        assert_eq!(indexed_ids(dir.path()).expect("ids").len(), 5);
    }
}
