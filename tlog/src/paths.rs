//! `tlog-tiles` resource paths, relative to a log's prefix.

use crate::{TILE_HEIGHT, TILE_WIDTH};

/// One tile or entry bundle of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileRef {
    /// The level of a hash tile; `None` for an entry bundle.
    pub level: Option<u8>,
    /// Its index within the level.
    pub n: u64,
    /// Hashes (or entries) in it: 1 to 256; below 256 it is partial.
    pub width: u64,
}

impl TileRef {
    pub fn is_bundle(&self) -> bool {
        self.level.is_none()
    }

    /// `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let level = self.level.map_or_else(|| "entries".to_owned(), |l| l.to_string());
        let mut n = self.n;
        let mut digits = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            digits = format!("x{:03}/{digits}", n % 1000);
        }
        let partial =
            if self.width == TILE_WIDTH { String::new() } else { format!(".p/{}", self.width) };
        format!("tile/{level}/{digits}{partial}")
    }

    /// Reads a path as [`TileRef::path`] writes it; anything else (leading zeroes, a width
    /// of 0 or 256 in `.p/`, a level above 63, an index past `u64`) is `None`.
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("tile/")?;
        let (level, rest) = rest.split_once('/')?;
        let level = match level {
            "entries" => None,
            l => Some(l.parse::<u8>().ok().filter(|l| *l < 64)?),
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                let w = width.parse::<u64>().ok().filter(|w| (1..TILE_WIDTH).contains(w))?;
                (index, w)
            }
            None => (rest, TILE_WIDTH),
        };
        let mut n: u64 = 0;
        let parts: Vec<&str> = index.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let digits = if i + 1 < parts.len() { part.strip_prefix('x')? } else { part };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n = n.checked_mul(1000)?.checked_add(digits.parse::<u64>().ok()?)?;
        }
        let tile = Self { level, n, width };
        // One spelling per tile: `x000/…` prefixes are not the canonical form.
        (tile.path() == path).then_some(tile)
    }

    /// The first entry this tile covers.
    pub fn start(&self) -> u64 {
        let level = u32::from(self.level.unwrap_or(0));
        self.n << (u32::from(TILE_HEIGHT) * (level + 1))
    }
}

/// Every hash tile and entry bundle a tree of `size` entries has (full and partial).
pub fn tiles(size: u64) -> Vec<TileRef> {
    let mut all = Vec::new();
    for tile in tlog_tiles::Tile::new_tiles(TILE_HEIGHT, 0, size) {
        let (level, n, width) = (tile.level(), tile.level_index(), u64::from(tile.width()));
        all.push(TileRef { level: Some(level), n, width });
        if level == 0 {
            all.push(TileRef { level: None, n, width });
        }
    }
    all
}

/// The entry bundles of a tree of `size` entries, in order.
pub fn bundles(size: u64) -> impl Iterator<Item = TileRef> {
    (0..size.div_ceil(TILE_WIDTH)).map(move |n| TileRef {
        level: None,
        n,
        width: (size - n * TILE_WIDTH).min(TILE_WIDTH),
    })
}

/// Encodes entries as an entry bundle: each a big-endian `u16` length, then its bytes.
/// `None` if an entry is longer than 65,535 bytes.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&u16::try_from(entry.len()).ok()?.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Some(out)
}

/// Splits an entry bundle into its entries; `None` if it is not a sequence of length-prefixed
/// entries.
pub fn decode_bundle(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_at_checked(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, rest) = rest.split_at_checked(len)?;
        entries.push(entry.to_vec());
        bytes = rest;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_spec_examples() {
        let t = TileRef { level: Some(4), n: 1_234_067, width: 256 };
        assert_eq!(t.path(), "tile/4/x001/x234/067");
        let p = TileRef { level: Some(0), n: 5, width: 1 };
        assert_eq!(p.path(), "tile/0/005.p/1");
        let b = TileRef { level: None, n: 0, width: 112 };
        assert_eq!(b.path(), "tile/entries/000.p/112");
        for tile in [t, p, b] {
            assert_eq!(TileRef::parse(&tile.path()), Some(tile));
        }
        for bad in [
            "tile/0/5",
            "tile/0/x000/005",
            "tile/64/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/01",
            "tile/entries/x1/000",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
            "tiles/0/000",
        ] {
            assert_eq!(TileRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tree_of_70000_has_the_tiles_the_spec_lists() {
        // "273 full level 0 tiles, one partial level 0 tile of width 112, one full level 1
        // tile, one partial level 1 tile of width 17, and one partial level 2 tile of width 1"
        let all = tiles(70_000);
        let hash = |level: u8| {
            all.iter().filter(move |t| t.level == Some(level)).copied().collect::<Vec<_>>()
        };
        assert_eq!(hash(0).len(), 274);
        assert_eq!(hash(0).last().unwrap().width, 112);
        assert_eq!(hash(1).iter().map(|t| t.width).collect::<Vec<_>>(), vec![256, 17]);
        assert_eq!(hash(2).iter().map(|t| t.width).collect::<Vec<_>>(), vec![1]);
        assert_eq!(all.iter().filter(|t| t.is_bundle()).count(), 274);
        assert_eq!(
            bundles(70_000).collect::<Vec<_>>(),
            hash(0).iter().map(|t| TileRef { level: None, ..*t }).collect::<Vec<_>>()
        );
        assert!(tiles(0).is_empty());
        assert_eq!(tiles(256).iter().filter(|t| t.level == Some(1)).count(), 1);
    }

    #[test]
    fn bundles_round_trip_and_refuse_truncation() {
        let entries: Vec<&[u8]> = vec![b"a", b"", b"{\"index\":2}"];
        let bytes = encode_bundle(entries.clone()).unwrap();
        assert_eq!(
            decode_bundle(&bytes).unwrap(),
            entries.iter().map(|e| e.to_vec()).collect::<Vec<_>>()
        );
        assert_eq!(decode_bundle(&bytes[..bytes.len() - 1]), None);
        assert!(encode_bundle([vec![0u8; 70_000].as_slice()]).is_none());
    }
}
