//! `cargo xtask bench rollout`: the reboot-lock service a fleet rollout
//! waits on. `devlab fleetlock` (a real etcd behind the FleetLock protocol)
//! is started, then N pre-reboot / steady-state pairs (default 1,000) are
//! sent one after another on loopback the way Zincati sends them (one POST
//! per connection), each request timed from connect to last byte; p50, p99
//! and max per operation go to `target/bench/rollout.json` and `rollout.md`.
//! Then the fleet: `scenarios/bench/fleet-8.toml` (eight nodes, four per
//! arch, from 1 to 2 in three waves with two reboot slots, real agents,
//! etcd and QEMU) run by `devlab run`: the rollout's wall time (publish to
//! the last node's report), nodes per minute, and the harness's share of
//! the CPU the run used (its own CPU time from `run.json` over the CPU time
//! of `devlab` and everything it ran, QEMU and etcd included).
//! `--no-fleet` skips it (it takes minutes).

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn run(args: &[String]) -> Result<()> {
    let mut pairs = 1000usize;
    let mut with_fleet = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pairs" => pairs = it.next().context("--pairs N")?.parse().context("--pairs N")?,
            "--no-fleet" => with_fleet = false,
            other => bail!(
                "bench rollout: unknown argument `{other}` (usage: cargo xtask bench rollout [--pairs N] [--no-fleet])"
            ),
        }
    }
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let root = crate::root();
    let out_dir = root.join("target/bench");
    let logs = out_dir.join("rollout");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let mut child = Command::new(root.join("target/release/devlab"))
        .args(["fleetlock", "--slots", "1", "--log-dir"])
        .arg(&logs)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting devlab fleetlock")?;
    let measured = (|| {
        let mut url = None;
        for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("fleetlock: serving http://") {
                url = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        let addr = url.context("devlab fleetlock did not say where it serves")?;
        let (mut lock, mut unlock) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
        for i in 0..pairs {
            let id = format!("node-{}", i % 8);
            lock.push(request(&addr, "pre-reboot", &id)?);
            unlock.push(request(&addr, "steady-state", &id)?);
        }
        Ok::<_, anyhow::Error>((lock, unlock))
    })();
    // SIGTERM: devlab stops its service and etcd, and removes etcd's data.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    let (lock, unlock) = measured?;
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        json!({"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": v[v.len() - 1]})
    };
    let (l, u) = (stats(lock), stats(unlock));
    let fleet = if with_fleet { Some(fleet(&root, &out_dir)?) } else { None };
    let report = json!({
        "benchmark": "rollout",
        "lock_service": {"pairs": pairs, "pre_reboot": l, "steady_state": u, "backend": "etcd (Debian etcd-server) via devlab fleetlock"},
        "fleet": fleet,
    });
    std::fs::write(out_dir.join("rollout.json"), serde_json::to_string_pretty(&report)?)?;
    let f = |v: &serde_json::Value, k: &str| format!("{:.2}", v[k].as_f64().unwrap_or(f64::NAN));
    let md = format!(
        "# Rollout benchmark\n\n\
         ## Reboot lock service (FleetLock on etcd, loopback)\n\n\
         {pairs} pre-reboot / steady-state pairs, one after another, one connection per request; milliseconds.\n\n\
         | operation | p50 | p99 | max |\n|---|---|---|---|\n\
         | pre-reboot (take a slot) | {} | {} | {} |\n\
         | steady-state (give it back) | {} | {} | {} |\n\n\
         ## Fleet (nodes updated in waves)\n\n{}",
        f(&l, "p50_ms"),
        f(&l, "p99_ms"),
        f(&l, "max_ms"),
        f(&u, "p50_ms"),
        f(&u, "p99_ms"),
        f(&u, "max_ms"),
        fleet_md(report["fleet"].as_object()),
    );
    std::fs::write(out_dir.join("rollout.md"), &md)?;
    println!("{md}");
    Ok(())
}

const FLEET: &str = "scenarios/bench/fleet-8.toml";

/// Runs the eight-node fleet and reads its `run.json`.
fn fleet(root: &std::path::Path, out_dir: &std::path::Path) -> Result<serde_json::Value> {
    use nix::sys::resource::{getrusage, UsageWho};
    let cpu = || -> Result<f64> {
        let u = getrusage(UsageWho::RUSAGE_CHILDREN)?;
        let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        Ok(tv(u.user_time()) + tv(u.system_time()))
    };
    let runs = out_dir.join("rollout-runs");
    let _ = std::fs::remove_dir_all(&runs);
    let before = cpu()?;
    let status = Command::new(root.join("target/release/devlab"))
        .args(["run", FLEET, "--no-snapshots", "--report-dir"])
        .arg(out_dir.join("rollout-report"))
        .env("DEVLAB_RUNS", &runs)
        .current_dir(root)
        .status()
        .context("running devlab")?;
    // devlab reaped QEMU and etcd, so their CPU time is in devlab's.
    let total_cpu = cpu()? - before;
    if !status.success() {
        bail!("the fleet run failed (its run directory is under {})", runs.display());
    }
    let run_json = std::fs::read_dir(&runs)?
        .flatten()
        .map(|e| e.path().join("run.json"))
        .find(|p| p.exists())
        .context("no run.json")?;
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&run_json)?)?;
    let steps = run["steps"].as_array().context("steps")?;
    let time_of = |action: &str| -> Result<(f64, f64)> {
        let s = steps.iter().find(|s| s["action"] == action).with_context(|| format!("no {action} step"))?;
        let start = s["start_s"].as_f64().unwrap_or(0.0);
        Ok((start, start + s["duration_s"].as_f64().unwrap_or(0.0)))
    };
    let (published, _) = time_of("publish")?;
    let (_, all_reported) = time_of("wait_fleet")?;
    let rollout_s = all_reported - published;
    let harness_cpu = run["harness_cpu_s"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "scenario": FLEET,
        "nodes": 8, "arches": {"x86_64": 4, "aarch64": 4}, "waves": 3, "reboot_slots": 2,
        "run_s": run["duration_s"],
        "rollout_s": rollout_s,
        "nodes_per_minute": 8.0 / (rollout_s / 60.0),
        "harness_cpu_s": harness_cpu,
        "total_cpu_s": total_cpu,
        "harness_cpu_share": harness_cpu / total_cpu,
    }))
}

fn fleet_md(fleet: Option<&serde_json::Map<String, serde_json::Value>>) -> String {
    let Some(f) = fleet else {
        return "Not measured in this run (`--no-fleet`).\n".into();
    };
    let n = |k: &str| f.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
    format!(
        "`{FLEET}`: 8 nodes (4 x86_64 + 4 aarch64, TCG), release 1 to 2 in 3 waves, 2 reboot slots.\n\n\
         | measure | value |\n|---|---|\n\
         | whole run (boot, agents, rollout) | {:.1} s |\n\
         | rollout (publish to the last node's report) | {:.1} s |\n\
         | nodes per minute | {:.2} |\n\
         | harness CPU / all CPU of the run (QEMU, etcd included) | {:.1} s / {:.1} s = {:.1} % |\n",
        n("run_s"),
        n("rollout_s"),
        n("nodes_per_minute"),
        n("harness_cpu_s"),
        n("total_cpu_s"),
        100.0 * n("harness_cpu_share"),
    )
}

/// One FleetLock POST as Zincati sends it; milliseconds, connect to last
/// byte. Anything but 200 fails the bench.
fn request(addr: &str, op: &str, id: &str) -> Result<f64> {
    let body = format!("{{\"client_params\": {{\"id\": \"{id}\", \"group\": \"default\"}}}}");
    let t = Instant::now();
    let mut conn = std::net::TcpStream::connect(addr)?;
    write!(
        conn,
        "POST /v1/{op} HTTP/1.1\r\nHost: {addr}\r\nfleet-lock-protocol: true\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !reply.starts_with("HTTP/1.1 200") {
        bail!("{op} for {id}: {}", reply.lines().next().unwrap_or("no reply"));
    }
    Ok(ms)
}
