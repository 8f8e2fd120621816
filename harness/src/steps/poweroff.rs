//! `poweroff`: Power off from inside the guest and wait for QEMU to exit.

use super::prelude::*;

/// Power off from inside the guest and wait for QEMU to exit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poweroff {
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

impl StepKind for Poweroff {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()?;
        cx.power = Power::Off;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let p = self;
        // busybox `poweroff` signals init and returns; the session may drop.
        let _ = r.ssh()?.exec("poweroff", Duration::from_secs(10)).await;
        if let Some(s) = r.ssh.as_ref() {
            s.disconnect();
        }
        let timeout = p.timeout.0;
        let m = r.machine.as_mut().expect("checked by ssh()");
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
