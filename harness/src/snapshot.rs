//! Timeline snapshots: insta `.snap` files beside the scenario
//! (`scenarios/snapshots/<scenario>@<arch>.snap`), so `cargo insta review`
//! works for runs from tests and from the CLI alike. The CLI compares through
//! insta itself (no second YAML writer to drift from insta's). Never deletes
//! a snapshot.

use crate::runner::SnapshotMode;
use crate::timeline::Event;
use std::path::{Path, PathBuf};

/// The snapshot folder for a scenario file (absolute: insta resolves a
/// relative one against the source file of the assertion).
pub fn dir_for(scenario: &Path) -> PathBuf {
    let scenario = std::path::absolute(scenario).unwrap_or_else(|_| scenario.to_path_buf());
    scenario.parent().unwrap_or(Path::new("/")).join("snapshots")
}

fn settings(dir: &Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(dir);
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

/// Assert the normalised timeline against its snapshot; panics on a
/// difference, as every insta assertion does (use from tests).
pub fn assert(dir: &Path, name: &str, events: &[Event]) {
    if std::env::var_os("INSTA_WORKSPACE_ROOT").is_none() {
        std::env::set_var("INSTA_WORKSPACE_ROOT", crate::rundir::workspace_root());
    }
    settings(dir).bind(|| insta::assert_yaml_snapshot!(name, events));
}

/// The CLI's check: `Ok` when the snapshot matches (or was written by
/// `Update`); `Err` with insta's report otherwise. A missing snapshot is
/// written as `.snap.new` for review and reported as an error.
pub fn check(dir: &Path, name: &str, events: &[Event], mode: SnapshotMode) -> Result<(), String> {
    match mode {
        SnapshotMode::Skip => return Ok(()),
        SnapshotMode::Update => std::env::set_var("INSTA_UPDATE", "always"),
        SnapshotMode::Check => {
            if std::env::var_os("INSTA_UPDATE").is_none() {
                std::env::set_var("INSTA_UPDATE", "new");
            }
        }
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(|| assert(dir, name, events));
    std::panic::set_hook(prev);
    res.map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "the timeline differs from {}/{name}.snap ({}); review with `cargo insta review` or rerun with --update-snapshots",
            dir.display(),
            msg.lines().next().unwrap_or("snapshot assertion failed")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI's check passes on an identical timeline and fails on a
    /// changed one, naming the snapshot, and leaves the stored file alone.
    /// (insta reads `INSTA_UPDATE` once per process, so only `Check` runs here.)
    #[test]
    fn changed_timeline_fails_the_check() {
        std::env::set_var("INSTA_UPDATE", "no");
        let dir = tempfile::tempdir().unwrap();
        let stored = "---\nsource: harness/src/snapshot.rs\n---\n- event: power_on\n- event: uboot_banner\n";
        let snap = dir.path().join("t@x86_64.snap");
        std::fs::write(&snap, stored).unwrap();
        check(dir.path(), "t@x86_64", &[Event::PowerOn, Event::UbootBanner], SnapshotMode::Check).unwrap();
        let err =
            check(dir.path(), "t@x86_64", &[Event::PowerOn, Event::KernelPanic], SnapshotMode::Check).unwrap_err();
        assert!(err.contains("t@x86_64.snap"), "{err}");
        assert_eq!(std::fs::read_to_string(&snap).unwrap(), stored);
    }

    #[test]
    fn snapshot_dir_is_absolute_beside_the_scenario() {
        let d = dir_for(Path::new("scenarios/boot-smoke.toml"));
        assert!(d.is_absolute());
        assert!(d.ends_with("scenarios/snapshots"));
    }
}
