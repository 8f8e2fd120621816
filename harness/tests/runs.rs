//! `devlab run`/`suite` as CI uses them: deterministic shards whose union is
//! the whole run, retries that count attempts, JUnit/JSON/Markdown reports,
//! and Ctrl-C marking unfinished runs as not run. The last two boot QEMU.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn devlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_devlab"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `summary.json` a run wrote into report folder `dir`.
fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn list(args: &[&str]) -> Vec<String> {
    let out = devlab().args(args).arg("--list").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn shard_union_equals_the_unsharded_run() {
    let scenarios = root().join("scenarios");
    let all = list(&["run", scenarios.to_str().unwrap()]);
    assert!(all.len() >= 6, "{all:?}");
    for n in [1, 2, 4, 7] {
        let mut union = Vec::new();
        for k in 1..=n {
            union.extend(list(&["run", scenarios.to_str().unwrap(), "--shard", &format!("{k}/{n}")]));
        }
        union.sort();
        let before = union.len();
        union.dedup();
        assert_eq!(before, union.len(), "shards of {n} overlap");
        let mut want = all.clone();
        want.sort();
        assert_eq!(union, want, "union of {n} shards");
    }
}

#[test]
fn bad_shard_and_unknown_suite_are_bad_input() {
    let out = devlab().args(["suite", "release", "--shard", "3/2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need 1 <= K <= N"));
    let out = devlab().args(["suite", "nightly"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no suite `nightly`"));
}

#[test]
fn board_validation_runs_the_standard_suite_on_the_given_board() {
    let ids = list(&["suite", "board-validation", "--board", "qemu-aarch64"]);
    assert!(ids.len() >= 3 && ids.iter().all(|i| i.ends_with("@qemu-aarch64")), "{ids:?}");
}

fn failing_scenario(dir: &Path, name: &str, wait: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[scenario]\nname = \"{name}\"\nboards = [\"qemu-aarch64\"]\n\
             [[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n\
             [[step]]\naction = \"expect\"\npattern = \"never <here> & there\"\ntimeout = \"{wait}\"\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_failure_is_retried_and_reported_in_junit_json_and_markdown() {
    let d = tempfile::tempdir().unwrap();
    let s = failing_scenario(d.path(), "always-fails", "1s");
    let reports = d.path().join("reports");
    let out = devlab()
        .args(["run", s.to_str().unwrap(), "--retries", "1", "--no-snapshots", "--report-dir"])
        .arg(&reports)
        .env("DEVLAB_RUNS", d.path().join("runs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("RUN  always-fails@qemu-aarch64 (attempt 2)"), "{err}");
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("tests=\"1\" failures=\"1\" errors=\"0\""), "{junit}");
    assert!(junit.contains("<testcase classname=\"always-fails\" name=\"qemu-aarch64\""), "{junit}");
    assert!(junit.contains("never &lt;here&gt; &amp; there"), "{junit}");
    let json = summary(&reports);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["runs"][0]["attempts"], 2);
    assert_eq!(json["runs"][0]["status"], "failed");
    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.contains("| always-fails | qemu-aarch64 | FAIL | 2 |"), "{md}");
    // Each attempt left its own run directory.
    assert_eq!(std::fs::read_dir(d.path().join("runs")).unwrap().count(), 2);
}

#[test]
fn ctrl_c_reports_unfinished_runs_as_not_run() {
    let d = tempfile::tempdir().unwrap();
    failing_scenario(d.path(), "hangs-a", "5m");
    failing_scenario(d.path(), "hangs-b", "5m");
    let reports = d.path().join("reports");
    let runs = d.path().join("runs");
    let mut child = devlab()
        .args(["run", d.path().to_str().unwrap(), "--jobs", "1", "--no-snapshots", "--report-dir"])
        .arg(&reports)
        .env("DEVLAB_RUNS", &runs)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded backoff until the first machine shows U-Boot.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(10);
    let qemu: i32 = loop {
        let dir = std::fs::read_dir(&runs).ok().and_then(|mut r| r.next()).and_then(|e| e.ok()).map(|e| e.path());
        if let Some(dir) = dir {
            let log = std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default();
            if let (true, Ok(pid)) = (log.contains("U-Boot"), std::fs::read_to_string(dir.join("qemu.pid"))) {
                break pid.trim().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no machine came up");
        std::thread::sleep(pause); // bounded backoff
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(!Path::new(&format!("/proc/{qemu}")).exists(), "QEMU {qemu} survived Ctrl-C");
    let json = summary(&reports);
    assert_eq!(json["total"], 2);
    assert_eq!(json["not_run"], 2, "{json}");
}

#[test]
fn a_kept_machine_is_listed_reachable_and_stopped() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let s = failing_scenario(d.path(), "kept-fails", "1s");
    let xdg = d.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let reports = d.path().join("reports");
    let mut child = devlab()
        .args(["run", s.to_str().unwrap(), "--keep-on-failure", "--no-snapshots", "--report-dir"])
        .arg(&reports)
        .env("DEVLAB_RUNS", d.path().join("runs"))
        .env("XDG_RUNTIME_DIR", &xdg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the keeper's stderr as it comes until it says how to stop it.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let stop_line = loop {
        let line = lines.next().expect("the keeper ended before keeping the machine").unwrap();
        said.push_str(&line);
        said.push('\n');
        if let Some(rest) = line.trim().strip_prefix("devlab stop ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(said.contains("devlab attach kept-fails-qemu-aarch64-"), "{said}");
    let with_xdg = |args: &[&str]| devlab().args(args).env("XDG_RUNTIME_DIR", &xdg).output().unwrap();
    let ps = with_xdg(&["ps"]);
    let ps_out = String::from_utf8_lossy(&ps.stdout);
    assert!(ps_out.contains(&stop_line) && ps_out.contains("step 3 (expect"), "{ps_out}");
    let qemu: i32 = ps_out.lines().nth(1).unwrap().split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(Path::new(&format!("/proc/{qemu}")).exists(), "the kept QEMU is not running");
    // SSH never came up in this run: `ssh` says so and points at attach.
    let ssh = with_xdg(&["ssh", "kept-fails"]);
    assert_eq!(ssh.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ssh.stderr).contains("devlab attach"));
    let unknown = with_xdg(&["stop", "nothing-like-it"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("kept: kept-fails"));
    // A prefix is enough; stop returns once the keeper has torn it down.
    let stop = with_xdg(&["stop", "kept-fails"]);
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    assert_eq!(child.wait().unwrap().code(), Some(1), "the run still ends as failed");
    assert!(!Path::new(&format!("/proc/{qemu}")).exists(), "QEMU {qemu} survived stop");
    let json = summary(&reports);
    assert_eq!((json["failed"].as_u64(), json["not_run"].as_u64()), (Some(1), Some(0)), "{json}");
    assert!(String::from_utf8_lossy(&with_xdg(&["ps"]).stdout).contains("no kept machines"));
}

#[test]
fn two_runs_at_once_do_not_collide() {
    // Same scenario, same runs folder, at the same time: run ids, sockets
    // and forwarded ports must all differ, and both must pass.
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("twice.toml");
    std::fs::write(
        &s,
        "[scenario]\nname = \"twice\"\nboards = [\"qemu-aarch64\"]\n\
         [[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n\
         [[step]]\naction = \"wait_ssh\"\n[[step]]\naction = \"ssh\"\ncommand = \"true\"\n",
    )
    .unwrap();
    let runs = d.path().join("runs");
    let spawn = |n: u32| {
        devlab()
            .args(["run", s.to_str().unwrap(), "--no-snapshots", "--no-checkpoints", "--report-dir"])
            .arg(d.path().join(format!("reports-{n}")))
            .env("DEVLAB_RUNS", &runs)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(1), spawn(2));
    for (n, child) in [(1, a), (2, b)] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "run {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let port = |dir: &Path| {
        let log = std::fs::read_to_string(dir.join("ssh.log")).unwrap();
        log.split("127.0.0.1:").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string()
    };
    assert_ne!(port(&dirs[0]), port(&dirs[1]), "both runs got the same SSH port");
    for n in [1, 2] {
        let json = summary(&d.path().join(format!("reports-{n}")));
        assert_eq!(json["passed"], 1, "{json}");
    }
}

#[test]
fn a_full_disk_is_refused_before_anything_boots() {
    // No disk is full here: ask for more free space than any disk has.
    let d = tempfile::tempdir().unwrap();
    let s = failing_scenario(d.path(), "needs-space", "1s");
    let reports = d.path().join("reports");
    let out = devlab()
        .args(["run", s.to_str().unwrap(), "--no-snapshots", "--report-dir"])
        .arg(&reports)
        .env("DEVLAB_RUNS", d.path().join("runs"))
        .env("DEVLAB_MIN_FREE_MIB", "999999999999")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("not enough free disk space for a run in") && err.contains("DEVLAB_RUNS"), "{err}");
    // Nothing was started, and the reports are whole.
    assert!(!d.path().join("runs").exists());
    let json = summary(&reports);
    assert_eq!(json["errors"], 1, "{json}");
}

#[test]
fn an_image_that_is_not_built_is_bad_input_at_its_field() {
    // An empty cache and --no-build: nothing is built, nothing may be. The
    // served image is named too.
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("not-built.toml");
    std::fs::write(
        &s,
        "[scenario]\nname = \"not-built\"\nboards = [\"qemu-aarch64\"]\nimage = \"ostree\"\n\
         [[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n",
    )
    .unwrap();
    let out = devlab()
        .args(["run", s.to_str().unwrap(), "--no-build", "--no-snapshots", "--report-dir"])
        .arg(d.path().join("reports"))
        .env("DEVLAB_RUNS", d.path().join("runs"))
        .env("DEVLAB_CACHE", d.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not-built.toml:4:9: field `image`: image ostree-aarch64 is not built"), "{err}");
    assert!(err.contains("a run builds it, or `cargo xtask images`"), "{err}");
    assert!(!d.path().join("cache/images").exists(), "--no-build built nothing");
    assert!(!d.path().join("runs").exists(), "nothing started");
}
