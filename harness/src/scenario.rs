//! Scenario files (TOML) read into typed steps (`crate::steps`), then
//! checked as a plan: each step's own `check` sees the machine's state and
//! what earlier steps served or armed, so an authoring mistake is an input
//! error before anything boots. The file is data. Unknown steps and fields are
//! refused with `file:line:column`, the field and what was expected: each
//! `[[step]]` table is deserialized on its own against its variant's struct,
//! so toml's spans stay exact. Parsing never boots anything.

use crate::error::{InputError, Result};
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::steps::{Dur, Pattern, Source, Step, ACTIONS};

/// `[provision]`: the run starts the provisioning service (in-process,
/// its database in the run directory) with these install profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSpec {
    pub profiles: Vec<ProfileSpec>,
}

/// One install profile: the image recipe it installs (its disk, gzip'd,
/// with its SHA-256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: toml::Spanned<String>,
    pub image: toml::Spanned<String>,
    /// Serve an image whose bytes do not match the profile's checksum (a
    /// download corrupted on the way): the agent must refuse it.
    #[serde(default)]
    pub corrupt_image: bool,
}

/// `[fleet]`: the machines are a fleet polling the lab's update server
/// (release channels, staged rollouts) and taking reboot slots from a
/// FleetLock server backed by a real etcd, both started with the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// The release channels (`stable`, `beta`, any plain name).
    pub channels: Vec<toml::Spanned<String>>,
    /// Reboot slots of the FleetLock semaphore: at most this many machines
    /// reboot into a new version at once.
    #[serde(default = "one_slot")]
    pub lock_slots: toml::Spanned<u32>,
    /// How often the machines' agents check in (compressed for tests).
    #[serde(default = "default_interval")]
    pub interval: Dur,
}

fn one_slot() -> toml::Spanned<u32> {
    toml::Spanned::new(0..0, 1)
}

fn default_interval() -> Dur {
    Dur(Duration::from_secs(2))
}

impl FleetSpec {
    pub fn has_channel(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c.get_ref() == channel)
    }

    /// What is wrong with naming `channel`: none if it is one of the fleet's.
    pub fn refuse_channel(&self, channel: &str) -> Option<String> {
        let known: Vec<&str> = self.channels.iter().map(|c| c.get_ref().as_str()).collect();
        (!self.has_channel(channel)).then(|| format!("unknown channel `{channel}` (the fleet's: {})", known.join(", ")))
    }

    /// What is wrong with a list of machine names: the first that names no
    /// machine of `machines`.
    pub fn refuse_machines<'a>(
        machines: &[MachineDecl],
        names: impl IntoIterator<Item = &'a String>,
    ) -> Option<String> {
        let known: Vec<&str> = machines.iter().map(|m| m.name.get_ref().as_str()).collect();
        let unknown = names.into_iter().find(|n| !known.contains(&n.as_str()))?;
        Some(format!("no machine `{unknown}` (the fleet's: {})", known.join(", ")))
    }

    /// A machine's channel: its own, else the first.
    pub fn channel_of(&self, machine: &MachineDecl) -> String {
        machine.channel.as_ref().unwrap_or(&self.channels[0]).get_ref().clone()
    }
}

/// Which events a scenario's snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotEvents {
    #[default]
    All,
    Steps,
}

/// What the board's disk holds at the first power-on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskStart {
    /// The scenario's image.
    #[default]
    Image,
    /// Nothing (all zeroes): a bare node waiting to be provisioned.
    Blank,
}

/// `[[machine]]`: one machine of a scenario with several. A scenario
/// without these tables has one machine, the run's board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineDecl {
    /// What `on` calls it (plain: letters, digits, `-`, `_`).
    pub name: toml::Spanned<String>,
    /// Its board; without one, the run's board (each of `boards` in turn).
    #[serde(default)]
    pub board: Option<toml::Spanned<String>>,
    /// The image its disk starts from; without one, the scenario's.
    #[serde(default)]
    pub image: Option<toml::Spanned<String>>,
    /// Its own NIC MAC (else the board's): machines on one lab network
    /// need their own.
    #[serde(default)]
    pub mac: Option<toml::Spanned<String>>,
    /// Its own SMBIOS UUID (the provisioning service's node identity).
    #[serde(default)]
    pub uuid: Option<toml::Spanned<String>>,
    /// Its own SMBIOS serial number.
    #[serde(default)]
    pub serial: Option<toml::Spanned<String>>,
    /// Bad spots on its disk from power-on: writes there fail with EIO.
    #[serde(default)]
    pub disk_errors: Vec<MachineDiskError>,
    /// What its disk holds at the first power-on (else `[scenario] disk`).
    #[serde(default)]
    pub disk: Option<toml::Spanned<DiskStart>>,
    /// Its release channel in a `[fleet]` (else the fleet's first).
    #[serde(default)]
    pub channel: Option<toml::Spanned<String>>,
}

/// A bad spot on a machine's disk: writes at `offset_mib` fail with EIO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineDiskError {
    pub offset_mib: u64,
}

/// One machine of a run, as resolved for a board: its name (empty for the
/// one machine of a scenario without `[[machine]]`), its board with the
/// machine's own identity applied, the image its disk starts from and the
/// bad spots of its disk.
#[derive(Debug, Clone)]
pub struct MachinePlan {
    pub name: String,
    pub board: crate::board::Board,
    pub image: toml::Spanned<String>,
    pub disk_errors: Vec<crate::board::DiskError>,
    /// What its disk holds at the first power-on.
    pub disk: DiskStart,
}

/// `[scenario] network`: what the machines' NICs are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Each machine its own QEMU user network; the lab (update server,
    /// provisioning service) at 10.0.2.2.
    #[default]
    User,
    /// One lab network for all: a namespace with a bridge, a tap per
    /// machine, real dnsmasq for DHCP and TFTP, the provisioning service on
    /// the bridge (needs root; `[provision]`).
    Lab,
}

/// A step with where it was written.
#[derive(Debug, Clone)]
pub struct PlacedStep {
    pub step: Step,
    /// The machines it runs on, in `[[machine]]` order (its `on`, or every
    /// machine); empty in a one-machine scenario and for the lab's own
    /// steps (serving, server faults), which run once for all.
    pub on: Vec<String>,
    /// 1-based line of the step's `[[step]]` header.
    pub line: usize,
    /// Byte offset of that header in the file.
    pub offset: usize,
    /// The step's table as canonical JSON (no comments, no layout): what a
    /// checkpoint key hashes.
    pub canonical: String,
}

/// The `[scenario]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The boards it runs on, one run each; may be left out when every
    /// `[[machine]]` names its own board.
    #[serde(default)]
    pub boards: Vec<toml::Spanned<String>>,
    /// The image recipe (`images/recipes/<image>.toml`).
    #[serde(default = "base")]
    pub image: toml::Spanned<String>,
    /// A device profile instead of an image recipe: `NAME` is
    /// `devices/NAME.toml`; a path (with `/` or ending `.toml`) is relative
    /// to the scenario file.
    #[serde(default)]
    pub device: Option<toml::Spanned<String>>,
    /// What the disk holds at the first power-on: the image, or nothing
    /// (`blank`: a bare node the scenario provisions over the network; the
    /// image is then what it ends up running).
    #[serde(default)]
    pub disk: DiskStart,
    /// What the machines' NICs are on (`user`, the default, or `lab`).
    #[serde(default)]
    pub network: Network,
    /// Bound on the whole run.
    #[serde(default = "default_run_timeout")]
    pub timeout: Dur,
    /// Console patterns that fail the run at once.
    #[serde(default = "default_bad_patterns")]
    pub bad_patterns: Vec<Pattern>,
    /// Board features the scenario relies on (`"watchdog"`): a board that
    /// lacks one is refused before anything boots.
    #[serde(default)]
    pub needs: Vec<String>,
    /// What the timeline snapshot holds: every event (`all`, the default),
    /// or only the steps' own (`steps`: for scenarios whose fault lands
    /// either side of a write by design, where console markers differ
    /// between equally good outcomes that the steps assert).
    #[serde(default)]
    pub snapshot: SnapshotEvents,
    /// Parameters: every combination of their values is its own run (see
    /// `Scenario::variants`).
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<toml::Value>>,
}

fn base() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "base".to_string())
}
fn default_run_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_bad_patterns() -> Vec<Pattern> {
    vec![Pattern("Kernel panic".into()), Pattern("Unknown command".into())]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    scenario: Header,
    #[serde(default)]
    provision: Option<ProvisionSpec>,
    #[serde(default)]
    fleet: Option<FleetSpec>,
    #[serde(default)]
    product: Option<crate::product::ProductSpec>,
    #[serde(default)]
    machine: Vec<MachineDecl>,
    #[serde(default)]
    step: Vec<toml::Spanned<toml::Table>>,
}

/// A parsed scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub header: Header,
    pub provision: Option<ProvisionSpec>,
    /// `[fleet]`: channels and reboot slots of a fleet of machines.
    pub fleet: Option<FleetSpec>,
    /// `[product]`: a main and a sub machine updated as one.
    pub product: Option<crate::product::ProductSpec>,
    /// `[[machine]]` tables (none: one machine, the run's board).
    pub machines: Vec<MachineDecl>,
    pub steps: Vec<PlacedStep>,
    /// The matrix values this variant runs with (`param` -> value name).
    pub variant: Vec<(String, String)>,
    /// The device profile named by `device` (none: a devlab image).
    pub device: Option<std::sync::Arc<crate::device::Device>>,
    /// Where its timeline snapshots live (none: `snapshots/` beside the
    /// file; a generated device suite keeps them beside the profile).
    pub snapshot_dir: Option<PathBuf>,
    text: String,
}

/// One value of a matrix parameter: `{param}` gives its name, `{param.key}`
/// one of its fields (a table value's other keys).
#[derive(Debug, Clone)]
struct MatrixValue {
    name: String,
    fields: BTreeMap<String, String>,
}

fn matrix_scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A matrix value is put into the scenario text as-is, inside a string:
/// it must not be able to end that string or the line.
fn matrix_safe(s: &str) -> bool {
    !s.chars().any(|c| matches!(c, '\'' | '"' | '\\' | '\n' | '\r'))
}

impl Scenario {
    /// Every variant of a scenario file: the file itself without a
    /// `[scenario.matrix]`, else one scenario per combination of the matrix
    /// values, named `<name>.<param>=<value>...`, with `{param}` and
    /// `{param.key}` substituted in the steps.
    pub fn load_variants(path: &Path) -> Result<Vec<Scenario>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| InputError::new(path, format!("cannot read scenario: {e}")))?;
        Self::variants(path, text)
    }

    pub fn variants(path: &Path, text: String) -> Result<Vec<Scenario>> {
        let raw: Raw = toml::from_str(&text).map_err(|e| InputError::from_toml(path, &text, 0, &e))?;
        if raw.scenario.matrix.is_empty() {
            return Ok(vec![Self::parse(path, text)?]);
        }
        let at = |key: &str, msg: String| -> crate::error::Error {
            let offset = crate::board::find_key(&text, key).unwrap_or(0);
            InputError::new(path, msg).at(&text, offset).field(format!("matrix.{key}")).into()
        };
        let mut params: Vec<(String, Vec<MatrixValue>)> = Vec::new();
        for (name, values) in &raw.scenario.matrix {
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain || name == "arch" || name == "board" {
                return Err(at(
                    name,
                    format!("`{name}` cannot be a matrix parameter (plain names; not arch or board)"),
                ));
            }
            if values.is_empty() {
                return Err(at(name, format!("`{name}` has no values")));
            }
            let mut list = Vec::new();
            for v in values {
                let value = match v {
                    toml::Value::Table(t) => {
                        let Some(name_v) = t.get("name").and_then(matrix_scalar) else {
                            return Err(at(name, format!("a table value of `{name}` needs a `name`")));
                        };
                        let mut fields = BTreeMap::new();
                        for (k, fv) in t {
                            let Some(f) = matrix_scalar(fv) else {
                                return Err(at(name, format!("`{name}.{k}`: only strings, integers and booleans")));
                            };
                            fields.insert(k.clone(), f);
                        }
                        MatrixValue { name: name_v, fields }
                    }
                    v => match matrix_scalar(v) {
                        Some(s) => MatrixValue { name: s, fields: BTreeMap::new() },
                        None => {
                            return Err(at(name, format!("`{name}`: values are strings, integers, booleans or tables")))
                        }
                    },
                };
                let all_safe = matrix_safe(&value.name) && value.fields.values().all(|f| matrix_safe(f));
                if !all_safe {
                    return Err(at(name, format!("`{name}`: a value may not contain quotes, backslashes or newlines")));
                }
                if list.iter().any(|o: &MatrixValue| o.name == value.name) {
                    return Err(at(name, format!("`{name}`: value `{}` twice", value.name)));
                }
                list.push(value);
            }
            params.push((name.clone(), list));
        }
        // The steps start at the first [[step]]: the header keeps its text.
        let steps_at = text.find("\n[[step]]").map_or(0, |i| i + 1);
        let mut combos: Vec<Vec<(String, MatrixValue)>> = vec![Vec::new()];
        for (name, values) in &params {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((name.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let placeholder = Regex::new(r"\{([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?\}").expect("static regex");
        let mut out = Vec::new();
        for combo in combos {
            let mut body = String::with_capacity(text.len());
            let mut last = steps_at;
            for m in placeholder.captures_iter(&text[steps_at..]) {
                let whole = m.get(0).expect("match");
                let Some((_, value)) = combo.iter().find(|(n, _)| n == &m[1]) else { continue };
                let got = match m.get(2) {
                    None => Some(&value.name),
                    Some(k) => value.fields.get(k.as_str()),
                };
                let Some(got) = got else {
                    return Err(InputError::new(
                        path,
                        format!("`{}`: value `{}` of `{}` has no field `{}`", whole.as_str(), value.name, &m[1], &m[2]),
                    )
                    .at(&text, steps_at + whole.start())
                    .field("matrix")
                    .into());
                };
                body.push_str(&text[last..steps_at + whole.start()]);
                body.push_str(got);
                last = steps_at + whole.end();
            }
            let substituted = format!("{}{body}{}", &text[..steps_at], &text[last..]);
            let mut s = Self::parse(path, substituted)?;
            let label: Vec<String> = combo.iter().map(|(n, v)| format!("{n}={}", v.name)).collect();
            s.header.name = format!("{}.{}", s.header.name, label.join("."));
            s.variant = combo.into_iter().map(|(n, v)| (n, v.name)).collect();
            out.push(s);
        }
        Ok(out)
    }

    pub fn parse(path: &Path, text: String) -> Result<Scenario> {
        let raw: Raw = toml::from_str(&text).map_err(|e| InputError::from_toml(path, &text, 0, &e))?;
        let mut steps: Vec<PlacedStep> = Vec::new();
        for spanned in &raw.step {
            let span = spanned.span();
            let at = |msg: String, field: &str| InputError::new(path, msg).at(&text, span.start).field(field);
            let action = match spanned.get_ref().get("action") {
                Some(toml::Value::String(a)) => a.clone(),
                Some(_) => return Err(at("`action` must be a string".into(), "action").into()),
                None => {
                    return Err(at(format!("missing field `action` (one of: {})", ACTIONS.join(", ")), "action").into())
                }
            };
            // Parse the step's own text with its header and `action` line
            // blanked out (same length), so spans still point into the file.
            let slice = blank_header_and_action(&text[span.clone()]);
            match Step::parse(&action, &slice) {
                Ok(Some(step)) => steps.push(PlacedStep {
                    step,
                    on: Vec::new(),
                    line: crate::error::line_col(&text, span.start).0,
                    offset: span.start,
                    canonical: serde_json::to_string(spanned.get_ref()).unwrap_or_default(),
                }),
                Ok(None) => {
                    let offset = text[span.clone()].find("action").map_or(span.start, |o| span.start + o);
                    return Err(InputError::new(
                        path,
                        format!("unknown action `{action}`, expected one of: {}", ACTIONS.join(", ")),
                    )
                    .at(&text, offset)
                    .field("action")
                    .into());
                }
                Err(e) => return Err(InputError::from_toml(path, &text, span.start, &e).into()),
            }
        }
        if steps.is_empty() {
            return Err(InputError::new(path, "a scenario needs at least one [[step]]")
                .at(&text, text.trim_end().len())
                .field("step")
                .into());
        }
        // Step spans are relative to each step's own text; `image` fields
        // were parsed from a blanked copy of the same length, so they point
        // into the file too.
        for (placed, spanned) in steps.iter_mut().zip(&raw.step) {
            for image in placed.step.images_mut() {
                let span = image.span();
                let base = spanned.span().start;
                *image = toml::Spanned::new(base + span.start..base + span.end, image.get_ref().clone());
            }
        }
        check_machines(path, &text, &raw.scenario, &raw.machine)?;
        check_fleet(path, &text, raw.fleet.as_ref(), &raw.machine)?;
        crate::product::check(path, &text, raw.product.as_ref(), &raw.machine)?;
        let names: Vec<String> = raw.machine.iter().map(|m| m.name.get_ref().clone()).collect();
        for (placed, spanned) in steps.iter_mut().zip(&raw.step) {
            placed.on = machines_on(path, &text, spanned, &placed.step, &names)?;
        }
        let device = load_device(path, &text, &raw.scenario, &raw.machine)?;
        let scenario = Scenario {
            path: path.to_path_buf(),
            header: raw.scenario,
            provision: raw.provision,
            fleet: raw.fleet,
            product: raw.product,
            machines: raw.machine,
            steps,
            variant: Vec::new(),
            device,
            snapshot_dir: None,
            text,
        };
        scenario.check_provision(path)?;
        scenario.check_steps(&raw.step)?;
        Ok(scenario)
    }

    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// The folder of its timeline snapshots.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.snapshot_dir.clone().unwrap_or_else(|| crate::snapshot::dir_for(&self.path))
    }

    /// Each step's own check, in order, with the machine's state and what
    /// earlier steps served as the plan goes: authoring mistakes are input
    /// errors at the step's field before anything boots.
    fn check_steps(&self, raw: &[toml::Spanned<toml::Table>]) -> Result<()> {
        if self.machines.is_empty() {
            return self.check_machine_steps(raw, None, &self.header.image);
        }
        let root = crate::rundir::workspace_root();
        for m in &self.machines {
            let image = m.image.as_ref().unwrap_or(&self.header.image);
            self.recipe_for(&root, image)?;
            self.check_machine_steps(raw, Some(m.name.get_ref()), image)?;
        }
        if self.provision.is_some() && self.header.network != Network::Lab {
            let offset = crate::board::find_key(&self.text, "profiles").unwrap_or(0);
            return Err(InputError::new(
                &self.path,
                "[provision] with several machines needs the lab network (`network = \"lab\"` in [scenario])",
            )
            .at(&self.text, offset)
            .field("provision")
            .into());
        }
        // A checkpoint saves every machine; the lab's state is not saved, so
        // nothing may have changed it before.
        if let Some(at) = self.steps.iter().position(|p| matches!(p.step, Step::Checkpoint(_))) {
            let refuse = |why: String| -> crate::error::Error {
                InputError::new(&self.path, why).at(&self.text, raw[at].span().start).field("action").into()
            };
            if self.header.network == Network::Lab {
                return Err(refuse("a checkpoint cannot save a lab network (its leases and service)".into()));
            }
            if self.steps[at].on.len() != self.machines.len() {
                return Err(refuse("a checkpoint with several machines saves them all: drop its `on`".into()));
            }
            if let Some(lab) = self.steps[..at].iter().find(|p| p.step.lab()) {
                return Err(refuse(format!(
                    "a checkpoint with several machines saves the machines, not the lab: move `{}` (line {}) after it",
                    lab.step.action(),
                    lab.line
                )));
            }
        }
        Ok(())
    }

    /// The plan of one machine: the steps that run on it (all of them in a
    /// one-machine scenario) and the lab's, in order.
    fn check_machine_steps(
        &self,
        raw: &[toml::Spanned<toml::Table>],
        machine: Option<&String>,
        image: &toml::Spanned<String>,
    ) -> Result<()> {
        let root = crate::rundir::workspace_root();
        // The partitions of the machine's disk: A/B slots, or an OSTree sysroot.
        let is_ostree = self
            .recipe_for(&root, image)
            .ok()
            .and_then(|r| devlab_images::Recipe::load(&r).ok())
            .is_some_and(|(r, _)| r.ostree.is_some());
        // A device's partitions are known once its image is read (before the run).
        let disk_labels: &'static [&'static str] = if self.device.is_some() {
            &[]
        } else if is_ostree {
            &devlab_images::disk::OSTREE_LABELS
        } else {
            &devlab_images::disk::LABELS
        };
        let mut cx = crate::steps::CheckCx {
            scenario: self,
            machine: machine.cloned(),
            image: image.clone(),
            root,
            span: 0..0,
            action: "",
            power: crate::steps::Power::Never,
            disk_labels,
            bundles: Vec::new(),
            server: false,
            checkpoint_seen: false,
            disk_errors_seen: false,
            armed: None,
            refused: Vec::new(),
            logins: Vec::new(),
        };
        let mine = |p: &PlacedStep| machine.is_none_or(|m| p.on.is_empty() || p.on.contains(m));
        let mut last = 0;
        for (placed, spanned) in self.steps.iter().zip(raw).filter(|(p, _)| mine(p)) {
            cx.span = spanned.span();
            cx.action = placed.step.action();
            placed.step.check(&mut cx)?;
            // A reboot, power cut or power-off ends every login.
            if cx.power != crate::steps::Power::Ssh {
                cx.logins.clear();
            }
            last = spanned.span().start;
        }
        if cx.armed.is_some() {
            let on = machine.map(|m| format!("on machine `{m}`: ")).unwrap_or_default();
            return Err(InputError::new(&self.path, format!("{on}a fault is armed but no wait_fault waits for it"))
                .at(&self.text, last)
                .field("action")
                .into());
        }
        Ok(())
    }

    /// The names of the `[provision]` profiles.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.provision.iter().flat_map(|p| p.profiles.iter().map(|x| x.name.get_ref().as_str()))
    }

    /// `[provision]`: profile names plain and unique, images that exist;
    /// a blank disk only with a provisioning service to fill it.
    fn check_provision(&self, path: &Path) -> Result<()> {
        let root = crate::rundir::workspace_root();
        let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
            InputError::new(path, msg).at(&self.text, offset).field(field).into()
        };
        if self.header.network == Network::Lab && self.provision.is_none() {
            let offset = crate::board::find_key(&self.text, "network").unwrap_or(0);
            return Err(at(offset, "network", "a lab network needs a [provision] table (its service)".into()));
        }
        let netboot = self.device.as_ref().is_some_and(|d| d.netboot.is_some());
        if self.any_blank_disk() && self.provision.is_none() && !netboot {
            let offset = crate::board::find_key(&self.text, "disk").unwrap_or(0);
            let msg = "a blank disk needs a [provision] table, or a device with [netboot], to install it";
            return Err(at(offset, "disk", msg.into()));
        }
        let Some(spec) = &self.provision else { return Ok(()) };
        if spec.profiles.is_empty() {
            let offset = crate::board::find_key(&self.text, "profiles").unwrap_or(0);
            return Err(at(offset, "provision.profiles", "name at least one profile".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &spec.profiles {
            let name = p.name.get_ref();
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
            if !plain {
                return Err(at(
                    p.name.span().start,
                    "provision.profiles.name",
                    format!("{name:?} is not a plain name"),
                ));
            }
            if !seen.insert(name) {
                return Err(at(p.name.span().start, "provision.profiles.name", format!("profile `{name}` twice")));
            }
            self.recipe_for(&root, &p.image)?;
        }
        Ok(())
    }

    /// Boards named in the file, resolved to profiles; an unknown one is an
    /// input error pointing at its entry.
    ///
    /// A scenario whose machines all name their boards runs once: its one
    /// "board" is the first machine's (see [`Scenario::own_boards`]).
    pub fn resolve_boards(&self) -> Result<Vec<crate::board::Board>> {
        if self.machines.is_empty() {
            return self.header.boards.iter().map(|b| self.resolve_board(b, "boards", None)).collect();
        }
        let boards: Vec<crate::board::Board> = if self.own_boards() {
            let first = self.machines[0].board.as_ref().expect("checked at parse");
            vec![crate::board::find(first.get_ref())?]
        } else {
            let found = self.header.boards.iter().map(|b| self.find_board(b, "boards"));
            found.collect::<Result<_>>()?
        };
        // Each machine's board against the steps that run on it.
        for b in &boards {
            self.machines_for(b)?;
        }
        Ok(boards)
    }

    /// Do the machines bring their own boards (no `boards` matrix)? Such a
    /// run is labelled `machines`, not after a board or an arch.
    pub fn own_boards(&self) -> bool {
        self.header.boards.is_empty() && !self.machines.is_empty()
    }

    /// What a run on `board` is called (reports, snapshot names): the
    /// board, or `machines` when the machines bring their own.
    pub fn run_label(&self, board: &crate::board::Board) -> String {
        if self.own_boards() {
            "machines".into()
        } else {
            board.name.clone()
        }
    }

    /// Each machine of a run on `board` (see [`MachinePlan`]): its own
    /// board or `board`, its own identity, checked against the steps that
    /// run on it.
    pub fn machines_for(&self, board: &crate::board::Board) -> Result<Vec<MachinePlan>> {
        if self.machines.is_empty() {
            // The board may come from `--board`, not the file.
            self.check_board_for(board, None)?;
            let image = self.header.image.clone();
            let disk = self.header.disk;
            if disk == DiskStart::Blank && self.provision.is_none() && board.pxe.is_none() {
                let msg = format!(
                    "the blank disk is installed by the device's [netboot] kernel, and board {} does not boot \
                     from the network (a PXE board does: qemu-x86_64-pxe, qemu-aarch64-pxe)",
                    board.name
                );
                let offset = crate::board::find_key(&self.text, "disk").unwrap_or(0);
                return Err(InputError::new(&self.path, msg).at(&self.text, offset).field("disk").into());
            }
            return Ok(vec![MachinePlan {
                name: String::new(),
                board: self.device_board(board.clone()),
                image,
                disk_errors: Vec::new(),
                disk,
            }]);
        }
        let mut machines: Vec<MachinePlan> =
            self.machines.iter().map(|m| self.machine_plan(m, board)).collect::<Result<_>>()?;
        for m in &mut machines {
            m.board = self.device_board(m.board.clone());
        }
        // Releases are served per arch; bundles and OSTree commits not yet.
        let mixed = machines.iter().any(|m| m.board.arch != machines[0].board.arch);
        let one_arch_only = |p: &&PlacedStep| matches!(p.step, Step::ServeBundle(_) | Step::ServeOstree(_));
        if let Some(p) = self.steps.iter().find(one_arch_only).filter(|_| mixed) {
            return Err(InputError::new(
                &self.path,
                format!("{} serves one arch's build, and these machines have several arches", p.step.action()),
            )
            .at(&self.text, p.offset)
            .field("action")
            .into());
        }
        // One external board is one physical thing: two machines on it
        // would wait for each other's lock.
        for (i, m) in machines.iter().enumerate().filter(|(_, m)| m.board.is_external()) {
            if let Some(other) = machines[..i].iter().find(|o| o.board.name == m.board.name) {
                let msg = format!(
                    "machines `{}` and `{}` are both on external board `{}`: one board runs one machine",
                    other.name, m.name, m.board.name
                );
                let offset = self.text.find(&format!("\"{}\"", m.name)).unwrap_or(0);
                return Err(InputError::new(&self.path, msg).at(&self.text, offset).field("machine").into());
            }
        }
        Ok(machines)
    }

    /// `board` as the device needs it: its memory, its own U-Boot and
    /// environment flash, its SSH port (unchanged without a device).
    fn device_board(&self, mut b: crate::board::Board) -> crate::board::Board {
        let Some(d) = &self.device else { return b };
        if let Some(m) = d.memory_mib {
            b.memory_mib = m;
        }
        if let Some(u) = d.uboot(b.arch) {
            b.firmware.path = u;
            b.firmware.package = format!("the device `{}` (its profile's [firmware])", d.name);
        }
        b.firmware.env_flash = d.env_flash(b.arch);
        if let Some(s) = &d.ssh {
            b.ssh_guest_port = s.port;
        }
        b
    }

    /// One `[[machine]]` on the run's `board`.
    fn machine_plan(&self, m: &MachineDecl, board: &crate::board::Board) -> Result<MachinePlan> {
        let name = m.name.get_ref().clone();
        let mut b = match &m.board {
            Some(b) => self.resolve_board(b, "machine.board", Some(&name))?,
            None => {
                self.check_board_for(board, Some(&name))?;
                board.clone()
            }
        };
        let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
            InputError::new(&self.path, msg).at(&self.text, offset).field(field).into()
        };
        if let Some(mac) = &m.mac {
            b.nic.mac = devlab_provision::node::canonical_mac(mac.get_ref()).expect("checked at parse");
        }
        for (value, field) in [(&m.uuid, "machine.uuid"), (&m.serial, "machine.serial")] {
            let Some(v) = value else { continue };
            let Some(smbios) = b.smbios.as_mut() else {
                let msg = format!("machine `{name}`: board `{}` has no [smbios] to carry it", b.name);
                return Err(at(v.span().start, field, msg));
            };
            match field {
                "machine.uuid" => smbios.uuid = devlab_provision::node::canonical_uuid(v.get_ref()).expect("checked"),
                _ => smbios.serial = v.get_ref().clone(),
            }
        }
        if self.header.network == Network::Lab && b.pxe.is_none() && self.disk_of(Some(&name)).0 == DiskStart::Blank {
            let offset = m.board.as_ref().map_or(m.name.span().start, |b| b.span().start);
            return Err(at(
                offset,
                "machine.board",
                format!("board `{}` does not boot from the network (no `pxe`)", b.name),
            ));
        }
        let disk_errors = m
            .disk_errors
            .iter()
            .map(|d| crate::board::DiskError {
                offset: d.offset_mib << 20,
                iotype: crate::board::IoType::Write,
                errno: crate::board::Errno::EIO,
            })
            .collect();
        let disk = self.disk_of(Some(&name)).0;
        Ok(MachinePlan {
            name,
            board: b,
            image: m.image.clone().unwrap_or_else(|| self.header.image.clone()),
            disk_errors,
            disk,
        })
    }

    /// What machine `machine`'s disk (or the one machine's) holds at the
    /// first power-on, and where the file says so (its `disk`, else the
    /// header's, else 0).
    fn disk_of(&self, machine: Option<&str>) -> (DiskStart, usize) {
        let own =
            self.machines.iter().find(|m| Some(m.name.get_ref().as_str()) == machine).and_then(|m| m.disk.as_ref());
        match own {
            Some(d) => (*d.get_ref(), d.span().start),
            None => (self.header.disk, crate::board::find_key(&self.text, "disk").unwrap_or(0)),
        }
    }

    /// Does any machine start from a blank disk?
    fn any_blank_disk(&self) -> bool {
        self.header.disk == DiskStart::Blank
            || self.machines.iter().any(|m| m.disk.as_ref().is_some_and(|d| *d.get_ref() == DiskStart::Blank))
    }

    fn resolve_board(
        &self,
        b: &toml::Spanned<String>,
        field: &str,
        machine: Option<&str>,
    ) -> Result<crate::board::Board> {
        let board = self.find_board(b, field)?;
        self.check_board_for(&board, machine)?;
        Ok(board)
    }

    /// The profile a (spanned) board name names; an unknown one is an input
    /// error at that name.
    fn find_board(&self, b: &toml::Spanned<String>, field: &str) -> Result<crate::board::Board> {
        crate::board::find(b.get_ref()).map_err(|e| match e {
            crate::error::Error::Input(ie) if !ie.file.exists() => {
                InputError::new(&self.path, ie.message).at(&self.text, b.span().start).field(field).into()
            }
            other => other,
        })
    }

    /// Refuse a board that lacks a feature the scenario `needs`, has no
    /// U-Boot for a `boot` step, or cannot boot from the network to fill a
    /// blank disk.
    pub fn check_board(&self, board: &crate::board::Board) -> Result<()> {
        self.check_board_for(board, None)
    }

    /// What an external board cannot do (see [`crate::external`]): steps
    /// that need QMP or the host's view of its disk, and, for now, the lab
    /// network, provisioning, fleets and products (their machines are QEMU
    /// machines on networks devlab builds).
    fn check_external(&self, board: &crate::board::Board, machine: Option<&str>) -> Result<()> {
        let refuse = |offset: usize, field: &str, why: String| -> crate::error::Error {
            let msg = format!("board `{}` is external (not QEMU): {why}", board.name);
            InputError::new(&self.path, msg).at(&self.text, offset).field(field).into()
        };
        let whole = [
            (self.header.network == Network::Lab, "network", "the lab network runs QEMU machines on its own bridge"),
            (self.provision.is_some(), "provision", "provisioning runs on the lab network of QEMU machines"),
            (self.fleet.is_some(), "fleet", "fleets run QEMU machines on their own networks"),
            (self.product.is_some(), "product", "a product's private link joins two QEMU machines"),
        ];
        if let Some((_, key, why)) = whole.iter().find(|(bad, ..)| *bad) {
            let offset = crate::board::find_key(&self.text, key).unwrap_or(0);
            return Err(refuse(offset, key, format!("{why}; not yet for external boards")));
        }
        let on_it = |p: &&PlacedStep| machine.is_none_or(|m| p.on.iter().any(|o| o == m));
        for p in self.steps.iter().filter(on_it) {
            let fields: serde_json::Value = serde_json::from_str(&p.canonical).unwrap_or_default();
            let host_disk = board.external.as_ref().is_some_and(|e| e.host_disk.is_some());
            if let Some(why) = crate::external::qemu_only(p.step.action(), &fields, host_disk) {
                return Err(refuse(p.offset, "action", format!("step `{}` cannot run: {why}", p.step.action())));
            }
        }
        Ok(())
    }

    /// [`Scenario::check_board`] for one machine's board (the steps that
    /// run on it), or for every machine.
    fn check_board_for(&self, board: &crate::board::Board, machine: Option<&str>) -> Result<()> {
        if let Some(d) = &self.device {
            d.check_arch(board.arch)?;
        }
        if board.is_external() {
            self.check_external(board, machine)?;
        }
        let (disk, offset) = self.disk_of(machine);
        if disk == DiskStart::Blank && board.pxe.is_none() {
            let on = machine.map(|m| format!("machine `{m}`: ")).unwrap_or_default();
            let msg = format!(
                "{on}a blank disk needs a board that boots from the network; `{}` does not (no `pxe`)",
                board.name
            );
            return Err(InputError::new(&self.path, msg).at(&self.text, offset).field("disk").into());
        }
        if board.uboot().is_none() {
            let on_it = |p: &&PlacedStep| machine.is_none_or(|m| p.on.iter().any(|o| o == m));
            if let Some(p) = self.steps.iter().filter(on_it).find(|p| matches!(p.step, Step::Boot(_))) {
                let offset = p.offset;
                return Err(InputError::new(
                    &self.path,
                    format!("board `{}` has no U-Boot to stop (`boot` step)", board.name),
                )
                .at(&self.text, offset)
                .field("action")
                .into());
            }
        }
        for need in &self.header.needs {
            let ok = match need.as_str() {
                "watchdog" => board.watchdog.is_some(),
                other => {
                    let offset = self.text.find(&format!("\"{other}\"")).unwrap_or(0);
                    return Err(InputError::new(&self.path, format!("unknown need `{other}` (known: watchdog)"))
                        .at(&self.text, offset)
                        .field("needs")
                        .into());
                }
            };
            if !ok {
                let offset = crate::board::find_key(&self.text, "needs").unwrap_or(0);
                return Err(InputError::new(
                    &self.path,
                    format!("board `{}` has no {need} (its profile {} sets none)", board.name, board.path.display()),
                )
                .at(&self.text, offset)
                .field("needs")
                .into());
            }
        }
        Ok(())
    }

    /// The image recipe path, or an input error at the `image` field.
    pub fn recipe_path(&self, root: &Path) -> Result<PathBuf> {
        self.recipe_for(root, &self.header.image)
    }

    /// Like [`Scenario::recipe_for`], and the recipe must be an OSTree image.
    pub fn ostree_recipe(&self, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
        let path = self.recipe_for(root, image)?;
        let is_ostree = devlab_images::Recipe::load(&path)?.0.ostree.is_some();
        if !is_ostree {
            return Err(InputError::new(
                &self.path,
                format!(
                    "image `{}` is not an OSTree image ({} has no [ostree] table)",
                    image.get_ref(),
                    path.display()
                ),
            )
            .at(&self.text, image.span().start)
            .field("image")
            .into());
        }
        Ok(path)
    }

    /// The last build of the image a (spanned) `image` field names, for
    /// `arch`; one that is not built (or stale) is an input error at that
    /// field, saying how to build it.
    pub fn built_image(
        &self,
        root: &Path,
        image: &toml::Spanned<String>,
        arch: devlab_images::Arch,
    ) -> Result<devlab_images::BuiltImage> {
        locate_image(&self.path, &self.text, root, image, arch)
    }

    /// Every `image` a step serves (releases, bundles, OSTree commits) or
    /// a `[provision]` profile installs.
    pub fn served_images(&self) -> Vec<&toml::Spanned<String>> {
        self.steps
            .iter()
            .flat_map(|p| p.step.images())
            .chain(self.provision.iter().flat_map(|p| p.profiles.iter().map(|x| &x.image)))
            .collect()
    }

    /// The recipe named by a (spanned) `image` field anywhere in the file.
    pub fn recipe_for(&self, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
        recipe_for(&self.path, &self.text, root, image)
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The recipe a (spanned) `image` field of `file` names; an input error at
/// that field if there is none.
pub fn recipe_for(file: &Path, text: &str, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
    let name = image.get_ref();
    let path = root.join("images").join("recipes").join(format!("{name}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    Err(InputError::new(file, format!("no image recipe `{name}` ({} does not exist)", path.display()))
        .at(text, image.span().start)
        .field("image")
        .into())
}

/// The built image a (spanned) `image` field of `file` names, for `arch`;
/// an input error at that field if it is not built (or stale).
pub fn locate_image(
    file: &Path,
    text: &str,
    root: &Path,
    image: &toml::Spanned<String>,
    arch: devlab_images::Arch,
) -> Result<devlab_images::BuiltImage> {
    let recipe = recipe_for(file, text, root, image)?;
    devlab_images::locate(&recipe, arch).map_err(|e| match e {
        devlab_images::ImageError::NotBuilt { .. } | devlab_images::ImageError::Stale { .. } => {
            InputError::new(file, e.to_string()).at(text, image.span().start).field("image").into()
        }
        other => other.into(),
    })
}

/// The device profile `device =` names, loaded and checked (its files are
/// checked per arch before a run: [`crate::device::Device::check_files`]).
fn load_device(
    path: &Path,
    text: &str,
    header: &Header,
    machines: &[MachineDecl],
) -> Result<Option<std::sync::Arc<crate::device::Device>>> {
    let Some(name) = &header.device else { return Ok(None) };
    let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
        InputError::new(path, msg).at(text, offset).field(field).into()
    };
    if header.image.span() != (0..0) {
        return Err(at(header.image.span().start, "image", "give `image` or `device`, not both".into()));
    }
    if let Some(m) = machines.iter().find_map(|m| m.image.as_ref()) {
        return Err(at(m.span().start, "machine.image", "a device scenario's machines all run the device".into()));
    }
    let file = crate::device::profile_path(name.get_ref(), path.parent().unwrap_or(Path::new(".")));
    if !file.is_file() {
        return Err(at(name.span().start, "device", format!("no device profile {}", file.display())));
    }
    Ok(Some(std::sync::Arc::new(crate::device::Device::load(&file)?)))
}

/// Is `path` a scenario file? (`*.toml`, but not a crate's `Cargo.toml`.)
pub fn is_scenario_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "toml") && path.file_name().is_some_and(|n| n != "Cargo.toml")
}

/// `boards` and `[[machine]]` agree: without machines, at least one
/// board; with them, plain unique names, and `boards` left out exactly when
/// every machine names its own board.
fn check_machines(path: &Path, text: &str, header: &Header, machines: &[MachineDecl]) -> Result<()> {
    let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
        InputError::new(path, msg).at(text, offset).field(field).into()
    };
    let boards_at = crate::board::find_key(text, "boards").unwrap_or(0);
    if machines.is_empty() {
        if header.boards.is_empty() {
            return Err(at(boards_at, "boards", "name at least one board".into()));
        }
        return Ok(());
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in machines {
        let name = m.name.get_ref();
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !plain {
            return Err(at(m.name.span().start, "machine.name", format!("{name:?} is not a plain name")));
        }
        if !seen.insert(name) {
            return Err(at(m.name.span().start, "machine.name", format!("machine `{name}` twice")));
        }
        if header.boards.is_empty() && m.board.is_none() {
            return Err(at(
                m.name.span().start,
                "machine.board",
                format!("machine `{name}` needs a `board` (the scenario names no `boards` for it to take)"),
            ));
        }
    }
    if !header.boards.is_empty() && machines.iter().all(|m| m.board.is_some()) {
        return Err(at(boards_at, "boards", "every [[machine]] names its board: leave `boards` out".into()));
    }
    check_identities(path, text, header, machines)
}

/// `[fleet]`: channels plain and once each, at least one reboot slot, the
/// machines' channels among them; `channel` only in a fleet.
fn check_fleet(path: &Path, text: &str, fleet: Option<&FleetSpec>, machines: &[MachineDecl]) -> Result<()> {
    let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
        InputError::new(path, msg).at(text, offset).field(field).into()
    };
    let Some(fleet) = fleet else {
        if let Some(c) = machines.iter().find_map(|m| m.channel.as_ref()) {
            return Err(at(c.span().start, "machine.channel", "a `channel` needs a [fleet] table".into()));
        }
        return Ok(());
    };
    let fleet_at = text.find("[fleet]").unwrap_or(0);
    if machines.is_empty() {
        return Err(at(fleet_at, "fleet", "a [fleet] needs its machines, as [[machine]] tables".into()));
    }
    if fleet.channels.is_empty() {
        return Err(at(fleet_at, "fleet.channels", "a fleet needs at least one channel".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &fleet.channels {
        if !crate::fleetlock::valid_group(c.get_ref()) {
            let msg = format!("channel {:?}: letters, digits, `.` and `-` only", c.get_ref());
            return Err(at(c.span().start, "fleet.channels", msg));
        }
        if !seen.insert(c.get_ref()) {
            return Err(at(c.span().start, "fleet.channels", format!("channel `{}` twice", c.get_ref())));
        }
    }
    if *fleet.lock_slots.get_ref() == 0 {
        let offset = fleet.lock_slots.span().start;
        return Err(at(
            offset,
            "fleet.lock_slots",
            "a lock with 0 slots: nobody could ever reboot (at least 1)".into(),
        ));
    }
    for m in machines {
        if let Some(c) = &m.channel {
            if let Some(msg) = fleet.refuse_channel(c.get_ref()) {
                return Err(at(c.span().start, "machine.channel", msg));
            }
        }
    }
    Ok(())
}

/// Machines' own MACs and UUIDs are well formed and not shared; on a lab
/// network a machine's name also names its tap (1 to 10 characters).
fn check_identities(path: &Path, text: &str, header: &Header, machines: &[MachineDecl]) -> Result<()> {
    let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
        InputError::new(path, msg).at(text, offset).field(field).into()
    };
    let mut macs: BTreeMap<String, &str> = BTreeMap::new();
    let mut uuids: BTreeMap<String, &str> = BTreeMap::new();
    for m in machines {
        let name = m.name.get_ref().as_str();
        if header.network == Network::Lab && name.len() > 10 {
            return Err(at(
                m.name.span().start,
                "machine.name",
                format!("machine `{name}`: at most 10 characters on a lab network (it names the machine's tap)"),
            ));
        }
        if let Some(mac) = &m.mac {
            let canonical = devlab_provision::node::canonical_mac(mac.get_ref())
                .map_err(|e| at(mac.span().start, "machine.mac", format!("machine `{name}`: {e}")))?;
            if let Some(other) = macs.insert(canonical.clone(), name) {
                let msg = format!("machine `{name}` has MAC {canonical}, like machine `{other}`");
                return Err(at(mac.span().start, "machine.mac", msg));
            }
        }
        if let Some(uuid) = &m.uuid {
            let canonical = devlab_provision::node::canonical_uuid(uuid.get_ref())
                .map_err(|e| at(uuid.span().start, "machine.uuid", format!("machine `{name}`: {e}")))?;
            if let Some(other) = uuids.insert(canonical.clone(), name) {
                let msg = format!(
                    "machine `{name}` has UUID {canonical}, like machine `{other}`: the provisioning service tells \
                     nodes apart by UUID"
                );
                return Err(at(uuid.span().start, "machine.uuid", msg));
            }
        }
    }
    Ok(())
}

/// The machines a step runs on: its `on` (a name or a list of names), or
/// every machine; none for the lab's own steps and in a one-machine file.
fn machines_on(
    path: &Path,
    text: &str,
    spanned: &toml::Spanned<toml::Table>,
    step: &Step,
    names: &[String],
) -> Result<Vec<String>> {
    let span = spanned.span();
    let on_at = span.start + crate::board::find_key(&text[span.clone()], "on").unwrap_or(0);
    let at = |msg: String| -> crate::error::Error { InputError::new(path, msg).at(text, on_at).field("on").into() };
    let Some(value) = spanned.get_ref().get("on") else {
        return Ok(if step.lab() { Vec::new() } else { names.to_vec() });
    };
    if names.is_empty() {
        return Err(at("`on` names machines, and this scenario has no [[machine]] tables".into()));
    }
    if step.lab() {
        return Err(at(format!("{} runs once for every machine (the lab's), so it takes no `on`", step.action())));
    }
    let wanted: Vec<&str> = match value {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().ok_or_else(|| at("`on` lists machine names (strings)".into())))
            .collect::<Result<_>>()?,
        _ => return Err(at("`on` is a machine name or a non-empty list of them".into())),
    };
    for w in &wanted {
        if !names.iter().any(|n| n == w) {
            return Err(at(format!("no machine `{w}` (machines: {})", names.join(", "))));
        }
    }
    Ok(names.iter().filter(|n| wanted.contains(&n.as_str())).cloned().collect())
}

/// The step's text with its `[[step]]` header, its `action` and its `on`
/// blanked out (same length, so spans still point into the file): what
/// is left is the step kind's own fields.
fn blank_header_and_action(slice: &str) -> String {
    let mut out = String::with_capacity(slice.len());
    let mut in_on = false;
    for line in slice.split_inclusive('\n') {
        let t = line.trim_start();
        let key = |k: &str| t.strip_prefix(k).is_some_and(|r| r.trim_start().starts_with('='));
        let is_action = key("action");
        // An `on` list may go over several lines, up to its `]`.
        let on_starts = key("on");
        let blank_on = on_starts || in_on;
        if blank_on {
            in_on = if on_starts { t.contains('[') && !t.contains(']') } else { !t.contains(']') };
        }
        if t.starts_with("[[") || is_action || blank_on {
            out.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::parse(Path::new("s.toml"), text.to_string())
    }

    const HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n\n";
    /// Four lines that leave the machine on with SSH up.
    const SSH_UP: &str = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"wait_ssh\"\n";
    /// Four lines that leave the machine off with a disk.
    const OFF: &str = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"power_cut\"\n";

    #[test]
    fn a_step_runs_on_its_machines_or_every_machine_and_the_lab_once() {
        let s = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n\
             [[machine]]\nname = \"a\"\n[[machine]]\nname = \"b\"\nimage = \"v2\"\n\
             [[step]]\naction = \"power_on\"\n\
             [[step]]\naction = \"expect\"\non = [\n  \"b\",\n]\npattern = 'x'\n\
             [[step]]\naction = \"serve_release\"\nversion = \"2\"\nimage = \"v2\"\n",
        )
        .unwrap();
        let on: Vec<Vec<String>> = s.steps.iter().map(|p| p.on.clone()).collect();
        assert_eq!(on, vec![vec!["a".to_string(), "b".into()], vec!["b".into()], vec![]]);
        // `on` is not the step's own field: the expect step parsed whole.
        let Step::Expect(e) = &s.steps[1].step else { panic!("{:?}", s.steps[1].step) };
        assert_eq!(e.pattern.0, "x");
        assert_eq!(s.machines[1].image.as_ref().map(|i| i.get_ref().as_str()), Some("v2"));
        // One machine: no machine names at all.
        let one = parse(&format!("{HEAD}[[step]]\naction = \"power_on\"\n")).unwrap();
        assert!(one.steps[0].on.is_empty() && one.machines.is_empty());
    }

    /// A lab-network scenario head with machines `a` and `b` (own MACs and
    /// UUIDs as given).
    fn lab_head(mac_b: &str, uuid_b: &str) -> String {
        format!(
            "[scenario]\nname = \"t\"\nnetwork = \"lab\"\ndisk = \"blank\"\n\
             [provision]\nprofiles = [{{ name = \"ab\", image = \"base\" }}]\n\
             [[machine]]\nname = \"a\"\nboard = \"qemu-x86_64-pxe\"\nmac = \"52:54:00:de:10:01\"\n\
             uuid = \"6b1e4c2a-0d3f-4a51-9f0e-000000001001\"\nserial = \"S-a\"\n\
             [[machine]]\nname = \"b\"\nboard = \"qemu-aarch64-pxe\"\nmac = \"{mac_b}\"\n\
             uuid = \"{uuid_b}\"\nserial = \"S-b\"\ndisk_errors = [{{ offset_mib = 64 }}]\n"
        )
    }

    #[test]
    fn machines_get_their_own_identity_and_disk_errors() {
        let text = format!(
            "{}[[step]]\naction = \"power_on\"\non = \"b\"\n",
            lab_head("52:54:00:DE:10:02", "6b1e4c2a-0d3f-4a51-9f0e-000000001002")
        );
        let s = parse(&text).unwrap();
        let boards = s.resolve_boards().unwrap();
        assert_eq!(boards.len(), 1, "machines with their own boards run once");
        assert_eq!(s.run_label(&boards[0]), "machines");
        let plans = s.machines_for(&boards[0]).unwrap();
        let b = &plans[1];
        assert_eq!(b.board.nic.mac, "52:54:00:de:10:02");
        let smbios = b.board.smbios.as_ref().unwrap();
        assert_eq!((smbios.uuid.as_str(), smbios.serial.as_str()), ("6b1e4c2a-0d3f-4a51-9f0e-000000001002", "S-b"));
        assert_eq!(b.disk_errors.len(), 1);
        assert_eq!(b.disk_errors[0].offset, 64 << 20);
        assert!(plans[0].disk_errors.is_empty());
    }

    #[test]
    fn a_machine_may_start_from_its_own_disk() {
        // `a` starts from the image (its own `disk`), `b` blank as the header says.
        let text = lab_head("52:54:00:de:10:02", "6b1e4c2a-0d3f-4a51-9f0e-000000001002")
            .replace("serial = \"S-a\"\n", "serial = \"S-a\"\ndisk = \"image\"\n")
            + "[[step]]\naction = \"power_on\"\n";
        let s = parse(&text).unwrap();
        let plans = s.machines_for(&s.resolve_boards().unwrap()[0]).unwrap();
        assert_eq!((plans[0].disk, plans[1].disk), (DiskStart::Image, DiskStart::Blank));
        // A blank disk on a board that cannot boot from the network names the machine's `disk`.
        let machines = "network = \"lab\"\n[[machine]]\nname = \"a\"\n[[machine]]\nname = \"b\"\ndisk = \"blank\"\n";
        let provision = "[provision]\nprofiles = [ { name = \"ab\", image = \"base\" } ]\n";
        let text = [HEAD, machines, provision, "[[step]]\naction = \"power_on\"\n"].concat();
        let err = parse(&text).and_then(|s| s.machines_for(&s.resolve_boards()?[0])).unwrap_err().to_string();
        let line = text.lines().position(|l| l.starts_with("disk")).unwrap() + 1;
        assert!(err.starts_with(&format!("s.toml:{line}:8: field `disk`: machine `b`: a blank disk")), "{err}");
    }

    #[test]
    fn a_shared_mac_or_uuid_is_refused_with_line_and_field() {
        let text =
            lab_head("52:54:00:de:10:01", "6b1e4c2a-0d3f-4a51-9f0e-000000001002") + "[[step]]\naction = \"power_on\"\n";
        let err = parse(&text).unwrap_err().to_string();
        let line = text.lines().enumerate().filter(|(_, l)| l.starts_with("mac")).nth(1).unwrap().0 + 1;
        assert!(err.starts_with(&format!("s.toml:{line}:")), "{err}");
        assert!(err.contains("field `machine.mac`") && err.contains("like machine `a`"), "{err}");
        let text =
            lab_head("52:54:00:de:10:02", "6b1e4c2a-0d3f-4a51-9f0e-000000001001") + "[[step]]\naction = \"power_on\"\n";
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("field `machine.uuid`") && err.contains("like machine `a`"), "{err}");
    }

    #[test]
    fn the_lab_network_needs_its_service_and_its_steps_need_it() {
        let err = parse("[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\nnetwork = \"lab\"\n[[step]]\naction = \"power_on\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `network`: a lab network needs a [provision] table"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"dhcp_stop\"\n")).unwrap_err().to_string();
        assert!(err.contains("dhcp_stop needs the lab network"), "{err}");
        let long = lab_head("52:54:00:de:10:02", "6b1e4c2a-0d3f-4a51-9f0e-000000001002")
            .replace("name = \"b\"", "name = \"b-is-too-long\"")
            + "[[step]]\naction = \"power_on\"\n";
        let err = parse(&long).unwrap_err().to_string();
        assert!(err.contains("at most 10 characters on a lab network"), "{err}");
    }

    #[test]
    fn every_machine_plans_alone() {
        // `b` is never powered on: its `wait_ssh` is refused, naming it.
        let err = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n\
             [[machine]]\nname = \"a\"\n[[machine]]\nname = \"b\"\n\
             [[step]]\naction = \"power_on\"\non = \"a\"\n\
             [[step]]\naction = \"wait_ssh\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("on machine `b`: wait_ssh"), "{err}");
        // Both powered on: fine.
        parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n\
             [[machine]]\nname = \"a\"\n[[machine]]\nname = \"b\"\n\
             [[step]]\naction = \"power_on\"\n[[step]]\naction = \"wait_ssh\"\n",
        )
        .unwrap();
    }

    #[test]
    fn steps_parse_in_order() {
        let s = parse(&format!(
            "{HEAD}[[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"expect\"\npattern = 'slot (?<s>[AB])'\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].line, 8);
        match &s.steps[1].step {
            Step::Expect(e) => assert_eq!(e.timeout.0, Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
    }

    const PXE_HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64-pxe\"]\ndisk = \"blank\"\n\n";

    #[test]
    fn provision_steps_and_profiles_are_checked() {
        let prov = "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";
        let ok = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_assign\"\nprofile = \"ab\"\n\n[[step]]\naction = \"provision_wait\"\nstate = \"INSTALLED\"\n"
        ))
        .unwrap();
        assert_eq!(ok.profile_names().collect::<Vec<_>>(), ["ab"]);
        assert_eq!(ok.header.disk, DiskStart::Blank);

        let err = parse(&format!("{PXE_HEAD}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(
            err.starts_with("s.toml:4:1: field `disk`: a blank disk needs a [provision] table, or a device"),
            "{err}"
        );

        let err = parse(&format!("{HEAD}[[step]]\naction = \"provision_table\"\n")).unwrap_err().to_string();
        assert!(err.contains("provision_table needs a [provision] table"), "{err}");

        let err = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"provision_assign\"\nprofile = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `profile`: no profile `nope` in [provision] (known: ab)"), "{err}");

        let err = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"provision_wait\"\nstate = \"DONE\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `state`: unknown variant `DONE`"), "{err}");

        let err = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_fault\"\nendpoint = \"profile\"\nfault = \"hang\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `seconds`: a hang needs `seconds`"), "{err}");

        let err = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_restart\"\nremove_profiles = [\"ab\", \"abc\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("s.toml:11:1: field `remove_profiles`: no profile `abc` in [provision] (known: ab)"),
            "{err}"
        );

        let dup =
            "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" },\n  { name = \"ab\", image = \"v2\" }]\n\n";
        let err = parse(&format!("{PXE_HEAD}{dup}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:12: field `provision.profiles.name`: profile `ab` twice"), "{err}");

        let missing = "[provision]\nprofiles = [{ name = \"ab\", image = \"no-such\" }]\n\n";
        let err = parse(&format!("{PXE_HEAD}{missing}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.contains("field `image`: no image recipe `no-such`"), "{err}");
    }

    #[test]
    fn boards_without_network_boot_or_uboot_are_refused() {
        let prov = "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";
        let s = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"power_on\"\n")).unwrap();
        let uboot_board = crate::board::find("qemu-x86_64").unwrap();
        let err = s.check_board(&uboot_board).unwrap_err().to_string();
        assert!(err.contains("field `disk`: a blank disk needs a board that boots from the network"), "{err}");
        let pxe_board = crate::board::find("qemu-x86_64-pxe").unwrap();
        s.check_board(&pxe_board).unwrap();

        let s = parse(&format!("{HEAD}[[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"boot\"\n")).unwrap();
        let err = s.check_board(&pxe_board).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:1: field `action`: board `qemu-x86_64-pxe` has no U-Boot"), "{err}");
    }

    #[test]
    fn unknown_field_points_at_its_line() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"expect\"\npatern = \"x\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:1: field `patern`: unknown field `patern`"), "{err}");
    }

    #[test]
    fn unknown_action_lists_the_known_ones() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"explode\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:6:1: field `action`: unknown action `explode`"), "{err}");
        assert!(err.contains("power_on"), "{err}");
    }

    #[test]
    fn ostree_steps_name_ostree_images() {
        // The scenario's own image (base) is not an OSTree image.
        let err = parse(&format!("{HEAD}[[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `image`: image `base` is not an OSTree image"), "{err}");
        let head = HEAD.replace("[scenario]\n", "[scenario]\nimage = \"ostree\"\n");
        let err =
            parse(&format!("{head}[[step]]\naction = \"serve_ostree\"\nimage = \"v2\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: image `v2` is not an OSTree image"), "{err}");
        let err =
            parse(&format!("{head}[[step]]\naction = \"serve_ostree\"\nimage = \"nope\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: no image recipe `nope`"), "{err}");
        let err = parse(&format!(
            "{head}{SSH_UP}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree-v9\", state = \"booted\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("s.toml:12:1: field `deployments`: `ostree-v9` is not an OSTree image recipe"),
            "{err}"
        );
        let err = parse(&format!(
            "{head}{SSH_UP}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree\", state = \"up\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `up`"), "{err}");
        // An OSTree disk has a sysroot, not root slots.
        parse(&format!("{head}{OFF}[[step]]\naction = \"corrupt_disk\"\npartition = \"sysroot\"\n")).unwrap();
        let err = parse(&format!("{head}{OFF}[[step]]\naction = \"corrupt_disk\"\npartition = \"rootfs-a\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no partition `rootfs-a` (the disk has: boot, uboot-env-a, uboot-env-b, sysroot)"),
            "{err}"
        );
        let err = parse(&format!(
            "{HEAD}{SSH_UP}[[step]]\naction = \"ssh\"\ncommand = \"x\"\npower_cut_at = 'a'\nlink_drop = {{ on_request = 'b', seconds = 1 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:13:1: field `link_drop`: set one of power_cut_at"), "{err}");
        parse(&format!(
            "{head}[[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n\n\
             {SSH_UP}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree-v2\", state = \"pending\" }}]\n"
        ))
        .unwrap();
    }

    #[test]
    fn rauc_install_needs_a_bundle_served_before_it() {
        let text = format!(
            "{HEAD}{SSH_UP}[[step]]\naction = \"rauc_install\"\nbundle = \"v2\"\n\n\
             [[step]]\naction = \"serve_bundle\"\nname = \"v2\"\nimage = \"rauc-v2\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:11:1: field `bundle`: no bundle `v2` served"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"serve_bundle\"\nname = \"x\"\nimage = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: no image recipe `nope`"), "{err}");
        let err = parse(&format!(
            "{HEAD}[[step]]\naction = \"serve_bundle\"\nname = \"x\"\nimage = \"rauc\"\nsigner = \"me\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:9:10:") && err.contains("unknown variant `me`"), "{err}");
    }

    #[test]
    fn disk_fault_steps_name_a_real_partition() {
        let err = parse(&format!("{HEAD}{OFF}[[step]]\naction = \"disk_errors\"\npartition = \"rootfs-c\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `partition`: no partition `rootfs-c`"), "{err}");
        assert!(err.contains("rootfs-b"), "{err}");
        let err =
            parse(&format!("{HEAD}{OFF}[[step]]\naction = \"disk_errors\"\npartition = \"data\"\nerrno = \"EPERM\"\n"))
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("s.toml:12:9:") && err.contains("unknown variant `EPERM`"), "{err}");
        let err = parse(&format!("{HEAD}{OFF}[[step]]\naction = \"corrupt_disk\"\npartition = \"env\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `partition`"), "{err}");
        parse(&format!("{HEAD}{OFF}[[step]]\naction = \"disk_errors\"\npartition = \"rootfs-b\"\niotype = \"read\"\n"))
            .unwrap();
    }

    #[test]
    fn transfers_are_checked_before_booting() {
        let err = parse(&format!("{HEAD}{SSH_UP}[[step]]\naction = \"upload\"\nfrom = \"no/such\"\nto = \"/run/x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `from`: no file `no/such`"), "{err}");
        let err = parse(&format!("{HEAD}{SSH_UP}[[step]]\naction = \"download\"\nfrom = \"/etc/x\"\nto = \"../x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:12:1: field `to`:") && err.contains("plain file name"), "{err}");
        let err = parse(&format!("{HEAD}{SSH_UP}[[step]]\naction = \"wait_qmp\"\n")).unwrap_err().to_string();
        assert!(err.contains("missing field `event`"), "{err}");
    }

    #[test]
    fn a_matrix_makes_one_scenario_per_combination() {
        let text = "[scenario]\nname = \"m\"\nboards = [\"qemu-x86_64\"]\n\n[scenario.matrix]\n\
                    copy = [{ name = \"a\", part = \"uboot-env-a\" }, { name = \"b\", part = \"uboot-env-b\" }]\n\
                    wait = [\"1s\", 2]\n\n\
                    [[step]]\naction = \"power_on\"\n[[step]]\naction = \"power_cut\"\n\
                    [[step]]\naction = \"corrupt_disk\"\npartition = \"{copy.part}\"\n\n\
                    [[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"expect\"\npattern = 'env {copy} on {arch}'\ntimeout = \"{wait}\"\n";
        // `2` is not a duration: that variant's error points at its line.
        let err = Scenario::variants(Path::new("s.toml"), text.to_string()).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:23:11:") && err.contains("not a duration"), "{err}");
        let text = text.replace("wait = [\"1s\", 2]", "wait = [\"1s\", \"2s\"]");
        let all = Scenario::variants(Path::new("s.toml"), text).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["m.copy=a.wait=1s", "m.copy=a.wait=2s", "m.copy=b.wait=1s", "m.copy=b.wait=2s"]);
        let Step::CorruptDisk(c) = &all[3].steps[2].step else { panic!() };
        assert_eq!(c.partition, "uboot-env-b");
        let Step::Expect(e) = &all[3].steps[4].step else { panic!() };
        // Placeholders that are not parameters ({arch}) stay for the runner.
        assert_eq!((e.pattern.0.as_str(), e.timeout.0), ("env b on {arch}", Duration::from_secs(2)));
        assert_eq!(all[2].variant, [("copy".to_string(), "b".to_string()), ("wait".to_string(), "1s".to_string())]);
        assert!(Scenario::load_variants(Path::new("/nonexistent.toml")).is_err());
    }

    #[test]
    fn bad_matrices_are_refused_where_they_are_written() {
        let head = "[scenario]\nname = \"m\"\nboards = [\"qemu-x86_64\"]\n[scenario.matrix]\n";
        let step = "\n[[step]]\naction = \"expect\"\npattern = '{x.nope}'\n";
        let v = |m: &str| Scenario::variants(Path::new("s.toml"), format!("{head}{m}{step}")).unwrap_err().to_string();
        let e = v("arch = [\"a\"]\n");
        assert!(e.starts_with("s.toml:5:1: field `matrix.arch`") && e.contains("cannot be a matrix parameter"), "{e}");
        let e = v("x = []\n");
        assert!(e.contains("`x` has no values"), "{e}");
        let e = v("x = [\"it's\"]\n");
        assert!(e.contains("quotes"), "{e}");
        let e = v("x = [{ part = \"p\" }]\n");
        assert!(e.contains("needs a `name`"), "{e}");
        let e = v("x = [\"a\", \"a\"]\n");
        assert!(e.contains("value `a` twice"), "{e}");
        let e = v("x = [\"a\"]\n");
        assert!(e.starts_with("s.toml:9:12: field `matrix`") && e.contains("no field `nope`"), "{e}");
    }

    #[test]
    fn bad_duration_and_regex_are_refused_at_the_value() {
        let err =
            parse(&format!("{HEAD}[[step]]\naction = \"wait_ssh\"\ntimeout = \"soon\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:11:"), "{err}");
        assert!(err.contains("not a duration"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"expect\"\npattern = \"(\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:11:"), "{err}");
        assert!(err.contains("regex"), "{err}");
    }

    #[test]
    fn missing_action_and_header_fields() {
        let err = parse(&format!("{HEAD}[[step]]\ntimeout = \"1s\"\n")).unwrap_err().to_string();
        assert!(err.contains("missing field `action`"), "{err}");
        let err = parse("[scenario]\nname = \"t\"\n[[step]]\naction = \"power_on\"\n").unwrap_err().to_string();
        // `boards` may be left out only when every [[machine]] names its board.
        assert!(err.starts_with("s.toml:1:1: field `boards`: name at least one board"), "{err}");
        let err = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\ncolour = 1\n[[step]]\naction = \"power_on\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:4:1: field `colour`"), "{err}");
    }

    #[test]
    fn unknown_board_points_at_the_entry() {
        let s = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\", \"qemu-riscv\"]\n[[step]]\naction = \"power_on\"\n",
        )
        .unwrap();
        let err = s.resolve_boards().unwrap_err().to_string();
        assert!(err.starts_with("s.toml:3:26: field `boards`: unknown board `qemu-riscv`"), "{err}");
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = crate::rundir::workspace_root().join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if is_scenario_file(&p) {
                for s in Scenario::load_variants(&p).unwrap_or_else(|e| panic!("{e}")) {
                    s.resolve_boards().unwrap();
                    s.recipe_path(&crate::rundir::workspace_root()).unwrap();
                    n += 1;
                }
            }
        }
        assert!(n >= 1, "no scenarios in {}", dir.display());
    }
}
