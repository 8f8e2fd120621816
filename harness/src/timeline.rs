//! The timeline of a run: typed events from the console (boot markers), QMP
//! (RESET, SHUTDOWN, WATCHDOG …) and the runner's own steps, each with its
//! time since power-on. Which console lines are markers is data
//! (`harness/markers/`, loaded by [`crate::markers`]). `timeline.json`
//! ([`TimelineFile`]) keeps the times, and each step's start and duration;
//! the normalised form (no times, redacted strings) is what insta
//! snapshots. Every snapshot goes through the one [`Redactor`]. Nothing here
//! touches a machine.

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PowerOn,
    /// A device's own console line, named by its profile's marker (an
    /// `event` name that is none of these kinds), with its captures and
    /// fixed fields as text.
    Mark {
        name: String,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        fields: std::collections::BTreeMap<String, String>,
    },
    /// A device fact read through its profile (`ready`, `slot`, ...).
    Fact {
        name: String,
        value: String,
    },
    /// A device's own artifact published on the update server.
    ArtifactServed {
        name: String,
        file: String,
        /// An OSTree repo's ref (the repo is served below `file`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ostree_ref: Option<String>,
    },
    /// Logged in to a device over `ssh` or `serial`.
    LoggedIn {
        via: String,
    },
    UbootBanner,
    AutobootInterrupted,
    UbootCommand {
        command: String,
    },
    BootScript,
    EnvCopy {
        copy: String,
    },
    SlotChosen {
        slot: String,
        tries_left: u32,
    },
    NoSlotLeft,
    KernelStarted,
    Initramfs,
    RootMounted {
        slot: String,
    },
    DropbearStarted,
    KernelPanic,
    Expected {
        label: String,
    },
    SshUp,
    Command {
        command: String,
        status: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdout: Option<String>,
    },
    SlotBooted {
        slot: String,
    },
    Env {
        source: String,
        vars: std::collections::BTreeMap<String, String>,
    },
    File {
        source: String,
        path: String,
    },
    Qmp {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    PoweredOff,
    PowerCut,
    Reset,
    Fault {
        kind: String,
        target: String,
    },
    WatchdogArmed,
    FaultTriggered {
        kind: String,
    },
    Update {
        stage: String,
    },
    Health {
        result: String,
    },
    ReleaseServed {
        version: String,
        image: String,
    },
    UpdateResult {
        version: String,
        outcome: String,
    },
    VersionRunning {
        version: String,
    },
    /// The run reached (and saved, or started from) a checkpoint: the same
    /// event either way, so timelines compare equal.
    Checkpoint {
        name: String,
    },
    Callback {
        name: String,
    },
    Transfer {
        direction: String,
        path: String,
        bytes: u64,
    },
    Service {
        name: String,
        running: bool,
    },
    BundleServed {
        name: String,
        image: String,
        signer: String,
    },
    RaucInstall {
        bundle: String,
        outcome: String,
    },
    RaucStatus {
        booted: String,
        primary: String,
        boot_status: String,
    },
    Link {
        up: bool,
    },
    /// An OSTree boot decision of boot-ostree.cmd (bootcount, altbootcmd,
    /// which deployment).
    BootDecision {
        detail: String,
    },
    OstreeServed {
        image: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        delta: bool,
    },
    /// `ostree admin status`, one `<state> <commit> version <v>` per deployment.
    OstreeStatus {
        deployments: Vec<String>,
    },
    /// The provisioning service: a profile assigned, a node state reached.
    Provision {
        detail: String,
    },
    /// The provisioning service's state table, one line per row.
    ProvisionTable {
        rows: Vec<String>,
    },
    /// What the network boot script chose (`devlab: node <uuid>: ...`).
    /// A fleet snapshot: the events after this are this node's.
    Node {
        name: String,
        board: String,
    },
    NetBoot {
        detail: String,
    },
    /// A stage of the management OS's agent (`devlab-mgmt: ...`).
    Agent {
        stage: String,
    },
    /// Firmware that announced itself (SeaBIOS, iPXE, SYSLINUX).
    Firmware {
        name: String,
    },
    /// Network-boot firmware that gave up asking for an address (iPXE's
    /// `No configuration methods succeeded`, U-Boot's `Retry time exceeded`).
    NetConfigFailed {
        firmware: String,
    },
    /// A console pattern refused (`refuse`, active) or allowed again.
    Refuse {
        name: String,
        active: bool,
    },
    /// A line of a machine's fleet agent (`devlab-fleet: ...`).
    Fleet {
        what: String,
    },
    /// A machine's fleet agent configured (and started) on a channel.
    FleetAgent {
        channel: String,
    },
    /// The operator on a channel's rollout: a version published in waves,
    /// a wave opened, a pause, resume or abort.
    Rollout {
        channel: String,
        detail: String,
    },
    /// What `assert_fleet` found in the machines' timelines.
    FleetAsserted {
        detail: String,
    },
    /// A line of a product board's agent (`devlab-product: ...`).
    Product {
        what: String,
    },
    /// A machine's product agent configured as the `main` or the `sub`.
    ProductAgent {
        role: String,
    },
    /// A product's release published: its version and each part's.
    ProductPublished {
        product: String,
        version: String,
        main: String,
        sub: String,
    },
    Failed {
        step: String,
    },
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Console,
    Qmp,
    Step,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds since the first power-on.
    pub t: f64,
    pub origin: Origin,
    #[serde(flatten)]
    pub event: Event,
    /// The machine it happened on, in a scenario with several (not written
    /// for a one-machine run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The run's events in order.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Timeline {
    pub entries: Vec<Entry>,
}

impl Timeline {
    pub fn push(&mut self, t: f64, origin: Origin, event: Event) {
        self.entries.push(Entry { t, origin, event, node: None });
    }

    /// Append events from the console and QMP that arrived since the last
    /// drain, merged by arrival time (stable, console first on ties).
    pub fn extend_merged(&mut self, mut batch: Vec<Entry>) {
        batch.sort_by(|a, b| a.t.total_cmp(&b.t));
        self.entries.extend(batch);
    }

    /// The normalised form for snapshots: events only, strings redacted.
    /// A burst of identical BLOCK_IO_ERROR events (one per failed request:
    /// how many depends on how the guest split its writes) is one event.
    pub fn normalised(&self, redactor: &Redactor) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for e in &self.entries {
            let ev = redactor.event(&e.event);
            let repeat = matches!(&ev, Event::Qmp { name, .. } if name == "BLOCK_IO_ERROR") && out.last() == Some(&ev);
            if !repeat {
                out.push(ev);
            }
        }
        out
    }
}

/// One step that ran, on the run's clock, as `timeline.json` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpan {
    /// 1-based index in the scenario.
    pub index: usize,
    pub action: String,
    /// The line of its `[[step]]` header.
    pub line: usize,
    /// Seconds since the run started.
    pub start_s: f64,
    pub duration_s: f64,
    pub passed: bool,
}

impl From<&crate::runner::StepTime> for StepSpan {
    fn from(s: &crate::runner::StepTime) -> StepSpan {
        StepSpan {
            index: s.index,
            action: s.action.to_string(),
            line: s.line,
            start_s: s.start_s,
            duration_s: s.duration_s,
            passed: s.passed,
        }
    }
}

/// What `timeline.json` holds: the `entries` (times since the first
/// power-on), each step that ran with its times since the run started, and
/// `t0_s`, where the entries' time zero falls on the steps' clock (negative
/// when a restored checkpoint's replayed entries predate the run). A file
/// written before steps were recorded has only `entries`: no steps, `t0_s`
/// unknown.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TimelineFile {
    pub entries: Vec<Entry>,
    #[serde(default)]
    pub steps: Vec<StepSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0_s: Option<f64>,
}

impl TimelineFile {
    /// The file of a run: its timeline, its steps, and the instants the run
    /// started and its entries' time zero (if a machine ever started).
    pub fn new(
        timeline: &Timeline,
        steps: &[crate::runner::StepTime],
        started: std::time::Instant,
        zero: Option<std::time::Instant>,
    ) -> TimelineFile {
        let t0_s = zero.map(|z| match z.checked_duration_since(started) {
            Some(d) => d.as_secs_f64(),
            None => -started.duration_since(z).as_secs_f64(),
        });
        TimelineFile { entries: timeline.entries.clone(), steps: steps.iter().map(StepSpan::from).collect(), t0_s }
    }
}

/// A console line that marks a boot stage, turned into its event: the
/// first of the shipped markers (`harness/markers/*.toml`, see
/// [`crate::markers`]) that matches it.
pub fn console_marker(line: &str) -> Option<Event> {
    crate::markers::builtin().event(line)
}

/// QMP events worth a timeline entry, with the detail that stays stable.
pub fn qmp_event(name: &str, data: &serde_json::Value) -> Option<Event> {
    let detail = match name {
        "RESET" | "SHUTDOWN" => data.get("reason").and_then(|v| v.as_str()).map(str::to_string),
        "WATCHDOG" => data.get("action").and_then(|v| v.as_str()).map(str::to_string),
        "GUEST_PANICKED" => data.get("action").and_then(|v| v.as_str()).map(str::to_string),
        // "write: Input/output error"
        "BLOCK_IO_ERROR" => {
            let field = |k: &str| data.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            Some(format!("{}: {}", field("operation"), field("reason")))
        }
        "POWERDOWN" => None,
        // STOP/RESUME are the harness's own pauses (a checkpoint, a disk
        // fault completed with the guest paused); a stop of QEMU's own
        // (an I/O error with `werror=stop`) has its BLOCK_IO_ERROR.
        _ => return None,
    };
    Some(Event::Qmp { name: name.to_string(), detail })
}

/// Replaces what differs between runs (times, ports, paths, ids) with fixed
/// placeholders, so snapshots compare behaviour only.
pub struct Redactor {
    rules: Vec<(Regex, String)>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Redactor {
    /// `literals`: exact strings to replace first (run directory → `[run]` …).
    pub fn new(literals: &[(&str, &str)]) -> Redactor {
        let mut rules: Vec<(Regex, String)> = literals
            .iter()
            .filter(|(lit, _)| !lit.is_empty())
            .map(|(lit, with)| (Regex::new(&regex::escape(lit)).unwrap(), with.to_string()))
            .collect();
        let fixed: &[(&str, &str)] = &[
            (r"\b[0-9a-f]{64}\b", "[sha256]"),
            (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "[uuid]"),
            (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?Z?\b", "[timestamp]"),
            (r"\[\s*\d+\.\d{6}\]", "[time]"),
            (r"\b(127\.0\.0\.1|localhost|10\.0\.2\.2):\d+", "$1:[port]"),
            (r"(/tmp|/var/tmp)/[^\s'\x22]+", "[tmp]"),
        ];
        rules.extend(fixed.iter().map(|(re, with)| (Regex::new(re).unwrap(), with.to_string())));
        Redactor { rules }
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (re, with) in &self.rules {
            out = re.replace_all(&out, with.as_str()).into_owned();
        }
        out
    }

    pub fn event(&self, e: &Event) -> Event {
        let r = |s: &String| self.text(s);
        match e {
            Event::UbootCommand { command } => Event::UbootCommand { command: r(command) },
            Event::Expected { label } => Event::Expected { label: r(label) },
            Event::Command { command, status, stdout } => {
                Event::Command { command: r(command), status: *status, stdout: stdout.as_ref().map(r) }
            }
            Event::Env { source, vars } => {
                Event::Env { source: source.clone(), vars: vars.iter().map(|(k, v)| (k.clone(), r(v))).collect() }
            }
            Event::File { source, path } => Event::File { source: source.clone(), path: r(path) },
            Event::Fault { kind, target } => Event::Fault { kind: kind.clone(), target: r(target) },
            Event::Update { stage } => Event::Update { stage: r(stage) },
            Event::Health { result } => Event::Health { result: r(result) },
            Event::Agent { stage } => Event::Agent { stage: r(stage) },
            Event::Qmp { name, detail } => Event::Qmp { name: name.clone(), detail: detail.as_ref().map(r) },
            Event::OstreeStatus { deployments } => {
                Event::OstreeStatus { deployments: deployments.iter().map(r).collect() }
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_become_events() {
        assert_eq!(console_marker("U-Boot 2023.01+dfsg-2 (Jan 01 2024)"), Some(Event::UbootBanner));
        assert_eq!(
            console_marker("devlab-boot: slot B tries-left 1"),
            Some(Event::SlotChosen { slot: "B".into(), tries_left: 1 })
        );
        assert_eq!(console_marker("devlab-boot: env b"), Some(Event::EnvCopy { copy: "b".into() }));
        // The fleet agent's lines, even behind a shell prompt's escape.
        assert_eq!(
            console_marker("devlab:/# \x1b[6ndevlab-fleet: reported 2 ok "),
            Some(Event::Fleet { what: "reported 2 ok".into() })
        );
        assert_eq!(
            console_marker("devlab-product: pushing 3 to the sub"),
            Some(Event::Product { what: "pushing 3 to the sub".into() })
        );
        assert_eq!(
            console_marker("devlab-init: root slot=A dev=/dev/vda4"),
            Some(Event::RootMounted { slot: "A".into() })
        );
        assert_eq!(console_marker("random noise"), None);
        // The banner must start the line (U-Boot repeats its name elsewhere).
        assert_eq!(console_marker("Booting U-Boot 2023.01"), None);
    }

    #[test]
    fn network_boot_lines_of_ipxe_and_uboot_read_alike() {
        let register = Some(Event::NetBoot { detail: "register".into() });
        assert_eq!(console_marker("devlab: node 6b1e4c2a-0d3f-4a51-9f0e-000000000101: register"), register);
        assert_eq!(console_marker("1:\tdevlab: node 6b1e4c2a-0d3f-4a51-9f0e-000000000201: register"), register);
        assert_eq!(console_marker("1:\tdevlab: unknown node: register"), register);
        assert_eq!(
            console_marker("devlab: U-Boot network boot: pxe get, pxe boot"),
            Some(Event::Firmware { name: "U-Boot PXE".into() })
        );
        // The kernel command line U-Boot echoes is no network-boot event.
        assert_eq!(console_marker("append: console=ttyAMA0 quiet devlab.mode=register"), None);
        // Firmware that gave up on DHCP (lines as the serial port has them).
        assert_eq!(
            console_marker("Configuring (net0 52:54:00:de:20:01).................. No configuration methods "),
            Some(Event::NetConfigFailed { firmware: "iPXE".into() })
        );
        assert_eq!(
            console_marker("Retry time exceeded; starting again"),
            Some(Event::NetConfigFailed { firmware: "U-Boot".into() })
        );
    }

    #[test]
    fn redactor_hides_ports_paths_times_and_ids() {
        let r = Redactor::new(&[("/work/target/devlab-runs/x-1", "[run]")]);
        assert_eq!(r.text("ssh -p 40123 root@127.0.0.1:40123"), "ssh -p 40123 root@127.0.0.1:[port]");
        assert_eq!(r.text("log at /work/target/devlab-runs/x-1/serial.log"), "log at [run]/serial.log");
        assert_eq!(r.text("tmp /tmp/.tmpAbC/file ok"), "tmp [tmp] ok");
        assert_eq!(r.text("[  12.345678] hello"), "[time] hello");
        assert_eq!(r.text("at 2026-11-24T01:02:03Z"), "at [timestamp]");
        assert_eq!(r.text("id 6b1e4c2a-0d3f-4a51-9f0e-000000000001"), "id [uuid]");
        assert_eq!(r.text(&"ab".repeat(32)), "[sha256]");
    }

    #[test]
    fn normalised_timeline_drops_times_and_redacts() {
        let mut t = Timeline::default();
        t.push(0.0, Origin::Step, Event::PowerOn);
        t.extend_merged(vec![
            Entry { t: 0.3, origin: Origin::Qmp, event: Event::Qmp { name: "RESET".into(), detail: None }, node: None },
            Entry { t: 0.1, origin: Origin::Console, event: Event::UbootBanner, node: None },
        ]);
        t.push(1.0, Origin::Step, Event::Command { command: "echo 127.0.0.1:99".into(), status: 0, stdout: None });
        let n = t.normalised(&Redactor::default());
        assert_eq!(n[1], Event::UbootBanner, "merged by time");
        assert_eq!(n[3], Event::Command { command: "echo 127.0.0.1:[port]".into(), status: 0, stdout: None });
        let yaml = serde_json::to_string(&n[0]).unwrap();
        assert_eq!(yaml, r#"{"event":"power_on"}"#);
    }

    #[test]
    fn block_io_error_bursts_normalise_to_one_event() {
        let io = || {
            qmp_event(
                "BLOCK_IO_ERROR",
                &serde_json::json!({"operation": "write", "reason": "Input/output error", "action": "report", "device": "", "node-name": "disk0", "nospace": false}),
            )
        };
        let mut t = Timeline::default();
        t.push(0.0, Origin::Qmp, io().unwrap());
        t.push(0.1, Origin::Qmp, io().unwrap());
        t.push(0.2, Origin::Step, Event::PowerCut);
        t.push(0.3, Origin::Qmp, io().unwrap());
        let n = t.normalised(&Redactor::default());
        let want = Event::Qmp { name: "BLOCK_IO_ERROR".into(), detail: Some("write: Input/output error".into()) };
        assert_eq!(n, vec![want.clone(), Event::PowerCut, want]);
    }

    #[test]
    fn qmp_events_keep_stable_detail_only() {
        let e = qmp_event("SHUTDOWN", &serde_json::json!({"guest": true, "reason": "guest-shutdown"}));
        assert_eq!(e, Some(Event::Qmp { name: "SHUTDOWN".into(), detail: Some("guest-shutdown".into()) }));
        assert_eq!(qmp_event("NIC_RX_FILTER_CHANGED", &serde_json::json!({})), None);
        assert_eq!(qmp_event("SOMETHING_NEW", &serde_json::json!({})), None);
    }

    #[test]
    fn timeline_json_keeps_its_entries_and_adds_the_steps() {
        let mut t = Timeline::default();
        t.push(0.0, Origin::Step, Event::PowerOn);
        t.push(1.5, Origin::Console, Event::KernelStarted);
        let steps = [crate::runner::StepTime {
            index: 1,
            action: "power_on",
            line: 7,
            start_s: 0.25,
            duration_s: 2.0,
            passed: true,
        }];
        let started = std::time::Instant::now();
        let zero = started + std::time::Duration::from_millis(500);
        let file = TimelineFile::new(&t, &steps, started, Some(zero));
        let json = serde_json::to_value(&file).unwrap();
        // The entries are written exactly as before.
        assert_eq!(json["entries"], serde_json::to_value(&t).unwrap()["entries"]);
        assert_eq!(json["steps"][0]["action"], "power_on");
        assert_eq!(json["steps"][0]["line"], 7);
        assert_eq!(json["steps"][0]["start_s"], 0.25);
        assert!((json["t0_s"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{json}");
        // A zero before the run's start (a restored checkpoint) is negative.
        let early = TimelineFile::new(&t, &[], zero, Some(started));
        assert!((early.t0_s.unwrap() + 0.5).abs() < 1e-9);
        // A file written before steps were recorded still reads.
        let old: TimelineFile =
            serde_json::from_str(r#"{"entries":[{"t":0.0,"origin":"step","event":"power_on"}]}"#).unwrap();
        assert_eq!(old.entries.len(), 1);
        assert!(old.steps.is_empty() && old.t0_s.is_none());
        let back: TimelineFile = serde_json::from_value(json).unwrap();
        assert_eq!(back.steps, file.steps);
    }
}
