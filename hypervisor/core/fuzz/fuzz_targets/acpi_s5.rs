//! `\_S5` in AML (`hestia_core::acpi_s5`): a firmware DSDT or SSDT body. A result is only
//! found where a `_S5_` name is, and its sleep types fit their 3-bit field.
#![no_main]

use hestia_core::acpi_s5::find_s5;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|aml: &[u8]| {
    if let Some(t) = find_s5(aml) {
        assert!(t.a <= 7 && t.b <= 7, "{t:?}");
        assert!(
            aml.windows(4).any(|w| w == b"_S5_"),
            "{t:?} without a _S5_ name"
        );
    }
});
