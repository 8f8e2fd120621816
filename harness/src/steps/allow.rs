//! `allow`: end a `refuse`. Fails if the refused pattern appeared on any
//! console since (the reader watched every byte, whether or not a step was
//! waiting then).

use super::prelude::*;

/// Lift the refusal `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    pub name: String,
}

impl StepKind for Allow {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(i) = cx.refused.iter().position(|n| *n == self.name) else {
            let known = if cx.refused.is_empty() { "none".to_string() } else { cx.refused.join(", ") };
            return Err(cx.at("name", format!("no refusal `{}` before this step (refused: {known})", self.name)));
        };
        cx.refused.remove(i);
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let Some(i) = r.refusals.iter().position(|x| x.name == self.name) else {
            return Err(r.failure(format!("no refusal `{}`", self.name)));
        };
        let refusal = r.refusals.remove(i);
        if let Some(m) = r.machine.as_mut() {
            m.console.disarm_bad(&refusal.label);
        }
        if refusal.seen.iter().any(|s| s.borrow().is_some()) {
            return Err(r.failure(format!(
                "`{}` appeared on the console while it was refused (`{}`)",
                refusal.pattern.as_str(),
                self.name
            )));
        }
        r.drain(None);
        r.record(Event::Refuse { name: self.name.clone(), active: false });
        Ok(())
    }
}
