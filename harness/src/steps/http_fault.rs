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
        if !cx.server {
            return Err(cx.at("action", "no update server yet (add a serve_release step first)"));
        }
        cx.count("count", self.count, 1000)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let f = self;
        let server = r
            .server
            .as_ref()
            .ok_or_else(|| r.failure("no update server yet (add a serve_release step first)".into()))?;
        server.add_fault(f.fault.clone(), f.count);
        r.record(Event::Fault { kind: f.fault.name(), target: "update server".into() });
        Ok(())
    }
}
