//! Tidy checks on the source tree: every Rust file opens with a `//!` doc
//! saying what it is for (ARCHITECTURE.md relies on them), and every harness
//! module is named in ARCHITECTURE.md.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_has_a_module_doc() {
    let mut files = Vec::new();
    for crate_dir in ["harness", "images", "xtask", "scenarios"] {
        rust_files(&root().join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "these files have no //! doc: {missing:?}");
}

#[test]
fn architecture_names_every_harness_module() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("harness/src"), &mut files);
    let steps_dir = root().join("harness/src/steps");
    for f in files {
        let mut module = f.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        if module == "mod" {
            module = f.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        } else if f.starts_with(&steps_dir) {
            // One file per step kind: the step table test (steps/mod.rs)
            // and scenarios/README.md's step table cover these.
            continue;
        }
        assert!(
            arch.contains(&format!("| `{module}` |")),
            "ARCHITECTURE.md does not describe harness module `{module}`"
        );
    }
}
