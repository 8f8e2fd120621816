//! `wait_callback`: Wait until the guest calls `http://{server}/callback/<name>` (any method) after the previous `wait_callback`; `{server}` in `ssh` commands is the harness's server as the guest reaches it.

use super::prelude::*;

/// Wait until the guest calls `http://{server}/callback/<name>` (any
/// method) after the previous `wait_callback`; `{server}` in `ssh` commands
/// is the harness's server as the guest reaches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitCallback {
    pub name: String,
    /// A regex the callback's body must match.
    #[serde(default)]
    pub body: Option<Pattern>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

impl StepKind for WaitCallback {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        cx.server = true;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let w = self;
        r.start_server().await?;
        let from = r.callback_cursor;
        let server = r.server.as_ref().expect("started");
        let got = server.wait_callback(&w.name, from, w.timeout.0).await;
        let Some((i, body)) = got else {
            return Err(r.failure(format!(
                "no callback `{}` within {} (the guest calls http://{}/callback/{})",
                w.name,
                humantime::format_duration(w.timeout.0),
                server.guest_address(),
                w.name
            )));
        };
        r.callback_cursor = i + 1;
        let body = String::from_utf8_lossy(&body).into_owned();
        if let Some(p) = &w.body {
            let (re, pattern) = (r.text_pattern(p), r.pattern_source(p));
            if !re.is_match(&body) {
                return Err(
                    r.failure(format!("callback `{}` body {body:?} does not match `{pattern}`", w.name))
                );
            }
        }
        r.drain(None);
        r.record(Event::Callback { name: w.name.clone() });
        Ok(())
    }
}
