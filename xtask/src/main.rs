//! `cargo xtask`: project chores in plain Rust. `setup` installs host
//! packages (idempotent: a second run changes nothing and says so) and builds
//! the guest images; `images` builds the images only; `test` is the README's
//! test command (setup, format and lint checks, every test); `bench` times
//! boots against bare QEMU. xtask never depends on the harness crate, so it
//! builds before the host has the harness's C libraries.

mod bench;
mod bench_device;
mod bench_ostree;
mod bench_pxe;
mod bench_rollout;
mod bench_setup;
mod bench_shards;
mod setup;

use anyhow::{bail, Context, Result};
use devlab_images::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup            install host packages (root; idempotent) and build the smoke suite's images
  images [--recipe NAME].. [ARCH..]
                   build guest images (cached, several at once) for x86_64 and/or aarch64;
                   every recipe in images/recipes unless --recipe is given
  images --lock    refresh images/images.lock (exact package versions, both arches) from apt, then build
  test             setup, then cargo fmt --check, clippy -D warnings and every test
  bench boot       boot time, devlab vs bare QEMU, interleaved; writes target/bench/
  bench update     A/B update and rollback cycles, phase by phase; writes target/bench/
  bench ostree     OSTree pull (objects vs static delta) + deploy, full pull, host image build; writes target/bench/
  bench pxe        PXE provisioning: one node per arch, fleets of 4 and 8 (root); writes target/bench/
  bench device     a device profile's product vs devlab's base image: power-on → first command over SSH
                   and serial, serial round trip, 4 GiB sparse image; writes target/bench/
  bench shards [--durations FILE]
                   the release suite on 2, 4, 8 machines from run times (ci/durations.json):
                   slowest shard, modulo vs balanced split, against total / N; boots nothing
  bench setup [--before REV]
                   the first result with packages installed and an empty image cache: the smoke
                   suite's images, then boot-smoke; parallel vs one at a time (vs REV's way)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("setup") => setup::run().and_then(|_| smoke_images()),
        Some("images") => images(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = res {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

/// What the smoke suite boots, built by the harness itself (it reads the
/// scenarios; every other image is built by the first run that needs it,
/// or all at once by `cargo xtask images`).
fn smoke_images() -> Result<()> {
    cargo(&["run", "--release", "-q", "-p", "harness", "--", "suite", "smoke", "--build-only"])
}

fn images(args: &[String]) -> Result<()> {
    let mut recipe_names = Vec::new();
    let mut arches = Vec::new();
    let mut relock = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--lock" {
            relock = true;
        } else if a == "--recipe" {
            recipe_names.push(it.next().context("--recipe NAME (a file in images/recipes/)")?.clone());
        } else {
            arches.push(Arch::parse(a).with_context(|| format!("unknown architecture `{a}` (x86_64, aarch64)"))?);
        }
    }
    if arches.is_empty() {
        arches = Arch::ALL.to_vec();
    }
    let dir = root().join("images/recipes");
    if relock {
        if args.len() > 1 {
            bail!("--lock locks every recipe for both arches: give it alone");
        }
        let recipes: Vec<PathBuf> = all_recipes(&dir)?.iter().map(|n| dir.join(format!("{n}.toml"))).collect();
        let path = devlab_images::refresh_lock(&recipes, &Arch::ALL)?;
        eprintln!("wrote {}: review its diff, then build", path.display());
    }
    // The example products build with their own scripts, beside devlab's
    // images (their slow part is an arm64 bootstrap under qemu-user).
    let mut examples = if recipe_names.is_empty() && args.is_empty() { start_examples()? } else { Vec::new() };
    if recipe_names.is_empty() {
        // Every recipe (a cached one costs a lookup).
        recipe_names = all_recipes(&dir)?;
    }
    let built = build_recipes(&dir, &recipe_names, &arches);
    // Never leave an example's build running behind a failed image build.
    for (_, child) in examples.iter_mut().filter(|_| built.is_err()) {
        let _ = child.kill();
    }
    for (script, mut child) in examples {
        let status = child.wait().with_context(|| format!("waiting for {}", script.display()))?;
        if built.is_err() {
            continue;
        }
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
        eprintln!("example {}: built", script.display());
    }
    built
}

/// The name of every recipe in `dir`, sorted.
fn all_recipes(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".toml") {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Build every recipe × arch, several at once (cached ones cost a lookup).
fn build_recipes(dir: &Path, recipe_names: &[String], arches: &[Arch]) -> Result<()> {
    let jobs: Vec<(PathBuf, Arch)> =
        recipe_names.iter().flat_map(|r| arches.iter().map(move |&a| (dir.join(format!("{r}.toml")), a))).collect();
    let started = Instant::now();
    let workers = devlab_images::batch::default_workers();
    let built = devlab_images::batch::build_all(&jobs, workers, true)?;
    eprintln!("images: {} ready in {:.1}s", built.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Start every `examples/*/build.sh` (each keeps its own content-keyed
/// cache, so an unchanged example is a no-op).
fn start_examples() -> Result<Vec<(PathBuf, std::process::Child)>> {
    let mut out = Vec::new();
    let dir = root().join("examples");
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(out) };
    let mut scripts: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("build.sh")).filter(|p| p.is_file()).collect();
    scripts.sort();
    for script in scripts {
        eprintln!("$ {} all", script.display());
        let child = Command::new("bash")
            .arg(&script)
            .arg("all")
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        out.push((script, child));
    }
    Ok(out)
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo).args(args).current_dir(root()).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test() -> Result<()> {
    setup::run()?;
    images(&[])?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    if std::env::var_os("CI").is_some() {
        // CI never writes snapshots: a changed timeline fails.
        std::env::set_var("INSTA_UPDATE", "no");
    }
    cargo_test(&["test", "--workspace", "--release", "--lib", "--bins", "--tests"])
}

/// Run `cargo test`, echoing its output, and end with one total line
/// (`N passed, M failed`) summed over every test binary.
fn cargo_test(args: &[&str]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(cargo)
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok())
            };
            passed += count(" passed").unwrap_or(0);
            failed += count(" failed").unwrap_or(0);
        }
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}
