//! `wait_qmp`: Wait for a QMP event (`WATCHDOG`, `RESET`, `BLOCK_IO_ERROR`, ...) that arrived after the previous step ended.

use super::prelude::*;

/// Wait for a QMP event (`WATCHDOG`, `RESET`, `BLOCK_IO_ERROR`, ...) that
/// arrived after the previous step ended.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQmp {
    pub event: String,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

/// The QMP events QEMU emits for a machine like ours (QEMU's `qapi`
/// schema); a name outside the list would never arrive.
pub const QMP_EVENTS: &[&str] = &[
    "SHUTDOWN",
    "POWERDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "SUSPEND",
    "SUSPEND_DISK",
    "WAKEUP",
    "WATCHDOG",
    "GUEST_PANICKED",
    "GUEST_CRASHLOADED",
    "BLOCK_IO_ERROR",
    "BLOCK_IMAGE_CORRUPTED",
    "NIC_RX_FILTER_CHANGED",
    "DEVICE_DELETED",
    "RTC_CHANGE",
    "MEMORY_FAILURE",
    "VSERPORT_CHANGE",
];

impl StepKind for WaitQmp {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        if !QMP_EVENTS.contains(&self.event.as_str()) {
            return Err(cx.at("event", format!("unknown QMP event `{}` (one of {})", self.event, QMP_EVENTS.join(", "))));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let w = self;
        let from = r.qmp_cursor;
        let m = r.machine()?;
        let got = m.qmp()?.wait_event(&[w.event.as_str()], from, w.timeout.0).await;
        got.map_err(|e| r.failure(format!("waiting for QMP event {}: {e}", w.event)))?;
        r.drain(None);
        Ok(())
    }
}
