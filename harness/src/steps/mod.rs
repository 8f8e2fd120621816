//! Step kinds, one file each. A step file holds the step's arguments (a
//! serde struct read from its `[[step]]` table), its parse-time check
//! ([`StepKind::check`], run by `devlab check` and before any run: an
//! authoring mistake is an input error, never a device failure) and its run
//! code ([`StepKind::run`], given the run's context). The [`steps!`] table
//! below is the only list of step kinds: it generates the [`Step`] enum, the
//! action names, the parser and the dispatch. Adding a step = a new file
//! here, one table line, a row in `scenarios/README.md`.
//!
//! Nothing in a step file spawns QEMU or touches another step's state: a
//! step reaches the machine, SSH, servers and timeline through
//! [`crate::runner::Run`], and flavour state through the flavour modules.

use crate::error::{InputError, Result};
use crate::runner::Run;
use crate::scenario::{PlacedStep, Scenario};
use regex::Regex;
use serde::{Deserialize, Deserializer};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What every step file imports.
pub(crate) mod prelude {
    pub(crate) use super::{
        default_boot_timeout, default_step_timeout, default_update_timeout, guest, one, yes, CheckCx, Dur, Pattern,
        Power, Source, StepKind, SYSTEM_POWEROFF, SYSTEM_REBOOT,
    };
    pub(crate) use crate::error::{Error, Result};
    pub(crate) use crate::runner::{blocking, Run};
    pub(crate) use crate::scenario::PlacedStep;
    pub(crate) use crate::timeline::Event;
    pub(crate) use regex::bytes::Regex as BytesRegex;
    pub(crate) use serde::Deserialize;
    pub(crate) use std::collections::BTreeMap;
    pub(crate) use std::time::Duration;
}

/// How the harness reboots a machine after an update it installed: the
/// system's own `/sbin/reboot` by path, the bare name where there is none.
/// By path because busybox's ash runs its own applet for a bare `reboot`
/// even where the system has a program of that name, and on devlab's
/// images that program is the shutdown script that skips busybox init's
/// two fixed one-second pauses (`fixtures/rootfs/usr/libexec/devlab/shutdown`).
pub(crate) const SYSTEM_REBOOT: &str = "/sbin/reboot || reboot";

/// The `poweroff` step's command, by path for the same reason.
pub(crate) const SYSTEM_POWEROFF: &str = "/sbin/poweroff || poweroff";

/// One step kind: its check at plan time and its run.
pub(crate) trait StepKind {
    /// Refuse, before anything boots, what cannot run: wrong values, steps
    /// in a machine state they cannot run in, names that do not exist.
    /// Errors point at the step's field (`cx.at`).
    fn check(&self, _cx: &mut CheckCx<'_>) -> Result<()> {
        Ok(())
    }

    /// Does the step act on the lab (the update server, the provisioning
    /// service) rather than on a machine? Such a step runs once in a
    /// scenario with several machines, and takes no `on`.
    fn lab(&self) -> bool {
        false
    }

    /// Will it change the disk of a running machine (so the run boots its
    /// machines with the disk seam, [`crate::board::DISK_NODE`])?
    fn changes_running_disk(&self) -> bool {
        false
    }

    /// The fields naming the recipes this step serves (`image`, or a
    /// product's parts).
    fn images(&self) -> Vec<&toml::Spanned<String>> {
        Vec::new()
    }

    /// Does this lab step read every machine's timeline (given to it in
    /// [`Run::machine_views`], each drained first)?
    fn reads_machines(&self) -> bool {
        false
    }

    fn images_mut(&mut self) -> Vec<&mut toml::Spanned<String>> {
        Vec::new()
    }

    /// Read the step from its `[[step]]` table's text (header and `action`
    /// blanked, so spans point into the file).
    fn parse(text: &str) -> std::result::Result<Self, toml::de::Error>
    where
        Self: Sized + serde::de::DeserializeOwned,
    {
        toml::from_str(text)
    }

    /// Do the step.
    async fn run(&self, r: &mut Run<'_>, placed: &PlacedStep) -> Result<()>;
}

/// The `image` accessors of a step that serves an image recipe (its
/// `image` field), inside its `impl StepKind`.
macro_rules! serves_image {
    () => {
        fn images(&self) -> Vec<&toml::Spanned<String>> {
            vec![&self.image]
        }

        fn images_mut(&mut self) -> Vec<&mut toml::Spanned<String>> {
            vec![&mut self.image]
        }
    };
}
pub(crate) use serves_image;

/// The step table: `"action" => module::Variant(Struct)`, in the order the
/// docs list them.
macro_rules! steps {
    ($($action:literal => $module:ident :: $variant:ident ( $ty:ident )),* $(,)?) => {
        $(pub mod $module;)*

        /// One step of a scenario.
        #[derive(Debug, Clone)]
        pub enum Step {
            $($variant($module::$ty),)*
        }

        /// The action names, in the order the docs list them.
        pub const ACTIONS: &[&str] = &[$($action),*];

        impl Step {
            pub fn action(&self) -> &'static str {
                match self {
                    $(Step::$variant(_) => $action,)*
                }
            }

            /// The step a `[[step]]` table's text describes; `None` for an
            /// unknown action.
            pub(crate) fn parse(action: &str, text: &str) -> std::result::Result<Option<Step>, toml::de::Error> {
                Ok(Some(match action {
                    $($action => Step::$variant(<$module::$ty as StepKind>::parse(text)?),)*
                    _ => return Ok(None),
                }))
            }

            /// Does it act on the lab, once for every machine?
            pub fn lab(&self) -> bool {
                match self {
                    $(Step::$variant(s) => StepKind::lab(s),)*
                }
            }

            /// Does this lab step read every machine's timeline?
            pub fn reads_machines(&self) -> bool {
                match self {
                    $(Step::$variant(s) => StepKind::reads_machines(s),)*
                }
            }

            /// Will it change a running machine's disk?
            pub fn changes_running_disk(&self) -> bool {
                match self {
                    $(Step::$variant(s) => StepKind::changes_running_disk(s),)*
                }
            }

            pub(crate) fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
                match self {
                    $(Step::$variant(s) => StepKind::check(s, cx),)*
                }
            }

            /// The recipes a serving step names.
            pub fn images(&self) -> Vec<&toml::Spanned<String>> {
                match self {
                    $(Step::$variant(s) => StepKind::images(s),)*
                }
            }

            pub(crate) fn images_mut(&mut self) -> Vec<&mut toml::Spanned<String>> {
                match self {
                    $(Step::$variant(s) => StepKind::images_mut(s),)*
                }
            }

            pub(crate) async fn run(&self, r: &mut Run<'_>, placed: &PlacedStep) -> Result<()> {
                match self {
                    $(Step::$variant(s) => StepKind::run(s, r, placed).await,)*
                }
            }
        }
    };
}

steps! {
    "power_on" => power_on::PowerOn(PowerOn),
    "boot" => boot::Boot(Boot),
    "expect" => expect::Expect(Expect),
    "wait_ssh" => wait_ssh::WaitSsh(WaitSsh),
    "login" => login::Login(Login),
    "ssh" => ssh::Ssh(SshRun),
    "assert_slot" => assert_slot::AssertSlot(AssertSlot),
    "assert_env" => assert_env::AssertEnv(AssertEnv),
    "assert_file" => assert_file::AssertFile(AssertFile),
    "poweroff" => poweroff::Poweroff(Poweroff),
    "power_cut" => power_cut::PowerCut(PowerCut),
    "reset" => reset::Reset(Reset),
    "corrupt_disk" => corrupt_disk::CorruptDisk(CorruptDisk),
    "serve_release" => serve_release::ServeRelease(ServeRelease),
    "http_fault" => http_fault::HttpFault(HttpFault),
    "update" => update::Update(Update),
    "assert_version" => assert_version::AssertVersion(AssertVersion),
    "link" => link::Link(Link),
    "serve_bundle" => serve_bundle::ServeBundle(ServeBundle),
    "rauc_install" => rauc_install::RaucInstall(RaucInstall),
    "assert_rauc" => assert_rauc::AssertRauc(AssertRauc),
    "disk_errors" => disk_errors::DiskErrors(DiskErrors),
    "clear_disk_errors" => clear_disk_errors::ClearDiskErrors(ClearDiskErrors),
    "upload" => upload::Upload(Upload),
    "download" => download::Download(Download),
    "wait_qmp" => wait_qmp::WaitQmp(WaitQmp),
    "assert_service" => assert_service::AssertService(AssertService),
    "checkpoint" => checkpoint::Checkpoint(Checkpoint),
    "wait_callback" => wait_callback::WaitCallback(WaitCallback),
    "serve_ostree" => serve_ostree::ServeOstree(ServeOstree),
    "assert_ostree" => assert_ostree::AssertOstree(AssertOstree),
    "provision_assign" => provision_assign::ProvisionAssign(ProvisionAssign),
    "provision_wait" => provision_wait::ProvisionWait(ProvisionWait),
    "provision_fault" => provision_fault::ProvisionFault(ProvisionFault),
    "provision_table" => provision_table::ProvisionTable(ProvisionTable),
    "provision_restart" => provision_restart::ProvisionRestart(ProvisionRestart),
    "wait_poweroff" => wait_poweroff::WaitPoweroff(WaitPoweroff),
    "arm_fault" => arm_fault::ArmFault(ArmFault),
    "wait_fault" => wait_fault::WaitFault(WaitFault),
    "refuse" => refuse::Refuse(Refuse),
    "allow" => allow::Allow(Allow),
    "assert_node_unknown" => assert_node_unknown::AssertNodeUnknown(AssertNodeUnknown),
    "power_cycle" => power_cycle::PowerCycle(PowerCycle),
    "dhcp_stop" => dhcp_stop::DhcpStop(DhcpStop),
    "dhcp_start" => dhcp_start::DhcpStart(DhcpStart),
    "serve_artifact" => serve_artifact::ServeArtifact(ServeArtifact),
    "install" => install::Install(Install),
    "assert_fact" => assert_fact::AssertFact(AssertFact),
    "reboot" => reboot::Reboot(Reboot),
    "fleet_agent" => fleet_agent::FleetAgent(FleetAgent),
    "publish" => publish::Publish(Publish),
    "rollout" => rollout::RolloutOp(RolloutOp),
    "wait_fleet" => wait_fleet::WaitFleet(WaitFleet),
    "assert_fleet" => assert_fleet::AssertFleet(AssertFleet),
    "fleet_fault" => fleet_fault::FleetFault(FleetFault),
    "product_agent" => product_agent::ProductAgent(ProductAgent),
    "publish_product" => publish_product::PublishProduct(PublishProduct),
}

/// The longest duration a scenario may write (a day): anything longer is a
/// typo, and a bound keeps `Instant + d` from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration written as `"30s"`, `"2m"`, `"500ms"`: more than zero and at
/// most [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"30s\" or \"2m\": {e}")))?;
        if parsed.is_zero() {
            return Err(serde::de::Error::custom(format!("`{s}`: a duration must be more than zero")));
        }
        if parsed > MAX_DURATION {
            return Err(serde::de::Error::custom(format!("`{s}` is longer than the limit of 24h")));
        }
        Ok(Dur(parsed))
    }
}

/// Placeholders a pattern or command may use; a board fills them in.
pub const PLACEHOLDERS: [&str; 4] = ["{arch}", "{board}", "{mac}", "{serial}"];

/// A regex, checked when the file is read. Placeholders (`{arch}` …) are
/// filled in per board with their values escaped, so a pattern that
/// compiled at load compiles at run time too.
#[derive(Clone)]
pub struct Pattern(pub String);

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pattern").field(&self.0).finish()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let probe = PLACEHOLDERS.iter().fold(s.clone(), |acc, p| acc.replace(p, "x"));
        Regex::new(&probe).map_err(|e| serde::de::Error::custom(format!("not a valid regex: {e}")))?;
        Ok(Pattern(s))
    }
}

impl Pattern {
    /// The pattern with its placeholders filled in by `fill` (each value
    /// escaped), compiled for text.
    pub fn text_regex(&self, fill: impl Fn(&str) -> Option<String>) -> Regex {
        let source = self.filled(fill);
        // Checked at load with each placeholder as a literal; escaped
        // values are literals too.
        Regex::new(&source).expect("a pattern checked at load")
    }

    /// The same, for console bytes.
    pub fn bytes_regex(&self, fill: impl Fn(&str) -> Option<String>) -> regex::bytes::Regex {
        let source = self.filled(fill);
        regex::bytes::Regex::new(&source).expect("a pattern checked at load")
    }

    /// The source with placeholders replaced by their escaped values.
    pub fn filled(&self, fill: impl Fn(&str) -> Option<String>) -> String {
        PLACEHOLDERS.iter().fold(self.0.clone(), |acc, p| match fill(p) {
            Some(v) if acc.contains(p) => acc.replace(p, &regex::escape(&v)),
            _ => acc,
        })
    }
}

/// Where an assertion reads its state: the running guest (over SSH) or the
/// disk, read from the host (works when the guest is off or does not boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Guest,
    Disk,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Guest => "guest",
            Source::Disk => "disk",
        }
    }
}

pub(crate) fn default_boot_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
pub(crate) fn default_step_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
pub(crate) fn default_update_timeout() -> Dur {
    Dur(Duration::from_secs(180))
}
pub(crate) fn guest() -> Source {
    Source::Guest
}
pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn one() -> u32 {
    1
}

/// The machine as a plan sees it, step by step (labgrid's strategy states,
/// at plan time): what a step needs and leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Never powered on: no disk overlay yet.
    Never,
    /// Off (powered off, power cut, or powered off by the guest and waited for).
    Off,
    /// On: firmware, kernel, userland; no SSH session yet.
    On,
    /// On with an SSH session (`wait_ssh` since the last power-on or reboot).
    Ssh,
}

impl Power {
    fn describe(self) -> &'static str {
        match self {
            Power::Never => "the machine was never powered on",
            Power::Off => "the machine is off here",
            Power::On => "the machine is on (no SSH session yet) here",
            Power::Ssh => "the machine is on (with an SSH session) here",
        }
    }
}

/// What a step's check sees: the file, the step's place in it, and what the
/// steps before it did (the machine's state, what was served).
pub struct CheckCx<'a> {
    pub scenario: &'a Scenario,
    /// The machine whose steps are being checked, in a scenario with
    /// several (each machine's steps are walked in turn, with the lab's).
    pub machine: Option<String>,
    /// The image that machine's disk starts from.
    pub image: toml::Spanned<String>,
    pub root: PathBuf,
    /// The current step's span in the file.
    pub span: Range<usize>,
    pub action: &'static str,
    /// The machine's state before this step.
    pub power: Power,
    /// Partition labels of the scenario's disk.
    pub disk_labels: &'static [&'static str],
    /// RAUC bundles served so far (by name).
    pub bundles: Vec<String>,
    /// Has a step started the update server?
    pub server: bool,
    pub checkpoint_seen: bool,
    /// The fault armed (`arm_fault`) and not yet waited for.
    pub armed: Option<arm_fault::ArmedFaultKind>,
    /// Patterns refused (`refuse`) and not yet allowed, by name.
    pub refused: Vec<String>,
    pub disk_errors_seen: bool,
    /// A device's logins since the machine last came up (`login`).
    pub logins: Vec<crate::device::Via>,
}

impl<'a> CheckCx<'a> {
    pub fn path(&self) -> &Path {
        &self.scenario.path
    }

    pub fn text(&self) -> &str {
        self.scenario.text()
    }

    /// An input error at field `key` of the current step (at the step's
    /// header if the key is not written, e.g. a default).
    pub fn at(&self, key: &str, msg: impl Into<String>) -> crate::error::Error {
        let text = self.text();
        let step_text = &text[self.span.clone()];
        let found = crate::board::find_key(step_text, key).or_else(|| crate::board::find_inline_key(step_text, key));
        let offset = self.span.start + found.unwrap_or(0);
        InputError::new(self.path(), msg).at(text, offset).field(key).into()
    }

    /// The machine must be in one of `allowed` for this step; else an
    /// input error at the step's `action` saying what is missing.
    pub fn need(&self, allowed: &[Power], why: &str) -> Result<()> {
        if allowed.contains(&self.power) {
            return Ok(());
        }
        let fix = if allowed.contains(&Power::Ssh) && !allowed.contains(&Power::On) {
            match self.power {
                Power::On => "add a wait_ssh step before it",
                _ => "add power_on, then wait_ssh, before it",
            }
        } else if allowed.contains(&Power::On) {
            "add a power_on step before it"
        } else if self.power == Power::Never {
            "the disk exists from the first power_on on"
        } else {
            "add poweroff, power_cut or wait_poweroff before it"
        };
        let on = self.machine.as_ref().map(|m| format!("on machine `{m}`: ")).unwrap_or_default();
        Err(self.at("action", format!("{on}{} {why}, but {} ({fix})", self.action, self.power.describe())))
    }

    /// The machine must be running (with or without SSH).
    pub fn need_on(&self) -> Result<()> {
        self.need(&[Power::On, Power::Ssh], "needs the machine running")
    }

    /// The step runs a command over SSH.
    pub fn need_ssh(&self) -> Result<()> {
        self.need(&[Power::Ssh], "runs over SSH")
    }

    /// The transport a device's command step uses: `via`, else the
    /// profile's default, else (only the other one logged in) that one. The
    /// runner picks the same ([`crate::runner::Run::via`]). `None`: no device.
    pub fn resolved_via(&self, via: Option<crate::device::Via>) -> Option<crate::device::Via> {
        use crate::device::Via;
        let d = self.scenario.device.as_ref()?;
        Some(via.unwrap_or(
            match (d.default_via, self.logins.contains(&Via::Ssh), self.logins.contains(&Via::Serial)) {
                (Via::Ssh, false, true) => Via::Serial,
                (Via::Serial, true, false) => Via::Ssh,
                (default, _, _) => default,
            },
        ))
    }

    /// A command step: over SSH on a devlab image; on a device, over `via`
    /// (else its default transport, else the one logged in), which a
    /// `login` must have opened.
    pub fn need_login(&self, via: Option<crate::device::Via>) -> Result<()> {
        let Some(via) = self.resolved_via(via) else { return self.need_ssh() };
        if self.logins.contains(&via) {
            return Ok(());
        }
        let how = match via {
            crate::device::Via::Ssh => "",
            crate::device::Via::Serial => " with via = \"serial\"",
        };
        Err(self.at(
            "action",
            format!(
                "{} runs over {}, but the device is not logged in that way here: add a login step{how}",
                self.action,
                via.name()
            ),
        ))
    }

    /// The machine must be off (and have a disk).
    pub fn need_off(&self) -> Result<()> {
        self.need(&[Power::Off], "needs the machine off with its disk")
    }

    /// A step of the provisioning flow: the scenario needs a `[provision]`.
    pub fn need_provision(&self) -> Result<()> {
        if self.scenario.provision.is_none() {
            return Err(
                self.at("action", format!("{} needs a [provision] table (the service and its profiles)", self.action))
            );
        }
        Ok(())
    }

    /// A step of the lab network: the scenario needs `network = "lab"`.
    pub fn need_lab_network(&self) -> Result<()> {
        if self.scenario.header.network != crate::scenario::Network::Lab {
            return Err(self.at("action", format!("{} needs the lab network (`network = \"lab\"`)", self.action)));
        }
        Ok(())
    }

    /// A count of at least 1 and at most `max`.
    /// `name` (at field `key`) must be a partition of the scenario's disk.
    pub fn partition(&self, key: &str, name: &str) -> Result<()> {
        // A device's labels are read from its image before the run.
        if self.disk_labels.contains(&name) || self.scenario.device.is_some() {
            return Ok(());
        }
        let labels = self.disk_labels.join(", ");
        Err(self.at(key, format!("no partition `{name}` (the disk has: {labels})")))
    }

    pub fn count(&self, key: &str, n: u32, max: u32) -> Result<()> {
        if n == 0 || n > max {
            return Err(self.at(key, format!("{key} must be from 1 to {max}, not {n}")));
        }
        Ok(())
    }

    /// A length in whole seconds: more than zero and at most a day.
    pub fn seconds(&self, key: &str, s: u64) -> Result<()> {
        if s == 0 || s > MAX_DURATION.as_secs() {
            return Err(self.at(key, format!("{key} must be from 1 to {} seconds, not {s}", MAX_DURATION.as_secs())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each step kind is defined in its own file under `steps/` and listed
    /// once in the table; no other file defines or dispatches one.
    #[test]
    fn every_step_kind_lives_in_its_own_module() {
        let dir = crate::rundir::workspace_root().join("harness/src/steps");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs") && n != "mod.rs")
            .map(|n| n.trim_end_matches(".rs").to_string())
            .collect();
        files.sort();
        let mut actions: Vec<String> = ACTIONS.iter().map(|a| a.to_string()).collect();
        actions.sort();
        assert_eq!(files, actions, "one file per step kind, named after its action");
        for action in ACTIONS {
            let text = std::fs::read_to_string(dir.join(format!("{action}.rs"))).unwrap();
            assert!(text.contains("impl StepKind for"), "{action}.rs does not implement its step");
            assert!(text.starts_with(&format!("//! `{action}`")), "{action}.rs must open with its doc");
        }
        let docs = std::fs::read_to_string(crate::rundir::workspace_root().join("scenarios/README.md")).unwrap();
        for action in ACTIONS {
            assert!(docs.contains(&format!("| `{action}` |")), "scenarios/README.md has no row for `{action}`");
        }
        // Nowhere else implements a step, or matches on step variants to run them.
        let src = crate::rundir::workspace_root().join("harness/src");
        for entry in std::fs::read_dir(&src).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(!text.contains("impl StepKind for"), "{} implements a step outside steps/", p.display());
                assert!(
                    !text.contains("impl crate::steps::StepKind"),
                    "{} implements a step outside steps/",
                    p.display()
                );
            }
        }
        let runner = std::fs::read_to_string(src.join("runner.rs")).unwrap();
        let dispatched: Vec<&&str> = ACTIONS
            .iter()
            .filter(|a| {
                let variant: String = a.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
                runner.contains(&format!("Step::{variant}("))
            })
            .collect();
        // The runner may look for a checkpoint (the lifecycle), nothing else.
        assert!(dispatched.iter().all(|a| **a == "checkpoint"), "runner.rs matches on steps: {dispatched:?}");
    }

    #[test]
    fn every_action_is_listed_and_parses() {
        for action in ACTIONS {
            let parsed = Step::parse(action, "");
            assert!(!matches!(parsed, Ok(None)), "{action} is listed but not parsed");
        }
        assert!(matches!(Step::parse("explode", ""), Ok(None)));
    }

    #[test]
    fn durations_are_bounded() {
        let d = |s: &str| toml::from_str::<std::collections::BTreeMap<String, Dur>>(&format!("t = \"{s}\""));
        assert_eq!(d("2m").unwrap()["t"], Dur(Duration::from_secs(120)));
        assert!(d("0s").unwrap_err().to_string().contains("more than zero"));
        assert!(d("25h").unwrap_err().to_string().contains("longer than the limit"));
        assert!(d("99999999999999999999999h").is_err());
        assert!(d("soon").unwrap_err().to_string().contains("not a duration"));
    }

    #[test]
    fn placeholders_are_filled_escaped() {
        let p = Pattern("slot on {board}$".into());
        let re = p.text_regex(|k| (k == "{board}").then(|| "a.b+c".to_string()));
        assert!(re.is_match("slot on a.b+c"));
        assert!(!re.is_match("slot on aXbbc"));
    }
}
