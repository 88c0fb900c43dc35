//! flashgate-tlog: each drop's public log as the C2SP specifications define one.
//!
//! - [`paths`]: where `tlog-tiles` puts tiles and entry bundles (`tile/<L>/<N>[.p/<W>]`,
//!   `tile/entries/<N>[.p/<W>]`), and which ones a tree of a given size has;
//! - [`tree`]: the hashes a log stores as it grows (RFC 6962, via `tlog_tiles`), its root,
//!   tiles and inclusion proofs;
//! - [`checkpoint`]: `tlog-checkpoint` bodies signed as `signed-note`s (Ed25519, via
//!   `signed_note`), and opening them with known keys;
//! - [`verify`]: what `flashgate verify` checks, over any [`verify::Source`] of the files a
//!   log serves (a URL, a folder).
//!
//! The Merkle hashing, the tile arithmetic and the note format come from Cloudflare's
//! `tlog_tiles` and `signed_note` crates (ports of Go's `sumdb/tlog` and `note`); what is
//! written here is the C2SP path layout (the crate's `Tile::path` is the older sumdb layout,
//! with a height element) and flashgate's own entries ([`flashgate_core::transparency`]).

pub mod checkpoint;
pub mod paths;
pub mod tree;
pub mod verify;

/// The tile height `tlog-tiles` fixes: 2⁸ = 256 hashes (or entries) per full tile.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

pub use tlog_tiles::{HASH_SIZE, Hash};
