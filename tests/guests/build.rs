//! Links every guest at 1 MiB with the guest linker script (as XTF's PV tests are).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=guest.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/guest.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
