//! `cargo xtask bench setup`: the first result on a fresh machine, with the
//! host packages installed and an empty image cache: the images the smoke
//! suite needs (`devlab suite smoke --build-only`), then the boot-smoke
//! scenario on both boards, each phase timed. Two ways side by side in one
//! run, each from its own empty cache (downloads included): images built in
//! parallel (the default) and one at a time (`DEVLAB_BUILD_WORKERS=1`).
//! `--before REV` adds what that revision's first command did, from a git
//! worktree with its own target dir (compiled first, untimed): its `cargo
//! xtask images` (every image, and the example products) then the same run.
//! Writes `target/bench/setup.json` and `setup.md`; the caches and worktree
//! are removed afterwards, also when a phase fails.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One way of getting to the first result.
struct Way {
    label: String,
    /// The checkout whose binaries run.
    tree: PathBuf,
    /// Its `devlab` and how its images are built.
    devlab: PathBuf,
    images: Command,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut before = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--before" => before = Some(it.next().context("--before REV (a git revision)")?.clone()),
            other => bail!("bench setup: unknown argument `{other}` (usage: cargo xtask bench setup [--before REV])"),
        }
    }
    let root = crate::root();
    let work = root.join("target/bench/setup");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let t = Instant::now();
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let cargo_s = t.elapsed().as_secs_f64();
    let devlab = root.join("target/release/devlab");
    let mut ways = Vec::new();
    for (label, workers) in [("parallel", None), ("one at a time", Some("1"))] {
        let mut images = Command::new(&devlab);
        images.args(["suite", "smoke", "--build-only"]).current_dir(&root);
        if let Some(w) = workers {
            images.env("DEVLAB_BUILD_WORKERS", w);
        }
        ways.push(Way { label: label.into(), tree: root.clone(), devlab: devlab.clone(), images });
    }
    let worktree = work.join("before");
    if let Some(rev) = &before {
        ways.push(before_way(&root, &worktree, rev)?);
    }
    let measured: Result<Vec<Value>> = ways.iter_mut().enumerate().map(|(i, w)| measure(w, &work, i)).collect();
    if before.is_some() {
        remove_checkout(&root, &worktree);
    }
    let rows = measured?;
    let md = markdown(&rows, cargo_s, before.as_deref());
    let out_dir = root.join("target/bench");
    std::fs::write(
        out_dir.join("setup.json"),
        serde_json::to_string_pretty(&json!({"benchmark": "setup", "cargo_build_s": cargo_s, "results": rows}))?,
    )?;
    std::fs::write(out_dir.join("setup.md"), &md)?;
    let _ = std::fs::remove_dir_all(&work);
    println!("{md}");
    Ok(())
}

/// `rev` checked out in `worktree` and compiled (untimed) with its own
/// target dir; its images are built the way its `cargo xtask` did.
fn before_way(root: &Path, worktree: &Path, rev: &str) -> Result<Way> {
    let devlab = checkout(root, worktree, rev)?;
    let mut images = Command::new(worktree.join("target/release/xtask"));
    images.arg("images").current_dir(worktree);
    Ok(Way { label: format!("before ({rev})"), tree: worktree.to_path_buf(), devlab, images })
}

/// `rev` checked out in `worktree` (a git worktree) and its `devlab` and
/// `xtask` compiled into `worktree/target`; returns its `devlab`. Remove it
/// with [`remove_checkout`].
pub(crate) fn checkout(root: &Path, worktree: &Path, rev: &str) -> Result<PathBuf> {
    remove_checkout(root, worktree);
    let ok = Command::new("git")
        .args(["worktree", "add", "--detach"])
        .arg(worktree)
        .arg(rev)
        .current_dir(root)
        .status()
        .context("git worktree add")?;
    if !ok.success() {
        bail!("git worktree add {rev} failed");
    }
    let target = worktree.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "harness", "-p", "xtask"])
        .current_dir(worktree)
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !built.success() {
        remove_checkout(root, worktree);
        bail!("building {rev} failed");
    }
    Ok(target.join("release/devlab"))
}

/// Removes a [`checkout`] (nothing if there is none).
pub(crate) fn remove_checkout(root: &Path, worktree: &Path) {
    if worktree.exists() {
        let _ = Command::new("git").args(["worktree", "remove", "--force"]).arg(worktree).current_dir(root).status();
        let _ = std::fs::remove_dir_all(worktree);
    }
}

/// Both phases of one way, from an empty cache of its own.
fn measure(way: &mut Way, work: &Path, i: usize) -> Result<Value> {
    let cache = work.join(format!("cache-{i}"));
    let runs = work.join(format!("runs-{i}"));
    eprintln!("bench setup: {} (empty cache {})", way.label, cache.display());
    let t = Instant::now();
    let status = way.images.env("DEVLAB_CACHE", &cache).status().context("building images")?;
    let images_s = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{}: building the images failed ({status})", way.label);
    }
    let t = Instant::now();
    let status = Command::new(&way.devlab)
        .args(["run", "scenarios/boot-smoke.toml", "--no-checkpoints", "--report-dir"])
        .arg(work.join(format!("report-{i}")))
        .current_dir(&way.tree)
        .env("DEVLAB_CACHE", &cache)
        .env("DEVLAB_RUNS", &runs)
        .status()
        .context("running boot-smoke")?;
    let boot_s = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{}: boot-smoke failed ({status}); its runs are in {}", way.label, runs.display());
    }
    let built = count_images(&cache.join("images"));
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&runs);
    Ok(json!({"way": way.label, "images_built": built, "images_s": images_s, "boot_smoke_s": boot_s,
              "first_result_s": images_s + boot_s}))
}

/// Finished image entries (a `manifest.json` inside) in an images folder.
fn count_images(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| rd.flatten().filter(|e| e.path().join("manifest.json").is_file()).count())
}

fn markdown(rows: &[Value], cargo_s: f64, before: Option<&str>) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut md = format!(
        "# First result on a fresh machine ({cores} cores)\n\n\
         Packages installed, empty image cache (downloads included), then `devlab run scenarios/boot-smoke.toml` \
         (both boards, no checkpoints). `cargo build --release -p harness` took {cargo_s:.1} s here (warm; a fresh \
         clone compiles for about 2.5 min on top).\n\n\
         | way | images built | images (s) | boot-smoke (s) | first result (s) |\n|---|---|---|---|---|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
            r["way"].as_str().unwrap_or("?"),
            r["images_built"],
            r["images_s"].as_f64().unwrap_or(0.0),
            r["boot_smoke_s"].as_f64().unwrap_or(0.0),
            r["first_result_s"].as_f64().unwrap_or(0.0),
        ));
    }
    let first = |i: usize| rows.get(i).and_then(|r| r["first_result_s"].as_f64());
    if let (Some(par), Some(seq)) = (first(0), first(1)) {
        md.push_str(&format!("\nOne at a time / parallel: {:.2}.", seq / par));
    }
    if let (Some(rev), Some(par), Some(old)) = (before, first(0), first(2)) {
        md.push_str(&format!(" Before ({rev}) / parallel: {:.2}.", old / par));
    }
    md.push_str(" Goal: first result ≤ 90 s with packages installed.\n");
    md
}
