//! A writer for the cpio "newc" format Linux unpacks as its initramfs (see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`): for each entry a 110-byte
//! ASCII header of hexadecimal fields, the NUL-terminated name, padding to 4 bytes, the data,
//! padding to 4 bytes; a `TRAILER!!!` entry ends the archive.

/// File type bits of `mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An archive being built in memory.
#[derive(Default)]
pub struct Archive {
    out: Vec<u8>,
    ino: u32,
}

impl Archive {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory (mode 0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, (major, minor), &[]);
    }

    /// The finished archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Archive::default();
        a.file("init", 0o755, b"#!/bin/sh\n");
        let out = a.finish();
        assert_eq!(&out[..6], b"070701");
        // ino 1, mode 0100755, filesize 10, namesize 5 ("init" + NUL).
        assert_eq!(&out[6..14], b"00000001");
        assert_eq!(&out[14..22], b"000081ED");
        assert_eq!(&out[54..62], b"0000000A");
        assert_eq!(&out[94..102], b"00000005");
        // Header (110) + name (5) padded to 116, then the data.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        // Data padded to 128, then the trailer entry.
        assert_eq!(&out[128..134], b"070701");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
        assert!(out.len().is_multiple_of(4));
    }
}
