//! `expect`: wait for a regex on the serial console; or, with `count`,
//! count its matches in a window (closed by the `until` pattern, or after
//! `within`) and require exactly that many ("the new slot got exactly one
//! try"), failing at once on one too many.

use super::prelude::*;

/// Wait for a regex on the serial console (or count it in a window).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub pattern: Pattern,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// The name recorded in the timeline (default: the pattern).
    #[serde(default)]
    pub label: Option<String>,
    /// Exactly this many matches in the window (0 allowed: "never").
    #[serde(default)]
    pub count: Option<u32>,
    /// The window ends when this pattern appears (needs `count`).
    #[serde(default)]
    pub until: Option<Pattern>,
    /// The window ends after this long (needs `count`; the window's own
    /// length, not a wait for something).
    #[serde(default)]
    pub within: Option<Dur>,
}

// By hand, so the fields added for counting show only when set (the
// restructure guard's fingerprint of every shipped `expect` stays as it was).
impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Expect");
        d.field("pattern", &self.pattern).field("timeout", &self.timeout).field("label", &self.label);
        if let Some(c) = &self.count {
            d.field("count", c);
        }
        if let Some(u) = &self.until {
            d.field("until", u);
        }
        if let Some(w) = &self.within {
            d.field("within", w);
        }
        d.finish()
    }
}

impl StepKind for Expect {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        match (self.count, &self.until, &self.within) {
            (None, None, None) => Ok(()),
            (None, _, _) => {
                let key = if self.until.is_some() { "until" } else { "within" };
                Err(cx.at(key, format!("`{key}` closes a counting window: set `count` too")))
            }
            (Some(_), None, None) => Err(cx.at("count", "a count needs a window: `until` (a pattern) or `within`")),
            (Some(_), Some(_), Some(_)) => Err(cx.at("within", "set one of `until` and `within`")),
            (Some(n), _, _) if n > 1000 => Err(cx.at("count", format!("count must be at most 1000, not {n}"))),
            (Some(_), _, _) => Ok(()),
        }
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let label = self.label.clone().unwrap_or(self.pattern.0.clone());
        let re = r.console_pattern(&self.pattern);
        let Some(want) = self.count else {
            let m = r.machine()?;
            let got = m.console.expect(&[re], self.timeout.0).await.map_err(|err| r.console_failure(err))?;
            r.settle_line(got.end).await;
            r.drain(Some(got.end));
            r.record(Event::Expected { label });
            return Ok(());
        };
        let until = self.until.as_ref().map(|p| r.console_pattern(p));
        let window = self.within.map_or(self.timeout.0, |w| w.0);
        let deadline = tokio::time::Instant::now() + window;
        let mut seen = 0u32;
        let mut end = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let patterns: Vec<BytesRegex> = std::iter::once(re.clone()).chain(until.clone()).collect();
            let m = r.machine()?;
            match m.console.expect(&patterns, left).await {
                Ok(got) if got.index == 0 => {
                    seen += 1;
                    end = Some(got.end);
                    if seen > want {
                        r.drain(end);
                        return Err(r.failure(format!("`{label}` appeared {seen} times, expected exactly {want}")));
                    }
                }
                // The window's closing pattern.
                Ok(got) => {
                    end = Some(got.end);
                    break;
                }
                // The window ran out: by `within` that closes it; waiting
                // for `until` it is a failure.
                Err(crate::console::ConsoleError::Timeout { .. }) if self.within.is_some() => break,
                Err(err) => return Err(r.console_failure(err)),
            }
        }
        if let Some(end) = end {
            r.settle_line(end).await;
        }
        r.drain(end);
        if seen != want {
            return Err(r.failure(format!("`{label}` appeared {seen} times, expected exactly {want}")));
        }
        r.record(Event::Expected { label: format!("{label} (exactly {want})") });
        Ok(())
    }
}
