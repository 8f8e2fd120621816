//! `assert_fleet`: What the fleet did, read from every machine's own
//! timeline (its agent's `devlab-fleet:` markers), never from the servers'
//! records: at most `max_rebooting` machines held a reboot slot at one
//! moment (and some did); the machines that updated to `version`, rolled
//! back from it, or were never offered anything; the version each machine's
//! agent last started on.

use super::prelude::*;
use crate::fleet::{most_rebooting_at_once, NodeView};
use crate::scenario::FleetSpec;

/// Whether a machine's story holds for a version.
type Holds = fn(&NodeView, &str) -> bool;

/// Assert the fleet's story from the machines' timelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertFleet {
    #[serde(default)]
    pub max_rebooting: Option<u32>,
    /// The version `updated` and `rolled_back` are about.
    #[serde(default)]
    pub version: Option<String>,
    /// These machines updated to `version` and reported it running.
    #[serde(default)]
    pub updated: Vec<String>,
    /// These machines' update to `version` failed (rolled back).
    #[serde(default)]
    pub rolled_back: Vec<String>,
    /// These machines were never offered a version.
    #[serde(default)]
    pub untouched: Vec<String>,
    /// The version each of these machines' agent last started on.
    #[serde(default)]
    pub runs: BTreeMap<String, String>,
}

impl StepKind for AssertFleet {
    fn lab(&self) -> bool {
        true
    }

    fn reads_machines(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if cx.scenario.fleet.is_none() {
            return Err(cx.at("action", "assert_fleet needs a [fleet] table"));
        }
        let lists = [("updated", &self.updated), ("rolled_back", &self.rolled_back), ("untouched", &self.untouched)];
        let runs: Vec<String> = self.runs.keys().cloned().collect();
        for (field, list) in lists.into_iter().chain([("runs", &runs)]) {
            if let Some(msg) = FleetSpec::refuse_machines(&cx.scenario.machines, list) {
                return Err(cx.at(field, msg));
            }
        }
        if self.version.is_none() && !(self.updated.is_empty() && self.rolled_back.is_empty()) {
            return Err(cx.at("action", "`updated` and `rolled_back` need the `version` they are about"));
        }
        let nothing = self.max_rebooting.is_none() && self.runs.is_empty() && self.untouched.is_empty();
        if nothing && self.updated.is_empty() && self.rolled_back.is_empty() {
            return Err(cx.at("action", "assert_fleet asserts nothing: give max_rebooting, updated, rolled_back, untouched or runs"));
        }
        if self.max_rebooting == Some(0) {
            return Err(cx.at("max_rebooting", "at most 0 rebooting would be a fleet that never updates"));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let views: BTreeMap<String, NodeView> =
            std::mem::take(&mut r.machine_views).into_iter().map(|(n, e)| (n, NodeView::of(&e))).collect();
        let view = |n: &String| views.get(n).cloned().unwrap_or_default();
        let mut wrong = Vec::new();
        let mut found = Vec::new();
        if let Some(most) = self.max_rebooting {
            let seen = most_rebooting_at_once(views.values().flat_map(|v| v.slot_held.iter()));
            if seen == 0 || seen > most as usize {
                wrong.push(format!("{seen} machine(s) held a reboot slot at once, expected 1 to {most}"));
            }
            found.push(format!("at most {most} rebooting at once"));
        }
        let version = self.version.clone().unwrap_or_default();
        let checks: [(&Vec<String>, &str, Holds); 3] = [
            (&self.updated, "updated to", |v, ver| v.updated.iter().any(|u| u == ver)),
            (&self.rolled_back, "rolled back from", |v, ver| v.failed.iter().any(|u| u == ver)),
            (&self.untouched, "untouched by", |v, _| v.offered.is_empty()),
        ];
        for (list, what, holds) in checks {
            let ver = if what == "untouched by" { "any release" } else { version.as_str() };
            for n in list {
                if !holds(&view(n), &version) {
                    wrong.push(format!("{n} was not {what} {ver}"));
                }
            }
            if !list.is_empty() {
                found.push(format!("{} {what} {ver}", list.join(" ")));
            }
        }
        for (n, want) in &self.runs {
            match view(n).runs {
                Some(v) if &v == want => {}
                got => wrong.push(format!("{n} runs {}, expected {want}", got.as_deref().unwrap_or("nothing known"))),
            }
        }
        if !self.runs.is_empty() {
            found.push(self.runs.iter().map(|(n, v)| format!("{n} runs {v}")).collect::<Vec<_>>().join(", "));
        }
        if !wrong.is_empty() {
            return Err(r.failure(format!("the fleet's timelines say: {}", wrong.join("; "))));
        }
        r.record(Event::FleetAsserted { detail: found.join("; ") });
        Ok(())
    }
}
