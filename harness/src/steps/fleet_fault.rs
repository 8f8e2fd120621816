//! `fleet_fault`: A fault of a `[fleet]`'s reboot coordination: etcd down
//! (killed; its data kept) and up again, a slow lock server (every answer
//! `seconds` late; 0 ends it), or the operator freeing the reboot slot a
//! dead machine still holds (`release`; the step fails if that machine
//! held none, so the slot staying taken is asserted).

use super::prelude::*;
use crate::scenario::FleetSpec;

/// Which fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetFaultKind {
    EtcdDown,
    EtcdUp,
    SlowLock,
    Release,
}

/// A fault of the fleet's reboot coordination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFault {
    pub fault: FleetFaultKind,
    /// `slow_lock`: how late every answer is (0: on time again).
    #[serde(default)]
    pub seconds: Option<u64>,
    /// `release`: the machine whose slot the operator frees.
    #[serde(default)]
    pub machine: Option<String>,
}

impl StepKind for FleetFault {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if cx.scenario.fleet.is_none() {
            return Err(cx.at("action", "fleet_fault needs a [fleet] table"));
        }
        match (self.fault, &self.seconds, &self.machine) {
            (FleetFaultKind::SlowLock, None, _) => Err(cx.at("fault", "slow_lock needs `seconds`")),
            (FleetFaultKind::Release, _, None) => Err(cx.at("fault", "release needs the `machine` whose slot it frees")),
            (FleetFaultKind::Release, _, Some(m)) => match FleetSpec::refuse_machines(&cx.scenario.machines, [m]) {
                Some(msg) => Err(cx.at("machine", msg)),
                None => Ok(()),
            },
            (FleetFaultKind::SlowLock, Some(s), _) if *s > 60 => {
                Err(cx.at("seconds", "at most 60 s (an agent gives up on a request after 15 s)"))
            }
            (_, Some(_), _) if self.fault != FleetFaultKind::SlowLock => {
                Err(cx.at("seconds", "`seconds` is for slow_lock only"))
            }
            (_, _, Some(_)) => Err(cx.at("machine", "`machine` is for release only")),
            _ => Ok(()),
        }
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let lab = r.fleet.clone().ok_or_else(|| Error::infra("the fleet's lock server is not running"))?;
        let (kind, target) = match self.fault {
            FleetFaultKind::EtcdDown => {
                lab.etcd.lock().await.stop();
                ("etcd_down", "etcd".to_string())
            }
            FleetFaultKind::EtcdUp => {
                let started = lab.etcd.lock().await.start_again().await;
                started.map_err(|e| Error::infra(e.to_string()))?;
                ("etcd_up", "etcd".to_string())
            }
            FleetFaultKind::SlowLock => {
                let s = self.seconds.unwrap_or_default();
                lab.lock.set_delay(Duration::from_secs(s));
                ("slow_lock", format!("{s}s"))
            }
            FleetFaultKind::Release => {
                let m = self.machine.clone().unwrap_or_default();
                let held = lab.lock.release(crate::fleet::LOCK_GROUP, &m).await;
                let held = held.map_err(|e| r.failure(format!("releasing {m}'s reboot slot: {}", e.value)))?;
                if !held {
                    return Err(r.failure(format!("{m} held no reboot slot to release")));
                }
                ("slot_released", m)
            }
        };
        r.record(Event::Fault { kind: kind.into(), target });
        Ok(())
    }
}
