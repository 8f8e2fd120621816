//! `report.html`: the runs of a `devlab run` for people who would rather
//! look than read. A status table, then per run a waterfall, one inline SVG
//! on one time axis (the run's clock, with a tick scale): a row per step,
//! its name and scenario line on the left (`3 install_bundle (line 42)`),
//! a bar from its start to its end and its duration printed; the failed
//! step's bar red with its console's last lines under it (those
//! `failure.txt` carries, else the end of `serial.log`). Under the steps,
//! the run's `timeline.json` entries on lanes of their own (console
//! markers, faults, QMP, the harness's events), each a dot coloured by its
//! group (boot, update, health, fault, QMP, provisioning, harness; the
//! match has no wildcard, so a new kind must be given one), details on
//! hover. A retried run shows its last attempt (the one its run directory
//! holds). With repeated runs (`--repeat`), a table of each scenario ×
//! board's runs, failures and times, and of its steps, comes first. One
//! self-contained file: no scripts, no network.
//!
//! The figure is laid out in Rust ([`layout`]), drawn at a fixed size in a
//! monospace font whose width per character is estimated, so no two texts
//! overlap: event labels go in rows under their lane (the first row where
//! they clear the one before), and those that fit in no row show on hover
//! only. Entries' times (since the first power-on) are moved onto the
//! steps' clock by `timeline.json`'s `t0_s`.
//!
//! Invariants: it reads run directories and never fails the report because
//! one is missing or unreadable (that run is shown without a timeline);
//! every text from a run is escaped.

use crate::report::{Record, Status};
use crate::timeline::{Entry, Event, StepSpan};
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
        | Event::OstreeServed { .. }
        | Event::Rollout { .. }
        | Event::FleetAgent { .. }
        | Event::Fleet { .. }
        | Event::Product { .. }
        | Event::ProductAgent { .. }
        | Event::ProductPublished { .. } => (Update, true),
        Event::FleetAsserted { .. } => (Update, false),
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
        "mark" => entry["name"].as_str().unwrap_or("mark").to_string(),
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

/// The event lanes below the steps, in order: console markers, faults
/// (of any origin), QMP events, and the harness's own events.
const LANES: [&str; 4] = ["console", "faults", "qmp", "harness"];

/// The lane of an event: faults have their own, the rest go by origin.
fn lane_of(entry: &serde_json::Value, colour: Colour) -> usize {
    match (colour, entry["origin"].as_str()) {
        (Colour::Fault, _) => 1,
        (_, Some("console")) => 0,
        (_, Some("qmp")) => 2,
        _ => 3,
    }
}

/// Estimated advance of one character of the figure's monospace font at
/// 11 px (DejaVu Sans Mono's is 6.6 px, Liberation Mono's 6.6 px).
const CW: f64 = 7.0;
/// The height of a row of text, and where its baseline sits below its top.
const LINE_H: f64 = 14.0;
const BASELINE: f64 = 10.5;
/// The height of a step's row.
const ROW_H: f64 = 20.0;
/// The figure's width in pixels (drawn at this size, so the character
/// width estimate holds).
const WIDTH: f64 = 1240.0;
const PAD: f64 = 8.0;
/// The least room between two texts on one row.
const GAP: f64 = 6.0;
/// Label rows under an event lane; a label that fits in none shows on hover.
const LABEL_ROWS: usize = 4;
/// Console lines shown under a failed step.
const TAIL_LINES: usize = 10;
/// Longest text printed whole (step names, event labels); a longer one is
/// cut, and whole in its hover title.
const NAME_CHARS: usize = 40;

/// What one run's figure shows.
struct Figure {
    /// The steps of the attempt drawn, in order (times on the run's clock).
    steps: Vec<StepSpan>,
    /// `timeline.json`'s entries (times since the first power-on).
    entries: Vec<serde_json::Value>,
    /// Where the entries' time zero falls on the steps' clock.
    t0_s: f64,
    /// The last console lines, shown under the (last) failed step.
    tail: Vec<String>,
}

/// What a printed text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Tick,
    Name,
    Duration,
    Tail,
    Lane,
    Event,
}

/// A printed text and the box it takes: top-left corner, width (characters
/// × [`CW`]), one row ([`LINE_H`]) high.
#[derive(Debug, Clone)]
struct Label {
    x: f64,
    y: f64,
    w: f64,
    text: String,
    role: Role,
    class: &'static str,
    title: Option<String>,
}

impl Label {
    fn new(x: f64, y: f64, text: String, role: Role, class: &'static str) -> Label {
        Label { x, y, w: text.chars().count() as f64 * CW, text, role, class, title: None }
    }

    #[cfg(test)]
    fn overlaps(&self, o: &Label) -> bool {
        const EPS: f64 = 1e-6;
        self.x + self.w - o.x > EPS
            && o.x + o.w - self.x > EPS
            && self.y + LINE_H - o.y > EPS
            && o.y + LINE_H - self.y > EPS
    }
}

/// A step's bar.
#[derive(Debug, Clone)]
struct Bar {
    index: usize,
    x: f64,
    y: f64,
    w: f64,
    failed: bool,
    title: String,
}

/// An event's dot.
#[derive(Debug, Clone)]
struct Dot {
    x: f64,
    y: f64,
    class: &'static str,
    title: String,
}

/// The computed figure: every position is decided here, in Rust; drawing
/// it ([`render`]) only prints.
#[derive(Debug, Default)]
struct Layout {
    height: f64,
    /// The time axis' ends in pixels.
    x0: f64,
    x1: f64,
    /// Vertical grid lines (one per tick) from `grid_top` down.
    grid: Vec<f64>,
    grid_top: f64,
    /// Horizontal rules above each event lane.
    rules: Vec<f64>,
    bars: Vec<Bar>,
    dots: Vec<Dot>,
    labels: Vec<Label>,
    /// The box behind the console lines: x, y, width, height.
    tail_box: Option<(f64, f64, f64, f64)>,
    /// Event labels that fit in no row (shown on hover only).
    hidden: usize,
}

/// Seconds to pixels.
struct Scale {
    lo: f64,
    hi: f64,
    x0: f64,
    x1: f64,
}

impl Scale {
    fn x(&self, t: f64) -> f64 {
        self.x0 + (t - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0)
    }
}

/// `s` cut to `n` characters (an ellipsis marks the cut).
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A console line as printable text: escape sequences and control
/// characters dropped, tabs as spaces.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A step's duration as printed.
fn duration(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 100.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

/// Greedy rows for labels wanted at `(x, width)`: each goes to the first of
/// `rows` rows where it starts at least [`GAP`] after the end of the last
/// label placed there, starting at its x (moved left to end at `right`);
/// one that fits in no row gets None. Within a row every label starts right
/// of all placed before it, so none overlap.
fn place(spans: &[(f64, f64)], right: f64, rows: usize) -> Vec<Option<(usize, f64)>> {
    let mut ends = vec![f64::NEG_INFINITY; rows];
    spans
        .iter()
        .map(|&(x, w)| {
            let left = x.min(right - w);
            let row = ends.iter().position(|&end| end + GAP <= left)?;
            ends[row] = left + w;
            Some((row, left))
        })
        .collect()
}

/// The whole figure's layout: a tick row, a row per step (and the console
/// lines under the failed one), then the event lanes.
fn layout(f: &Figure) -> Layout {
    let names: Vec<String> = f.steps.iter().map(|s| format!("{} {} (line {})", s.index, s.action, s.line)).collect();
    let name_chars =
        names.iter().map(|n| n.chars().count().min(NAME_CHARS)).chain(LANES.iter().map(|l| l.len())).max().unwrap_or(0);
    let x0 = PAD + name_chars as f64 * CW + 2.0 * GAP;
    // Room after the axis for a duration printed after a bar ending there.
    let x1 = WIDTH - PAD - 8.0 * CW;
    let times: Vec<f64> = f.entries.iter().map(|e| e["t"].as_f64().unwrap_or(0.0) + f.t0_s).collect();
    let lo = times.iter().copied().fold(0.0f64, f64::min);
    let hi = times.iter().copied().chain(f.steps.iter().map(|s| s.start_s + s.duration_s)).fold(lo + 1.0, f64::max);
    let scale = Scale { lo, hi, x0, x1 };
    let mut l = Layout { x0, x1, ..Layout::default() };
    let y = ticks(&mut l, &scale, PAD);
    let y = step_rows(&mut l, &scale, f, &names, y);
    let y = lanes(&mut l, &scale, f, &times, y);
    l.height = y + PAD;
    l
}

/// The time axis' tick row at `y`: about ten ticks, never closer than
/// their labels are wide. Returns the next row's top.
fn ticks(l: &mut Layout, s: &Scale, y: f64) -> f64 {
    let text = |t: f64, step: f64| if step < 1.0 { format!("{t:.1}s") } else { format!("{t:.0}s") };
    let px = (s.x1 - s.x0) / (s.hi - s.lo);
    let mut step = 0.1;
    // 0.1 s up to 10^19 s: the loop always ends.
    for k in 0..60 {
        step = [0.1, 0.2, 0.5][k % 3] * 10f64.powi(k as i32 / 3);
        let widest = text(s.lo, step).len().max(text(s.hi, step).len()) as f64 * CW;
        if (s.hi - s.lo) / step <= 12.0 && step * px >= widest + 2.0 * GAP {
            break;
        }
    }
    let mut k = (s.lo / step).ceil() as i64;
    while k as f64 * step <= s.hi + 1e-9 {
        let t = k as f64 * step;
        let x = s.x(t);
        let mut label = Label::new(0.0, y, text(t, step), Role::Tick, "tick");
        label.x = (x - label.w / 2.0).clamp(0.0, WIDTH - label.w);
        l.labels.push(label);
        l.grid.push(x);
        k += 1;
    }
    l.grid_top = y + LINE_H;
    y + LINE_H + 4.0
}

/// A row per step from `y`: its name on the left, its bar on the axis,
/// its duration after the bar (before it, or inside it, where there is no
/// room). The last failed step's bar is red, with the console lines under
/// it. Returns the next row's top.
fn step_rows(l: &mut Layout, s: &Scale, f: &Figure, names: &[String], mut y: f64) -> f64 {
    let failed = f.steps.iter().rposition(|st| !st.passed);
    for (i, st) in f.steps.iter().enumerate() {
        let top = y + (ROW_H - LINE_H) / 2.0;
        let mut name = Label::new(PAD, top, cut(&names[i], NAME_CHARS), Role::Name, "name");
        if failed == Some(i) {
            name.class = "name failed";
        }
        if name.text != names[i] {
            name.title = Some(names[i].clone());
        }
        l.labels.push(name);
        let bx = s.x(st.start_s).clamp(s.x0, s.x1 - 2.0);
        let bw = (s.x(st.start_s + st.duration_s) - bx).clamp(2.0, s.x1 - bx);
        let outcome = if st.passed { "passed" } else { "failed" };
        let title = format!("{}: {:.3} s to {:.3} s, {outcome}", names[i], st.start_s, st.start_s + st.duration_s);
        l.bars.push(Bar { index: st.index, x: bx, y: y + 3.0, w: bw, failed: failed == Some(i), title });
        let mut d = Label::new(0.0, top, duration(st.duration_s), Role::Duration, "dur");
        d.x = if bx + bw + 4.0 + d.w <= WIDTH - PAD {
            bx + bw + 4.0
        } else if bx - 4.0 - d.w >= s.x0 {
            bx - 4.0 - d.w
        } else {
            d.class = "dur in";
            bx + bw - 4.0 - d.w
        };
        l.labels.push(d);
        y += ROW_H;
        if failed == Some(i) && !f.tail.is_empty() {
            y = tail_block(l, s, &f.tail, y);
        }
    }
    y + 4.0
}

/// The console lines under the failed step, from `y`, across the axis:
/// each cut to fit (whole in its hover title). Returns the next row's top.
fn tail_block(l: &mut Layout, s: &Scale, lines: &[String], y: f64) -> f64 {
    let x = s.x0 + 6.0;
    let fit = ((WIDTH - PAD - 6.0 - x) / CW).floor() as usize;
    let head = format!("last {} console lines:", lines.len());
    l.labels.push(Label::new(x, y + 3.0, head, Role::Tail, "tailhead"));
    for (k, line) in lines.iter().enumerate() {
        let text = plain(line);
        let mut label = Label::new(x, y + 3.0 + (k + 1) as f64 * LINE_H, cut(&text, fit), Role::Tail, "tail");
        if label.text != text {
            label.title = Some(text);
        }
        l.labels.push(label);
    }
    let h = (lines.len() + 1) as f64 * LINE_H + 6.0;
    l.tail_box = Some((s.x0, y, WIDTH - PAD - s.x0, h));
    y + h + 4.0
}

/// The event lanes from `y` (those with events): each a rule, its name, a
/// row of dots, and the printed labels in rows under them ([`place`]).
/// Returns the bottom.
fn lanes(l: &mut Layout, s: &Scale, f: &Figure, times: &[f64], mut y: f64) -> f64 {
    let events: Vec<(f64, usize, Colour, bool, String, String)> = f
        .entries
        .iter()
        .zip(times)
        .map(|(e, &t)| {
            let (colour, labelled) = entry_kind(e);
            let (short, title) = describe(e);
            (s.x(t), lane_of(e, colour), colour, labelled, cut(&short, NAME_CHARS), title)
        })
        .collect();
    for (lane, name) in LANES.iter().enumerate() {
        let mut mine: Vec<_> = events.iter().filter(|e| e.1 == lane).collect();
        if mine.is_empty() {
            continue;
        }
        mine.sort_by(|a, b| a.0.total_cmp(&b.0));
        l.rules.push(y);
        let dot_y = y + 9.0;
        l.labels.push(Label::new(PAD, dot_y - LINE_H / 2.0, name.to_string(), Role::Lane, "lane"));
        for (x, _, colour, _, _, title) in &mine {
            l.dots.push(Dot { x: *x, y: dot_y, class: colour.class(), title: title.clone() });
        }
        let labelled: Vec<_> = mine.into_iter().filter(|e| e.3).collect();
        let spans: Vec<(f64, f64)> = labelled.iter().map(|e| (e.0, e.4.chars().count() as f64 * CW)).collect();
        let mut rows = 0;
        for (e, at) in labelled.iter().zip(place(&spans, WIDTH - PAD, LABEL_ROWS)) {
            let Some((row, x)) = at else {
                l.hidden += 1;
                continue;
            };
            rows = rows.max(row + 1);
            let mut label = Label::new(x, y + 18.0 + row as f64 * LINE_H, e.4.clone(), Role::Event, e.2.class());
            label.title = Some(e.5.clone());
            l.labels.push(label);
        }
        y += 18.0 + rows as f64 * LINE_H + 6.0;
    }
    y
}

/// Print a layout as SVG (every text escaped).
fn render(l: &Layout) -> String {
    let mut svg = format!(
        "<svg class=\"wf\" width=\"{WIDTH}\" height=\"{h:.0}\" viewBox=\"0 0 {WIDTH} {h:.0}\" role=\"img\">",
        h = l.height.ceil()
    );
    for x in &l.grid {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
            l.grid_top,
            l.height - PAD
        );
    }
    let _ = write!(
        svg,
        "<line class=\"rule\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>",
        l.x0,
        l.x1,
        y = l.grid_top
    );
    for y in &l.rules {
        let _ = write!(svg, "<line class=\"rule\" x1=\"{PAD}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>", WIDTH - PAD);
    }
    if let Some((x, y, w, h)) = l.tail_box {
        let _ = write!(svg, "<rect class=\"tailbox\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/>");
    }
    for b in &l.bars {
        let _ = write!(
            svg,
            "<rect class=\"bar{}\" data-step=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
            if b.failed { " failed" } else { "" },
            b.index,
            b.x,
            b.y,
            b.w,
            ROW_H - 6.0,
            esc(&b.title)
        );
    }
    for d in &l.dots {
        let _ = write!(
            svg,
            "<g class=\"{}\"><title>{}</title><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"/></g>",
            d.class,
            esc(&d.title),
            d.x,
            d.y
        );
    }
    for t in &l.labels {
        let title = t.title.as_deref().map(|s| format!("<title>{}</title>", esc(s))).unwrap_or_default();
        let text = format!("<text x=\"{:.1}\" y=\"{:.1}\">{title}{}</text>", t.x, t.y + BASELINE, esc(&t.text));
        match t.role {
            Role::Event => {
                let _ = write!(svg, "<g class=\"{}\">{text}</g>", t.class);
            }
            _ => svg.push_str(&text.replacen("<text ", &format!("<text class=\"{}\" ", t.class), 1)),
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The last console lines of a failed run: those its failure carries
/// (`failure.txt`), else the end of its `serial.log`; at most
/// [`TAIL_LINES`].
fn console_tail(dir: &std::path::Path) -> Vec<String> {
    let failure = std::fs::read_to_string(dir.join("failure.txt")).unwrap_or_default();
    let mut lines: Vec<String> = failure.lines().filter_map(|l| l.strip_prefix("  | ")).map(str::to_string).collect();
    if lines.is_empty() {
        lines = file_tail(&dir.join("serial.log"));
    }
    let skip = lines.len().saturating_sub(TAIL_LINES);
    lines.split_off(skip)
}

/// The last lines of a file, read from its last 16 KiB.
fn file_tail(path: &std::path::Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 16 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(from)).and_then(|_| f.read_to_end(&mut bytes)).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if from > 0 && !lines.is_empty() {
        // The first line was cut.
        lines.remove(0);
    }
    lines.retain(|l| !l.trim().is_empty());
    lines
}

/// A run's figure: the last attempt's steps (the record's, else its
/// `timeline.json`'s), its timeline and, if a step failed, its console's
/// last lines. None when there is nothing to draw.
fn figure(r: &Record) -> Option<Figure> {
    let file = r
        .run_dir
        .as_ref()
        .and_then(|d| std::fs::read(d.join("timeline.json")).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    let entries = file["entries"].as_array().cloned().unwrap_or_default();
    let last = r.steps.iter().map(|s| s.attempt).max();
    let mut steps: Vec<StepSpan> = r.steps.iter().filter(|s| Some(s.attempt) == last).map(|s| s.step.clone()).collect();
    if steps.is_empty() {
        steps = serde_json::from_value(file["steps"].clone()).unwrap_or_default();
    }
    if steps.is_empty() && entries.is_empty() {
        return None;
    }
    // An older file does not say where its time zero is: the first power-on.
    let t0_s = file["t0_s"]
        .as_f64()
        .unwrap_or_else(|| steps.iter().find(|s| s.action == "power_on").map_or(0.0, |s| s.start_s));
    let tail = match &r.run_dir {
        Some(dir) if steps.iter().any(|s| !s.passed) => console_tail(dir),
        _ => Vec::new(),
    };
    Some(Figure { steps, entries, t0_s, tail })
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
.passed{color:#176f2c}.flaky{color:#a36b00}.failed,.error{color:#b00020;font-weight:bold}.not_run{color:#777}\
section{margin:1.5em 0;border-top:1px solid #ddd}pre{background:#f6f6f6;padding:8px;overflow:auto}\
.note{color:#555;font-size:12px}.wf-wrap{overflow-x:auto}svg.wf{display:block}\
svg.wf text{font:11px 'DejaVu Sans Mono','Liberation Mono',ui-monospace,Menlo,Consolas,monospace;fill:#333;\
white-space:pre;font-weight:normal}\
line.grid{stroke:#eee}line.rule{stroke:#ccc}text.tick,text.lane{fill:#777}\
rect.bar{fill:#6a9be0}rect.bar.failed{fill:#d1242f}svg.wf text.name.failed{fill:#b00020}svg.wf text.in{fill:#fff}\
rect.tailbox{fill:#fff4f4;stroke:#e5a0a6}svg.wf text.tailhead{fill:#b00020}\
g.boot circle{fill:#1f6feb}g.update circle{fill:#8250df}g.health circle{fill:#1a7f37}\
g.fault circle{fill:#d1242f}svg.wf g.fault text{fill:#d1242f}g.qmp circle{fill:#bf8700}g.provision circle{fill:#0a7d8c}\
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

/// The whole report page, headed with what it is about (a board's
/// identity) when there is a heading.
pub fn page_headed(records: &[Record], duration_s: f64, heading: Option<&crate::report::Heading>) -> String {
    let page = page(records, duration_s);
    let Some(h) = heading else { return page };
    let mut block = format!("<h1>{}</h1><table class=\"identity\">", esc(&h.title));
    for (k, v) in &h.facts {
        let _ = write!(block, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    block.push_str("</table>");
    page.replacen("<h1>devlab report</h1>", &block, 1)
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
        }
        match figure(r) {
            Some(f) => {
                let l = layout(&f);
                let mut notes = Vec::new();
                if r.attempts > 1 {
                    notes.push(format!("attempt {} of {} drawn", r.attempts, r.attempts));
                }
                if l.hidden > 0 {
                    notes.push(format!("{} event labels that did not fit show on hover", l.hidden));
                }
                if !notes.is_empty() {
                    let _ = write!(h, "<p class=\"note\">{}</p>", notes.join("; "));
                }
                let _ = write!(h, "<div class=\"wf-wrap\">{}</div>", render(&l));
            }
            None if r.run_dir.is_some() => h.push_str("<p>(no timeline)</p>"),
            None => {}
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

    /// The figure of a timeline alone.
    fn chart(entries: &[serde_json::Value]) -> String {
        render(&layout(&Figure { steps: Vec::new(), entries: entries.to_vec(), t0_s: 0.0, tail: Vec::new() }))
    }

    fn span(index: usize, action: &str, start_s: f64, duration_s: f64, passed: bool) -> StepSpan {
        StepSpan { index, action: action.into(), line: 10 + 4 * index, start_s, duration_s, passed }
    }

    #[test]
    fn chart_places_events_on_lanes_and_escapes_text() {
        let entries = vec![
            json!({"t": 0.0, "origin": "step", "event": "power_on"}),
            json!({"t": 1.0, "origin": "console", "event": "slot_chosen", "slot": "B", "tries_left": 0}),
            json!({"t": 2.0, "origin": "qmp", "event": "qmp", "name": "WATCHDOG", "detail": "reset"}),
            json!({"t": 4.0, "origin": "step", "event": "fault", "kind": "<corrupt> & co", "target": "server"}),
        ];
        let l = layout(&Figure { steps: Vec::new(), entries: entries.clone(), t0_s: 0.0, tail: Vec::new() });
        // Console first, then faults (the watchdog and the fault, whatever
        // their origin), then the harness's power-on; no QMP lane is left.
        let lanes: Vec<&str> = l.labels.iter().filter(|t| t.role == Role::Lane).map(|t| t.text.as_str()).collect();
        assert_eq!(lanes, ["console", "faults", "harness"]);
        let dot = |title: &str| l.dots.iter().find(|d| d.title.contains(title)).unwrap();
        assert!(dot("slot_chosen").y < dot("WATCHDOG").y);
        assert_eq!(dot("WATCHDOG").y, dot("fault").y);
        assert!(dot("fault").y < dot("power_on").y);
        // t=4 is the end of the axis, t=0 its start.
        assert!((dot("fault").x - l.x1).abs() < 1e-9 && (dot("power_on").x - l.x0).abs() < 1e-9);
        let svg = chart(&entries);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("<g class=\"fault\"><title>2.000s qmp"), "{svg}");
        assert!(svg.contains("&lt;corrupt&gt; &amp; co"), "{svg}");
        assert!(!svg.contains("<corrupt>"));
        assert!(svg.contains(">slot B</text>"), "{svg}");
    }

    /// Steps close together, one failed, and bursts of markers and faults:
    /// every step named, no two texts overlapping, bars on the axis, the
    /// failed one red with the console's last lines under it.
    #[test]
    fn waterfall_names_every_step_and_no_texts_overlap() {
        let steps = vec![
            span(1, "power_on", 0.0, 0.02, true),
            span(2, "boot", 0.02, 0.01, true),
            span(3, "a_step_with_a_name_far_longer_than_the_column_allows", 0.03, 0.0, true),
            span(4, "install_bundle", 0.03, 11.5, true),
            span(5, "expect", 11.6, 30.0, false),
        ];
        let mut entries = vec![json!({"t": 0.0, "origin": "step", "event": "power_on"})];
        for (k, event) in ["uboot_banner", "kernel_started", "ssh_up", "kernel_panic"].iter().enumerate() {
            entries.push(json!({"t": 1.0 + 0.01 * k as f64, "origin": "console", "event": event}));
        }
        for k in 0..12 {
            let t = 2.0 + 0.02 * k as f64;
            entries.push(json!({"t": t, "origin": "console", "event": "slot_chosen", "slot": "A", "tries_left": k}));
            entries.push(json!({"t": t, "origin": "step", "event": "fault", "kind": "power_cut", "target": "vm"}));
            entries.push(json!({"t": t, "origin": "qmp", "event": "qmp", "name": "RESET"}));
        }
        // The last marker at the very end of the axis: its label moves left.
        entries.push(json!({"t": 41.0, "origin": "console", "event": "root_mounted", "slot": "B"}));
        let tail: Vec<String> = (1..=10).map(|k| format!("console line {k}")).chain(["<panic> & co".into()]).collect();
        let tail = tail[1..].to_vec();
        let f = Figure { steps: steps.clone(), entries, t0_s: 0.5, tail };
        let l = layout(&f);
        for s in &steps {
            let name = format!("{} {}", s.index, s.action);
            assert!(
                l.labels.iter().any(|t| t.role == Role::Name
                    && (t.text.starts_with(&name)
                        || t.text.ends_with('…')
                            && name.starts_with(t.text.trim_end_matches('…'))
                            && t.title.as_deref().is_some_and(|whole| whole.starts_with(&name)))),
                "step {name} not named"
            );
        }
        assert!(l.labels.iter().any(|t| t.text == "4 install_bundle (line 26)"));
        for (i, a) in l.labels.iter().enumerate() {
            assert!(a.x >= 0.0 && a.x + a.w <= WIDTH && a.y >= 0.0 && a.y + LINE_H <= l.height, "{a:?} off the figure");
            for b in &l.labels[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        // Close events needed more than one row, and some only show on hover.
        let events: Vec<&Label> = l.labels.iter().filter(|t| t.role == Role::Event).collect();
        let rows: std::collections::BTreeSet<i64> = events.iter().map(|t| t.y as i64).collect();
        assert!(rows.len() > 3, "{rows:?}");
        assert!(l.hidden > 0);
        let labelled = f.entries.iter().filter(|e| entry_kind(e).1).count();
        assert_eq!(events.len() + l.hidden, labelled);
        for b in &l.bars {
            assert!(b.x >= l.x0 - 1e-9 && b.x + b.w <= l.x1 + 1e-9 && b.w >= 2.0, "{b:?} off the axis");
        }
        let failed: Vec<usize> = l.bars.iter().filter(|b| b.failed).map(|b| b.index).collect();
        assert_eq!(failed, [5]);
        // Bars follow the steps' clock; events are moved onto it by t0_s.
        // The axis ends with the last step (11.6 + 30 s).
        let x = |t: f64| l.x0 + t / 41.6 * (l.x1 - l.x0);
        assert!((l.bars[3].x - x(0.03)).abs() < 1e-6 && (l.bars[3].w - (x(11.53) - x(0.03))).abs() < 1e-6);
        assert!(l.dots.iter().any(|d| (d.x - x(41.5)).abs() < 1e-6));
        let tail: Vec<&str> = l.labels.iter().filter(|t| t.role == Role::Tail).map(|t| t.text.as_str()).collect();
        assert_eq!(tail.len(), 11, "{tail:?}");
        assert_eq!(tail[1], "console line 2");
        assert_eq!(tail[10], "<panic> & co");
        // The console lines sit under the failed bar.
        let (_, tail_y, _, _) = l.tail_box.unwrap();
        assert!(tail_y >= l.bars[4].y + ROW_H - 6.0);
        let svg = render(&l);
        assert!(svg.contains("<rect class=\"bar failed\""), "{svg}");
        assert_eq!(svg.matches("<rect class=\"bar").count(), 5);
        assert!(STYLE.contains("rect.bar.failed{fill:#d1242f}"));
        assert!(svg.contains(">&lt;panic&gt; &amp; co</text>"), "{svg}");
        assert!(!svg.contains("<panic>"));
        assert!(svg.contains(">11.5 s</text>") && svg.contains(">20 ms</text>"), "{svg}");
    }

    #[test]
    fn labels_take_the_first_row_they_fit_in() {
        let at = place(&[(0.0, 50.0), (10.0, 50.0), (30.0, 10.0), (70.0, 10.0), (990.0, 20.0), (5.0, 5.0)], 1000.0, 2);
        assert_eq!(at, [Some((0, 0.0)), Some((1, 10.0)), None, Some((0, 70.0)), Some((0, 980.0)), None]);
    }

    #[test]
    fn console_lines_are_made_printable_and_cut() {
        assert_eq!(plain("\u{1b}[1;31mred\u{1b}[0m\tok\r"), "red ok");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }

    #[test]
    fn a_failed_run_shows_its_last_attempt_and_console_lines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("timeline.json"),
            json!({"entries": [{"t": 0.5, "origin": "console", "event": "kernel_started"}],
                   "steps": [], "t0_s": 1.0})
            .to_string(),
        )
        .unwrap();
        let lines: String = (1..=15).map(|k| format!("  | line {k} <x>\n")).collect();
        std::fs::write(d.path().join("failure.txt"), format!("step 2 (expect) failed: no\nrun directory: x\n{lines}"))
            .unwrap();
        let step = |attempt, index, action: &str, passed| crate::report::StepRecord {
            attempt,
            step: StepSpan { index, action: action.into(), line: 3, start_s: 0.5, duration_s: 2.0, passed },
        };
        let rec = Record {
            id: "s@b".into(),
            scenario: "s".into(),
            board: "b".into(),
            status: Status::Failed,
            attempts: 2,
            duration_s: 3.0,
            message: None,
            run_dir: Some(d.path().to_path_buf()),
            repetition: None,
            steps: vec![
                step(1, 1, "power_on", true),
                step(1, 2, "first_try", false),
                step(2, 1, "power_on", true),
                step(2, 2, "expect", false),
            ],
        };
        let html = page(&[rec], 3.0);
        assert!(html.contains("attempt 2 of 2 drawn"), "{html}");
        assert!(html.contains(">2 expect (line 3)</text>"), "{html}");
        assert!(!html.contains("first_try"), "{html}");
        assert!(html.contains(">line 15 &lt;x&gt;</text>") && html.contains(">line 6 &lt;x&gt;</text>"), "{html}");
        assert!(!html.contains(">line 5 &lt;x&gt;</text>"), "ten lines only: {html}");
        assert!(html.contains("<rect class=\"bar failed\""), "{html}");
    }

    #[test]
    fn an_old_timeline_without_steps_still_draws() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("timeline.json"),
            json!({"entries": [{"t": 0.5, "origin": "console", "event": "kernel_started"}]}).to_string(),
        )
        .unwrap();
        let rec = Record {
            id: "s@b".into(),
            scenario: "s".into(),
            board: "b".into(),
            status: Status::Passed,
            attempts: 1,
            duration_s: 3.0,
            message: None,
            run_dir: Some(d.path().to_path_buf()),
            repetition: None,
            steps: Vec::new(),
        };
        let f = figure(&rec).unwrap();
        assert!(f.steps.is_empty() && f.t0_s == 0.0 && f.tail.is_empty());
        assert!(render(&layout(&f)).contains(">kernel started</text>"));
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
            step: StepSpan { index, action: action.into(), line: 4, start_s: 0.0, duration_s, passed },
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
