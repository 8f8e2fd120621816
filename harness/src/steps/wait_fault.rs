//! `wait_fault`: wait until the fault `arm_fault` armed has fired (its
//! console line arrived and the reader froze QEMU there), then complete
//! it: a power cut kills the frozen QEMU. The timeline stops at the line
//! that fired it: nothing the guest printed after that line is kept.

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
        if cx.armed == 0 {
            return Err(cx.at("action", "no fault armed before this step (add an arm_fault step)"));
        }
        cx.need_on()?;
        cx.armed -= 1;
        cx.power = Power::Off;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        if r.armed.is_empty() {
            return Err(r.failure("no fault armed (add an arm_fault step)".into()));
        }
        let armed = r.armed.remove(0);
        let Some(mut fired) = armed.fired else {
            return Err(r.failure(format!(
                "the fault on `{}` was armed while the machine was off and it was never powered on again",
                armed.label
            )));
        };
        let waited = tokio::time::timeout(self.timeout.0, fired.wait_for(|f| f.is_some())).await;
        let end = match waited {
            Ok(Ok(end)) => *end,
            _ => None,
        };
        let Some(end) = end else {
            return Err(r.failure(format!(
                "`{}` did not appear on the console within {}",
                armed.label,
                humantime::format_duration(self.timeout.0)
            )));
        };
        let m = r.machine()?;
        m.power_cut().await?;
        if let Some(s) = r.ssh.take() {
            s.disconnect();
        }
        r.drain(Some(end));
        r.record(Event::PowerCut);
        Ok(())
    }
}
