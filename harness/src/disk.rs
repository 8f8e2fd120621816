//! Disk inspection from the host: reads byte ranges of a machine's qcow2
//! overlay (`qemu-img convert -U` through a raw offset/size view, so it also
//! works while QEMU holds the image), decodes the two U-Boot environment
//! copies, and reads files from ext4 partitions with `debugfs`. A scenario
//! can so assert the state of a board that is off or does not boot. Never
//! writes to the overlay or the base image.

use crate::error::{Error, Result};
use devlab_images::ubootenv::{self, EnvState};
use devlab_images::Manifest;
use std::path::Path;
use std::process::Command;

/// A host tool, or an error naming the Debian package that ships it.
pub(crate) fn tool(name: &str, package: &str) -> Result<std::path::PathBuf> {
    which::which(name)
        .map_err(|_| Error::infra(format!("{name} not found: install Debian package {package} (cargo xtask setup)")))
}

/// Run a host tool to completion; a failure says what was being done and
/// carries the tool's stderr.
pub(crate) fn run_tool(cmd: &mut Command, doing: &str) -> Result<std::process::Output> {
    let out = cmd.output().map_err(|e| Error::infra(format!("{doing}: {e}")))?;
    if !out.status.success() {
        return Err(Error::infra(format!("{doing}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(out)
}

/// The format of a disk: a machine's qcow2 overlay, or raw (an external
/// board's disk: a block device behind an SD mux, a disk file).
fn format_of(disk: &Path) -> &'static str {
    let mut magic = [0u8; 4];
    let qcow2 = std::fs::File::open(disk)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"QFI\xfb");
    if qcow2 {
        "qcow2"
    } else {
        "raw"
    }
}

/// Read `len` bytes at `offset` of the guest disk behind `overlay`.
pub fn read_bytes(overlay: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let qemu_img = tool("qemu-img", "qemu-utils")?;
    let out = tempfile::NamedTempFile::new().map_err(|e| Error::infra(format!("temp file: {e}")))?;
    let file = match format_of(overlay) {
        "qcow2" => format!("file.driver=qcow2,file.file.filename={}", overlay.display()),
        _ => format!("file.driver=file,file.filename={}", overlay.display()),
    };
    let spec = format!("driver=raw,offset={offset},size={len},{file}");
    run_tool(
        Command::new(qemu_img).args(["convert", "-U", "--image-opts", &spec, "-O", "raw"]).arg(out.path()),
        &format!("reading {len} bytes at {offset} of {}", overlay.display()),
    )?;
    let mut bytes = std::fs::read(out.path()).map_err(|e| Error::infra(format!("reading back: {e}")))?;
    bytes.resize(len as usize, 0);
    Ok(bytes)
}

fn partition_by_index(m: &Manifest, index: u32) -> Result<&devlab_images::Partition> {
    m.partitions
        .iter()
        .find(|p| p.index == index)
        .ok_or_else(|| Error::infra(format!("image manifest has no partition {index}")))
}

/// Overwrite `length` bytes at `offset` of the partition labelled `label`
/// with `byte` (a fault injected while the machine is off; the base image
/// is never touched: writes land in the overlay).
pub fn corrupt(overlay: &Path, m: &Manifest, label: &str, offset: u64, length: u64, byte: u8) -> Result<()> {
    let part = partition_by_label(m, label)?;
    if offset + length > part.size {
        return Err(Error::infra(format!(
            "{label}: {length} bytes at {offset} run past its end ({} bytes)",
            part.size
        )));
    }
    let qemu_io = tool("qemu-io", "qemu-utils")?;
    let res = Command::new(qemu_io)
        .args(["-f", format_of(overlay), "-c"])
        .arg(format!("write -P {byte} {} {length}", part.start + offset))
        .arg(overlay)
        .output()
        .map_err(|e| Error::infra(format!("qemu-io: {e}")))?;
    if !res.status.success() || String::from_utf8_lossy(&res.stdout).contains("failed") {
        return Err(Error::infra(format!(
            "qemu-io write on {}: {}{}",
            overlay.display(),
            String::from_utf8_lossy(&res.stdout).trim(),
            String::from_utf8_lossy(&res.stderr).trim()
        )));
    }
    Ok(())
}

fn partition_by_label<'m>(m: &'m Manifest, label: &str) -> Result<&'m devlab_images::Partition> {
    m.partitions.iter().find(|p| p.label == label).ok_or_else(|| {
        let known: Vec<&str> = m.partitions.iter().map(|p| p.label.as_str()).collect();
        Error::infra(format!("no partition labelled `{label}` (known: {})", known.join(", ")))
    })
}

/// Both U-Boot environment copies, decoded, and which one is current.
pub fn read_env(overlay: &Path, m: &Manifest) -> Result<EnvState> {
    let mut bufs = Vec::new();
    for copy in &m.env.copies {
        let part = partition_by_index(m, copy.partition)?;
        bufs.push(read_bytes(overlay, part.start + copy.offset, m.env.size)?);
    }
    if bufs.len() != 2 {
        return Err(Error::infra(format!("expected two env copies in the manifest, found {}", bufs.len())));
    }
    Ok(ubootenv::decode(&bufs[0], &bufs[1]))
}

/// A file from the ext4 partition labelled `label` (e.g. `data`).
pub fn read_file(overlay: &Path, m: &Manifest, label: &str, path: &str) -> Result<Vec<u8>> {
    let part = partition_by_label(m, label)?;
    let debugfs = tool("debugfs", "e2fsprogs")?;
    let image = tempfile::NamedTempFile::new().map_err(|e| Error::infra(format!("temp file: {e}")))?;
    std::fs::write(image.path(), read_bytes(overlay, part.start, part.size)?)
        .map_err(|e| Error::infra(format!("writing partition copy: {e}")))?;
    let res = Command::new(debugfs)
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image.path())
        .output()
        .map_err(|e| Error::infra(format!("debugfs: {e}")))?;
    let stderr = String::from_utf8_lossy(&res.stderr);
    // debugfs prints its version banner on stderr; a missing file shows as
    // "File not found by ext2_lookup".
    if !res.status.success() || stderr.contains("not found") {
        return Err(Error::infra(format!("{label}:{path}: {}", stderr.lines().last().unwrap_or("debugfs failed"))));
    }
    Ok(res.stdout)
}
