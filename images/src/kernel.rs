//! The kernel package, unpacked once per version and arch into
//! `<cache>/kernels/<arch>/<deb name>/` and shared read-only by every recipe
//! that boots it (extracting it took 3.4–5.1 s of every image build).
//!
//! Invariants: a folder there is complete (it is unpacked into a temp
//! folder and renamed into place, under a lock per package file, so two
//! builds never unpack the same kernel at once); builds only read it; the
//! [`KEEP`] most recently used kernels stay per arch.
use crate::cache;
use crate::{Arch, ImageError};
use std::path::{Path, PathBuf};

/// How many unpacked kernels stay per arch: the recipes' kernels (one or
/// two packages) and the versions before (another checkout may build them).
pub const KEEP: usize = 3;

/// The unpacked tree of `deb` (a `linux-image-*` package) for `arch`.
pub fn unpacked(root: &Path, arch: Arch, deb: &Path) -> Result<PathBuf, ImageError> {
    let parent = root.join("kernels").join(arch.to_string());
    std::fs::create_dir_all(&parent).map_err(ImageError::io(&parent))?;
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| ImageError::invalid(deb, "a kernel package needs a file name"))?;
    let dir = parent.join(&stem);
    if dir.is_dir() {
        return Ok(used(dir));
    }
    let _lock = cache::lock(&parent.join(format!("{stem}.lock")))?;
    if dir.is_dir() {
        // Unpacked by another build while we waited.
        return Ok(used(dir));
    }
    cache::remove_stale(&parent, &format!("{stem}."));
    let tmp = parent.join(format!("{stem}.{}", cache::tmp_suffix()));
    let unpacked = crate::tools::Tool::new("dpkg-deb").and_then(|t| t.arg("-x").arg(deb).arg(&tmp).run());
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dir).map_err(ImageError::io(&dir))?;
    prune(&parent, &stem);
    Ok(dir)
}

/// `dir`, its modification time set to now: the last use, which [`prune`]
/// orders by.
fn used(dir: PathBuf) -> PathBuf {
    if let Ok(f) = std::fs::File::open(&dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    dir
}

/// Removes the folders in `parent` beyond the [`KEEP`] most recently used (by
/// modification time), never `stem` itself nor a folder being made (unpacked
/// kernels here, their LZ4 re-wraps in `rewrap`).
pub(crate) fn prune(parent: &Path, stem: &str) {
    let Ok(rd) = std::fs::read_dir(parent) else { return };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name != stem && !name.contains(".tmp-") && e.path().is_dir()
        })
        .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
        .collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (_, old) in others.into_iter().skip(KEEP - 1) {
        let _ = std::fs::remove_dir_all(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_kernels_go() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str, age: u64| {
            let p = d.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
            p
        };
        let current = mk("linux-image-6.1.0-40-amd64_6.1.153-1_amd64", 500);
        let recent = mk("linux-image-6.1.0-39-amd64_6.1.148-1_amd64", 100);
        let cloud = mk("linux-image-6.1.0-39-cloud-amd64_6.1.148-1_amd64", 200);
        let oldest = mk("linux-image-6.1.0-38-amd64_6.1.147-1_amd64", 300);
        let building = mk("linux-image-6.1.0-37-amd64_6.1.140-1_amd64.tmp-1-0", 400);
        prune(d.path(), "linux-image-6.1.0-40-amd64_6.1.153-1_amd64");
        // The current one (even if unpacked long ago), the two most recently
        // used others, and the one being unpacked stay.
        assert!(current.exists() && recent.exists() && cloud.exists() && building.exists());
        assert!(!oldest.exists());
    }
}
