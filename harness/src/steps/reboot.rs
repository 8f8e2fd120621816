//! `reboot`: Reboot the machine from inside (its own reboot command) and wait until the board really resets.

use super::prelude::*;
use crate::device::Via;

/// Reboot the machine from inside, over its command transport, and wait
/// for the board's reset (QMP `RESET`), so that the next `login` waits for
/// the new boot: a command that only starts a shutdown returns while the
/// old system still answers (its getty, its sshd).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reboot {
    #[serde(default = "default_reboot")]
    pub command: String,
    #[serde(default)]
    pub via: Option<Via>,
    #[serde(default = "default_reboot_timeout")]
    pub timeout: Dur,
}

fn default_reboot() -> String {
    "reboot".into()
}

fn default_reboot_timeout() -> Dur {
    Dur(Duration::from_secs(120))
}

impl StepKind for Reboot {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(self.via)?;
        cx.power = Power::On;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let from = r.machine()?.qmp_events().len();
        let console_from = r.machine()?.console.len();
        // Recorded as it is sent: nothing of the next boot can come before
        // it in the timeline (the command may answer after the reset).
        r.drain(None);
        r.record(Event::Command { command: self.command.clone(), status: 0, stdout: None });
        match r.via(self.via) {
            Via::Ssh => {
                // The session may drop before the command answers: the
                // reset below is what proves the reboot.
                let _ = r.ssh()?.exec(&self.command, Duration::from_secs(15)).await;
            }
            Via::Serial => {
                let (shell, console) = r.serial_shell()?;
                let sent = shell.send_only(console, &self.command).await;
                sent.map_err(|e| r.serial_failure(e))?;
            }
        }
        let m = r.machine()?;
        let got = match &m.qmp {
            Some(qmp) => qmp.wait_event(&["RESET"], from, self.timeout.0).await.map(drop).map_err(|e| e.to_string()),
            // An external board's reset is its firmware starting again.
            None => {
                let banner = regex::bytes::Regex::new(&regex::escape(&m.board.firmware_marker())).expect("escaped");
                m.console.seen_after(&banner, console_from, self.timeout.0).await.map(drop).map_err(|e| e.to_string())
            }
        };
        got.map_err(|e| r.failure(format!("`{}` did not reset the board: {e}", self.command)))?;
        r.forget_sessions();
        r.drain(None);
        Ok(())
    }
}
