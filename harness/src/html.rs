//! `report.html`: the runs of a `devlab run` for people who would rather
//! look than read. A status table, then each run's timeline (its
//! `timeline.json`) drawn as an inline SVG chart: one lane per origin
//! (console, QMP, step) on a time axis, every event kind coloured by its
//! group (boot, update, health, fault, QMP, provisioning, harness; the
//! match has no wildcard, so a new kind must be given one), the details on
//! hover. With repeated runs (`--repeat`), a table of each scenario ×
//! board's runs, failures and times, and of its steps, comes first. One
//! self-contained file: no scripts, no network.
//!
//! Invariants: it reads run directories and never fails the report because
//! one is missing or unreadable (that run is shown without a chart); every
//! text from a run is escaped.

use crate::report::{Record, Status};
use crate::timeline::{Entry, Event};
use std::fmt::Write;

fn esc(s: &str) -> String {
    crate::report::xml_escape(s)
}

/// The colour group of an event on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    /// Firmware and boot path: U-Boot, boot script, kernel, root, SSH.
    Boot,
    /// Updates: releases, bundles, OSTree commits served and installed.
    Update,
    Health,
    /// Faults, failures, panics, power cuts, resets.
    Fault,
    /// QMP events that are not faults.
    Qmp,
    /// Network boot and provisioning (PXE, agent, service).
    Provision,
    /// What the harness did or read back: commands, env, files, checkpoints.
    Harness,
    /// An entry this build cannot read (a timeline from another version).
    Unknown,
}

impl Colour {
    #[cfg(test)]
    const ALL: [Colour; 8] = [
        Colour::Boot,
        Colour::Update,
        Colour::Health,
        Colour::Fault,
        Colour::Qmp,
        Colour::Provision,
        Colour::Harness,
        Colour::Unknown,
    ];

    fn class(self) -> &'static str {
        match self {
            Colour::Boot => "boot",
            Colour::Update => "update",
            Colour::Health => "health",
            Colour::Fault => "fault",
            Colour::Qmp => "qmp",
            Colour::Provision => "provision",
            Colour::Harness => "harness",
            Colour::Unknown => "unknown",
        }
    }
}

/// How an event is drawn: its colour and whether its name is printed on
/// the chart (the rest show on hover). No wildcard: a new event kind does
/// not compile until it is given a colour here.
fn kind(event: &Event) -> (Colour, bool) {
    use Colour::*;
    match event {
        Event::Fault { .. }
        | Event::PowerCut
        | Event::Reset
        | Event::Failed { .. }
        | Event::FaultTriggered { .. }
        | Event::KernelPanic
        | Event::NoSlotLeft
        | Event::NetConfigFailed { .. } => (Fault, true),
        Event::Qmp { name, .. } if matches!(name.as_str(), "WATCHDOG" | "GUEST_PANICKED" | "BLOCK_IO_ERROR") => {
            (Fault, true)
        }
        Event::Qmp { name, .. } => (Qmp, name == "RESET"),
        Event::SlotChosen { .. }
        | Event::KernelStarted
        | Event::RootMounted { .. }
        | Event::SshUp
        | Event::UbootBanner
        | Event::BootDecision { .. }
        | Event::Mark { .. }
        | Event::LoggedIn { .. }
        | Event::Firmware { .. } => (Boot, true),
        Event::PowerOn
        | Event::AutobootInterrupted
        | Event::UbootCommand { .. }
        | Event::BootScript
        | Event::EnvCopy { .. }
        | Event::Initramfs
        | Event::DropbearStarted
        | Event::SlotBooted { .. }
        | Event::WatchdogArmed
        | Event::PoweredOff => (Boot, false),
        Event::Update { .. }
        | Event::UpdateResult { .. }
        | Event::RaucInstall { .. }
        | Event::ReleaseServed { .. }
        | Event::BundleServed { .. }
        | Event::ArtifactServed { .. }
        | Event::OstreeServed { .. } => (Update, true),
        Event::VersionRunning { .. } | Event::RaucStatus { .. } | Event::OstreeStatus { .. } => (Update, false),
        Event::Health { .. } => (Health, true),
        Event::Provision { .. } | Event::NetBoot { .. } | Event::Agent { .. } | Event::Node { .. } => (Provision, true),
        Event::ProvisionTable { .. } => (Provision, false),
        Event::Checkpoint { .. } | Event::Refuse { .. } => (Harness, true),
        Event::Expected { .. }
        | Event::Fact { .. }
        | Event::Command { .. }
        | Event::Env { .. }
        | Event::File { .. }
        | Event::Callback { .. }
        | Event::Transfer { .. }
        | Event::Service { .. }
        | Event::Link { .. } => (Harness, false),
    }
}

/// The colour of one `timeline.json` entry (Unknown if it does not parse
/// as an event of this build).
fn entry_kind(entry: &serde_json::Value) -> (Colour, bool) {
    match serde_json::from_value::<Entry>(entry.clone()) {
        Ok(e) => kind(&e.event),
        Err(_) => (Colour::Unknown, false),
    }
}

/// A short label and the full hover text of one timeline entry.
fn describe(entry: &serde_json::Value) -> (String, String) {
    let event = entry["event"].as_str().unwrap_or("?");
    let mut details = Vec::new();
    if let Some(obj) = entry.as_object() {
        for (k, v) in obj {
            if k == "t" || k == "origin" || k == "event" {
                continue;
            }
            let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            details.push(format!("{k}={v}"));
        }
    }
    let short = match event {
        "slot_chosen" => format!("slot {}", entry["slot"].as_str().unwrap_or("?")),
        "qmp" => entry["name"].as_str().unwrap_or("qmp").to_string(),
        "update" => entry["stage"].as_str().unwrap_or("update").to_string(),
        "health" => entry["result"].as_str().unwrap_or("health").to_string(),
        "fault" => entry["kind"].as_str().unwrap_or("fault").to_string(),
        _ => event.replace('_', " "),
    };
    // Several machines: say whose event it is.
    let short = match entry["node"].as_str() {
        Some(node) => format!("{node}: {short}"),
        None => short,
    };
    let t = entry["t"].as_f64().unwrap_or(0.0);
    (short, format!("{t:.3}s {event} {}", details.join(" ")))
}

const LANES: [&str; 3] = ["console", "qmp", "step"];

/// The SVG chart of one timeline (`timeline.json`'s `entries`).
pub fn chart(entries: &[serde_json::Value]) -> String {
    let end = entries.iter().filter_map(|e| e["t"].as_f64()).fold(0.0f64, f64::max).max(1.0);
    let (left, width, lane_h) = (70.0, 1100.0, 46.0);
    let height = lane_h * LANES.len() as f64 + 30.0;
    let x = |t: f64| left + t / end * width;
    let mut svg =
        format!("<svg viewBox=\"0 0 {} {height}\" width=\"100%\" role=\"img\"><g class=\"axis\">", left + width + 20.0);
    // Lanes and a seconds axis with about ten ticks.
    for (i, lane) in LANES.iter().enumerate() {
        let y = lane_h * i as f64 + lane_h / 2.0;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\">{lane}</text><line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>",
            y + 4.0,
            left + width
        );
    }
    let step = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| end / s <= 12.0)
        .unwrap_or(600.0);
    let axis_y = lane_h * LANES.len() as f64 + 14.0;
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let _ = write!(svg, "<text x=\"{:.1}\" y=\"{axis_y:.1}\" class=\"tick\">{t}s</text>", x(t) - 6.0);
        t += step;
    }
    svg.push_str("</g>");
    // Events; printed labels alternate heights so neighbours overlap less.
    let mut shown = [0usize; 3];
    for e in entries {
        let lane = LANES.iter().position(|l| Some(*l) == e["origin"].as_str()).unwrap_or(2);
        let (colour, label) = entry_kind(e);
        let class = colour.class();
        let (short, title) = describe(e);
        let cx = x(e["t"].as_f64().unwrap_or(0.0));
        let cy = lane_h * lane as f64 + lane_h / 2.0;
        let _ = write!(
            svg,
            "<g class=\"{class}\"><title>{}</title><circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\"/>",
            esc(&title)
        );
        if label {
            let dy = if shown[lane] % 2 == 0 { -8.0 } else { 16.0 };
            shown[lane] += 1;
            let _ = write!(svg, "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>", cx + 3.0, cy + dy, esc(&short));
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
.passed{color:#176f2c}.flaky{color:#a36b00}.failed,.error{color:#b00020;font-weight:bold}.not_run{color:#777}\
section{margin:1.5em 0;border-top:1px solid #ddd}pre{background:#f6f6f6;padding:8px;overflow:auto}\
svg text{font-size:10px}.axis line{stroke:#ccc}.axis text{fill:#555}.tick{fill:#888}\
g.boot circle{fill:#1f6feb}g.update circle{fill:#8250df}g.health circle{fill:#1a7f37}\
g.fault circle{fill:#d1242f}g.fault text{fill:#d1242f}g.qmp circle{fill:#bf8700}g.provision circle{fill:#0a7d8c}\
g.harness circle{fill:#57606a}g.unknown circle{fill:#ccc}";

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Passed => "passed",
        Status::Flaky => "flaky",
        Status::Failed => "failed",
        Status::Error => "error",
        Status::NotRun => "not_run",
    }
}

/// The `--repeat` figures: a row per scenario × board, and each one's
/// steps (all of them, failed ones marked) folded under it.
fn stats_tables(stats: &[crate::report::GroupStats]) -> String {
    use crate::report::{percent, secs};
    let mut h = String::from(
        "<h2>Repeated runs</h2><table><tr><th>scenario</th><th>board</th><th>runs</th><th>failed</th>\
         <th>flaky</th><th>failure rate</th><th>min</th><th>median</th><th>max</th></tr>",
    );
    for g in stats {
        let c = if g.failures > 0 { "failed" } else { "passed" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{c}\">{}</td><td>{}</td><td class=\"{c}\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.scenario),
            esc(&g.board),
            g.runs,
            g.failures,
            g.flaky,
            percent(g.failure_rate),
            secs(g.min_s),
            secs(g.median_s),
            secs(g.max_s)
        );
    }
    h.push_str("</table>");
    for g in stats.iter().filter(|g| !g.steps.is_empty()) {
        let _ = write!(
            h,
            "<details><summary>steps of {}@{}</summary><table><tr><th>step</th><th>runs</th><th>failed</th>\
             <th>failure rate</th><th>min</th><th>median</th><th>max</th></tr>",
            esc(&g.scenario),
            esc(&g.board)
        );
        for s in &g.steps {
            let c = if s.failures > 0 { "failed" } else { "passed" };
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td>{}</td><td class=\"{c}\">{}</td><td class=\"{c}\">{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                s.index,
                esc(&s.action),
                s.runs,
                s.failures,
                percent(Some(s.failure_rate)),
                secs(Some(s.min_s)),
                secs(Some(s.median_s)),
                secs(Some(s.max_s))
            );
        }
        h.push_str("</table></details>");
    }
    h
}

/// The whole report page.
pub fn page(records: &[Record], duration_s: f64) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>devlab report</title><style>{STYLE}</style></head>\
         <body><h1>devlab report</h1><p>{} runs in {duration_s:.1} s</p><table><tr><th>run</th><th>status</th>\
         <th>attempts</th><th>time</th></tr>",
        records.len()
    );
    for r in records {
        let _ = write!(
            h,
            "<tr><td><a href=\"#{href}\">{id}</a></td><td class=\"{c}\">{w}</td><td>{}</td><td>{:.1} s</td></tr>",
            r.attempts,
            r.duration_s,
            // A repetition's id has a `#`: encoded, so the link's fragment is the whole id.
            href = esc(&r.id).replace('#', "%23"),
            id = esc(&r.id),
            c = status_class(r.status),
            w = r.status.word()
        );
    }
    h.push_str("</table>");
    let stats = crate::report::stats(records);
    if crate::report::repeated(&stats) {
        h.push_str(&stats_tables(&stats));
    }
    for r in records {
        let _ = write!(
            h,
            "<section id=\"{id}\"><h2>{id} <span class=\"{c}\">{w}</span></h2>",
            id = esc(&r.id),
            c = status_class(r.status),
            w = r.status.word()
        );
        if let Some(dir) = &r.run_dir {
            let _ = write!(h, "<p>run directory: <code>{}</code></p>", esc(&dir.to_string_lossy()));
            let timeline = std::fs::read(dir.join("timeline.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            match timeline.as_ref().and_then(|t| t["entries"].as_array()) {
                Some(entries) if !entries.is_empty() => h.push_str(&chart(entries)),
                _ => h.push_str("<p>(no timeline)</p>"),
            }
        }
        if let Some(m) = &r.message {
            let _ = write!(h, "<pre>{}</pre>", esc(m));
        }
        h.push_str("</section>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chart_places_events_on_lanes_and_escapes_text() {
        let entries = vec![
            json!({"t": 0.0, "origin": "step", "event": "power_on"}),
            json!({"t": 1.0, "origin": "console", "event": "slot_chosen", "slot": "B", "tries_left": 0}),
            json!({"t": 2.0, "origin": "qmp", "event": "qmp", "name": "WATCHDOG", "detail": "reset"}),
            json!({"t": 4.0, "origin": "step", "event": "fault", "kind": "<corrupt> & co", "target": "server"}),
        ];
        let svg = chart(&entries);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        // t=4 is the end of the axis: x = 70 + 1100; the console lane is the first.
        assert!(svg.contains("cx=\"1170.0\" cy=\"115.0\""), "{svg}");
        assert!(svg.contains("cx=\"345.0\" cy=\"23.0\""), "{svg}");
        assert!(svg.contains("<g class=\"fault\"><title>2.000s qmp"), "{svg}");
        assert!(svg.contains("&lt;corrupt&gt; &amp; co"), "{svg}");
        assert!(!svg.contains("<corrupt>"));
        assert!(svg.contains(">slot B</text>"), "{svg}");
    }

    #[test]
    fn a_machine_s_event_is_labelled_with_the_machine() {
        let e =
            json!({"t": 1.0, "origin": "console", "event": "slot_chosen", "slot": "B", "tries_left": 0, "node": "sub"});
        let (short, title) = describe(&e);
        assert_eq!(short, "sub: slot B");
        assert!(title.contains("node=sub"), "{title}");
        let (short, _) = describe(&json!({"t": 1.0, "origin": "console", "event": "kernel_started"}));
        assert_eq!(short, "kernel started");
    }

    #[test]
    fn page_lists_runs_and_survives_missing_run_dirs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("timeline.json"),
            json!({"entries": [{"t": 0.5, "origin": "console", "event": "kernel_started"}]}).to_string(),
        )
        .unwrap();
        let rec = |id: &str, status, dir: Option<std::path::PathBuf>| Record {
            id: id.into(),
            scenario: id.split('@').next().unwrap().into(),
            board: id.split('@').nth(1).unwrap().into(),
            status,
            attempts: 1,
            duration_s: 3.0,
            message: Some("step 2 failed: <boom>".into()),
            run_dir: dir,
            repetition: None,
            steps: Vec::new(),
        };
        let html = page(
            &[
                rec("a@b", Status::Passed, Some(d.path().to_path_buf())),
                rec("c@d", Status::Failed, Some(d.path().join("gone"))),
            ],
            9.0,
        );
        assert!(html.contains("<td class=\"failed\">FAIL</td>"), "{html}");
        assert_eq!(html.matches("<svg").count(), 1);
        assert!(html.contains("(no timeline)"));
        assert!(html.contains("step 2 failed: &lt;boom&gt;"));
        assert!(!html.contains("Repeated runs"), "one run each: no stats table");
    }

    #[test]
    fn events_once_grey_now_have_their_colour() {
        let cases = [
            (json!({"t": 0.0, "origin": "console", "event": "kernel_panic"}), "fault"),
            (json!({"t": 0.0, "origin": "console", "event": "no_slot_left"}), "fault"),
            (json!({"t": 0.0, "origin": "console", "event": "net_config_failed", "firmware": "ipxe"}), "fault"),
            (json!({"t": 0.0, "origin": "console", "event": "boot_decision", "detail": "bootcount 2"}), "boot"),
            (json!({"t": 0.0, "origin": "step", "event": "ostree_served", "image": "ostree-v2"}), "update"),
            (json!({"t": 0.0, "origin": "step", "event": "provision", "detail": "INSTALLED"}), "provision"),
            (json!({"t": 0.0, "origin": "console", "event": "agent", "stage": "register"}), "provision"),
            (json!({"t": 0.0, "origin": "step", "event": "checkpoint", "name": "booted"}), "harness"),
            (json!({"t": 0.0, "origin": "qmp", "event": "qmp", "name": "SHUTDOWN"}), "qmp"),
            (json!({"t": 0.0, "origin": "qmp", "event": "qmp", "name": "WATCHDOG"}), "fault"),
            (json!({"t": 0.0, "origin": "step", "event": "teleported"}), "unknown"),
        ];
        for (entry, class) in cases {
            assert_eq!(entry_kind(&entry).0.class(), class, "{entry}");
            assert!(chart(std::slice::from_ref(&entry)).contains(&format!("<g class=\"{class}\">")), "{entry}");
        }
    }

    #[test]
    fn every_colour_has_its_own_style() {
        let mut fills = Vec::new();
        for c in Colour::ALL {
            let rule = format!("g.{} circle{{fill:", c.class());
            let at = STYLE.find(&rule).unwrap_or_else(|| panic!("no style for {c:?}")) + rule.len();
            fills.push(&STYLE[at..at + STYLE[at..].find('}').unwrap()]);
        }
        let mut distinct = fills.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), fills.len(), "two colours look alike: {fills:?}");
    }

    #[test]
    fn page_shows_repeated_runs_and_their_steps() {
        let step = |index, action: &str, duration_s, passed| crate::report::StepRecord {
            attempt: 1,
            index,
            action: action.into(),
            line: 4,
            start_s: 0.0,
            duration_s,
            passed,
        };
        let rep = |k: u32, status, secs: f64| Record {
            id: format!("s@b#{k}"),
            scenario: "s".into(),
            board: "b".into(),
            status,
            attempts: 1,
            duration_s: secs,
            message: None,
            run_dir: None,
            repetition: Some(k),
            steps: vec![step(1, "power_on", 0.5, true), step(2, "expect", secs, status == Status::Passed)],
        };
        let html = page(&[rep(1, Status::Passed, 2.0), rep(2, Status::Failed, 4.0), rep(3, Status::Passed, 9.0)], 15.0);
        assert!(html.contains("<h2>Repeated runs</h2>"), "{html}");
        assert!(html.contains("<a href=\"#s@b%232\">s@b#2</a>"), "{html}");
        assert!(html.contains("<section id=\"s@b#2\">"), "{html}");
        assert!(
            html.contains("<td>s</td><td>b</td><td>3</td><td class=\"failed\">1</td><td>0</td><td class=\"failed\">33%</td><td>2.0 s</td><td>4.0 s</td><td>9.0 s</td>"),
            "{html}"
        );
        assert!(html.contains("<summary>steps of s@b</summary>"), "{html}");
        assert!(html.contains("<td>2 expect</td><td>3</td><td class=\"failed\">1</td>"), "{html}");
        assert!(html.contains("<td>1 power_on</td><td>3</td><td class=\"passed\">0</td>"), "{html}");
    }
}
