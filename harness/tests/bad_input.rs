//! The bad-input corpus: every file in `tests/bad-input/` is a scenario
//! with one authoring mistake, and its first line says what `devlab` must
//! answer: `# expect: LINE:COL field `NAME`: TEXT`. Both `devlab check` and
//! `devlab run` must exit 2 with `<file>:LINE:COL: field `NAME`:` and TEXT
//! in the message, and the run must not have made a run directory (nothing
//! was booted: a run directory is made before QEMU starts).

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// (`LINE:COL`, field, text) from the file's `# expect:` line.
fn expectation(path: &Path) -> (String, String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{} does not start with `# expect: `", path.display()));
    let (at, rest) = rest.split_once(" field `").unwrap();
    let (field, text) = rest.split_once("`: ").unwrap();
    (at.to_string(), field.to_string(), text.to_string())
}

fn devlab(args: &[&str], runs: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(args)
        .env("DEVLAB_RUNS", runs)
        .env("DEVLAB_CACHE", runs.join("no-cache"))
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_mistake_is_bad_input_at_its_field_and_nothing_boots() {
    let files = corpus();
    assert!(files.len() >= 20, "the corpus has only {} files", files.len());
    let mut wrong = Vec::new();
    for path in &files {
        let (at, field, text) = expectation(path);
        let runs = tempfile::tempdir().unwrap();
        let p = path.to_str().unwrap();
        let want = format!("{p}:{at}: field `{field}`:");
        for args in [vec!["check", p], vec!["run", p, "--no-build", "--no-snapshots", "--report-dir"]] {
            let mut args = args;
            let report = runs.path().join("report");
            let report = report.to_str().unwrap().to_string();
            if args[0] == "run" {
                args.push(&report);
            }
            let (code, out) = devlab(&args, runs.path());
            if code != 2 || !out.contains(&want) || !out.contains(&text) {
                wrong.push(format!("{} {p}: exit {code}, wanted `{want}` and `{text}` in:\n{out}", args[0]));
            }
        }
        let made: Vec<_> = std::fs::read_dir(runs.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "report" && n != "no-cache")
            .collect();
        if !made.is_empty() {
            wrong.push(format!("{p}: a bad scenario made run directories: {made:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
