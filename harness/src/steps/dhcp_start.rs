//! `dhcp_start`: the lab network's DHCP/TFTP server comes back `after` the
//! step starts (the rest of the outage: a fault's own length, not a wait
//! for something); the step ends once dnsmasq serves (its start-up log
//! line, watched with inotify, never polled). Needs `network = "lab"`.

use super::prelude::*;

/// Start the lab network's dnsmasq again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpStart {
    /// How much longer the outage lasts.
    #[serde(default)]
    pub after: Option<Dur>,
}

impl StepKind for DhcpStart {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_lab_network()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        if let Some(after) = &self.after {
            // The fault's own length: the rest of the DHCP outage.
            tokio::time::sleep(after.0).await;
        }
        r.with_net(|net| net.start_dhcp(), "starting the lab's DHCP/TFTP server").await?;
        r.record(Event::Fault { kind: "dhcp_start".into(), target: "lab network".into() });
        Ok(())
    }
}
