//! Per-segment bitmaps and sort orders: how a search is evaluated.
//!
//! A tantivy segment never changes once written (only its deletions grow), so what is derived
//! from it can be built once and kept for the segment's life. For each segment this module keeps
//! a [`SegmentView`]:
//!
//! - the documents of each value of each facet field (category path, type, condition,
//!   currency): a bitset, or a sorted list for a value held by few documents;
//! - bitsets of the NSFW and moderated flags;
//! - the segment's documents in each sort order (newest, cheapest, dearest, best rated), ties by
//!   document id;
//! - the documents that expire, by expiry;
//! - on first use, one bitset per `ships_to` country;
//! - the live documents as a bitset, rebuilt when the segment's deletions change.
//!
//! A search then works on bitsets, 64 documents a word: its filters are ANDed together; a
//! browse's matches are those bits; a text of one or two words is matched and scored against
//! them in one pass (`text.rs`); a longer text is intersected with them inside tantivy
//! ([`FilterQuery`]) and its matches collected back into bits ([`MatchCollector`]). Totals and
//! facet counts are popcounts of the matches against each value's documents, and the top hits of a
//! sort are the first matches met walking that sort's order. Before this, every search visited
//! each of its matches one by one (about 40 ns a match: a browse of 1M listings took 40 ms).
//!
//! Memory, per million documents in a segment: 16 MB of sort orders, 3.75 MB of prefix bitsets of
//! the price and rating orders (for range filters), 125 kB per bitset (a facet
//! value held by more than one document in 32, a country searched for, the flags), and 4 bytes per
//! document of a rarer value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::index::SegmentId;
use tantivy::postings::BlockSegmentPostings;
use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, DocSet, Score, SeekDangerResult, SegmentReader, TERMINATED, Term};

use super::{FACET_FIELDS, SearchError, SearchQuery, SellerDocs, Sort};

/// A set of documents of one segment, one bit per document id.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Bits {
    pub(super) words: Vec<u64>,
}

impl std::fmt::Debug for Bits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bits({} of {})", self.count(), self.words.len() * 64)
    }
}

impl Bits {
    /// No document of a segment of `max_doc` documents.
    pub(super) fn empty(max_doc: u32) -> Self {
        Self {
            words: vec![0; (max_doc as usize).div_ceil(64)],
        }
    }

    /// Every document id below `max_doc`.
    pub(super) fn full(max_doc: u32) -> Self {
        let mut words = vec![u64::MAX; (max_doc as usize).div_ceil(64)];
        let tail = max_doc % 64;
        if tail != 0
            && let Some(last) = words.last_mut()
        {
            *last = (1u64 << tail) - 1;
        }
        Self { words }
    }

    /// Documents from an iterator of ids (ids at or beyond `max_doc` are ignored).
    fn from_docs(max_doc: u32, docs: impl IntoIterator<Item = DocId>) -> Self {
        let mut bits = Self::empty(max_doc);
        for doc in docs {
            bits.insert(doc);
        }
        bits
    }

    pub(super) fn insert(&mut self, doc: DocId) {
        if let Some(word) = self.words.get_mut((doc / 64) as usize) {
            *word |= 1 << (doc % 64);
        }
    }

    /// Adds every document of a term's postings (deleted ones included), a block at a time.
    pub(super) fn insert_postings(&mut self, mut postings: BlockSegmentPostings) {
        while !postings.docs().is_empty() {
            postings.docs().iter().for_each(|doc| self.insert(*doc));
            postings.advance();
        }
    }

    fn remove(&mut self, doc: DocId) {
        if let Some(word) = self.words.get_mut((doc / 64) as usize) {
            *word &= !(1 << (doc % 64));
        }
    }

    fn contains(&self, doc: DocId) -> bool {
        self.words
            .get((doc / 64) as usize)
            .is_some_and(|word| word & (1 << (doc % 64)) != 0)
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn and(&mut self, other: &Self) {
        words::and(&mut self.words, &other.words);
        let common = other.words.len().min(self.words.len());
        self.words[common..].fill(0);
    }

    fn and_not(&mut self, other: &Self) {
        words::and_not(&mut self.words, &other.words);
    }

    fn or(&mut self, other: &Self) {
        words::or(&mut self.words, &other.words);
    }

    /// Number of documents in the set.
    pub(super) fn count(&self) -> u64 {
        words::count(&self.words)
    }

    /// Number of documents in both sets.
    fn count_and(&self, other: &Self) -> u64 {
        words::count_and(&self.words, &other.words)
    }

    /// The documents in increasing order.
    fn iter(&self) -> impl Iterator<Item = DocId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, word)| {
            let base = (i as u32) * 64;
            let mut rest = *word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(base + bit)
            })
        })
    }

    /// The first document at or after `target`, or [`TERMINATED`].
    pub(super) fn next_from(&self, target: DocId) -> DocId {
        let mut index = (target / 64) as usize;
        let Some(first) = self.words.get(index) else {
            return TERMINATED;
        };
        let mut word = first & (u64::MAX << (target % 64));
        loop {
            if word != 0 {
                return (index as u32) * 64 + word.trailing_zeros();
            }
            index += 1;
            match self.words.get(index) {
                Some(next) => word = *next,
                None => return TERMINATED,
            }
        }
    }
}

/// The loops over a bitset's words, compiled twice and chosen at run time: for the baseline
/// x86-64 that release builds target (SSE2, no POPCNT instruction, so a popcount takes a dozen
/// instructions), and with AVX2 and POPCNT, which nearly every x86-64 server since 2013 has.
/// Counting facets is mostly these popcounts; other architectures get the portable loops.
mod words {
    /// Defines `$name` as the portable `$body`, and on x86-64 as the same body compiled for
    /// AVX2 and POPCNT when the CPU has them.
    macro_rules! kernel {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
            $(#[$doc])*
            pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
                #[inline(always)]
                fn portable($($arg: $ty),*) $(-> $ret)? $body
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2,popcnt")]
                    fn fast($($arg: $ty),*) $(-> $ret)? {
                        portable($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("popcnt")
                    {
                        #[allow(unsafe_code, reason = "calls a function compiled for CPU features")]
                        // SAFETY: `fast` only needs AVX2 and POPCNT, which this CPU was just
                        // found to have (the detection is cached after the first call).
                        return unsafe { fast($($arg),*) };
                    }
                }
                portable($($arg),*)
            }
        };
    }

    kernel! {
        /// Bits set in `a`.
        fn count(a: &[u64]) -> u64 {
            a.iter().map(|w| u64::from(w.count_ones())).sum()
        }
    }

    kernel! {
        /// Bits set in both `a` and `b` (over their common length).
        fn count_and(a: &[u64], b: &[u64]) -> u64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| u64::from((x & y).count_ones()))
                .sum()
        }
    }

    kernel! {
        /// `a &= b` over their common length.
        fn and(a: &mut [u64], b: &[u64]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x &= y;
            }
        }
    }

    kernel! {
        /// `a &= !b` over their common length.
        fn and_not(a: &mut [u64], b: &[u64]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x &= !y;
            }
        }
    }

    kernel! {
        /// `a |= b` over their common length.
        fn or(a: &mut [u64], b: &[u64]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x |= y;
            }
        }
    }
}

/// A sort order's key as an unsigned integer whose natural order is the sort's order.
/// `f64` keys are mapped the way `f64::total_cmp` orders them; descending orders are inverted.
fn f64_key(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 0 {
        bits | 1 << 63
    } else {
        !bits
    }
}

/// The orders a [`SegmentView`] keeps, indexed by [`order_slot`].
const ORDERS: usize = 4;

/// The orders filtered by range: price ascending and rating.
const RANGE_SLOTS: [usize; 2] = [1, 3];

/// Into how many steps `range_steps` divides an order: a range costs two bitset copies and at
/// most a 32nd of the segment's documents set or cleared one by one, for 15 bitsets per order.
const RANGE_STEPS: usize = 16;

/// Segments smaller than this filter ranges from the order alone.
const RANGE_STEPS_MIN_DOCS: u32 = 1024;

/// Where step `j` of `RANGE_STEPS` ends in an order of `len` documents.
fn step_position(j: usize, len: usize) -> usize {
    j * len / RANGE_STEPS
}

/// Which of a view's orders serves `sort` (`Relevance` without text is newest first).
fn order_slot(sort: Sort) -> usize {
    match sort {
        Sort::Relevance | Sort::Newest => 0,
        Sort::PriceAsc => 1,
        Sort::PriceDesc => 2,
        Sort::Rating => 3,
    }
}

/// The documents holding one value: a bitset when they are more than one in 32 of the
/// segment (a bitset is then smaller than a list), else a sorted list. Free-form values (a
/// category path, a currency code) may be many, each held by few documents: lists keep a
/// facet's memory under 8 bytes a document however many values it has.
enum ValueDocs {
    Dense(Bits),
    Sparse(Vec<DocId>),
}

impl ValueDocs {
    fn new(max_doc: u32, docs: Vec<DocId>) -> Self {
        if docs.len() as u64 * 32 >= u64::from(max_doc) {
            Self::Dense(Bits::from_docs(max_doc, docs))
        } else {
            Self::Sparse(docs)
        }
    }

    /// How many of `matches` hold the value.
    fn count_in(&self, matches: &Bits) -> u64 {
        match self {
            Self::Dense(bits) => matches.count_and(bits),
            Self::Sparse(docs) => docs.iter().filter(|d| matches.contains(**d)).count() as u64,
        }
    }

    /// Keeps only the documents of `m` that hold the value.
    fn intersect(&self, m: &mut Bits) {
        match self {
            Self::Dense(bits) => m.and(bits),
            Self::Sparse(docs) => {
                let kept = Bits::from_docs(
                    u32::try_from(m.words.len() * 64).unwrap_or(u32::MAX),
                    docs.iter().copied().filter(|d| m.contains(*d)),
                );
                *m = kept;
            }
        }
    }

    /// Adds the documents holding the value to `into`.
    fn add_to(&self, into: &mut Bits) {
        match self {
            Self::Dense(bits) => into.or(bits),
            Self::Sparse(docs) => docs.iter().for_each(|d| into.insert(*d)),
        }
    }
}

/// The values of one facet field in a segment, and the documents holding each.
struct FacetBits {
    /// Values in term order (sorted), so ordinals index `names` and `docs`.
    names: Vec<String>,
    docs: Vec<ValueDocs>,
    /// The column, for reading a few documents' values.
    column: Option<tantivy::columnar::StrColumn>,
}

/// A sort order's column, to read a key from.
enum KeyColumn {
    U64(tantivy::columnar::Column<u64>),
    F64(tantivy::columnar::Column<f64>),
}

/// What is derived from one segment, built on the first search that meets it.
pub(super) struct SegmentView {
    max_doc: u32,
    /// Per field of [`FACET_FIELDS`].
    facets: [FacetBits; 4],
    nsfw: Bits,
    moderated: Bits,
    /// The columns of the sort keys: created_at, price, rating.
    created_at: KeyColumn,
    price: KeyColumn,
    rating: KeyColumn,
    /// Document ids sorted by (key, id), per order (see [`order_slot`]).
    orders: [Vec<DocId>; ORDERS],
    /// Per order of [`RANGE_SLOTS`], its first `j / RANGE_STEPS` of documents as a bitset, for
    /// `j` in `1..RANGE_STEPS` (empty in segments under [`RANGE_STEPS_MIN_DOCS`]).
    range_steps: [Vec<Bits>; 2],
    /// Documents that expire, by expiry time.
    expiring: Vec<(u64, DocId)>,
    /// Countries' `ships_to` bitsets, built when first searched for (only countries the
    /// segment holds).
    ships_to: Mutex<HashMap<String, Arc<Bits>>>,
    ships_to_field: Field,
    /// The live documents, for the number of deletions they were built at.
    alive: Mutex<Option<(u32, Arc<Bits>)>>,
    /// What text scans keep of the terms they read here (`text.rs`).
    pub(super) terms: super::text::TermViews,
}

impl SegmentView {
    fn build(segment: &SegmentReader, ships_to_field: Field) -> Result<Self, SearchError> {
        let max_doc = segment.max_doc();
        let fast = segment.fast_fields();
        let facet = |name: &str| -> Result<FacetBits, SearchError> {
            let Some(column) = fast.str(name)? else {
                return Ok(FacetBits {
                    names: Vec::new(),
                    docs: Vec::new(),
                    column: None,
                });
            };
            let terms = column.num_terms();
            let mut names = Vec::with_capacity(terms);
            let mut name = String::new();
            for ord in 0..terms as u64 {
                name.clear();
                column
                    .ord_to_str(ord, &mut name)
                    .map_err(tantivy::TantivyError::from)?;
                names.push(name.clone());
            }
            let mut lists: Vec<Vec<DocId>> = vec![Vec::new(); terms];
            for doc in 0..max_doc {
                if let Some(list) = column
                    .term_ords(doc)
                    .next()
                    .and_then(|ord| usize::try_from(ord).ok())
                    .and_then(|ord| lists.get_mut(ord))
                {
                    list.push(doc);
                }
            }
            Ok(FacetBits {
                names,
                docs: lists
                    .into_iter()
                    .map(|docs| ValueDocs::new(max_doc, docs))
                    .collect(),
                column: Some(column),
            })
        };
        let facets = [
            facet(FACET_FIELDS[0])?,
            facet(FACET_FIELDS[1])?,
            facet(FACET_FIELDS[2])?,
            facet(FACET_FIELDS[3])?,
        ];
        let flag = |name: &str| -> Result<Bits, SearchError> {
            let column = fast.u64(name)?;
            Ok(Bits::from_docs(
                max_doc,
                (0..max_doc).filter(|doc| column.first(*doc).unwrap_or(0) == 1),
            ))
        };
        let nsfw = flag("nsfw")?;
        let moderated = flag("moderated")?;
        let created_at = KeyColumn::U64(fast.u64("created_at")?);
        let price = KeyColumn::F64(fast.f64("price")?);
        let rating = KeyColumn::F64(fast.f64("rating")?);
        let expires_at = fast.u64("expires_at")?;
        let mut expiring: Vec<(u64, DocId)> = (0..max_doc)
            .filter_map(|doc| {
                let at = expires_at.first(doc).unwrap_or(u64::MAX);
                (at != u64::MAX).then_some((at, doc))
            })
            .collect();
        expiring.sort_unstable();
        let mut view = Self {
            max_doc,
            facets,
            nsfw,
            moderated,
            created_at,
            price,
            rating,
            orders: Default::default(),
            range_steps: Default::default(),
            expiring,
            ships_to: Mutex::new(HashMap::new()),
            ships_to_field,
            alive: Mutex::new(None),
            terms: super::text::TermViews::default(),
        };
        for slot in 0..ORDERS {
            let mut keyed: Vec<(u64, DocId)> =
                (0..max_doc).map(|doc| (view.key(slot, doc), doc)).collect();
            keyed.sort_unstable();
            view.orders[slot] = keyed.into_iter().map(|(_, doc)| doc).collect();
        }
        if max_doc >= RANGE_STEPS_MIN_DOCS {
            for (steps, slot) in view.range_steps.iter_mut().zip(RANGE_SLOTS) {
                let order = &view.orders[slot];
                let mut bits = Bits::empty(max_doc);
                let mut done = 0;
                for j in 1..RANGE_STEPS {
                    let to = step_position(j, order.len());
                    for doc in &order[done..to] {
                        bits.insert(*doc);
                    }
                    done = to;
                    steps.push(bits.clone());
                }
            }
        }
        Ok(view)
    }

    /// A document's key in order `slot`: its natural order is the order's.
    fn key(&self, slot: usize, doc: DocId) -> u64 {
        let read = |column: &KeyColumn| match column {
            KeyColumn::U64(c) => c.first(doc).unwrap_or(0),
            KeyColumn::F64(c) => f64_key(c.first(doc).unwrap_or(0.0)),
        };
        match slot {
            0 => !read(&self.created_at),
            1 => read(&self.price),
            2 => !read(&self.price),
            _ => !read(&self.rating),
        }
    }

    /// The segment's live documents.
    fn alive(&self, segment: &SegmentReader) -> Arc<Bits> {
        let deleted = segment.num_deleted_docs();
        let mut cached = self.alive.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, bits)) = cached.as_ref()
            && *at == deleted
        {
            return Arc::clone(bits);
        }
        let bits = Arc::new(match segment.alive_bitset() {
            Some(alive) => Bits::from_docs(self.max_doc, alive.iter_alive()),
            None => Bits::full(self.max_doc),
        });
        *cached = Some((deleted, Arc::clone(&bits)));
        bits
    }

    /// Documents whose `ships_to` holds `country`.
    fn ships_to(&self, segment: &SegmentReader, country: &str) -> Result<Arc<Bits>, SearchError> {
        if let Some(bits) = self
            .ships_to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(country)
        {
            return Ok(Arc::clone(bits));
        }
        let term = Term::from_field_text(self.ships_to_field, country);
        let bits = Arc::new(postings(segment, &term, self.max_doc)?);
        // A caller may ask for any value: only those the segment holds are kept, so the map is
        // bounded by the segment's own countries (looking up an absent term is a dictionary
        // miss, cheap to repeat).
        if bits.count() > 0 {
            self.ships_to
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(country.to_string(), Arc::clone(&bits));
        }
        Ok(bits)
    }

    /// The documents of one facet value, or `None` when no document of the segment has it.
    fn facet_value(&self, facet: usize, value: &str) -> Option<&ValueDocs> {
        let f = &self.facets[facet];
        let ord = f.names.binary_search_by(|n| n.as_str().cmp(value)).ok()?;
        f.docs.get(ord)
    }

    /// Documents whose order-`slot` key lies in `low..=high` (keys as [`f64_key`] maps them).
    ///
    /// In a large segment, from the order's nearest prefix bitsets (`range_steps`) and at most
    /// a 32nd of the segment's documents set or cleared one by one; else from the documents
    /// of the range.
    pub(super) fn key_range(&self, slot: usize, low: u64, high: u64) -> Bits {
        let order = &self.orders[slot];
        let start = order.partition_point(|doc| self.key(slot, *doc) < low);
        let end = order.partition_point(|doc| self.key(slot, *doc) <= high);
        let end = end.max(start);
        let steps = RANGE_SLOTS
            .iter()
            .position(|s| *s == slot)
            .map(|i| &self.range_steps[i])
            .filter(|steps| !steps.is_empty());
        match steps {
            Some(steps) if (end - start) * RANGE_STEPS > order.len() => {
                let mut bits = self.order_prefix(order, steps, end);
                if start > 0 {
                    bits.and_not(&self.order_prefix(order, steps, start));
                }
                bits
            }
            _ => self.key_range_walk(order, start, end),
        }
    }

    /// Checks [`SegmentView::key_range`] against the documents of each range, for ranges
    /// between many keys of each range-filtered order. Returns how many ranges came from the
    /// prefix bitsets.
    #[cfg(test)]
    pub(super) fn check_key_ranges(&self) -> usize {
        let mut from_steps = 0;
        for slot in RANGE_SLOTS {
            let order = &self.orders[slot];
            let mut keys: Vec<u64> = (0..=20)
                .map(|i| order.get(i * order.len().saturating_sub(1) / 20))
                .filter_map(|doc| doc.map(|doc| self.key(slot, *doc)))
                .collect();
            keys.extend([0, 1, u64::MAX - 1, u64::MAX]);
            for &low in &keys {
                for &high in &keys {
                    let start = order.partition_point(|doc| self.key(slot, *doc) < low);
                    let end = order.partition_point(|doc| self.key(slot, *doc) <= high);
                    let want =
                        Bits::from_docs(self.max_doc, order[start..end.max(start)].iter().copied());
                    assert_eq!(
                        self.key_range(slot, low, high),
                        want,
                        "{slot}: {low}..={high}"
                    );
                    if (end.max(start) - start) * RANGE_STEPS > order.len() {
                        from_steps += 1;
                    }
                }
            }
        }
        from_steps
    }

    /// The documents of `order[start..end]`, set or cleared one by one.
    fn key_range_walk(&self, order: &[DocId], start: usize, end: usize) -> Bits {
        if (end - start) * 2 > order.len() {
            // Most documents are in range: clearing those outside it writes fewer bits.
            let mut bits = Bits::full(self.max_doc);
            for doc in order[..start].iter().chain(&order[end..]) {
                bits.remove(*doc);
            }
            bits
        } else {
            Bits::from_docs(self.max_doc, order[start..end].iter().copied())
        }
    }

    /// The documents of `order[..to]`: the nearest of `steps` (see `range_steps`), corrected
    /// one document at a time.
    fn order_prefix(&self, order: &[DocId], steps: &[Bits], to: usize) -> Bits {
        let n = order.len().max(1);
        let j = ((to * RANGE_STEPS + n / 2) / n).min(RANGE_STEPS);
        let at = step_position(j, order.len());
        let mut bits = match j {
            0 => Bits::empty(self.max_doc),
            RANGE_STEPS => Bits::full(self.max_doc),
            _ => steps
                .get(j - 1)
                .cloned()
                .unwrap_or_else(|| Bits::empty(self.max_doc)),
        };
        if at < to {
            order[at..to].iter().for_each(|doc| bits.insert(*doc));
        } else {
            order[to..at].iter().for_each(|doc| bits.remove(*doc));
        }
        bits
    }

    /// The documents that pass `q`'s filters (everything but its text).
    pub(super) fn filter(
        &self,
        segment: &SegmentReader,
        q: &SearchQuery,
        signer_field: Field,
    ) -> Result<Bits, SearchError> {
        let mut m = Bits::clone(&self.alive(segment));
        let expired = self.expiring.partition_point(|(at, _)| *at <= q.now);
        for (_, doc) in &self.expiring[..expired] {
            m.remove(*doc);
        }
        if !q.nsfw {
            m.and_not(&self.nsfw);
        }
        if let Some(moderated) = q.moderated {
            if moderated {
                m.and(&self.moderated);
            } else {
                m.and_not(&self.moderated);
            }
        }
        if let Some(category) = &q.category {
            let root = category.trim_matches('/');
            let paths = &self.facets[0];
            let mut union = Bits::empty(self.max_doc);
            for (name, docs) in paths.names.iter().zip(&paths.docs) {
                if is_under(name, root) {
                    docs.add_to(&mut union);
                }
            }
            m.and(&union);
        }
        for (facet, value) in single_value_filters(q).into_iter().enumerate() {
            if let Some(value) = value {
                match self.facet_value(facet, value) {
                    Some(docs) => docs.intersect(&mut m),
                    None => m.clear(),
                }
            }
        }
        if q.price_min.is_some() || q.price_max.is_some() {
            let low = q.price_min.map_or(0, f64_key);
            let high = q.price_max.map_or(u64::MAX, f64_key);
            m.and(&self.key_range(1, low, high));
        }
        if let Some(min) = q.min_rating {
            // The rating order is descending: a rating of at least `min` is a key of at most
            // the inverted `min`.
            m.and(&self.key_range(3, 0, !f64_key(min)));
        }
        if let Some(country) = &q.ships_to {
            let mut ships = Bits::clone(&*self.ships_to(segment, country)?);
            ships.or(&*self.ships_to(segment, "ALL")?);
            m.and(&ships);
        }
        if let Some(seller) = &q.seller {
            let mut docs = Bits::empty(self.max_doc);
            SellerDocs::open(segment, signer_field)?
                .each(seller.as_bytes(), |doc| docs.insert(doc))?;
            m.and(&docs);
        }
        Ok(m)
    }

    /// Adds the facet counts of `matches` (`count` documents, found with `q`'s filters) to
    /// `into`, per field of [`FACET_FIELDS`] and value.
    ///
    /// What `q`'s filters imply is not counted: a facet filtered to one value (type,
    /// condition, currency) counts every match there, and under a category filter only the
    /// paths under it can hold a match (each document holds one value per facet, as
    /// [`SegmentView::filter`] selects them).
    pub(super) fn count_facets(
        &self,
        matches: &Bits,
        count: u64,
        q: &SearchQuery,
        into: &mut [HashMap<String, u64>; 4],
    ) {
        if count == 0 {
            return;
        }
        let root = q.category.as_deref().map(|c| c.trim_matches('/'));
        let filters = single_value_filters(q);
        for (f, (facet, into)) in self.facets.iter().zip(into.iter_mut()).enumerate() {
            if let Some(value) = filters[f] {
                if self.facet_value(f, value).is_some() {
                    *into.entry(value.to_owned()).or_default() += count;
                }
                continue;
            }
            // Only a category path under the filter's category can hold a match.
            let open = |name: &String| f != 0 || root.is_none_or(|root| is_under(name, root));
            let mut counts = vec![0u64; facet.docs.len()];
            // Per value, a popcount over the segment's words (or a probe per listed document);
            // per match, one read of its value from the column. Take the cheaper.
            let per_value: u64 = facet
                .docs
                .iter()
                .zip(&facet.names)
                .filter(|(_, name)| open(name))
                .map(|(d, _)| match d {
                    ValueDocs::Dense(_) => matches.words.len() as u64,
                    ValueDocs::Sparse(docs) => docs.len() as u64,
                })
                .sum();
            match &facet.column {
                Some(column) if count.saturating_mul(8) < per_value => {
                    for doc in matches.iter() {
                        if let Some(c) = column
                            .term_ords(doc)
                            .next()
                            .and_then(|ord| usize::try_from(ord).ok())
                            .and_then(|ord| counts.get_mut(ord))
                        {
                            *c += 1;
                        }
                    }
                }
                _ => {
                    for ((c, docs), name) in counts.iter_mut().zip(&facet.docs).zip(&facet.names) {
                        if open(name) {
                            *c = docs.count_in(matches);
                        }
                    }
                }
            }
            for (name, c) in facet.names.iter().zip(counts) {
                if c == 0 {
                    continue;
                }
                // Every segment holds most values: the name is copied for the first only.
                match into.get_mut(name.as_str()) {
                    Some(total) => *total += c,
                    None => {
                        into.insert(name.clone(), c);
                    }
                }
            }
        }
    }

    /// The first `n` of `matches` (`count` documents) in `sort`'s order, with their keys.
    pub(super) fn top(
        &self,
        matches: &Bits,
        count: u64,
        sort: Sort,
        n: usize,
    ) -> Vec<(u64, DocId)> {
        let slot = order_slot(sort);
        let key = |doc: DocId| self.key(slot, doc);
        if n == 0 || count == 0 {
            return Vec::new();
        }
        // Walking the order meets a match every `max_doc / count` documents; scanning the
        // matches reads each one's key. Take the cheaper.
        let walk = (n as u64).saturating_mul(u64::from(self.max_doc)) / count;
        if walk <= count.saturating_mul(4) {
            self.orders[slot]
                .iter()
                .copied()
                .filter(|doc| matches.contains(*doc))
                .take(n)
                .map(|doc| (key(doc), doc))
                .collect()
        } else {
            let mut hits: Vec<(u64, DocId)> = matches.iter().map(|doc| (key(doc), doc)).collect();
            if hits.len() > n {
                hits.select_nth_unstable(n - 1);
                hits.truncate(n);
            }
            hits.sort_unstable();
            hits
        }
    }
}

/// The facets (by index in [`FACET_FIELDS`]) that `q` filters to one value, and the value:
/// type, condition and currency; a category filter takes a path and everything under it.
fn single_value_filters(q: &SearchQuery) -> [Option<&str>; 4] {
    [
        None,
        q.kind.as_deref(),
        q.condition.as_deref(),
        q.currency.as_deref(),
    ]
}

/// Whether category path `name` is `root` or under it.
fn is_under(name: &str, root: &str) -> bool {
    name.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The documents of a term's postings (deleted ones included).
fn postings(segment: &SegmentReader, term: &Term, max_doc: u32) -> Result<Bits, SearchError> {
    let mut bits = Bits::empty(max_doc);
    let index = segment.inverted_index(term.field())?;
    if let Some(postings) = index
        .read_block_postings(term, IndexRecordOption::Basic)
        .map_err(tantivy::TantivyError::from)?
    {
        bits.insert_postings(postings);
    }
    Ok(bits)
}

/// A segment's view once built; its lock is held while it is built, so searches that need
/// it at the same time wait for one build.
type ViewSlot = Arc<Mutex<Option<Arc<SegmentView>>>>;

/// The [`SegmentView`]s of the segments searched lately.
#[derive(Default)]
pub(super) struct Views {
    /// The views, and the searcher generation whose segments they were last pruned to.
    segments: Mutex<(u64, HashMap<SegmentId, ViewSlot>)>,
}

impl Views {
    /// The views of `searcher`'s segments, in its segment order; each is built (once, even if
    /// several searches ask at the same time) on first use.
    pub(super) fn of(
        &self,
        searcher: &tantivy::Searcher,
        ships_to_field: Field,
    ) -> Result<Vec<Arc<SegmentView>>, SearchError> {
        let segments = searcher.segment_readers();
        segments
            .iter()
            .zip(self.slots(searcher))
            .map(|(segment, slot)| Self::view(segment, &slot, ships_to_field))
            .collect()
    }

    /// Builds the views of `searcher`'s segments of at least `min_docs` documents that have
    /// none yet.
    pub(super) fn warm(
        &self,
        searcher: &tantivy::Searcher,
        ships_to_field: Field,
        min_docs: u32,
    ) -> Result<(), SearchError> {
        for (segment, slot) in searcher.segment_readers().iter().zip(self.slots(searcher)) {
            if segment.max_doc() >= min_docs {
                Self::view(segment, &slot, ships_to_field)?;
            }
        }
        Ok(())
    }

    /// Whether a segment of `searcher` of at least `min_docs` documents has no view yet.
    pub(super) fn missing(&self, searcher: &tantivy::Searcher, min_docs: u32) -> bool {
        let map = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        searcher.segment_readers().iter().any(|segment| {
            // A slot locked right now is being built: not missing.
            segment.max_doc() >= min_docs
                && map
                    .1
                    .get(&segment.segment_id())
                    .is_none_or(|slot| slot.try_lock().is_ok_and(|view| view.is_none()))
        })
    }

    /// The slots of `searcher`'s segments, in its segment order.
    fn slots(&self, searcher: &tantivy::Searcher) -> Vec<ViewSlot> {
        let segments = searcher.segment_readers();
        let mut map = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let generation = searcher.generation().generation_id();
        if generation > map.0 {
            // Views of segments merged away are dropped; a search still running on an older
            // generation holds its own references (and one that starts on an older generation
            // later builds what it lacks without pruning the newer generation's views).
            map.0 = generation;
            let live: std::collections::HashSet<SegmentId> =
                segments.iter().map(SegmentReader::segment_id).collect();
            map.1.retain(|id, _| live.contains(id));
        }
        segments
            .iter()
            .map(|s| Arc::clone(map.1.entry(s.segment_id()).or_default()))
            .collect()
    }

    /// The view in `slot`, built from `segment` first if there is none.
    fn view(
        segment: &SegmentReader,
        slot: &ViewSlot,
        ships_to_field: Field,
    ) -> Result<Arc<SegmentView>, SearchError> {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(view) = slot.as_ref() {
            return Ok(Arc::clone(view));
        }
        let started = std::time::Instant::now();
        let view = Arc::new(SegmentView::build(segment, ships_to_field)?);
        let took = started.elapsed();
        metrics::histogram!("souk_search_view_build_seconds").record(took.as_secs_f64());
        tracing::debug!(
            segment = %segment.segment_id().short_uuid_string(),
            documents = segment.max_doc(),
            millis = took.as_secs_f64() * 1e3,
            "built the search view of a segment"
        );
        *slot = Some(Arc::clone(&view));
        Ok(view)
    }
}

/// A query matching the documents of a bitset per segment, with score 0: a search's filters,
/// evaluated by [`SegmentView::filter`], inside a tantivy query.
#[derive(Clone, Debug)]
pub(super) struct FilterQuery {
    /// Per segment, the documents that pass and how many they are (counted once here, not by
    /// each clause that consults them).
    segments: Arc<HashMap<SegmentId, (Arc<Bits>, u64)>>,
}

impl FilterQuery {
    /// The filter of the segments with these ids: each one's documents that pass.
    pub(super) fn new(segments: impl IntoIterator<Item = (SegmentId, Bits)>) -> Self {
        Self {
            segments: Arc::new(
                segments
                    .into_iter()
                    .map(|(id, bits)| {
                        let count = bits.count();
                        (id, (Arc::new(bits), count))
                    })
                    .collect(),
            ),
        }
    }

    /// The documents of `segment` that pass, and their number.
    fn of(&self, segment: &SegmentReader) -> Option<&(Arc<Bits>, u64)> {
        self.segments.get(&segment.segment_id())
    }
}

impl Query for FilterQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for FilterQuery {
    fn scorer(&self, reader: &SegmentReader, _: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let (bits, count) = self
            .of(reader)
            .cloned()
            .unwrap_or_else(|| (Arc::new(Bits::empty(0)), 0));
        let size = u32::try_from(count).unwrap_or(u32::MAX);
        let doc = bits.next_from(0);
        Ok(Box::new(BitsScorer { bits, doc, size }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let matched = self.of(reader).is_some_and(|(bits, _)| bits.contains(doc));
        if matched {
            Ok(Explanation::new("passes the filters", 0.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(
                "document does not pass the filters".into(),
            ))
        }
    }
}

/// [`FilterQuery`]'s documents in one segment.
struct BitsScorer {
    bits: Arc<Bits>,
    doc: DocId,
    size: u32,
}

impl DocSet for BitsScorer {
    fn advance(&mut self) -> DocId {
        if self.doc != TERMINATED {
            self.doc = self.bits.next_from(self.doc + 1);
        }
        self.doc
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc != TERMINATED && target > self.doc {
            self.doc = self.bits.next_from(target);
        }
        self.doc
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        // One bit test: the intersection calls this for each candidate of the clause that leads.
        if target < TERMINATED && self.bits.contains(target) {
            self.doc = target;
            SeekDangerResult::Found
        } else {
            // Any bound in `(target, next document]` will do; the word's next bit is at hand.
            self.doc = self
                .bits
                .next_from(target.saturating_add(1).min(TERMINATED));
            SeekDangerResult::SeekLowerBound(self.doc)
        }
    }

    fn size_hint(&self) -> u32 {
        self.size
    }

    /// Walking a text clause and testing each of its documents here costs a bit test each;
    /// seeking a union of text clauses to each of these documents costs far more. So the
    /// filter leads an intersection only when it is much smaller than the text's matches.
    fn cost(&self) -> u64 {
        u64::from(self.size).saturating_mul(FILTER_LEAD_FACTOR)
    }
}

/// How many documents of a text clause cost as much as seeking it once (see
/// [`BitsScorer::cost`]).
const FILTER_LEAD_FACTOR: u64 = 8;

impl Scorer for BitsScorer {
    fn score(&mut self) -> Score {
        0.0
    }
}

/// A text clause seen through the filters: only those of its documents that pass them, with
/// the clause's own scores.
///
/// A selective filter (`ships_to=DE`, a category) keeps a small part of a common word's
/// documents. Filtering each clause before the union of a word's clauses means the union
/// merges and scores only documents that pass, instead of every document of the word; the
/// filter costs one bit test per posting. Where the filter passes at least half of a segment,
/// the clause is left unfiltered there.
///
/// So it may match documents that fail the filter: use it only inside a conjunction that also
/// holds the [`FilterQuery`] itself, which decides.
#[derive(Debug)]
pub(super) struct FilteredQuery {
    pub(super) inner: Box<dyn Query>,
    pub(super) filter: FilterQuery,
}

impl Clone for FilteredQuery {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.box_clone(),
            filter: self.filter.clone(),
        }
    }
}

impl Query for FilteredQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(FilteredWeight {
            inner: self.inner.weight(scoring)?,
            filter: self.filter.clone(),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.inner.query_terms(visitor);
    }
}

struct FilteredWeight {
    inner: Box<dyn Weight>,
    filter: FilterQuery,
}

impl Weight for FilteredWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inner = self.inner.scorer(reader, boost)?;
        let Some((bits, count)) = self.filter.of(reader) else {
            return Ok(inner);
        };
        // A posting costs a bit test (and a virtual call) more, and the union is spared each one
        // that fails. At 1M listings this paid where the filter passed under half the segment
        // (`ships_to=DE`: 4.2 → 3.4 ms, `category=digital/software`: 2.8 → 1.8 ms), and a
        // sample of a clause's first postings misjudged it (a store's listings are adjacent).
        if count.saturating_mul(2) > u64::from(reader.max_doc()) {
            return Ok(inner);
        }
        Ok(Box::new(FilteredScorer::new(inner, Arc::clone(bits))))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let passes = self
            .filter
            .of(reader)
            .is_none_or(|(bits, _)| bits.contains(doc));
        if passes {
            self.inner.explain(reader, doc)
        } else {
            Err(tantivy::TantivyError::InvalidArgument(
                "document does not pass the filters".into(),
            ))
        }
    }
}

/// [`FilteredQuery`]'s scorer: the inner scorer, stepping over documents not in `bits`.
struct FilteredScorer {
    inner: Box<dyn Scorer>,
    bits: Arc<Bits>,
}

impl FilteredScorer {
    fn new(inner: Box<dyn Scorer>, bits: Arc<Bits>) -> Self {
        let mut scorer = Self { inner, bits };
        scorer.skip_filtered();
        scorer
    }

    /// From the inner scorer's current document on, to the first one that passes.
    fn skip_filtered(&mut self) -> DocId {
        let mut doc = self.inner.doc();
        while doc != TERMINATED && !self.bits.contains(doc) {
            doc = self.inner.advance();
        }
        doc
    }
}

impl DocSet for FilteredScorer {
    fn advance(&mut self) -> DocId {
        self.inner.advance();
        self.skip_filtered()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.inner.seek(target);
        self.skip_filtered()
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }
}

impl Scorer for FilteredScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

/// Collects a query's matches as one bitset per segment (by segment ordinal).
pub(super) struct MatchCollector;

impl Collector for MatchCollector {
    type Fruit = Vec<(u32, Bits)>;
    type Child = SegmentMatches;

    fn for_segment(
        &self,
        segment_ord: tantivy::SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentMatches> {
        Ok(SegmentMatches {
            segment_ord,
            bits: Bits::empty(segment.max_doc()),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<(u32, Bits)>) -> tantivy::Result<Vec<(u32, Bits)>> {
        Ok(segments)
    }
}

/// [`MatchCollector`] in one segment.
pub(super) struct SegmentMatches {
    segment_ord: u32,
    bits: Bits,
}

impl SegmentCollector for SegmentMatches {
    type Fruit = (u32, Bits);

    fn collect(&mut self, doc: DocId, _: Score) {
        self.bits.insert(doc);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for doc in docs {
            self.bits.insert(*doc);
        }
    }

    fn harvest(self) -> (u32, Bits) {
        (self.segment_ord, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word loops (on this CPU, the AVX2 ones where it has them) agree with a bit-by-bit
    /// reading, at every length around the vector widths' edges.
    #[test]
    fn word_loops_agree_with_counting_bit_by_bit() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bit = |w: &[u64], i: usize| w[i / 64] >> (i % 64) & 1 == 1;
        for len in [
            0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000,
        ] {
            let a: Vec<u64> = (0..len).map(|_| next()).collect();
            let b: Vec<u64> = (0..len).map(|_| next() & next()).collect();
            let n = len * 64;
            let expect = |f: &dyn Fn(bool, bool) -> bool| {
                (0..n).filter(|&i| f(bit(&a, i), bit(&b, i))).count() as u64
            };
            assert_eq!(words::count(&a), expect(&|x, _| x), "count, {len} words");
            assert_eq!(
                words::count_and(&a, &b),
                expect(&|x, y| x && y),
                "count_and, {len} words"
            );
            for (name, op, f) in [
                (
                    "and",
                    words::and as fn(&mut [u64], &[u64]),
                    (|x, y| x && y) as fn(bool, bool) -> bool,
                ),
                ("and_not", words::and_not, |x, y| x && !y),
                ("or", words::or, |x, y| x || y),
            ] {
                let mut out = a.clone();
                op(&mut out, &b);
                for i in 0..n {
                    assert_eq!(
                        bit(&out, i),
                        f(bit(&a, i), bit(&b, i)),
                        "{name}, bit {i} of {len} words"
                    );
                }
            }
        }
    }

    #[test]
    fn bits_hold_exactly_the_documents_put_in_them() {
        for max_doc in [0u32, 1, 63, 64, 65, 130] {
            let full = Bits::full(max_doc);
            assert_eq!(full.count(), u64::from(max_doc));
            assert_eq!(
                full.iter().collect::<Vec<_>>(),
                (0..max_doc).collect::<Vec<_>>()
            );
            let odd = Bits::from_docs(max_doc, (0..max_doc).filter(|d| d % 2 == 1));
            let mut both = full.clone();
            both.and(&odd);
            assert_eq!(both, odd);
            let mut even = full.clone();
            even.and_not(&odd);
            assert!(even.iter().all(|d| d % 2 == 0));
            assert_eq!(even.count() + odd.count(), u64::from(max_doc));
            assert_eq!(even.count_and(&odd), 0);
            let mut union = even.clone();
            union.or(&odd);
            assert_eq!(union, full);
            // Walking with next_from visits what iter does, and ends at TERMINATED.
            let mut walked = Vec::new();
            let mut doc = odd.next_from(0);
            while doc != TERMINATED {
                walked.push(doc);
                doc = odd.next_from(doc + 1);
            }
            assert_eq!(walked, odd.iter().collect::<Vec<_>>());
            assert_eq!(odd.next_from(max_doc + 100), TERMINATED);
            // Ids beyond the segment are ignored, not a panic.
            let mut bits = Bits::empty(max_doc);
            bits.insert(max_doc.div_ceil(64) * 64 + 1);
            assert_eq!(bits.count(), 0);
        }
    }

    #[test]
    fn f64_keys_order_as_total_cmp_does() {
        let values = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-9,
            3.0,
            1e300,
            f64::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(f64_key(pair[0]) < f64_key(pair[1]), "{pair:?}");
        }
    }
}
