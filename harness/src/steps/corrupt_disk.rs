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
        if !cx.disk_labels.contains(&self.partition.as_str()) {
            let labels = cx.disk_labels.join(", ");
            return Err(cx.at("partition", format!("no partition `{}` (the disk has: {labels})", self.partition)));
        }
        if self.length == 0 {
            return Err(cx.at("length", "length must be at least 1 byte"));
        }
        Ok(())
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
        r.record(Event::Fault { kind: "corrupt_disk".into(), target: c.partition.clone() });
        Ok(())
    }
}
