//! The `devlab` command's answers to bad input: exit 2 with the file, line,
//! column and field named. None of these boot anything.

use std::path::{Path, PathBuf};
use std::process::Command;

fn devlab(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_devlab"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n";

#[test]
fn missing_file_is_bad_input() {
    let (code, _, err) = devlab(&["run", "/nonexistent/s.toml"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/s.toml"), "{err}");
}

#[test]
fn unknown_field_names_file_line_column_and_field() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "s.toml", &format!("{HEAD}\n[[step]]\naction = \"wait_ssh\"\ntimout = \"1s\"\n"));
    for cmd in ["run", "check"] {
        let (code, _, err) = devlab(&[cmd, p.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("{}:7:1: field `timout`: unknown field `timout`", p.display())), "{err}");
        assert!(err.contains("expected `timeout`"), "{err}");
    }
}

#[test]
fn unknown_step_is_refused_not_ignored() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "s.toml", &format!("{HEAD}[[step]]\naction = \"teleport\"\n"));
    let (code, _, err) = devlab(&["check", p.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":5:1: field `action`: unknown action `teleport`"), "{err}");
}

#[test]
fn unknown_board_in_scenario_and_on_command_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "s.toml",
        "[scenario]\nname = \"t\"\nboards = [\"qemu-mips\"]\n[[step]]\naction = \"power_on\"\n",
    );
    let (code, _, err) = devlab(&["run", p.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":3:11: field `boards`: unknown board `qemu-mips`"), "{err}");
    let smoke = root().join("scenarios/boot-smoke.toml");
    let (code, _, err) = devlab(&["run", smoke.to_str().unwrap(), "--board", "qemu-mips"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown board `qemu-mips`"), "{err}");
}

#[test]
fn unknown_image_recipe_names_the_field() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "s.toml", &format!("{HEAD}image = \"nope\"\n[[step]]\naction = \"power_on\"\n"));
    let (code, _, err) = devlab(&["run", p.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":4:9: field `image`: no image recipe `nope`"), "{err}");
}

fn board_dir_with(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for name in ["qemu-x86_64", "qemu-aarch64"] {
        let text = std::fs::read_to_string(root().join(format!("harness/boards/{name}.toml"))).unwrap();
        let text = if name == "qemu-x86_64" { edit(text) } else { text };
        write(d.path(), &format!("{name}.toml"), &text);
    }
    d
}

#[test]
fn malformed_board_profile_names_file_line_and_field() {
    let boards = board_dir_with(|t| t.replace("smp = 1", "smp = \"one\""));
    let smoke = root().join("scenarios/boot-smoke.toml");
    let (code, _, err) = devlab(&["run", smoke.to_str().unwrap()], &[("DEVLAB_BOARDS", boards.path())]);
    assert_eq!(code, 2, "{err}");
    let file = boards.path().join("qemu-x86_64.toml");
    assert!(err.contains(&format!("{}:", file.display())), "{err}");
    assert!(err.contains("invalid type"), "{err}");
    let (code, _, err) = devlab(&["boards"], &[("DEVLAB_BOARDS", boards.path())]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn missing_firmware_names_the_package() {
    let boards = board_dir_with(|t| t.replace("/usr/lib/u-boot/qemu-x86/u-boot.rom", "/nonexistent/u-boot.rom"));
    let smoke = root().join("scenarios/boot-smoke.toml");
    let (code, _, err) =
        devlab(&["run", smoke.to_str().unwrap(), "--board", "qemu-x86_64"], &[("DEVLAB_BOARDS", boards.path())]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("field `firmware.path`"), "{err}");
    assert!(err.contains("firmware /nonexistent/u-boot.rom is missing: install Debian package `u-boot-qemu`"), "{err}");
    let (code, out, _) = devlab(&["boards"], &[("DEVLAB_BOARDS", boards.path())]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("qemu-x86_64") && l.contains("MISSING")), "{out}");
}

#[test]
fn boards_lists_shipped_profiles_with_firmware() {
    let (code, out, err) = devlab(&["boards"], &[]);
    assert_eq!(code, 0, "{err}");
    for b in ["qemu-x86_64", "qemu-aarch64"] {
        assert!(out.lines().any(|l| l.starts_with(b) && l.contains("present")), "{out}");
    }
}

#[test]
fn shipped_scenarios_check() {
    let (code, out, err) = devlab(&["check", root().join("scenarios").to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("boot-smoke.toml"), "{out}");
}

#[test]
fn an_empty_folder_selects_nothing_and_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "notes.txt", "not a scenario");
    let reports = d.path().join("reports");
    let dir = d.path().to_str().unwrap();
    for args in [&["run", dir, "--report-dir", reports.to_str().unwrap()][..], &["check", dir]] {
        let (code, out, err) = devlab(args, &[]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(&format!("{}: no scenario files (*.toml) in this folder", d.path().display())), "{err}");
        assert!(!err.contains("passed"), "no green summary for nothing: {err}");
    }
    assert!(!reports.exists(), "nothing selected, no reports");
}

#[test]
fn a_board_no_scenario_names_is_bad_input() {
    let smoke = root().join("scenarios/boot-smoke.toml");
    // A real board, but boot-smoke does not name it.
    let (code, out, err) = devlab(&["run", smoke.to_str().unwrap(), "--board", "qemu-x86_64-pxe"], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&format!("{}: no scenario here runs on board `qemu-x86_64-pxe`", smoke.display())), "{err}");
    assert!(err.contains("qemu-aarch64"), "it says which boards the scenario names: {err}");
    assert!(!err.contains("0 passed"), "{err}");
    // --list plans the same selection.
    let (code, out, err) = devlab(&["run", smoke.to_str().unwrap(), "--board", "qemu-x86_64-pxe", "--list"], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn repeat_must_be_between_1_and_the_bound() {
    let smoke = root().join("scenarios/boot-smoke.toml");
    // --list: were a bad count accepted, it would plan, never boot.
    for bad in ["0", "1001", "-1", "many"] {
        let flag = format!("--repeat={bad}");
        let (code, out, err) = devlab(&["run", smoke.to_str().unwrap(), &flag, "--list"], &[]);
        assert_eq!(code, 2, "--repeat {bad}: {out}{err}");
        assert!(err.contains("--repeat"), "the message names the flag: {err}");
        assert!(out.is_empty(), "{out}");
    }
    let (code, out, err) =
        devlab(&["run", smoke.to_str().unwrap(), "--repeat", "2", "--update-snapshots", "--list"], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--repeat 2 with --update-snapshots"), "{err}");
}

#[test]
fn repeat_plans_numbered_runs() {
    let smoke = root().join("scenarios/boot-smoke.toml");
    let (code, out, err) =
        devlab(&["run", smoke.to_str().unwrap(), "--board", "qemu-aarch64", "--repeat", "3", "--list"], &[]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids, ["boot-smoke@qemu-aarch64#1", "boot-smoke@qemu-aarch64#2", "boot-smoke@qemu-aarch64#3"]);
}

#[test]
fn an_empty_shard_of_a_real_selection_passes_with_empty_reports() {
    let d = tempfile::tempdir().unwrap();
    let reports = d.path().join("reports");
    let smoke = root().join("scenarios/boot-smoke.toml");
    // One run selected; shard 2/2 gets none of it.
    let args = ["run", smoke.to_str().unwrap(), "--board", "qemu-aarch64", "--shard", "2/2", "--report-dir"];
    let (code, out, err) = devlab(&[&args[..], &[reports.to_str().unwrap()]].concat(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("shard 2/2 is empty: all 1 selected run(s) went to the other shards"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["total"], 0);
    // Its (empty) report merges with the others.
    let (code, out, err) = devlab(
        &["report", "merge", reports.to_str().unwrap(), "--out", d.path().join("merged").to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("merged 0 runs"), "{out}");
}

#[test]
fn check_accepts_scenarios_of_several_machines_and_boots_nothing() {
    let runs = tempfile::tempdir().unwrap();
    let fleet = root().join("scenarios/pxe-fleet.toml");
    let (code, out, err) = devlab(&["check", fleet.to_str().unwrap()], &[("DEVLAB_RUNS", runs.path())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("machines: x86-1 on qemu-x86_64-pxe, x86-2 on qemu-x86_64-pxe, arm-1 on"), "{out}");
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0, "check made a run directory");
}
