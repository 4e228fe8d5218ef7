//! The service layer: what the server does for a client, whatever the transport. REST
//! ([`crate::api`]) and gRPC ([`crate::grpc`]) are thin adapters over these functions: each
//! turns its wire format into the types here, calls one function, and renders the result.
//! Parameters are checked here, once, so both APIs refuse the same input with the same stable
//! code; errors are [`ApiError`]s, which gRPC maps onto its status codes.
//!
//! Publishing is [`crate::ingest::Ingestor::ingest`], shared the same way (and with P2P).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use souk_protocol::{Kind, Object, ObjectId, PublicKey, Slot, pb};

use crate::api::{ApiError, AppState};
use crate::search::{SearchQuery, Sort, TextMatcher};
use crate::store::{RatingSummary, StoreError, decode_stored};

/// Most hits (or profiles) per page.
pub const MAX_LIMIT: usize = 100;
/// Deepest offset a cursor may reach.
pub const MAX_OFFSET: usize = 10_000;
/// Most rating envelopes returned with a person's aggregates (the default page).
pub const MAX_RATINGS: usize = 100;
/// Longest search text, in bytes.
pub const MAX_QUERY_BYTES: usize = 500;

/// An `invalid_parameter` error naming the parameter.
pub fn invalid(name: &str, what: &str) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{name}: {what}"))
}

/// Search parameters, as REST receives them (gRPC's `SearchRequest` is turned into these, so the
/// two APIs check them in one place). Unknown parameters are refused (`unknown_parameter`),
/// never ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Free text over title, tags and description; the last word also matches as a prefix.
    /// Empty: browse.
    pub q: Option<String>,
    /// Category path, e.g. `home/kitchen` (includes sub-categories).
    pub category: Option<String>,
    /// `physical`, `digital` or `service`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// `new`, `used_like_new`, `used_good`, `used_fair`, `refurbished`, `for_parts`.
    pub condition: Option<String>,
    /// Currency code, e.g. `BTC`, `EUR`.
    pub currency: Option<String>,
    /// Lowest price in major units of the listing's currency (e.g. 12.5).
    pub price_min: Option<f64>,
    /// Highest price in major units.
    pub price_max: Option<f64>,
    /// Country code (ISO 3166-1 alpha-2) the listing must ship to.
    pub ships_to: Option<String>,
    /// Seller address (`souk1…` or hex).
    pub seller: Option<String>,
    /// Lowest average seller rating, 0-5.
    pub min_rating: Option<f64>,
    /// `true`: only listings that accept a moderator; `false`: only those that do not.
    pub moderated: Option<bool>,
    /// Include NSFW listings (default false).
    pub nsfw: Option<bool>,
    /// `relevance` (default with text), `price_asc`, `price_desc`, `newest` (default without
    /// text), `rating`.
    pub sort: Option<Sort>,
    /// Hits per page, 1-100 (default 20).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page size: `default` when absent, otherwise 1 to [`MAX_LIMIT`].
///
/// # Errors
/// `invalid_parameter`.
pub fn page_limit(value: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = value.unwrap_or(default);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid("limit", "must be between 1 and 100"))
    }
}

/// A page of a list read from the store by offset: `limit` rows from `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Rows on the page, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// Rows before it.
    pub offset: usize,
}

impl Page {
    /// The page `limit` (default `default`) and `cursor` ask for.
    ///
    /// # Errors
    /// `invalid_parameter` for a limit outside 1-100 or a cursor this server did not hand out.
    pub fn new(
        limit: Option<usize>,
        default: usize,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            limit: page_limit(limit, default)?,
            offset: cursor_offset(cursor)?,
        })
    }

    /// How many rows to read: one more than the page, to tell whether another follows.
    #[must_use]
    pub fn fetch(self) -> i64 {
        i64::try_from(self.limit + 1).unwrap_or(i64::MAX)
    }

    /// How many rows to skip.
    #[must_use]
    pub fn skip(self) -> i64 {
        i64::try_from(self.offset).unwrap_or(0)
    }

    /// The page's rows out of the [`Page::fetch`] rows read, and the cursor of the next page
    /// (`None` when none follows).
    #[must_use]
    pub fn cut<T>(self, mut rows: Vec<T>) -> (Vec<T>, Option<String>) {
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        (rows, more.then(|| encode_cursor(self.offset + self.limit)))
    }
}

/// The cursor of the page starting at `offset`.
#[must_use]
pub fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

/// The offset a page cursor stands for.
///
/// # Errors
/// `invalid_parameter` for anything this server did not hand out, or an offset past
/// [`MAX_OFFSET`].
pub fn decode_cursor(cursor: &str) -> Result<usize, ApiError> {
    let bad = || invalid("cursor", "not a cursor from this server");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let offset = text
        .strip_prefix("o:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    if offset > MAX_OFFSET {
        return Err(invalid("cursor", "too deep; narrow the search instead"));
    }
    Ok(offset)
}

/// The offset an optional page cursor stands for (0 without one).
///
/// # Errors
/// As [`decode_cursor`].
pub fn cursor_offset(cursor: Option<&str>) -> Result<usize, ApiError> {
    cursor
        .map(decode_cursor)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A category path as search and the feed take it: trimmed of slashes, lower case,
/// `[a-z0-9-/]`, at most 128 bytes; `None` for empty.
///
/// # Errors
/// `invalid_parameter` naming `name`.
pub fn parse_category(name: &str, text: &str) -> Result<Option<String>, ApiError> {
    let category = text.trim_matches('/').to_ascii_lowercase();
    if category.is_empty() {
        return Ok(None);
    }
    if category.len() > 128
        || !category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'/')
    {
        return Err(invalid(name, "must be a path like home/kitchen"));
    }
    Ok(Some(category))
}

/// A person's key from an address (`souk1…`) or 64 hex digits.
///
/// # Errors
/// `invalid_parameter` naming `name`.
pub fn parse_key(text: &str, name: &str) -> Result<PublicKey, ApiError> {
    PublicKey::from_str(text)
        .map_err(|_| invalid(name, "must be a souk1… address or 64 hex digits"))
}

/// A person's key from its 32 bytes.
///
/// # Errors
/// `invalid_parameter` naming `name`.
pub fn key_from_bytes(bytes: &[u8], name: &str) -> Result<PublicKey, ApiError> {
    PublicKey::from_bytes(bytes).map_err(|_| invalid(name, "must be a 32-byte identity key"))
}

/// An object id from 64 hex digits.
///
/// # Errors
/// `invalid_parameter`.
pub fn parse_id(text: &str) -> Result<ObjectId, ApiError> {
    ObjectId::from_str(text).map_err(|_| invalid("id", "must be 64 hex digits"))
}

/// An object id from its 32 bytes.
///
/// # Errors
/// `invalid_parameter`.
pub fn id_from_bytes(bytes: &[u8]) -> Result<ObjectId, ApiError> {
    <[u8; 32]>::try_from(bytes)
        .map(ObjectId)
        .map_err(|_| invalid("id", "must be 32 bytes"))
}

/// Turns search parameters into a search, refusing anything it cannot honour.
///
/// # Errors
/// `invalid_parameter` naming the parameter.
pub fn parse_search(p: SearchParams, now: u64) -> Result<SearchQuery, ApiError> {
    const TYPES: [&str; 3] = ["physical", "digital", "service"];
    const CONDITIONS: [&str; 6] = [
        "new",
        "used_like_new",
        "used_good",
        "used_fair",
        "refurbished",
        "for_parts",
    ];
    let kind = p.kind.map(|k| k.to_ascii_lowercase());
    if let Some(k) = &kind
        && !TYPES.contains(&k.as_str())
    {
        return Err(invalid("type", "must be physical, digital or service"));
    }
    let condition = p.condition.map(|c| c.to_ascii_lowercase());
    if let Some(c) = &condition
        && !CONDITIONS.contains(&c.as_str())
    {
        return Err(invalid(
            "condition",
            "must be new, used_like_new, used_good, used_fair, refurbished or for_parts",
        ));
    }
    let currency = p.currency.map(|c| c.to_ascii_uppercase());
    if let Some(c) = &currency
        && (c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid(
            "currency",
            "must be a three-letter code such as BTC or EUR",
        ));
    }
    let ships_to = p.ships_to.map(|c| c.to_ascii_uppercase());
    if let Some(c) = &ships_to
        && (c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid("ships_to", "must be a two-letter country code"));
    }
    let category = match p.category {
        Some(c) => parse_category("category", &c)?,
        None => None,
    };
    for (name, value) in [("price_min", p.price_min), ("price_max", p.price_max)] {
        if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(invalid(name, "must be a non-negative number"));
        }
    }
    if let (Some(min), Some(max)) = (p.price_min, p.price_max)
        && min > max
    {
        return Err(invalid("price_min", "is above price_max"));
    }
    if p.min_rating.is_some_and(|r| !(0.0..=5.0).contains(&r)) {
        return Err(invalid("min_rating", "must be between 0 and 5"));
    }
    let seller = p.seller.map(|s| parse_key(&s, "seller")).transpose()?;
    let limit = page_limit(p.limit, 20)?;
    let q = p.q.unwrap_or_default();
    if q.len() > MAX_QUERY_BYTES {
        return Err(invalid("q", "is longer than 500 bytes"));
    }
    Ok(SearchQuery {
        text: q,
        category,
        kind,
        condition,
        currency,
        price_min: p.price_min,
        price_max: p.price_max,
        ships_to,
        seller,
        min_rating: p.min_rating,
        moderated: p.moderated,
        nsfw: p.nsfw.unwrap_or(false),
        sort: p.sort,
        limit,
        offset: cursor_offset(p.cursor.as_deref())?,
        now,
    })
}

/// A stored listing version with its signed bytes.
#[derive(Debug, Clone)]
pub struct StoredListing {
    /// Object id.
    pub id: ObjectId,
    /// The seller (signer): the 32 bytes of a key checked when the envelope was accepted.
    pub seller: [u8; 32],
    /// The listing as signed.
    pub listing: pb::Listing,
    /// The envelope bytes, as received.
    pub bytes: Vec<u8>,
}

/// Decoded listings by object id, for search hits: a hit found here costs neither a database
/// read nor a decode.
///
/// An entry never goes stale: an object id is the hash of the envelope's bytes, so the same id
/// always means the same listing. Whether a listing is still current is the search index's
/// business, and only ids the index returns are looked up. Two generations approximate
/// least-recently-used eviction: a hit in the older one moves to the newer one, and when the
/// newer one is full (`capacity` entries, or [`LISTING_CACHE_BYTES`] / 2 of envelopes) it
/// becomes the older and the oldest is dropped. So at most twice `capacity` entries, and about
/// [`LISTING_CACHE_BYTES`] of envelopes (the decoded listings take about as much again), are
/// held, however large the listings.
#[derive(Debug)]
pub struct ListingCache {
    capacity: std::sync::atomic::AtomicUsize,
    generations: std::sync::Mutex<ListingGenerations>,
}

#[derive(Debug, Default)]
struct ListingGenerations {
    /// Envelope bytes held in `young`.
    young_bytes: usize,
    young: std::collections::HashMap<ObjectId, Arc<StoredListing>>,
    old: std::collections::HashMap<ObjectId, Arc<StoredListing>>,
}

/// Entries per generation of the server's [`ListingCache`].
pub const LISTING_CACHE_ENTRIES: usize = 8_192;
/// Envelope bytes the [`ListingCache`] holds at most, both generations together (64 MiB).
pub const LISTING_CACHE_BYTES: usize = 64 << 20;

impl ListingCache {
    /// An empty cache holding up to `capacity` listings per generation (0: hold nothing).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: std::sync::atomic::AtomicUsize::new(capacity),
            generations: std::sync::Mutex::new(ListingGenerations::default()),
        }
    }

    /// Changes how many listings a generation holds; 0 empties the cache and turns it off.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity
            .store(capacity, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut g) = self.generations.lock() {
            *g = ListingGenerations::default();
        }
    }

    fn capacity(&self) -> usize {
        self.capacity.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The listing with this id, if cached. A poisoned lock is a miss.
    pub fn get(&self, id: &ObjectId) -> Option<Arc<StoredListing>> {
        let mut g = self.generations.lock().ok()?;
        if let Some(listing) = g.young.get(id) {
            return Some(Arc::clone(listing));
        }
        let listing = g.old.remove(id)?;
        Self::put(&mut g, self.capacity(), Arc::clone(&listing));
        Some(listing)
    }

    /// Caches a decoded listing.
    pub fn insert(&self, listing: Arc<StoredListing>) {
        let capacity = self.capacity();
        if capacity == 0 {
            return;
        }
        if let Ok(mut g) = self.generations.lock() {
            Self::put(&mut g, capacity, listing);
        }
    }

    fn put(g: &mut ListingGenerations, capacity: usize, listing: Arc<StoredListing>) {
        let size = listing.bytes.len();
        if g.young.len() >= capacity || g.young_bytes + size > LISTING_CACHE_BYTES / 2 {
            g.old = std::mem::take(&mut g.young);
            g.young_bytes = 0;
        }
        g.young_bytes += size;
        if let Some(previous) = g.young.insert(listing.id, listing) {
            g.young_bytes -= previous.bytes.len();
        }
    }

    /// How many listings are cached now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.generations
            .lock()
            .map_or(0, |g| g.young.len() + g.old.len())
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StoredListing {
    /// Decodes stored envelope bytes that must hold a listing.
    ///
    /// The store holds only envelopes that passed every check on the way in, so they are read
    /// without checking them again: no canonical re-encoding, and the signer's key stays bytes
    /// (decoding its curve point, a field exponentiation, was about 3 % of a search's CPU when
    /// every hit was decoded).
    ///
    /// # Errors
    /// `not_found` when the object is another kind; `internal` when the bytes are corrupt.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, ApiError> {
        use prost::Message as _;
        fn corrupt(error: impl std::fmt::Display) -> StoreError {
            StoreError::Corrupt(error.to_string())
        }
        let envelope = pb::Envelope::decode(bytes.as_slice()).map_err(corrupt)?;
        if envelope.kind != Kind::Listing as i32 {
            return Err(ApiError::not_found("that object is not a listing"));
        }
        let seller: [u8; 32] = envelope.signer.as_slice().try_into().map_err(corrupt)?;
        let listing = pb::Listing::decode(envelope.payload.as_slice()).map_err(corrupt)?;
        Ok(Self {
            id: ObjectId::of(&bytes),
            seller,
            listing,
            bytes,
        })
    }

    /// The summary clients check against the signed bytes.
    #[must_use]
    pub fn summary(&self) -> souk_protocol::ListingSummary {
        souk_protocol::ListingSummary::of_key_bytes(&self.seller, &self.listing)
    }
}

/// A page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// How many listings match in all.
    pub total: usize,
    /// This page's hits, in order.
    pub hits: Vec<StoredListing>,
    /// Counts per value of `category` (children of the selected one), `type`, `condition`,
    /// `currency`.
    pub facets: BTreeMap<String, BTreeMap<String, u64>>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Runs a search and loads the envelopes of its hits.
///
/// On a SQLite file the whole search runs on one search thread: the index, the decoded-listing
/// cache, and the hits the cache lacks, read through [`crate::store::EnvelopeReader`]. On
/// PostgreSQL (or when that reader fails) the missing hits are read through the pool
/// afterwards.
///
/// # Errors
/// [`ApiError`].
pub async fn search(state: &AppState, query: SearchQuery) -> Result<SearchPage, ApiError> {
    let started = std::time::Instant::now();
    let index = Arc::clone(&state.search);
    let listings = Arc::clone(&state.listings);
    let reader = state.envelopes.clone();
    let q = query.clone();
    let (result, hits) = state
        .search_pool
        .run(move || -> Result<_, ApiError> {
            let result = index.search(&q)?;
            let pending = PendingHits::of(&listings, &result.ids);
            let hits = match reader.map(|reader| reader.get_many(&pending.missing)) {
                Some(Ok(stored)) => Hits::Loaded(pending.assemble(&listings, stored)?),
                Some(Err(error)) => {
                    // Out of file descriptors, say: the pool's connections are already open.
                    tracing::warn!(%error, "search threads cannot read hits; reading through the pool");
                    Hits::Pending(pending)
                }
                None => Hits::Pending(pending),
            };
            Ok((result, hits))
        })
        .await??;
    let hits = match hits {
        Hits::Loaded(hits) => hits,
        Hits::Pending(pending) => {
            let stored = state.store.get_many(&pending.missing).await?;
            pending.assemble(&state.listings, stored)?
        }
    };
    let next = query.offset + query.limit;
    metrics::histogram!("souk_search_seconds").record(started.elapsed().as_secs_f64());
    Ok(SearchPage {
        total: result.total,
        hits,
        facets: result
            .facets
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        next_cursor: (next < result.total && next <= MAX_OFFSET).then(|| encode_cursor(next)),
    })
}

/// A page's hits, loaded or still to be read from the store.
enum Hits {
    Loaded(Vec<StoredListing>),
    Pending(PendingHits),
}

/// A page's hits as the decoded-listing cache has them, and the ids it lacks.
struct PendingHits {
    /// One entry per hit, in order: the cached listing, or `None` to read.
    cached: Vec<(ObjectId, Option<Arc<StoredListing>>)>,
    /// The ids to read from the store.
    missing: Vec<ObjectId>,
}

impl PendingHits {
    fn of(listings: &ListingCache, ids: &[ObjectId]) -> Self {
        let cached: Vec<(ObjectId, Option<Arc<StoredListing>>)> =
            ids.iter().map(|id| (*id, listings.get(id))).collect();
        let missing = cached
            .iter()
            .filter(|(_, hit)| hit.is_none())
            .map(|(id, _)| *id)
            .collect();
        Self { cached, missing }
    }

    /// The hits in order: cached ones, and `stored` ones decoded (and offered to the cache).
    /// A hit the store no longer holds is left out.
    fn assemble(
        self,
        listings: &ListingCache,
        mut stored: std::collections::HashMap<ObjectId, Vec<u8>>,
    ) -> Result<Vec<StoredListing>, ApiError> {
        metrics::counter!("souk_listing_cache_total", "result" => "hit")
            .increment((self.cached.len() - self.missing.len()) as u64);
        metrics::counter!("souk_listing_cache_total", "result" => "miss")
            .increment(self.missing.len() as u64);
        let mut hits = Vec::with_capacity(self.cached.len());
        for (id, hit) in self.cached {
            match hit {
                Some(listing) => hits.push(StoredListing::clone(&listing)),
                None => {
                    if let Some(bytes) = stored.remove(&id) {
                        let listing = Arc::new(StoredListing::decode(bytes)?);
                        listings.insert(Arc::clone(&listing));
                        // Copied only when the cache kept it (with the cache off, never).
                        hits.push(Arc::unwrap_or_clone(listing));
                    }
                }
            }
        }
        Ok(hits)
    }
}

/// A listing by object id (any stored version) and whether it is still current.
///
/// # Errors
/// `not_found` when it is not stored here or is not a listing.
pub async fn listing(state: &AppState, id: &ObjectId) -> Result<(StoredListing, bool), ApiError> {
    let bytes = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no listing with that id here"))?;
    let listing = StoredListing::decode(bytes)?;
    let slot = Slot::Listing {
        slug: listing.listing.slug.clone(),
    };
    let current = state.store.is_current(&listing.seller, &slot, id).await?;
    Ok((listing, current))
}

/// A stored profile with its signed bytes.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    /// Object id.
    pub id: ObjectId,
    /// The person (signer).
    pub person: PublicKey,
    /// The profile as signed.
    pub profile: pb::Profile,
    /// The envelope bytes.
    pub bytes: Vec<u8>,
}

fn decode_profile(bytes: Vec<u8>) -> Result<Option<StoredProfile>, ApiError> {
    let (envelope, object) = decode_stored(&bytes)?;
    Ok(match object {
        Object::Profile(profile) => Some(StoredProfile {
            id: envelope.id(),
            person: envelope.signer(),
            profile,
            bytes,
        }),
        _ => None,
    })
}

/// A person's current profile.
///
/// # Errors
/// `not_found` when this server holds none.
pub async fn profile(state: &AppState, person: &PublicKey) -> Result<StoredProfile, ApiError> {
    let bytes = state
        .store
        .current(person, &Slot::Profile)
        .await?
        .ok_or_else(|| ApiError::not_found("this server has no profile for that person"))?;
    decode_profile(bytes)?.ok_or_else(|| ApiError::internal(&"profile slot holds another kind"))
}

/// Which moderators to list.
#[derive(Debug, Clone, Default)]
pub struct ModeratorQuery {
    /// Only moderators working in this BCP 47 language.
    pub language: Option<String>,
    /// Only moderators whose percentage fee is at most this many basis points.
    pub max_fee_bp: Option<u32>,
    /// Page size (absent: 50).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of moderator profiles, cheapest first.
#[derive(Debug, Clone)]
pub struct ModeratorPage {
    /// Profiles with a moderator offer.
    pub profiles: Vec<StoredProfile>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Moderators, cheapest first (percentage, then fixed fee, then key).
///
/// # Errors
/// `invalid_parameter` for a bad language, limit or cursor.
pub async fn moderators(state: &AppState, q: ModeratorQuery) -> Result<ModeratorPage, ApiError> {
    let page = Page::new(q.limit, 50, q.cursor.as_deref())?;
    if let Some(language) = &q.language
        && (language.is_empty()
            || language.len() > 35
            || !language
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(invalid(
            "language",
            "must be a BCP 47 tag such as en or pt-BR",
        ));
    }
    let rows = state
        .store
        .moderators(
            q.language.as_deref(),
            q.max_fee_bp,
            page.fetch(),
            page.skip(),
        )
        .await?;
    let (rows, next_cursor) = page.cut(rows);
    let mut profiles = Vec::with_capacity(rows.len());
    for bytes in rows {
        if let Some(p) = decode_profile(bytes)?
            && p.profile.moderator.is_some()
        {
            profiles.push(p);
        }
    }
    Ok(ModeratorPage {
        profiles,
        next_cursor,
    })
}

/// A person's ratings: aggregates per role and the newest signed ratings.
#[derive(Debug, Clone)]
pub struct Ratings {
    /// As seller.
    pub seller: RatingSummary,
    /// As moderator.
    pub moderator: RatingSummary,
    /// A page of the ratings, newest first: envelope bytes and the role rated.
    pub ratings: Vec<(Vec<u8>, pb::RatingRole)>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Ratings of `subject`: the aggregates, and `limit` (1-100, default [`MAX_RATINGS`]) signed
/// ratings, newest first, from `cursor` on.
///
/// # Errors
/// `invalid_parameter` for a bad limit or cursor; [`ApiError`] from the store.
pub async fn ratings(
    state: &AppState,
    subject: &PublicKey,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Ratings, ApiError> {
    let page = Page::new(limit, MAX_RATINGS, cursor)?;
    let seller = state
        .store
        .rating_summary(subject, pb::RatingRole::Seller)
        .await?;
    let moderator = state
        .store
        .rating_summary(subject, pb::RatingRole::Moderator)
        .await?;
    let rows = state
        .store
        .ratings_of(subject, page.fetch(), page.skip())
        .await?;
    let (rows, next_cursor) = page.cut(rows);
    let mut ratings = Vec::with_capacity(rows.len());
    for bytes in rows {
        let (_, object) = decode_stored(&bytes)?;
        let role = match object {
            Object::Rating(r) => pb::RatingRole::try_from(r.role).unwrap_or_default(),
            _ => pb::RatingRole::default(),
        };
        ratings.push((bytes, role));
    }
    Ok(Ratings {
        seller,
        moderator,
        ratings,
        next_cursor,
    })
}

/// Most categories, signers or kinds in one feed filter.
pub const MAX_FEED_FILTER_ITEMS: usize = 100;

/// What a feed subscriber follows. Empty lists mean "all".
#[derive(Debug, Default)]
pub struct FeedFilter {
    kinds: Vec<Kind>,
    signers: Vec<PublicKey>,
    categories: Vec<String>,
    text: Option<TextMatcher>,
}

/// A feed position: the ingest sequence of the last envelope delivered (0: before the first).
/// On the wire it is the decimal sequence; clients treat it as opaque and server-specific.
///
/// # Errors
/// `invalid_parameter` for anything else.
pub fn parse_feed_cursor(cursor: &str) -> Result<i64, ApiError> {
    if cursor.is_empty() {
        return Ok(0);
    }
    cursor
        .parse::<i64>()
        .ok()
        .filter(|seq| *seq >= 0)
        .ok_or_else(|| invalid("since", "not a feed cursor from this server"))
}

/// The cursor of the envelope at `seq`.
#[must_use]
pub fn feed_cursor(seq: i64) -> String {
    seq.to_string()
}

impl FeedFilter {
    /// A checked filter.
    ///
    /// # Errors
    /// `invalid_parameter` naming the part: an unknown kind, a bad key or category, text over
    /// [`MAX_QUERY_BYTES`], or more than [`MAX_FEED_FILTER_ITEMS`] entries in a list.
    pub fn new(
        kinds: &[i32],
        signers: &[Vec<u8>],
        categories: &[String],
        text: &str,
    ) -> Result<Self, ApiError> {
        for (name, len) in [
            ("kinds", kinds.len()),
            ("signers", signers.len()),
            ("categories", categories.len()),
        ] {
            if len > MAX_FEED_FILTER_ITEMS {
                return Err(invalid(name, "lists more than 100 entries"));
            }
        }
        let kinds = kinds
            .iter()
            .map(|k| match Kind::try_from(*k) {
                Ok(Kind::Unspecified) | Err(_) => Err(invalid(
                    "kinds",
                    "must be KIND_PROFILE, KIND_LISTING, KIND_RATING or KIND_TOMBSTONE",
                )),
                Ok(kind) => Ok(kind),
            })
            .collect::<Result<_, _>>()?;
        let signers = signers
            .iter()
            .map(|s| key_from_bytes(s, "signers"))
            .collect::<Result<_, _>>()?;
        let mut parsed = Vec::with_capacity(categories.len());
        for c in categories {
            match parse_category("categories", c)? {
                Some(c) => parsed.push(c),
                None => return Err(invalid("categories", "holds an empty category")),
            }
        }
        if text.len() > MAX_QUERY_BYTES {
            return Err(invalid("q", "is longer than 500 bytes"));
        }
        Ok(Self {
            kinds,
            signers,
            categories: parsed,
            text: TextMatcher::new(text),
        })
    }

    /// Whether the filter lets `object` signed by `signer` through.
    #[must_use]
    pub fn matches(&self, signer: &PublicKey, object: &Object) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&object.kind()) {
            return false;
        }
        if !self.signers.is_empty() && !self.signers.contains(signer) {
            return false;
        }
        let Object::Listing(listing) = object else {
            return true;
        };
        if !self.categories.is_empty() {
            let category = listing.category.to_ascii_lowercase();
            let inside = self.categories.iter().any(|c| {
                category == *c
                    || (category.starts_with(c.as_str())
                        && category.as_bytes().get(c.len()) == Some(&b'/'))
            });
            if !inside {
                return false;
            }
        }
        self.text.as_ref().is_none_or(|m| m.matches(listing))
    }
}

/// One envelope of the feed.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Its ingest sequence (the cursor).
    pub seq: i64,
    /// Its kind.
    pub kind: Kind,
    /// Its object id.
    pub id: ObjectId,
    /// The envelope bytes.
    pub bytes: Vec<u8>,
}

/// The next envelopes after `after` that pass `filter`, in ingest order, reading at most
/// `scan` stored envelopes. Returns them and the sequence scanned up to (the position to read
/// on from, even when nothing in between matched).
///
/// # Errors
/// [`ApiError`] from the store.
pub async fn feed_page(
    state: &AppState,
    filter: &FeedFilter,
    after: i64,
    scan: i64,
) -> Result<(Vec<FeedItem>, i64), ApiError> {
    let rows = state.store.since(after, scan).await?;
    let mut position = after;
    let mut items = Vec::new();
    for (seq, bytes) in rows {
        position = seq;
        let (envelope, object) = decode_stored(&bytes)?;
        if filter.matches(&envelope.signer(), &object) {
            items.push(FeedItem {
                seq,
                kind: object.kind(),
                id: envelope.id(),
                bytes,
            });
        }
    }
    Ok((items, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored listing is read without checking it again, and reads as the checked path (the
    /// protocol's own decoding, the signer's key decoded) reads it: same id, seller, listing
    /// and summary. Other kinds are not listings; bytes that are not an envelope are corrupt.
    #[test]
    fn a_stored_listing_reads_as_the_checked_path_reads_it() {
        let ctx = souk_protocol::ValidationContext::now();
        let key = souk_protocol::IdentityKey::from_secret_bytes(&[9; 32]);
        let listing = souk_protocol::samples::listing(ctx.now - 60, "brass-lamp", None);
        let signed = key
            .seal(&Object::Listing(listing.clone()), &ctx)
            .expect("valid listing");
        let bytes = signed.envelope().bytes().to_vec();
        let stored = StoredListing::decode(bytes.clone()).expect("a stored listing");
        let (envelope, object) = decode_stored(&bytes).expect("checked decode");
        assert_eq!(stored.id, envelope.id());
        assert_eq!(&stored.seller, envelope.signer().as_bytes());
        assert_eq!(Object::Listing(stored.listing.clone()), object);
        assert_eq!(
            stored.summary(),
            souk_protocol::ListingSummary::of(&envelope.signer(), &listing)
        );
        assert_eq!(stored.summary().seller, key.public_key().to_address());

        let profile = key
            .seal(
                &Object::Profile(souk_protocol::samples::profile(ctx.now - 60)),
                &ctx,
            )
            .expect("valid profile");
        let error = StoredListing::decode(profile.envelope().bytes().to_vec())
            .expect_err("a profile is not a listing");
        assert_eq!(error.code, "not_found");
        let error = StoredListing::decode(vec![0xff; 40]).expect_err("not an envelope");
        assert_eq!(error.code, "internal");
    }

    fn listing(n: u8) -> Arc<StoredListing> {
        Arc::new(StoredListing {
            id: ObjectId([n; 32]),
            seller: *souk_protocol::IdentityKey::from_secret_bytes(&[7; 32])
                .public_key()
                .as_bytes(),
            listing: pb::Listing {
                slug: format!("item-{n}"),
                ..pb::Listing::default()
            },
            bytes: vec![n],
        })
    }

    fn cached(cache: &ListingCache, n: u8) -> bool {
        cache
            .get(&ObjectId([n; 32]))
            .is_some_and(|l| l.listing.slug == format!("item-{n}") && l.bytes == [n])
    }

    /// Recently used listings stay, the least recently used go, and the cache never holds more
    /// than two generations.
    #[test]
    fn listing_cache_keeps_what_was_used_lately_within_two_generations() {
        let cache = ListingCache::new(2);
        cache.insert(listing(1));
        cache.insert(listing(2));
        assert!(cached(&cache, 1) && cached(&cache, 2));
        // The young generation is full: 1 and 2 become old, 3 starts a new one.
        cache.insert(listing(3));
        assert_eq!(cache.len(), 3);
        // Using 2 brings it back into the young generation.
        assert!(cached(&cache, 2));
        // 4 fills the young generation again: 1, never used since, is dropped.
        cache.insert(listing(4));
        assert!(
            !cached(&cache, 1),
            "the least recently used listing is gone"
        );
        assert!(cached(&cache, 2) && cached(&cache, 3) && cached(&cache, 4));
        assert!(cache.len() <= 4);
        assert!(!cached(&cache, 9), "never cached");

        // Large listings: the byte budget rotates generations before the entry count does.
        let big = ListingCache::new(1_000);
        let size = LISTING_CACHE_BYTES / 4 + 1;
        for n in 0..6u8 {
            let mut listing = StoredListing::clone(&listing(n));
            listing.bytes = vec![n; size];
            big.insert(Arc::new(listing));
        }
        assert!(
            big.len() <= 3,
            "at most one large listing per half budget, two generations"
        );

        let off = ListingCache::new(0);
        off.insert(listing(1));
        assert!(off.is_empty() && !cached(&off, 1));
        cache.set_capacity(0);
        cache.insert(listing(5));
        assert!(
            cache.is_empty(),
            "turned off, it is emptied and takes nothing"
        );
    }
}
