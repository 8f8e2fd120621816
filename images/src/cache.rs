//! The content-addressed image cache: where it lives, the input hash
//! (recipe + fixtures), the entry key, the `.current` pointer and clean-up of
//! interrupted builds. Must not run processes (locate() relies on that).
use crate::recipe::Recipe;
use crate::ImageError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped whenever the builder's output format changes.
pub const FORMAT_VERSION: u32 = 5;

/// `$DEVLAB_CACHE`, else `$XDG_CACHE_HOME/devlab`, else `~/.cache/devlab`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("DEVLAB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("devlab");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/devlab")
}

/// All files below `dir` (or `dir` itself if it is a file), sorted, with
/// their path relative to `dir`. Directories are listed too.
pub fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, path)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(ImageError::io(&path))?;
        if !rel.is_empty() || !meta.is_dir() {
            out.push((rel.clone(), path.clone()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&path).map_err(ImageError::io(&path))? {
                let e = e.map_err(ImageError::io(&path))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                stack.push((r, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hash of everything the user edits: builder format, recipe bytes and every
/// fixture file (path, mode, bytes). Cheap: no processes.
pub fn inputs_hash(recipe: &Recipe, recipe_bytes: &[u8]) -> Result<String, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Sha256::new();
    h.update(format!("devlab-images format {FORMAT_VERSION}\n{}\n", crate::rewrap::IDENTITY));
    h.update((recipe_bytes.len() as u64).to_le_bytes());
    h.update(recipe_bytes);
    let (_, included) = crate::read_boot_script(&recipe.fixtures.boot_script)?;
    let mut roots = vec![
        ("boot_script", &recipe.fixtures.boot_script),
        ("init", &recipe.fixtures.init),
        ("rootfs_overlay", &recipe.fixtures.rootfs_overlay),
    ];
    roots.extend(included.iter().map(|p| ("boot_script_include", p)));
    for (what, root) in roots {
        for (rel, path) in walk(root)? {
            let meta = std::fs::symlink_metadata(&path).map_err(ImageError::io(&path))?;
            h.update(format!("{what}|{rel}|{:o}\n", meta.permissions().mode()));
            if meta.is_file() {
                let data = std::fs::read(&path).map_err(ImageError::io(&path))?;
                h.update((data.len() as u64).to_le_bytes());
                h.update(&data);
            } else if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&path).map_err(ImageError::io(&path))?;
                h.update(t.to_string_lossy().as_bytes());
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// What a pointer is keyed by: the recipe's inputs and, with a package
/// lock, the arch's locked versions, so a changed lock makes
/// [`crate::locate`] say stale. (The entry key holds the versions a build
/// pinned, so a lock change that leaves an image's packages alone finds
/// that image's entry again.)
pub fn pointer_inputs(inputs: &str, locked: Option<&std::collections::BTreeMap<String, String>>) -> String {
    match locked {
        None => inputs.to_string(),
        Some(versions) => {
            let mut h = Sha256::new();
            h.update(inputs.as_bytes());
            for (name, version) in versions {
                h.update(format!("\n{name}={version}"));
            }
            hex::encode(h.finalize())
        }
    }
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The entry key: inputs hash, resolved package list and arch.
pub fn entry_key(inputs: &str, lock: &[String], arch: crate::Arch) -> String {
    let mut h = Sha256::new();
    h.update(inputs.as_bytes());
    h.update(b"\n");
    for l in lock {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.update(arch.debian().as_bytes());
    hex::encode(h.finalize())
}

/// The pointer file naming the entry last built for a recipe and arch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pointer {
    pub entry: PathBuf,
    pub inputs: String,
}

/// The pointer for a recipe, arch and inputs hash: one per state of the
/// recipe and its fixtures, so checkouts that differ (two worktrees, a
/// branch switched while CI runs) each find their own build in one cache.
pub fn pointer_path(root: &Path, recipe: &str, arch: crate::Arch, inputs: &str) -> PathBuf {
    root.join("images").join(format!("{recipe}-{arch}.{}.current", &inputs[..16.min(inputs.len())]))
}

/// Every pointer of image `name` (`<recipe>-<arch>`) in `images`, newest first.
pub fn pointers_of(images: &Path, name: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(images) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.starts_with(&prefix) && f.ends_with(".current")
        })
        .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// How many states of a recipe (checkouts) one cache keeps built at once.
pub const KEEP_POINTERS: usize = 3;

/// `tmp-<pid>-<n>`: a temp name's suffix unique per call, since threads of
/// one process (parallel builds and runs) share the pid. [`remove_stale`]
/// reads the pid back.
pub fn tmp_suffix() -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("tmp-{}-{call}", std::process::id())
}

/// An exclusive `flock` on `path` (created if missing), held until the
/// guard drops: serialises writers of one shared store (the apt cache, an
/// OSTree repo) across threads and processes.
pub fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ImageError::io(path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| ImageError::io(path)(std::io::Error::from(e)))
}

/// Writes `bytes` to `path` atomically (temp file in the same folder + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(tmp_suffix());
    std::fs::write(&tmp, bytes).map_err(ImageError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ImageError::io(path))
}

/// Removes `<prefix>*.tmp-<pid>[-<n>]` folders whose builder process is gone.
pub fn remove_stale(images: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(images) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let Some((_, tail)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        let pid = tail.split('-').next().unwrap_or(tail);
        let alive =
            pid.parse::<u32>().is_ok_and(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Keeps the entries the newest [`KEEP_POINTERS`] pointers of image `name`
/// name (and `keep`), and removes older pointers and every other finished
/// entry `<name>-<key16>`: a cache serves a few checkouts at once without
/// growing by a disk image per change. (A checkout whose inputs match a
/// removed entry again rebuilds it in seconds from the download cache.)
pub fn prune_superseded(images: &Path, name: &str, keep: &Path) {
    // The pointer format before one per inputs hash.
    let _ = std::fs::remove_file(images.join(format!("{name}.current")));
    let pointers = pointers_of(images, name);
    let mut live = vec![keep.to_path_buf()];
    for (i, p) in pointers.iter().enumerate() {
        if i >= KEEP_POINTERS {
            let _ = std::fs::remove_file(p);
            continue;
        }
        if let Some(ptr) = std::fs::read(p).ok().and_then(|t| serde_json::from_slice::<Pointer>(&t).ok()) {
            live.push(ptr.entry);
        }
    }
    let Ok(rd) = std::fs::read_dir(images) else {
        return;
    };
    let prefix = format!("{name}-");
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(key) = file.strip_prefix(&prefix) else { continue };
        let finished = key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit());
        if finished && !live.contains(&e.path()) && e.path().join("manifest.json").is_file() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn a_lock_keys_the_pointer_by_its_versions() {
        let mut v = std::collections::BTreeMap::new();
        v.insert("busybox-static".to_string(), "1".to_string());
        let with = pointer_inputs("abc", Some(&v));
        assert_eq!(pointer_inputs("abc", None), "abc", "no lock: the inputs as before");
        assert_ne!(with, "abc");
        v.insert("busybox-static".to_string(), "2".to_string());
        assert_ne!(pointer_inputs("abc", Some(&v)), with, "a moved version makes the pointer stale");
    }

    #[test]
    fn only_superseded_finished_entries_of_that_image_go() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str, done: bool| {
            let p = d.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            if done {
                std::fs::write(p.join("manifest.json"), "{}").unwrap();
            }
            p
        };
        let keep = mk("v2-x86_64-0123456789abcdef", true);
        let old = mk("v2-x86_64-fedcba9876543210", true);
        let other = mk("v2-hang-x86_64-fedcba9876543210", true);
        let building = mk("v2-x86_64-aaaaaaaaaaaaaaaa.tmp-1", false);
        prune_superseded(d.path(), "v2-x86_64", &keep);
        assert!(keep.exists() && other.exists() && building.exists());
        assert!(!old.exists());
    }

    #[test]
    fn entries_of_the_newest_pointers_stay_for_other_checkouts() {
        let d = tempfile::tempdir().unwrap();
        let entry = |key: &str| {
            let p = d.path().join(format!("v2-x86_64-{key}"));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("manifest.json"), "{}").unwrap();
            p
        };
        let point = |inputs: &str, e: &Path, age_s: u64| {
            let p = d.path().join(format!("v2-x86_64.{inputs}.current"));
            let json = serde_json::to_vec(&Pointer { entry: e.to_path_buf(), inputs: inputs.into() }).unwrap();
            std::fs::write(&p, json).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
            p
        };
        let (a, b, c, old) = (
            entry("aaaaaaaaaaaaaaaa"),
            entry("bbbbbbbbbbbbbbbb"),
            entry("cccccccccccccccc"),
            entry("dddddddddddddddd"),
        );
        let (pa, pb, pc, pold) = (
            point("1111111111111111", &a, 0),
            point("2222222222222222", &b, 10),
            point("3333333333333333", &c, 20),
            point("4444444444444444", &old, 30),
        );
        let legacy = d.path().join("v2-x86_64.current");
        std::fs::write(&legacy, "{}").unwrap();
        prune_superseded(d.path(), "v2-x86_64", &a);
        assert!(a.exists() && b.exists() && c.exists(), "three checkouts keep their builds");
        assert!(pa.exists() && pb.exists() && pc.exists());
        assert!(!old.exists() && !pold.exists() && !legacy.exists(), "the oldest state and the old pointer go");
        assert_eq!(pointers_of(d.path(), "v2-x86_64"), vec![pa, pb, pc]);
    }
}
