//! `wait_fleet`: Wait, on each machine it runs on, until the machine's
//! fleet agent has reported its update to `version` (`ok`, `failed`, or
//! either) and holds no reboot slot any more: read from the machine's own
//! console (`devlab-fleet:` markers), whatever reboots happen meanwhile.

use super::prelude::*;
use crate::fleet::NodeView;

/// How the update must have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reported {
    Ok,
    Failed,
    Any,
}

/// Wait for a machine's agent to finish an update to `version`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFleet {
    pub version: String,
    #[serde(default = "any")]
    pub result: Reported,
    #[serde(default = "default_update_timeout")]
    pub timeout: Dur,
}

fn any() -> Reported {
    Reported::Any
}

impl WaitFleet {
    /// Finished: reported as wanted, and every reboot slot given back.
    fn done(&self, v: &NodeView) -> Option<std::result::Result<(), String>> {
        let ok = v.updated.contains(&self.version);
        let failed = v.failed.contains(&self.version);
        if !(ok || failed) || v.slot_held.iter().any(|(_, end)| end.is_none()) {
            return None;
        }
        Some(match (self.result, ok) {
            (Reported::Ok, false) => Err(format!("its update to {} failed (rolled back)", self.version)),
            (Reported::Failed, true) => Err(format!("its update to {} went through", self.version)),
            _ => Ok(()),
        })
    }
}

impl StepKind for WaitFleet {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if cx.scenario.fleet.is_none() {
            return Err(cx.at("action", "wait_fleet needs a [fleet] table and its agents (fleet_agent)"));
        }
        cx.need_on()?;
        // The agent reboots the machine: any SSH session is gone.
        cx.power = Power::On;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout.0;
        // One whole agent line at a time, up to its `\n` (a line ending in
        // `\r` only is not yet a line the drain takes).
        let line = BytesRegex::new(r"devlab-fleet: [^\n]*\n").expect("static regex");
        loop {
            r.drain(None);
            let view = NodeView::of(&r.timeline.entries);
            if let Some(done) = self.done(&view) {
                r.forget_sessions();
                return done.map_err(|e| r.failure(e));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = r.machine()?;
            let got = m.console.expect(std::slice::from_ref(&line), left).await;
            if let Err(e) = got {
                // Where the agent stood, from its own lines.
                let holds = view.slot_held.iter().any(|(_, end)| end.is_none());
                let why = format!(
                    "the fleet agent never reported its update to {} (offered so far: {:?}; runs {}; holds a reboot slot: {})",
                    self.version,
                    view.offered,
                    view.runs.as_deref().unwrap_or("?"),
                    if holds { "yes" } else { "no" },
                );
                return Err(r.console_failure_because(e, &why));
            }
        }
    }
}
