//! Build script for the hypervisor binary: passes the linker script and generates the 256
//! interrupt entry stubs (one per vector, each pushing a dummy error code where the CPU pushes
//! none, then the vector number) together with the table of their addresses.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Vectors for which the CPU pushes an error code (Intel SDM Vol. 3A, Table 6-1).
const HAS_ERROR_CODE: [u32; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
/// Vectors delivered on an IST stack (#DB, NMI, #DF, #MC): they enter through the paranoid path,
/// which cannot trust the ring to tell whose GS base is live.
const IST_VECTORS: [u32; 4] = [1, 2, 8, 18];

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let script = dir.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    // Position-independent code linked as a fixed-address executable: the image lives at
    // 0xFFFF82D080000000, outside the kernel code model's top 2 GiB.
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    // A content hash, so reproducible builds keep it: XENVER_build_id reports it.
    println!("cargo:rustc-link-arg-bins=--build-id=sha1");
    // XENVER_compile_info names the compiler, as Xen names its gcc.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=HESTIA_RUSTC_VERSION={}", version.trim());

    let mut s = String::from(".section .text.trap_stubs, \"ax\"\n.code64\n");
    for v in 0..256u32 {
        writeln!(s, ".balign 16\nhestia_trap_stub_{v}:").ok();
        if !HAS_ERROR_CODE.contains(&v) {
            s.push_str("    push $0\n");
        }
        let entry = if IST_VECTORS.contains(&v) {
            "hestia_trap_paranoid"
        } else {
            "hestia_trap_common"
        };
        writeln!(s, "    push ${v}\n    jmp {entry}").ok();
    }
    s.push_str(".section .rodata.trap_stubs, \"a\"\n.balign 8\n.global hestia_trap_stub_table\nhestia_trap_stub_table:\n");
    for v in 0..256u32 {
        writeln!(s, "    .quad hestia_trap_stub_{v}").ok();
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("trap_stubs.s"), s).expect("write trap_stubs.s");
}
