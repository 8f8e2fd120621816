//! `assert_fact`: Read one of a device's facts through its profile (its command and regex) and check its value.

use super::prelude::*;

/// Read one of a device's facts through its profile (the fact's command,
/// over the device's command transport, and its regex) and check it: the
/// regex matches (no `equals`), or the value is `equals`. The value is
/// recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertFact {
    pub fact: String,
    #[serde(default)]
    pub equals: Option<String>,
}

impl StepKind for AssertFact {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(d) = cx.scenario.device.clone() else {
            return Err(cx.at("action", "assert_fact reads a device profile's facts: the scenario has no device"));
        };
        match d.facts.get(&self.fact) {
            None => {
                let mut known: Vec<String> = d.facts.other.keys().cloned().collect();
                known.extend(["version".to_string()]);
                for (n, f) in [("ready", &d.facts.ready), ("slot", &d.facts.slot), ("env", &d.facts.env)] {
                    if f.is_some() {
                        known.push(n.into());
                    }
                }
                known.sort();
                let msg = format!("device `{}` has no fact `{}` (it has: {})", d.name, self.fact, known.join(", "));
                Err(cx.at("fact", msg))
            }
            Some(f) if f.command().is_none() => {
                Err(cx.at("fact", format!("fact `{}` is a console line, read by `login`", self.fact)))
            }
            Some(_) => cx.need_login(None),
        }
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let device = r.scenario.device.clone().expect("checked: a device scenario");
        let fact = device.facts.get(&self.fact).cloned().expect("checked: the fact exists");
        let value = r.read_fact(&fact).await?;
        if let Some(want) = self.equals.as_ref().filter(|w| **w != value) {
            return Err(r.failure(format!("fact `{}` is {value:?}, expected {want:?} ({})", self.fact, fact.origin)));
        }
        r.drain(None);
        r.record(Event::Fact { name: self.fact.clone(), value });
        Ok(())
    }
}
