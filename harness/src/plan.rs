//! What a `devlab run` will run: scenario files × boards expanded into jobs
//! with stable ids (`<scenario>@<board>`), sorted, then optionally cut into
//! a deterministic shard (`--shard K/N`: job i goes to shard i mod N, so N
//! CI machines run disjoint parts whose union is the whole run), and named
//! suites (`scenarios/suites/<name>.toml`). `--repeat N` makes N jobs of
//! each pair (`<scenario>@<board>#k`), expanded before sharding so the
//! repetitions spread over the shards. Planning boots nothing.

use crate::board::Board;
use crate::error::{InputError, Result};
use crate::scenario::Scenario;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One scenario on one board.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub scenario: Arc<Scenario>,
    pub board: Board,
    /// Which of `--repeat N` runs (1-based); None without `--repeat`.
    pub repetition: Option<u32>,
}

/// The most runs `--repeat` makes of each scenario × board.
pub const MAX_REPEAT: u32 = 1000;

/// Every (scenario, board) pair, sorted by id so every machine plans alike.
pub fn expand(all: Vec<(Scenario, Vec<Board>)>) -> Vec<Job> {
    let mut jobs: Vec<Job> = all
        .into_iter()
        .flat_map(|(s, boards)| {
            let s = Arc::new(s);
            boards.into_iter().map(move |b| Job {
                id: format!("{}@{}", s.name(), s.run_label(&b)),
                scenario: s.clone(),
                board: b,
                repetition: None,
            })
        })
        .collect();
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    jobs
}

/// `--repeat n`: each job n times, ids `<id>#1` … `<id>#n`, in id order then
/// repetition. With n = 1 the jobs (and ids) are unchanged.
pub fn repeat(jobs: Vec<Job>, n: u32) -> Vec<Job> {
    if n <= 1 {
        return jobs;
    }
    jobs.into_iter()
        .flat_map(|j| (1..=n).map(move |k| Job { id: format!("{}#{k}", j.id), repetition: Some(k), ..j.clone() }))
        .collect()
}

/// `--shard K/N`: the K-th of N disjoint parts (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("`{s}` is not K/N (e.g. 2/4)"))?;
        let k: usize = k.trim().parse().map_err(|_| format!("`{k}` in `{s}` is not a number"))?;
        let n: usize = n.trim().parse().map_err(|_| format!("`{n}` in `{s}` is not a number"))?;
        if n == 0 || k == 0 || k > n {
            return Err(format!("shard `{s}`: need 1 <= K <= N"));
        }
        Ok(Shard { k, n })
    }
}

/// Keep the jobs of one shard.
pub fn shard(jobs: Vec<Job>, shard: Option<Shard>) -> Vec<Job> {
    match shard {
        None => jobs,
        Some(Shard { k, n }) => jobs.into_iter().enumerate().filter(|(i, _)| i % n == k - 1).map(|(_, j)| j).collect(),
    }
}

/// How many machines to run at once: TCG keeps about one core busy per
/// vCPU, so one machine per core, bounded by memory (1 GiB a machine).
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        })
        .map_or(1, |kib| kib / (1024 * 1024));
    cores.min(mem_gib).max(1)
}

/// A named suite: which scenario files (relative to the suite's folder's
/// parent, i.e. `scenarios/`), optionally restricted to some boards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    #[serde(default)]
    pub description: String,
    pub scenarios: Vec<String>,
    #[serde(default)]
    pub boards: Vec<String>,
}

/// The folder named suites live in.
pub fn suites_dir() -> PathBuf {
    crate::rundir::workspace_root().join("scenarios").join("suites")
}

/// Load suite `name`: its scenario paths and board filter.
pub fn load_suite(name: &str) -> Result<(Vec<PathBuf>, Vec<String>)> {
    load_suite_in(&suites_dir(), name)
}

/// Load suite `name` from folder `dir` (scenario paths are relative to its parent).
fn load_suite_in(dir: &Path, name: &str) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        let known = crate::board::list_names(dir).join(", ");
        InputError::new(&path, format!("no suite `{name}` (known: {known})"))
    })?;
    let suite: Suite = toml::from_str(&text).map_err(|e| InputError::from_toml(&path, &text, 0, &e))?;
    if suite.scenarios.is_empty() {
        let offset = text.lines().take_while(|l| !l.trim_start().starts_with("scenarios")).map(|l| l.len() + 1).sum();
        return Err(InputError::new(&path, format!("suite `{name}` names no scenario: it would run nothing"))
            .at(&text, offset)
            .field("scenarios")
            .into());
    }
    let base = dir.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for s in &suite.scenarios {
        let p = base.join(s);
        if !p.exists() {
            let offset = text.find(&format!("\"{s}\"")).unwrap_or(0);
            return Err(InputError::new(&path, format!("scenario `{s}` does not exist ({})", p.display()))
                .at(&text, offset)
                .field("scenarios")
                .into());
        }
        files.push(p);
    }
    Ok((files, suite.boards))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs() -> Vec<Job> {
        let root = crate::rundir::workspace_root();
        let mut all = Vec::new();
        for f in ["boot-smoke", "env-fallback", "slot-switch"] {
            for s in Scenario::load_variants(&root.join(format!("scenarios/{f}.toml"))).unwrap() {
                let boards = s.resolve_boards().unwrap();
                all.push((s, boards));
            }
        }
        expand(all)
    }

    #[test]
    fn jobs_are_sorted_with_stable_ids() {
        let ids: Vec<String> = jobs().into_iter().map(|j| j.id).collect();
        assert_eq!(ids[0], "boot-smoke@qemu-aarch64");
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn shards_are_disjoint_and_their_union_is_the_whole_run() {
        let all: Vec<String> = jobs().into_iter().map(|j| j.id).collect();
        for n in 1..=all.len() + 1 {
            let mut union = Vec::new();
            for k in 1..=n {
                let part: Vec<String> = shard(jobs(), Some(Shard { k, n })).into_iter().map(|j| j.id).collect();
                assert!(part.len() <= all.len().div_ceil(n));
                union.extend(part);
            }
            let mut sorted = union.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), union.len(), "shards overlap for n={n}");
            assert_eq!(sorted, all, "union differs for n={n}");
        }
    }

    #[test]
    fn repeat_makes_numbered_runs_that_shards_spread() {
        let base = jobs();
        assert!(repeat(jobs(), 1).iter().map(|j| &j.id).eq(base.iter().map(|j| &j.id)), "--repeat 1 changes nothing");
        let rep = repeat(jobs(), 3);
        assert_eq!(rep.len(), base.len() * 3);
        assert_eq!(rep[0].id, format!("{}#1", base[0].id));
        assert_eq!(rep[2].id, format!("{}#3", base[0].id));
        assert_eq!(rep[2].repetition, Some(3));
        assert_eq!(rep[3].id, format!("{}#1", base[1].id));
        assert!(repeat(jobs(), 1).iter().all(|j| j.repetition.is_none()));
        // Shard 1/3 and 2/3 each get one repetition of the first pair.
        let one: Vec<String> = shard(repeat(jobs(), 3), Some(Shard { k: 1, n: 3 })).into_iter().map(|j| j.id).collect();
        let two: Vec<String> = shard(repeat(jobs(), 3), Some(Shard { k: 2, n: 3 })).into_iter().map(|j| j.id).collect();
        assert_eq!((one[0].clone(), two[0].clone()), (format!("{}#1", base[0].id), format!("{}#2", base[0].id)));
    }

    #[test]
    fn a_suite_without_scenarios_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let suites = d.path().join("suites");
        std::fs::create_dir_all(&suites).unwrap();
        std::fs::write(suites.join("empty.toml"), "description = \"nothing\"\nscenarios = []\n").unwrap();
        let err = load_suite_in(&suites, "empty").unwrap_err().to_string();
        assert!(err.contains("empty.toml:2:1: field `scenarios`: suite `empty` names no scenario"), "{err}");
    }

    #[test]
    fn shard_syntax_is_checked() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { k: 2, n: 4 }));
        assert!("0/4".parse::<Shard>().is_err());
        assert!("5/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("K/N"));
    }

    #[test]
    fn shipped_suites_resolve() {
        for name in ["smoke", "release", "board-validation"] {
            let (files, _) = load_suite(name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!files.is_empty(), "{name}");
        }
        assert!(load_suite("nope").unwrap_err().to_string().contains("no suite `nope`"));
    }

    #[test]
    fn default_jobs_is_at_least_one() {
        assert!(default_jobs() >= 1);
    }
}
