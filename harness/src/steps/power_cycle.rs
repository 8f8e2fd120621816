//! `power_cycle`: pull the plug (if the machine is on) and power it on
//! again, as an operator or a BMC would; the disk stays as it was.

use super::prelude::*;

/// Pull the plug and power on again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCycle {}

impl StepKind for PowerCycle {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need(&[Power::On, Power::Ssh, Power::Off], "needs a machine that was powered on")?;
        cx.power = Power::On;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        if r.machine_running() {
            r.machine()?.power_cut().await?;
            r.forget_sessions();
            r.drain(None);
            r.record(Event::PowerCut);
        }
        r.power_on().await
    }
}
