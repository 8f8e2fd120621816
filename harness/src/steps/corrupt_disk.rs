//! `corrupt_disk`: Overwrite bytes of a partition on the powered-off disk (a fault: a torn or bit-rotted write). The machine must be off.

use super::prelude::*;

/// Overwrite bytes of a partition on the powered-off disk (a fault: a torn
/// or bit-rotted write). The machine must be off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptDisk {
    /// GPT partition label, e.g. `uboot-env-a`.
    pub partition: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default = "sixteen")]
    pub length: u64,
    /// The byte written over the range.
    #[serde(default = "ff")]
    pub byte: u8,
}

fn sixteen() -> u64 {
    16
}
fn ff() -> u8 {
    0xff
}

impl StepKind for CorruptDisk {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_off()?;
        self.check_args(cx)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let c = self;
        if r.machine_running() {
            return Err(
                r.failure("corrupt_disk needs the machine off (add poweroff or power_cut first)".into())
            );
        }
        let overlay = r.overlay()?;
        let (manifest, partition, offset, length, byte) =
            (r.image.manifest.clone(), c.partition.clone(), c.offset, c.length, c.byte);
        blocking(move || crate::disk::corrupt(&overlay, &manifest, &partition, offset, length, byte)).await?;
        r.record(self.event());
        Ok(())
    }
}

impl CorruptDisk {
    /// The arguments' check (the step's, and an armed fault's).
    pub(crate) fn check_args(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.partition("partition", &self.partition)?;
        if self.length == 0 {
            return Err(cx.at("length", "length must be at least 1 byte"));
        }
        Ok(())
    }

    /// The disk offset the bytes start at on this run's disk (a running
    /// machine's: an armed fault writes through its device).
    pub(crate) fn disk_offset(&self, r: &Run<'_>) -> Result<u64> {
        let part = r.image.manifest.partitions.iter().find(|p| p.label == self.partition);
        let Some(part) = part else {
            return Err(r.failure(format!("no partition `{}` on this disk", self.partition)));
        };
        if self.offset.saturating_add(self.length) > part.size {
            return Err(r.failure(format!(
                "{} bytes at {} run past partition `{}` ({} bytes)",
                self.length, self.offset, self.partition, part.size
            )));
        }
        Ok(part.start + self.offset)
    }

    /// What the timeline records.
    pub(crate) fn event(&self) -> Event {
        Event::Fault { kind: "corrupt_disk".into(), target: self.partition.clone() }
    }
}
