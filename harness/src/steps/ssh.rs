//! `ssh`: Run a command over SSH and check its status and output.

use super::prelude::*;
use crate::runner::{CutAt, OutageEnd, OutageStart};

/// Run a command over SSH and check its status and output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRun {
    pub command: String,
    #[serde(default)]
    pub expect_status: i32,
    /// Regex the trimmed stdout must match; its match is recorded.
    #[serde(default)]
    pub expect_stdout: Option<Pattern>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// Cut the power when this console pattern appears while the command
    /// runs (the command must not end first).
    #[serde(default)]
    pub power_cut_at: Option<Pattern>,
    /// Cut the power when the update server starts answering a request
    /// whose path matches (e.g. an OSTree object while a pull runs).
    #[serde(default)]
    pub power_cut_on_request: Option<Pattern>,
    /// Take the NIC's link down while the command runs, when the update
    /// server starts answering a matching request, for `seconds`; the
    /// command then runs on to its end (a transfer resumes or fails).
    #[serde(default)]
    pub link_drop: Option<LinkDrop>,
}

/// A link outage in the middle of a transfer (see [`SshRun::link_drop`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDrop {
    /// Regex on the request path that triggers it.
    pub on_request: Pattern,
    /// How long the link stays down (the fault's length, not a wait).
    pub seconds: u64,
}

impl StepKind for SshRun {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()?;
        let set = [self.power_cut_at.is_some(), self.power_cut_on_request.is_some(), self.link_drop.is_some()];
        if set.iter().filter(|x| **x).count() > 1 {
            let key = if self.link_drop.is_some() { "link_drop" } else { "power_cut_on_request" };
            return Err(cx.at(key, "set one of power_cut_at, power_cut_on_request and link_drop"));
        }
        if self.command.contains("{server}") {
            cx.server = true;
        }
        if let Some(drop) = &self.link_drop {
            cx.seconds("link_drop", drop.seconds)?;
        }
        for (key, set) in [("power_cut_on_request", self.power_cut_on_request.is_some()), ("link_drop", self.link_drop.is_some())] {
            if set && !cx.server {
                return Err(cx.at(key, format!("{key} watches the update server's requests: serve something first")));
            }
        }
        if self.power_cut_at.is_some() || self.power_cut_on_request.is_some() {
            cx.power = Power::Off;
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let s = self;
        if s.command.contains("{server}") {
            r.start_server().await?;
        }
        let command = r.subst_commits(&s.command)?;
        let command = r.subst(&command);
        if let Some(p) = &s.power_cut_at {
            let re = r.console_pattern(p);
            return r.exec_until_power_cut(&command, s.timeout.0, CutAt::Console(re)).await;
        }
        if let Some(p) = &s.power_cut_on_request {
            let re = r.text_pattern(p);
            return r.exec_until_power_cut(&command, s.timeout.0, CutAt::Request(re)).await;
        }
        let out = match &s.link_drop {
            Some(drop) => {
                let re = r.text_pattern(&drop.on_request);
                let end = OutageEnd::After(Duration::from_secs(drop.seconds));
                r.exec_with_link_outage(&command, s.timeout.0, OutageStart::Request(re), end).await?
            }
            None => r.ssh()?.exec(&command, s.timeout.0).await.map_err(|e| r.failure(e.to_string()))?,
        };
        if out.status != s.expect_status {
            return Err(r.failure(format!(
                "`{command}` exited {} (expected {}); stdout: {:?}; stderr: {:?}",
                out.status,
                s.expect_status,
                out.stdout.trim(),
                out.stderr.trim()
            )));
        }
        let mut recorded = None;
        if let Some(p) = &s.expect_stdout {
            let (re, pattern) = (r.text_pattern(p), r.pattern_source(p));
            let stdout = out.stdout.trim();
            let Some(m) = re.find(stdout) else {
                return Err(
                    r.failure(format!("`{command}` printed {stdout:?}, which does not match `{pattern}`"))
                );
            };
            recorded = Some(m.as_str().to_string());
        }
        r.drain(None);
        r.record(Event::Command { command, status: out.status, stdout: recorded });
        Ok(())
    }
}
