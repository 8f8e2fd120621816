//! `disk_errors`: Give the disk a bad spot (QEMU blkdebug) from the next power-on on: requests of `iotype` touching byte `offset` of `partition` fail with `errno`. The machine must be off (the disk is configured at power-on).

use super::prelude::*;

/// Give the disk a bad spot (QEMU blkdebug) from the next power-on on:
/// requests of `iotype` touching byte `offset` of `partition` fail with
/// `errno`. The machine must be off (the disk is configured at power-on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskErrors {
    /// GPT partition label, e.g. `rootfs-b`.
    pub partition: String,
    /// Bytes into the partition (default 1 MiB).
    #[serde(default = "one_mib")]
    pub offset: u64,
    #[serde(default = "write_io")]
    pub iotype: crate::board::IoType,
    #[serde(default = "eio")]
    pub errno: crate::board::Errno,
}

fn one_mib() -> u64 {
    1 << 20
}
fn write_io() -> crate::board::IoType {
    crate::board::IoType::Write
}
fn eio() -> crate::board::Errno {
    crate::board::Errno::EIO
}

impl StepKind for DiskErrors {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need(&[Power::Never, Power::Off], "configures the disk for the next power-on, so it needs the machine off")?;
        self.check_args(cx)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        if r.machine_running() {
            return Err(r.failure("disk_errors needs the machine off (power it off first)".into()));
        }
        let spot = self.resolve(r)?;
        r.disk_errors.push(spot);
        r.record(self.event());
        Ok(())
    }
}

impl DiskErrors {
    /// The arguments' check (the step's, and an armed fault's).
    pub(crate) fn check_args(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.partition("partition", &self.partition)?;
        cx.disk_errors_seen = true;
        Ok(())
    }

    /// The bad spot on this run's disk.
    pub(crate) fn resolve(&self, r: &Run<'_>) -> Result<crate::board::DiskError> {
        let d = self;
        let part = r.image.manifest.partitions.iter().find(|p| p.label == d.partition);
        let Some(part) = part else {
            let labels: Vec<&str> = r.image.manifest.partitions.iter().map(|p| p.label.as_str()).collect();
            return Err(r.failure(format!(
                "no partition `{}` on this disk (it has: {})",
                d.partition,
                labels.join(", ")
            )));
        };
        if d.offset >= part.size {
            return Err(r.failure(format!(
                "offset {} is beyond partition `{}` ({} bytes)",
                d.offset, d.partition, part.size
            )));
        }
        Ok(crate::board::DiskError { offset: part.start + d.offset, iotype: d.iotype, errno: d.errno })
    }

    /// What the timeline records.
    pub(crate) fn event(&self) -> Event {
        let io = if self.iotype == crate::board::IoType::Read { "read" } else { "write" };
        Event::Fault { kind: format!("disk {io} errors ({:?})", self.errno), target: self.partition.clone() }
    }
}
