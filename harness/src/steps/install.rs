//! `install`: Run the device's own update tool (its profile's `[update] install`) on an artifact served by `serve_artifact`.

use super::prelude::*;
use super::ssh::SshRun;

/// Run the device's own update tool (its profile's `[update] install`,
/// `{url}` = the served artifact's URL) over its command transport, and
/// check its exit status. The outcome is judged afterwards through the
/// device's facts (`assert_slot`, `assert_version`), never through the
/// tool's word. `power_cut_at`/`power_cut_on_request`/`power_cut_on_output`
/// cut the power while it runs, as on the `ssh` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub artifact: String,
    #[serde(default)]
    pub via: Option<crate::device::Via>,
    #[serde(default)]
    pub expect_status: i32,
    #[serde(default = "default_update_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub power_cut_at: Option<Pattern>,
    #[serde(default)]
    pub power_cut_on_request: Option<Pattern>,
    /// Cut the power when the tool's own output matches (its progress
    /// line while it writes the slot: "mid-write").
    #[serde(default)]
    pub power_cut_on_output: Option<Pattern>,
}

impl Install {
    /// The `ssh` step it amounts to on `device`.
    fn as_command(&self, device: &crate::device::Device) -> Option<SshRun> {
        let u = device.update.as_ref()?;
        let source = u.artifacts.get(&self.artifact)?.get_ref();
        let name = super::serve_artifact::served_name(&self.artifact, source);
        let url = format!("http://{{server}}/files/{{arch}}/{name}");
        // The ref's `{arch}`, like the URL's, is the step's to fill in.
        let reference = source.ostree_ref_template().unwrap_or("{ref}");
        Some(SshRun {
            command: u.install.replace("{url}", &url).replace("{ref}", reference),
            via: self.via,
            expect_status: self.expect_status,
            expect_stdout: None,
            timeout: self.timeout,
            power_cut_at: self.power_cut_at.clone(),
            power_cut_on_request: self.power_cut_on_request.clone(),
            power_cut_on_output: self.power_cut_on_output.clone(),
            link_drop: None,
        })
    }
}

impl StepKind for Install {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(d) = cx.scenario.device.clone() else {
            return Err(cx.at("action", "install runs a device profile's update tool: the scenario has no device"));
        };
        if !cx.bundles.contains(&format!("artifact:{}", self.artifact)) {
            return Err(cx.at("artifact", format!("serve the artifact first (serve_artifact artifact = \"{}\")", self.artifact)));
        }
        let Some(ssh) = self.as_command(&d) else {
            return Err(cx.at("artifact", format!("device `{}` has no artifact `{}`", d.name, self.artifact)));
        };
        if ssh.command.contains("{ref}") {
            let msg = format!(
                "device `{}`'s install command takes `{{ref}}`, and artifact `{}` is a file, not an OSTree repo",
                d.name, self.artifact
            );
            return Err(cx.at("artifact", msg));
        }
        ssh.check(cx)
    }

    async fn run(&self, r: &mut Run<'_>, placed: &PlacedStep) -> Result<()> {
        let device = r.scenario.device.clone().expect("checked: a device scenario");
        let ssh = self.as_command(&device).expect("checked: the artifact exists");
        ssh.run(r, placed).await
    }
}
