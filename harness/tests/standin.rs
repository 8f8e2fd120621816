//! devlab on an external board, proved on the stand-in lab
//! (`examples/standin-board`: QEMU started only by pdudaemon's power
//! script, its console served by ser2net): devlab never spawns QEMU nor
//! opens a QMP socket for it; a broken lab (power command failing or
//! hanging, console silent, serial device missing) is exit 69 naming the
//! command; the board's lock is released in every case, and a SIGKILLed
//! run's lock is taken over by the next run, which says so.
//!
//! The tests share the lab (fixed ports, like a real bench): they take
//! turns, each bringing the lab up and down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

static LAB: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn standin() -> PathBuf {
    root().join("examples/standin-board")
}

/// The stand-in lab, up while this lives.
struct Lab(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl Lab {
    fn up() -> Lab {
        let guard = LAB.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(standin().join("lab.sh")).arg("up").output().unwrap();
        assert!(out.status.success(), "lab.sh up: {}", String::from_utf8_lossy(&out.stderr));
        Lab(guard)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(standin().join("lab.sh")).arg("down").output();
    }
}

/// A `devlab` with its own lock folder and runs folder.
fn devlab(tmp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_devlab"));
    c.env("DEVLAB_LOCK_DIR", tmp.join("locks")).env("DEVLAB_RUNS", tmp.join("runs")).current_dir(root());
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn profile(arch: &str) -> PathBuf {
    standin().join(format!("boards/standin-{arch}.toml"))
}

/// A copy of the stand-in's profile with `[external]` lines replaced.
fn broken_profile(dir: &Path, arch: &str, replace: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(profile(arch)).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from} not in the profile");
        text = text.replace(from, to);
    }
    // Commands run in the profile's folder: keep the stand-in's.
    text = text.replace("../flash.sh", &standin().join("flash.sh").to_string_lossy());
    let p = dir.join(format!("broken-{arch}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn no_lock_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp.join("locks"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".lock")), "locks left: {left:?}");
}

#[test]
fn devlab_neither_spawns_qemu_nor_opens_qmp_for_an_external_board() {
    let _lab = Lab::up();
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("strace.txt");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=execve,connect", "-o"]).arg(&trace);
    let inner = devlab(tmp.path());
    c.arg(inner.get_program());
    c.args(["run", "scenarios/boot-smoke.toml", "--board"]).arg(profile("x86_64"));
    c.envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?)))).current_dir(root());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let trace = std::fs::read_to_string(&trace).unwrap();
    // The board did boot: its console showed U-Boot and Linux.
    assert!(text(&out).contains("PASS boot-smoke@standin-x86_64"), "{}", text(&out));
    let execs: Vec<&str> = trace.lines().filter(|l| l.contains("execve(")).collect();
    assert!(execs.iter().any(|l| l.contains("flash.sh")), "the flash command ran: {execs:#?}");
    assert!(!execs.iter().any(|l| l.contains("qemu-system")), "devlab started QEMU: {execs:#?}");
    let unix: Vec<&str> = trace.lines().filter(|l| l.contains("connect(") && l.contains("AF_UNIX")).collect();
    assert!(!unix.iter().any(|l| l.contains("qmp") || l.contains("monitor")), "a QMP socket: {unix:#?}");
    // It talked to the lab: pdudaemon's HTTP port and ser2net's console.
    assert!(trace.contains("sin_port=htons(16431)") && trace.contains("sin_port=htons(4101)"), "{trace}");
    no_lock_left(tmp.path());
}

/// boot-smoke on `profile` ends with exit 69 saying `says`, and the
/// board's lock is gone.
fn lab_failure(tmp: &Path, profile: &Path, says: &str) {
    let out = devlab(tmp).args(["run", "scenarios/boot-smoke.toml", "--board"]).arg(profile).output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(69), "{said}");
    assert!(said.contains(says), "{said}");
    no_lock_left(tmp);
}

#[test]
fn a_failing_or_hanging_power_command_is_the_labs_failure() {
    let _lab = Lab::up();
    let tmp = tempfile::tempdir().unwrap();
    let power = r#"power = { pdudaemon = "127.0.0.1:16431", hostname = "standin-x86_64", port = 1 }"#;
    let failing = r#"power = { on = "echo relay {board} jammed >&2; exit 4", off = "true" }"#;
    let p = broken_profile(tmp.path(), "x86_64", &[(power, failing)]);
    lab_failure(tmp.path(), &p, "power on: `echo relay standin-x86_64 jammed >&2; exit 4` exited exit status: 4; stderr: relay standin-x86_64 jammed");

    let hanging = r#"power = { on = "exec sleep 600", off = "true" }"#;
    let p = broken_profile(
        tmp.path(),
        "x86_64",
        &[(power, hanging), ("command_timeout = \"2m\"", "command_timeout = \"1s\"")],
    );
    lab_failure(tmp.path(), &p, "`exec sleep 600` did not finish within 1s");
}

#[test]
fn a_silent_console_and_a_missing_serial_device_are_the_labs_failure() {
    let _lab = Lab::up();
    let tmp = tempfile::tempdir().unwrap();
    let power = r#"power = { pdudaemon = "127.0.0.1:16431", hostname = "standin-x86_64", port = 1 }"#;
    // The switch says yes and nothing happens: the console stays silent.
    let dead = r#"power = { on = "true", off = "true" }
console_timeout = "2s""#;
    let p = broken_profile(tmp.path(), "x86_64", &[(power, dead)]);
    lab_failure(tmp.path(), &p, "stayed silent for 2s after power on (`true`)");

    let console = r#"console = { tcp = "127.0.0.1:4101" }"#;
    let serial = r#"console = { serial = "/dev/ttyUSB-devlab-missing", baud = 115200 }"#;
    let p = broken_profile(tmp.path(), "x86_64", &[(console, serial)]);
    lab_failure(tmp.path(), &p, "serial device /dev/ttyUSB-devlab-missing does not exist");
}

#[test]
fn a_sigkilled_runs_lock_is_taken_over_by_the_next_run() {
    let _lab = Lab::up();
    let tmp = tempfile::tempdir().unwrap();
    let lock = tmp.path().join("locks/standin-aarch64.lock");
    let mut first = devlab(tmp.path())
        .args(["run", "scenarios/boot-smoke.toml", "--board"])
        .arg(profile("aarch64"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until it holds the board.
    let stderr = std::io::BufReader::new(first.stderr.take().unwrap());
    let held =
        std::io::BufRead::lines(stderr).map_while(Result::ok).any(|l| l.contains("holding board standin-aarch64"));
    assert!(held, "the first run never said it holds the board");
    assert!(lock.exists());
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(lock.exists(), "a SIGKILLed run cannot remove its lock");
    let out = devlab(tmp.path())
        .args(["run", "scenarios/boot-smoke.toml", "--board"])
        .arg(profile("aarch64"))
        .arg("--board-wait")
        .arg("0s")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("board standin-aarch64: took over a stale lock"), "{said}");
    no_lock_left(tmp.path());
}

/// `devlab board validate --preflight-only`: the console opens, a power
/// cycle is seen on it, U-Boot's prompt answers, and the report is headed
/// with what the board's console said about it (U-Boot's version, its
/// memory), in Markdown, JUnit and HTML.
#[test]
fn the_preflight_reads_the_boards_identity_from_its_console() {
    let _lab = Lab::up();
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let out = devlab(tmp.path())
        .args(["board", "validate", "--preflight-only", "--report-dir"])
        .arg(&report)
        .arg(profile("x86_64"))
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for check in ["console", "power-off", "power-on", "firmware-prompt"] {
        assert!(said.contains(&format!("PASS preflight:{check}@standin-x86_64")), "{check}: {said}");
    }
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.starts_with("# devlab board validation: standin-x86_64\n"), "{md}");
    assert!(md.contains("| U-Boot | 2023.01") && md.contains("| DRAM | 512 MiB |"), "{md}");
    let junit = std::fs::read_to_string(report.join("junit.xml")).unwrap();
    assert!(junit.contains("<property name=\"board.u-boot\" value=\"2023.01"), "{junit}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<h1>devlab board validation: standin-x86_64</h1><table class=\"identity\">"), "{html}");
    no_lock_left(tmp.path());
}

/// A power switch wired to another board: switching "this" board on
/// wakes the other one, this console stays silent, the preflight fails
/// (exit 69) and the suite does not run.
#[test]
fn a_power_switch_wired_to_another_board_fails_the_preflight() {
    let _lab = Lab::up();
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let p = broken_profile(
        tmp.path(),
        "x86_64",
        &[
            ("hostname = \"standin-x86_64\"", "hostname = \"standin-aarch64\""),
            ("command_timeout", "console_timeout = \"5s\"\ncommand_timeout"),
        ],
    );
    let out = devlab(tmp.path()).args(["board", "validate", "--report-dir"]).arg(&report).arg(&p).output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(69), "{said}");
    // (Silent, or the other board's switch refusing for want of a disk.)
    assert!(said.contains("FAIL preflight:power-on@standin-x86_64 "), "{said}");
    assert!(said.contains("preflight failed: the suite did not run"), "{said}");
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("| boot-smoke | standin-x86_64 | NOT RUN |"), "{md}");
    assert!(md.contains("| power-cycle | standin-x86_64 #20 | NOT RUN |"), "{md}");
    no_lock_left(tmp.path());
}

/// The same scenario on the stand-in and on the QEMU board of its arch
/// leaves the same timeline, but for QMP's events (an external board has
/// none): read from the shipped snapshots, no board needed.
#[test]
fn every_standin_timeline_is_the_vms_without_qmp_events() {
    let dir = root().join("scenarios/snapshots");
    let load = |p: &Path| -> Vec<serde_yaml::Value> {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let body = text.splitn(3, "---").nth(2).unwrap_or_else(|| panic!("{}: no insta header", p.display()));
        serde_yaml::from_str(body).unwrap()
    };
    let mut compared = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((scenario, arch)) = name.strip_suffix(".snap").and_then(|n| n.split_once("@standin-")) else {
            continue;
        };
        let vm: Vec<serde_yaml::Value> = load(&dir.join(format!("{scenario}@{arch}.snap")))
            .into_iter()
            .filter(|ev| ev.get("event").and_then(|v| v.as_str()) != Some("qmp"))
            .collect();
        assert_eq!(load(&e.path()), vm, "{name} differs from {scenario}@{arch}.snap beyond QMP events");
        compared += 1;
    }
    // The board-validation suite (7 runs with env-fallback's two variants) on both arches.
    assert_eq!(compared, 14, "stand-in snapshots compared");
}

/// Before anything starts, `devlab check --board` refuses for an external
/// board what needs QEMU (naming the step and why) and two machines on the
/// one board; no lab needed.
#[test]
fn check_refuses_what_an_external_board_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |scenario: &Path| {
        let out = devlab(tmp.path()).arg("check").arg(scenario).arg("--board").arg(profile("x86_64")).output().unwrap();
        (out.status.code(), text(&out))
    };
    let (code, said) = check(&root().join("scenarios/ab-rollback-watchdog.toml"));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("board `standin-x86_64` is external (not QEMU): step `wait_qmp` cannot run"), "{said}");
    let two = tmp.path().join("two.toml");
    let text_of = "[scenario]\nname = \"two\"\nboards = [\"qemu-x86_64\"]\n\n[[machine]]\nname = \"a\"\n\n[[machine]]\nname = \"b\"\n\n[[step]]\naction = \"power_on\"\n";
    std::fs::write(&two, text_of).unwrap();
    let (code, said) = check(&two);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("two.toml:9:8: field `machine`: machines `a` and `b` are both on external board"), "{said}");
    let (code, said) = check(&root().join("scenarios/boot-smoke.toml"));
    assert_eq!(code, Some(0), "{said}");
}
