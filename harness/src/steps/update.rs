//! `update`: Run the device's update agent against a served release.

use super::prelude::*;
use crate::runner::{CutAt, OutageEnd, OutageStart};

/// What the update agent prints when an attempt ends, one way or another.
const UPDATE_OUTCOME: &str =
    r"devlab-update: (download failed|api failed|refused|write failed|switch failed|slot . written)";

/// Run the device's update agent against a served release.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub version: String,
    #[serde(default = "installed")]
    pub expect: UpdateOutcome,
    /// Reboot into the new slot when installed (default true).
    #[serde(default = "yes")]
    pub reboot: bool,
    #[serde(default = "default_update_timeout")]
    pub timeout: Dur,
    /// Cut the power when this console pattern appears while the agent
    /// runs (e.g. `devlab-update: writing slot`): the step then ends in a
    /// power cut instead of an outcome.
    #[serde(default)]
    pub power_cut_at: Option<Pattern>,
    /// Take the NIC's link down once the download is under way (1 MiB
    /// served) and up again when the agent reports on the console.
    #[serde(default)]
    pub link_down_mid_transfer: bool,
}

/// What an update attempt must end in (the agent's exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    Installed,
    ApiFailed,
    AlreadyRunning,
    DownloadFailed,
    ChecksumMismatch,
    WriteFailed,
    SwitchFailed,
}

impl UpdateOutcome {
    pub const ALL: [UpdateOutcome; 7] = [
        UpdateOutcome::Installed,
        UpdateOutcome::ApiFailed,
        UpdateOutcome::AlreadyRunning,
        UpdateOutcome::DownloadFailed,
        UpdateOutcome::ChecksumMismatch,
        UpdateOutcome::WriteFailed,
        UpdateOutcome::SwitchFailed,
    ];

    /// The update agent's exit status for this outcome.
    pub fn exit_status(self) -> i32 {
        match self {
            UpdateOutcome::Installed => 0,
            UpdateOutcome::ApiFailed => 2,
            UpdateOutcome::AlreadyRunning => 3,
            UpdateOutcome::DownloadFailed => 4,
            UpdateOutcome::ChecksumMismatch => 5,
            UpdateOutcome::WriteFailed => 6,
            UpdateOutcome::SwitchFailed => 7,
        }
    }

    pub fn from_exit_status(code: i32) -> Option<UpdateOutcome> {
        Self::ALL.into_iter().find(|o| o.exit_status() == code)
    }
}

fn installed() -> UpdateOutcome {
    UpdateOutcome::Installed
}

impl StepKind for Update {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()?;
        if !cx.server {
            return Err(cx.at("action", "no update server yet (add a serve_release step first)"));
        }
        if self.power_cut_at.is_some() && self.link_down_mid_transfer {
            return Err(cx.at("link_down_mid_transfer", "set one of power_cut_at and link_down_mid_transfer"));
        }
        if self.power_cut_at.is_some() {
            cx.power = Power::Off;
        } else if self.expect == UpdateOutcome::Installed && self.reboot {
            cx.power = Power::On;
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let u = self;
        let url = r
            .server
            .as_ref()
            .ok_or_else(|| r.failure("no update server yet (add a serve_release step first)".into()))?
            .guest_api_url(&u.version, r.board.arch.uname());
        let command = format!("devlab-update --no-reboot {url}");
        if let Some(p) = &u.power_cut_at {
            let re = r.console_pattern(p);
            return r.exec_until_power_cut(&command, u.timeout.0, CutAt::Console(re), crate::device::Via::Ssh).await;
        }
        let out = if u.link_down_mid_transfer {
            // The link comes back once the agent has reported.
            let re = BytesRegex::new(UPDATE_OUTCOME).expect("static pattern");
            let end = OutageEnd::Console(re);
            r.exec_with_link_outage(&command, u.timeout.0, OutageStart::Downloaded, end).await?
        } else {
            let out = r.ssh()?.exec(&command, u.timeout.0).await;
            out.map_err(|e| r.failure(e.to_string()))?
        };
        r.console_barrier().await?;
        let got = UpdateOutcome::from_exit_status(out.status);
        if got != Some(u.expect) {
            return Err(r.failure(format!(
                "update to {} ended {} (exit {}), expected {:?}; output: {}{}",
                u.version,
                got.map_or("unexpectedly".to_string(), |g| format!("{g:?}")),
                out.status,
                u.expect,
                out.stdout.trim(),
                out.stderr.trim()
            )));
        }
        r.record(Event::UpdateResult {
            version: u.version.clone(),
            outcome: serde_json::to_value(u.expect)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        });
        if u.expect == UpdateOutcome::Installed && u.reboot {
            let _ = r.ssh()?.exec(SYSTEM_REBOOT, Duration::from_secs(10)).await;
            r.forget_sessions();
        }
        Ok(())
    }
}
