//! `wait_fault`: wait until the fault `arm_fault` armed has fired (its
//! console line arrived and the reader froze QEMU there, or its request or
//! time came and the watcher froze it) and was completed (a power cut
//! killed the frozen QEMU, which this step reaps; a reset or a link change
//! was sent and the guest runs on), and record it. For a console trigger
//! of a power cut the timeline stops at the line that fired it: nothing
//! the guest printed after that line is kept.

use super::arm_fault::ArmedFaultKind;
use super::prelude::*;

/// Wait for the armed fault and complete it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFault {
    #[serde(default = "default_boot_timeout")]
    pub timeout: Dur,
}

impl StepKind for WaitFault {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(fault) = cx.armed.take() else {
            return Err(cx.at("action", "no fault armed before this step (add an arm_fault step)"));
        };
        cx.need_on()?;
        // A power cut leaves the machine off; a reset, on and rebooting
        // (no SSH until a wait_ssh).
        cx.power = match fault {
            ArmedFaultKind::PowerCut => Power::Off,
            ArmedFaultKind::Reset => Power::On,
            // The machine runs on (an SSH session waits for the link; a
            // disk or server fault is for the guest to meet).
            _ => cx.power,
        };
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        if r.armed.is_empty() {
            return Err(r.failure("no fault armed (add an arm_fault step)".into()));
        }
        let armed = r.armed.remove(0);
        let Some(mut fired) = armed.fired else {
            let why = match armed.pattern {
                Some(_) => "was armed while the machine was off and it was never powered on again",
                None => "watched a machine that went off before it fired",
            };
            return Err(r.failure(format!("the fault on `{}` {why}", armed.label)));
        };
        let waited = tokio::time::timeout(self.timeout.0, fired.wait_for(|f| f.is_some())).await;
        let end = match waited {
            Ok(Ok(end)) => *end,
            _ => None,
        };
        let Some(end) = end else {
            let what = match armed.pattern {
                Some(_) => "did not appear on the console",
                None => "did not come",
            };
            return Err(r.failure(format!(
                "`{}` {what} within {}",
                armed.label,
                humantime::format_duration(self.timeout.0)
            )));
        };
        // A console trigger's line is the last the timeline keeps; a
        // request or a time: every line printed before the freeze.
        let upto = (end != usize::MAX).then_some(end);
        // The fault was completed as it fired (see `Armed::install`).
        let mut done = armed.done.expect("installed with its trigger");
        crate::runner::completed(&mut done, armed.fault.name()).await?;
        if armed.fault == ArmedFaultKind::PowerCut {
            // Killed already: reap it.
            if let Some(m) = r.machine.as_mut() {
                m.power_cut().await?;
            }
        }
        // The session is gone with the machine or its boot; a link fault
        // leaves it to wait for the link.
        if matches!(armed.fault, ArmedFaultKind::PowerCut | ArmedFaultKind::Reset) {
            r.forget_sessions();
        }
        r.drain(upto);
        r.record(armed.event);
        Ok(())
    }
}
