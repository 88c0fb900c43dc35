//! The Merkle tree of a log as stored hashes (`tlog_tiles`' dense numbering: each record's
//! leaf hash, then the node hashes it completes). A [`Tree`] holds whichever of them it was
//! given or computed: the origin keeps only the right edge it needs to append and to sign
//! (loaded with [`frontier_indexes`]); the verifier recomputes all of them.

use crate::paths::TileRef;
use crate::{HASH_SIZE, Hash, TILE_HEIGHT};
use std::cell::RefCell;
use std::collections::HashMap;
use tlog_tiles::{HashReader, RecordProof};

/// Stored hashes by their index.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    size: u64,
    hashes: HashMap<u64, Hash>,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| self.hashes.get(i).copied().ok_or(tlog_tiles::Error::IndexesNotInTree))
            .collect()
    }
}

/// The stored hashes a tree of `size` records needs to compute its root and to append the
/// next record (the roots of its perfect subtrees, left to right).
pub fn frontier_indexes(size: u64) -> Vec<u64> {
    if size == 0 { Vec::new() } else { tlog_tiles::sub_tree_index(0, size, Vec::new()) }
}

/// The stored hashes a tile lists, in order.
pub fn tile_indexes(tile: &TileRef) -> Vec<u64> {
    let level = tile.level.unwrap_or(0) * TILE_HEIGHT;
    let start = tile.n << TILE_HEIGHT;
    (0..tile.width).map(|i| tlog_tiles::stored_hash_index(level, start + i)).collect()
}

/// Records which hashes a computation asks for (and answers none).
#[derive(Default)]
struct Wanted(RefCell<Vec<u64>>);

impl HashReader for Wanted {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Err(tlog_tiles::Error::IndexesNotInTree)
    }
}

/// The stored hashes an inclusion proof of record `index` in a tree of `size` reads.
pub fn proof_indexes(size: u64, index: u64) -> Vec<u64> {
    let wanted = Wanted::default();
    // Reads once (or not at all, for a tree of one record); the error is `Wanted`'s own.
    let _ = tlog_tiles::prove_record(size, index, &wanted);
    wanted.0.into_inner()
}

impl Tree {
    /// A tree of `size` records knowing `hashes` (at least [`frontier_indexes`]`(size)` to
    /// append or to compute the root).
    pub fn with_hashes(size: u64, hashes: impl IntoIterator<Item = (u64, Hash)>) -> Self {
        Self { size, hashes: hashes.into_iter().collect() }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one record; returns the stored hashes it added, by index.
    pub fn append(&mut self, record: &[u8]) -> Result<Vec<(u64, Hash)>, tlog_tiles::Error> {
        let added = tlog_tiles::stored_hashes(self.size, record, self)?;
        let first = tlog_tiles::stored_hash_index(0, self.size);
        let added: Vec<(u64, Hash)> =
            added.into_iter().enumerate().map(|(i, h)| (first + i as u64, h)).collect();
        self.hashes.extend(added.iter().copied());
        self.size += 1;
        Ok(added)
    }

    /// The root hash of the first `size` records (`size` at most the tree's).
    pub fn root_at(&self, size: u64) -> Result<Hash, tlog_tiles::Error> {
        tlog_tiles::tree_hash(size, self)
    }

    pub fn root(&self) -> Result<Hash, tlog_tiles::Error> {
        self.root_at(self.size)
    }

    /// A tile's bytes: its hashes, concatenated.
    pub fn tile(&self, tile: &TileRef) -> Result<Vec<u8>, tlog_tiles::Error> {
        let hashes = self.read_hashes(&tile_indexes(tile))?;
        let mut out = Vec::with_capacity(hashes.len() * HASH_SIZE);
        hashes.iter().for_each(|h| out.extend_from_slice(&h.0));
        Ok(out)
    }

    /// The inclusion proof of record `index` in the tree of the first `size` records.
    pub fn prove(&self, size: u64, index: u64) -> Result<RecordProof, tlog_tiles::Error> {
        tlog_tiles::prove_record(size, index, self)
    }
}

/// Checks that `record` is record `index` of the tree of `size` records with root `root`.
pub fn check_inclusion(
    proof: &[Hash],
    size: u64,
    root: Hash,
    index: u64,
    record: &[u8],
) -> Result<(), tlog_tiles::Error> {
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, tlog_tiles::record_hash(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grown(n: u64) -> Tree {
        let mut tree = Tree::default();
        for i in 0..n {
            tree.append(format!("record {i}").as_bytes()).unwrap();
        }
        tree
    }

    #[test]
    fn a_tree_grown_from_its_frontier_matches_one_grown_whole() {
        let whole = grown(600);
        let mut part = grown(300);
        let frontier: Vec<(u64, Hash)> = frontier_indexes(300)
            .into_iter()
            .map(|i| (i, part.read_hashes(&[i]).unwrap()[0]))
            .collect();
        part = Tree::with_hashes(300, frontier);
        assert_eq!(part.root().unwrap(), grown(300).root().unwrap());
        for i in 300..600 {
            part.append(format!("record {i}").as_bytes()).unwrap();
        }
        assert_eq!(part.root().unwrap(), whole.root().unwrap());
        assert_eq!(whole.root_at(0).unwrap(), tlog_tiles::EMPTY_HASH);
    }

    #[test]
    fn proofs_check_and_name_the_hashes_they_read() {
        let tree = grown(70);
        let root = tree.root().unwrap();
        for index in [0, 1, 37, 69] {
            let proof = tree.prove(70, index).unwrap();
            check_inclusion(&proof, 70, root, index, format!("record {index}").as_bytes()).unwrap();
            assert!(check_inclusion(&proof, 70, root, index, b"something else").is_err());
            let sparse = Tree::with_hashes(
                70,
                proof_indexes(70, index)
                    .into_iter()
                    .map(|i| (i, tree.read_hashes(&[i]).unwrap()[0])),
            );
            assert_eq!(sparse.prove(70, index).unwrap(), proof);
        }
    }

    #[test]
    fn a_full_tile_hashes_to_the_node_above_it() {
        let tree = grown(512);
        let tile = tree.tile(&TileRef { level: Some(0), n: 1, width: 256 }).unwrap();
        assert_eq!(tile.len(), 256 * HASH_SIZE);
        let top = tree.tile(&TileRef { level: Some(1), n: 0, width: 2 }).unwrap();
        assert_eq!(tlog_tiles::Tile::subtree_hash(&tile).0, top[HASH_SIZE..]);
    }
}
