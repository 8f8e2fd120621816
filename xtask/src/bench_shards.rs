//! `cargo xtask bench shards [--durations FILE] [--suite NAME]`: simulates
//! the release suite (or suite NAME) on N = 2, 4 and 8 CI machines from
//! measured run times (default `ci/durations.json`, a `summary.json`):
//! the slowest shard's wall time under today's modulo split (`--shard K/N`)
//! and under the balanced split (`--shard K/N --durations FILE`), against
//! the ideal total / N. Boots nothing: the splits come from `devlab …
//! --list` (the balancing lives in the harness only; this file sums times),
//! and each machine is taken to run its shard's runs one after another, so
//! a shard's wall time is the sum of its runs' times. Writes
//! `target/bench/shards.json` and `shards.md`.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const MACHINES: [usize; 3] = [2, 4, 8];

/// `devlab suite NAME --list` with `extra` arguments: its stdout lines
/// (`id`, or `id<TAB>seconds` with `--durations`) and stderr.
fn list(devlab: &Path, suite: &str, extra: &[&str]) -> Result<(Vec<String>, String)> {
    let out = Command::new(devlab)
        .args(["suite", suite, "--list"])
        .args(extra)
        .current_dir(crate::root())
        .output()
        .with_context(|| format!("running {}", devlab.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("devlab suite {suite} --list {}: {}", extra.join(" "), stderr.trim());
    }
    Ok((String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect(), stderr))
}

/// The `load_s=` of devlab's `shard K/N predicted: …` line.
fn predicted_load(stderr: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains(" predicted: "))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("load_s="))?.parse().ok()
}

/// Each shard's summed time (runs with no known time count 0).
fn loads(shards: &[Vec<String>], times: &BTreeMap<String, Option<f64>>) -> Vec<f64> {
    shards
        .iter()
        .map(|ids| ids.iter().filter_map(|id| times.get(id).copied().flatten()).fold(0.0, |a, b| a + b))
        .collect()
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut durations, mut suite) = (PathBuf::from("ci/durations.json"), "release".to_string());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--durations" => durations = it.next().context("--durations FILE")?.into(),
            "--suite" => suite = it.next().context("--suite NAME")?.clone(),
            other => bail!("unknown argument `{other}` (bench shards [--durations FILE] [--suite NAME])"),
        }
    }
    let durations = if durations.is_absolute() { durations } else { crate::root().join(durations) };
    let file = durations.display().to_string();
    crate::cargo(&["build", "--release", "-q", "-p", "harness"])?;
    let devlab = crate::root().join("target/release/devlab");
    // Every run with its known time (`-`: none), as the harness reads the file.
    let (lines, _) = list(&devlab, &suite, &["--shard", "1/1", "--durations", &file])?;
    let mut times = BTreeMap::new();
    for l in &lines {
        let (id, t) = l.split_once('\t').with_context(|| format!("no time column in `{l}`"))?;
        times.insert(id.to_string(), t.parse::<f64>().ok());
    }
    let total: f64 = times.values().flatten().sum();
    let unknown = times.values().filter(|t| t.is_none()).count();
    let mut results = Vec::new();
    for n in MACHINES {
        let (mut modulo, mut balanced) = (Vec::new(), Vec::new());
        for k in 1..=n {
            let shard = format!("{k}/{n}");
            modulo.push(list(&devlab, &suite, &["--shard", &shard])?.0);
            let (ids, stderr) = list(&devlab, &suite, &["--shard", &shard, "--durations", &file, "--jobs", "1"])?;
            let ids: Vec<String> = ids.iter().map(|l| l.split('\t').next().unwrap_or_default().to_string()).collect();
            let sum: f64 = ids.iter().filter_map(|id| times.get(id).copied().flatten()).fold(0.0, |a, b| a + b);
            let said = predicted_load(&stderr).with_context(|| format!("no prediction for shard {shard}: {stderr}"))?;
            if (said - sum).abs() > 0.05 * (ids.len() + 1) as f64 {
                bail!("shard {shard}: devlab predicts {said} s, its runs' times sum to {sum} s");
            }
            balanced.push(ids);
        }
        let (m, b) = (loads(&modulo, &times), loads(&balanced, &times));
        let ideal = total / n as f64;
        eprintln!("bench shards: {n} machines: ideal {ideal:.0} s, modulo {:.0} s, balanced {:.0} s", max(&m), max(&b));
        results.push(json!({
            "machines": n,
            "ideal_s": ideal,
            "modulo_slowest_s": max(&m),
            "balanced_slowest_s": max(&b),
            "modulo_over_ideal": max(&m) / ideal,
            "balanced_over_ideal": max(&b) / ideal,
            "modulo_shards_s": m,
            "balanced_shards_s": b,
        }));
    }
    let report = json!({
        "benchmark": "shards",
        "what": "slowest shard's wall time (sum of its runs' times), modulo vs balanced split, against total / N",
        "suite": suite,
        "durations": file,
        "runs": times.len(),
        "runs_without_time": unknown,
        "total_s": total,
        "results": results,
    });
    let out_dir = crate::root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("shards.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&report);
    std::fs::write(out_dir.join("shards.md"), &md)?;
    println!("{md}");
    eprintln!("wrote {} and shards.md", out_dir.join("shards.json").display());
    Ok(())
}

fn markdown(r: &serde_json::Value) -> String {
    let mut md = format!(
        "# Shards: the {} suite on N machines\n\nRun times from `{}`: {} runs, {:.0} s in all ({} without a time, counted as 0 s). \
         A machine runs its shard's runs one after another; the suite's wall time is its slowest shard's.\n\n\
         | machines | ideal (total / N) | modulo split: slowest shard | balanced: slowest shard | modulo / ideal | balanced / ideal |\n\
         |---|---|---|---|---|---|\n",
        r["suite"].as_str().unwrap_or_default(),
        Path::new(r["durations"].as_str().unwrap_or_default())
            .strip_prefix(crate::root())
            .map_or_else(|_| r["durations"].as_str().unwrap_or_default().to_string(), |p| p.display().to_string()),
        r["runs"],
        r["total_s"].as_f64().unwrap_or(0.0),
        r["runs_without_time"],
    );
    for x in r["results"].as_array().into_iter().flatten() {
        let f = |k: &str| x[k].as_f64().unwrap_or(0.0);
        md.push_str(&format!(
            "| {} | {:.0} s | {:.0} s | {:.0} s | {:.2} | {:.2} |\n",
            x["machines"],
            f("ideal_s"),
            f("modulo_slowest_s"),
            f("balanced_slowest_s"),
            f("modulo_over_ideal"),
            f("balanced_over_ideal")
        ));
    }
    md
}
