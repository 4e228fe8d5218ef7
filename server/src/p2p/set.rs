//! The set that peers reconcile: `(created_at, object id)` of every object that is the current
//! version of its slot (tombstones included, replaced versions not). The ingest writer keeps it
//! in step with the store inside the same commit; sync sessions read sealed snapshots of it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use negentropy::{Id, NegentropyStorageVector};
use souk_protocol::ObjectId;

/// One item: the signed `created_at`, then the object id (negentropy's order).
pub type Item = (u64, [u8; 32]);

/// The reconciled set. Cheap to share (`Arc<SyncSet>`); every method takes a short lock.
#[derive(Debug, Default)]
pub struct SyncSet {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    items: BTreeSet<Item>,
    generation: u64,
    snapshot: Option<(u64, Arc<NegentropyStorageVector>)>,
}

impl SyncSet {
    /// A set holding `items`.
    #[must_use]
    pub fn from_items(items: impl IntoIterator<Item = (u64, ObjectId)>) -> Self {
        let items = items.into_iter().map(|(t, id)| (t, id.0)).collect();
        Self {
            inner: Mutex::new(Inner {
                items,
                generation: 0,
                snapshot: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the set half-updated in a way that
        // matters (each method is one insert/remove); keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `id` became current, replacing `replaced` if it was.
    pub fn replace(&self, created_at: u64, id: &ObjectId, replaced: Option<(ObjectId, u64)>) {
        let mut inner = self.lock();
        if let Some((old, old_created_at)) = replaced {
            inner.items.remove(&(old_created_at, old.0));
        }
        inner.items.insert((created_at, id.0));
        inner.generation += 1;
    }

    /// Number of current objects.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Whether `id` (with its `created_at`) is current here.
    #[must_use]
    pub fn contains(&self, created_at: u64, id: &[u8; 32]) -> bool {
        self.lock().items.contains(&(created_at, *id))
    }

    /// A sealed negentropy storage of the set as it is now. Rebuilt only when the set changed
    /// since the last call, so agreeing peers polling it cost a clone of an `Arc`.
    #[must_use]
    pub fn snapshot(&self) -> Arc<NegentropyStorageVector> {
        let (generation, items) = {
            let inner = self.lock();
            if let Some((generation, snapshot)) = &inner.snapshot
                && *generation == inner.generation
            {
                return Arc::clone(snapshot);
            }
            let items: Vec<Item> = inner.items.iter().copied().collect();
            (inner.generation, items)
        };
        // Built outside the lock: the writer is never held up by a sync session.
        let mut storage = NegentropyStorageVector::with_capacity(items.len());
        for (created_at, id) in items {
            // Cannot fail: the storage is not sealed yet.
            let _ = storage.insert(created_at, Id::from_byte_array(id));
        }
        let _ = storage.seal();
        let storage = Arc::new(storage);
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.snapshot = Some((generation, Arc::clone(&storage)));
        }
        storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use negentropy::{Negentropy, NegentropyStorageBase};

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    #[test]
    fn a_replacement_takes_the_old_version_out_of_the_set() {
        let set = SyncSet::default();
        set.replace(10, &id(1), None);
        set.replace(20, &id(2), Some((id(1), 10)));
        assert_eq!(set.len(), 1);
        assert!(set.contains(20, &[2; 32]));
        assert!(!set.contains(10, &[1; 32]));
    }

    #[test]
    fn snapshots_are_reused_until_the_set_changes() {
        let set = SyncSet::from_items([(1, id(1)), (2, id(2))]);
        let a = set.snapshot();
        let b = set.snapshot();
        assert!(Arc::ptr_eq(&a, &b));
        set.replace(3, &id(3), None);
        let c = set.snapshot();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.size().ok(), Some(3));
    }

    #[test]
    fn two_snapshots_reconcile_to_exactly_their_difference() {
        let ours = SyncSet::from_items((0..50u8).map(|n| (u64::from(n), id(n))));
        let theirs = SyncSet::from_items((25..80u8).map(|n| (u64::from(n), id(n))));
        let (ours, theirs) = (ours.snapshot(), theirs.snapshot());
        let mut client = Negentropy::borrowed(&*ours, 0).expect("frame limit");
        let mut server = Negentropy::borrowed(&*theirs, 0).expect("frame limit");
        let mut message = client.initiate().expect("initiate");
        let (mut have, mut need) = (Vec::new(), Vec::new());
        loop {
            let reply = server.reconcile(&message).expect("reconcile");
            match client
                .reconcile_with_ids(&reply, &mut have, &mut need)
                .expect("reconcile")
            {
                Some(next) => message = next,
                None => break,
            }
        }
        have.sort();
        need.sort();
        assert_eq!(
            have,
            (0..25u8)
                .map(|n| Id::from_byte_array([n; 32]))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            need,
            (50..80u8)
                .map(|n| Id::from_byte_array([n; 32]))
                .collect::<Vec<_>>()
        );
    }
}
