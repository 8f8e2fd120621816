//! `arm_fault`: arm a fault on a console trigger. From now on (or from the
//! next power-on if the machine is off), the console reader freezes QEMU
//! the moment the pattern arrives, from U-Boot's first line on; a later
//! `wait_fault` completes the fault (a power cut: the frozen QEMU is
//! killed). The guest runs no further than the line that triggered, so the
//! cut lands at the same point every run.

use super::prelude::*;
use crate::runner::Armed;

/// Arm a fault on a console pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmFault {
    /// What happens when it fires.
    pub fault: ArmedFaultKind,
    /// The console pattern that fires it (`(?s)` to span lines, e.g. the
    /// second of two writes).
    pub on_console: Pattern,
}

/// The faults a trigger can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmedFaultKind {
    /// Cut the power: nothing after the trigger line runs.
    PowerCut,
}

impl StepKind for ArmFault {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if cx.armed > 0 {
            return Err(cx.at("action", "a fault is armed already: add its wait_fault first"));
        }
        cx.armed += 1;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let pattern = r.console_pattern(&self.on_console);
        let mut armed = Armed { pattern, label: r.pattern_source(&self.on_console), fired: None };
        if r.machine_running() {
            let m = r.machine.as_mut().expect("running");
            armed.fired = Some(m.console.arm_trigger(armed.pattern.clone(), m.freeze_hook()));
        }
        let target = format!("on console `{}`", armed.label);
        r.armed.push(armed);
        r.record(Event::Fault { kind: "power_cut armed".into(), target });
        Ok(())
    }
}
