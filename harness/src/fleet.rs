//! A run's fleet (`[fleet]`): the real etcd and the FleetLock server the
//! machines' agents take reboot slots from, started with the run and shared
//! by its machines; the update server's channels come from the same table.
//! Also what the fleet steps read back from the machines' own timelines:
//! the `devlab-fleet:` markers of the reference images' agent
//! (`fixtures/rootfs/usr/sbin/devlab-fleet`).
//!
//! Invariants: one etcd per run, its data dir removed and its process
//! killed when the lab is dropped (the harness's SIGKILL included, by
//! PDEATHSIG and the next start's sweep, see [`crate::etcd`]); nothing here
//! asserts from the servers' own records: [`Reboots`] and [`NodeView`] are
//! built from console events only.
use crate::etcd::Etcd;
use crate::fleetlock::FleetLock;
use crate::timeline::{Entry, Event};
use std::path::Path;

/// The FleetLock group every agent uses (Zincati's default group): one
/// reboot semaphore for the whole fleet, whatever the channels.
pub const LOCK_GROUP: &str = "default";

/// The lab side of a fleet.
pub struct FleetLab {
    /// Stopped and started again by `fleet_fault` (etcd down).
    pub etcd: tokio::sync::Mutex<Etcd>,
    pub lock: FleetLock,
}

impl FleetLab {
    /// etcd (its log in `lab_dir/etcd.log`) and the lock service on
    /// 127.0.0.1 (the guests' 10.0.2.2), `slots` reboot slots.
    pub async fn start(lab_dir: &Path, slots: u32) -> Result<FleetLab, String> {
        let etcd = Etcd::start(&lab_dir.join("etcd.log")).await.map_err(|e| e.to_string())?;
        let lock = FleetLock::start("127.0.0.1:0", slots, etcd.client(), &lab_dir.join("fleetlock.log"))
            .await
            .map_err(|e| format!("starting the FleetLock server: {e}"))?;
        Ok(FleetLab { etcd: tokio::sync::Mutex::new(etcd), lock })
    }

    /// The lock server's URL as a guest on user-mode networking sees it.
    pub fn guest_url(&self) -> String {
        format!("http://10.0.2.2:{}", self.lock.addr().port())
    }
}

/// A machine's fleet story, read from its timeline's `devlab-fleet:`
/// markers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeView {
    /// Versions it was offered, in order.
    pub offered: Vec<String>,
    /// Versions it reported running after an update.
    pub updated: Vec<String>,
    /// Versions whose update it reported failed (rolled back or unhealthy).
    pub failed: Vec<String>,
    /// The version its agent last started on.
    pub runs: Option<String>,
    /// When it held a reboot slot: (took, gave back or `None`: still holds).
    pub slot_held: Vec<(f64, Option<f64>)>,
}

/// The agent's line of a `fleet` event.
fn fleet_line(e: &Entry) -> Option<&str> {
    match &e.event {
        Event::Fleet { what } => Some(what),
        _ => None,
    }
}

impl NodeView {
    pub fn of(entries: &[Entry]) -> NodeView {
        let mut v = NodeView::default();
        let word = |s: &str, n: usize| s.split(' ').nth(n).unwrap_or_default().to_string();
        for e in entries {
            let Some(line) = fleet_line(e) else { continue };
            if let Some(rest) = line.strip_prefix("offered ") {
                v.offered.push(word(rest, 0));
            } else if let Some(rest) = line.strip_prefix("reported ") {
                let list = if rest.ends_with(" ok") { &mut v.updated } else { &mut v.failed };
                list.push(word(rest, 0));
            } else if let Some(rest) = line.strip_prefix("started: runs ") {
                v.runs = Some(word(rest, 0));
            } else if line.starts_with("took a reboot slot") {
                v.slot_held.push((e.t, None));
            } else if line.starts_with("steady: holds no reboot slot") || line.starts_with("gave back the reboot slot")
            {
                // Locks are recursive: one give-back ends every take before it.
                for open in v.slot_held.iter_mut().filter(|(_, end)| end.is_none()) {
                    open.1 = Some(e.t);
                }
            }
        }
        v
    }
}

/// The most machines holding a reboot slot at one moment, from each
/// machine's (took, gave back) intervals; one still held counts to the end.
pub fn most_rebooting_at_once<'a>(held: impl IntoIterator<Item = &'a (f64, Option<f64>)>) -> usize {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for (from, to) in held {
        edges.push((*from, 1));
        edges.push((to.unwrap_or(f64::INFINITY), -1));
    }
    // At one instant a give-back comes before a take.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Origin;

    fn mark(t: f64, what: &str) -> Entry {
        Entry { t, origin: Origin::Console, event: Event::Fleet { what: what.into() }, node: None }
    }

    #[test]
    fn a_node_story_comes_from_its_markers() {
        let v = NodeView::of(&[
            mark(1.0, "started: runs 1 on channel stable"),
            mark(1.5, "steady: holds no reboot slot"),
            mark(2.0, "offered 2 (wave 1)"),
            mark(3.0, "took a reboot slot for 2"),
            mark(9.0, "started: runs 2 on channel stable"),
            mark(9.5, "reported 2 ok"),
            mark(10.0, "steady: holds no reboot slot"),
        ]);
        assert_eq!(v.offered, ["2"]);
        assert_eq!(v.updated, ["2"]);
        assert!(v.failed.is_empty());
        assert_eq!(v.runs.as_deref(), Some("2"));
        assert_eq!(v.slot_held, [(3.0, Some(10.0))]);
    }

    #[test]
    fn overlapping_slots_are_counted_and_touching_ones_are_not() {
        let held = [(0.0, Some(5.0)), (1.0, Some(4.0)), (5.0, Some(6.0)), (7.0, None)];
        assert_eq!(most_rebooting_at_once(&held), 2);
        assert_eq!(most_rebooting_at_once(&[(0.0, Some(1.0)), (1.0, Some(2.0))]), 1);
        assert_eq!(most_rebooting_at_once(&[(0.0, None), (1.0, None), (2.0, None)]), 3);
        assert_eq!(most_rebooting_at_once(&[]), 0);
    }
}
