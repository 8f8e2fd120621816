//! `images/images.lock`: the exact version of every package each arch's
//! images use (the kernel included), so a release rebuilds identically: a
//! Debian point release changes nothing until someone refreshes the lock on
//! purpose (`cargo xtask images --lock`). Read by every build: the package
//! closure is still resolved with apt, and each package's version is taken
//! from the lock. The arch's locked versions key each image's pointer (a
//! changed lock makes `locate` say stale) and the versions a build pinned
//! key its entry, so a refresh that moves no package of an image finds its
//! entry again instead of rebuilding it.
//!
//! Invariants: a package the lock does not list, or a locked version that
//! neither the download cache nor the apt sources have, is an error naming
//! the package, both versions and the command that refreshes the lock;
//! without a lock file builds take apt's candidates, as before.
use crate::apt::{Resolution, Resolved};
use crate::{Arch, ImageError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The lock's file name, beside the folder of recipes.
pub const FILE: &str = "images.lock";

const HEADER: &str = "# Exact package versions per arch for every image recipe (the kernel included).\n\
# Written by `cargo xtask images --lock`; read by every image build and part of\n\
# each image's cache key. Refresh it on purpose, then review the diff.\n";

/// Versions by arch (`x86_64`, `aarch64`), then by package name.
pub type Lock = BTreeMap<String, BTreeMap<String, String>>;

/// Where the lock of the recipe at `recipe_path` is: `images/images.lock`
/// for `images/recipes/<name>.toml`.
pub fn path_for(recipe_path: &Path) -> PathBuf {
    let recipes = recipe_path.parent().unwrap_or(Path::new("."));
    recipes.parent().unwrap_or(Path::new(".")).join(FILE)
}

/// The lock, if there is one.
pub fn read(path: &Path) -> Result<Option<Lock>, ImageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io(path)(e)),
    };
    let text = String::from_utf8_lossy(&bytes);
    let lock: Lock = toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| crate::recipe::line_col(&text, s.start));
        ImageError::Recipe { path: path.to_path_buf(), line, column, message: e.message().to_string() }
    })?;
    Ok(Some(lock))
}

/// Writes `lock` to `path` (whole: temp file and rename).
pub fn write(path: &Path, lock: &Lock) -> Result<(), ImageError> {
    let body = toml::to_string(lock).map_err(|e| ImageError::invalid(path, e.to_string()))?;
    crate::cache::write_atomic(path, format!("{HEADER}{body}").as_bytes())
}

/// Adds a resolution's packages (and kernel) to `lock` under `arch`.
pub fn record(lock: &mut Lock, arch: Arch, res: &Resolution) {
    let section = lock.entry(arch.to_string()).or_default();
    for r in res.packages.iter().chain(std::iter::once(&res.kernel)) {
        section.insert(r.name.clone(), r.version.clone());
    }
}

/// Sets every version of `res` to the locked one. `available` says whether
/// a version apt no longer offers as candidate can still be had.
pub fn pin(
    lock: &Lock,
    path: &Path,
    arch: Arch,
    res: &mut Resolution,
    available: &mut dyn FnMut(&Resolved, &str) -> Result<bool, ImageError>,
) -> Result<(), ImageError> {
    let refresh = "refresh the lock with `cargo xtask images --lock` and review its diff";
    let section = lock.get(&arch.to_string());
    for r in res.packages.iter_mut().chain(std::iter::once(&mut res.kernel)) {
        let Some(v) = section.and_then(|s| s.get(&r.name)) else {
            return Err(ImageError::Lock {
                path: path.to_path_buf(),
                message: format!("has no version of {} for {arch} (the recipes' packages changed): {refresh}", r.name),
            });
        };
        if *v != r.version {
            if !available(r, v)? {
                return Err(ImageError::Lock {
                    path: path.to_path_buf(),
                    message: format!(
                        "{} {v} ({arch}) is locked but no longer in the apt sources (apt now has {}): {refresh}, \
                         or add a source that still has it (snapshot.debian.org)",
                        r.name, r.version
                    ),
                });
            }
            r.version = v.clone();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(versions: &[(&str, &str)]) -> Resolution {
        let r =
            |(n, v): &(&str, &str)| Resolved { apt_name: n.to_string(), name: n.to_string(), version: v.to_string() };
        Resolution { packages: versions[1..].iter().map(r).collect(), kernel: r(&versions[0]) }
    }

    #[test]
    fn a_lock_round_trips_and_pins_versions() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE);
        let mut lock = Lock::new();
        record(&mut lock, Arch::X86_64, &res(&[("linux-image-amd64", "6.1.1"), ("busybox-static", "1:1.35.0-4+b1")]));
        write(&path, &lock).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back, lock);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("# Exact package versions"));
        // apt moved on; the locked versions are still to be had.
        let mut now = res(&[("linux-image-amd64", "6.1.2"), ("busybox-static", "1:1.35.0-4+b1")]);
        let mut asked = Vec::new();
        pin(&back, &path, Arch::X86_64, &mut now, &mut |r, v| {
            asked.push(format!("{}={v}", r.name));
            Ok(true)
        })
        .unwrap();
        assert_eq!(now.kernel.version, "6.1.1");
        assert_eq!(asked, ["linux-image-amd64=6.1.1"], "only a version that differs is looked up");
    }

    #[test]
    fn an_unlisted_package_or_a_vanished_version_names_it_and_the_refresh() {
        let mut lock = Lock::new();
        record(&mut lock, Arch::Aarch64, &res(&[("linux-image-arm64", "6.1.1"), ("a", "1")]));
        let path = Path::new("images/images.lock");
        let mut added = res(&[("linux-image-arm64", "6.1.1"), ("a", "1"), ("b", "2")]);
        let e = pin(&lock, path, Arch::Aarch64, &mut added, &mut |_, _| Ok(true)).unwrap_err().to_string();
        assert!(e.contains("has no version of b for aarch64") && e.contains("cargo xtask images --lock"), "{e}");
        let mut moved = res(&[("linux-image-arm64", "6.1.9"), ("a", "1")]);
        let e = pin(&lock, path, Arch::Aarch64, &mut moved, &mut |_, _| Ok(false)).unwrap_err().to_string();
        assert!(e.contains("linux-image-arm64 6.1.1 (aarch64) is locked but no longer") && e.contains("6.1.9"), "{e}");
        let e = pin(&lock, path, Arch::X86_64, &mut moved, &mut |_, _| Ok(true)).unwrap_err().to_string();
        assert!(e.contains("for x86_64"), "an arch the lock lacks: {e}");
    }
}
