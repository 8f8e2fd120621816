//! Release channels and staged rollouts: what the update server answers a
//! device that checks in with its id, channel, arch and running version.
//!
//! A channel (`stable`, `beta`, any name) has at most one target: a version
//! rolled out in waves. Waves are shares of the fleet (percentages; a
//! device's place is a stable hash of its id, so the same device is always
//! in the same wave) or named groups of device ids. Waves open one after the
//! other: by the operator (`advance`) or, with `auto_advance`, once every
//! device of the open waves that has checked in runs the target. A device
//! reporting a failed update (rolled back, failed health check) counts
//! against its wave; `halt_after` failures in one wave halt the rollout:
//! nobody is offered the target any more, not even the open waves' devices
//! that have not taken it yet. Pause, resume and abort are the operator's.
//! The target may be lower than what devices run (a version down): a device
//! is offered the target whenever it runs anything else.
//!
//! Invariants: pure (no I/O, no clock but the one passed in); every
//! check-in, report and operator action is one [`Decision`], in order;
//! a rollout's waves are validated when it is made (shares 1–100 summing to
//! at most 100, or groups naming each device once), never while it runs.
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// One wave of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Wave {
    /// This many percent of the fleet (by the hash of the device id).
    Share(u32),
    /// These devices.
    Devices(Vec<String>),
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    Rolling,
    Paused,
    Aborted,
    /// `failures` failed updates in wave `wave` (0-based) stopped it.
    Halted {
        wave: usize,
        failures: u32,
    },
}

/// A version rolled out on a channel.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub version: String,
    waves: Vec<Wave>,
    /// How many waves are open (at least one).
    open: usize,
    pub state: State,
    halt_after: u32,
    auto_advance: bool,
    failures: Vec<u32>,
}

impl Rollout {
    /// A rollout of `version` in `waves`; halted after `halt_after` failed
    /// updates in one wave. Errors name what is wrong with the waves.
    pub fn new(version: &str, waves: Vec<Wave>, halt_after: u32, auto_advance: bool) -> Result<Rollout, String> {
        if waves.is_empty() {
            return Err("a rollout needs at least one wave".into());
        }
        if halt_after == 0 {
            return Err("halt_after must be at least 1 (failed updates in one wave)".into());
        }
        let shares: Vec<u32> =
            waves.iter().filter_map(|w| if let Wave::Share(p) = w { Some(*p) } else { None }).collect();
        if !shares.is_empty() && shares.len() != waves.len() {
            return Err("waves are either all percentages or all named groups".into());
        }
        if let Some(p) = shares.iter().find(|&&p| p == 0 || p > 100) {
            return Err(format!("a wave of {p} %: each wave is 1 to 100 %"));
        }
        let total: u32 = shares.iter().sum();
        if total > 100 {
            return Err(format!("waves sum to {total} %, over 100 %"));
        }
        let mut seen = BTreeSet::new();
        for w in &waves {
            if let Wave::Devices(ids) = w {
                if ids.is_empty() {
                    return Err("a named wave with no devices".into());
                }
                if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
                    return Err(format!("device {dup} is in two waves"));
                }
            }
        }
        let n = waves.len();
        Ok(Rollout {
            version: version.into(),
            waves,
            open: 1,
            state: State::Rolling,
            halt_after,
            auto_advance,
            failures: vec![0; n],
        })
    }

    /// Everyone at once: one wave of 100 %.
    pub fn everyone(version: &str) -> Rollout {
        Rollout::new(version, vec![Wave::Share(100)], u32::MAX, false).expect("valid")
    }

    /// The wave `id` belongs to, if any (0-based).
    pub fn wave_of(&self, channel: &str, id: &str) -> Option<usize> {
        let mut from = 0;
        for (i, w) in self.waves.iter().enumerate() {
            match w {
                Wave::Devices(ids) if ids.iter().any(|d| d == id) => return Some(i),
                Wave::Devices(_) => {}
                Wave::Share(p) => {
                    let b = bucket(channel, &self.version, id);
                    if (from..from + p).contains(&b) {
                        return Some(i);
                    }
                    from += p;
                }
            }
        }
        None
    }

    /// How many waves are open.
    pub fn open_waves(&self) -> usize {
        self.open
    }

    pub fn waves(&self) -> usize {
        self.waves.len()
    }
}

/// A device's stable place in 0..100 for a rollout (sha256 of channel,
/// version and id): the same device lands in the same wave every time, and
/// the next rollout shuffles the fleet again.
pub fn bucket(channel: &str, version: &str, id: &str) -> u32 {
    let h = Sha256::digest(format!("{channel}\n{version}\n{id}"));
    (u64::from_be_bytes(h[..8].try_into().unwrap()) % 100) as u32
}

/// The answer to a check-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Answer {
    /// Install this version.
    Update { version: String, wave: usize },
    /// Nothing to do: it runs the target (or the channel has none).
    None { reason: String },
}

/// What the server decided, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub t: f64,
    /// `check-in`, `report`, `publish`, `advance` (the operator's),
    /// `auto-advance` (a wave opened by itself), `pause`, `resume`,
    /// `abort`, `halt`.
    pub what: String,
    pub channel: String,
    pub id: String,
    pub detail: String,
}

/// One device as the server knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub channel: String,
    pub arch: String,
    pub version: String,
}

/// Every channel's rollout and every device that checked in.
#[derive(Debug, Default)]
pub struct Fleet {
    channels: BTreeMap<String, Option<Rollout>>,
    pub devices: BTreeMap<String, Device>,
    pub decisions: Vec<Decision>,
}

impl Fleet {
    /// A fleet with these channels (none has a target yet).
    pub fn new<'a>(channels: impl IntoIterator<Item = &'a str>) -> Fleet {
        Fleet { channels: channels.into_iter().map(|c| (c.to_string(), None)).collect(), ..Fleet::default() }
    }

    pub fn has_channel(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    pub fn rollout(&self, channel: &str) -> Option<&Rollout> {
        self.channels.get(channel).and_then(Option::as_ref)
    }

    fn log(&mut self, t: f64, what: &str, channel: &str, id: &str, detail: String) {
        self.decisions.push(Decision { t, what: what.into(), channel: channel.into(), id: id.into(), detail });
    }

    /// Makes `rollout` the channel's target (replacing any before it).
    pub fn publish(&mut self, t: f64, channel: &str, rollout: Rollout) -> Result<(), String> {
        if !self.has_channel(channel) {
            return Err(format!("unknown channel {channel}"));
        }
        let detail = format!("{} in {} wave(s)", rollout.version, rollout.waves.len());
        self.channels.insert(channel.into(), Some(rollout));
        self.log(t, "publish", channel, "", detail);
        Ok(())
    }

    /// A device checks in: what it runs, and where.
    pub fn check_in(&mut self, t: f64, id: &str, channel: &str, arch: &str, version: &str) -> Result<Answer, String> {
        if !self.has_channel(channel) {
            self.log(t, "check-in", channel, id, format!("refused: unknown channel {channel}"));
            return Err(format!("unknown channel {channel}"));
        }
        self.devices.insert(id.into(), Device { channel: channel.into(), arch: arch.into(), version: version.into() });
        self.auto_advance(t, channel);
        let none = |reason: String| Answer::None { reason };
        let answer = match self.rollout(channel) {
            None => none("no release on this channel".into()),
            Some(r) if r.version == version => none(format!("runs {version}, the target")),
            Some(r) => match (&r.state, r.wave_of(channel, id)) {
                (State::Paused, _) => none(format!("rollout of {} paused", r.version)),
                (State::Aborted, _) => none(format!("rollout of {} aborted", r.version)),
                (State::Halted { wave, .. }, _) => {
                    none(format!("rollout of {} halted in wave {}", r.version, wave + 1))
                }
                (State::Rolling, None) => none(format!("not in any wave of {}", r.version)),
                (State::Rolling, Some(w)) if w >= r.open => {
                    none(format!("wave {} of {} not open yet", w + 1, r.version))
                }
                (State::Rolling, Some(w)) => Answer::Update { version: r.version.clone(), wave: w },
            },
        };
        let detail = match &answer {
            Answer::Update { version: v, wave } => {
                format!("runs {version} ({arch}): update to {v} (wave {})", wave + 1)
            }
            Answer::None { reason } => format!("runs {version} ({arch}): {reason}"),
        };
        self.log(t, "check-in", channel, id, detail);
        Ok(answer)
    }

    /// A device says how its update went: `ok` true if it runs `version`
    /// now, false if it rolled back or failed its health check.
    pub fn report(&mut self, t: f64, id: &str, version: &str, ok: bool) -> Result<(), String> {
        let Some(dev) = self.devices.get(id).cloned() else {
            return Err(format!("device {id} never checked in"));
        };
        let channel = dev.channel.clone();
        let mut halted = None;
        if let Some(Some(r)) = self.channels.get_mut(&channel) {
            if !ok && r.version == version {
                if let Some(w) = r.wave_of(&channel, id) {
                    r.failures[w] += 1;
                    if r.failures[w] >= r.halt_after && r.state == State::Rolling {
                        r.state = State::Halted { wave: w, failures: r.failures[w] };
                        halted = Some((w, r.failures[w]));
                    }
                }
            }
        }
        if ok {
            if let Some(d) = self.devices.get_mut(id) {
                d.version = version.into();
            }
        }
        self.log(t, "report", &channel, id, format!("{} {version}", if ok { "runs" } else { "failed to run" }));
        if let Some((w, n)) = halted {
            self.log(t, "halt", &channel, "", format!("{n} failed update(s) in wave {}: rollout halted", w + 1));
        }
        self.auto_advance(t, &channel);
        Ok(())
    }

    /// Opens the next wave; false if all are open (or it is not rolling).
    pub fn advance(&mut self, t: f64, channel: &str) -> bool {
        let Some(Some(r)) = self.channels.get_mut(channel) else { return false };
        if r.state != State::Rolling || r.open >= r.waves.len() {
            return false;
        }
        r.open += 1;
        let detail = format!("wave {} open", r.open);
        self.log(t, "advance", channel, "", detail);
        true
    }

    /// Pause, resume or abort the channel's rollout (the operator).
    pub fn set_state(&mut self, t: f64, channel: &str, what: &str) -> Result<(), String> {
        let Some(Some(r)) = self.channels.get_mut(channel) else {
            return Err(format!("no rollout on channel {channel}"));
        };
        r.state = match (what, &r.state) {
            ("pause", State::Rolling) => State::Paused,
            ("resume", State::Paused) => State::Rolling,
            ("abort", State::Rolling | State::Paused | State::Halted { .. }) => State::Aborted,
            (_, now) => return Err(format!("cannot {what} a rollout that is {now:?}")),
        };
        self.log(t, what, channel, "", String::new());
        Ok(())
    }

    /// With `auto_advance`: opens the next wave while every device of the
    /// open waves that checked in on this channel runs the target.
    fn auto_advance(&mut self, t: f64, channel: &str) {
        loop {
            let Some(Some(r)) = self.channels.get(channel) else { return };
            if !r.auto_advance || r.state != State::Rolling || r.open >= r.waves.len() {
                return;
            }
            let members: Vec<&Device> = self
                .devices
                .iter()
                .filter(|(id, d)| d.channel == channel && r.wave_of(channel, id).is_some_and(|w| w < r.open))
                .map(|(_, d)| d)
                .collect();
            if members.is_empty() || members.iter().any(|d| d.version != r.version) {
                return;
            }
            self.advance(t, channel);
            if let Some(d) = self.decisions.last_mut() {
                d.what = "auto-advance".into();
            }
        }
    }

    /// The decisions from the `from`-th on that changed a rollout by
    /// themselves (a wave opened by itself, a halt): the operator's own
    /// are the steps' events, and check-ins (one per poll) are not.
    pub fn own_changes(&self, from: usize) -> Vec<Decision> {
        let own = |d: &&Decision| d.what == "auto-advance" || d.what == "halt";
        self.decisions.iter().skip(from).filter(own).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        Fleet::new(["stable", "beta"])
    }

    #[test]
    fn waves_are_validated_when_made() {
        let bad = |w: Vec<Wave>, k: u32| Rollout::new("2", w, k, false).unwrap_err();
        assert!(bad(vec![Wave::Share(60), Wave::Share(50)], 1).contains("sum to 110 %, over 100 %"));
        assert!(bad(vec![Wave::Share(0)], 1).contains("1 to 100"));
        assert!(bad(vec![], 1).contains("at least one wave"));
        assert!(bad(vec![Wave::Share(50)], 0).contains("halt_after"));
        assert!(bad(vec![Wave::Share(50), Wave::Devices(vec!["a".into()])], 1).contains("all percentages"));
        let twice = vec![Wave::Devices(vec!["a".into()]), Wave::Devices(vec!["b".into(), "a".into()])];
        assert!(bad(twice, 1).contains("device a is in two waves"));
        assert!(Rollout::new("2", vec![Wave::Share(25), Wave::Share(75)], 1, false).is_ok());
    }

    #[test]
    fn the_hash_places_devices_stably_and_by_share() {
        let r = Rollout::new("2", vec![Wave::Share(20), Wave::Share(30), Wave::Share(50)], 1, false).unwrap();
        let waves: Vec<usize> = (0..1000).map(|i| r.wave_of("stable", &format!("node-{i}")).unwrap()).collect();
        let count = |w| waves.iter().filter(|&&x| x == w).count();
        // About 20/30/50 % of 1,000 devices.
        assert!((150..250).contains(&count(0)) && (250..350).contains(&count(1)) && (450..550).contains(&count(2)));
        assert_eq!(r.wave_of("stable", "node-7"), r.wave_of("stable", "node-7"));
        let part = Rollout::new("2", vec![Wave::Share(10)], 1, false).unwrap();
        assert!((0..1000).filter(|i| part.wave_of("stable", &format!("node-{i}")).is_none()).count() > 800);
    }

    #[test]
    fn waves_open_in_order_and_halt_after_failures() {
        let mut f = fleet();
        let waves = vec![Wave::Devices(vec!["a".into(), "b".into()]), Wave::Devices(vec!["c".into()])];
        f.publish(0.0, "stable", Rollout::new("2", waves, 2, false).unwrap()).unwrap();
        let upd = |v: &str, w| Answer::Update { version: v.into(), wave: w };
        assert_eq!(f.check_in(1.0, "a", "stable", "x86_64", "1").unwrap(), upd("2", 0));
        assert!(
            matches!(f.check_in(1.0, "c", "stable", "aarch64", "1").unwrap(), Answer::None { reason } if reason.contains("wave 2 of 2 not open"))
        );
        assert!(
            matches!(f.check_in(1.0, "z", "stable", "x86_64", "1").unwrap(), Answer::None { reason } if reason.contains("not in any wave"))
        );
        // Two failed updates in wave 1 halt it: b, still on 1, is not offered 2.
        f.report(2.0, "a", "2", false).unwrap();
        f.check_in(2.0, "b", "stable", "x86_64", "1").unwrap();
        f.report(2.5, "b", "2", false).unwrap();
        assert_eq!(f.rollout("stable").unwrap().state, State::Halted { wave: 0, failures: 2 });
        assert!(
            matches!(f.check_in(3.0, "b", "stable", "x86_64", "1").unwrap(), Answer::None { reason } if reason.contains("halted in wave 1"))
        );
        assert!(!f.advance(3.0, "stable"), "a halted rollout does not advance");
        let whats: Vec<&str> = f.decisions.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(
            whats,
            ["publish", "check-in", "check-in", "check-in", "report", "check-in", "report", "halt", "check-in"]
        );
        let own: Vec<String> = f.own_changes(0).into_iter().map(|d| d.what).collect();
        assert_eq!(own, ["halt"]);
        assert!(f.own_changes(8).is_empty(), "the cursor skips what was seen");
        f.set_state(4.0, "stable", "abort").unwrap();
        assert!(f.set_state(4.0, "stable", "resume").is_err());
    }

    #[test]
    fn auto_advance_waits_for_every_device_of_the_open_waves() {
        let mut f = fleet();
        let waves = vec![Wave::Devices(vec!["a".into(), "b".into()]), Wave::Devices(vec!["c".into()])];
        f.publish(0.0, "stable", Rollout::new("2", waves, 1, true).unwrap()).unwrap();
        f.check_in(1.0, "a", "stable", "x86_64", "1").unwrap();
        f.check_in(1.0, "b", "stable", "x86_64", "1").unwrap();
        f.report(2.0, "a", "2", true).unwrap();
        assert_eq!(f.rollout("stable").unwrap().open_waves(), 1, "b has not updated yet");
        f.report(3.0, "b", "2", true).unwrap();
        assert_eq!(f.rollout("stable").unwrap().open_waves(), 2);
        let own: Vec<(String, String)> = f.own_changes(0).into_iter().map(|d| (d.what, d.detail)).collect();
        assert_eq!(own, [("auto-advance".to_string(), "wave 2 open".to_string())]);
        assert!(matches!(f.check_in(4.0, "c", "stable", "aarch64", "1").unwrap(), Answer::Update { wave: 1, .. }));
    }

    #[test]
    fn channels_pause_and_version_down() {
        let mut f = fleet();
        f.publish(0.0, "stable", Rollout::everyone("2")).unwrap();
        f.publish(0.0, "beta", Rollout::everyone("3")).unwrap();
        assert!(matches!(f.check_in(1.0, "s", "stable", "x86_64", "2").unwrap(), Answer::None { .. }));
        assert!(
            matches!(f.check_in(1.0, "b", "beta", "aarch64", "2").unwrap(), Answer::Update { version, .. } if version == "3")
        );
        assert!(f.check_in(1.0, "x", "nightly", "x86_64", "2").unwrap_err().contains("unknown channel nightly"));
        assert!(f.publish(1.0, "nightly", Rollout::everyone("4")).is_err());
        // Version down: 2 published over 3.
        f.publish(2.0, "beta", Rollout::everyone("2")).unwrap();
        assert!(
            matches!(f.check_in(3.0, "b", "beta", "aarch64", "3").unwrap(), Answer::Update { version, .. } if version == "2")
        );
        f.set_state(4.0, "beta", "pause").unwrap();
        assert!(
            matches!(f.check_in(5.0, "b", "beta", "aarch64", "3").unwrap(), Answer::None { reason } if reason.contains("paused"))
        );
        f.set_state(6.0, "beta", "resume").unwrap();
        assert!(matches!(f.check_in(7.0, "b", "beta", "aarch64", "3").unwrap(), Answer::Update { .. }));
        assert!(f.report(8.0, "ghost", "2", true).is_err());
    }
}
