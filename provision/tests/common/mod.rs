//! Fixtures shared by the integration tests: a profile directory with one
//! good profile (`debian`), and registrations.

#![allow(dead_code)]

use devlab_provision::{Disk, Registration};
use std::path::{Path, PathBuf};

pub const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
pub const U1: &str = "4c4c4544-0042-3010-8052-b4c04f4e3732";
pub const U2: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
pub const U3: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(profiles.join("debian")).unwrap();
        std::fs::write(profiles.join("debian/vmlinuz"), b"kernel bytes \x00\x01\x02").unwrap();
        std::fs::write(profiles.join("debian/initrd.img"), b"initrd bytes").unwrap();
        std::fs::write(
            profiles.join("debian.toml"),
            format!(
                "kernel = \"debian/vmlinuz\"\ninitrd = \"debian/initrd.img\"\ncmdline = \"console=ttyS0 root=/dev/vda2\"\n\
                 image = \"images/debian-12.raw\"\nimage_sha256 = \"{SHA}\"\n\
                 install_script = \"\"\"\n#!/bin/sh\ndd if=\"$IMAGE\" of=/dev/vda bs=4M\n\"\"\"\n"
            ),
        )
        .unwrap();
        Fixture { dir }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("provision.db")
    }

    pub fn profiles(&self) -> PathBuf {
        self.dir.path().join("profiles")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn registration(uuid: &str, serial: &str, macs: &[&str]) -> Registration {
    Registration {
        uuid: uuid.into(),
        serial: serial.into(),
        vendor: "QEMU".into(),
        model: "Standard PC (Q35 + ICH9, 2009)".into(),
        macs: macs.iter().map(|m| m.to_string()).collect(),
        disks: vec![Disk { name: "vda".into(), size_bytes: 8 << 30 }],
        firmware: [("bios".to_string(), "1.16.3".to_string())].into(),
        neighbours: vec![],
        arch: None,
    }
}
