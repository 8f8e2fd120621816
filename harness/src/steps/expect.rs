//! `expect`: Wait for a regex on the serial console.

use super::prelude::*;

/// Wait for a regex on the serial console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub pattern: Pattern,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// The name recorded in the timeline (default: the pattern).
    #[serde(default)]
    pub label: Option<String>,
}

impl StepKind for Expect {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let e = self;
        let re = r.console_pattern(&e.pattern);
        let m = r.machine()?;
        let got = m.console.expect(&[re], e.timeout.0).await.map_err(|err| r.console_failure(err))?;
        r.settle_line(got.end).await;
        r.drain(Some(got.end));
        r.record(Event::Expected { label: e.label.clone().unwrap_or(e.pattern.0.clone()) });
        Ok(())
    }
}
