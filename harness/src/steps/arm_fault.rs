//! `arm_fault`: arm a fault on a trigger; a later `wait_fault` waits for
//! it to fire and completes it. The triggers:
//!
//! - `on_console`: a console pattern. From now on (or from the next
//!   power-on if the machine is off) the console reader freezes QEMU the
//!   moment the pattern arrives, from U-Boot's first line on, so the guest
//!   runs no further than that line and the fault lands at the same point
//!   every run. An armed console fault that has not fired follows the
//!   machine to its next power-on.
//! - `on_request`: the update server starts answering a request whose
//!   path matches (e.g. the release download); QEMU is frozen as the
//!   request arrives, so the guest takes in nothing of the answer (the
//!   server may still write some of it into the host's socket buffers).
//! - `on_qmp`: a QMP event (`RESET`, `WATCHDOG`, `BLOCK_IO_ERROR`, ...)
//!   arriving from now on; QEMU has acted on it already (a reset has
//!   begun) when the watcher freezes it.
//! - `after`: a time after this step (the fault's own moment, not a wait
//!   for something).
//!
//! The fault is completed the moment it fires (a task kills, resets,
//! sets the link of, changes the disk of the frozen machine, or installs
//! the server's or the lab's fault and thaws it), so the guest never waits
//! for the next step; `wait_fault` waits for that and records it.
//!
//! A request or time trigger watches the machine running when it is armed
//! (so the machine must be on) and is disarmed if that machine goes off.
//! The faults: `power_cut` (the frozen QEMU is killed: nothing after the
//! trigger runs), `reset` (QMP `system_reset`, then the machine runs on),
//! `link_down` and `link_up` (QMP `set_link` on the NIC), and every fault
//! step that makes sense on a running machine, with that step's own fields
//! in `with = { ... }`:
//! - `disk_errors`: from the trigger on, the bad spot fails the guest's
//!   requests (a blkdebug node is added above the disk and the disk's top
//!   node pointed at it, QMP `blockdev-reopen`; the run boots its disks
//!   with that seam when a scenario arms a disk fault);
//! - `corrupt_disk`: the bytes are overwritten through the disk device
//!   (`qemu-io`), as a torn or stray write would leave them;
//! - `http_fault` and `provision_fault`: the update server's or the
//!   provisioning service's next answers fail, from the trigger on;
//! - `dhcp_stop` (no fields): the lab network's dnsmasq is stopped (DHCP,
//!   TFTP, router advertisements gone) from the trigger on; a `dhcp_start`
//!   step ends the outage.
//!
//! QEMU cannot take QMP commands while frozen, so for all but the power
//! cut it is thawed first; the disk faults pause the guest (QMP `stop`)
//! around their commands, so the guest runs for that instant only.
//! `power_cut_at`, `power_cut_on_request` and `link_drop` on
//! `ssh`/`update` are the same idea bound to one command.
//!
//! The watchdog is not armable: a watchdog bites only a guest that stops
//! feeding it (a QEMU frozen from the host stops the watchdog's clock too);
//! the shipped watchdog scenarios hang the guest itself (image `v2-hang`)
//! and wait for QMP `WATCHDOG`.

use super::prelude::*;
use super::{corrupt_disk::CorruptDisk, disk_errors::DiskErrors, http_fault::HttpFault};
use super::provision_fault::ProvisionFault;
use crate::runner::{Armed, FireAction, FreezeOn};

/// Arm a fault on a console pattern, a server request or a time.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmFault {
    /// What happens when it fires.
    pub fault: ArmedFaultKind,
    /// The console pattern that fires it (`(?s)` to span lines, e.g. the
    /// second of two writes).
    #[serde(default)]
    pub on_console: Option<Pattern>,
    /// The request path (a regex) whose arrival at the update server fires it.
    #[serde(default)]
    pub on_request: Option<Pattern>,
    /// Fire this long after the step.
    #[serde(default)]
    pub after: Option<Dur>,
    /// The QMP event (`RESET`, `WATCHDOG`, `BLOCK_IO_ERROR`, ...) whose
    /// arrival fires it.
    #[serde(default)]
    pub on_qmp: Option<String>,
    /// The fault step's own fields (an inline table), for a fault that
    /// takes some; read into [`ArmFault::args`] by [`StepKind::parse`].
    #[serde(default)]
    pub with: Option<toml::Spanned<toml::Value>>,
    #[serde(skip)]
    pub args: FaultArgs,
}

/// The arguments of a fault that takes some (its step's own struct).
#[derive(Debug, Clone, Default)]
pub enum FaultArgs {
    #[default]
    None,
    DiskErrors(DiskErrors),
    CorruptDisk(CorruptDisk),
    HttpFault(HttpFault),
    ProvisionFault(ProvisionFault),
}

/// Only the trigger that is set (the parse fingerprint of older files
/// stays as it was).
impl std::fmt::Debug for ArmFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ArmFault");
        d.field("fault", &self.fault);
        if let Some(p) = &self.on_console {
            d.field("on_console", p);
        }
        if let Some(p) = &self.on_request {
            d.field("on_request", p);
        }
        if let Some(a) = &self.after {
            d.field("after", a);
        }
        if let Some(q) = &self.on_qmp {
            d.field("on_qmp", q);
        }
        if !matches!(self.args, FaultArgs::None) {
            d.field("with", &self.args);
        }
        d.finish()
    }
}

/// The faults a trigger can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmedFaultKind {
    /// Cut the power: nothing after the trigger runs.
    PowerCut,
    /// Reset the machine (QMP `system_reset`): it reboots, disk as it was.
    Reset,
    /// Take the NIC's link down (QMP `set_link`); the machine runs on.
    LinkDown,
    /// Bring the NIC's link back up.
    LinkUp,
    /// A bad spot on the disk from now on (`with` = `disk_errors`' fields).
    DiskErrors,
    /// Overwrite bytes on the disk (`with` = `corrupt_disk`'s fields).
    CorruptDisk,
    /// The update server's next answers fail (`with` = `http_fault`'s fields).
    HttpFault,
    /// The provisioning service's next answers fail (`with` =
    /// `provision_fault`'s fields).
    ProvisionFault,
    /// The lab network's DHCP/TFTP server stops.
    DhcpStop,
}

impl ArmedFaultKind {
    pub fn name(self) -> &'static str {
        match self {
            ArmedFaultKind::PowerCut => "power_cut",
            ArmedFaultKind::Reset => "reset",
            ArmedFaultKind::LinkDown => "link_down",
            ArmedFaultKind::LinkUp => "link_up",
            ArmedFaultKind::DiskErrors => "disk_errors",
            ArmedFaultKind::CorruptDisk => "corrupt_disk",
            ArmedFaultKind::HttpFault => "http_fault",
            ArmedFaultKind::ProvisionFault => "provision_fault",
            ArmedFaultKind::DhcpStop => "dhcp_stop",
        }
    }

    /// Does it change the disk of a running machine (so the machine boots
    /// with the disk seam, [`crate::board::DISK_NODE`])?
    pub fn changes_disk(self) -> bool {
        matches!(self, ArmedFaultKind::DiskErrors | ArmedFaultKind::CorruptDisk)
    }

    /// Does it take arguments (`with`)?
    fn takes_args(self) -> bool {
        !matches!(
            self,
            ArmedFaultKind::PowerCut
                | ArmedFaultKind::Reset
                | ArmedFaultKind::LinkDown
                | ArmedFaultKind::LinkUp
                | ArmedFaultKind::DhcpStop
        )
    }
}

/// Which trigger a step names.
enum Trigger<'a> {
    Console(&'a Pattern),
    Request(&'a Pattern),
    After(Duration),
    Qmp(&'a str),
}

/// `with`'s table read by a fault step's own struct.
#[derive(Deserialize)]
struct With<T> {
    with: T,
}

/// `text` with everything but the line(s) of `with = { ... }` blanked (same
/// length, newlines kept), so the fault step's struct reads it with spans
/// that still point into the file.
fn only_with(text: &str, value: std::ops::Range<usize>) -> std::result::Result<String, toml::de::Error> {
    let line_start = text[..value.start].rfind('\n').map_or(0, |i| i + 1);
    let prefix = text[line_start..value.start].trim();
    if !(prefix.starts_with("with") && prefix.ends_with('=') && text[value.clone()].starts_with('{')) {
        return Err(serde::de::Error::custom("write `with` as an inline table: with = { field = value, ... }"));
    }
    let keep = line_start..value.end;
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for c in text.chars() {
        match c {
            _ if keep.contains(&at) => out.push(c),
            '\n' => out.push('\n'),
            _ => out.extend(std::iter::repeat_n(' ', c.len_utf8())),
        }
        at += c.len_utf8();
    }
    Ok(out)
}

impl ArmFault {
    fn trigger(&self) -> Option<Trigger<'_>> {
        match (&self.on_console, &self.on_request, &self.after, &self.on_qmp) {
            (Some(p), None, None, None) => Some(Trigger::Console(p)),
            (None, Some(p), None, None) => Some(Trigger::Request(p)),
            (None, None, Some(d), None) => Some(Trigger::After(d.0)),
            (None, None, None, Some(q)) => Some(Trigger::Qmp(q)),
            _ => None,
        }
    }

    /// What completes the fault when it fires, resolved against this run.
    async fn action(&self, r: &mut Run<'_>) -> Result<FireAction> {
        Ok(match (&self.args, self.fault) {
            (_, ArmedFaultKind::PowerCut) => FireAction::Kill,
            (_, ArmedFaultKind::Reset) => FireAction::Qmp("system_reset", None),
            (_, k @ (ArmedFaultKind::LinkDown | ArmedFaultKind::LinkUp)) => {
                FireAction::Qmp("set_link", Some(serde_json::json!({"name": "net0", "up": k == ArmedFaultKind::LinkUp})))
            }
            (_, ArmedFaultKind::DhcpStop) => {
                FireAction::DhcpStop(r.dhcp.clone().ok_or_else(|| r.failure("there is no lab network".into()))?)
            }
            (FaultArgs::DiskErrors(d), _) => FireAction::DiskErrors(vec![d.resolve(r)?]),
            (FaultArgs::CorruptDisk(c), _) => {
                FireAction::Corrupt { offset: c.disk_offset(r)?, length: c.length, byte: c.byte }
            }
            (FaultArgs::HttpFault(h), _) => {
                let server = r.server.clone().ok_or_else(|| r.failure("no update server yet".into()))?;
                FireAction::Http(server, h.fault.clone(), h.count)
            }
            (FaultArgs::ProvisionFault(p), _) => {
                r.ensure_lab().await?;
                FireAction::Provision(r.lab()?.service.clone(), p.endpoint, p.service_fault())
            }
            (FaultArgs::None, k) => return Err(r.failure(format!("{} armed without its arguments", k.name()))),
        })
    }

    /// What the timeline records when it fires.
    fn fired_event(&self) -> Event {
        match (&self.args, self.fault) {
            (_, ArmedFaultKind::PowerCut) => Event::PowerCut,
            (_, ArmedFaultKind::Reset) => Event::Reset,
            (_, ArmedFaultKind::LinkDown) => Event::Link { up: false },
            (_, ArmedFaultKind::LinkUp) => Event::Link { up: true },
            (_, ArmedFaultKind::DhcpStop) => super::dhcp_stop::DhcpStop::event(),
            (FaultArgs::DiskErrors(d), _) => d.event(),
            (FaultArgs::CorruptDisk(c), _) => c.event(),
            (FaultArgs::HttpFault(h), _) => h.event(),
            (FaultArgs::ProvisionFault(p), _) => p.event(),
            (FaultArgs::None, k) => Event::Fault { kind: k.name().into(), target: String::new() },
        }
    }
}

impl StepKind for ArmFault {
    fn parse(text: &str) -> std::result::Result<Self, toml::de::Error> {
        let mut armed: ArmFault = toml::from_str(text)?;
        let Some(with) = &armed.with else {
            return Ok(armed);
        };
        let only = only_with(text, with.span())?;
        armed.args = match armed.fault {
            ArmedFaultKind::DiskErrors => FaultArgs::DiskErrors(toml::from_str::<With<_>>(&only)?.with),
            ArmedFaultKind::CorruptDisk => FaultArgs::CorruptDisk(toml::from_str::<With<_>>(&only)?.with),
            ArmedFaultKind::HttpFault => FaultArgs::HttpFault(toml::from_str::<With<_>>(&only)?.with),
            ArmedFaultKind::ProvisionFault => FaultArgs::ProvisionFault(toml::from_str::<With<_>>(&only)?.with),
            // Refused by the check, at `with`.
            _ => FaultArgs::None,
        };
        Ok(armed)
    }

    fn changes_running_disk(&self) -> bool {
        self.fault.changes_disk()
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if cx.armed.is_some() {
            return Err(cx.at("action", "a fault is armed already: add its wait_fault first"));
        }
        match self.trigger() {
            None => {
                return Err(cx.at("fault", "name exactly one trigger: on_console, on_request, on_qmp or after"))
            }
            Some(Trigger::Qmp(name)) if !super::wait_qmp::QMP_EVENTS.contains(&name) => {
                let known = super::wait_qmp::QMP_EVENTS.join(", ");
                return Err(cx.at("on_qmp", format!("unknown QMP event `{name}` (one of {known})")));
            }
            Some(Trigger::Request(_)) if !cx.server => {
                return Err(cx.at("on_request", "on_request needs the update server (serve something first)"))
            }
            Some(Trigger::Request(_) | Trigger::After(_) | Trigger::Qmp(_)) => {
                // It watches the machine running now.
                cx.need_on()?;
            }
            Some(Trigger::Console(_)) => {}
        }
        let name = self.fault.name();
        match (self.fault.takes_args(), &self.with) {
            (true, None) => {
                return Err(cx.at(
                    "fault",
                    format!("`{name}` takes the fields of its step: with = {{ ... }} (see the `{name}` step)"),
                ))
            }
            (false, Some(_)) => return Err(cx.at("with", format!("`{name}` takes no arguments"))),
            _ => {}
        }
        if self.fault == ArmedFaultKind::DhcpStop {
            cx.need_lab_network()?;
        }
        match &self.args {
            FaultArgs::None => {}
            FaultArgs::DiskErrors(d) => d.check_args(cx)?,
            FaultArgs::CorruptDisk(c) => c.check_args(cx)?,
            FaultArgs::HttpFault(h) => h.check_args(cx)?,
            FaultArgs::ProvisionFault(p) => p.check_args(cx)?,
        }
        cx.armed = Some(self.fault);
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let trigger = self.trigger().ok_or_else(|| r.failure("arm_fault: no single trigger".into()))?;
        let (target, on, pattern, label) = match trigger {
            Trigger::Console(p) => {
                let label = r.pattern_source(p);
                let re = r.console_pattern(p);
                (format!("on console `{label}`"), FreezeOn::Console(re.clone()), Some(re), label)
            }
            Trigger::Request(p) => {
                let label = r.pattern_source(p);
                (format!("on request `{label}`"), FreezeOn::Request(r.text_pattern(p)), None, label)
            }
            Trigger::After(d) => {
                let label = format!("{} after arming", humantime::format_duration(d));
                (label.clone(), FreezeOn::After(d), None, label)
            }
            Trigger::Qmp(name) => (format!("on QMP `{name}`"), FreezeOn::Qmp(name.to_string()), None, name.to_string()),
        };
        let action = self.action(r).await?;
        let mut armed = Armed {
            fault: self.fault,
            action,
            event: self.fired_event(),
            pattern,
            label,
            fired: None,
            watcher: None,
            completion: None,
            done: None,
        };
        // A console fault armed while off waits for the next power-on.
        if r.machine_running() || armed.pattern.is_none() {
            let server = r.server_for(&on)?;
            armed.install(r.machine()?, on, server);
        }
        r.armed.push(armed);
        r.record(Event::Fault { kind: format!("{} armed", self.fault.name()), target });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_is_read_by_the_fault_steps_own_struct() {
        let text = "# é\nfault = \"corrupt_disk\"\nafter = \"1s\"\nwith = { partition = \"data\", length = 4 }\n";
        let a = ArmFault::parse(text).unwrap();
        let FaultArgs::CorruptDisk(c) = &a.args else { panic!("{:?}", a.args) };
        assert_eq!((c.partition.as_str(), c.offset, c.length, c.byte), ("data", 0, 4, 0xff));
        // A wrong field is reported where it is written (multi-byte text before it).
        let bad = text.replace("length", "lenght");
        let e = ArmFault::parse(&bad).unwrap_err();
        assert_eq!(e.span().map(|s| &bad[s]), Some("lenght"), "{e}");
    }

    #[test]
    fn with_must_be_an_inline_table() {
        let text = "fault = \"disk_errors\"\nafter = \"1s\"\nwith = 3\n";
        let e = ArmFault::parse(text).unwrap_err();
        assert!(e.to_string().contains("inline table"), "{e}");
    }
}
