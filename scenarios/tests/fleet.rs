//! Runs every fleet file (`fleet/*.toml`: several nodes, mixed arches, one
//! lab network with real dnsmasq) with real QEMU, firmware and Linux, and
//! asserts its snapshot (each node's console events and the provisioning
//! service's final state table) with insta. A lab network needs root (a
//! network namespace, a bridge, taps): without it the test says so and
//! passes nothing off as run: it fails, unless DEVLAB_SKIP_FLEET=1 says
//! the machine cannot.

use harness::fleet::Fleet;
use rstest::rstest;
use std::path::PathBuf;

#[rstest]
fn fleet_file(#[files("fleet/*.toml")] path: PathBuf) {
    if let Err(e) = harness::labnet::LabNet::check_privileges() {
        if std::env::var_os("DEVLAB_SKIP_FLEET").is_some() {
            eprintln!("skipped (DEVLAB_SKIP_FLEET): {e}");
            return;
        }
        panic!("{e}\n(set DEVLAB_SKIP_FLEET=1 on machines without these privileges)");
    }
    let f = Fleet::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = rt.block_on(harness::fleet::run(&f, &harness::rundir::runs_root()));
    if let Err(e) = &out.result {
        panic!("{} failed:\n{e}", f.header.name);
    }
    harness::snapshot::assert(&harness::snapshot::dir_for(&path), &f.snapshot_name(), &out.normalised);
}
