//! `upload`: Copy a host file (relative to the scenario file) into the guest.

use super::prelude::*;

/// Copy a host file (relative to the scenario file) into the guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub from: String,
    pub to: String,
    /// File mode in the guest (TOML octal: `0o755`).
    #[serde(default = "mode_644")]
    pub mode: u32,
    /// `ssh` or `serial` (base64 lines through the serial shell); default:
    /// the device's `[login] default`, else SSH.
    #[serde(default)]
    pub via: Option<crate::device::Via>,
}

fn mode_644() -> u32 {
    0o644
}

impl StepKind for Upload {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(self.via)?;
        if !cx.path().parent().unwrap_or(std::path::Path::new(".")).join(&self.from).is_file() {
            return Err(cx.at("from", format!("no file `{}` next to the scenario", self.from)));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let u = self;
        let dir = r.scenario.path.parent().unwrap_or(std::path::Path::new("."));
        let from = dir.join(&u.from);
        let data =
            std::fs::read(&from).map_err(|e| r.failure(format!("cannot read {}: {e}", from.display())))?;
        let n = data.len();
        match r.via(u.via) {
            crate::device::Via::Ssh => {
                let sent = r.ssh()?.upload(data, &u.to, u.mode, Duration::from_secs(120)).await;
                sent.map_err(|e| r.failure(e.to_string()))?;
            }
            crate::device::Via::Serial => {
                let (shell, console) = r.serial_shell()?;
                let out = shell.upload(console, &data, &u.to, u.mode, Duration::from_secs(120)).await;
                let out = out.map_err(|e| r.serial_failure(e))?;
                if out.status != 0 {
                    return Err(r.failure(format!("upload to {} over serial: exit {}: {}", u.to, out.status, out.stdout.trim())));
                }
            }
        }
        r.drain(None);
        r.record(Event::Transfer { direction: "upload".into(), path: u.to.clone(), bytes: n as u64 });
        Ok(())
    }
}
