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

/// Makes the FAT boot partition image holding `boot.scr`.
pub fn boot_fat(out: &Path, size: u64, boot_scr: &Path) -> Result<(), ImageError> {
    let f = std::fs::File::create(out).map_err(ImageError::io(out))?;
    f.set_len(size).map_err(ImageError::io(out))?;
    drop(f);
    Tool::new("mkfs.vfat")?.args(["-n", "BOOT"]).arg(out).run()?;
    Tool::new("mcopy")?.arg("-i").arg(out).arg(boot_scr).arg("::boot.scr").run()?;
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
