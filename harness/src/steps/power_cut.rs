//! `power_cut`: Cut the power: QEMU is killed, nothing is flushed.

use super::prelude::*;

/// Cut the power: QEMU is killed, nothing is flushed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCut {}

impl StepKind for PowerCut {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        cx.power = Power::Off;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let m = r.machine()?;
        m.power_cut().await?;
        r.forget_sessions();
        r.drain(None);
        r.record(Event::PowerCut);
        Ok(())
    }
}
