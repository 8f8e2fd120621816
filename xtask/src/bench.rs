//! Benchmarks; they report, they do not judge.
//! `cargo xtask bench boot`: power-on → first SSH command done, devlab
//! against the same QEMU command line run bare (this file drives QEMU's
//! stdio and the system's OpenSSH client, no harness code), interleaved in
//! one run so both see the same machine. Writes `target/bench/boot.json`
//! and `boot.md`.
//! `--standin` adds the stand-in board of `examples/standin-board` (an
//! external board: TCP console through ser2net, power through pdudaemon's
//! script) to the same loop: power-on → first SSH command done (timeline
//! times, so flashing before power-on is not counted) against the same
//! guest on the QEMU board of its arch.
//! `cargo xtask bench update`: one full A/B update cycle and one rollback
//! cycle per arch, phase by phase from the run's timeline, and the guest's
//! slot write throughput against the same pipeline on the host. Writes
//! `target/bench/update.json` and `update.md`.
//! `cargo xtask bench suite`: the whole release suite (every scenario, both
//! arches) four ways, one after the other: `--jobs 1` and the default jobs
//! without checkpoints, then with checkpoints from an empty checkpoint cache
//! (cold: the first run of each prefix saves) and again (warm: every run
//! restores). Wall times, ratios, and the harness's own CPU per machine-
//! second (from `summary.json`). Writes `target/bench/suite.json` and `.md`.
//! `cargo xtask bench ostree`, `cargo xtask bench pxe`,
//! `cargo xtask bench device` and `cargo xtask bench shards`: see their modules.

use anyhow::{bail, Context, Result};
use devlab_images::Arch;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BENCH_SCENARIO: &str = "scenarios/bench/boot-ssh.toml";
/// What the board profiles type at the U-Boot prompt.
const BOOT_CMD: &str = "setenv devnum 0; virtio scan; load virtio 0:1 ${scriptaddr} boot.scr; source ${scriptaddr}\r";

pub fn run(args: &[String]) -> Result<()> {
    for (name, bench) in [
        ("shards", crate::bench_shards::run as fn(&[String]) -> Result<()>),
        ("setup", crate::bench_setup::run),
        ("rollout", crate::bench_rollout::run),
    ] {
        if let Some(at) = args.iter().position(|a| a == name) {
            let rest: Vec<String> = args.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, a)| a.clone()).collect();
            return bench(&rest);
        }
    }
    let mut runs = 5usize;
    let mut explicit_runs = false;
    let mut arches = Vec::new();
    let mut what = None;
    let mut before = None;
    let mut standin = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--before" => before = Some(it.next().context("--before REV (a git revision)")?.clone()),
            "--standin" => standin = true,
            "--runs" => {
                runs = it.next().context("--runs N")?.parse().context("--runs N")?;
                explicit_runs = true;
            }
            "boot" => what = Some("boot"),
            "update" => what = Some("update"),
            "suite" => what = Some("suite"),
            "ostree" => what = Some("ostree"),
            "pxe" => what = Some("pxe"),
            "device" => what = Some("device"),
            other => arches.push(Arch::parse(other).with_context(|| format!("unknown argument `{other}`"))?),
        }
    }
    if what == Some("suite") {
        return suite();
    }
    if what == Some("ostree") {
        return crate::bench_ostree::run(if arches.is_empty() { Arch::ALL.to_vec() } else { arches }, runs);
    }
    if what == Some("pxe") {
        let runs = if explicit_runs { runs } else { 3 };
        return crate::bench_pxe::run(if arches.is_empty() { Arch::ALL.to_vec() } else { arches }, runs);
    }
    if what == Some("device") {
        let runs = if explicit_runs { runs } else { 3 };
        return crate::bench_device::run(if arches.is_empty() { Arch::ALL.to_vec() } else { arches }, runs);
    }
    if what == Some("update") {
        return update(if arches.is_empty() { Arch::ALL.to_vec() } else { arches });
    }
    if what != Some("boot") {
        bail!("usage: cargo xtask bench boot [--before REV] [--standin]|update|suite|ostree|pxe|device [--runs N] [x86_64|aarch64 ...], bench shards [--durations FILE], bench setup [--before REV] or bench rollout [--pairs N]");
    }
    if arches.is_empty() {
        arches = Arch::ALL.to_vec();
    }
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let root = crate::root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    // `--before REV`: that revision's devlab (and the images it builds),
    // booted in the same loop, for a before/after ratio on one machine.
    let worktree = out_dir.join("boot-before");
    let before = match before {
        Some(rev) => Some((crate::bench_setup::checkout(&root, &worktree, &rev)?, rev)),
        None => None,
    };
    let lab = root.join("examples/standin-board/lab.sh");
    if standin {
        let up = Command::new(&lab).arg("up").status().context("examples/standin-board/lab.sh up")?;
        if !up.success() {
            bail!("examples/standin-board/lab.sh up failed");
        }
    }
    let before_tree = before.as_ref().map(|(_, rev)| (worktree.as_path(), rev.as_str()));
    let measured = boot(&root, &out_dir, arches, runs, before_tree, standin);
    if standin {
        let _ = Command::new(&lab).arg("down").status();
    }
    crate::bench_setup::remove_checkout(&root, &worktree);
    let results = measured?;
    let report = json!({ "benchmark": "boot", "what": "process start to first SSH command done", "results": results });
    std::fs::write(out_dir.join("boot.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&results);
    std::fs::write(out_dir.join("boot.md"), &md)?;
    println!("{md}");
    eprintln!("wrote {} and boot.md", out_dir.join("boot.json").display());
    Ok(())
}

/// The boot samples of every arch: devlab and bare interleaved, and the
/// `before` checkout's devlab (tree, revision) in the same loop.
fn boot(
    root: &Path,
    out_dir: &Path,
    arches: Vec<Arch>,
    runs: usize,
    before: Option<(&Path, &str)>,
    standin: bool,
) -> Result<Vec<Value>> {
    let recipe = root.join("images/recipes/base.toml");
    let mut results = Vec::new();
    for arch in arches {
        let started = Instant::now();
        let image = devlab_images::build(&recipe, arch, &mut |_| {})?;
        let cached_build_s = started.elapsed().as_secs_f64();
        let board = format!("qemu-{arch}");
        eprintln!("bench boot {arch}: warm-up");
        let warm = devlab_once(root, &board, out_dir)?;
        if let Some((tree, _)) = before {
            // Builds the images that revision boots, if they are not cached.
            devlab_once(tree, &board, out_dir)?;
        }
        let argv: Vec<String> = serde_json::from_str(&std::fs::read_to_string(warm.run_dir.join("qemu.argv.json"))?)?;
        let (mut d, mut b, mut o, mut st) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let standin_board = root.join(format!("examples/standin-board/boards/standin-{arch}.toml"));
        for i in 0..runs {
            let dr = devlab_once(root, &board, out_dir)?;
            let br = bare_once(&argv, &image.disk, &image.ssh_key, out_dir)?;
            eprintln!("  run {}: devlab {:.2}s  bare {:.2}s", i + 1, dr.wall, br.wall);
            d.push(dr);
            b.push(br);
            if let Some((tree, rev)) = before {
                let or = devlab_once(tree, &board, out_dir)?;
                eprintln!("  run {}: devlab at {rev} {:.2}s", i + 1, or.wall);
                o.push(or);
            }
            if standin {
                let sr = devlab_once(root, &standin_board.to_string_lossy(), out_dir)?;
                let (s_t, q_t) = (sr.ssh.unwrap_or(f64::NAN), d.last().and_then(|x| x.ssh).unwrap_or(f64::NAN));
                eprintln!("  run {}: power-on → command: stand-in {s_t:.2}s, QEMU board {q_t:.2}s", i + 1);
                st.push(sr);
            }
        }
        let standin_ratios: Vec<f64> = st.iter().zip(&d).filter_map(|(s, q)| Some(s.ssh? / q.ssh?)).collect();
        let ratios: Vec<f64> = d.iter().zip(&b).map(|(x, y)| x.wall / y.wall).collect();
        let phase = |v: &[Sample], f: fn(&Sample) -> Option<f64>| median(v.iter().filter_map(f).collect());
        results.push(json!({
            "arch": arch.uname(),
            "board": board,
            "runs": runs,
            "devlab_median_s": median(d.iter().map(|s| s.wall).collect()),
            "bare_median_s": median(b.iter().map(|s| s.wall).collect()),
            "ratio": median(ratios.clone()),
            "ratios": ratios,
            "devlab": {
                "uboot_banner_s": phase(&d, |s| s.banner),
                "kernel_start_s": phase(&d, |s| s.kernel),
                "ssh_ready_s": phase(&d, |s| s.ssh),
            },
            "bare": {
                "uboot_banner_s": phase(&b, |s| s.banner),
                "kernel_start_s": phase(&b, |s| s.kernel),
                "ssh_ready_s": phase(&b, |s| s.ssh),
            },
            "cached_image_build_s": cached_build_s,
            "accel": warm.accel,
            "standin": standin.then(|| json!({
                "board": standin_board.file_stem().map(|n| n.to_string_lossy().into_owned()),
                "what": "power-on to the first SSH command done (timeline), against the QEMU board's devlab runs of this loop",
                "standin_median_s": median(st.iter().filter_map(|s| s.ssh).collect()),
                "qemu_median_s": median(d.iter().filter_map(|s| s.ssh).collect()),
                "ratio": median(standin_ratios.clone()),
                "ratios": standin_ratios,
                "standin_banner_s": phase(&st, |s| s.banner),
                "standin_kernel_s": phase(&st, |s| s.kernel),
            })),
            "before": before.map(|(_, rev)| json!({
                "rev": rev,
                "devlab_median_s": median(o.iter().map(|s| s.wall).collect()),
                "kernel_start_s": phase(&o, |s| s.kernel),
                "ssh_ready_s": phase(&o, |s| s.ssh),
                "after_over_before": median(d.iter().zip(&o).map(|(x, y)| x.wall / y.wall).collect()),
            })),
        }));
    }
    Ok(results)
}

#[derive(Debug)]
struct Sample {
    wall: f64,
    banner: Option<f64>,
    kernel: Option<f64>,
    ssh: Option<f64>,
    run_dir: PathBuf,
    accel: Value,
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// One `devlab run` of the bench scenario, timed as a whole process.
fn devlab_once(root: &Path, board: &str, out_dir: &Path) -> Result<Sample> {
    let (wall, entries, run_dir) = scenario_once(root, BENCH_SCENARIO, board, out_dir)?;
    let run: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json"))?)?;
    let at = |event: &str| entries.iter().find(|e| e["event"] == event).and_then(|e| e["t"].as_f64());
    Ok(Sample {
        wall,
        banner: at("uboot_banner"),
        kernel: at("kernel_started"),
        ssh: at("command"),
        run_dir,
        accel: run["accel"].clone(),
    })
}

pub(crate) fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// The same QEMU command line, bare: serial on stdio, no QMP, a fixed
/// forwarded port, autoboot stopped by writing to stdin, and the system
/// `ssh` client tried every 50 ms (each try capped at 0.5 s) until `true` runs.
fn bare_once(argv: &[String], base: &Path, key: &Path, out_dir: &Path) -> Result<Sample> {
    let started = Instant::now();
    let overlay = out_dir.join(format!("bare-{}.qcow2", std::process::id()));
    let _ = std::fs::remove_file(&overlay);
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(base)
        .arg(&overlay)
        .status()?;
    if !st.success() {
        bail!("qemu-img create failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut args = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match a.as_str() {
            "-chardev" if next.starts_with("socket,id=con0") => {
                args.extend(["-chardev".to_string(), "stdio,id=con0,signal=off".to_string()]);
                i += 2;
            }
            "-chardev" if next.starts_with("socket,id=qmp0") => i += 2,
            "-mon" | "-monitor" => i += 2,
            "-drive" => {
                args.extend([
                    "-drive".to_string(),
                    format!("if=none,id=disk0,file={},format=qcow2", overlay.display()),
                ]);
                i += 2;
            }
            _ => {
                args.push(a.replace("hostfwd=tcp:127.0.0.1:0-:22", &format!("hostfwd=tcp:127.0.0.1:{port}-:22")));
                i += 1;
            }
        }
    }
    let mut qemu = Command::new(&argv[0])
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning bare QEMU")?;
    let spawned = Instant::now();
    let mut stdin = qemu.stdin.take().unwrap();
    let mut stdout = qemu.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(&'static str, f64)>();
    let console = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut stage = 0;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let t = spawned.elapsed().as_secs_f64();
            let has = |s: &str| seen.windows(s.len()).any(|w| w == s.as_bytes());
            if stage == 0 && has("U-Boot 20") {
                let _ = tx.send(("banner", t));
                stage = 1;
            }
            if stage == 1 && has("Hit any key to stop autoboot") {
                let _ = stdin.write_all(b" ");
                stage = 2;
            }
            if stage == 2 && has("=> ") {
                let _ = stdin.write_all(BOOT_CMD.as_bytes());
                stage = 3;
            }
            if stage == 3 && has("Starting kernel") {
                let _ = tx.send(("kernel", t));
                stage = 4;
            }
            if stage == 4 {
                seen.clear();
            }
        }
    });
    let ssh = wait_ssh(port, key, Duration::from_secs(120));
    let ssh_t = spawned.elapsed().as_secs_f64();
    let _ = qemu.kill();
    let _ = qemu.wait();
    let wall = started.elapsed().as_secs_f64();
    let _ = console.join();
    let _ = std::fs::remove_file(&overlay);
    ssh?;
    let mut s =
        Sample { wall, banner: None, kernel: None, ssh: Some(ssh_t), run_dir: PathBuf::new(), accel: Value::Null };
    for (what, t) in rx.try_iter() {
        match what {
            "banner" => s.banner = Some(t),
            _ => s.kernel = Some(t),
        }
    }
    Ok(s)
}

fn wait_ssh(port: u16, key: &Path, bound: Duration) -> Result<()> {
    let started = Instant::now();
    let mut tries: Vec<(Child, Instant)> = Vec::new();
    let mut last_spawn: Option<Instant> = None;
    loop {
        if started.elapsed() > bound {
            bail!("bare SSH not up after {bound:?}");
        }
        if last_spawn.is_none_or(|t| t.elapsed() >= Duration::from_millis(50)) {
            let child = Command::new("ssh")
                .args(["-q", "-i"])
                .arg(key)
                .args(["-p", &port.to_string()])
                .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
                .args(["root@127.0.0.1", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            tries.push((child, Instant::now()));
            last_spawn = Some(Instant::now());
        }
        let mut done = false;
        tries.retain_mut(|(c, t)| match c.try_wait() {
            Ok(Some(st)) => {
                done |= st.success();
                false
            }
            _ if t.elapsed() > Duration::from_millis(500) => {
                let _ = c.kill();
                let _ = c.wait();
                false
            }
            _ => true,
        });
        if done {
            for (c, _) in &mut tries {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5)); // backoff between child checks of the bare client
    }
}

fn markdown(results: &[Value]) -> String {
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    let mut md = String::from(
        "# Boot benchmark: process start → first SSH command done\n\n\
         devlab and bare QEMU (same command line, OpenSSH client) interleaved in one run; medians in seconds.\n\n\
         | arch | runs | devlab | bare | ratio (median of pairs) | devlab banner / kernel / SSH | bare banner / kernel / SSH | cached image build |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} | {} |\n",
            r["arch"].as_str().unwrap_or("?"),
            r["runs"],
            f(&r["devlab_median_s"]),
            f(&r["bare_median_s"]),
            f(&r["ratio"]),
            f(&r["devlab"]["uboot_banner_s"]),
            f(&r["devlab"]["kernel_start_s"]),
            f(&r["devlab"]["ssh_ready_s"]),
            f(&r["bare"]["uboot_banner_s"]),
            f(&r["bare"]["kernel_start_s"]),
            f(&r["bare"]["ssh_ready_s"]),
            f(&r["cached_image_build_s"]),
        ));
    }
    let standins: Vec<&Value> = results.iter().filter(|r| r["standin"].is_object()).collect();
    if !standins.is_empty() {
        md.push_str(
            "\nThe stand-in board (`--standin`: an external board, TCP console through ser2net, power through \
             pdudaemon's script) against the same guest on the QEMU board, power-on → first SSH command done \
             (timeline times; flashing before power-on not counted), the same loop:\n\n\
             | arch | stand-in | QEMU board | ratio (median of pairs) | stand-in banner / kernel |\n\
             |---|---|---|---|---|\n",
        );
        for r in standins {
            let s = &r["standin"];
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} / {} |\n",
                r["arch"].as_str().unwrap_or("?"),
                f(&s["standin_median_s"]),
                f(&s["qemu_median_s"]),
                f(&s["ratio"]),
                f(&s["standin_banner_s"]),
                f(&s["standin_kernel_s"]),
            ));
        }
    }
    let befores: Vec<&Value> = results.iter().filter(|r| r["before"].is_object()).collect();
    if !befores.is_empty() {
        md.push_str(
            "\nBefore/after, the same loop (`--before REV`: that revision's devlab and the images it builds):\n\n\
             | arch | before (rev) | before median | after median | after / before (median of pairs) | before kernel / SSH |\n\
             |---|---|---|---|---|---|\n",
        );
        for r in befores {
            let o = &r["before"];
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} / {} |\n",
                r["arch"].as_str().unwrap_or("?"),
                o["rev"].as_str().unwrap_or("?"),
                f(&o["devlab_median_s"]),
                f(&r["devlab_median_s"]),
                f(&o["after_over_before"]),
                f(&o["kernel_start_s"]),
                f(&o["ssh_ready_s"]),
            ));
        }
    }
    md
}

/// Run one scenario with devlab, timed as a whole process; return its wall
/// time, its timeline entries and its run directory.
pub(crate) fn scenario_once(
    root: &Path,
    scenario: &str,
    board: &str,
    out_dir: &Path,
) -> Result<(f64, Vec<Value>, PathBuf)> {
    let runs = out_dir.join("runs");
    std::fs::create_dir_all(&runs)?;
    let before = list(&runs);
    let started = Instant::now();
    let out = Command::new(root.join("target/release/devlab"))
        .args(["run", scenario, "--board", board, "--no-snapshots", "--report-dir"])
        .arg(out_dir.join("report"))
        .current_dir(root)
        .env("DEVLAB_RUNS", &runs)
        .output()
        .context("running devlab")?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("devlab run {scenario} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = list(&runs).into_iter().find(|p| !before.contains(p)).context("devlab left no run directory")?;
    let t: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("timeline.json"))?)?;
    Ok((wall, t["entries"].as_array().cloned().unwrap_or_default(), dir))
}

/// Time of the first entry at or after `from` matching `pred`.
fn at(entries: &[Value], from: f64, pred: impl Fn(&Value) -> bool) -> Option<f64> {
    entries.iter().filter(|e| e["t"].as_f64().unwrap_or(0.0) >= from).find(|e| pred(e)).and_then(|e| e["t"].as_f64())
}

fn stage(e: &Value, prefix: &str) -> bool {
    e["event"] == "update" && e["stage"].as_str().is_some_and(|s| s.starts_with(prefix))
}

fn update(arches: Vec<Arch>) -> Result<()> {
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let root = crate::root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let mut results = Vec::new();
    for arch in arches {
        let board = format!("qemu-{arch}");
        eprintln!("bench update {arch}: update cycle");
        let (_, e, _) = scenario_once(&root, "scenarios/ab-update.toml", &board, &out_dir)?;
        let t_release = at(&e, 0.0, |e| stage(e, "release 2")).context("no update in the timeline")?;
        let t_down = at(&e, t_release, |e| stage(e, "downloading"));
        let t_verify = at(&e, t_release, |e| stage(e, "verifying"));
        let t_write = at(&e, t_release, |e| stage(e, "writing slot"));
        let t_written = at(&e, t_release, |e| stage(e, "slot B written"));
        let t_result = at(&e, t_release, |e| e["event"] == "update_result");
        let t_kernel = at(&e, t_result.unwrap_or(0.0), |e| e["event"] == "kernel_started");
        let t_commit = at(&e, t_result.unwrap_or(0.0), |e| e["event"] == "health" && e["result"] == "committed slot B");
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        eprintln!("bench update {arch}: rollback cycle");
        let (rollback_wall, r, _) = scenario_once(&root, "scenarios/ab-rollback-panic.toml", &board, &out_dir)?;
        let r_update = at(&r, 0.0, |e| stage(e, "release 2"));
        let r_panic =
            at(&r, 0.0, |e| e["event"] == "kernel_panic" || e["event"] == "expected" && e["label"] == "Kernel panic");
        let r_commit = at(&r, r_panic.unwrap_or(0.0), |e| e["event"] == "health" && e["result"] == "committed slot A");
        // The same pipeline on the host: decrypt | gunzip | dd, fsync'ed.
        let image = devlab_images::locate(&root.join("images/recipes/v2.toml"), arch)?;
        let package = std::fs::read_dir(&image.dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".img.gz.enc"))
            .context("no release package (run the update scenario first)")?;
        let rootfs_bytes = std::fs::metadata(&image.rootfs)?.len() as f64;
        let key = devlab_images::release_key(&image.manifest.key);
        let target = out_dir.join("host-slot.img");
        let started = Instant::now();
        let st = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; DEVLAB_KEY={key} openssl enc -d -aes-256-cbc -pbkdf2 -pass env:DEVLAB_KEY -in '{}' | gunzip -c | dd of='{}' bs=1M conv=fsync status=none",
                package.display(),
                target.display()
            ))
            .status()?;
        let host_write = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&target);
        if !st.success() {
            bail!("host write pipeline failed");
        }
        let guest_write = d(t_write, t_written);
        let mib = rootfs_bytes / (1024.0 * 1024.0);
        results.push(json!({
            "arch": arch.uname(),
            "update_cycle": {
                "download_s": d(t_down, t_verify),
                "verify_s": d(t_verify, t_write),
                "write_s": guest_write,
                "switch_s": d(t_written, t_result),
                "reboot_to_kernel_s": d(t_result, t_kernel),
                "kernel_to_commit_s": d(t_kernel, t_commit),
                "total_s": d(Some(t_release), t_commit),
            },
            "rollback_cycle": {
                "scenario_wall_s": rollback_wall,
                "update_to_panic_s": d(r_update, r_panic),
                "panic_to_old_slot_committed_s": d(r_panic, r_commit),
            },
            "slot_write": {
                "slot_mib": mib,
                "guest_mib_per_s": guest_write.map(|w| mib / w),
                "host_mib_per_s": mib / host_write,
                "ratio_guest_to_host": guest_write.map(|w| host_write / w),
            },
        }));
    }
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    let mut md = String::from(
        "# A/B update benchmark\n\nOne update cycle (v1 → v2) and one rollback cycle (a release that panics) per arch; seconds.\n\n\
         | arch | download | verify | write | switch | reboot → kernel | kernel → commit | update total | rollback scenario wall | guest write MiB/s | host MiB/s | guest/host |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &results {
        let u = &r["update_cycle"];
        let w = &r["slot_write"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["arch"].as_str().unwrap_or("?"),
            f(&u["download_s"]),
            f(&u["verify_s"]),
            f(&u["write_s"]),
            f(&u["switch_s"]),
            f(&u["reboot_to_kernel_s"]),
            f(&u["kernel_to_commit_s"]),
            f(&u["total_s"]),
            f(&r["rollback_cycle"]["scenario_wall_s"]),
            f(&w["guest_mib_per_s"]),
            f(&w["host_mib_per_s"]),
            f(&w["ratio_guest_to_host"]),
        ));
    }
    std::fs::write(
        out_dir.join("update.json"),
        serde_json::to_string_pretty(&json!({"benchmark": "update", "results": results}))?,
    )?;
    std::fs::write(out_dir.join("update.md"), &md)?;
    println!("{md}");
    Ok(())
}

/// One `devlab suite release` run: wall seconds and its summary.json.
fn suite_once(root: &Path, label: &str, extra: &[&str]) -> Result<(f64, Value)> {
    let report = root.join("target/bench/suite").join(label);
    eprintln!("bench suite: {label} ({})", extra.join(" "));
    let started = Instant::now();
    let status = Command::new(root.join("target/release/devlab"))
        .args(["suite", "release", "--no-snapshots", "--report-dir"])
        .arg(&report)
        .args(extra)
        .stderr(Stdio::null())
        .status()
        .context("running devlab")?;
    let wall = started.elapsed().as_secs_f64();
    let summary: Value = serde_json::from_slice(&std::fs::read(report.join("summary.json"))?)?;
    if !status.success() {
        bail!("the release suite failed in `{label}`: see {}", report.display());
    }
    Ok((wall, summary))
}

fn suite() -> Result<()> {
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let root = crate::root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let checkpoints = devlab_images::cache_root().join("checkpoints");
    let mut rows = Vec::new();
    for (label, extra, clear) in [
        ("jobs1-no-checkpoints", vec!["--jobs", "1", "--no-checkpoints"], false),
        ("default-no-checkpoints", vec!["--no-checkpoints"], false),
        ("default-checkpoints-cold", vec![], true),
        ("default-checkpoints-warm", vec![], false),
    ] {
        if clear {
            // Only the checkpoint cache: images stay.
            let _ = std::fs::remove_dir_all(&checkpoints);
        }
        let (wall, summary) = suite_once(&root, label, &extra)?;
        let machine_s: f64 =
            summary["runs"].as_array().into_iter().flatten().filter_map(|r| r["duration_s"].as_f64()).sum();
        let cpu = summary["harness_cpu_s"].as_f64().unwrap_or(0.0);
        rows.push(json!({
            "label": label,
            "args": extra,
            "runs": summary["total"],
            "wall_s": wall,
            "machine_s": machine_s,
            "harness_cpu_s": cpu,
            "harness_cpu_per_machine_s": if machine_s > 0.0 { cpu / machine_s } else { 0.0 },
        }));
    }
    let wall = |i: usize| rows[i]["wall_s"].as_f64().unwrap_or(f64::NAN);
    let ratios = json!({
        "jobs1_over_default": wall(0) / wall(1),
        "no_checkpoints_over_warm_checkpoints": wall(1) / wall(3),
        "no_checkpoints_over_cold_checkpoints": wall(1) / wall(2),
    });
    let mut md = format!(
        "# devlab release suite ({} cores)\n\n\
         | variant | runs | wall (s) | sum of run times (s) | harness CPU (s) | harness CPU per machine-second |\n\
         |---|---|---|---|---|---|\n",
        jobs
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.4} |\n",
            r["label"].as_str().unwrap_or("?"),
            r["runs"],
            r["wall_s"].as_f64().unwrap_or(0.0),
            r["machine_s"].as_f64().unwrap_or(0.0),
            r["harness_cpu_s"].as_f64().unwrap_or(0.0),
            r["harness_cpu_per_machine_s"].as_f64().unwrap_or(0.0),
        ));
    }
    md.push_str(&format!(
        "\nRatios (wall, same machine, one session): --jobs 1 / default = {:.2}; \
         no checkpoints / warm checkpoints = {:.2}; no checkpoints / cold checkpoints = {:.2}. \
         Target: the release suite under 20 minutes on 2 cores.\n",
        ratios["jobs1_over_default"].as_f64().unwrap_or(0.0),
        ratios["no_checkpoints_over_warm_checkpoints"].as_f64().unwrap_or(0.0),
        ratios["no_checkpoints_over_cold_checkpoints"].as_f64().unwrap_or(0.0),
    ));
    std::fs::write(
        out_dir.join("suite.json"),
        serde_json::to_string_pretty(&json!({"benchmark": "suite", "cores": jobs, "results": rows, "ratios": ratios}))?,
    )?;
    std::fs::write(out_dir.join("suite.md"), &md)?;
    println!("{md}");
    Ok(())
}
