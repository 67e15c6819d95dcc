//! Segment descriptor validation (`hestia_core::descriptor`): any 8 bytes of a guest GDT/LDT
//! page. An accepted descriptor is either not present, or a DPL-3 code/data descriptor, or the
//! type-0 upper half; the check is idempotent and changes nothing but the DPL.
#![no_main]

use hestia_core::descriptor::check;
use libfuzzer_sys::fuzz_target;

const P: u64 = 1 << 47;
const S: u64 = 1 << 44;
const DPL: u64 = 3 << 45;
const TYPE: u64 = 0xF << 40;

fuzz_target!(|desc: u64| {
    let Some(ok) = check(desc) else {
        assert!(
            desc & P != 0 && desc & S == 0 && desc & TYPE != 0,
            "{desc:#x} refused"
        );
        return;
    };
    assert_eq!(check(ok), Some(ok), "{desc:#x}: not idempotent");
    assert_eq!(
        ok & !DPL,
        desc & !DPL,
        "{desc:#x}: changed more than the DPL"
    );
    if ok & P != 0 {
        if ok & S != 0 {
            assert_eq!(ok & DPL, DPL, "{desc:#x}: code/data below DPL 3");
        } else {
            assert_eq!(ok & TYPE, 0, "{desc:#x}: system descriptor accepted");
        }
    }
});
