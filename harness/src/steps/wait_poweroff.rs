//! `wait_poweroff`: Wait for the guest to power the machine off by itself.

use super::prelude::*;

/// Wait for the guest to power the machine off by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitPoweroff {
    #[serde(default = "default_boot_timeout")]
    pub timeout: Dur,
}

impl StepKind for WaitPoweroff {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need(&[Power::On, Power::Ssh, Power::Off], "waits for the guest to power off")?;
        cx.power = Power::Off;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let w = self;
        let timeout = w.timeout.0;
        // A machine that is already off (it powered off while the
        // last step ran) passes at once.
        let Some(m) = r.machine.as_mut() else {
            return Err(r.failure("the machine was never powered on".into()));
        };
        if m.wait_exit(timeout).await.is_none() {
            return Err(r.failure(format!(
                "the guest did not power off within {}",
                humantime::format_duration(timeout)
            )));
        }
        r.forget_sessions();
        r.qmp_read_to_end().await;
        r.drain(None);
        r.record(Event::PoweredOff);
        Ok(())
    }
}
