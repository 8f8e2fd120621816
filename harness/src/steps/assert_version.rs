//! `assert_version`: The running release (`VERSION_ID` in the guest's /etc/os-release, or a device's `version` fact).

use super::prelude::*;

/// The running release (`VERSION_ID` in the guest's /etc/os-release).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertVersion {
    pub version: String,
}

impl StepKind for AssertVersion {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(None)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        if let Some(fact) = r.scenario.device.as_ref().map(|d| d.facts.version.clone()) {
            let running = r.read_fact(&fact).await?;
            if running != a.version {
                let origin = &fact.origin;
                return Err(r.failure(format!("running version {running:?}, expected {:?} ({origin})", a.version)));
            }
            r.drain(None);
            r.record(Event::VersionRunning { version: running });
            return Ok(());
        }
        let out = r.ssh()?.exec(". /etc/os-release && echo \"$VERSION_ID\"", Duration::from_secs(30)).await;
        let out = out.map_err(|e| r.failure(e.to_string()))?;
        let running = out.stdout.trim().to_string();
        if running != a.version {
            return Err(r.failure(format!("running version {running:?}, expected {:?}", a.version)));
        }
        r.drain(None);
        r.record(Event::VersionRunning { version: running });
        Ok(())
    }
}
