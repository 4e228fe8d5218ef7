//! A search evaluated by tantivy alone: its queries and collectors visit every match. This is
//! how searches were answered before the per-segment bitmaps; it stays as the specification
//! the bitmaps are tested against (`bitmaps_answer_every_query_as_tantivy_alone_does`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{Order, Term};

use super::{
    Counts, FACET_FIELDS, SearchError, SearchIndex, SearchQuery, SearchResult, Sort,
    fold_categories, query_words, signer_rest, signer_term,
};

impl SearchIndex {
    /// The filters of `q` as tantivy queries, for [`SearchIndex::compute_reference`].
    fn filters(&self, q: &SearchQuery) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.fields;
        let term = |field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let u64_is = |field, value: u64| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_u64(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Excluded(Term::from_field_u64(f.expires_at, q.now)),
                Bound::Unbounded,
            )),
        )];
        if let Some(category) = &q.category {
            must.push((Occur::Must, term(f.category, category.trim_matches('/'))));
        }
        if let Some(kind) = &q.kind {
            must.push((Occur::Must, term(f.kind, kind)));
        }
        if let Some(condition) = &q.condition {
            must.push((Occur::Must, term(f.condition, condition)));
        }
        if let Some(currency) = &q.currency {
            must.push((Occur::Must, term(f.currency, currency)));
        }
        if q.price_min.is_some() || q.price_max.is_some() {
            let bound = |v: Option<f64>| {
                v.map_or(Bound::Unbounded, |v| {
                    Bound::Included(Term::from_field_f64(f.price, v))
                })
            };
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(q.price_min), bound(q.price_max))),
            ));
        }
        if let Some(country) = &q.ships_to {
            must.push((
                Occur::Must,
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, term(f.ships_to, country)),
                    (Occur::Should, term(f.ships_to, "ALL")),
                ])),
            ));
        }
        if let Some(seller) = &q.seller {
            // The short term, and each column of the key's other bytes equal to the seller's.
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    signer_term(f.signer, seller.as_bytes()),
                    IndexRecordOption::Basic,
                )),
            ));
            for (field, word) in f.signer_rest.iter().zip(signer_rest(seller.as_bytes())) {
                let word = Term::from_field_u64(*field, word);
                must.push((
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Included(word.clone()),
                        Bound::Included(word),
                    )),
                ));
            }
        }
        if let Some(min) = q.min_rating {
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_f64(f.rating, min)),
                    Bound::Unbounded,
                )),
            ));
        }
        if let Some(moderated) = q.moderated {
            must.push((Occur::Must, u64_is(f.moderated, u64::from(moderated))));
        }
        if !q.nsfw {
            // Excluding the few NSFW listings is cheaper than intersecting with all the others.
            must.push((Occur::MustNot, u64_is(f.nsfw, 1)));
        }
        // Filters select; they do not rank. Without this, a text query's relevance would add
        // each filter term's score, so a listing matched through a rare term ("ships to DE")
        // would outrank a better text match reached through a common one ("ships everywhere").
        // Inside a constant-score query the filters are also evaluated without scoring.
        must.into_iter()
            .map(|(occur, query)| {
                let query: Box<dyn Query> = Box::new(ConstScoreQuery::new(query, 0.0));
                (occur, query)
            })
            .collect()
    }

    /// [`SearchIndex::compute`] by tantivy alone: its queries and collectors visit every match.
    /// The specification the bitmaps are tested against.
    pub(super) fn compute_reference(
        &self,
        searcher: &tantivy::Searcher,
        q: &SearchQuery,
    ) -> Result<SearchResult, SearchError> {
        let words = query_words(&q.text);
        let text = words.split_last();
        let has_text = text.is_some();
        let mut clauses = self.filters(q);
        match text {
            Some((last, rest)) => {
                clauses.extend(Self::conjunction(self.text_words(last, rest), &|query| {
                    query
                }));
            }
            None => clauses.push((Occur::Must, Box::new(AllQuery))),
        }
        let query = BooleanQuery::new(clauses);
        let limit = q.limit.max(1);
        let top = TopDocs::with_limit(limit).and_offset(q.offset);
        let sort = q.sort.unwrap_or(if has_text {
            Sort::Relevance
        } else {
            Sort::Newest
        });
        // One pass over the matches: the top hits, and the total and facet counts together.
        let facet_counter = FacetCounter {
            category_root: q
                .category
                .as_deref()
                .map(|c| c.trim_matches('/').to_string())
                .unwrap_or_default(),
        };
        let (addresses, counted) = match sort {
            Sort::Relevance if has_text => {
                let (docs, counted) =
                    searcher.search(&query, &(top.order_by_score(), facet_counter))?;
                (
                    docs.into_iter().map(|(_, a)| a).collect::<Vec<_>>(),
                    counted,
                )
            }
            Sort::Relevance | Sort::Newest => {
                let collector = top.order_by_fast_field::<u64>("created_at", Order::Desc);
                let (docs, counted) = searcher.search(&query, &(collector, facet_counter))?;
                (docs.into_iter().map(|(_, a)| a).collect(), counted)
            }
            Sort::PriceAsc | Sort::PriceDesc => {
                let order = if sort == Sort::PriceAsc {
                    Order::Asc
                } else {
                    Order::Desc
                };
                let collector = top.order_by_fast_field::<f64>("price", order);
                let (docs, counted) = searcher.search(&query, &(collector, facet_counter))?;
                (docs.into_iter().map(|(_, a)| a).collect(), counted)
            }
            Sort::Rating => {
                let collector = top.order_by_fast_field::<f64>("rating", Order::Desc);
                let (docs, counted) = searcher.search(&query, &(collector, facet_counter))?;
                (docs.into_iter().map(|(_, a)| a).collect(), counted)
            }
        };
        let ids = Self::ids(searcher, addresses)?;
        let (total, [categories, kinds, conditions, currencies]) = counted;
        let mut facets = BTreeMap::new();
        facets.insert("category", categories);
        facets.insert("type", kinds);
        facets.insert("condition", conditions);
        facets.insert("currency", currencies);
        Ok(SearchResult { ids, total, facets })
    }
}

/// The total and the four facet counts of a search, in one pass over its matches, reading each
/// match's values from the fast (columnar) fields: per match, four column reads and four
/// increments of a per-segment array indexed by term ordinal; ordinals become strings once per
/// segment, at the end. Categories are counted per full path and folded into the children of
/// `category_root` (top-level categories when it is empty) at the end.
struct FacetCounter {
    category_root: String,
}

/// [`FacetCounter`] in one segment.
struct SegmentFacetCounter {
    total: u64,
    /// Ordinals of one block of matches.
    buffer: Vec<u64>,
    /// Per facet: the column (term ordinals, `None` in a segment without the field) and counts
    /// per ordinal (the last slot counts matches without a value).
    facets: [(Option<FacetColumn>, Vec<u64>); 4],
}

struct FacetColumn {
    column: tantivy::columnar::StrColumn,
    ords: Arc<dyn tantivy::columnar::ColumnValues<u64>>,
}

impl Collector for FacetCounter {
    type Fruit = (usize, [Counts; 4]);
    type Child = SegmentFacetCounter;

    fn for_segment(
        &self,
        _: tantivy::SegmentOrdinal,
        segment: &tantivy::SegmentReader,
    ) -> tantivy::Result<SegmentFacetCounter> {
        let facet = |name: &str| -> tantivy::Result<(Option<FacetColumn>, Vec<u64>)> {
            Ok(match segment.fast_fields().str(name)? {
                Some(column) => {
                    let terms = column.num_terms();
                    // Every listing has every facet, so columns are normally full: their values
                    // are read directly (in blocks); otherwise through the column index, with
                    // the "no value" slot as the default.
                    let ords =
                        if matches!(column.ords().index, tantivy::columnar::ColumnIndex::Full) {
                            Arc::clone(&column.ords().values)
                        } else {
                            column.ords().clone().first_or_default_col(terms as u64)
                        };
                    (Some(FacetColumn { column, ords }), vec![0; terms + 1])
                }
                None => (None, vec![0; 1]),
            })
        };
        Ok(SegmentFacetCounter {
            total: 0,
            buffer: Vec::new(),
            facets: [
                facet(FACET_FIELDS[0])?,
                facet(FACET_FIELDS[1])?,
                facet(FACET_FIELDS[2])?,
                facet(FACET_FIELDS[3])?,
            ],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        segments: Vec<(usize, [Vec<(String, u64)>; 4])>,
    ) -> tantivy::Result<(usize, [Counts; 4])> {
        let mut total = 0;
        let mut merged: [Counts; 4] = Default::default();
        for (n, facets) in segments {
            total += n;
            for (into, values) in merged.iter_mut().zip(facets) {
                for (value, count) in values {
                    *into.entry(value).or_default() += count;
                }
            }
        }
        merged[0] = fold_categories(&self.category_root, std::mem::take(&mut merged[0]));
        Ok((total, merged))
    }
}

impl SegmentCollector for SegmentFacetCounter {
    type Fruit = (usize, [Vec<(String, u64)>; 4]);

    fn collect(&mut self, doc: tantivy::DocId, _: tantivy::Score) {
        self.total += 1;
        for (column, counts) in &mut self.facets {
            let slot = column.as_ref().map_or(0, |c| c.ords.get_val(doc));
            // The ordinal is below the term count (or is the "no value" slot); never out of
            // bounds, but a damaged segment must not panic a search.
            if let Some(count) = usize::try_from(slot).ok().and_then(|s| counts.get_mut(s)) {
                *count += 1;
            }
        }
    }

    fn collect_block(&mut self, docs: &[tantivy::DocId]) {
        self.total += docs.len() as u64;
        self.buffer.resize(docs.len(), 0);
        for (column, counts) in &mut self.facets {
            match column {
                Some(c) => c.ords.get_vals(docs, &mut self.buffer),
                None => self.buffer.fill(0),
            }
            for slot in &self.buffer {
                if let Some(count) = usize::try_from(*slot).ok().and_then(|s| counts.get_mut(s)) {
                    *count += 1;
                }
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        let facets = self.facets.map(|(column, counts)| {
            let Some(column) = column else {
                return Vec::new();
            };
            let mut out = Vec::new();
            let mut name = String::new();
            for (ord, count) in counts.iter().enumerate() {
                if *count == 0 || ord + 1 == counts.len() {
                    continue;
                }
                name.clear();
                if column
                    .column
                    .ord_to_str(ord as u64, &mut name)
                    .unwrap_or(false)
                {
                    out.push((name.clone(), *count));
                }
            }
            out
        });
        (usize::try_from(self.total).unwrap_or(usize::MAX), facets)
    }
}
