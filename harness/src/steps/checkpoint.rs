//! `checkpoint`: Save the machine here (RAM, devices and disk) so a later run of the same steps on the same image, board, firmware and QEMU starts from it instead of repeating them. At most one per scenario, not after a serial login.

use super::prelude::*;

/// Save the machine here (RAM, devices and disk) so a later run of the same
/// steps on the same image, board, firmware and QEMU starts from it instead
/// of repeating them. At most one per scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub name: String,
}

impl StepKind for Checkpoint {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        if cx.checkpoint_seen {
            return Err(cx.at("action", "only one checkpoint per scenario"));
        }
        if cx.logins.contains(&crate::device::Via::Serial) {
            return Err(cx.at(
                "action",
                "a checkpoint saves the machine, not the serial shell's login: log in over serial after it",
            ));
        }
        if cx.disk_errors_seen {
            return Err(cx.at("action", "a checkpoint cannot follow disk_errors (blkdebug disks are not saved)"));
        }
        let plain = !self.name.is_empty() && self.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch));
        if !plain {
            return Err(cx.at("name", format!("checkpoint name {:?} is not a plain name", self.name)));
        }
        cx.checkpoint_seen = true;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, placed: &PlacedStep) -> Result<()> {
        if !r.checkpoints {
            // Checkpoints off: the same event, so timelines compare equal.
            r.drain(None);
            r.record(Event::Checkpoint { name: self.name.clone() });
            return Ok(());
        }
        let index = r.scenario.steps.iter().position(|p| std::ptr::eq(p, placed)).unwrap_or_default();
        r.save_checkpoint(&self.name, index).await
    }
}
