//! `assert_ostree`: `ostree admin status` on the device: the deployments, in order, each the commit of an image in a state.

use super::prelude::*;
use crate::ostree::DeploymentState;

/// `ostree admin status` on the device: the deployments, in order, each
/// the commit of an image in a state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertOstree {
    pub deployments: Vec<ExpectedDeployment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDeployment {
    /// The OSTree image whose commit is deployed.
    pub image: String,
    pub state: DeploymentState,
}

impl StepKind for AssertOstree {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()?;
        for d in &self.deployments {
            let recipe = cx.root.join("images/recipes").join(format!("{}.toml", d.image));
            let is_ostree = devlab_images::Recipe::load(&recipe).is_ok_and(|(r, _)| r.ostree.is_some());
            if !is_ostree {
                return Err(cx.at(
                    "deployments",
                    format!("`{}` is not an OSTree image recipe ({})", d.image, recipe.display()),
                ));
            }
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        let out = r.ssh()?.exec("ostree admin status", Duration::from_secs(60)).await;
        let out = out.map_err(|e| r.failure(e.to_string()))?;
        if out.status != 0 {
            return Err(r.failure(format!(
                "ostree admin status exited {}: {}",
                out.status,
                out.stderr.trim()
            )));
        }
        let got = crate::ostree::parse_status(&out.stdout);
        let mut want = Vec::new();
        for d in &a.deployments {
            want.push((r.commit_of(&d.image)?, d.state));
        }
        let got_pairs: Vec<(String, DeploymentState)> =
            got.iter().map(|d| (d.commit.clone(), d.state)).collect();
        r.drain(None);
        if got_pairs != want {
            let name = |c: &str| {
                r.ostree.name_of(c).map_or(c.to_string(), str::to_string)
            };
            let show = |v: &[(String, DeploymentState)]| {
                v.iter().map(|(c, s)| format!("{} {}", name(c), s.as_str())).collect::<Vec<_>>().join(", ")
            };
            return Err(r.failure(format!(
                "ostree deployments are [{}], expected [{}]; ostree admin status:\n{}",
                show(&got_pairs),
                show(&want),
                out.stdout.trim_end()
            )));
        }
        let deployments =
            got.iter().map(|d| format!("{} {} version {}", d.state.as_str(), d.commit, d.version)).collect();
        r.record(Event::OstreeStatus { deployments });
        Ok(())
    }
}
