//! `dhcp_stop`: the lab network's DHCP/TFTP server (dnsmasq) goes down (a
//! fault): leases already handed out stay, nothing new is answered until
//! `dhcp_start`. Needs `network = "lab"`.

use super::prelude::*;

/// Stop the lab network's dnsmasq.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpStop {}

impl StepKind for DhcpStop {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_lab_network()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        r.with_net(|net| net.stop_dhcp(), "stopping the lab's DHCP/TFTP server").await?;
        r.record(DhcpStop::event());
        Ok(())
    }
}

impl DhcpStop {
    /// What the timeline records (the step's, and an armed outage's).
    pub(crate) fn event() -> Event {
        Event::Fault { kind: "dhcp_stop".into(), target: "lab network".into() }
    }
}
