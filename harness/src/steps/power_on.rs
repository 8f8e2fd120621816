//! `power_on`: start the machine (a new disk overlay on the first power-on,
//! the same disk after a power cut or power-off).

use super::prelude::*;

/// Power the machine on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerOn {}

impl StepKind for PowerOn {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need(&[Power::Never, Power::Off], "powers the machine on")?;
        cx.power = Power::On;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        r.power_on().await
    }
}
