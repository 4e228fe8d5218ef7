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
//! score does not exceed the worst kept hit's is passed over without touching the heap. A window
//! where no term clause has a posting scores every match with the constants alone; once the
//! worst kept hit scores that much, no match there can enter, and the window is read for its
//! matches only. The differential tests in `search.rs` hold the two paths to identical hits,
//! totals and facets.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

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
    /// The score of a match of the constant (prefix) clauses alone: each word's constants
    /// added in clause order from zero, then the words' sums, as a match is scored.
    constant: Score,
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
        let constant = prepared
            .iter()
            .map(|clauses| {
                clauses.iter().fold(0.0, |sum, clause| match clause {
                    Prepared::Prefix(_) => sum + TextClause::PREFIX_BOOST,
                    Prepared::Term { .. } => sum,
                })
            })
            .fold(0.0, |a, s| a + s);
        Ok(Some(Self {
            words: prepared,
            constant,
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
                if let Some(cursor) = Cursor::open(clause, segment)? {
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
            let base = base & !63;
            let end = base.saturating_add(WINDOW);
            let first_word = (base / 64) as usize;
            // The window's documents still in the running: the filter's, then narrowed by each
            // word in turn.
            let mut mask = [0u64; WINDOW_WORDS];
            for (i, m) in mask.iter_mut().enumerate() {
                *m = filter.words.get(first_word + i).copied().unwrap_or(0);
            }
            // A window where no term clause has a posting: every match in it scores the
            // constants alone, all the same. Once the worst kept hit scores that much, none
            // can enter (it would tie, and ties go to the earlier address): it is not scored.
            let unscored = !scoring
                || threshold.is_some_and(|t| {
                    self.constant <= t
                        && words.iter_mut().all(|cursors| {
                            cursors.iter_mut().all(|c| match c {
                                Cursor::Term { .. } => c.seek(base) >= end,
                                Cursor::Const { .. } => true,
                            })
                        })
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
                if let Some(window) = scores.get_mut(w) {
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
    /// A term's postings, read a block of 128 at a time, `pos` into the current block.
    Term {
        block: Box<BlockSegmentPostings>,
        pos: usize,
        fieldnorms: FieldNormReader,
        bm25: Bm25Weight,
        table: Arc<ScoreTable>,
    },
    /// The documents of a prefix, each with the same score.
    Const {
        docs: Bits,
        next: DocId,
        score: Score,
    },
}

impl Cursor {
    /// The clause's cursor in `segment`, or `None` when it has no document there.
    fn open(clause: &Prepared, segment: &SegmentReader) -> Result<Option<Self>, SearchError> {
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
                Ok(Some(Self::Term {
                    block: Box::new(block),
                    pos: 0,
                    fieldnorms,
                    bm25: bm25.clone(),
                    table: Arc::clone(table),
                }))
            }
            Prepared::Prefix(term) => {
                let docs = prefix_docs(segment, term)?;
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
            Self::Term { block, pos, .. } => block.docs().get(*pos).copied().unwrap_or(TERMINATED),
            Self::Const { next, .. } => *next,
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
            Self::Term { block, pos, .. } => {
                let docs = block.docs();
                if docs.last().is_some_and(|last| *last >= target) {
                    // In this block: from `pos`, which is before `target`.
                    *pos += docs[*pos..].partition_point(|d| *d < target);
                } else {
                    // tantivy skips to the block that may hold `target`; past the last
                    // document, `pos` is at the end of the (last) block.
                    *pos = block.seek(target);
                    if *pos >= block.docs().len() {
                        *pos = block.docs().len();
                        return TERMINATED;
                    }
                }
                self.doc()
            }
            Self::Const { docs, next, .. } => {
                *next = docs.next_from(target);
                *next
            }
        }
    }

    /// Adds the clause's documents in the window from `base` (a multiple of 64) that `mask`
    /// keeps to `bits`, and their scores to `scores`, leaving the cursor at the first document
    /// after the window.
    fn gather(
        &mut self,
        base: DocId,
        mask: &[u64; WINDOW_WORDS],
        bits: &mut [u64; WINDOW_WORDS],
        mut scores: Option<&mut [Score]>,
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
            } => loop {
                let docs = block.docs();
                if docs.is_empty() {
                    return;
                }
                let freqs = block.freqs();
                while let Some(&doc) = docs.get(*pos) {
                    if doc >= end {
                        return;
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
            },
            Self::Const { docs, next, score } => {
                let first = (base / 64) as usize;
                for (i, (m, b)) in mask.iter().zip(bits.iter_mut()).enumerate() {
                    let add = docs.words.get(first + i).copied().unwrap_or(0) & m;
                    *b |= add;
                    if let Some(scores) = scores.as_deref_mut() {
                        let mut rest = add;
                        while rest != 0 {
                            scores[i * 64 + rest.trailing_zeros() as usize] += *score;
                            rest &= rest - 1;
                        }
                    }
                }
                *next = docs.next_from(end);
            }
        }
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
