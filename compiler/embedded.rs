//! The runtime crate, its templates and the board targets, embedded in the binary by build.rs.

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// An embedded file by its path in the source tree, e.g. `runtime-template/src/lib.rs`.
pub fn file(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

/// Embedded files under a folder, with their paths relative to it.
pub fn dir(prefix: &str) -> impl Iterator<Item = (&'static str, &'static [u8])> + '_ {
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    FILES.iter().filter_map(move |(p, b)| p.strip_prefix(prefix.as_str()).map(|rel| (rel, *b)))
}
