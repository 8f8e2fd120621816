//! A device's disk image made bootable without ever writing it: its
//! SHA-256 (remembered per file identity, so a 4 GiB image is hashed once,
//! not per run), a compressed image (`.gz`, `.xz`, `.zst`) unpacked once
//! into the cache keyed by that hash (sparse, in a temp file renamed into
//! place, so an interrupted unpack never looks complete), its format (raw
//! or qcow2, by magic), and its partition table (GPT names and extents, or
//! an MBR), read before anything boots. Each run then boots a qcow2 overlay
//! on the result ([`crate::machine::create_overlay`]): no copy, so a large
//! sparse image starts as fast as a small one.
//!
//! Must not: write the user's file, leave a partial cache entry, or boot
//! anything.

use crate::error::{Error, Result};
use devlab_images::Partition;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A disk image's container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// How the user's file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// By file name, as teams name release images (`.wic.zst`, `.img.xz`).
    pub fn of(path: &Path) -> Option<Compression> {
        match path.extension()?.to_str()? {
            "gz" => Some(Compression::Gzip),
            "xz" => Some(Compression::Xz),
            "zst" | "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The host tool that unpacks it to stdout, and its Debian package.
    fn tool(self) -> (&'static str, &'static str) {
        match self {
            Compression::Gzip => ("gzip", "gzip"),
            Compression::Xz => ("xz", "xz-utils"),
            Compression::Zstd => ("zstd", "zstd"),
        }
    }
}

/// A device image ready to boot through an overlay.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The user's file, as named.
    pub source: PathBuf,
    /// SHA-256 of the user's file (compressed, if it is).
    pub sha256: String,
    /// What the overlay's backing file is: the user's file, or its
    /// unpacked copy in the cache.
    pub disk: PathBuf,
    pub format: Format,
    /// The disk's virtual size in bytes.
    pub size: u64,
    /// GPT partitions (MBR: numbered, no labels).
    pub partitions: Vec<Partition>,
    pub table: &'static str,
}

/// Why an image cannot be used: each is a mistake in the profile (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ImageProblem {
    #[error("{0} cannot be read: {1}")]
    Unreadable(PathBuf, std::io::Error),
    #[error("{0} has no partition table (neither GPT nor MBR): is it a disk image, not a file system?")]
    NoPartitionTable(PathBuf),
    #[error("{0}: {1}")]
    Bad(PathBuf, String),
}

/// Prepare `source` (unpacking it into `cache` if compressed).
pub fn prepare(source: &Path, cache: &Path) -> std::result::Result<Prepared, PrepareError> {
    let meta = std::fs::metadata(source).map_err(|e| ImageProblem::Unreadable(source.to_path_buf(), e))?;
    std::fs::File::open(source).map_err(|e| ImageProblem::Unreadable(source.to_path_buf(), e))?;
    if !meta.is_file() {
        let e = std::io::Error::other("not a regular file");
        return Err(ImageProblem::Unreadable(source.to_path_buf(), e).into());
    }
    let sha256 = file_sha256(source, &meta, cache)?;
    let disk = match Compression::of(source) {
        None => source.to_path_buf(),
        Some(c) => unpacked(source, c, &sha256, cache)?,
    };
    let format = format_of(&disk)?;
    let head = read_head(&disk, format, 64 * 1024)?;
    let size = virtual_size(&disk, format)?;
    let (table, partitions) =
        partition_table(&head).ok_or_else(|| ImageProblem::NoPartitionTable(source.to_path_buf()))?;
    Ok(Prepared { source: source.to_path_buf(), sha256, disk, format, size, partitions, table })
}

/// The device's image for `arch` as the runner boots images: the disk to
/// put an overlay on, the SSH key, a manifest with what is known (arch,
/// name, hash as key, size, partitions). Its files are checked first; a
/// problem with the user's image is an input error at the profile's `image`.
pub fn built_image(
    d: &crate::device::Device,
    arch: devlab_images::Arch,
) -> Result<(devlab_images::BuiltImage, Prepared)> {
    d.check_files(arch)?;
    let (file, at) = d.image_file(arch);
    let cache = devlab_images::cache::cache_root();
    let p = match prepare(&file, &cache) {
        Ok(p) => p,
        Err(PrepareError::Image(problem)) => return Err(d.error_at(at, "image", problem.to_string())),
        Err(PrepareError::Host(e)) => return Err(e),
    };
    let ssh_key = match d.ssh_login(arch).map(|s| s.auth) {
        Some(crate::device::SshAuth::Key(k)) => k,
        _ => std::path::PathBuf::new(),
    };
    let manifest = devlab_images::Manifest {
        arch,
        recipe: d.name.clone(),
        version: String::new(),
        key: p.sha256.clone(),
        kernel_version: String::new(),
        kernel_package: String::new(),
        packages: Vec::new(),
        disk_size: p.size,
        partitions: p.partitions.clone(),
        env: devlab_images::EnvLayout { size: 0, copies: Vec::new(), vars: Vec::new() },
        rauc_compatible: None,
        ostree: None,
    };
    let dir = p.disk.parent().map(Path::to_path_buf).unwrap_or_default();
    let built = devlab_images::BuiltImage { dir, disk: p.disk.clone(), ssh_key, manifest, rootfs: PathBuf::new() };
    Ok((built, p))
}

/// Every file of the device's profile for each of its arches (image,
/// firmware, artifacts, netboot kernel and initrds, SSH key), each with its identity (size, mtime,
/// inode): compared before and after a suite, a change means something
/// wrote the user's files. A file that cannot be read is "missing".
pub fn identities(d: &crate::device::Device) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for &arch in &d.arches {
        files.push(d.image_file(arch).0);
        files.extend(d.uboot(arch));
        if let Some(crate::device::SshAuth::Key(k)) = d.ssh_login(arch).map(|s| s.auth) {
            files.push(k);
        }
        if let Some(u) = &d.update {
            files.extend(u.artifacts.keys().flat_map(|a| d.artifact_files(a, arch)));
        }
        if let Some((kernel, initrds)) = d.netboot_files(arch) {
            files.push(kernel);
            files.extend(initrds);
        }
    }
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|f| {
            let id = std::fs::metadata(&f).map_or("missing".to_string(), |m| {
                format!("{} bytes, modified {}.{:09}, inode {}", m.size(), m.mtime(), m.mtime_nsec(), m.ino())
            });
            (f, id)
        })
        .collect()
}

/// A problem with the image (the user's) or with the host (ours).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Image(#[from] ImageProblem),
    #[error(transparent)]
    Host(#[from] Error),
}

/// The file's SHA-256, remembered under its identity (device, inode, size,
/// mtime), so an unchanged image is hashed once.
fn file_sha256(path: &Path, meta: &std::fs::Metadata, cache: &Path) -> Result<String> {
    let id = format!("{}:{}:{}:{}.{}", meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
    let memo = cache.join("devices").join("sha256").join(hex::encode(Sha256::digest(id.as_bytes())));
    if let Ok(s) = std::fs::read_to_string(&memo) {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s);
        }
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::infra(format!("{}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::infra(format!("hashing {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let sum = hex::encode(h.finalize());
    write_whole(&memo, sum.as_bytes())?;
    Ok(sum)
}

/// Write `bytes` to `path` through a temp file renamed into place.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a cache path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::infra(format!("{}: {e}", dir.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::infra(format!("{}: {e}", dir.display())))?;
    tmp.write_all(bytes).map_err(|e| Error::infra(format!("{}: {e}", path.display())))?;
    tmp.persist(path).map_err(|e| Error::infra(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// The unpacked image of `source` in the cache (`devices/<sha256>/disk`),
/// unpacked now if it is not there yet.
fn unpacked(source: &Path, c: Compression, sha256: &str, cache: &Path) -> std::result::Result<PathBuf, PrepareError> {
    let entry = cache.join("devices").join(sha256);
    let disk = entry.join("disk");
    if disk.is_file() {
        return Ok(disk);
    }
    let parent = entry.parent().expect("has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::infra(format!("{}: {e}", parent.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(|e| Error::infra(format!("{}: {e}", parent.display())))?;
    let (name, package) = c.tool();
    let tool = crate::disk::tool(name, package)?;
    let mut child = Command::new(tool)
        .args(["-d", "-c"])
        .arg(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::infra(format!("{name}: {e}")))?;
    let out = tmp.path().join("disk");
    let written = copy_sparse(child.stdout.take().expect("piped"), &out);
    let status = child.wait_with_output().map_err(|e| Error::infra(format!("{name}: {e}")))?;
    if !status.status.success() {
        let why = String::from_utf8_lossy(&status.stderr).trim().to_string();
        return Err(ImageProblem::Bad(source.to_path_buf(), format!("cannot be unpacked with {name}: {why}")).into());
    }
    written?;
    // Read-only: nothing boots it but through an overlay.
    let _ = std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o444));
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, &entry) {
        Ok(()) => {}
        // Another run unpacked it first: theirs is as good as ours.
        Err(_) if disk.is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::infra(format!("{}: {e}", entry.display())).into());
        }
    }
    Ok(disk)
}

/// Copy a stream into a new file, leaving holes where it is all zeros.
fn copy_sparse(mut from: impl Read, to: &Path) -> Result<u64> {
    let io = |e: std::io::Error| Error::infra(format!("{}: {e}", to.display()));
    let mut f = std::fs::File::create(to).map_err(io)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(filled as i64)).map_err(io)?;
        } else {
            f.write_all(&buf[..filled]).map_err(io)?;
        }
        len += filled as u64;
    }
    f.set_len(len).map_err(io)?;
    Ok(len)
}

/// raw or qcow2, by the qcow2 magic.
fn format_of(disk: &Path) -> Result<Format> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(disk).map_err(|e| Error::infra(format!("{}: {e}", disk.display())))?;
    let n = f.read(&mut magic).map_err(|e| Error::infra(format!("{}: {e}", disk.display())))?;
    Ok(if n == 4 && &magic == b"QFI\xfb" { Format::Qcow2 } else { Format::Raw })
}

/// The first `len` bytes the guest sees.
fn read_head(disk: &Path, format: Format, len: u64) -> Result<Vec<u8>> {
    match format {
        Format::Qcow2 => crate::disk::read_bytes(disk, 0, len),
        Format::Raw => {
            let mut f = std::fs::File::open(disk).map_err(|e| Error::infra(format!("{}: {e}", disk.display())))?;
            let mut buf = Vec::new();
            Read::by_ref(&mut f)
                .take(len)
                .read_to_end(&mut buf)
                .map_err(|e| Error::infra(format!("{}: {e}", disk.display())))?;
            buf.resize(len as usize, 0);
            Ok(buf)
        }
    }
}

fn virtual_size(disk: &Path, format: Format) -> Result<u64> {
    match format {
        Format::Raw => {
            std::fs::metadata(disk).map(|m| m.len()).map_err(|e| Error::infra(format!("{}: {e}", disk.display())))
        }
        Format::Qcow2 => {
            let mut head = [0u8; 32];
            let mut f = std::fs::File::open(disk).map_err(|e| Error::infra(format!("{}: {e}", disk.display())))?;
            f.read_exact(&mut head).map_err(|e| Error::infra(format!("{}: {e}", disk.display())))?;
            Ok(u64::from_be_bytes(head[24..32].try_into().expect("8 bytes")))
        }
    }
}

/// The partition table in the disk's first bytes: GPT (512-byte sectors)
/// with its named partitions, or an MBR with at least one partition.
pub fn partition_table(head: &[u8]) -> Option<(&'static str, Vec<Partition>)> {
    const SECTOR: u64 = 512;
    if head.len() >= 1024 && &head[512..520] == b"EFI PART" {
        let h = &head[512..];
        let le64 = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let le32 = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let entries_lba = le64(&h[72..]);
        let count = le32(&h[80..]) as usize;
        let size = le32(&h[84..]) as usize;
        let mut parts = Vec::new();
        for i in 0..count.min(128) {
            let at = (entries_lba * SECTOR) as usize + i * size;
            let Some(e) = head.get(at..at + size.max(128)) else { break };
            if e[..16].iter().all(|b| *b == 0) {
                continue;
            }
            let (first, last) = (le64(&e[32..]), le64(&e[40..]));
            let name: Vec<u16> =
                e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|c| *c != 0).collect();
            parts.push(Partition {
                index: i as u32 + 1,
                label: String::from_utf16_lossy(&name),
                start: first * SECTOR,
                size: (last + 1 - first) * SECTOR,
                fs: String::new(),
            });
        }
        return Some(("gpt", parts));
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        let mut parts = Vec::new();
        for i in 0..4 {
            let e = &head[446 + i * 16..446 + (i + 1) * 16];
            let (kind, first, sectors) =
                (e[4], u32::from_le_bytes(e[8..12].try_into().ok()?), u32::from_le_bytes(e[12..16].try_into().ok()?));
            if kind != 0 && sectors != 0 {
                parts.push(Partition {
                    index: i as u32 + 1,
                    label: String::new(),
                    start: first as u64 * SECTOR,
                    size: sectors as u64 * SECTOR,
                    fs: String::new(),
                });
            }
        }
        return (!parts.is_empty()).then_some(("mbr", parts));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GPT disk made by sgdisk, the way teams' tools make them.
    fn gpt_disk(dir: &Path) -> Option<PathBuf> {
        let sgdisk = which::which("sgdisk").ok()?;
        let disk = dir.join("disk.img");
        std::fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
        let ok = Command::new(sgdisk)
            .args(["-n", "1:2048:+8M", "-c", "1:boot", "-n", "2:0:+16M", "-c", "2:rootfs.0"])
            .arg(&disk)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        Some(disk)
    }

    #[test]
    fn a_gpt_image_is_read_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let Some(disk) = gpt_disk(dir.path()) else { return };
        let before = std::fs::read(&disk).unwrap();
        let cache = dir.path().join("cache");
        let p = prepare(&disk, &cache).unwrap();
        assert_eq!((p.table, p.format, p.size), ("gpt", Format::Raw, 64 << 20));
        let labels: Vec<&str> = p.partitions.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["boot", "rootfs.0"]);
        assert_eq!((p.partitions[0].start, p.partitions[0].size), (2048 * 512, 8 << 20));
        assert_eq!(p.disk, disk, "an uncompressed image is booted in place, through an overlay");
        assert_eq!(p.sha256, hex::encode(Sha256::digest(&before)));
        assert_eq!(std::fs::read(&disk).unwrap(), before);
    }

    #[test]
    fn a_compressed_image_is_unpacked_once_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let Some(disk) = gpt_disk(dir.path()) else { return };
        let Ok(zstd) = which::which("zstd") else { return };
        assert!(Command::new(zstd).args(["-q", "-1"]).arg(&disk).status().unwrap().success());
        let packed = dir.path().join("disk.img.zst");
        let cache = dir.path().join("cache");
        let p = prepare(&packed, &cache).unwrap();
        assert_eq!(p.disk, cache.join("devices").join(&p.sha256).join("disk"));
        assert_eq!(std::fs::read(&p.disk).unwrap(), std::fs::read(&disk).unwrap());
        let blocks = std::fs::metadata(&p.disk).unwrap().blocks();
        assert!(blocks * 512 < 1 << 20, "unpacked sparse: {blocks} blocks");
        // Second time: the same entry, not unpacked again (its inode stays).
        let ino = std::fs::metadata(&p.disk).unwrap().ino();
        let again = prepare(&packed, &cache).unwrap();
        assert_eq!(std::fs::metadata(&again.disk).unwrap().ino(), ino);
        // No temp folder left beside the entry.
        let left: Vec<_> = std::fs::read_dir(cache.join("devices"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".unpack"))
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn a_file_system_is_not_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("rootfs.ext4");
        std::fs::write(&fs, vec![0u8; 8192]).unwrap();
        let err = prepare(&fs, &dir.path().join("cache")).unwrap_err();
        assert!(matches!(err, PrepareError::Image(ImageProblem::NoPartitionTable(_))), "{err}");
        let err = prepare(&dir.path().join("missing.img"), &dir.path().join("cache")).unwrap_err();
        assert!(matches!(err, PrepareError::Image(ImageProblem::Unreadable(..))), "{err}");
    }
}
