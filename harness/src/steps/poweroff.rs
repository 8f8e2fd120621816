//! `poweroff`: Power off from inside the guest (the system's `/sbin/poweroff`) and wait for QEMU to exit.

use super::prelude::*;

/// Power off from inside the guest and wait for QEMU to exit (a device:
/// over its command transport, as `reboot`). Over SSH the command is
/// [`SYSTEM_POWEROFF`]: the system's `/sbin/poweroff` by path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poweroff {
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

impl StepKind for Poweroff {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(None)?;
        cx.power = Power::Off;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let p = self;
        match r.via(None) {
            crate::device::Via::Ssh => {
                // `poweroff` signals init and returns; the session may drop.
                let _ = r.ssh()?.exec(SYSTEM_POWEROFF, Duration::from_secs(10)).await;
                if let Some(s) = r.ssh.as_ref() {
                    s.disconnect();
                }
            }
            crate::device::Via::Serial => {
                // The shell goes away with the machine: nothing to read back.
                let (shell, console) = r.serial_shell()?;
                shell.send_only(console, "poweroff").await.map_err(|e| r.serial_failure(e))?;
                r.serial = None;
            }
        }
        let timeout = p.timeout.0;
        let m = r.machine.as_mut().expect("checked by the login");
        if m.wait_exit(timeout).await.is_none() {
            return Err(r.failure(format!(
                "QEMU did not exit within {} of `poweroff`",
                humantime::format_duration(timeout)
            )));
        }
        r.qmp_read_to_end().await;
        r.drain(None);
        r.record(Event::PoweredOff);
        Ok(())
    }
}
