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
//! - `after`: a time after this step (the fault's own moment, not a wait
//!   for something).
//!
//! A request or time trigger watches the machine running when it is armed
//! (so the machine must be on) and is disarmed if that machine goes off.
//! The faults: `power_cut` (the frozen QEMU is killed: nothing after the
//! trigger runs) and `reset` (QMP `system_reset`, then the machine runs
//! on; QEMU cannot take QMP commands while frozen, so it is thawed first
//! and the guest runs for that instant). `power_cut_at`,
//! `power_cut_on_request` and `link_drop` on `ssh`/`update` are the same
//! idea bound to one command.

use super::prelude::*;
use crate::runner::{AbortOnDrop, Armed};

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
}

impl ArmedFaultKind {
    pub fn name(self) -> &'static str {
        match self {
            ArmedFaultKind::PowerCut => "power_cut",
            ArmedFaultKind::Reset => "reset",
        }
    }
}

/// Which trigger a step names.
enum Trigger<'a> {
    Console(&'a Pattern),
    Request(&'a Pattern),
    After(Duration),
}

impl ArmFault {
    fn trigger(&self) -> Option<Trigger<'_>> {
        match (&self.on_console, &self.on_request, &self.after) {
            (Some(p), None, None) => Some(Trigger::Console(p)),
            (None, Some(p), None) => Some(Trigger::Request(p)),
            (None, None, Some(d)) => Some(Trigger::After(d.0)),
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
            None => return Err(cx.at("fault", "name exactly one trigger: on_console, on_request or after")),
            Some(Trigger::Request(_)) if !cx.server => {
                return Err(cx.at("on_request", "on_request needs the update server (serve something first)"))
            }
            Some(Trigger::Request(_) | Trigger::After(_)) => {
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
        let (target, armed) = match trigger {
            Trigger::Console(p) => {
                let pattern = r.console_pattern(p);
                let mut armed = Armed {
                    fault: self.fault,
                    pattern: Some(pattern.clone()),
                    label: r.pattern_source(p),
                    fired: None,
                    watcher: None,
                };
                if r.machine_running() {
                    let m = r.machine.as_mut().expect("running");
                    armed.fired = Some(m.console.arm_trigger(pattern, m.freeze_hook()));
                }
                (format!("on console `{}`", armed.label), armed)
            }
            Trigger::Request(p) => {
                let re = r.text_pattern(p);
                let label = r.pattern_source(p);
                let server = r.server.clone().ok_or_else(|| r.failure("no update server yet".into()))?;
                let from = server.requests();
                let freeze = r.machine()?.freeze_hook();
                let (tx, rx) = tokio::sync::watch::channel(None);
                let watcher = tokio::spawn(async move {
                    server.wait_request(&re, from).await;
                    freeze();
                    let _ = tx.send(Some(usize::MAX));
                });
                let target = format!("on request `{label}`");
                (target, watched(self.fault, label, rx, watcher))
            }
            Trigger::After(d) => {
                let freeze = r.machine()?.freeze_hook();
                let (tx, rx) = tokio::sync::watch::channel(None);
                let watcher = tokio::spawn(async move {
                    // The fault's own moment, not a wait for something.
                    tokio::time::sleep(d).await;
                    freeze();
                    let _ = tx.send(Some(usize::MAX));
                });
                let label = format!("{} after arming", humantime::format_duration(d));
                (label.clone(), watched(self.fault, label, rx, watcher))
            }
        };
        r.armed.push(armed);
        r.record(Event::Fault { kind: format!("{} armed", self.fault.name()), target });
        Ok(())
    }
}

/// An armed fault that a task watches for (a request or a time).
fn watched(
    fault: ArmedFaultKind,
    label: String,
    rx: tokio::sync::watch::Receiver<Option<usize>>,
    watcher: tokio::task::JoinHandle<()>,
) -> Armed {
    Armed { fault, pattern: None, label, fired: Some(rx), watcher: Some(AbortOnDrop(watcher)) }
}
