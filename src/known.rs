//! Which tokens a backend knows are stored in the vault, so that masking a value seen before
//! costs its HMAC only: no sealing, no upsert. Plain Rust; the glue (transaction callbacks, the
//! vault's identity) is in `postgres::vault`.
//!
//! Only what a *committed* transaction stored counts: a value stored by this transaction is
//! pending until the transaction commits, and forgotten if it (or the subtransaction that stored
//! it) aborts, since the vault row is gone then. Rows are never deleted from the vault (erasure
//! leaves a tombstone, which an upsert would also leave alone); a vault replaced as a whole
//! (TRUNCATE, a new extension, another token key) changes the stamp, and everything is forgotten.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Tags are HMAC output, already uniformly random: their low 64 bits are the hash.
#[derive(Default)]
pub struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Tags<V> = HashMap<Tag, V, BuildHasherDefault<TagHasher>>;

/// A set of tags (hashed by their own low bits).
pub type TagSet = HashSet<Tag, BuildHasherDefault<TagHasher>>;

/// A token's first 128 bits of HMAC: what identifies it here (a collision would need 2^64 values).
pub type Tag = u128;

/// Subtransaction ids as PostgreSQL numbers them: the top level is 1, children are larger.
pub type SubId = u32;

#[derive(Default)]
pub struct KnownTokens {
    stamp: Option<String>,
    committed: TagSet,
    pending: Tags<SubId>,
}

impl KnownTokens {
    /// Forget everything when the vault is not the one the tokens were stored in.
    pub fn check_stamp(&mut self, stamp: &str) {
        if self.stamp.as_deref() != Some(stamp) {
            self.committed.clear();
            self.pending.clear();
            self.stamp = Some(stamp.to_string());
        }
    }

    /// Stored by a committed transaction (or earlier in this one, in a live subtransaction).
    pub fn contains(&self, tag: Tag) -> bool {
        self.committed.contains(&tag) || self.pending.contains_key(&tag)
    }

    /// Stored (or found stored) by the current subtransaction `sub`.
    pub fn stored(&mut self, sub: SubId, tags: impl IntoIterator<Item = Tag>) {
        for t in tags {
            self.pending.entry(t).or_insert(sub);
        }
    }

    /// The subtransaction `sub` committed into `parent`: its rows now live or die with the parent.
    pub fn subcommit(&mut self, sub: SubId, parent: SubId) {
        for s in self.pending.values_mut().filter(|s| **s >= sub) {
            *s = parent;
        }
    }

    /// The subtransaction `sub` aborted: what it (or its children) stored is gone.
    pub fn subabort(&mut self, sub: SubId) {
        self.pending.retain(|_, s| *s < sub);
    }

    /// The transaction committed: what it stored is in the vault for good. At most `cap` tags are
    /// kept (0: none); reaching it starts over, so the memory stays bounded.
    pub fn commit(&mut self, cap: usize) {
        for (t, _) in self.pending.drain() {
            if self.committed.len() >= cap {
                self.committed.clear();
                if cap == 0 {
                    continue;
                }
            }
            self.committed.insert(t);
        }
    }

    /// The transaction aborted (or was prepared, which this backend cannot follow).
    pub fn abort(&mut self) {
        self.pending.clear();
    }

    pub fn len(&self) -> usize {
        self.committed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }
}

#[cfg(test)]
#[path = "known_tests.rs"]
mod tests;
