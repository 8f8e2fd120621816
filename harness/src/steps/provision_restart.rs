//! `provision_restart`: Stop the provisioning service and start it again on the same address from the same database (what a restarted service must not lose), with the profiles of `remove_profiles` gone from its profile folder (an operator deleted them; a node assigned one is refused its profile).

use super::prelude::*;

/// Stop the provisioning service and start it again on the same address
/// from the same database (what a restarted service must not lose), with
/// the profiles of `remove_profiles` gone from its profile folder (an
/// operator deleted them; a node assigned one is refused its profile).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRestart {
    #[serde(default)]
    pub remove_profiles: Vec<String>,
}

impl StepKind for ProvisionRestart {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_provision()?;
        if let Some(p) = self.remove_profiles.iter().find(|p| !cx.scenario.profile_names().any(|n| n == *p)) {
            let known: Vec<&str> = cx.scenario.profile_names().collect();
            return Err(cx.at("remove_profiles", format!("no profile `{p}` in [provision] (known: {})", known.join(", "))));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let st = self;
        r.ensure_lab().await?;
        r.lab()?;
        let lab = r.lab.as_mut().expect("checked");
        lab.restart(&st.remove_profiles).await?;
        // Every machine's handle is the restarted service's.
        r.service = Some(lab.service.clone());
        r.drain(None);
        let detail = match st.remove_profiles.as_slice() {
            [] => "service restarted".to_string(),
            gone => format!("service restarted without profile {}", gone.join(", ")),
        };
        r.record(Event::Provision { detail });
        Ok(())
    }
}
