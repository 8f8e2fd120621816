//! `provision_assign`: Assign an install profile (`[provision]`) to this board's node.

use super::prelude::*;

/// Assign an install profile (`[provision]`) to this board's node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionAssign {
    pub profile: String,
}

impl StepKind for ProvisionAssign {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_provision()?;
        if !cx.scenario.profile_names().any(|n| n == self.profile) {
            let known: Vec<&str> = cx.scenario.profile_names().collect();
            return Err(cx.at("profile", format!("no profile `{}` in [provision] (known: {})", self.profile, known.join(", "))));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        // A fault may be armed before the first power-on starts the lab.
        r.ensure_lab().await?;
        let uuid = r.node_uuid()?;
        // On a lab network the service knows a profile per arch.
        let profile = r.profile_name(&a.profile);
        r.service()?.assign(&uuid, &profile).map_err(|e| r.failure(format!("assigning {profile}: {e}")))?;
        r.drain(None);
        r.record(Event::Provision { detail: format!("assigned profile {}", a.profile) });
        Ok(())
    }
}
