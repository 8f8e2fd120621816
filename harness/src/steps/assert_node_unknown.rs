//! `assert_node_unknown`: the provisioning service has no record of this
//! board's node (its SMBIOS UUID): e.g. its firmware never reached the
//! service during a DHCP outage.

use super::prelude::*;

/// The node is unknown to the provisioning service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertNodeUnknown {}

impl StepKind for AssertNodeUnknown {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_provision()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        r.ensure_lab().await?;
        let uuid = r.node_uuid()?;
        let nodes = r.service()?.nodes().map_err(|e| r.failure(format!("listing nodes: {e}")))?;
        if let Some(n) = nodes.iter().find(|n| n.uuid == uuid) {
            return Err(r.failure(format!("node {uuid} is known to the provisioning service (state {})", n.state)));
        }
        r.drain(None);
        r.record(Event::Provision { detail: "node unknown to the service".into() });
        Ok(())
    }
}
