//! `assert_version`: The running release (`VERSION_ID` in the guest's /etc/os-release).

use super::prelude::*;

/// The running release (`VERSION_ID` in the guest's /etc/os-release).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertVersion {
    pub version: String,
}

impl StepKind for AssertVersion {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_ssh()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
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
