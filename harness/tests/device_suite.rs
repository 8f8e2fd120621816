//! `devlab suite device` on the example product (`examples/debian-rauc`,
//! built by its own script): every flow of the standard device suite passes
//! on both arches with its timeline snapshots (beside the profile); the
//! team's image, bundles and key are byte-identical afterwards (SHA-256
//! before and after); and the profile's password appears in none of the
//! files the suite wrote (run folders, console logs, timelines, reports,
//! the generated scenarios). This boots QEMU: 16 runs, two at a time.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sha256(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (mut h, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return hex::encode(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Every regular file under `dir` (symlinks not followed).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn the_example_passes_the_device_suite_and_keeps_its_files_and_secrets() {
    let profile = root().join("examples/debian-rauc/device.toml");
    let device = harness::device::Device::load(&profile).expect("the example's profile loads");
    let team_files: Vec<PathBuf> = harness::device_image::identities(&device).into_iter().map(|(p, _)| p).collect();
    assert!(team_files.len() >= 6, "image, two bundles per arch and the key: {team_files:?}");
    let before: Vec<String> = team_files.iter().map(|p| sha256(p)).collect();
    let password = device.serial.as_ref().and_then(|s| s.password.clone()).expect("the example has a serial password");

    // Kept on failure (its run folders are the evidence); removed on success.
    let work = tempfile::Builder::new().prefix("device-suite-").tempdir_in(root().join("target")).unwrap().keep();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(["suite", "device", "--device", profile.to_str().unwrap(), "--report-dir"])
        .arg(work.join("reports"))
        .env("DEVLAB_RUNS", work.join("runs"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "devlab suite device failed ({}):\n{stdout}\n{stderr}", work.display());
    assert!(!stdout.contains("skipped"), "the example's profile has every flow: {stdout}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("reports/summary.json")).unwrap()).unwrap();
    let runs = summary["runs"].as_array().expect("summary.json lists runs");
    let passed = runs.iter().filter(|r| r["status"] == "passed").count();
    assert_eq!(passed, 16, "8 flows on 2 boards: {summary:#}");

    let after: Vec<String> = team_files.iter().map(|p| sha256(p)).collect();
    for ((p, b), a) in team_files.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{} changed during the suite", p.display());
    }

    let mut written = Vec::new();
    files_under(&work, &mut written);
    assert!(written.len() > 16 * 3, "run folders, reports and scenarios: {}", written.len());
    for f in &written {
        let bytes = std::fs::read(f).unwrap();
        let found = bytes.windows(password.len()).any(|w| w == password.as_bytes());
        assert!(!found, "the profile's password appears in {}", f.display());
    }
    std::fs::remove_dir_all(&work).unwrap();
}
