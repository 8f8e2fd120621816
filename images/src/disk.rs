//! The GPT disk: layout (boot FAT, two raw U-Boot env copies, rootfs A/B,
//! data) and its assembly from partition-sized files with sgdisk, mkfs.vfat,
//! mtools, mkimage, mke2fs and `dd conv=notrunc,sparse` into a sparse file.
//! Must not use loop devices, mounts or root.
use crate::tools::Tool;
use crate::{ImageError, Partition};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1024 * 1024;

/// Partition labels, in table order (index = position + 1).
pub const LABELS: [&str; 6] = ["boot", "uboot-env-a", "uboot-env-b", "rootfs-a", "rootfs-b", "data"];

/// Partition labels of an OSTree disk: the same boot and env partitions,
/// then one `sysroot` (repo, deployments, `/boot`, the stateroot's `/var`).
pub const OSTREE_LABELS: [&str; 4] = ["boot", "uboot-env-a", "uboot-env-b", "sysroot"];

/// Computes the partition table of `recipe`'s disk: A/B slots and data, or
/// the OSTree sysroot (1 MiB aligned, first partition at 1 MiB) and the total
/// disk size (1 MiB spare for backup GPT).
pub fn layout(recipe: &crate::Recipe) -> (Vec<Partition>, u64) {
    let sizes = &recipe.sizes;
    let mut mib = vec![(sizes.boot, "vfat"), (sizes.env, "raw"), (sizes.env, "raw")];
    let labels: &[&str] = match &recipe.ostree {
        Some(o) => {
            mib.push((o.sysroot, "ext4"));
            &OSTREE_LABELS
        }
        None => {
            mib.extend([(sizes.rootfs, "ext4"), (sizes.rootfs, "ext4"), (sizes.data, "ext4")]);
            &LABELS
        }
    };
    let mut start = MIB;
    let mut parts = Vec::new();
    for (i, ((size, fs), label)) in mib.iter().zip(labels).enumerate() {
        parts.push(Partition {
            index: i as u32 + 1,
            label: label.to_string(),
            start,
            size: size * MIB,
            fs: fs.to_string(),
        });
        start += size * MIB;
    }
    (parts, start + MIB)
}

/// Makes an ext4 image of `size` bytes, filled from `tar` if given.
pub fn mke2fs(out: &Path, size: u64, label: &str, tar: Option<&Path>) -> Result<(), ImageError> {
    let mut t =
        Tool::new("mke2fs")?.args(["-q", "-F", "-t", "ext4", "-L", label, "-m", "0"]).args(["-E", "root_owner=0:0"]);
    if let Some(tar) = tar {
        t = t.arg("-d").arg(tar);
    }
    t.arg(out).arg(format!("{}k", size / 1024)).run()?;
    Ok(())
}

/// Syslinux's GPT-aware MBR boot code (440 bytes, from syslinux-common).
pub const GPT_MBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";

/// The legacy BIOS boot path of an x86 A/B disk, for firmware without
/// U-Boot (SeaBIOS on the PXE board, after an install): syslinux in the FAT
/// boot partition boots slot A's kernel and initramfs, copied next to it.
/// U-Boot never reads any of it. No A/B choice on this path: slot A only.
pub struct BiosBoot<'a> {
    /// Folder for the files copied in (kernel, initramfs, syslinux.cfg).
    pub work: &'a Path,
    pub vmlinuz: &'a [u8],
    pub initrd: &'a [u8],
    /// The whole kernel command line.
    pub cmdline: String,
}

/// The `syslinux.cfg` of [`BiosBoot`]: boot at once, console on COM1.
pub fn syslinux_cfg(cmdline: &str) -> String {
    format!(
        "# devlab: legacy BIOS boot of slot A (SeaBIOS); U-Boot boots boot.scr instead.\n\
         SERIAL 0 115200\nDEFAULT devlab\nPROMPT 0\nTIMEOUT 0\n\
         LABEL devlab\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {cmdline}\n"
    )
}

/// Makes the FAT boot partition image holding `boot.scr` (and, with
/// `bios`, syslinux and what it boots).
pub fn boot_fat(out: &Path, size: u64, boot_scr: &Path, bios: Option<&BiosBoot>) -> Result<(), ImageError> {
    let f = std::fs::File::create(out).map_err(ImageError::io(out))?;
    f.set_len(size).map_err(ImageError::io(out))?;
    drop(f);
    Tool::new("mkfs.vfat")?.args(["-n", "BOOT"]).arg(out).run()?;
    Tool::new("mcopy")?.arg("-i").arg(out).arg(boot_scr).arg("::boot.scr").run()?;
    if let Some(b) = bios {
        let cfg = syslinux_cfg(&b.cmdline);
        for (name, data) in [("vmlinuz", b.vmlinuz), ("initrd.img", b.initrd), ("syslinux.cfg", cfg.as_bytes())] {
            let file = b.work.join(name);
            std::fs::write(&file, data).map_err(ImageError::io(&file))?;
            Tool::new("mcopy")?.arg("-i").arg(out).arg(&file).arg(format!("::{name}")).run()?;
        }
        // The mtools installer: writes ldlinux.sys/.c32 and the FAT boot
        // sector of the partition image, no mount.
        Tool::new("syslinux")?.args(["--install", "--directory", "/"]).arg(out).run()?;
    }
    Ok(())
}

/// Writes syslinux's GPT MBR boot code into sector 0 of `disk` (the
/// protective MBR's partition entries and signature are kept): a BIOS
/// loads it, and it boots the partition marked legacy-BIOS-bootable.
pub fn write_gpt_mbr(disk: &Path) -> Result<(), ImageError> {
    let code = std::fs::read(GPT_MBR)
        .map_err(|_| ImageError::MissingTool { tool: GPT_MBR.to_string(), package: "syslinux-common".to_string() })?;
    if code.len() > 440 {
        return Err(ImageError::invalid(GPT_MBR, format!("{} bytes: MBR boot code is at most 440", code.len())));
    }
    let f = std::fs::OpenOptions::new().write(true).open(disk).map_err(ImageError::io(disk))?;
    f.write_all_at(&code, 0).map_err(ImageError::io(disk))?;
    Ok(())
}

/// Compiles the boot script text into a legacy script image.
pub fn mkimage_script(cmd: &Path, out: &Path) -> Result<(), ImageError> {
    Tool::new("mkimage")?
        .args(["-A", "x86", "-O", "linux", "-T", "script", "-C", "none", "-n", "devlab"])
        .arg("-d")
        .arg(cmd)
        .arg(out)
        .run()?;
    Ok(())
}

/// Creates the sparse disk, writes the GPT and copies partition images in.
/// `images[i]` is the file for partition i+1 (None: left zero); `raw` are
/// (byte offset, bytes) written directly (the env copies).
pub fn assemble(
    disk: &Path,
    parts: &[Partition],
    total: u64,
    images: &[Option<&Path>],
    raw: &[(u64, &[u8])],
) -> Result<(), ImageError> {
    let f = std::fs::File::create(disk).map_err(ImageError::io(disk))?;
    f.set_len(total).map_err(ImageError::io(disk))?;
    drop(f);
    let mut sg = Tool::new("sgdisk")?.arg("-o");
    for p in parts {
        let first = p.start / 512;
        let last = (p.start + p.size) / 512 - 1;
        let code = if p.fs == "vfat" { "0700" } else { "8300" };
        sg = sg
            .arg(format!("-n{}:{}:{}", p.index, first, last))
            .arg(format!("-t{}:{}", p.index, code))
            .arg(format!("-c{}:{}", p.index, p.label));
    }
    // Legacy BIOS bootable flag on the boot partition for distro boot's scan.
    sg.arg("-A1:set:2").arg(disk).run()?;
    for (p, img) in parts.iter().zip(images) {
        let Some(img) = img else { continue };
        Tool::new("dd")?
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", p.start / MIB))
            .run()?;
    }
    let f = std::fs::OpenOptions::new().write(true).open(disk).map_err(ImageError::io(disk))?;
    for (off, bytes) in raw {
        f.write_all_at(bytes, *off).map_err(ImageError::io(disk))?;
    }
    f.sync_all().map_err(ImageError::io(disk))?;
    Ok(())
}
