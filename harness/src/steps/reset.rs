//! `reset`: Hardware reset (QMP `system_reset`).

use super::prelude::*;

/// Hardware reset (QMP `system_reset`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {}

impl StepKind for Reset {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        cx.power = Power::On;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let m = r.machine()?;
        m.qmp()?
            .execute_timeout("system_reset", None, Duration::from_secs(10))
            .await
            .map_err(|e| Error::infra(format!("system_reset: {e}")))?;
        r.forget_sessions();
        r.drain(None);
        r.record(Event::Reset);
        Ok(())
    }
}
