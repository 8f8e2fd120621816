//! `link`: Take the board's network link down or up (QMP `set_link`).

use super::prelude::*;
use serde_json::json;

/// Take the board's network link down or up (QMP `set_link`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub up: bool,
}

impl StepKind for Link {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let l = self;
        let m = r.machine()?;
        let set = m
            .qmp()?
            .execute_timeout("set_link", Some(json!({"name": "net0", "up": l.up})), Duration::from_secs(10))
            .await;
        set.map_err(|e| Error::infra(format!("set_link: {e}")))?;
        r.record(Event::Link { up: l.up });
        Ok(())
    }
}
