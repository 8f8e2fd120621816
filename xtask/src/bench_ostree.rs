//! `cargo xtask bench ostree`: per arch, the OSTree upgrade v1 → v2 on the
//! device (pull time and bytes, deploy time) fetched as loose objects and as
//! a static delta, side by side in one session (interleaved runs), plus a
//! full pull of v2 into an empty repo on the device; and the host side: the
//! `ostree-v2` image built uncached (its entry removed; packages already
//! downloaded) and cached. Writes `target/bench/ostree.json` and `ostree.md`.
//! Times come from the runs' `timeline.json` (each ssh step's end), bytes
//! from ostree's own "… transferred" line.
use crate::bench::{median, scenario_once};
use anyhow::{Context, Result};
use devlab_images::Arch;
use serde_json::{json, Value};
use std::time::Instant;

const OBJECTS: &str = "scenarios/bench/ostree-pull-objects.toml";
const DELTA: &str = "scenarios/bench/ostree-pull-delta.toml";

/// One bench scenario run: seconds for pull, deploy, full pull, and the
/// bytes ostree reported for the pull and the full pull.
#[derive(Debug, Default)]
struct Pull {
    pull_s: f64,
    deploy_s: f64,
    full_pull_s: f64,
    pull_bytes: Option<f64>,
    full_bytes: Option<f64>,
}

/// "3 KiB transferred" / "512 bytes transferred" → bytes (2022.7 prints
/// binary units; decimal ones are read too).
fn transferred(s: &str) -> Option<f64> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "transferred")?;
    let (n, unit) = (words.get(i.checked_sub(2)?)?, words.get(i - 1)?);
    let n: f64 = n.parse().ok()?;
    let mul = match unit.to_ascii_lowercase().as_str() {
        "bytes" | "byte" | "b" => 1.0,
        "kb" => 1e3,
        "kib" => 1024.0,
        "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "gb" => 1e9,
        _ => return None,
    };
    Some(n * mul)
}

fn pull_once(root: &std::path::Path, scenario: &str, board: &str, out: &std::path::Path) -> Result<Pull> {
    let (_, entries, dir) = scenario_once(root, scenario, board, out)?;
    let commands: Vec<&Value> = entries.iter().filter(|e| e["event"] == "command").collect();
    let find = |needle: &str| commands.iter().find(|e| e["command"].as_str().is_some_and(|c| c.contains(needle)));
    let t = |e: Option<&&Value>| e.and_then(|e| e["t"].as_f64());
    let remote = t(find("ostree remote add")).context("no remote add in the timeline")?;
    let pull = find("ostree pull devlab");
    let deploy = find("--deploy-only");
    let full = find("/var/tmp/full");
    let (tp, td, tf) = (t(pull), t(deploy), t(full));
    let (Some(tp), Some(td), Some(tf)) = (tp, td, tf) else {
        anyhow::bail!("incomplete timeline in {}", dir.display());
    };
    let bytes = |e: Option<&&Value>| e.and_then(|e| e["stdout"].as_str()).and_then(transferred);
    Ok(Pull {
        pull_s: tp - remote,
        deploy_s: td - tp,
        full_pull_s: tf - td,
        pull_bytes: bytes(pull),
        full_bytes: bytes(full),
    })
}

pub fn run(arches: Vec<Arch>, runs: usize) -> Result<()> {
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let root = crate::root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let recipe = root.join("images/recipes/ostree-v2.toml");
    let mut results = Vec::new();
    for arch in arches {
        let board = format!("qemu-{arch}");
        // Host side: uncached (entry removed, packages still downloaded), then cached.
        let old = devlab_images::build(&recipe, arch, &mut |_| {})?;
        std::fs::remove_dir_all(&old.dir).with_context(|| format!("removing {}", old.dir.display()))?;
        let mut phases = serde_json::Map::new();
        let started = Instant::now();
        devlab_images::build(&recipe, arch, &mut |line| {
            // "ostree commit: 3.82s" and friends.
            if let Some((what, secs)) = line.trim().rsplit_once(": ") {
                if let Ok(s) = secs.trim_end_matches('s').parse::<f64>() {
                    phases.insert(what.to_string(), json!(s));
                }
            }
        })?;
        let uncached_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        devlab_images::build(&recipe, arch, &mut |_| {})?;
        let cached_s = started.elapsed().as_secs_f64();

        // Device side, interleaved: objects, delta, objects, delta …
        let (mut objects, mut delta) = (Vec::new(), Vec::new());
        for i in 0..runs {
            eprintln!("bench ostree {arch}: run {} of {runs}", i + 1);
            objects.push(pull_once(&root, OBJECTS, &board, &out_dir)?);
            delta.push(pull_once(&root, DELTA, &board, &out_dir)?);
        }
        let m = |v: &[Pull], f: fn(&Pull) -> Option<f64>| median(v.iter().filter_map(f).collect());
        let summary = |v: &[Pull]| {
            json!({
                "pull_s": m(v, |p| Some(p.pull_s)),
                "deploy_s": m(v, |p| Some(p.deploy_s)),
                "pull_bytes": m(v, |p| p.pull_bytes),
                "full_pull_s": m(v, |p| Some(p.full_pull_s)),
                "full_pull_bytes": m(v, |p| p.full_bytes),
            })
        };
        let (o, d) = (summary(&objects), summary(&delta));
        let ratio = |k: &str| Some(o[k].as_f64()? / d[k].as_f64()?);
        results.push(json!({
            "arch": arch.uname(),
            "runs": runs,
            "objects": o,
            "delta": d,
            "objects_over_delta": { "pull_s": ratio("pull_s"), "pull_bytes": ratio("pull_bytes") },
            "host": { "uncached_build_s": uncached_s, "cached_build_s": cached_s, "uncached_phases_s": phases },
        }));
    }
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    let kb = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{:.1}", x / 1e3));
    let mut md = String::from(
        "# OSTree benchmark\n\nUpgrade v1 → v2 on the device (the trees differ in a few small files), pull as loose \
         objects vs a static delta, medians of interleaved runs; a full pull of v2 into an empty repo on the device; \
         the host's image build of `ostree-v2` uncached (packages already downloaded) and cached. Seconds; kB = 1000 bytes.\n\n\
         | arch | pull objects | pull delta | kB objects | kB delta | deploy | full pull | full pull kB | host build uncached | commit | sysroot | host build cached |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &results {
        let h = &r["host"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["arch"].as_str().unwrap_or("?"),
            f(&r["objects"]["pull_s"]),
            f(&r["delta"]["pull_s"]),
            kb(&r["objects"]["pull_bytes"]),
            kb(&r["delta"]["pull_bytes"]),
            f(&r["objects"]["deploy_s"]),
            f(&r["objects"]["full_pull_s"]),
            kb(&r["objects"]["full_pull_bytes"]),
            f(&h["uncached_build_s"]),
            f(&h["uncached_phases_s"]["ostree commit"]),
            f(&h["uncached_phases_s"]["ostree sysroot"]),
            h["cached_build_s"].as_f64().map_or("-".to_string(), |x| format!("{x:.3}")),
        ));
    }
    std::fs::write(
        out_dir.join("ostree.json"),
        serde_json::to_string_pretty(&json!({"benchmark": "ostree", "results": results}))?,
    )?;
    std::fs::write(out_dir.join("ostree.md"), &md)?;
    println!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transferred_reads_ostree_units() {
        assert_eq!(transferred("6 metadata, 2 content objects fetched; 3 KiB transferred in 0 seconds"), Some(3072.0));
        assert_eq!(transferred("1 delta parts, 2 loose fetched; 512 bytes transferred in 1 seconds"), Some(512.0));
        assert_eq!(transferred("… 45.1 MB transferred in 9 seconds"), Some(45.1e6));
        assert_eq!(transferred("nothing here"), None);
    }
}
