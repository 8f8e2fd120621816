//! `ssh`: Run a command on the machine (over SSH, or a device's serial shell) and check its status and output.

use super::prelude::*;
use crate::runner::{CutAt, OutageEnd, OutageStart};

/// Run a command on the machine and check its status and output: over
/// SSH, or over the serial shell (`via = "serial"`, or a device whose
/// profile makes it the default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRun {
    pub command: String,
    /// `ssh` or `serial` (default: the device's `[login] default`, else SSH).
    #[serde(default)]
    pub via: Option<crate::device::Via>,
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
    /// Cut the power when the command's own standard output matches (e.g.
    /// an update tool's "Copying image to rootfs.1" while it writes a slot).
    #[serde(default)]
    pub power_cut_on_output: Option<Pattern>,
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

impl SshRun {
    /// Its fault triggers, by key, and whether each is set.
    fn triggers(&self) -> [(&'static str, bool); 4] {
        [
            ("power_cut_at", self.power_cut_at.is_some()),
            ("power_cut_on_request", self.power_cut_on_request.is_some()),
            ("power_cut_on_output", self.power_cut_on_output.is_some()),
            ("link_drop", self.link_drop.is_some()),
        ]
    }
}

impl StepKind for SshRun {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(self.via)?;
        if cx.resolved_via(self.via) == Some(crate::device::Via::Serial) {
            if cx.scenario.device.as_ref().is_none_or(|d| d.serial.is_none()) {
                return Err(cx.at("via", "a serial shell needs a device profile with [login.serial]"));
            }
            if self.link_drop.is_some() {
                let msg = "link_drop runs the command over SSH (a power cut trigger works over the serial shell)";
                return Err(cx.at("via", msg));
            }
        }
        let set: Vec<&str> = self.triggers().iter().filter(|(_, set)| *set).map(|(k, _)| *k).collect();
        if set.len() > 1 {
            let msg = "set one of power_cut_at, power_cut_on_request, power_cut_on_output and link_drop";
            return Err(cx.at(set[1], msg));
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
        if self.power_cut_at.is_some() || self.power_cut_on_request.is_some() || self.power_cut_on_output.is_some() {
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
        let via = r.via(s.via);
        if let Some(p) = &s.power_cut_at {
            let re = r.console_pattern(p);
            return r.exec_until_power_cut(&command, s.timeout.0, CutAt::Console(re), via).await;
        }
        if let Some(p) = &s.power_cut_on_request {
            let re = r.text_pattern(p);
            return r.exec_until_power_cut(&command, s.timeout.0, CutAt::Request(re), via).await;
        }
        if let Some(p) = &s.power_cut_on_output {
            let re = r.text_pattern(p);
            return r.exec_until_power_cut(&command, s.timeout.0, CutAt::Output(re), via).await;
        }
        let out = match &s.link_drop {
            Some(drop) => {
                let re = r.text_pattern(&drop.on_request);
                let end = OutageEnd::After(Duration::from_secs(drop.seconds));
                r.exec_with_link_outage(&command, s.timeout.0, OutageStart::Request(re), end).await?
            }
            None => r.exec_via(&command, s.timeout.0, via).await?,
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
