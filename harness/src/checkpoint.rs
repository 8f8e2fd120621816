//! Checkpoints: a machine saved at a `checkpoint` step (QEMU `savevm` into
//! the run's qcow2 overlay, which is then copied to the cache) so a later
//! run of the same steps starts from it (`-loadvm`) instead of repeating
//! them; the steps' timeline is stored with it and replayed, so a restored
//! run's timeline equals a cold one's.
//!
//! Invariants: the key covers everything the saved state depends on (image
//! key, the very disk file the overlay is backed by, board profile text,
//! firmware bytes, QEMU's version, the accelerator and the canonical text
//! of every step up to the checkpoint), so a stale checkpoint can never be
//! used (image builds are not bit-for-bit reproducible: a rebuild under the
//! same image key is another disk, and a saved guest's page cache and
//! overlay over it would meet a file system it never wrote); an entry is built in a temp folder and
//! renamed into place, so a half-written one is never seen.

use crate::timeline::Entry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped when the layout of an entry changes.
const FORMAT: u32 = 1;

/// The internal snapshot's name inside the overlay.
pub const TAG: &str = "devlab";

/// What was true when the checkpoint was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub key: String,
    /// SSH was up (a restored run reconnects).
    pub ssh_up: bool,
    /// Index of the checkpoint step.
    pub step: usize,
}

/// The checkpoint cache folder.
pub fn root() -> PathBuf {
    devlab_images::cache_root().join("checkpoints")
}

/// Everything a key is made of.
pub struct KeyInputs<'a> {
    pub image_key: &'a str,
    /// The disk the run's overlay is backed by, as [`disk_identity`] says.
    pub disk: &'a str,
    pub board_profile: &'a Path,
    pub firmware: &'a Path,
    pub qemu_version: &'a str,
    pub accel: &'a str,
    /// Canonical text of the steps up to and including the checkpoint.
    pub steps: &'a [String],
    /// A machine of several: its identity (MAC, SMBIOS, disk errors),
    /// which its saved RAM has seen; empty for the one machine.
    pub identity: &'a str,
}

/// The cache key (hex sha256).
pub fn key(k: &KeyInputs<'_>) -> std::io::Result<String> {
    let mut h = Sha256::new();
    h.update(format!("devlab checkpoint {FORMAT}\n{}\n{}\n{}\n", k.image_key, k.qemu_version.trim(), k.accel));
    h.update(format!("disk {}\n", k.disk));
    h.update(std::fs::read(k.board_profile)?);
    h.update(Sha256::digest(std::fs::read(k.firmware)?));
    for s in k.steps {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    // Only when set: one-machine keys stay as they were.
    if !k.identity.is_empty() {
        h.update(format!("machine {}\n", k.identity));
    }
    Ok(hex::encode(h.finalize()))
}

/// Which file `disk` is: device, inode, size and modification time (ns).
/// Rebuilding an image, even under the same image key, makes a new file.
pub fn disk_identity(disk: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(disk)?;
    Ok(format!("{}:{}:{}:{}.{:09}", m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The entry folder for `name` and `key`.
pub fn entry(root: &Path, name: &str, key: &str) -> PathBuf {
    root.join(format!("{name}-{}", &key[..16]))
}

/// A complete entry: its disk, timeline and meta.
pub struct Found {
    pub disk: PathBuf,
    pub timeline: Vec<Entry>,
    pub meta: Meta,
}

/// The entry for `key`, if one is complete (its `meta.json`, written last,
/// is present and names the same key).
pub fn find(root: &Path, name: &str, key: &str) -> Option<Found> {
    let dir = entry(root, name, key);
    let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
    if meta.key != key {
        return None;
    }
    let timeline: Vec<Entry> = serde_json::from_slice(&std::fs::read(dir.join("timeline.json")).ok()?).ok()?;
    // Mark it used (pruning goes by last use).
    if let Ok(f) = std::fs::File::options().append(true).open(dir.join("meta.json")) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    Some(Found { disk: dir.join("disk.qcow2"), timeline, meta })
}

/// Entries unused this long are removed when a new one is stored (keys
/// change with every image, firmware or QEMU update, so old ones pile up).
pub const KEEP_UNUSED: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// Remove entries whose last use is older than `max_age`.
pub fn prune(root: &Path, max_age: std::time::Duration) {
    let now = std::time::SystemTime::now();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let dir = e.path();
        let used = std::fs::metadata(dir.join("meta.json")).and_then(|m| m.modified());
        let stale = match used {
            Ok(t) => now.duration_since(t).unwrap_or_default() > max_age,
            // A temp folder of a store that died: stale once old enough.
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > max_age),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Store a checkpoint: the overlay (already holding the internal snapshot,
/// machine stopped), the timeline so far and the meta. Built in a temp
/// folder and renamed; if another run stored the same key meanwhile, theirs
/// is kept.
pub fn store(root: &Path, overlay: &Path, timeline: &[Entry], meta: &Meta) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    prune(root, KEEP_UNUSED);
    let dir = entry(root, &meta.name, &meta.key);
    let tmp = tempfile::Builder::new().prefix(".checkpoint-").tempdir_in(root)?;
    std::fs::copy(overlay, tmp.path().join("disk.qcow2"))?;
    std::fs::write(tmp.path().join("timeline.json"), serde_json::to_vec(timeline).expect("serialises"))?;
    std::fs::write(tmp.path().join("meta.json"), serde_json::to_vec_pretty(meta).expect("serialises"))?;
    if dir.exists() {
        // A stale entry under the same name and key prefix (or a concurrent
        // one): replace only if it is not complete for this key.
        if find(root, &meta.name, &meta.key).is_some() {
            return Ok(dir);
        }
        std::fs::remove_dir_all(&dir)?;
    }
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, &dir) {
        let _ = std::fs::remove_dir_all(&kept);
        // Another store of the same key won the race between the check
        // above and the rename (two machines of one run, same board and
        // image, saving at the same step): theirs is kept.
        if find(root, &meta.name, &meta.key).is_some() {
            return Ok(dir);
        }
        return Err(e);
    }
    Ok(dir)
}

/// `qemu-system-* --version`'s first line (part of the key).
pub fn qemu_version(binary: &Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Event, Origin};

    #[test]
    fn key_changes_with_every_input() {
        let d = tempfile::tempdir().unwrap();
        let (board, fw) = (d.path().join("b.toml"), d.path().join("fw.bin"));
        std::fs::write(&board, "name = \"b\"").unwrap();
        std::fs::write(&fw, b"firmware").unwrap();
        let steps = vec!["{\"action\":\"power_on\"}".to_string()];
        let ki = |image: &str, accel: &str, steps: &[String], identity: &str| {
            key(&KeyInputs {
                image_key: image,
                disk: "1:2:3:4.5",
                board_profile: &board,
                firmware: &fw,
                qemu_version: "QEMU emulator version 10.0.2",
                accel,
                steps,
                identity,
            })
            .unwrap()
        };
        let k = |image: &str, accel: &str, steps: &[String]| ki(image, accel, steps, "");
        let base = k("img", "tcg", &steps);
        // A machine of several: its identity (MAC, SMBIOS) is in its key.
        let a = ki("img", "tcg", &steps, "52:54:00:00:00:01");
        assert_ne!(base, a);
        assert_ne!(a, ki("img", "tcg", &steps, "52:54:00:00:00:02"));
        assert_eq!(base, k("img", "tcg", &steps));
        assert_ne!(base, k("img2", "tcg", &steps));
        assert_ne!(base, k("img", "kvm", &steps));
        assert_ne!(base, k("img", "tcg", &[steps[0].clone(), "{\"action\":\"boot\"}".into()]));
        std::fs::write(&fw, b"firmware v2").unwrap();
        assert_ne!(base, k("img", "tcg", &steps));
    }

    #[test]
    fn a_rebuilt_disk_is_another_disk() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("disk.raw");
        std::fs::write(&disk, b"the same bytes").unwrap();
        let first = disk_identity(&disk).unwrap();
        assert_eq!(first, disk_identity(&disk).unwrap());
        // Rebuilt: a new file in its place, even with the same bytes.
        let tmp = d.path().join("disk.raw.tmp");
        std::fs::write(&tmp, b"the same bytes").unwrap();
        std::fs::rename(&tmp, &disk).unwrap();
        assert_ne!(first, disk_identity(&disk).unwrap());
    }

    #[test]
    fn stored_entries_are_found_whole_and_by_key_only() {
        let d = tempfile::tempdir().unwrap();
        let overlay = d.path().join("disk.qcow2");
        std::fs::write(&overlay, b"qcow2 bytes").unwrap();
        let key = "ab".repeat(32);
        let meta = Meta { name: "booted".into(), key: key.clone(), ssh_up: true, step: 3 };
        let tl = vec![Entry { t: 1.5, origin: Origin::Step, event: Event::SshUp, node: None }];
        let root = d.path().join("cp");
        assert!(find(&root, "booted", &key).is_none());
        let dir = store(&root, &overlay, &tl, &meta).unwrap();
        let found = find(&root, "booted", &key).unwrap();
        assert_eq!(std::fs::read(found.disk).unwrap(), b"qcow2 bytes");
        assert_eq!((found.timeline.len(), found.meta.ssh_up, found.meta.step), (1, true, 3));
        // Same 16-char prefix, other key: not this entry.
        let other = format!("{}{}", &key[..16], "cd".repeat(24));
        assert!(find(&root, "booted", &other).is_none());
        // No temp folders left behind.
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
        assert!(dir.ends_with(format!("booted-{}", &key[..16])));
        // Recently used: kept; unused longer than the limit: removed.
        prune(&root, std::time::Duration::from_secs(3600));
        assert!(find(&root, "booted", &key).is_some());
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options().append(true).open(dir.join("meta.json")).unwrap().set_modified(old).unwrap();
        prune(&root, std::time::Duration::from_secs(3600));
        assert!(!dir.exists());
    }

    #[test]
    fn stores_of_one_key_at_once_all_succeed_and_leave_one_entry() {
        let d = tempfile::tempdir().unwrap();
        let overlay = d.path().join("disk.qcow2");
        std::fs::write(&overlay, vec![7u8; 1 << 20]).unwrap();
        let key = "ef".repeat(32);
        let root = d.path().join("cp");
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            let stores: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let meta = Meta { name: "booted".into(), key: key.clone(), ssh_up: true, step: 3 };
                        barrier.wait();
                        store(&root, &overlay, &[], &meta)
                    })
                })
                .collect();
            for st in stores {
                st.join().unwrap().expect("every store succeeds");
            }
        });
        assert!(find(&root, "booted", &key).is_some());
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "one entry, no temp folders: {left:?}");
    }
}
