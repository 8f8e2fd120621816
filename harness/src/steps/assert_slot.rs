//! `assert_slot`: The slot the guest booted (kernel command line `devlab.slot=`, or a device's `slot` fact).

use super::prelude::*;

/// The slot the guest booted (kernel command line `devlab.slot=`, or a
/// device's `slot` fact).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertSlot {
    pub slot: SlotName,
}

/// A slot's name: `A` or `B` on devlab's images, the device's own names
/// (its `slot` fact's values) on a device.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SlotName(pub String);

impl std::fmt::Debug for SlotName {
    /// Bare, as the slot enum it replaced printed (`A`): parsed steps read alike.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}


impl StepKind for AssertSlot {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(None)?;
        match cx.scenario.device.as_ref() {
            Some(d) if d.facts.slot.is_none() => {
                Err(cx.at("action", format!("device `{}` has no `slot` fact to read ([facts] slot)", d.name)))
            }
            Some(_) => Ok(()),
            None if !matches!(self.slot.0.as_str(), "A" | "B") => {
                Err(cx.at("slot", format!("`{}`: devlab's images have slots A and B", self.slot.0)))
            }
            None => Ok(()),
        }
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        if let Some(fact) = r.scenario.device.as_ref().and_then(|d| d.facts.slot.clone()) {
            let slot = r.read_fact(&fact).await?;
            if slot != a.slot.0 {
                return Err(r.failure(format!("booted slot {slot}, expected {} (fact `slot`, {})", a.slot.0, fact.origin)));
            }
            r.drain(None);
            r.record(Event::SlotBooted { slot });
            return Ok(());
        }
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
        if slot != a.slot.0 {
            return Err(r.failure(format!("booted slot {slot}, expected {}", a.slot.0)));
        }
        r.drain(None);
        r.record(Event::SlotBooted { slot });
        Ok(())
    }
}
