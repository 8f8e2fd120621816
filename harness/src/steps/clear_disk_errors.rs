//! `clear_disk_errors`: Remove every injected disk error from the next power-on on.

use super::prelude::*;

/// Remove every injected disk error from the next power-on on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearDiskErrors {}

impl StepKind for ClearDiskErrors {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need(&[Power::Never, Power::Off], "configures the disk for the next power-on, so it needs the machine off")
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        if r.machine_running() {
            return Err(r.failure("clear_disk_errors needs the machine off (power it off first)".into()));
        }
        r.disk_errors.clear();
        r.record(Event::Fault { kind: "disk errors cleared".into(), target: "disk".into() });
        Ok(())
    }
}
