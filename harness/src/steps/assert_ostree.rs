//! `assert_ostree`: `ostree admin status` on the device: the deployments, in order, each named by an image (its commit) or by its version, in a state.

use super::prelude::*;
use crate::ostree::DeploymentState;

/// `ostree admin status` on the device: the deployments, in order, each
/// the commit of an image (devlab's OSTree images) or a commit whose
/// `version` metadata is `version` (any device, e.g. a team's own repo),
/// in a state. Runs over SSH, or a device's default transport.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertOstree {
    pub deployments: Vec<ExpectedDeployment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDeployment {
    /// The OSTree image whose commit is deployed.
    #[serde(default)]
    pub image: Option<String>,
    /// The deployed commit's `version` (`ostree admin status`'s `Version:`).
    #[serde(default)]
    pub version: Option<String>,
    pub state: DeploymentState,
}

/// What one deployment is compared by.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Commit(String),
    Version(String),
}

impl StepKind for AssertOstree {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(None)?;
        for d in &self.deployments {
            match (&d.image, &d.version) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(cx.at("deployments", "each deployment names an `image` or a `version`, not both"));
                }
                (Some(_), None) if cx.scenario.device.is_some() => {
                    let msg = "a device's deployments are named by `version` (images are devlab's recipes)";
                    return Err(cx.at("deployments", msg));
                }
                (Some(image), None) => {
                    let recipe = cx.root.join("images/recipes").join(format!("{image}.toml"));
                    let is_ostree = devlab_images::Recipe::load(&recipe).is_ok_and(|(r, _)| r.ostree.is_some());
                    if !is_ostree {
                        let msg = format!("`{image}` is not an OSTree image recipe ({})", recipe.display());
                        return Err(cx.at("deployments", msg));
                    }
                }
                (None, Some(_)) => {}
            }
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let via = r.via(None);
        let out = r.exec_via("ostree admin status", Duration::from_secs(60), via).await?;
        if out.status != 0 {
            let said = format!("{} {}", out.stderr.trim(), out.stdout.trim());
            return Err(r.failure(format!("ostree admin status exited {}: {}", out.status, said.trim())));
        }
        let got = crate::ostree::parse_status(&out.stdout);
        let mut want = Vec::new();
        for d in &self.deployments {
            let key = match (&d.image, &d.version) {
                (Some(image), _) => Key::Commit(r.commit_of(image)?),
                (None, Some(v)) => Key::Version(v.clone()),
                (None, None) => unreachable!("checked: an image or a version"),
            };
            want.push((key, d.state));
        }
        // Each deployment keyed the way the expectation at its place is.
        let got_pairs: Vec<(Key, DeploymentState)> = got
            .iter()
            .enumerate()
            .map(|(i, d)| match want.get(i) {
                Some((Key::Version(_), _)) => (Key::Version(d.version.clone()), d.state),
                _ => (Key::Commit(d.commit.clone()), d.state),
            })
            .collect();
        r.drain(None);
        if got_pairs != want {
            let name = |k: &Key| match k {
                Key::Commit(c) => r.ostree.name_of(c).map_or(c.to_string(), str::to_string),
                Key::Version(v) => format!("version {v}"),
            };
            let show = |v: &[(Key, DeploymentState)]| {
                v.iter().map(|(k, s)| format!("{} {}", name(k), s.as_str())).collect::<Vec<_>>().join(", ")
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
