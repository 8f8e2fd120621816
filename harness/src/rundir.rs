//! Run directories: one folder per scenario × board run holding everything
//! the run produced (serial log, QMP log, QEMU command line, SSH transcript,
//! timeline, failure summary). A run directory is never deleted by devlab.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The folder holding every run: `$DEVLAB_RUNS`, else `target/devlab-runs`
/// in the workspace.
pub fn runs_root() -> PathBuf {
    std::env::var_os("DEVLAB_RUNS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("devlab-runs"))
}

/// The workspace this harness was built from (where `scenarios/`,
/// `images/` and `fixtures/` live), or `$DEVLAB_ROOT`.
pub fn workspace_root() -> PathBuf {
    std::env::var_os("DEVLAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("harness/ has a parent").to_path_buf())
}

/// Create a fresh run directory named after the scenario and board.
pub fn create(root: &Path, scenario: &str, board: &str) -> Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "");
    let name = format!("{scenario}-{board}-{stamp}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::infra(format!("cannot create run directory {}: {e}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_are_unique_and_named() {
        let root = tempfile::tempdir().unwrap();
        let a = create(root.path(), "boot-smoke", "qemu-x86_64").unwrap();
        let b = create(root.path(), "boot-smoke", "qemu-x86_64").unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("boot-smoke-qemu-x86_64-"));
        assert!(a.is_dir() && b.is_dir());
    }

    #[test]
    fn deep_roots_are_fine() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("x".repeat(120)).join("y".repeat(60));
        assert!(create(&deep, "a-long-scenario-name", "qemu-aarch64").unwrap().is_dir());
    }
}
