//! ELF64 images and their Xen notes (`hestia_core::elf`): a hostile dom0 kernel file. Every
//! slice handed out lies inside the image, segments are consistent, and an accepted PV layout
//! satisfies the rules `pv_kernel` promises. Inputs are raw files, or (first byte odd) a
//! well-formed PV kernel built from the input's fields, with Xen notes, then patched.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hestia_core::elf::testing::image;
use hestia_core::elf::{Elf64, pv_kernel};
use hestia_core_fuzz::{assert_within, raw_or_built};
use libfuzzer_sys::fuzz_target;

/// A kernel for `elf::testing::image`, and byte patches applied to the result.
#[derive(Arbitrary, Debug)]
struct Kernel {
    paddr: u64,
    payload_len: u8,
    memsz: u32,
    entry: u64,
    notes: Vec<(u8, Vec<u8>)>,
    patches: Vec<(u16, u8)>,
}

fn build(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let k = Kernel::arbitrary(u)?;
    // Note types 0-31 cover every Xen note Hestia reads.
    let notes: Vec<(u32, &[u8])> = k
        .notes
        .iter()
        .map(|(ty, desc)| (u32::from(ty % 32), desc.as_slice()))
        .collect();
    let payload = vec![0x90; usize::from(k.payload_len)];
    let mut f = image(k.paddr, &payload, u64::from(k.memsz), k.entry, &notes);
    for (at, byte) in k.patches {
        let len = f.len();
        f[usize::from(at) % len] = byte;
    }
    Ok(f)
}

fuzz_target!(|input: &[u8]| {
    let mut built = Vec::new();
    let Some(data) = raw_or_built(input, &mut built, build) else {
        return;
    };
    let Ok(elf) = Elf64::parse(data) else { return };
    for s in elf.segments().flatten() {
        assert!(s.memsz > 0 && s.filesz <= s.memsz, "{s:?}");
        assert!(s.paddr.checked_add(s.memsz).is_some(), "{s:?} wraps");
        let bytes = elf.segment_bytes(&s);
        assert_within(data, bytes);
        let start = usize::try_from(s.offset).expect("offset inside the image");
        assert_eq!(Some(bytes), data.get(start..start + bytes.len()));
        assert_eq!(bytes.len() as u64, s.filesz, "{s:?}: file bytes");
    }
    for (_, desc) in elf.xen_notes() {
        assert_within(data, desc);
    }
    if let Ok(k) = pv_kernel(&elf) {
        let image = k.virt_kstart..k.virt_kend;
        assert!(k.virt_kstart < k.virt_kend, "{k:?}");
        assert!(k.virt_base <= k.virt_kstart, "{k:?}");
        assert!(image.contains(&k.entry), "{k:?}: entry");
        assert!(
            k.hypercall_page
                .is_none_or(|h| image.contains(&h) && h % 4096 == 0),
            "{k:?}: hypercall page"
        );
        assert!(
            k.init_p2m.is_none_or(|p| !image.contains(&p)),
            "{k:?}: INIT_P2M"
        );
    }
});
