//! `refuse`: a negative expect. From this step until an `allow` that names
//! it, the pattern must not appear on the console (any machine's, across
//! power-ons): a step waiting on the console fails at once when it does,
//! and `allow` fails if it appeared while no step was waiting.

use super::prelude::*;
use crate::runner::Refusal;

/// Refuse a console pattern until `allow { name }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refuse {
    /// What `allow` calls it.
    pub name: String,
    pub pattern: Pattern,
}

impl StepKind for Refuse {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let plain = !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !plain {
            return Err(cx.at("name", format!("{:?} is not a plain name", self.name)));
        }
        if cx.refused.contains(&self.name) {
            return Err(cx.at("name", format!("`{}` is refused already", self.name)));
        }
        cx.refused.push(self.name.clone());
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let pattern = r.console_pattern(&self.pattern);
        let label = format!("refused `{}`", self.name);
        let mut refusal = Refusal { name: self.name.clone(), label, pattern, seen: Vec::new() };
        if r.machine_running() {
            let m = r.machine.as_mut().expect("running");
            m.console.arm_bad(&refusal.label, refusal.pattern.clone());
            refusal.seen.push(m.console.arm_trigger(refusal.pattern.clone(), Box::new(|| ())));
        }
        r.refusals.push(refusal);
        r.drain(None);
        r.record(Event::Refuse { name: self.name.clone(), active: true });
        Ok(())
    }
}
