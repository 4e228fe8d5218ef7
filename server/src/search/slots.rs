//! Taking listings out of the index by slot, without a term per listing.
//!
//! A listing's slot is its seller and slug; the index holds at most one document per slot. A
//! replacement or a withdrawal must take out whatever document of the slot an earlier commit
//! put in. The obvious way, a unique indexed term per slot (deleted by term), put one more
//! nearly random 16-byte key per listing into every segment's term dictionary: building those
//! dictionaries (finite-state transducers) and merging them was the largest single cost of
//! indexing a back-fill (6.8 % of the receiving server's CPU, half writing segments and half
//! merging them; without it the server used about 5 % less CPU for the same back-fill).
//!
//! Instead a slot's key is kept only in two fast columns (`slot0`, `slot1`: the key's two
//! halves, bit-packed, no dictionary), and a commit's deletions are one [`SlotsQuery`]: per
//! segment it walks the documents of each seller whose slots it deletes (the postings of the
//! `signer` term, which the seller filter needs anyway: see `SellerDocs`) and picks the
//! documents whose key is one of that seller's. The cost of a deletion is thus the seller's
//! documents in the index, once per commit however many of their slots it deletes; a
//! back-fill of first versions deletes nothing.
//!
//! Deleting by query keeps tantivy's ordering rule (a deletion affects only documents added
//! before it), so [`plan`] turns a commit's ordered changes into deletions first and then the
//! final document of each slot: the same end state as applying them one by one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tantivy::query::{
    BitSetDocSet, ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::schema::Field;
use tantivy::{DocId, Score, SegmentReader};

use super::{Change, ListingDoc, SLOT_KEY_LEN, SellerDocs, u64_column};

/// Names of the two fast fields holding a slot's key, eight bytes each (big-endian).
pub(super) const SLOT_FIELDS: [&str; 2] = ["slot0", "slot1"];

/// A slot's key as the two column values.
pub(super) fn key_words(key: &[u8; SLOT_KEY_LEN]) -> [u64; 2] {
    super::be_words(key)
}

/// What one commit does to the index: the slots whose earlier documents go, then the documents
/// that go in (at most one per slot).
pub(super) struct Plan<'a> {
    /// Slots to clear of documents from earlier commits, by seller.
    pub deletions: BTreeMap<[u8; 32], BTreeSet<[u64; 2]>>,
    /// Documents to add, in the order of each slot's last change, each with its slot's key as
    /// the column values (worked out once, here).
    pub additions: Vec<(&'a ListingDoc, [u64; 2])>,
}

/// Reduces `changes`, applied in order, to deletions followed by additions with the same end
/// state: for each slot its last change decides whether a document of it remains (the last
/// put) or none (a removal), and an earlier commit's document is taken out whenever any change
/// of the slot may replace one. Only [`Change::Insert`] alone leaves earlier documents alone:
/// it is the first version of its slot, which no commit can hold yet.
pub(super) fn plan(changes: &[Change]) -> Plan<'_> {
    struct Slot<'a> {
        signer: [u8; 32],
        delete: bool,
        last: Option<&'a ListingDoc>,
        order: usize,
    }
    let mut slots: HashMap<[u64; 2], Slot<'_>> = HashMap::with_capacity(changes.len());
    for (order, change) in changes.iter().enumerate() {
        let (key, signer, delete, last) = match change {
            Change::Upsert(doc) => (doc.slot_key(), *doc.signer.as_bytes(), true, Some(&**doc)),
            Change::Insert(doc) => (doc.slot_key(), *doc.signer.as_bytes(), false, Some(&**doc)),
            Change::Remove { signer, slot_key } => (*slot_key, *signer.as_bytes(), true, None),
        };
        let slot = slots.entry(key_words(&key)).or_insert(Slot {
            signer,
            delete: false,
            last: None,
            order,
        });
        slot.delete |= delete;
        slot.last = last;
        slot.order = order;
    }
    let mut deletions: BTreeMap<[u8; 32], BTreeSet<[u64; 2]>> = BTreeMap::new();
    let mut additions = Vec::with_capacity(slots.len());
    for (key, slot) in &slots {
        if slot.delete {
            deletions.entry(slot.signer).or_default().insert(*key);
        }
        if let Some(doc) = slot.last {
            additions.push((slot.order, doc, *key));
        }
    }
    additions.sort_unstable_by_key(|(order, _, _)| *order);
    Plan {
        deletions,
        additions: additions
            .into_iter()
            .map(|(_, doc, key)| (doc, key))
            .collect(),
    }
}

/// The documents of the given slots, found through their sellers' postings (see the module
/// documentation). Meant for `IndexWriter::delete_query`; it scores nothing.
#[derive(Clone, Debug)]
pub(super) struct SlotsQuery {
    signer: Field,
    slots: Arc<BTreeMap<[u8; 32], BTreeSet<[u64; 2]>>>,
}

impl SlotsQuery {
    pub(super) fn new(signer: Field, slots: BTreeMap<[u8; 32], BTreeSet<[u64; 2]>>) -> Self {
        Self {
            signer,
            slots: Arc::new(slots),
        }
    }

    /// The matching documents of one segment (deleted ones included), ascending.
    fn docs(&self, reader: &SegmentReader) -> tantivy::Result<Vec<DocId>> {
        let (high, low) = (
            u64_column(reader, SLOT_FIELDS[0])?,
            u64_column(reader, SLOT_FIELDS[1])?,
        );
        let sellers = SellerDocs::open(reader, self.signer)?;
        let mut docs = Vec::new();
        for (signer, keys) in self.slots.iter() {
            sellers.each(signer, |doc| {
                if keys.contains(&[high.get_val(doc), low.get_val(doc)]) {
                    docs.push(doc);
                }
            })?;
        }
        docs.sort_unstable();
        docs.dedup();
        Ok(docs)
    }
}

impl Query for SlotsQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for SlotsQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let mut bits = tantivy::BitSet::with_max_value(reader.max_doc());
        for doc in self.docs(reader)? {
            bits.insert(doc);
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(bits), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.docs(reader)?.binary_search(&doc).is_ok() {
            Ok(Explanation::new("a slot being cleared", 0.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(
                "document is not of a slot being cleared".into(),
            ))
        }
    }

    fn for_each_no_score(
        &self,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(&[DocId]),
    ) -> tantivy::Result<()> {
        let docs = self.docs(reader)?;
        if !docs.is_empty() {
            callback(&docs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use souk_protocol::PublicKey;

    use super::*;

    fn key(seed: u8) -> PublicKey {
        souk_protocol::IdentityKey::from_secret_bytes(&[seed; 32]).public_key()
    }

    fn doc(seller: u8, slug: &str, title: &str) -> Box<ListingDoc> {
        Box::new(ListingDoc {
            id: souk_protocol::ObjectId([seller; 32]),
            signer: key(seller),
            listing: souk_protocol::pb::Listing {
                slug: slug.into(),
                title: title.into(),
                ..Default::default()
            },
            seller_rating: 0.0,
        })
    }

    fn titles<'a>(plan: &Plan<'a>) -> Vec<&'a str> {
        plan.additions
            .iter()
            .map(|(d, _)| d.listing.title.as_str())
            .collect()
    }

    #[test]
    fn the_last_change_of_a_slot_decides_and_any_replacement_clears_earlier_commits() {
        let a = key(1);
        let changes = vec![
            Change::Insert(doc(1, "lamp", "lamp v1")),
            Change::Insert(doc(1, "desk", "desk v1")),
            Change::Upsert(doc(1, "lamp", "lamp v2")),
            Change::Insert(doc(2, "kettle", "kettle v1")),
            Change::remove(&a, "desk"),
        ];
        let plan = plan(&changes);
        // The desk is withdrawn, the lamp's second version replaces the first (never added).
        assert_eq!(titles(&plan), ["lamp v2", "kettle v1"]);
        // Lamp (replaced) and desk (withdrawn) are cleared of older commits' documents; the
        // kettle, only ever inserted, is not looked up at all.
        assert_eq!(plan.deletions.len(), 1);
        assert_eq!(plan.deletions[a.as_bytes()].len(), 2);
    }

    #[test]
    fn a_put_after_a_removal_puts_the_slot_back() {
        let a = key(1);
        let changes = vec![
            Change::remove(&a, "lamp"),
            Change::Upsert(doc(1, "lamp", "lamp v3")),
        ];
        let plan = plan(&changes);
        assert_eq!(titles(&plan), ["lamp v3"]);
        assert_eq!(plan.deletions[a.as_bytes()].len(), 1);
    }

    #[test]
    fn first_versions_alone_delete_nothing() {
        let changes: Vec<Change> = (0..10)
            .map(|i| Change::Insert(doc(i, &format!("item-{i}"), &format!("item {i}"))))
            .collect();
        let plan = plan(&changes);
        assert!(plan.deletions.is_empty());
        assert_eq!(plan.additions.len(), 10);
    }
}
