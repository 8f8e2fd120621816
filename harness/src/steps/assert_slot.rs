//! `assert_slot`: The slot the guest booted (kernel command line `devlab.slot=`).

use super::prelude::*;

/// The slot the guest booted (kernel command line `devlab.slot=`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertSlot {
    pub slot: Slot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

impl StepKind for AssertSlot {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        let out = r
            .ssh()?
            .exec("cat /proc/cmdline", Duration::from_secs(30))
            .await
            .map_err(|e| r.failure(e.to_string()))?;
        let slot = out
            .stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("devlab.slot="))
            .map(str::to_string)
            .ok_or_else(|| {
                r.failure(format!("no devlab.slot= on the kernel command line: {:?}", out.stdout.trim()))
            })?;
        if slot != a.slot.as_str() {
            return Err(r.failure(format!("booted slot {slot}, expected {}", a.slot.as_str())));
        }
        r.drain(None);
        r.record(Event::SlotBooted { slot });
        Ok(())
    }
}
