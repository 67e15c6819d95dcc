//! Helpers shared by the fuzz targets in `fuzz_targets/` (one binary each, run by
//! `cargo xtask fuzz-host`). The targets assert properties of `hestia-core`'s parsers and of
//! the PV MMU's frame table; a failed assertion is a crash libFuzzer records.

/// Panics unless `part` is a sub-slice of `whole` (empty slices are anywhere).
pub fn assert_within(whole: &[u8], part: &[u8]) {
    if part.is_empty() {
        return;
    }
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    assert!(
        p >= w && p + part.len() <= w + whole.len(),
        "slice of {} bytes at offset {} outside the {}-byte input",
        part.len(),
        p.wrapping_sub(w),
        whole.len()
    );
}

/// The image a target checks: the input itself when its first byte is even, else one that
/// `build` makes from the rest (well-formed enough to reach the deep checks), kept in `keep`.
/// `None` for an empty input or one `build` cannot use.
pub fn raw_or_built<'a>(
    input: &'a [u8],
    keep: &'a mut Vec<u8>,
    build: impl FnOnce(&mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Vec<u8>>,
) -> Option<&'a [u8]> {
    let (mode, rest) = input.split_first()?;
    if mode & 1 == 0 {
        return Some(rest);
    }
    *keep = build(&mut arbitrary::Unstructured::new(rest)).ok()?;
    Some(keep)
}
