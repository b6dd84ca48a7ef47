//! A baseline's entries held in columns: every path in one buffer, every digest, size and
//! category in an array of its own. A million entries then cost their path bytes and 49 bytes
//! each (with the index sorting reorders), not a `String` (and its allocation) apiece. On the
//! wire and on disk they are the same JSON array of `{"path","hash","category","size"}`
//! objects as a `Vec<Entry>`.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::category::Category;
use crate::hexfmt::Sha256Digest;

/// Most entries a manifest may hold.
pub const MAX_ENTRIES: usize = 2_000_000;

/// One watched file as it was when the baseline was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Absolute path.
    pub path: String,
    /// SHA-256 of the content (64 lower-case hex digits on the wire and on disk).
    pub hash: Sha256Digest,
    /// Watch category.
    pub category: Category,
    /// Size in bytes.
    pub size: u64,
}

/// Baseline entries, in the order they were pushed until sorted (a manifest keeps them sorted
/// by path). Sorting reorders only an index, so a million entries are sorted without a second
/// copy of their paths.
#[derive(Clone, Default)]
pub struct Entries {
    /// Where each entry's columns are, in entry order.
    order: Vec<u32>,
    /// Every path, one after another, as pushed.
    paths: String,
    /// Where each path ends in `paths` (it starts where the one before ends).
    ends: Vec<u32>,
    hashes: Vec<Sha256Digest>,
    sizes: Vec<u64>,
    categories: Vec<Category>,
}

/// One entry, borrowed from [`Entries`]; serializes exactly as [`Entry`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EntryRef<'a> {
    /// Absolute path.
    pub path: &'a str,
    /// SHA-256 of the content.
    pub hash: Sha256Digest,
    /// Watch category.
    pub category: Category,
    /// Size in bytes.
    pub size: u64,
}

impl EntryRef<'_> {
    /// An owned copy.
    pub fn to_entry(&self) -> Entry {
        Entry {
            path: self.path.to_owned(),
            hash: self.hash,
            category: self.category,
            size: self.size,
        }
    }
}

/// Why an entry could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_ENTRIES} entries, or more than 4 GiB of paths")]
pub struct TooMany;

impl Entries {
    /// No entries.
    pub fn new() -> Entries {
        Entries::default()
    }

    /// Room for `count` entries without growing (a table grown by doubling holds up to twice
    /// what it needs, and the old and new one at once while it grows).
    pub fn with_capacity(count: usize) -> Entries {
        Entries {
            order: Vec::with_capacity(count),
            paths: String::new(),
            ends: Vec::with_capacity(count),
            hashes: Vec::with_capacity(count),
            sizes: Vec::with_capacity(count),
            categories: Vec::with_capacity(count),
        }
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Adds an entry at the end.
    pub fn push(
        &mut self,
        path: &str,
        hash: Sha256Digest,
        category: Category,
        size: u64,
    ) -> Result<(), TooMany> {
        let end = u32::try_from(self.paths.len() + path.len()).map_err(|_| TooMany)?;
        if self.len() >= MAX_ENTRIES {
            return Err(TooMany);
        }
        // Below MAX_ENTRIES: fits.
        self.order
            .push(u32::try_from(self.ends.len()).map_err(|_| TooMany)?);
        self.paths.push_str(path);
        self.ends.push(end);
        self.hashes.push(hash);
        self.sizes.push(size);
        self.categories.push(category);
        Ok(())
    }

    /// Where entry `i`'s columns are.
    fn at(&self, i: usize) -> Option<usize> {
        self.order.get(i).map(|j| *j as usize)
    }

    /// The path in column place `j`.
    fn path_at(&self, j: usize) -> &str {
        let Some(end) = self.ends.get(j) else {
            return "";
        };
        let start = match j.checked_sub(1) {
            Some(before) => self.ends.get(before).map_or(0, |e| *e as usize),
            None => 0,
        };
        self.paths.get(start..*end as usize).unwrap_or("")
    }

    /// The path of entry `i` ("" past the end).
    pub fn path(&self, i: usize) -> &str {
        self.at(i).map_or("", |j| self.path_at(j))
    }

    /// Entry `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<EntryRef<'_>> {
        let j = self.at(i)?;
        Some(EntryRef {
            path: self.path_at(j),
            hash: *self.hashes.get(j)?,
            category: *self.categories.get(j)?,
            size: *self.sizes.get(j)?,
        })
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EntryRef<'_>> + '_ {
        // Every index in `order` has its columns: push fills them together.
        (0..self.len()).map(|i| {
            self.get(i).unwrap_or(EntryRef {
                path: "",
                hash: Sha256Digest([0; 32]),
                category: Category::ModelFile,
                size: 0,
            })
        })
    }

    /// The index of the entry for `path`, in entries sorted by path.
    pub fn index_of(&self, path: &str) -> Option<usize> {
        let at = self.partition_point(|p| p < path);
        (at < self.len() && self.path(at) == path).then_some(at)
    }

    /// The first index whose path does not satisfy `before`, in entries sorted by path.
    pub fn partition_point(&self, before: impl Fn(&str) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if before(self.path(mid)) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// True when the paths are strictly increasing (sorted, none repeated).
    pub fn is_sorted_unique(&self) -> bool {
        (1..self.len()).all(|i| self.path(i - 1) < self.path(i))
    }

    /// Sorts by path bytes (stable), and returns the order applied (`order[new] = old`) so
    /// that anything kept beside the entries can follow. Only the index is reordered.
    pub fn sort(&mut self) -> Vec<u32> {
        // Indices fit: push refuses more than MAX_ENTRIES.
        let mut order: Vec<u32> = (0..self.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        if self.is_sorted_unique() {
            return order;
        }
        order.sort_by(|a, b| self.path(*a as usize).cmp(self.path(*b as usize)));
        self.order = permuted(&self.order, &order);
        order
    }

    /// Gives back room grown for entries that never came.
    pub fn shrink_to_fit(&mut self) {
        self.order.shrink_to_fit();
        self.paths.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.hashes.shrink_to_fit();
        self.sizes.shrink_to_fit();
        self.categories.shrink_to_fit();
    }

    /// Owned copies of every entry.
    pub fn to_vec(&self) -> Vec<Entry> {
        self.iter().map(|e| e.to_entry()).collect()
    }
}

/// `column` in the order `order` gives.
pub fn permuted<T: Copy>(column: &[T], order: &[u32]) -> Vec<T> {
    order
        .iter()
        .filter_map(|&i| column.get(i as usize).copied())
        .collect()
}

impl PartialEq for Entries {
    /// The same entries in the same order, however their columns are laid out.
    fn eq(&self, other: &Entries) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Entry>> for Entries {
    /// In the vector's order; more than [`MAX_ENTRIES`] are cut off (a manifest refuses them).
    fn from(entries: Vec<Entry>) -> Entries {
        let mut out = Entries::with_capacity(entries.len());
        for e in entries {
            if out.push(&e.path, e.hash, e.category, e.size).is_err() {
                break;
            }
        }
        out
    }
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq;
        impl<'de> Visitor<'de> for Seq {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_ENTRIES} entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
                let mut out = Entries::new();
                // One entry at a time: a million are never held as `Entry` values at once,
                // and the bound is enforced before the array is read to its end.
                while let Some(e) = seq.next_element::<Entry>()? {
                    out.push(&e.path, e.hash, e.category, e.size)
                        .map_err(serde::de::Error::custom)?;
                }
                out.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_seq(Seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, n: u8) -> Entry {
        Entry {
            path: path.into(),
            hash: Sha256Digest([n; 32]),
            category: Category::ModelFile,
            size: u64::from(n),
        }
    }

    #[test]
    fn columns_hold_what_was_pushed_and_sort_carries_every_column() {
        let v = vec![entry("/m/b", 2), entry("/m/a/x", 1), entry("/m/a", 3)];
        let mut e = Entries::from(v.clone());
        assert_eq!(e.to_vec(), v);
        assert!(!e.is_sorted_unique());
        let order = e.sort();
        assert_eq!(order, vec![2, 1, 0]);
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(e.to_vec(), sorted);
        assert_eq!(e.index_of("/m/a/x"), Some(1));
        assert_eq!(e.index_of("/m/a/"), None);
        assert_eq!(e.index_of("/z"), None);
        assert_eq!(e.partition_point(|p| p < "/m/a0"), 2);
        assert_eq!(e.get(3), None);
        assert_eq!(e.path(3), "");
    }

    #[test]
    fn the_json_is_that_of_a_vector_of_entries() {
        let v = vec![entry("/a", 1), entry("/b\"<", 2)];
        let e = Entries::from(v.clone());
        let json = serde_json::to_string(&e).expect("serializes");
        assert_eq!(json, serde_json::to_string(&v).expect("serializes"));
        let back: Entries = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, e);
        let unknown = json.replacen("\"size\"", "\"sise\"", 1);
        assert!(serde_json::from_str::<Entries>(&unknown).is_err());
    }

    #[test]
    fn more_than_the_bound_is_refused() {
        let mut e = Entries::new();
        for i in 0..MAX_ENTRIES {
            e.push("", Sha256Digest([0; 32]), Category::ModelFile, i as u64)
                .expect("within the bound");
        }
        assert_eq!(
            e.push("/x", Sha256Digest([0; 32]), Category::ModelFile, 0),
            Err(TooMany)
        );
    }
}
