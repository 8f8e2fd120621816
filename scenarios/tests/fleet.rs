//! Runs every fleet file (`fleet/*.toml`: several nodes, mixed arches, one
//! lab network with real dnsmasq) with real QEMU, firmware and Linux, and
//! asserts its snapshot (each node's console events and the provisioning
//! service's final state table) with insta. One test per file,
//! `fleet::<file stem>` (a libtest-mimic harness, like `scenarios.rs`). A
//! lab network needs root (a network namespace, a bridge, taps): without it
//! the test says so and passes nothing off as run: it fails, unless
//! DEVLAB_SKIP_FLEET=1 says the machine cannot.

use harness::fleet::Fleet;
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};

fn main() {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, trials()).exit();
}

/// `fleet/*.toml`, sorted.
fn trials() -> Vec<Trial> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Trial::test(format!("fleet::{stem}"), move || fleet_file(&path))
        })
        .collect()
}

fn fleet_file(path: &Path) -> Result<(), Failed> {
    if let Err(e) = harness::labnet::LabNet::check_privileges() {
        if std::env::var_os("DEVLAB_SKIP_FLEET").is_some() {
            eprintln!("skipped (DEVLAB_SKIP_FLEET): {e}");
            return Ok(());
        }
        panic!("{e}\n(set DEVLAB_SKIP_FLEET=1 on machines without these privileges)");
    }
    let f = Fleet::load(path).unwrap_or_else(|e| panic!("{e}"));
    // QEMU is spawned from this thread (PR_SET_PDEATHSIG follows it).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = rt.block_on(harness::fleet::run(&f, &harness::rundir::runs_root()));
    if let Err(e) = &out.result {
        panic!("{} failed:\n{e}", f.header.name);
    }
    harness::snapshot::assert(&harness::snapshot::dir_for(path), &f.snapshot_name(), &out.normalised);
    Ok(())
}
