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
