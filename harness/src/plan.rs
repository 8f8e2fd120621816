//! What a `devlab run` will run: scenario files × boards expanded into jobs
//! with stable ids (`<scenario>@<board>`), sorted, then optionally cut into
//! a deterministic shard (`--shard K/N`), and named suites
//! (`scenarios/suites/<name>.toml`). `--repeat N` makes N jobs of each pair
//! (`<scenario>@<board>#k`), expanded before sharding so the repetitions
//! spread over the shards. Planning boots nothing.
//!
//! Sharding ([`assign`]) is a pure function of the whole job list (and of
//! the durations file), so N CI machines each compute the same split and run
//! disjoint parts whose union is the whole run. Without `--durations`, job i
//! goes to shard i mod N. With `--durations FILE` (an earlier `summary.json`,
//! read by [`load_durations`]): the jobs with a known time, longest first
//! (ties by id), each go to the shard with the least known time so far
//! (ties: the lowest shard); the jobs with no known time are then dealt as
//! without durations, the i-th of them (in id order) to shard i mod N. A
//! repetition `<id>#k` takes the time of `<id>`: the median of the file's
//! runs of it (every repetition in it; runs that did not run are left out).

use crate::board::Board;
use crate::error::{InputError, Result};
use crate::scenario::Scenario;
use serde::Deserialize;
use std::collections::BTreeMap;
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

/// Run times from an earlier run (`--durations FILE`), by base run id
/// (`<scenario>@<board>`, without a repetition's `#k`), in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durations {
    by_id: BTreeMap<String, f64>,
}

impl Durations {
    /// From (run id, seconds) pairs: each base id gets the median of its runs.
    pub fn from_runs(runs: impl IntoIterator<Item = (String, f64)>) -> Durations {
        let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (id, s) in runs {
            all.entry(base_id(&id).to_string()).or_default().push(s);
        }
        let by_id = all
            .into_iter()
            .filter_map(|(id, times)| crate::report::spread(&times).map(|(_, median, _)| (id, median)))
            .collect();
        Durations { by_id }
    }

    /// The time known for run `id` (a repetition takes its base id's).
    pub fn get(&self, id: &str) -> Option<f64> {
        self.by_id.get(base_id(id)).copied()
    }

    /// How many base ids have a time.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A run id without its repetition suffix: `a@b#3` → `a@b`.
fn base_id(id: &str) -> &str {
    match id.rsplit_once('#') {
        Some((base, k)) if !k.is_empty() && k.bytes().all(|c| c.is_ascii_digit()) => base,
        _ => id,
    }
}

/// The part of a `summary.json` that `--durations` reads.
#[derive(Deserialize)]
struct PastSummary {
    runs: Vec<PastRun>,
}

#[derive(Deserialize)]
struct PastRun {
    id: String,
    duration_s: f64,
    #[serde(default)]
    status: Option<crate::report::Status>,
}

/// `--durations FILE`: the runs of an earlier `summary.json` (FILE, or
/// FILE/summary.json for a report folder). Runs that did not run are left
/// out; a file that is missing, is not a summary, or has a negative or
/// non-finite time is bad input naming the file.
pub fn load_durations(path: &Path) -> Result<Durations> {
    let file = if path.is_dir() { path.join("summary.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        InputError::new(
            &file,
            format!("cannot read the durations file ({e}): give an earlier run's summary.json or its report folder"),
        )
    })?;
    let past: PastSummary = serde_json::from_str(&text).map_err(|e| {
        // serde_json says where after " at line"; the error names it as file:line:column.
        let what = e.to_string();
        let what = what.split(" at line ").next().unwrap_or_default();
        let mut err = InputError::new(&file, format!("not a devlab summary.json ({what}): cannot read run durations"));
        if e.line() > 0 {
            (err.line, err.column) = (Some(e.line()), Some(e.column()));
        }
        err
    })?;
    let mut runs = Vec::new();
    for r in past.runs {
        if !(r.duration_s.is_finite() && r.duration_s >= 0.0) {
            let offset = text.find(&format!("\"{}\"", r.id)).unwrap_or(0);
            let msg = format!("run `{}` has duration_s {}: need a time of 0 s or more", r.id, r.duration_s);
            return Err(InputError::new(&file, msg).at(&text, offset).field("duration_s").into());
        }
        if r.status != Some(crate::report::Status::NotRun) {
            runs.push((r.id, r.duration_s));
        }
    }
    Ok(Durations::from_runs(runs))
}

/// Which of `n` shards (0-based) each of `ids` goes to (see the module doc):
/// without durations id i goes to shard i mod n; with them, the ids with a
/// known time are balanced longest first onto the least-loaded shard, and
/// the i-th id with no known time goes to shard i mod n. Pure: the same
/// ids and durations give the same split on every machine.
pub fn assign(ids: &[&str], n: usize, durations: Option<&Durations>) -> Vec<usize> {
    let n = n.max(1);
    let Some(d) = durations else { return (0..ids.len()).map(|i| i % n).collect() };
    let mut out = vec![0; ids.len()];
    // Whole milliseconds: integer loads compare exactly, so ties are real ties.
    let mut known: Vec<(u64, &str, usize)> = Vec::new();
    let mut unknown = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match d.get(id) {
            Some(s) => known.push(((s * 1000.0).round() as u64, id, i)),
            None => unknown.push(i),
        }
    }
    known.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    let mut load = vec![0u64; n];
    for (ms, _, i) in known {
        let least = (0..n).min_by_key(|&s| (load[s], s)).expect("n >= 1");
        load[least] += ms;
        out[i] = least;
    }
    for (j, i) in unknown.into_iter().enumerate() {
        out[i] = j % n;
    }
    out
}

/// One shard's jobs, and what the durations file predicts for them.
#[derive(Debug)]
pub struct ShardPlan {
    pub jobs: Vec<Job>,
    /// Sum of the jobs' known times, seconds (None without durations).
    pub load_s: Option<f64>,
    /// The longest known time of one of its jobs, seconds.
    pub longest_s: f64,
    /// Its jobs the durations file has no time for.
    pub unknown: usize,
}

impl ShardPlan {
    /// The shard's predicted wall time with `parallel` machines at once:
    /// its known load spread over them, at least its longest run (it
    /// assumes the durations were measured at the same `--jobs`).
    pub fn predicted_wall_s(&self, parallel: usize) -> Option<f64> {
        self.load_s.map(|load| (load / parallel.max(1) as f64).max(self.longest_s))
    }
}

/// Keep the jobs of one shard (all of them without `--shard`), split as
/// [`assign`] says, with the prediction `durations` give.
pub fn shard(jobs: Vec<Job>, shard: Option<Shard>, durations: Option<&Durations>) -> ShardPlan {
    let jobs = match shard {
        None => jobs,
        Some(Shard { k, n }) => {
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let to = assign(&ids, n, durations);
            jobs.into_iter().zip(to).filter(|(_, s)| *s == k - 1).map(|(j, _)| j).collect()
        }
    };
    let known: Vec<f64> = durations.map_or(Vec::new(), |d| jobs.iter().filter_map(|j| d.get(&j.id)).collect());
    ShardPlan {
        // A fold, not sum(): an empty shard's load is 0.0, not -0.0.
        load_s: durations.map(|_| known.iter().fold(0.0, |a, b| a + b)),
        longest_s: known.iter().copied().fold(0.0, f64::max),
        unknown: durations.map_or(0, |_| jobs.len() - known.len()),
        jobs,
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
                let part: Vec<String> =
                    shard(jobs(), Some(Shard { k, n }), None).jobs.into_iter().map(|j| j.id).collect();
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
        let one: Vec<String> =
            shard(repeat(jobs(), 3), Some(Shard { k: 1, n: 3 }), None).jobs.into_iter().map(|j| j.id).collect();
        let two: Vec<String> =
            shard(repeat(jobs(), 3), Some(Shard { k: 2, n: 3 }), None).jobs.into_iter().map(|j| j.id).collect();
        assert_eq!((one[0].clone(), two[0].clone()), (format!("{}#1", base[0].id), format!("{}#2", base[0].id)));
    }

    fn durations(pairs: &[(&str, f64)]) -> Durations {
        Durations::from_runs(pairs.iter().map(|(id, s)| (id.to_string(), *s)))
    }

    /// Each shard's summed known time under `assign`.
    fn loads(ids: &[&str], n: usize, d: &Durations) -> Vec<f64> {
        let mut load = vec![0.0; n];
        for (id, s) in ids.iter().zip(assign(ids, n, Some(d))) {
            load[s] += d.get(id).unwrap_or(0.0);
        }
        load
    }

    /// Deterministic pseudo-random times (a small LCG), 1 to 600 s.
    fn pseudo_random_times(count: usize, seed: u64) -> Vec<(String, f64)> {
        let mut x = seed;
        (0..count)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (format!("s{i:02}@b"), ((x >> 33) % 600 + 1) as f64)
            })
            .collect()
    }

    #[test]
    fn without_durations_the_split_is_by_index_modulo_n() {
        let ids = ["a", "b", "c", "d", "e"];
        assert_eq!(assign(&ids, 2, None), [0, 1, 0, 1, 0]);
        assert_eq!(assign(&ids, 3, None), [0, 1, 2, 0, 1]);
        // Durations that know none of the runs change nothing.
        assert_eq!(assign(&ids, 3, Some(&durations(&[("zz", 5.0)]))), [0, 1, 2, 0, 1]);
    }

    #[test]
    fn balanced_split_beats_a_badly_unbalanced_modulo_split() {
        // Modulo 2 puts every long run on the first shard: 2400 s against 40 s.
        let ids = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let d = durations(&[
            ("a", 600.0),
            ("b", 10.0),
            ("c", 600.0),
            ("d", 10.0),
            ("e", 600.0),
            ("f", 10.0),
            ("g", 600.0),
            ("h", 10.0),
        ]);
        let modulo_max = [0, 1]
            .map(|s| ids.iter().enumerate().filter(|(i, _)| i % 2 == s).map(|(_, id)| d.get(id).unwrap()).sum::<f64>());
        assert_eq!(modulo_max, [2400.0, 40.0]);
        // Longest first (ties by id): a→0, c→1, e→0, g→1, then b, d, f, h.
        assert_eq!(assign(&ids, 2, Some(&d)), [0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(loads(&ids, 2, &d), [1220.0, 1220.0]);
    }

    #[test]
    fn balanced_max_load_is_within_the_greedy_bound() {
        for seed in 1..=20 {
            let runs = pseudo_random_times(23, seed);
            let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
            let d = Durations::from_runs(runs.clone());
            let total: f64 = runs.iter().map(|r| r.1).sum();
            let longest = runs.iter().map(|r| r.1).fold(0.0, f64::max);
            for n in 1..=5 {
                let max = loads(&ids, n, &d).into_iter().fold(0.0, f64::max);
                assert!(max <= total / n as f64 + longest, "seed {seed}, n {n}: {max} > {total}/{n} + {longest}");
            }
        }
    }

    #[test]
    fn the_split_is_the_same_whatever_the_order_of_the_known_runs() {
        let runs = pseudo_random_times(17, 7);
        let d = Durations::from_runs(runs.clone());
        let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
        let mut reversed = ids.clone();
        reversed.reverse();
        let a: BTreeMap<&str, usize> = ids.iter().copied().zip(assign(&ids, 4, Some(&d))).collect();
        let b: BTreeMap<&str, usize> = reversed.iter().copied().zip(assign(&reversed, 4, Some(&d))).collect();
        assert_eq!(a, b);
        assert_eq!(assign(&ids, 4, Some(&d)), assign(&ids, 4, Some(&d)));
    }

    #[test]
    fn unknown_runs_are_dealt_by_index_modulo_n_among_themselves() {
        let ids = ["a", "b", "c", "d", "e", "f"];
        // Only b and e are known: they are balanced (e→0, b→1); a, c, d, f
        // are the unknown runs 0, 1, 2, 3: shards 0, 1, 0, 1.
        let d = durations(&[("b", 10.0), ("e", 20.0)]);
        assert_eq!(assign(&ids, 2, Some(&d)), [0, 1, 1, 0, 0, 1]);
    }

    #[test]
    fn repetitions_take_their_base_runs_median_time() {
        let d = durations(&[("a@x#1", 10.0), ("a@x#2", 30.0), ("a@x#3", 20.0), ("b@x", 5.0)]);
        assert_eq!(d.len(), 2);
        assert_eq!(d.get("a@x"), Some(20.0));
        assert_eq!(d.get("a@x#7"), Some(20.0));
        assert_eq!(d.get("b@x#2"), Some(5.0));
        assert_eq!(d.get("c@x"), None);
        assert_eq!(base_id("a@x#"), "a@x#", "not a repetition");
    }

    #[test]
    fn balanced_shards_are_disjoint_and_their_union_is_the_whole_run() {
        let all: Vec<String> = jobs().into_iter().map(|j| j.id).collect();
        // Times for every other run (so both rules are used), uneven.
        let d =
            Durations::from_runs(all.iter().step_by(2).enumerate().map(|(i, id)| (id.clone(), (i * 37 % 11) as f64)));
        for n in 1..=5 {
            let mut union = Vec::new();
            let (mut load, mut unknown) = (0.0, 0);
            for k in 1..=n {
                let part = shard(jobs(), Some(Shard { k, n }), Some(&d));
                load += part.load_s.unwrap();
                unknown += part.unknown;
                union.extend(part.jobs.into_iter().map(|j| j.id));
            }
            let mut sorted = union.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), union.len(), "shards overlap for n={n}");
            assert_eq!(sorted, all, "union differs for n={n}");
            assert_eq!(unknown, all.len() / 2, "n={n}");
            let total: f64 = all.iter().filter_map(|id| d.get(id)).sum();
            assert!((load - total).abs() < 1e-9, "n={n}: {load} vs {total}");
        }
    }

    #[test]
    fn predicted_wall_time_spreads_the_load_but_is_at_least_the_longest_run() {
        let p = ShardPlan { jobs: Vec::new(), load_s: Some(100.0), longest_s: 60.0, unknown: 0 };
        assert_eq!(p.predicted_wall_s(1), Some(100.0));
        assert_eq!(p.predicted_wall_s(4), Some(60.0));
        let p = ShardPlan { longest_s: 10.0, ..p };
        assert_eq!(p.predicted_wall_s(4), Some(25.0));
        assert_eq!(ShardPlan { load_s: None, ..p }.predicted_wall_s(1), None);
        let empty = shard(Vec::new(), Some(Shard { k: 1, n: 2 }), Some(&durations(&[("a", 1.0)])));
        assert!(empty.load_s.is_some_and(|l| l == 0.0 && l.is_sign_positive()), "{:?}", empty.load_s);
    }

    #[test]
    fn durations_load_from_a_summary_or_its_folder_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let summary = d.path().join("summary.json");
        std::fs::write(
            &summary,
            r#"{"total": 3, "duration_s": 9.0, "runs": [
                {"id": "a@x", "scenario": "a", "board": "x", "status": "passed", "attempts": 1, "duration_s": 12.5},
                {"id": "b@x", "scenario": "b", "board": "x", "status": "not_run", "attempts": 0, "duration_s": 0.0},
                {"id": "c@x", "duration_s": 3.0}]}"#,
        )
        .unwrap();
        for p in [summary.as_path(), d.path()] {
            let got = load_durations(p).unwrap();
            assert_eq!((got.get("a@x"), got.get("b@x"), got.get("c@x")), (Some(12.5), None, Some(3.0)));
        }
        let missing = d.path().join("nope.json");
        let err = load_durations(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: cannot read the durations file", missing.display())), "{err}");
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, "{\"runs\": [\n  {\"id\": 3}]}").unwrap();
        let err = load_durations(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2:", bad.display())) && err.contains("not a devlab summary.json"),
            "{err}"
        );
        std::fs::write(&bad, r#"{"runs": [{"id": "a@x", "duration_s": -1}]}"#).unwrap();
        let err = load_durations(&bad).unwrap_err().to_string();
        assert!(err.contains("field `duration_s`: run `a@x` has duration_s -1"), "{err}");
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
