//! The restructure guard: fingerprints of what the harness reads and
//! produces, taken without booting anything, so code can move between
//! modules while these snapshots prove that nothing observable changed:
//!
//! - every shipped scenario file (each matrix variant): its
//!   parsed steps, with their lines;
//! - every shipped board's QEMU arguments (plain, with injected disk
//!   errors, from a checkpoint, network-booted over slirp and over a lab
//!   tap), its KVM probe arguments and firmware marker;
//! - the JSON of every timeline event kind, and the event each kind of
//!   console line becomes.
//!
//! A change to one of these snapshots is a change of behaviour: it belongs
//! in its own commit whose message says why.

use harness::board::{Accel, DiskError, Errno, IoType, QemuPaths};
use harness::timeline::{console_marker, qmp_event, Event};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    harness::rundir::workspace_root()
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("harness/tests/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && p.file_name().is_some_and(|n| n != "snapshots" && n != "suites" && n != "files") {
            toml_files(&p, out);
        } else if harness::scenario::is_scenario_file(&p) {
            out.push(p);
        }
    }
}

fn shipped_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    toml_files(&root().join("scenarios"), &mut files);
    assert!(files.len() >= 20, "only {} scenario files found", files.len());
    files
}

/// Each shipped file's parsed steps, one snapshot per file.
#[test]
fn scenario_steps() {
    for path in shipped_files() {
        let rel = path.strip_prefix(root().join("scenarios")).unwrap().display().to_string();
        let mut text = String::new();
        {
            for s in harness::scenario::Scenario::load_variants(&path).unwrap_or_else(|e| panic!("{e}")) {
                let h = &s.header;
                writeln!(
                    text,
                    "scenario {} boards {:?} image {} disk {:?} timeout {:?} needs {:?} bad {:?} variant {:?}",
                    h.name,
                    h.boards.iter().map(|b| b.get_ref()).collect::<Vec<_>>(),
                    h.image.get_ref(),
                    h.disk,
                    h.timeout,
                    h.needs,
                    h.bad_patterns,
                    s.variant
                )
                .unwrap();
                if let Some(p) = &s.provision {
                    writeln!(text, "provision {p:?}").unwrap();
                }
                if s.header.network != harness::scenario::Network::User {
                    writeln!(text, "network {:?}", s.header.network).unwrap();
                }
                for m in &s.machines {
                    let board = m.board.as_ref().map(|b| b.get_ref());
                    let image = m.image.as_ref().map(|i| i.get_ref());
                    writeln!(text, "machine {} board {board:?} image {image:?}", m.name.get_ref()).unwrap();
                    let own = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|x| x.get_ref().clone());
                    if m.mac.is_some() || m.uuid.is_some() || m.serial.is_some() || !m.disk_errors.is_empty() {
                        let offsets: Vec<u64> = m.disk_errors.iter().map(|d| d.offset_mib).collect();
                        writeln!(
                            text,
                            "  mac {:?} uuid {:?} serial {:?} disk_errors_mib {offsets:?}",
                            own(&m.mac),
                            own(&m.uuid),
                            own(&m.serial)
                        )
                        .unwrap();
                    }
                }
                for p in &s.steps {
                    writeln!(text, "line {} {}: {:?}", p.line, p.step.action(), p.step).unwrap();
                    if !p.on.is_empty() {
                        writeln!(text, "  on {:?}", p.on).unwrap();
                    }
                    writeln!(text, "  canonical {}", p.canonical).unwrap();
                }
            }
        }
        let name = format!("steps-{}", rel.trim_end_matches(".toml").replace('/', "-"));
        settings().bind(|| insta::assert_snapshot!(name, text));
    }
}

/// Every board's QEMU command line in the shapes a run uses.
#[test]
fn board_qemu_args() {
    let errors = [
        DiskError { offset: 1 << 20, iotype: IoType::Write, errno: Errno::EIO },
        DiskError { offset: 64 << 20, iotype: IoType::Read, errno: Errno::ENOSPC },
    ];
    let base = QemuPaths {
        console_sock: Path::new("/r/console.sock"),
        qmp_sock: Path::new("/r/qmp.sock"),
        monitor_sock: Path::new("/r/monitor.sock"),
        disk: Path::new("/r/disk.qcow2"),
        disk_errors: &[],
        loadvm: None,
        env_flash: None,
        tftp: None,
        detect_zeroes: false,
        tap: None,
        disk_armable: false,
        link: None,
    };
    let link = harness::product::LinkEnd {
        local: "/r/link/main.sock".into(),
        remote: "/r/link/sub.sock".into(),
        mac: harness::product::MAIN_MAC,
        role: harness::product::Role::Main,
    };
    let mut names = harness::board::list_names(&harness::board::boards_dir());
    names.sort();
    assert!(names.len() >= 4, "boards: {names:?}");
    for name in names {
        let b = harness::board::find(&name).unwrap();
        let mut text = String::new();
        writeln!(text, "firmware_marker {:?}", b.firmware_marker()).unwrap();
        writeln!(text, "probe_args {:?}", b.probe_args()).unwrap();
        writeln!(text, "display_args {:?}", b.display_args()).unwrap();
        let shapes: Vec<(&str, Accel, QemuPaths<'_>)> = vec![
            ("plain tcg", Accel::Tcg, QemuPaths { ..base }),
            ("plain kvm", Accel::Kvm, QemuPaths { ..base }),
            ("disk errors", Accel::Tcg, QemuPaths { disk_errors: &errors, ..base }),
            ("checkpoint", Accel::Tcg, QemuPaths { loadvm: Some("devlab"), ..base }),
            (
                "slirp tftp, blank disk",
                Accel::Tcg,
                QemuPaths { tftp: Some(Path::new("/r/tftp")), detect_zeroes: true, ..base },
            ),
            ("lab tap", Accel::Tcg, QemuPaths { tap: Some("dl-tap0"), detect_zeroes: true, ..base }),
            ("armable disk", Accel::Tcg, QemuPaths { disk_armable: true, ..base }),
            (
                "armable disk, errors from power-on, blank disk",
                Accel::Tcg,
                QemuPaths { disk_armable: true, disk_errors: &errors, detect_zeroes: true, ..base },
            ),
            ("a product's private link", Accel::Tcg, QemuPaths { link: Some(&link), ..base }),
        ];
        for (shape, accel, paths) in shapes {
            writeln!(text, "{shape}:").unwrap();
            for a in b.qemu_args(accel, &paths) {
                writeln!(text, "  {a}").unwrap();
            }
        }
        settings().bind(|| insta::assert_snapshot!(format!("board-{name}"), text));
    }
}

/// One value of every event kind. The match has no wildcard: a new kind
/// fails to compile here until it has a sample (and a line in the snapshot).
fn samples() -> Vec<Event> {
    let vars: BTreeMap<String, String> = [("BOOT_ORDER".to_string(), "A B".to_string())].into();
    let all = vec![
        Event::PowerOn,
        Event::UbootBanner,
        Event::AutobootInterrupted,
        Event::UbootCommand { command: "run bootcmd".into() },
        Event::BootScript,
        Event::EnvCopy { copy: "a".into() },
        Event::SlotChosen { slot: "B".into(), tries_left: 2 },
        Event::NoSlotLeft,
        Event::KernelStarted,
        Event::Initramfs,
        Event::RootMounted { slot: "A".into() },
        Event::DropbearStarted,
        Event::KernelPanic,
        Event::Expected { label: "ready".into() },
        Event::SshUp,
        Event::Command { command: "true".into(), status: 0, stdout: None },
        Event::Command { command: "cat x".into(), status: 1, stdout: Some("y".into()) },
        Event::SlotBooted { slot: "A".into() },
        Event::Env { source: "disk".into(), vars },
        Event::File { source: "guest".into(), path: "/data/x".into() },
        Event::Qmp { name: "RESET".into(), detail: Some("guest-reset".into()) },
        Event::Qmp { name: "STOP".into(), detail: None },
        Event::PoweredOff,
        Event::PowerCut,
        Event::Reset,
        Event::Fault { kind: "corrupt_disk".into(), target: "uboot-env-a".into() },
        Event::WatchdogArmed,
        Event::FaultTriggered { kind: "panic".into() },
        Event::Update { stage: "writing slot B".into() },
        Event::Health { result: "ok".into() },
        Event::ReleaseServed { version: "2".into(), image: "v2".into() },
        Event::UpdateResult { version: "2".into(), outcome: "installed".into() },
        Event::VersionRunning { version: "2".into() },
        Event::Checkpoint { name: "booted".into() },
        Event::Callback { name: "done".into() },
        Event::Transfer { direction: "upload".into(), path: "/tmp/x".into(), bytes: 3 },
        Event::Service { name: "dropbear".into(), running: true },
        Event::BundleServed { name: "v2".into(), image: "rauc-v2".into(), signer: "release".into() },
        Event::RaucInstall { bundle: "v2".into(), outcome: "installed".into() },
        Event::RaucStatus { booted: "A".into(), primary: "B".into(), boot_status: "A=good B=good".into() },
        Event::Link { up: false },
        Event::BootDecision { detail: "bootcount 1".into() },
        Event::OstreeServed { image: "ostree-v2".into(), delta: false },
        Event::OstreeServed { image: "ostree-v3".into(), delta: true },
        Event::OstreeStatus { deployments: vec!["booted abc version 1".into()] },
        Event::Provision { detail: "node INSTALLED".into() },
        Event::ProvisionTable { rows: vec!["uuid state".into()] },
        Event::Node { name: "x86-1".into(), board: "qemu-x86_64-pxe".into() },
        Event::NetBoot { detail: "register".into() },
        Event::Agent { stage: "registered".into() },
        Event::Firmware { name: "SeaBIOS".into() },
        Event::NetConfigFailed { firmware: "iPXE".into() },
        Event::Refuse { name: "second-try".into(), active: true },
        Event::Failed { step: "step 3 (expect)".into() },
        Event::Mark { name: "slot_good".into(), fields: [("slot".to_string(), "A".to_string())].into() },
        Event::Mark { name: "login_prompt".into(), fields: BTreeMap::new() },
        Event::Fact { name: "slot".into(), value: "B".into() },
        Event::LoggedIn { via: "serial".into() },
        Event::ArtifactServed { name: "good".into(), file: "good.raucb".into(), ostree_ref: None },
        Event::Fleet { what: "reported 2 ok".into() },
        Event::FleetAgent { channel: "stable".into() },
        Event::Rollout { channel: "stable".into(), detail: "advance: wave 2 open".into() },
        Event::FleetAsserted { detail: "at most 2 rebooting at once".into() },
        Event::Product { what: "the sub runs 2: product 2 ok".into() },
        Event::ProductAgent { role: "main".into() },
        Event::ProductPublished { product: "robot".into(), version: "2".into(), main: "2".into(), sub: "2".into() },
    ];
    for e in &all {
        match e {
            Event::PowerOn
            | Event::UbootBanner
            | Event::AutobootInterrupted
            | Event::UbootCommand { .. }
            | Event::BootScript
            | Event::EnvCopy { .. }
            | Event::SlotChosen { .. }
            | Event::NoSlotLeft
            | Event::KernelStarted
            | Event::Initramfs
            | Event::RootMounted { .. }
            | Event::DropbearStarted
            | Event::KernelPanic
            | Event::Expected { .. }
            | Event::SshUp
            | Event::Command { .. }
            | Event::SlotBooted { .. }
            | Event::Env { .. }
            | Event::File { .. }
            | Event::Qmp { .. }
            | Event::PoweredOff
            | Event::PowerCut
            | Event::Reset
            | Event::Fault { .. }
            | Event::WatchdogArmed
            | Event::FaultTriggered { .. }
            | Event::Update { .. }
            | Event::Health { .. }
            | Event::ReleaseServed { .. }
            | Event::UpdateResult { .. }
            | Event::VersionRunning { .. }
            | Event::Checkpoint { .. }
            | Event::Callback { .. }
            | Event::Transfer { .. }
            | Event::Service { .. }
            | Event::BundleServed { .. }
            | Event::RaucInstall { .. }
            | Event::RaucStatus { .. }
            | Event::Link { .. }
            | Event::BootDecision { .. }
            | Event::OstreeServed { .. }
            | Event::OstreeStatus { .. }
            | Event::Provision { .. }
            | Event::ProvisionTable { .. }
            | Event::Node { .. }
            | Event::NetBoot { .. }
            | Event::Agent { .. }
            | Event::Firmware { .. }
            | Event::NetConfigFailed { .. }
            | Event::Refuse { .. }
            | Event::Mark { .. }
            | Event::Fact { .. }
            | Event::LoggedIn { .. }
            | Event::ArtifactServed { .. }
            | Event::Fleet { .. }
            | Event::FleetAgent { .. }
            | Event::Rollout { .. }
            | Event::FleetAsserted { .. }
            | Event::Product { .. }
            | Event::ProductAgent { .. }
            | Event::ProductPublished { .. }
            | Event::Failed { .. } => {}
        }
    }
    all
}

/// The JSON of every event kind (what `timeline.json` holds) and its YAML
/// (what snapshots hold).
#[test]
fn event_json() {
    let mut text = String::new();
    for e in samples() {
        writeln!(text, "{}", serde_json::to_string(&e).unwrap()).unwrap();
    }
    settings().bind(|| insta::assert_snapshot!("events-json", text));
    settings().bind(|| insta::assert_yaml_snapshot!("events-yaml", samples()));
}

/// Console lines of every kind the timeline knows (U-Boot, the boot
/// scripts, the initramfs, rcS, the update agent, the health check, the
/// network-boot firmware, the management OS), and the events they become.
#[test]
fn console_markers() {
    let lines = [
        "U-Boot 2023.01+dfsg-2+deb12u1 (Apr 18 2024 - 22:00:42 +0000)",
        "Booting U-Boot 2023.01",
        "devlab-boot: start",
        "devlab-boot: env a",
        "devlab-boot: env b (a corrupt)",
        "devlab-boot: slot A tries-left 3",
        "devlab-boot: slot B tries-left 0",
        "devlab-boot: no slot left",
        "Starting kernel ...",
        "devlab-init: initramfs",
        "devlab-init: root slot=B dev=/dev/vda5",
        "devlab-init: root ostree deployment /ostree/boot.1/devlab/abc/0",
        "devlab-boot: ostree deployment 0",
        "devlab-boot: no rollback deployment",
        "devlab-boot: rollback=1: altbootcmd",
        "devlab-boot: bootcount 2 bootlimit 2",
        "devlab-boot: upgrade_available bootcount 1 bootlimit 2",
        "devlab-rc: dropbear",
        "devlab-rc: ready",
        "Kernel panic - not syncing: Attempted to kill init!",
        "devlab-init: watchdog armed",
        "devlab-init: fault panic",
        "devlab-rc: fault hang",
        "devlab-update: downloading 2",
        "devlab-update: writing slot B",
        "devlab-update: slot B written  ",
        "devlab-health: ok",
        "devlab-health: committed slot A",
        "devlab-health: kept rollback version 2",
        "devlab-product: the sub came back on 1: rolling the main back to 1",
        "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
        "iPXE initialising devices...ok",
        "SYSLINUX 6.04 EDD 20191223 Copyright (C) 1994-2015 H. Peter Anvin et al",
        "devlab: node 6b1e4c2a-0d3f-4a51-9f0e-000000000101: register",
        "1:\tdevlab: node 6b1e4c2a-0d3f-4a51-9f0e-000000000201: install ab",
        "1:\tdevlab: unknown node: register",
        "devlab: U-Boot network boot: pxe get, pxe boot",
        "Configuring (net0 52:54:00:de:20:01).................. No configuration methods ",
        "Retry time exceeded; starting again",
        "devlab-mgmt: agent mode=register",
        "devlab-mgmt: registered",
        "devlab-mgmt: powering off",
        "devlab-mgmt: DEPLOYING",
        "devlab-mgmt: image checksum ok",
        "devlab-mgmt: image written",
        "devlab-mgmt: INSTALLED",
        "devlab-mgmt: install failed: dd: error writing '/dev/vda': Input/output error",
        "devlab-mgmt: FAILED: image checksum mismatch",
        "devlab-mgmt: POST /api/register failed (attempt 1 of 5)",
        "devlab-mgmt: GET /profile/x failed (attempt 2 of 5)",
        "devlab-mgmt: refused by the service (404)",
        "append: console=ttyAMA0 quiet devlab.mode=register",
        "random noise",
    ];
    let mut text = String::new();
    for l in lines {
        let e = console_marker(l).map(|e| serde_json::to_string(&e).unwrap());
        writeln!(text, "{l:?} -> {}", e.as_deref().unwrap_or("none")).unwrap();
    }
    let qmp = [
        ("RESET", serde_json::json!({"guest": true, "reason": "guest-reset"})),
        ("SHUTDOWN", serde_json::json!({"guest": true, "reason": "guest-shutdown"})),
        ("WATCHDOG", serde_json::json!({"action": "reset"})),
        ("GUEST_PANICKED", serde_json::json!({"action": "pause"})),
        (
            "BLOCK_IO_ERROR",
            serde_json::json!({"operation": "write", "reason": "Input/output error", "action": "report"}),
        ),
        ("STOP", serde_json::json!({})),
        ("RESUME", serde_json::json!({})),
        ("POWERDOWN", serde_json::json!({})),
        ("NIC_RX_FILTER_CHANGED", serde_json::json!({"name": "net0"})),
        ("SOMETHING_NEW", serde_json::json!({})),
    ];
    for (name, data) in qmp {
        let e = qmp_event(name, &data).map(|e| serde_json::to_string(&e).unwrap());
        writeln!(text, "qmp {name} -> {}", e.as_deref().unwrap_or("none")).unwrap();
    }
    settings().bind(|| insta::assert_snapshot!("console-markers", text));
}
