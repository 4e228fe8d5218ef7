//! Text queries of one or two words, evaluated in one pass per segment without tantivy's query
//! tree.
//!
//! Through tantivy, a text query is a conjunction of one union per word (see
//! [`SearchIndex::text_words`](super::SearchIndex)) and the filter. Its scorers are trait
//! objects nested three deep: every posting of every clause is merged by a union, offered to an
//! intersection, scored and handed to two collectors, each step a virtual call. Here each
//! segment is read in windows of [`WINDOW`] documents, each starting where the filter passes a
//! document and every word has a posting. Words go rarest first. For each word, the postings of
//! its clauses that fall in the window and are still in the running (they passed the filter and
//! the words before) set a bit and add the clause's score to the document's slot in a score
//! array, clause by clause. The window's matches are what passes every word; each is offered
//! to the top hits with the sum of its words' scores.
//!
//! **Scores are tantivy's to the bit.** A clause's score is computed by the same [`Bm25Weight`]
//! tantivy's term scorer uses (built the same way from the searcher's statistics, boosted the same
//! way) from the same term frequency and field norm, read a block of 128 postings at a time (for
//! frequencies 1 and 2 from a table of that very function's values per field-norm id, built once
//! per query). The prefix clause is a constant over the documents of the same terms tantivy's
//! prefix query expands to (`prefix_docs`), kept as a bitset and added 64 documents at a time.
//! tantivy's union adds its clauses' scores in clause order starting from zero, as the score array
//! does. Its intersection adds the words' scores and the filter's zeros in an order chosen by cost;
//! with at most two non-zero addends every order gives the same `f32`, which is why this path takes
//! texts of at most two words and leaves longer ones to tantivy. Ties are broken by ascending
//! address, as tantivy's `TopDocs` does; as matches are offered in ascending address, one whose
//! score does not exceed the worst kept hit's is passed over without touching the heap.
//!
//! **Windows that cannot enter are not scored.** Windows are aligned to their size, and each
//! segment keeps a [`TermView`] of every term a search has read there: per window, the lowest
//! field norm of the term's postings of frequency 1 and of 2, and the highest frequency above 2.
//! A BM25 score grows with the frequency and falls with the field norm whatever the statistics,
//! so a clause's best score in a window is that of one of those pairs, and the sum of the
//! clauses' best scores (added as a match's are) bounds every match there. Once the worst kept
//! hit scores at least that much, the window is read for its matches only. A term in at least
//! one document in [`DENSE`] also keeps its documents as a bitset, read a word of 64 at a time
//! instead of its postings; in a scored window where its postings all have frequency 1, a
//! document's score needs only its field norm, so only the documents still in the running are
//! scored, from the bitset. The differential tests in `search.rs` hold the two paths to
//! identical hits, totals and facets.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::BlockSegmentPostings;
use tantivy::query::{Bm25Weight, BoostQuery, PhrasePrefixQuery, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, Score, Searcher, SegmentReader, TERMINATED, Term};

use super::SearchError;
use super::bitmaps::Bits;

/// Documents per window: 64 bitset words, and a score array of 16 KiB per word.
const WINDOW: u32 = 4096;
const WINDOW_WORDS: usize = WINDOW as usize / 64;

/// The longest text (in words that yield a token) this path evaluates.
const MAX_WORDS: usize = 2;

/// One clause of a word of a search text.
#[derive(Debug, Clone)]
pub(super) enum TextClause {
    /// The word's token in one field, its BM25 score multiplied by `boost`.
    Term { term: Term, boost: Score },
    /// The word as the prefix of a word in the prefix field: a constant score.
    Prefix(Term),
}

impl TextClause {
    /// The score of a prefix match.
    pub(super) const PREFIX_BOOST: Score = 0.5;
    /// At most this many words of a segment's prefix field match a prefix.
    pub(super) const PREFIX_EXPANSIONS: u32 = 64;

    /// The clause as a tantivy query.
    pub(super) fn query(&self) -> Box<dyn Query> {
        match self {
            Self::Term { term, boost } => Box::new(BoostQuery::new(
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                *boost,
            )),
            Self::Prefix(term) => {
                let mut prefix = PhrasePrefixQuery::new(vec![term.clone()]);
                prefix.set_max_expansions(Self::PREFIX_EXPANSIONS);
                Box::new(BoostQuery::new(Box::new(prefix), Self::PREFIX_BOOST))
            }
        }
    }
}

/// Term frequencies whose scores [`ScoreTable`] holds (most postings of a title or a tag).
const TABLE_FREQS: usize = 2;

/// A term clause's scores for frequencies `1..=TABLE_FREQS`, per field-norm id: looked up
/// instead of computed per posting. Each entry is [`Bm25Weight::score`] of the same arguments,
/// so the same `f32`.
type ScoreTable = [[Score; 256]; TABLE_FREQS];

/// A clause prepared for one searcher.
enum Prepared {
    Term {
        term: Term,
        bm25: Bm25Weight,
        table: Arc<ScoreTable>,
    },
    /// The prefix (a range of terms, constant score).
    Prefix(Term),
}

/// A text query prepared for one searcher; [`TextScan::segment`] evaluates it in a segment.
pub(super) struct TextScan {
    words: Vec<Vec<Prepared>>,
    stats: Cell<ScanStats>,
}

/// How much of the segments a [`TextScan`] scored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScanStats {
    /// Windows that held a match.
    pub(super) windows: usize,
    /// Those of them whose matches were scored.
    pub(super) scored: usize,
}

impl TextScan {
    /// Prepares `words` (from `SearchIndex::text_words`) for `searcher`. `None` when the text
    /// has more than [`MAX_WORDS`] words: tantivy's sum of three or more word scores depends
    /// on the order its intersection chose, so those texts stay with tantivy.
    pub(super) fn new(
        searcher: &Searcher,
        words: &[Vec<TextClause>],
    ) -> Result<Option<Self>, SearchError> {
        if words.len() > MAX_WORDS {
            return Ok(None);
        }
        let mut prepared = Vec::with_capacity(words.len());
        for word in words {
            let mut clauses = Vec::with_capacity(word.len());
            for clause in word {
                clauses.push(match clause {
                    // As tantivy's `TermQuery` and `BoostQuery` build their term scorer's weight.
                    TextClause::Term { term, boost } => {
                        let bm25 = Bm25Weight::for_terms(searcher, std::slice::from_ref(term))?
                            .boost_by(*boost);
                        let mut table = [[0.0; 256]; TABLE_FREQS];
                        for (freq, row) in (1u32..).zip(table.iter_mut()) {
                            for (fieldnorm_id, score) in (0u8..=u8::MAX).zip(row.iter_mut()) {
                                *score = bm25.score(fieldnorm_id, freq);
                            }
                        }
                        Prepared::Term {
                            term: term.clone(),
                            bm25,
                            table: Arc::new(table),
                        }
                    }
                    TextClause::Prefix(term) => Prepared::Prefix(term.clone()),
                });
            }
            prepared.push(clauses);
        }
        Ok(Some(Self {
            words: prepared,
            stats: Cell::default(),
        }))
    }

    /// What the scans so far scored.
    #[cfg(test)]
    pub(super) fn stats(&self) -> ScanStats {
        self.stats.get()
    }

    /// The matches of the text in `segment` (number `ord` of the searcher) that are also in
    /// `filter`; with `top`, each match is offered to it with its score.
    pub(super) fn segment(
        &self,
        segment: &SegmentReader,
        terms: &TermViews,
        ord: u32,
        filter: &Bits,
        mut top: Option<&mut TopScores>,
    ) -> Result<Bits, SearchError> {
        let max_doc = segment.max_doc();
        let mut matches = Bits::empty(max_doc);
        let mut words: Vec<Vec<Cursor>> = Vec::with_capacity(self.words.len());
        for word in &self.words {
            let mut cursors = Vec::with_capacity(word.len());
            for clause in word {
                if let Some(cursor) = Cursor::open(clause, segment, terms)? {
                    cursors.push(cursor);
                }
            }
            // A word none of whose clauses occurs here matches nothing here.
            if cursors.is_empty() {
                return Ok(matches);
            }
            words.push(cursors);
        }
        if words.is_empty() {
            return Ok(matches);
        }
        // The rarest word first: each word only looks at the documents that passed the filter
        // and the words before it.
        words.sort_by_key(|cursors| cursors.iter().map(Cursor::cost).sum::<u64>());
        let scoring = top.is_some();
        let mut presence = vec![[0u64; WINDOW_WORDS]; words.len()];
        let mut scores = if scoring {
            vec![vec![0.0 as Score; WINDOW as usize]; words.len()]
        } else {
            Vec::new()
        };
        let mut threshold = top.as_deref().and_then(TopScores::threshold);
        let mut start: DocId = 0;
        'windows: while start < max_doc {
            // The next window begins where the filter passes a document and every word may
            // have a posting, aligned to a bitset word.
            let mut base = filter.next_from(start);
            for cursors in &mut words {
                if base == TERMINATED {
                    break 'windows;
                }
                base = cursors
                    .iter_mut()
                    .map(|c| c.seek(base))
                    .min()
                    .unwrap_or(TERMINATED);
            }
            if base == TERMINATED {
                break;
            }
            // Windows are aligned to their size, so that a window is one of the term views'.
            let base = base & !(WINDOW - 1);
            let end = base.saturating_add(WINDOW);
            let window = (base / WINDOW) as usize;
            let first_word = (base / 64) as usize;
            // The window's documents still in the running: the filter's, then narrowed by each
            // word in turn.
            let mut mask = [0u64; WINDOW_WORDS];
            for (i, m) in mask.iter_mut().enumerate() {
                *m = filter.words.get(first_word + i).copied().unwrap_or(0);
            }
            // Once the worst kept hit scores at least as much as any match in the window could
            // (the sum of its clauses' best scores there), none can enter: a tie goes to the
            // earlier address. The window is then read for its matches only.
            let unscored = !scoring
                || threshold.is_some_and(|t| {
                    let best = words
                        .iter_mut()
                        .map(|cursors| {
                            cursors
                                .iter_mut()
                                .fold(0.0, |sum, c| sum + c.best(window, base, end))
                        })
                        .fold(0.0, |a, s| a + s);
                    best <= t
                });
            for (w, cursors) in words.iter_mut().enumerate() {
                let bits = &mut presence[w];
                for cursor in cursors.iter_mut() {
                    let scores = if unscored {
                        None
                    } else {
                        scores.get_mut(w).map(Vec::as_mut_slice)
                    };
                    cursor.gather(base, &mask, bits, scores);
                }
                for (m, b) in mask.iter_mut().zip(bits.iter()) {
                    *m &= b;
                }
            }
            if scoring && mask.iter().any(|m| *m != 0) {
                let mut stats = self.stats.get();
                stats.windows += 1;
                stats.scored += usize::from(!unscored);
                self.stats.set(stats);
            }
            for (i, &m) in mask.iter().enumerate() {
                if m == 0 {
                    continue;
                }
                if let Some(out) = matches.words.get_mut(first_word + i) {
                    *out = m;
                }
                if unscored {
                    continue;
                }
                if let Some(top) = top.as_deref_mut() {
                    let mut rest = m;
                    while rest != 0 {
                        let slot = i * 64 + rest.trailing_zeros() as usize;
                        rest &= rest - 1;
                        // At most two words: any order of the sum is tantivy's (module doc).
                        let score = scores.iter().map(|s| s[slot]).fold(0.0, |a, s| a + s);
                        // Matches are offered in ascending address (segments in order, each
                        // from its first document), so one that only ties the worst kept
                        // hit loses the tie: only a higher score can enter.
                        if threshold.is_some_and(|t| score <= t) {
                            continue;
                        }
                        top.offer(score, ord, base + slot as DocId);
                        threshold = top.threshold();
                    }
                }
            }
            for (w, bits) in presence.iter_mut().enumerate() {
                if let Some(window) = scores.get_mut(w).filter(|_| !unscored) {
                    for (i, word) in bits.iter().enumerate() {
                        let mut rest = *word;
                        while rest != 0 {
                            window[i * 64 + rest.trailing_zeros() as usize] = 0.0;
                            rest &= rest - 1;
                        }
                    }
                }
                *bits = [0; WINDOW_WORDS];
            }
            start = end;
        }
        Ok(matches)
    }
}

/// A clause's documents in one segment.
enum Cursor {
    /// A term's postings, read a block of 128 at a time, `pos` into the current block. When
    /// its view holds its documents as a bitset (a frequent term), the cursor moves on the
    /// bitset (`next`), and the postings are read only in windows that are scored.
    Term {
        block: Box<BlockSegmentPostings>,
        pos: usize,
        fieldnorms: FieldNormReader,
        bm25: Bm25Weight,
        table: Arc<ScoreTable>,
        view: Arc<TermView>,
        next: DocId,
    },
    /// The documents of a prefix, each with the same score.
    Const {
        docs: Arc<Bits>,
        next: DocId,
        score: Score,
    },
}

impl Cursor {
    /// The clause's cursor in `segment`, or `None` when it has no document there.
    fn open(
        clause: &Prepared,
        segment: &SegmentReader,
        terms: &TermViews,
    ) -> Result<Option<Self>, SearchError> {
        match clause {
            Prepared::Term { term, bm25, table } => {
                let index = segment.inverted_index(term.field())?;
                let Some(block) = index
                    .read_block_postings(term, IndexRecordOption::WithFreqs)
                    .map_err(tantivy::TantivyError::from)?
                else {
                    return Ok(None);
                };
                if block.docs().is_empty() {
                    return Ok(None);
                }
                // As tantivy's term weight: the field's norms, or 1 for every document.
                let fieldnorms = segment
                    .fieldnorms_readers()
                    .get_field(term.field())?
                    .unwrap_or_else(|| FieldNormReader::constant(segment.max_doc(), 1));
                let view = terms.get(term, segment.max_doc(), || {
                    TermView::of_term(segment, term, &fieldnorms)
                })?;
                let next = match &view.docs {
                    Some(docs) => docs.next_from(0),
                    None => block.docs().first().copied().unwrap_or(TERMINATED),
                };
                Ok(Some(Self::Term {
                    block: Box::new(block),
                    pos: 0,
                    fieldnorms,
                    bm25: bm25.clone(),
                    table: Arc::clone(table),
                    view,
                    next,
                }))
            }
            Prepared::Prefix(term) => {
                let view = terms.get(term, segment.max_doc(), || {
                    Ok(TermView {
                        docs: Some(Arc::new(prefix_docs(segment, term)?)),
                        windows: Vec::new(),
                    })
                })?;
                let Some(docs) = view.docs.clone() else {
                    return Ok(None);
                };
                let next = docs.next_from(0);
                Ok((next != TERMINATED).then_some(Self::Const {
                    docs,
                    next,
                    score: TextClause::PREFIX_BOOST,
                }))
            }
        }
    }

    /// The current document ([`TERMINATED`] past the last).
    fn doc(&self) -> DocId {
        match self {
            Self::Term {
                block, pos, view, ..
            } if view.docs.is_none() => block.docs().get(*pos).copied().unwrap_or(TERMINATED),
            Self::Term { next, .. } | Self::Const { next, .. } => *next,
        }
    }

    /// About how many documents the clause has in the segment.
    fn cost(&self) -> u64 {
        match self {
            Self::Term { block, .. } => u64::from(block.doc_freq()),
            Self::Const { docs, .. } => docs.count(),
        }
    }

    /// Moves to the first document at or after `target` (never back).
    fn seek(&mut self, target: DocId) -> DocId {
        let doc = self.doc();
        if doc >= target {
            return doc;
        }
        match self {
            Self::Term {
                block, pos, view, ..
            } if view.docs.is_none() => seek_postings(block, pos, target),
            Self::Term { view, next, .. } => {
                *next = view
                    .docs
                    .as_ref()
                    .map_or(TERMINATED, |d| d.next_from(target));
                *next
            }
            Self::Const { docs, next, .. } => {
                *next = docs.next_from(target);
                *next
            }
        }
    }

    /// The highest score the clause gives a document of window number `window` (from
    /// `base` to `end`): 0 when it has none there.
    fn best(&mut self, window: usize, base: DocId, end: DocId) -> Score {
        match self {
            Self::Term {
                view, bm25, table, ..
            } => view
                .windows
                .get(window)
                .map_or(0.0, |shape| shape.best(bm25, table)),
            Self::Const { score, .. } => {
                let score = *score;
                if self.seek(base) < end { score } else { 0.0 }
            }
        }
    }

    /// Adds the clause's documents in the window from `base` (a multiple of [`WINDOW`]) that
    /// `mask` keeps to `bits`, and their scores to `scores`, leaving the cursor at the first
    /// document after the window.
    fn gather(
        &mut self,
        base: DocId,
        mask: &[u64; WINDOW_WORDS],
        bits: &mut [u64; WINDOW_WORDS],
        scores: Option<&mut [Score]>,
    ) {
        let end = base.saturating_add(WINDOW);
        // A cursor may still be before the window: it was moved to where an earlier word
        // began, and a later word moved the window on.
        self.seek(base);
        match self {
            Self::Term {
                block,
                pos,
                fieldnorms,
                bm25,
                table,
                view,
                next,
            } => {
                let single = view
                    .windows
                    .get((base / WINDOW) as usize)
                    .is_some_and(Shape::single);
                match (&view.docs, scores) {
                    // A frequent term in a window that is not scored: its bitset, no postings.
                    (Some(docs), None) => or_window(docs, base, mask, bits),
                    // A frequent term whose every posting in the window has frequency 1: a
                    // document's score depends on its field norm alone, so the documents are
                    // read from the bitset and only those still in the running are scored.
                    (Some(docs), Some(scores)) if single => {
                        or_window_scored(docs, base, mask, bits, scores, |doc| {
                            table[0][usize::from(fieldnorms.fieldnorm_id(doc))]
                        });
                    }
                    (docs, mut scores) => {
                        if docs.is_some() {
                            // The bitset cursor moved on alone: bring the postings to the window.
                            seek_postings(block, pos, base);
                        }
                        'blocks: loop {
                            let docs = block.docs();
                            if docs.is_empty() {
                                break;
                            }
                            let freqs = block.freqs();
                            while let Some(&doc) = docs.get(*pos) {
                                if doc >= end {
                                    break 'blocks;
                                }
                                let slot = (doc - base) as usize;
                                let bit = 1u64 << (slot % 64);
                                if mask[slot / 64] & bit != 0 {
                                    bits[slot / 64] |= bit;
                                    if let Some(scores) = scores.as_deref_mut() {
                                        // As tantivy's term scorer scores the document.
                                        let freq = freqs.get(*pos).copied().unwrap_or(1);
                                        let fieldnorm_id = fieldnorms.fieldnorm_id(doc);
                                        scores[slot] += match (freq as usize).checked_sub(1) {
                                            Some(row) if row < TABLE_FREQS => {
                                                table[row][usize::from(fieldnorm_id)]
                                            }
                                            _ => bm25.score(fieldnorm_id, freq),
                                        };
                                    }
                                }
                                *pos += 1;
                            }
                            block.advance();
                            *pos = 0;
                        }
                    }
                }
                if let Some(docs) = &view.docs {
                    *next = docs.next_from(end);
                }
            }
            Self::Const { docs, next, score } => {
                match scores {
                    None => or_window(docs, base, mask, bits),
                    Some(scores) => {
                        let score = *score;
                        or_window_scored(docs, base, mask, bits, scores, |_| score);
                    }
                }
                *next = docs.next_from(end);
            }
        }
    }
}

/// Moves `block` and `pos` to the first posting at or after `target` (never back); the
/// document there, or [`TERMINATED`].
fn seek_postings(block: &mut BlockSegmentPostings, pos: &mut usize, target: DocId) -> DocId {
    let docs = block.docs();
    if docs.get(*pos).is_some_and(|doc| *doc >= target) {
        return docs[*pos];
    }
    if docs.last().is_some_and(|last| *last >= target) {
        // In this block: from `pos`, which is before `target`.
        *pos += docs[*pos..].partition_point(|d| *d < target);
    } else {
        // tantivy skips to the block that may hold `target`; past the last document, `pos` is
        // at the end of the (last) block.
        *pos = block.seek(target);
        if *pos >= block.docs().len() {
            *pos = block.docs().len();
            return TERMINATED;
        }
    }
    block.docs().get(*pos).copied().unwrap_or(TERMINATED)
}

/// Adds the documents of `docs` in the window from `base` that `mask` keeps to `bits`.
fn or_window(docs: &Bits, base: DocId, mask: &[u64; WINDOW_WORDS], bits: &mut [u64; WINDOW_WORDS]) {
    let words = docs.words.get((base / 64) as usize..).unwrap_or(&[]);
    for ((b, m), d) in bits.iter_mut().zip(mask).zip(words) {
        *b |= d & m;
    }
}

/// As [`or_window`], and adds `score_of(doc)` to each added document's slot of `scores`.
fn or_window_scored(
    docs: &Bits,
    base: DocId,
    mask: &[u64; WINDOW_WORDS],
    bits: &mut [u64; WINDOW_WORDS],
    scores: &mut [Score],
    score_of: impl Fn(DocId) -> Score,
) {
    let words = docs.words.get((base / 64) as usize..).unwrap_or(&[]);
    for (i, ((b, m), d)) in bits.iter_mut().zip(mask).zip(words).enumerate() {
        let add = d & m;
        *b |= add;
        let mut rest = add;
        while rest != 0 {
            let slot = i * 64 + rest.trailing_zeros() as usize;
            rest &= rest - 1;
            scores[slot] += score_of(base + slot as DocId);
        }
    }
}

/// A term's best (term frequency, field norm) pairs in one window: with BM25 a score grows with
/// the frequency and falls with the field norm, whatever the statistics, so the best score of a
/// window is that of one of these pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Shape {
    /// The lowest field-norm id of a posting of frequency 1, 2 (index 0, 1), and of higher
    /// frequencies (2), each when `present` has its bit.
    fieldnorm: [u8; 3],
    present: u8,
    /// The highest frequency above 2.
    many: u32,
}

impl Shape {
    /// Every posting of the window has frequency 1.
    fn single(&self) -> bool {
        self.present == 1
    }

    fn add(&mut self, freq: u32, fieldnorm_id: u8) {
        let i = (freq.max(1) as usize - 1).min(2);
        let bit = 1u8 << i;
        if self.present & bit == 0 || fieldnorm_id < self.fieldnorm[i] {
            self.fieldnorm[i] = fieldnorm_id;
        }
        self.present |= bit;
        if i == 2 {
            self.many = self.many.max(freq);
        }
    }

    /// No posting of the window scores more than this (0 without postings).
    fn best(&self, bm25: &Bm25Weight, table: &ScoreTable) -> Score {
        let mut best: Score = 0.0;
        for (i, row) in table.iter().enumerate() {
            if self.present & (1 << i) != 0 {
                best = best.max(row[usize::from(self.fieldnorm[i])]);
            }
        }
        if self.present & 4 != 0 {
            // Frequencies above 2 are not in the table; the highest one with the lowest norm
            // bounds them. Widened a little: that bound need not be a posting's own score, and
            // `f32` division is monotone only up to rounding.
            best = best.max(bm25.score(self.fieldnorm[2], self.many) * (1.0 + 1e-5));
        }
        best
    }
}

/// What a segment keeps of one term of a text clause, built on the term's first search there.
pub(super) struct TermView {
    /// The term's documents (deleted ones included) when they are at least one in [`DENSE`] of
    /// the segment's (always, for a prefix): words of 64 are then cheaper than postings.
    docs: Option<Arc<Bits>>,
    /// Per window of [`WINDOW`] documents, the term's best postings (empty for a prefix).
    windows: Vec<Shape>,
}

/// A term of at least one in this many documents of a segment keeps them as a bitset.
const DENSE: u64 = 64;

/// The term views of a segment may take this many bytes per document (16 bitsets' worth)...
const TERM_VIEW_BYTES_PER_DOC: usize = 16;
/// ...and at least this many.
const TERM_VIEW_MIN_BYTES: usize = 1 << 20;

impl TermView {
    /// The view of `term`'s postings in `segment`: one pass over them.
    fn of_term(
        segment: &SegmentReader,
        term: &Term,
        fieldnorms: &FieldNormReader,
    ) -> Result<Self, SearchError> {
        let max_doc = segment.max_doc();
        let mut windows = vec![Shape::default(); max_doc.div_ceil(WINDOW) as usize];
        let index = segment.inverted_index(term.field())?;
        let Some(mut block) = index
            .read_block_postings(term, IndexRecordOption::WithFreqs)
            .map_err(tantivy::TantivyError::from)?
        else {
            return Ok(Self {
                docs: None,
                windows,
            });
        };
        let mut docs = (u64::from(block.doc_freq()) * DENSE >= u64::from(max_doc))
            .then(|| Bits::empty(max_doc));
        while !block.docs().is_empty() {
            for (&doc, &freq) in block.docs().iter().zip(block.freqs()) {
                if let Some(shape) = windows.get_mut((doc / WINDOW) as usize) {
                    shape.add(freq, fieldnorms.fieldnorm_id(doc));
                }
                if let Some(docs) = docs.as_mut() {
                    docs.insert(doc);
                }
            }
            block.advance();
        }
        Ok(Self {
            docs: docs.map(Arc::new),
            windows,
        })
    }

    fn bytes(&self) -> usize {
        self.docs.as_ref().map_or(0, |d| d.words.len() * 8)
            + self.windows.len() * size_of::<Shape>()
            + 64
    }
}

/// A segment's term views, the least recently used dropped beyond a budget in proportion to
/// the segment's documents.
#[derive(Default)]
pub(super) struct TermViews {
    inner: Mutex<TermViewsInner>,
}

#[derive(Default)]
struct TermViewsInner {
    views: HashMap<Term, (u64, Arc<TermView>)>,
    clock: u64,
    bytes: usize,
}

impl TermViews {
    /// The view of `term`, built with `build` when not held.
    fn get(
        &self,
        term: &Term,
        max_doc: u32,
        build: impl FnOnce() -> Result<TermView, SearchError>,
    ) -> Result<Arc<TermView>, SearchError> {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.clock += 1;
            let clock = inner.clock;
            if let Some((used, view)) = inner.views.get_mut(term) {
                *used = clock;
                return Ok(Arc::clone(view));
            }
        }
        // Built outside the lock: another search thread may build the same view meanwhile,
        // and one of the two is kept.
        let view = Arc::new(build()?);
        let budget = (max_doc as usize * TERM_VIEW_BYTES_PER_DOC).max(TERM_VIEW_MIN_BYTES);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clock += 1;
        let clock = inner.clock;
        let size = view.bytes();
        if let Some((_, old)) = inner.views.insert(term.clone(), (clock, Arc::clone(&view))) {
            inner.bytes = inner.bytes.saturating_sub(old.bytes());
        }
        inner.bytes += size;
        while inner.bytes > budget {
            let Some(oldest) = inner
                .views
                .iter()
                .filter(|(t, _)| *t != term)
                .min_by_key(|(_, (used, _))| *used)
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            if let Some((_, old)) = inner.views.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(old.bytes());
            }
        }
        Ok(view)
    }

    /// How many views are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .views
            .len()
    }
}

/// The documents of a segment whose prefix field holds a word starting with `prefix`'s text,
/// as tantivy's prefix query finds them: the terms from the prefix up to the first string
/// after all its extensions, at most [`TextClause::PREFIX_EXPANSIONS`] of them in term order,
/// deleted documents included.
fn prefix_docs(segment: &SegmentReader, prefix: &Term) -> Result<Bits, SearchError> {
    let mut docs = Bits::empty(segment.max_doc());
    let index = segment.inverted_index(prefix.field())?;
    let lower = prefix.serialized_value_bytes();
    let mut range = index.terms().range().ge(lower);
    if let Some(upper) = prefix_end(lower) {
        range = range.lt(upper);
    }
    let mut terms = range.into_stream().map_err(tantivy::TantivyError::from)?;
    let mut expansions = 0;
    while expansions < TextClause::PREFIX_EXPANSIONS && terms.advance() {
        expansions += 1;
        docs.insert_postings(
            index
                .read_block_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                .map_err(tantivy::TantivyError::from)?,
        );
    }
    Ok(docs)
}

/// The first byte string after every string that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One scored match.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hit {
    score: Score,
    segment: u32,
    doc: DocId,
}

impl Eq for Hit {}

impl Ord for Hit {
    /// Greater is better: a higher score, then (as tantivy's `TopDocs`) a lower address.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| (other.segment, other.doc).cmp(&(self.segment, self.doc)))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `k` matches by score, ties to the lower address.
pub(super) struct TopScores {
    k: usize,
    heap: BinaryHeap<Reverse<Hit>>,
}

impl TopScores {
    /// Keeps the best `k` (at least one).
    pub(super) fn new(k: usize) -> Self {
        let k = k.max(1);
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    #[inline]
    fn offer(&mut self, score: Score, segment: u32, doc: DocId) {
        let hit = Hit {
            score,
            segment,
            doc,
        };
        if self.heap.len() < self.k {
            self.heap.push(Reverse(hit));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit > worst.0
        {
            *worst = Reverse(hit);
        }
    }

    /// The score of the worst kept match once `k` are kept: a match offered after every kept
    /// one (at a higher address) enters only with a higher score.
    fn threshold(&self) -> Option<Score> {
        if self.heap.len() < self.k {
            return None;
        }
        self.heap.peek().map(|Reverse(worst)| worst.score)
    }

    /// The kept matches, best first.
    fn best_first(self) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self.heap.into_iter().map(|Reverse(hit)| hit).collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits
    }

    /// The kept matches with their scores, best first.
    #[cfg(test)]
    pub(super) fn scored(self) -> Vec<(Score, DocAddress)> {
        self.best_first()
            .into_iter()
            .map(|hit| (hit.score, DocAddress::new(hit.segment, hit.doc)))
            .collect()
    }

    /// The kept matches best first, the first `offset` left out.
    pub(super) fn addresses(self, offset: usize) -> Vec<DocAddress> {
        self.best_first()
            .into_iter()
            .skip(offset)
            .map(|hit| DocAddress::new(hit.segment, hit.doc))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_k_are_kept_with_ties_to_the_lower_address() {
        let mut top = TopScores::new(3);
        for (score, segment, doc) in [
            (1.0, 0, 5),
            (2.0, 0, 9),
            (2.0, 0, 7),
            (0.5, 1, 0),
            (2.0, 1, 1),
            (3.0, 1, 8),
            (2.0, 0, 8),
        ] {
            top.offer(score, segment, doc);
        }
        assert_eq!(
            top.addresses(0),
            vec![
                DocAddress::new(1, 8),
                DocAddress::new(0, 7),
                DocAddress::new(0, 8)
            ]
        );
        let mut top = TopScores::new(3);
        for doc in 0..10 {
            top.offer(1.0, 0, doc);
        }
        assert_eq!(
            top.addresses(1),
            vec![DocAddress::new(0, 1), DocAddress::new(0, 2)]
        );
    }
}
