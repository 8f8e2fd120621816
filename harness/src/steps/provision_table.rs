//! `provision_table`: Put the provisioning service's state table in the timeline.

use super::prelude::*;

/// Put the provisioning service's state table in the timeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionTable {}

impl StepKind for ProvisionTable {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_provision()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        r.ensure_lab().await?;
        let table = r.lab()?.service.state_table();
        r.drain(None);
        r.record(Event::ProvisionTable { rows: table.lines().map(|l| l.trim_end().to_string()).collect() });
        Ok(())
    }
}
