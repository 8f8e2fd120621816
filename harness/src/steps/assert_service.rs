//! `assert_service`: Is a service (a process by name, `pidof`) running in the guest?

use super::prelude::*;

/// Is a service (a process by name, `pidof`) running in the guest?
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertService {
    pub name: String,
    #[serde(default = "yes")]
    pub running: bool,
}

impl StepKind for AssertService {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        let q = crate::machine::shell_quote(&a.name);
        let out = r.ssh()?.exec(&format!("pidof {q}"), Duration::from_secs(30)).await;
        let out = out.map_err(|e| r.failure(e.to_string()))?;
        let running = out.status == 0;
        if running != a.running {
            return Err(r.failure(format!(
                "service {} is {}, expected {}",
                a.name,
                if running { "running" } else { "not running" },
                if a.running { "running" } else { "not running" }
            )));
        }
        r.drain(None);
        r.record(Event::Service { name: a.name.clone(), running });
        Ok(())
    }
}
