//! Picking kernel modules out of Debian's `linux-image` package for the initramfs: the modules
//! asked for, plus everything their `depends=` fields (in each module's `.modinfo` ELF section)
//! pull in, in an order in which each loads after its dependencies. Debian's package carries no
//! `modules.dep` (depmod writes it at install time), so the dependencies are read here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::Result;

/// Every module under `root` (a `lib/modules/<version>/kernel` tree) by its name, with `-`
/// written as `_` as the kernel does.
pub fn index(root: &Path) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && let Some(stem) = name.strip_suffix(".ko")
            {
                out.insert(stem.replace('-', "_"), p);
            }
        }
    }
    out
}

/// The `.modinfo` section of an ELF64 little-endian object, as `key=value` strings.
pub fn modinfo(elf: &[u8]) -> Option<Vec<String>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 {
        return None;
    }
    let shoff = u64_at(0x28)? as usize;
    let (shentsize, shnum, shstrndx) = (
        usize::from(u16_at(0x3a)?),
        usize::from(u16_at(0x3c)?),
        usize::from(u16_at(0x3e)?),
    );
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(h)?,
            u64_at(h + 0x18)? as usize,
            u64_at(h + 0x20)? as usize,
        ))
    };
    let (_, str_off, str_len) = section(shstrndx)?;
    let names = elf.get(str_off..str_off.checked_add(str_len)?)?;
    for i in 0..shnum {
        let (name, off, len) = section(i)?;
        let name = names.get(name as usize..)?;
        let end = name.iter().position(|&b| b == 0)?;
        if &name[..end] == b".modinfo" {
            let data = elf.get(off..off.checked_add(len)?)?;
            return Some(
                data.split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            );
        }
    }
    None
}

/// The modules `wanted` and their dependencies, dependencies first.
pub fn closure(
    index: &HashMap<String, PathBuf>,
    wanted: &[&str],
) -> Result<Vec<(String, PathBuf)>> {
    fn visit(
        name: &str,
        index: &HashMap<String, PathBuf>,
        order: &mut Vec<(String, PathBuf)>,
        seen: &mut Vec<String>,
    ) -> Result<()> {
        if seen.iter().any(|s| s == name) {
            return Ok(());
        }
        seen.push(name.to_owned());
        let path = index
            .get(name)
            .ok_or_else(|| format!("the kernel package has no module {name}"))?;
        let info = modinfo(&std::fs::read(path)?)
            .ok_or_else(|| format!("{} has no .modinfo", path.display()))?;
        for dep in info
            .iter()
            .filter_map(|l| l.strip_prefix("depends="))
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            visit(&dep.replace('-', "_"), index, order, seen)?;
        }
        order.push((name.to_owned(), path.clone()));
        Ok(())
    }
    let (mut order, mut seen) = (Vec::new(), Vec::new());
    for w in wanted {
        visit(w, index, &mut order, &mut seen)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    fn elf_with_modinfo(info: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        let names_off = e.len();
        e.extend_from_slice(names);
        let info_off = e.len();
        e.extend_from_slice(info);
        let shoff = e.len();
        // Section 0 (null), 1 (.shstrtab), 2 (.modinfo).
        for (name, off, len) in [
            (0u32, 0usize, 0usize),
            (1, names_off, names.len()),
            (11, info_off, info.len()),
        ] {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(len as u64).to_le_bytes());
            e.extend_from_slice(&h);
        }
        e[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        e[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        e[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        e[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        e
    }

    #[test]
    fn reads_modinfo_and_orders_dependencies() {
        let dir = std::env::temp_dir().join(format!("hestia-kmod-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fs")).unwrap();
        for (name, info) in [
            (
                "ext4",
                &b"license=GPL\0softdep=pre: crypto-crc32c\0depends=jbd2,mbcache\0"[..],
            ),
            ("jbd2", b"depends=\0"),
            ("mbcache", b"depends=jbd2\0"),
        ] {
            std::fs::write(
                dir.join("fs").join(format!("{name}.ko")),
                elf_with_modinfo(info),
            )
            .unwrap();
        }
        let idx = index(&dir);
        assert_eq!(idx.len(), 3);
        let order: Vec<String> = closure(&idx, &["ext4"])
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(order, ["jbd2", "mbcache", "ext4"]);
        assert!(closure(&idx, &["nope"]).is_err());
        assert_eq!(modinfo(b"not an elf"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
