//! The initramfs: an uncompressed newc cpio (uncompressed is cheapest to
//! unpack under TCG) with busybox-static, the fixture `/init` and the kernel
//! modules for virtio block/net and ext4, whose order comes from the host's
//! `depmod -b` + `modprobe -d --show-depends`. Written by hand, so no root is
//! needed for the device node. Must not boot or run guest code.
use crate::tools::Tool;
use crate::ImageError;
use std::path::{Path, PathBuf};

/// A newc archive being written in memory.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, namesize as u32, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.align(4);
    }

    fn align(&mut self, to: usize) {
        let len = self.buf.len().div_ceil(to) * to;
        self.buf.resize(len, 0);
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, &[], (major, minor));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.align(512);
        self.buf
    }
}

/// Runs depmod on an extracted kernel tree and returns the module files to
/// load, dependencies first.
pub fn module_closure(kroot: &Path, kver: &str, modules: &[String]) -> Result<Vec<PathBuf>, ImageError> {
    Tool::new("depmod")?.arg("-b").arg(kroot).arg(kver).run()?;
    let out =
        Tool::new("modprobe")?.arg("-d").arg(kroot).args(["-S", kver, "-a", "--show-depends"]).args(modules).run()?;
    let mut files: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out).lines() {
        if let Some(rest) = line.strip_prefix("insmod ") {
            let p = PathBuf::from(rest.split_whitespace().next().unwrap_or_default());
            if !files.contains(&p) {
                files.push(p);
            }
        }
    }
    Ok(files)
}

/// Reads a module, decompressing `.ko.xz`/`.ko.zst` with the host tool.
fn read_module(path: &Path) -> Result<(String, Vec<u8>), ImageError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(stem) = name.strip_suffix(".xz") {
        let data = Tool::new("xz")?.args(["-dc"]).arg(path).run()?;
        Ok((stem.to_string(), data))
    } else if let Some(stem) = name.strip_suffix(".zst") {
        let data = Tool::new("zstd")?.args(["-dc"]).arg(path).run()?;
        Ok((stem.to_string(), data))
    } else {
        Ok((name, std::fs::read(path).map_err(ImageError::io(path))?))
    }
}

/// Builds the initramfs: `/init`, busybox with the applets init uses, the
/// modules in `/lib/modules` and their load order in `/lib/modules/load`.
pub fn build(busybox: &[u8], init: &[u8], modules: &[PathBuf]) -> Result<Vec<u8>, ImageError> {
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.char_dev("dev/null", 0o666, 1, 3);
    c.file("bin/busybox", 0o755, busybox);
    for applet in [
        "sh",
        "mount",
        "umount",
        "insmod",
        "switch_root",
        "ip",
        "cat",
        "mkdir",
        "sleep",
        "echo",
        "grep",
        "sed",
        "ls",
        "poweroff",
        "reboot",
        "readlink",
    ] {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    c.file("init", 0o755, init);
    let mut order = String::new();
    for m in modules {
        let (name, data) = read_module(m)?;
        c.file(&format!("lib/modules/{name}"), 0o644, &data);
        order.push_str(&name);
        order.push('\n');
    }
    c.file("lib/modules/load", 0o644, order.as_bytes());
    Ok(c.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 512, 0);
        // Header (110) + "init\0" padded to 116, then 10 data bytes padded to 12.
        assert_eq!(&out[110..114], b"init");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701");
    }
}
