//! Reports of a `devlab run` for CI and people: JUnit XML (GitLab, Jenkins
//! and GitHub read it), a JSON summary, a Markdown table and an HTML page
//! with each run's timeline drawn (`html`), written to the
//! report folder. A pass after a retry is `flaky`, never a plain pass; a run
//! that never started (interrupted) is `not_run`. Files are written to a
//! temp name and renamed, so a report is complete or absent, never torn.
//!
//! With `--repeat N` every scenario × board is run N times, each its own
//! record; [`stats`] aggregates them per scenario × board (runs, failures,
//! failure rate, min/median/max duration) and per step (keyed by index and
//! action, from each attempt's step times). The stats are computed from the
//! records alone, so `report merge` recomputes them for merged shards.
//!
//! A shard's report (`--shard K/N`) carries its [`ShardTimes`]: predicted
//! (from `--durations`) and actual wall time; `report merge` lists every
//! shard's in the merged report. Reports without them still merge.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    /// Passed, but only after a retry.
    Flaky,
    /// The device under test failed a step.
    Failed,
    /// Bad input or infrastructure failure.
    Error,
    NotRun,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Passed => "PASS",
            Status::Flaky => "FLAKY",
            Status::Failed => "FAIL",
            Status::Error => "ERROR",
            Status::NotRun => "NOT RUN",
        }
    }
}

/// One scenario × board result.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Record {
    pub id: String,
    pub scenario: String,
    pub board: String,
    pub status: Status,
    pub attempts: u32,
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// Which of `--repeat N` runs this is (1-based); absent without `--repeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition: Option<u32>,
    /// The steps that ran, every attempt's, in order (absent in reports
    /// written before step times were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

impl Record {
    /// The record of a job that never started (interrupted).
    pub fn not_run(id: &str, scenario: &str, board: &str, repetition: Option<u32>) -> Record {
        Record {
            id: id.to_string(),
            scenario: scenario.to_string(),
            board: board.to_string(),
            status: Status::NotRun,
            attempts: 0,
            duration_s: 0.0,
            message: None,
            run_dir: None,
            repetition,
            steps: Vec::new(),
        }
    }

    /// Report order: by id, repetitions in numeric order (`#2` before `#10`).
    fn order_key(&self) -> (&str, u32) {
        match self.repetition {
            Some(k) => (self.id.rsplit_once('#').map_or(self.id.as_str(), |(b, _)| b), k),
            None => (self.id.as_str(), 0),
        }
    }

    /// The JUnit test name: the board, and `#k` for a repetition.
    fn case_name(&self) -> String {
        match self.repetition {
            Some(k) => format!("{} #{k}", self.board),
            None => self.board.clone(),
        }
    }
}

/// One step of one attempt of a run, as reported: the step as
/// `timeline.json` keeps it, and which attempt it was (the JSON is flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based attempt (retries make more than one).
    pub attempt: u32,
    #[serde(flatten)]
    pub step: crate::timeline::StepSpan,
}

impl StepRecord {
    pub fn new(attempt: u32, s: &crate::runner::StepTime) -> StepRecord {
        StepRecord { attempt, step: s.into() }
    }
}

impl std::ops::Deref for StepRecord {
    type Target = crate::timeline::StepSpan;
    fn deref(&self) -> &crate::timeline::StepSpan {
        &self.step
    }
}

/// The runs of one scenario × board taken together (`--repeat`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    pub scenario: String,
    pub board: String,
    /// Runs that ran (a run retried to a pass counts once).
    pub runs: usize,
    /// Runs that ended failed or in error, after their retries.
    pub failures: usize,
    /// Runs that passed only on a retry.
    pub flaky: usize,
    pub not_run: usize,
    /// `failures / runs`; null when nothing ran.
    pub failure_rate: Option<f64>,
    /// Wall time of a run (all its attempts), seconds; null when nothing ran.
    pub min_s: Option<f64>,
    pub median_s: Option<f64>,
    pub max_s: Option<f64>,
    pub steps: Vec<StepStats>,
}

/// One step of a scenario × board over every attempt of every run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    pub index: usize,
    pub action: String,
    /// Times it ran: each attempt counts (a step failed then passed on
    /// retry is 1 failure in 2 runs); steps after a failure or restored
    /// from a checkpoint did not run.
    pub runs: usize,
    pub failures: usize,
    pub failure_rate: f64,
    pub min_s: f64,
    pub median_s: f64,
    pub max_s: f64,
}

/// Min, median (mean of the middle two for an even count) and max; None
/// for no values.
pub(crate) fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some((v[0], median, v[n - 1]))
}

/// Per scenario × board figures, sorted by scenario then board.
pub fn stats(records: &[Record]) -> Vec<GroupStats> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry((r.scenario.as_str(), r.board.as_str())).or_default().push(r);
    }
    groups.into_iter().map(|((scenario, board), rs)| group_stats(scenario, board, &rs)).collect()
}

fn group_stats(scenario: &str, board: &str, rs: &[&Record]) -> GroupStats {
    let ran: Vec<&Record> = rs.iter().copied().filter(|r| r.status != Status::NotRun).collect();
    let failures = ran.iter().filter(|r| matches!(r.status, Status::Failed | Status::Error)).count();
    let durations: Vec<f64> = ran.iter().map(|r| r.duration_s).collect();
    let spread = spread(&durations);
    let mut by_step: BTreeMap<(usize, &str), Vec<&StepRecord>> = BTreeMap::new();
    for s in ran.iter().flat_map(|r| &r.steps) {
        by_step.entry((s.index, s.action.as_str())).or_default().push(s);
    }
    let steps = by_step
        .into_iter()
        .map(|((index, action), ss)| {
            let failures = ss.iter().filter(|s| !s.passed).count();
            let times: Vec<f64> = ss.iter().map(|s| s.duration_s).collect();
            let (min_s, median_s, max_s) = self::spread(&times).expect("a step entry has at least one run");
            StepStats {
                index,
                action: action.to_string(),
                runs: ss.len(),
                failures,
                failure_rate: failures as f64 / ss.len() as f64,
                min_s,
                median_s,
                max_s,
            }
        })
        .collect();
    GroupStats {
        scenario: scenario.to_string(),
        board: board.to_string(),
        runs: ran.len(),
        failures,
        flaky: ran.iter().filter(|r| r.status == Status::Flaky).count(),
        not_run: rs.len() - ran.len(),
        failure_rate: (!ran.is_empty()).then(|| failures as f64 / ran.len() as f64),
        min_s: spread.map(|s| s.0),
        median_s: spread.map(|s| s.1),
        max_s: spread.map(|s| s.2),
        steps,
    }
}

/// Whether the stats say more than the per-run table: some scenario ×
/// board has more than one run (`--repeat`, or merged repeated shards).
pub fn repeated(stats: &[GroupStats]) -> bool {
    stats.iter().any(|g| g.runs + g.not_run > 1)
}

/// `12.3 s`, or `-` for nothing.
pub fn secs(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1} s"))
}

/// `25%`, or `-` for nothing.
pub fn percent(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0))
}

/// One shard's wall time, predicted (from `--durations`) and actual, in its
/// `summary.json` (`shard`) and in a merged one (`shards`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardTimes {
    pub k: usize,
    pub n: usize,
    /// Runs the shard had.
    #[serde(default)]
    pub runs: usize,
    /// Predicted wall time, seconds (absent without `--durations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_s: Option<f64>,
    /// Its runs the durations file had no time for (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_runs: Option<usize>,
    /// Wall time the shard took, seconds.
    pub actual_s: f64,
}

/// The shards table of `summary.md`.
fn markdown_shards(shards: &[ShardTimes]) -> String {
    let mut md = String::from("\n## Shards\n\n| shard | runs | predicted | actual |\n|---|---|---|---|\n");
    for s in shards {
        let unknown = s.unknown_runs.filter(|&u| u > 0).map_or(String::new(), |u| format!(" ({u} unknown)"));
        md.push_str(&format!(
            "| {}/{} | {} | {}{unknown} | {} |\n",
            s.k,
            s.n,
            s.runs,
            secs(s.predicted_s),
            secs(Some(s.actual_s))
        ));
    }
    md
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    total: usize,
    passed: usize,
    flaky: usize,
    failed: usize,
    errors: usize,
    not_run: usize,
    duration_s: f64,
    /// CPU time (user + system) the harness process itself used: not QEMU's.
    harness_cpu_s: f64,
    /// Per scenario × board: runs, failures, durations, and per step.
    stats: Vec<GroupStats>,
    /// A shard's own figures (`--shard`).
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<&'a ShardTimes>,
    /// Every shard's figures, in a merged report.
    #[serde(skip_serializing_if = "<[ShardTimes]>::is_empty")]
    shards: &'a [ShardTimes],
    /// What the report is about (`devlab board validate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    heading: Option<&'a Heading>,
    runs: &'a [Record],
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            tv(u.user_time()) + tv(u.system_time())
        })
        .unwrap_or(0.0)
}

fn count(records: &[Record], s: Status) -> usize {
    records.iter().filter(|r| r.status == s).count()
}

/// Escape text for XML and HTML (control characters XML forbids dropped).
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters (consoles print them).
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite, a testcase per run (classname = scenario,
/// name = board, `board #k` for repetition k). Each step that ran is a
/// property (`step.<index>.<action>`, prefixed `attempt.<a>.` when the run
/// was retried) whose value is its start and duration.
pub fn junit(records: &[Record], duration_s: f64) -> String {
    let failures = count(records, Status::Failed);
    let errors = count(records, Status::Error);
    let skipped = count(records, Status::NotRun);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"devlab\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{duration_s:.3}\">\n",
        records.len()
    ));
    x.push_str(&format!(
        "  <testsuite name=\"devlab\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{duration_s:.3}\">\n",
        records.len()
    ));
    for r in records {
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&r.scenario),
            xml_escape(&r.case_name()),
            r.duration_s
        ));
        let props = junit_properties(r);
        if r.status == Status::Passed && props.is_empty() {
            x.push_str("/>\n");
            continue;
        }
        x.push_str(">\n");
        if !props.is_empty() {
            x.push_str("      <properties>");
            for (name, value) in &props {
                x.push_str(&format!("<property name=\"{}\" value=\"{}\"/>", xml_escape(name), xml_escape(value)));
            }
            x.push_str("</properties>\n");
        }
        let msg = r.message.as_deref().unwrap_or("");
        let first = msg.lines().next().unwrap_or("");
        let dir = r.run_dir.as_ref().map(|d| format!("run directory: {}\n", d.display())).unwrap_or_default();
        match r.status {
            Status::Passed => {}
            Status::Flaky => x.push_str(&format!(
                "      <system-out>flaky: passed on attempt {}\n{}</system-out>\n",
                r.attempts,
                xml_escape(&format!("{dir}{msg}"))
            )),
            Status::Failed | Status::Error => {
                let tag = if r.status == Status::Failed { "failure" } else { "error" };
                x.push_str(&format!(
                    "      <{tag} message=\"{}\">{}</{tag}>\n",
                    xml_escape(first),
                    xml_escape(&format!("{dir}{msg}"))
                ));
            }
            Status::NotRun => {
                let why = r.message.as_deref().unwrap_or("not run (interrupted)");
                x.push_str(&format!("      <skipped message=\"{}\"/>\n", xml_escape(why)))
            }
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A run's JUnit properties: flaky and attempts, its repetition, and each
/// step's start and duration.
fn junit_properties(r: &Record) -> Vec<(String, String)> {
    let mut props = Vec::new();
    if r.status == Status::Flaky {
        props.push(("flaky".to_string(), "true".to_string()));
        props.push(("attempts".to_string(), r.attempts.to_string()));
    }
    if let Some(k) = r.repetition {
        props.push(("repetition".to_string(), k.to_string()));
    }
    let retried = r.steps.iter().any(|s| s.attempt > 1);
    for s in &r.steps {
        let attempt = if retried { format!("attempt.{}.", s.attempt) } else { String::new() };
        props.push((
            format!("{attempt}step.{}.{}", s.index, s.action),
            format!(
                "start_s={:.3} duration_s={:.3} {} (line {})",
                s.start_s,
                s.duration_s,
                if s.passed { "passed" } else { "failed" },
                s.line
            ),
        ));
    }
    props
}

/// A Markdown table, one row per run; with repeated runs, then a table per
/// scenario × board and one of the steps that failed at least once.
pub fn markdown(records: &[Record], duration_s: f64) -> String {
    let mut md = format!(
        "# devlab run: {} passed, {} flaky, {} failed, {} errors, {} not run ({duration_s:.1} s)\n\n| scenario | board | result | attempts | time | run directory / message |\n|---|---|---|---|---|---|\n",
        count(records, Status::Passed),
        count(records, Status::Flaky),
        count(records, Status::Failed),
        count(records, Status::Error),
        count(records, Status::NotRun),
    );
    for r in records {
        let detail = match (&r.status, &r.message) {
            (Status::Failed | Status::Error, Some(m)) => m.lines().next().unwrap_or("").replace('|', "\\|"),
            _ => r.run_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} s | {} |\n",
            r.scenario,
            r.case_name(),
            r.status.word(),
            r.attempts,
            r.duration_s,
            detail
        ));
    }
    let stats = stats(records);
    if repeated(&stats) {
        md.push_str(&markdown_stats(&stats));
    }
    md
}

/// The repeated-runs tables of `summary.md`.
fn markdown_stats(stats: &[GroupStats]) -> String {
    let mut md = String::from(
        "\n## Repeated runs\n\n| scenario | board | runs | failed | flaky | failure rate | min | median | max |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for g in stats {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            g.scenario,
            g.board,
            g.runs,
            g.failures,
            g.flaky,
            percent(g.failure_rate),
            secs(g.min_s),
            secs(g.median_s),
            secs(g.max_s)
        ));
    }
    md.push_str("\n## Steps that failed at least once\n\n");
    let failed: Vec<(&GroupStats, &StepStats)> =
        stats.iter().flat_map(|g| g.steps.iter().filter(|s| s.failures > 0).map(move |s| (g, s))).collect();
    if failed.is_empty() {
        md.push_str("No step failed (every step's times are in summary.json and report.html).\n");
        return md;
    }
    md.push_str("| scenario | board | step | runs | failed | failure rate | min | median | max |\n|---|---|---|---|---|---|---|---|---|\n");
    for (g, s) in failed {
        md.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} | {} | {} |\n",
            g.scenario,
            g.board,
            s.index,
            s.action,
            s.runs,
            s.failures,
            percent(Some(s.failure_rate)),
            secs(Some(s.min_s)),
            secs(Some(s.median_s)),
            secs(Some(s.max_s))
        ));
    }
    md
}

fn write_atomic(path: &Path, body: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// What `report merge` joined: runs, the longest shard's wall time, and
/// the shards' own figures (of the reports that have them, by shard).
#[derive(Debug, PartialEq)]
pub struct Merged {
    pub runs: usize,
    pub duration_s: f64,
    pub shards: Vec<ShardTimes>,
}

/// Merge the `summary.json` of several report folders (one per CI shard)
/// into one report: every run once, in id order; a run present in two
/// shards is an error (the shards were not disjoint).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged, String> {
    let mut all: Vec<Record> = Vec::new();
    let mut duration: f64 = 0.0;
    let mut shards = Vec::new();
    for d in dirs {
        let path = d.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let runs: Vec<Record> =
            serde_json::from_value(v["runs"].clone()).map_err(|e| format!("{}: field `runs`: {e}", path.display()))?;
        duration = duration.max(v["duration_s"].as_f64().unwrap_or(0.0));
        if let Some(s) = v.get("shard") {
            let s: ShardTimes =
                serde_json::from_value(s.clone()).map_err(|e| format!("{}: field `shard`: {e}", path.display()))?;
            shards.push(s);
        }
        for r in runs {
            if all.iter().any(|a| a.id == r.id) {
                return Err(format!("{} appears in more than one report (were the shards disjoint?)", r.id));
            }
            all.push(r);
        }
    }
    all.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    shards.sort_by_key(|s: &ShardTimes| (s.n, s.k));
    write_all(out, &all, duration, None, &shards, None).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Merged { runs: all.len(), duration_s: duration, shards })
}

/// Write `junit.xml`, `summary.json`, `summary.md` and `report.html` into `dir`.
pub fn write(dir: &Path, records: &[Record], duration_s: f64) -> std::io::Result<()> {
    write_all(dir, records, duration_s, None, &[], None)
}

/// [`write`] for one shard's report, with its figures (`--shard`).
pub fn write_shard(dir: &Path, records: &[Record], duration_s: f64, shard: Option<&ShardTimes>) -> std::io::Result<()> {
    write_all(dir, records, duration_s, shard, &[], None)
}

/// What a report is about, shown at its head (`devlab board validate`: the
/// board's identity as read from its console), in every format.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Heading {
    pub title: String,
    /// (what, value), in order: `U-Boot`, `CPU`, `serial` …
    pub facts: Vec<(String, String)>,
}

/// [`write_shard`] headed with `heading`.
pub fn write_headed(
    dir: &Path,
    records: &[Record],
    duration_s: f64,
    shard: Option<&ShardTimes>,
    heading: Option<&Heading>,
) -> std::io::Result<()> {
    write_all(dir, records, duration_s, shard, &[], heading)
}

/// `heading` in Markdown: a title and a two-column table.
fn markdown_heading(h: &Heading) -> String {
    let mut md = format!(
        "# {}

| | |
|---|---|
",
        h.title
    );
    for (k, v) in &h.facts {
        md.push_str(&format!(
            "| {k} | {} |
",
            v.replace('|', "\\|")
        ));
    }
    md.push('\n');
    md
}

/// `heading` as JUnit `<properties>` of the test suite (`board.<what>`).
fn junit_with_heading(x: String, h: &Heading) -> String {
    let mut props = format!("    <properties>\n      <property name=\"title\" value=\"{}\"/>\n", xml_escape(&h.title));
    for (k, v) in &h.facts {
        let name = format!("board.{}", k.to_lowercase().replace(' ', "_"));
        props.push_str(&format!("      <property name=\"{}\" value=\"{}\"/>\n", xml_escape(&name), xml_escape(v)));
    }
    props.push_str("    </properties>\n");
    // After the `<testsuite …>` line.
    match x.find("  <testsuite ").and_then(|i| x[i..].find('\n').map(|j| i + j + 1)) {
        Some(at) => format!("{}{props}{}", &x[..at], &x[at..]),
        None => x,
    }
}

fn write_all(
    dir: &Path,
    records: &[Record],
    duration_s: f64,
    shard: Option<&ShardTimes>,
    shards: &[ShardTimes],
    heading: Option<&Heading>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let summary = Summary {
        total: records.len(),
        passed: count(records, Status::Passed),
        flaky: count(records, Status::Flaky),
        failed: count(records, Status::Failed),
        errors: count(records, Status::Error),
        not_run: count(records, Status::NotRun),
        duration_s,
        harness_cpu_s: own_cpu_seconds(),
        stats: stats(records),
        shard,
        shards,
        heading,
        runs: records,
    };
    let mut md = heading.map(markdown_heading).unwrap_or_default() + &markdown(records, duration_s);
    let listed: Vec<ShardTimes> = shard.into_iter().chain(shards).cloned().collect();
    if !listed.is_empty() {
        md.push_str(&markdown_shards(&listed));
    }
    let x = junit(records, duration_s);
    write_atomic(&dir.join("junit.xml"), &heading.map_or_else(|| x.clone(), |h| junit_with_heading(x.clone(), h)))?;
    write_atomic(&dir.join("summary.json"), &serde_json::to_string_pretty(&summary).expect("json"))?;
    write_atomic(&dir.join("summary.md"), &md)?;
    write_atomic(&dir.join("report.html"), &crate::html::page_headed(records, duration_s, heading))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: Status, message: Option<&str>) -> Record {
        let (scenario, board) = id.split_once('@').unwrap();
        Record {
            id: id.into(),
            scenario: scenario.into(),
            board: board.into(),
            status,
            attempts: if status == Status::Flaky { 2 } else { 1 },
            duration_s: 1.5,
            message: message.map(str::to_string),
            run_dir: Some(PathBuf::from("/runs/x")),
            repetition: None,
            steps: Vec::new(),
        }
    }

    fn step(attempt: u32, index: usize, action: &str, duration_s: f64, passed: bool) -> StepRecord {
        let step = crate::timeline::StepSpan {
            index,
            action: action.into(),
            line: index * 3,
            start_s: index as f64,
            duration_s,
            passed,
        };
        StepRecord { attempt, step }
    }

    /// Repetition `k` of `a@qemu-aarch64` taking `duration_s`, its `expect`
    /// step failing if `status` is a failure (and on the first attempt of a flake).
    fn repetition(k: u32, status: Status, duration_s: f64) -> Record {
        let mut r = rec(&format!("a@qemu-aarch64#{k}"), status, None);
        r.board = "qemu-aarch64".into();
        r.repetition = Some(k);
        r.duration_s = duration_s;
        let failed = matches!(status, Status::Failed | Status::Error);
        r.steps = vec![step(1, 1, "power_on", 0.1 * k as f64, true), step(1, 2, "expect", 1.0 * k as f64, !failed)];
        if status == Status::NotRun {
            r.steps.clear();
        } else if status == Status::Flaky {
            r.steps[1].step.passed = false;
            r.steps.push(step(2, 1, "power_on", 0.5, true));
            r.steps.push(step(2, 2, "expect", 2.5, true));
        }
        r
    }

    fn repeated_sample() -> Vec<Record> {
        vec![
            repetition(1, Status::Passed, 10.0),
            repetition(2, Status::Failed, 40.0),
            repetition(3, Status::Flaky, 20.0),
            repetition(4, Status::Passed, 30.0),
            repetition(5, Status::NotRun, 0.0),
            rec("b@qemu-x86_64", Status::Passed, None),
        ]
    }

    fn sample() -> Vec<Record> {
        vec![
            rec("a@qemu-x86_64", Status::Passed, None),
            rec("a@qemu-aarch64", Status::Flaky, Some("step 2 failed first")),
            rec("b@qemu-x86_64", Status::Failed, Some("step 3 (expect) failed: <timeout> & \u{1b}[0m\nmore")),
            rec("b@qemu-aarch64", Status::Error, Some("infrastructure failure: qemu")),
            rec("c@qemu-x86_64", Status::NotRun, None),
        ]
    }

    /// A heading (a board's identity) leads every format, escaped.
    #[test]
    fn a_heading_leads_markdown_junit_html_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let heading = Heading {
            title: "devlab board validation: bench-3".into(),
            facts: vec![("U-Boot".into(), "2024.04 <rc1>".into()), ("serial".into(), "A|B".into())],
        };
        let recs = [rec("boot-smoke@bench-3", Status::Passed, None)];
        write_headed(dir.path(), &recs, 2.0, None, Some(&heading)).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        let md = read("summary.md");
        assert!(md.starts_with("# devlab board validation: bench-3\n\n| | |\n|---|---|\n| U-Boot | 2024.04 <rc1> |\n| serial | A\\|B |\n"), "{md}");
        let x = read("junit.xml");
        let props = x.find("<property name=\"board.u-boot\" value=\"2024.04 &lt;rc1&gt;\"/>").expect("property");
        assert!(props > x.find("<testsuite ").unwrap() && props < x.find("<testcase").unwrap(), "{x}");
        let html = read("report.html");
        assert!(html.contains("<h1>devlab board validation: bench-3</h1><table class=\"identity\"><tr><th>U-Boot</th><td>2024.04 &lt;rc1&gt;</td>"), "{html}");
        let json: serde_json::Value = serde_json::from_str(&read("summary.json")).unwrap();
        assert_eq!(json["heading"]["facts"][1], serde_json::json!(["serial", "A|B"]));
        // Without a heading, none of it.
        write(dir.path(), &recs, 2.0).unwrap();
        assert!(
            read("summary.md").starts_with("# devlab run:")
                && !read("junit.xml").contains("<properties>\n      <property name=\"title\"")
        );
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = junit(&sample(), 9.0);
        assert!(x.contains("tests=\"5\" failures=\"1\" errors=\"1\" skipped=\"1\""), "{x}");
        assert!(x.contains("<testcase classname=\"a\" name=\"qemu-x86_64\" time=\"1.500\"/>"), "{x}");
        assert!(x.contains("<failure message=\"step 3 (expect) failed: &lt;timeout&gt; &amp; [0m\">"), "{x}");
        assert!(x.contains("<property name=\"flaky\" value=\"true\"/>"), "{x}");
        assert!(x.contains("<skipped message=\"not run (interrupted)\"/>"), "{x}");
        assert!(!x.contains('\u{1b}'), "control characters are dropped");
        assert_eq!(x.matches("<testcase").count(), 5);
    }

    #[test]
    fn flaky_is_never_a_plain_pass() {
        let md = markdown(&sample(), 9.0);
        assert!(md.starts_with("# devlab run: 1 passed, 1 flaky, 1 failed, 1 errors, 1 not run"), "{md}");
        assert!(md.contains("| a | qemu-aarch64 | FLAKY | 2 |"), "{md}");
    }

    #[test]
    fn shard_reports_merge_and_overlaps_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let all = sample();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write(&a, &all[..2], 5.0).unwrap();
        write(&b, &all[2..], 7.0).unwrap();
        let out = d.path().join("merged");
        let merged = merge(&[a.clone(), b], &out).unwrap();
        assert_eq!((merged.runs, merged.duration_s, merged.shards.len()), (5, 7.0, 0));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["total"], 5);
        assert_eq!(json["failed"], 1);
        assert_eq!(json["runs"][0]["id"], "a@qemu-aarch64", "sorted by id");
        let err = merge(&[a.clone(), a], &d.path().join("again")).unwrap_err();
        assert!(err.contains("more than one report"), "{err}");
    }

    #[test]
    fn stats_aggregate_repetitions_and_steps() {
        let stats = stats(&repeated_sample());
        assert_eq!(stats.len(), 2, "{stats:?}");
        let a = &stats[0];
        assert_eq!((a.scenario.as_str(), a.board.as_str()), ("a", "qemu-aarch64"));
        assert_eq!((a.runs, a.failures, a.flaky, a.not_run), (4, 1, 1, 1));
        assert_eq!(a.failure_rate, Some(0.25));
        // 10, 20, 30, 40 (the not-run one is left out): median of the middle two.
        assert_eq!((a.min_s, a.median_s, a.max_s), (Some(10.0), Some(25.0), Some(40.0)));
        assert_eq!(a.steps.len(), 2);
        let expect = &a.steps[1];
        assert_eq!((expect.index, expect.action.as_str()), (2, "expect"));
        // Each attempt counts: 4 runs' first attempts and the flake's retry.
        assert_eq!((expect.runs, expect.failures), (5, 2));
        assert_eq!(expect.failure_rate, 0.4);
        assert_eq!((expect.min_s, expect.median_s, expect.max_s), (1.0, 2.5, 4.0));
        let b = &stats[1];
        assert_eq!((b.runs, b.failures, b.failure_rate, b.median_s), (1, 0, Some(0.0), Some(1.5)));
        assert!(b.steps.is_empty());
        assert!(repeated(&stats));
        assert!(!repeated(&super::stats(&sample())), "one run per scenario × board is not repeated");
    }

    #[test]
    fn spread_handles_odd_even_and_empty() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn junit_carries_step_times_and_repetitions() {
        let x = junit(&repeated_sample(), 9.0);
        assert!(x.contains("<testcase classname=\"a\" name=\"qemu-aarch64 #2\" time=\"40.000\">"), "{x}");
        assert!(x.contains("<property name=\"repetition\" value=\"2\"/>"), "{x}");
        assert!(
            x.contains("<property name=\"step.2.expect\" value=\"start_s=2.000 duration_s=2.000 failed (line 6)\"/>"),
            "{x}"
        );
        // A retried run names each attempt's steps.
        assert!(x.contains("name=\"attempt.1.step.2.expect\" value=\"start_s=2.000 duration_s=3.000 failed"), "{x}");
        assert!(x.contains("name=\"attempt.2.step.2.expect\" value=\"start_s=2.000 duration_s=2.500 passed"), "{x}");
        // A passed run with steps is no longer self-closing, and stays a pass.
        assert!(x.contains("name=\"qemu-aarch64 #1\" time=\"10.000\">\n      <properties>"), "{x}");
        assert_eq!(x.matches("<failure").count(), 1, "{x}");
        assert_eq!(x.matches("<testcase").count(), x.matches("</testcase>").count() + 1, "b is self-closing: {x}");
    }

    #[test]
    fn markdown_has_repetition_and_failed_step_tables() {
        let md = markdown(&repeated_sample(), 9.0);
        assert!(md.contains("| a | qemu-aarch64 #2 | FAIL | 1 | 40.0 s |"), "{md}");
        assert!(md.contains("| a | qemu-aarch64 | 4 | 1 | 1 | 25% | 10.0 s | 25.0 s | 40.0 s |"), "{md}");
        assert!(md.contains("| a | qemu-aarch64 | 2 expect | 5 | 2 | 40% | 1.0 s | 2.5 s | 4.0 s |"), "{md}");
        assert!(!md.contains("1 power_on"), "steps that never failed stay out: {md}");
        assert!(!markdown(&sample(), 9.0).contains("## Repeated runs"), "no repetition, no stats tables");
    }

    #[test]
    fn merge_reads_reports_written_before_step_times_and_recomputes_stats() {
        let d = tempfile::tempdir().unwrap();
        // A summary.json as devlab wrote it before --repeat: no stats, no
        // repetition, no steps.
        let old = d.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(
            old.join("summary.json"),
            r#"{"total": 1, "passed": 1, "flaky": 0, "failed": 0, "errors": 0, "not_run": 0,
                "duration_s": 12.0, "harness_cpu_s": 0.5,
                "runs": [{"id": "b@qemu-x86_64", "scenario": "b", "board": "qemu-x86_64",
                          "status": "passed", "attempts": 1, "duration_s": 11.0, "run_dir": "/runs/b"}]}"#,
        )
        .unwrap();
        let new = d.path().join("new");
        write(&new, &repeated_sample()[..5], 50.0).unwrap();
        let out = d.path().join("merged");
        let merged = merge(&[old, new], &out).unwrap();
        assert_eq!((merged.runs, merged.duration_s), (6, 50.0));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["total"], 6);
        assert_eq!(json["failed"], 1);
        assert_eq!(json["runs"][0]["id"], "a@qemu-aarch64#1");
        assert_eq!(json["runs"][0]["repetition"], 1);
        assert_eq!(json["runs"][0]["steps"][1]["action"], "expect");
        assert!(json["runs"][5].get("steps").is_none(), "{}", json["runs"][5]);
        assert_eq!(json["stats"][0]["runs"], 4);
        assert_eq!(json["stats"][0]["failure_rate"], 0.25);
        assert_eq!(json["stats"][0]["steps"][1]["failures"], 2);
        assert_eq!(json["stats"][1]["board"], "qemu-x86_64");
        assert_eq!(json["stats"][1]["median_s"], 11.0);
    }

    #[test]
    fn merged_repetitions_are_in_numeric_order() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write(&a, &[repetition(10, Status::Passed, 1.0), repetition(1, Status::Passed, 1.0)], 1.0).unwrap();
        write(&b, &[repetition(2, Status::Passed, 1.0)], 1.0).unwrap();
        let out = d.path().join("merged");
        merge(&[a, b], &out).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        let ids: Vec<&str> = json["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a@qemu-aarch64#1", "a@qemu-aarch64#2", "a@qemu-aarch64#10"]);
    }

    #[test]
    fn shard_times_are_reported_and_merged() {
        let d = tempfile::tempdir().unwrap();
        let all = sample();
        let (a, b, old) = (d.path().join("a"), d.path().join("b"), d.path().join("old"));
        let times = |k, predicted_s, actual_s| ShardTimes {
            k,
            n: 3,
            runs: 2,
            predicted_s,
            unknown_runs: predicted_s.map(|_| 1),
            actual_s,
        };
        write_shard(&b, &all[2..4], 7.0, Some(&times(2, Some(6.0), 7.0))).unwrap();
        write_shard(&a, &all[..2], 5.0, Some(&times(1, None, 5.0))).unwrap();
        write(&old, &all[4..], 1.0).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(b.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["shard"]["predicted_s"], 6.0);
        assert_eq!(json["shard"]["actual_s"], 7.0);
        assert!(json.get("shards").is_none(), "{json}");
        let md = std::fs::read_to_string(b.join("summary.md")).unwrap();
        assert!(md.contains("| 2/3 | 2 | 6.0 s (1 unknown) | 7.0 s |"), "{md}");
        // A report without shard figures (older, or not sharded) still merges.
        let out = d.path().join("merged");
        let merged = merge(&[b, old, a], &out).unwrap();
        assert_eq!(merged.runs, 5);
        assert_eq!(merged.shards, vec![times(1, None, 5.0), times(2, Some(6.0), 7.0)], "by shard");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["shards"][1]["predicted_s"], 6.0);
        assert!(json["shards"][0].get("predicted_s").is_none(), "{json}");
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("| 1/3 | 2 | - | 5.0 s |\n| 2/3 | 2 | 6.0 s (1 unknown) | 7.0 s |"), "{md}");
    }

    #[test]
    fn reports_are_written_whole() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &sample(), 9.0).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["total"], 5);
        assert_eq!(json["flaky"], 1);
        assert_eq!(json["runs"][1]["status"], "flaky");
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "no temp files left: {names:?}");
    }
}
