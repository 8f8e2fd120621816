//! `rauc_install`: Run `rauc install <url>` on the device against a served bundle.

use super::prelude::*;

/// Run `rauc install <url>` on the device against a served bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaucInstall {
    pub bundle: String,
    #[serde(default = "rauc_installed")]
    pub expect: RaucOutcome,
    /// A regex RAUC's output must match when it failed (the reason).
    #[serde(default)]
    pub error: Option<Pattern>,
    /// Reboot into the new slot when installed (default true).
    #[serde(default = "yes")]
    pub reboot: bool,
    #[serde(default = "default_update_timeout")]
    pub timeout: Dur,
}

/// What `rauc install` is expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaucOutcome {
    /// Exit 0: the inactive slot written and made primary.
    Installed,
    /// Non-zero exit: the bundle was refused or the install failed.
    Failed,
}

fn rauc_installed() -> RaucOutcome {
    RaucOutcome::Installed
}

impl StepKind for RaucInstall {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()?;
        if !cx.bundles.contains(&self.bundle) {
            return Err(cx.at(
                "bundle",
                format!("no bundle `{}` served before this step (add a serve_bundle step)", self.bundle),
            ));
        }
        if self.expect == RaucOutcome::Installed && self.reboot {
            cx.power = Power::On;
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let i = self;
        let url = r.rauc.url(&i.bundle).map(str::to_string).ok_or_else(|| {
            r.failure(format!("no bundle `{}` served (add a serve_bundle step first)", i.bundle))
        })?;
        let out = r.ssh()?.exec(&format!("rauc install {url}"), i.timeout.0).await;
        let out = out.map_err(|e| r.failure(e.to_string()))?;
        let text = format!("{}{}", out.stdout, out.stderr);
        let got = if out.status == 0 { RaucOutcome::Installed } else { RaucOutcome::Failed };
        if got != i.expect {
            return Err(r.failure(format!(
                "rauc install {} ended {got:?} (exit {}), expected {:?}; output:\n{}",
                i.bundle,
                out.status,
                i.expect,
                text.trim()
            )));
        }
        if let Some(p) = &i.error {
            if !r.text_pattern(p).is_match(&text) {
                return Err(r.failure(format!(
                    "rauc install {} output does not match `{}`:\n{}",
                    i.bundle,
                    p.0,
                    text.trim()
                )));
            }
        }
        r.console_barrier().await?;
        r.record(Event::RaucInstall {
            bundle: i.bundle.clone(),
            outcome: format!("{got:?}").to_lowercase(),
        });
        if got == RaucOutcome::Installed && i.reboot {
            let _ = r.ssh()?.exec(SYSTEM_REBOOT, Duration::from_secs(10)).await;
            r.forget_sessions();
        }
        Ok(())
    }
}
