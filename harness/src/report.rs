//! Reports of a `devlab run` for CI and people: JUnit XML (GitLab, Jenkins
//! and GitHub read it), a JSON summary, a Markdown table and an HTML page
//! with each run's timeline drawn (`html`), written to the
//! report folder. A pass after a retry is `flaky`, never a plain pass; a run
//! that never started (interrupted) is `not_run`. Files are written to a
//! temp name and renamed, so a report is complete or absent, never torn.

use serde::Serialize;
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

/// JUnit XML: one testsuite, a testcase per scenario × board
/// (classname = scenario, name = board).
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
            xml_escape(&r.board),
            r.duration_s
        ));
        let msg = r.message.as_deref().unwrap_or("");
        let first = msg.lines().next().unwrap_or("");
        let dir = r.run_dir.as_ref().map(|d| format!("run directory: {}\n", d.display())).unwrap_or_default();
        match r.status {
            Status::Passed => x.push_str("/>\n"),
            Status::Flaky => x.push_str(&format!(
                ">\n      <properties><property name=\"flaky\" value=\"true\"/><property name=\"attempts\" value=\"{}\"/></properties>\n      <system-out>flaky: passed on attempt {}\n{}</system-out>\n    </testcase>\n",
                r.attempts,
                r.attempts,
                xml_escape(&format!("{dir}{msg}"))
            )),
            Status::Failed | Status::Error => {
                let tag = if r.status == Status::Failed { "failure" } else { "error" };
                x.push_str(&format!(
                    ">\n      <{tag} message=\"{}\">{}</{tag}>\n    </testcase>\n",
                    xml_escape(first),
                    xml_escape(&format!("{dir}{msg}"))
                ));
            }
            Status::NotRun => x.push_str(">\n      <skipped message=\"not run (interrupted)\"/>\n    </testcase>\n"),
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A Markdown table, one row per run.
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
            r.board,
            r.status.word(),
            r.attempts,
            r.duration_s,
            detail
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

/// Merge the `summary.json` of several report folders (one per CI shard)
/// into one report: every run once, in id order; a run present in two
/// shards is an error (the shards were not disjoint).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(usize, f64), String> {
    let mut all: Vec<Record> = Vec::new();
    let mut duration: f64 = 0.0;
    for d in dirs {
        let path = d.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let runs: Vec<Record> =
            serde_json::from_value(v["runs"].clone()).map_err(|e| format!("{}: field `runs`: {e}", path.display()))?;
        duration = duration.max(v["duration_s"].as_f64().unwrap_or(0.0));
        for r in runs {
            if all.iter().any(|a| a.id == r.id) {
                return Err(format!("{} appears in more than one report (were the shards disjoint?)", r.id));
            }
            all.push(r);
        }
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    write(out, &all, duration).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((all.len(), duration))
}

/// Write `junit.xml`, `summary.json`, `summary.md` and `report.html` into `dir`.
pub fn write(dir: &Path, records: &[Record], duration_s: f64) -> std::io::Result<()> {
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
        runs: records,
    };
    write_atomic(&dir.join("junit.xml"), &junit(records, duration_s))?;
    write_atomic(&dir.join("summary.json"), &serde_json::to_string_pretty(&summary).expect("json"))?;
    write_atomic(&dir.join("summary.md"), &markdown(records, duration_s))?;
    write_atomic(&dir.join("report.html"), &crate::html::page(records, duration_s))
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
        }
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
        assert_eq!(merge(&[a.clone(), b], &out).unwrap(), (5, 7.0));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["total"], 5);
        assert_eq!(json["failed"], 1);
        assert_eq!(json["runs"][0]["id"], "a@qemu-aarch64", "sorted by id");
        let err = merge(&[a.clone(), a], &d.path().join("again")).unwrap_err();
        assert!(err.contains("more than one report"), "{err}");
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
