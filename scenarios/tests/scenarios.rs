//! Boots every shipped scenario on every board with real QEMU, U-Boot and
//! Linux (rstest over scenario files × boards) and asserts the normalised
//! timeline with insta (`snapshots/<scenario>@<arch>.snap`).

use harness::runner::{self, RunOptions, SnapshotMode};
use harness::scenario::Scenario;
use rstest::rstest;
use std::path::PathBuf;

#[rstest]
fn scenario(
    #[files("*.toml")]
    #[exclude("Cargo.toml")]
    path: PathBuf,
    #[values("qemu-x86_64", "qemu-aarch64", "qemu-x86_64-pxe", "qemu-aarch64-pxe")] board: &str,
) {
    // QEMU is spawned from this thread (PR_SET_PDEATHSIG follows it).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let opts = RunOptions { snapshots: SnapshotMode::Skip, ..RunOptions::default() };
    // A file with a matrix is several scenarios: each runs and is snapshotted.
    for scenario in Scenario::load_variants(&path).unwrap_or_else(|e| panic!("{e}")) {
        let boards = scenario.resolve_boards().unwrap_or_else(|e| panic!("{e}"));
        let Some(board) = boards.into_iter().find(|b| b.name == board) else {
            eprintln!("{} does not run on {board}", scenario.name());
            continue;
        };
        let out = rt.block_on(runner::run(&scenario, &board, &opts));
        if let Err(e) = &out.result {
            panic!("{} on {} failed:\n{e}", out.scenario, out.board);
        }
        harness::snapshot::assert(&harness::snapshot::dir_for(&path), &out.snapshot_name(), &out.normalised);
    }
}
