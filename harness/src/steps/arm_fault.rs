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
//! The fault is completed the moment it fires (a task kills, resets or
//! sets the link of the frozen machine), so the guest never waits for the
//! next step; `wait_fault` waits for that and records it.
//!
//! A request or time trigger watches the machine running when it is armed
//! (so the machine must be on) and is disarmed if that machine goes off.
//! The faults: `power_cut` (the frozen QEMU is killed: nothing after the
//! trigger runs), `reset` (QMP `system_reset`, then the machine runs on),
//! `link_down` and `link_up` (QMP `set_link` on the NIC). QEMU cannot take
//! QMP commands while frozen, so for all but the power cut it is thawed
//! first and the guest runs for that instant. `power_cut_at`,
//! `power_cut_on_request` and `link_drop` on `ssh`/`update` are the same
//! idea bound to one command.

use super::prelude::*;
use crate::runner::{Armed, FreezeOn};

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
}

impl ArmedFaultKind {
    pub fn name(self) -> &'static str {
        match self {
            ArmedFaultKind::PowerCut => "power_cut",
            ArmedFaultKind::Reset => "reset",
            ArmedFaultKind::LinkDown => "link_down",
            ArmedFaultKind::LinkUp => "link_up",
        }
    }
}

/// Which trigger a step names.
enum Trigger<'a> {
    Console(&'a Pattern),
    Request(&'a Pattern),
    After(Duration),
    Qmp(&'a str),
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
}

impl StepKind for ArmFault {
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
        let mut armed =
            Armed { fault: self.fault, pattern, label, fired: None, watcher: None, completion: None, done: None };
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
