//! Failure paths that must never leave a QEMU behind: QEMU refusing to
//! start (exit 69 with its stderr), a step timing out (exit 1 with the run
//! directory and the last console lines), a harness killed with SIGKILL or
//! interrupted with Ctrl-C, and a panic while a machine runs. These boot
//! real QEMU and U-Boot (the built images are needed: `cargo xtask images`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Wait (bounded) for process `pid` to be gone, on a pidfd.
fn gone_within(pid: i32, timeout: Duration) -> bool {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true; // ESRCH: already gone
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) > 0 }
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive for this purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}

/// A scenario that boots U-Boot and then waits for a string that never comes.
fn hanging_scenario(dir: &Path, board: &str, wait: &str) -> PathBuf {
    let p = dir.join("hang.toml");
    std::fs::write(
        &p,
        format!(
            "[scenario]\nname = \"hang\"\nboards = [\"{board}\"]\ntimeout = \"5m\"\n\
             [[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n\
             [[step]]\naction = \"expect\"\npattern = \"this never appears\"\ntimeout = \"{wait}\"\n"
        ),
    )
    .unwrap();
    p
}

/// Wait (bounded backoff) until the single run directory under `runs` has
/// a QEMU pid and the console has shown U-Boot; returns (run dir, pid).
fn wait_for_qemu(runs: &Path) -> (PathBuf, i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(dir) = std::fs::read_dir(runs).unwrap().flatten().map(|e| e.path()).next() {
            let pid = std::fs::read_to_string(dir.join("qemu.pid")).ok().and_then(|s| s.trim().parse().ok());
            let log = std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default();
            if let (Some(pid), true) = (pid, log.contains("U-Boot")) {
                return (dir, pid);
            }
        }
        assert!(Instant::now() < deadline, "QEMU did not come up");
        std::thread::sleep(pause); // bounded backoff
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[test]
fn qemu_failing_to_start_is_an_infrastructure_failure_with_its_stderr() {
    let boards = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    for name in ["qemu-x86_64", "qemu-aarch64"] {
        let text = std::fs::read_to_string(root().join(format!("harness/boards/{name}.toml"))).unwrap();
        std::fs::write(
            boards.path().join(format!("{name}.toml")),
            text.replace("machine = \"virt\"", "machine = \"no-such-machine\""),
        )
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args([
            "run",
            root().join("scenarios/boot-smoke.toml").to_str().unwrap(),
            "--board",
            "qemu-aarch64",
            "--no-snapshots",
        ])
        .env("DEVLAB_BOARDS", boards.path())
        .env("DEVLAB_RUNS", runs.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("exited at start"), "{err}");
    assert!(err.contains("no-such-machine"), "QEMU's own message is shown: {err}");
    assert!(err.contains("run directory:"), "{err}");
}

#[test]
fn a_timed_out_step_fails_with_run_dir_and_console_and_leaves_no_qemu() {
    let d = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let s = hanging_scenario(d.path(), "qemu-aarch64", "3s");
    let out = Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(["run", s.to_str().unwrap(), "--no-snapshots"])
        .env("DEVLAB_RUNS", runs.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("step 3 (expect"), "{err}");
    assert!(err.contains("timed out after 3s waiting for `this never appears`"), "{err}");
    assert!(err.contains("run directory: "), "{err}");
    assert!(err.contains("console lines:"), "{err}");
    let dir = std::fs::read_dir(runs.path()).unwrap().flatten().next().unwrap().path();
    for f in ["serial.log", "qmp.jsonl", "qemu.cmdline", "timeline.json", "run.json", "failure.txt"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let pid: i32 = std::fs::read_to_string(dir.join("qemu.pid")).unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "QEMU {pid} is still running");
}

/// A `devlab run` of a hanging scenario, with its QEMU up: the harness
/// process, its run directory and QEMU's pid (temp dirs kept alive).
struct Hanging {
    harness: std::process::Child,
    run_dir: PathBuf,
    qemu: i32,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn start_hanging(board: &str) -> Hanging {
    let d = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let s = hanging_scenario(d.path(), board, "2m");
    let harness = Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(["run", s.to_str().unwrap(), "--no-snapshots"])
        .env("DEVLAB_RUNS", runs.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (run_dir, qemu) = wait_for_qemu(runs.path());
    Hanging { harness, run_dir, qemu, _dirs: (d, runs) }
}

#[test]
fn a_sigkilled_harness_leaves_no_qemu() {
    let mut h = start_hanging("qemu-aarch64");
    h.harness.kill().unwrap();
    h.harness.wait().unwrap();
    assert!(gone_within(h.qemu, Duration::from_secs(10)), "QEMU {} outlived its SIGKILLed harness", h.qemu);
}

#[test]
fn ctrl_c_stops_the_machine_and_exits_130() {
    let mut h = start_hanging("qemu-x86_64");
    unsafe { libc::kill(h.harness.id() as i32, libc::SIGINT) };
    let status = h.harness.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!alive(h.qemu), "QEMU {} survived Ctrl-C", h.qemu);
    assert!(h.run_dir.join("serial.log").is_file(), "the run directory is kept");
}

#[test]
fn a_panic_while_a_machine_runs_leaves_no_qemu() {
    use harness::machine::{Machine, MachineSpec};
    let runs = tempfile::tempdir().unwrap();
    let board = harness::board::find("qemu-aarch64").unwrap();
    let image = devlab_images::locate(&root().join("images/recipes/base.toml"), board.arch).unwrap();
    let run_dir = runs.path().to_path_buf();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let spec = MachineSpec {
                board: &board,
                accel: harness::board::Accel::Tcg,
                base_disk: &image.disk,
                run_dir: &run_dir,
                epoch: None,
                disk_errors: &[],
                loadvm: None,
                tftp: None,
                detect_zeroes: false,
                lab_net: None,
                disk_armable: false,
                link: None,
            };
            let m = Machine::start(spec).await.unwrap();
            std::fs::write(run_dir.join("pid"), m.pid().to_string()).unwrap();
            panic!("a test assertion failed while the machine ran");
        })
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let pid: i32 = std::fs::read_to_string(runs.path().join("pid")).unwrap().parse().unwrap();
    assert!(!alive(pid), "QEMU {pid} outlived the panic");
}

/// devlab's images reboot and power off through their own shutdown script
/// (`fixtures/rootfs/usr/libexec/devlab/shutdown`), which waits only for
/// processes that handle SIGTERM instead of busybox init's two fixed
/// one-second pauses, when the harness reboots (`reboot` with the system's
/// `/sbin/reboot`, as after an update) and powers off (the `poweroff` step).
/// Only that script prints its "ended" line; init's own way down does not.
#[test]
fn the_images_reboot_and_power_off_without_init_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let s = dir.path().join("down.toml");
    std::fs::write(
        &s,
        "[scenario]\nname = \"down\"\nboards = [\"qemu-aarch64\"]\ntimeout = \"4m\"\n\
         [[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n[[step]]\naction = \"wait_ssh\"\n\
         [[step]]\naction = \"reboot\"\ncommand = \"/sbin/reboot\"\n\
         [[step]]\naction = \"boot\"\n[[step]]\naction = \"wait_ssh\"\n[[step]]\naction = \"poweroff\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(["run", s.to_str().unwrap(), "--no-snapshots"])
        .env("DEVLAB_RUNS", runs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let run = std::fs::read_dir(runs.path()).unwrap().flatten().next().unwrap().path();
    let log = String::from_utf8_lossy(&std::fs::read(run.join("serial.log")).unwrap()).into_owned();
    let ended: Vec<&str> =
        log.lines().filter(|l| l.contains("shutdown: every process that handles SIGTERM ended")).collect();
    assert_eq!(ended.len(), 2, "the script's way down, for the reboot and the power-off:\n{log}");
    for mode in ["reboot", "poweroff"] {
        assert_eq!(log.matches(&format!("Requesting system {mode}")).count(), 1, "{mode}:\n{log}");
    }
    assert!(!log.contains("still running 1 s after SIGTERM"), "no process held the way down:\n{log}");
}
