//! `cargo xtask bench rollout`: the reboot-lock service a fleet rollout
//! waits on. `devlab fleetlock` (a real etcd behind the FleetLock protocol)
//! is started, then N pre-reboot / steady-state pairs (default 1,000) are
//! sent one after another on loopback the way Zincati sends them (one POST
//! per connection), each request timed from connect to last byte; p50, p99
//! and max per operation go to `target/bench/rollout.json` and `rollout.md`.
//! The fleet part (nodes updated in waves) is not measured yet: the fleet
//! scenarios it needs do not exist yet, and the Markdown says so.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn run(args: &[String]) -> Result<()> {
    let mut pairs = 1000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pairs" => pairs = it.next().context("--pairs N")?.parse().context("--pairs N")?,
            other => bail!("bench rollout: unknown argument `{other}` (usage: cargo xtask bench rollout [--pairs N])"),
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
    let report = json!({
        "benchmark": "rollout",
        "lock_service": {"pairs": pairs, "pre_reboot": l, "steady_state": u, "backend": "etcd (Debian etcd-server) via devlab fleetlock"},
        "fleet": null,
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
         ## Fleet (nodes updated in waves)\n\n\
         Not measured yet: it needs the fleet scenarios (polling agent, staged waves), which are not built yet.\n",
        f(&l, "p50_ms"),
        f(&l, "p99_ms"),
        f(&l, "max_ms"),
        f(&u, "p50_ms"),
        f(&u, "p99_ms"),
        f(&u, "max_ms"),
    );
    std::fs::write(out_dir.join("rollout.md"), &md)?;
    println!("{md}");
    Ok(())
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
