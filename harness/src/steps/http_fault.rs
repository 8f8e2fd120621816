//! `http_fault`: Arm a fault on the update server for its next `count` requests.

use super::prelude::*;

/// Arm a fault on the update server for its next `count` requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub fault: crate::update_server::Fault,
    #[serde(default = "one")]
    pub count: u32,
}

impl StepKind for HttpFault {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        self.check_args(cx)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let server = r
            .server
            .as_ref()
            .ok_or_else(|| r.failure("no update server yet (add a serve_release step first)".into()))?;
        server.add_fault(self.fault.clone(), self.count);
        r.record(self.event());
        Ok(())
    }
}

impl HttpFault {
    /// The arguments' check (the step's, and an armed fault's).
    pub(crate) fn check_args(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if !cx.server {
            return Err(cx.at("action", "no update server yet (add a serve_release step first)"));
        }
        cx.count("count", self.count, 1000)
    }

    /// What the timeline records.
    pub(crate) fn event(&self) -> Event {
        Event::Fault { kind: self.fault.name(), target: "update server".into() }
    }
}
