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
