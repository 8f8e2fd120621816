//! `download`: Copy a guest file into the run directory (as `to`, a plain file name).

use super::prelude::*;

/// Copy a guest file into the run directory (as `to`, a plain file name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub from: String,
    pub to: String,
    /// `ssh` or `serial` (base64 through the serial shell); default: the
    /// device's `[login] default`, else SSH.
    #[serde(default)]
    pub via: Option<crate::device::Via>,
}

impl StepKind for Download {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(self.via)?;
        let to = &self.to;
        if to.is_empty() || to.contains('/') || to.starts_with('.') || to.contains('\0') {
            return Err(cx.at("to", format!("`{to}` must be a plain file name (it goes in the run directory)")));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let d = self;
        if r.via(d.via) == crate::device::Via::Serial {
            let (shell, console) = r.serial_shell()?;
            let got = shell.download(console, &d.from, Duration::from_secs(120)).await;
            let bytes = got.map_err(|e| r.serial_failure(e))?;
            return save_download(r, d, &bytes);
        }
        let q = crate::machine::shell_quote(&d.from);
        // Hex through busybox od: byte-exact over a text channel.
        let out = r.ssh()?.exec(&format!("od -An -v -tx1 {q}"), Duration::from_secs(120)).await;
        let out = out.map_err(|e| r.failure(e.to_string()))?;
        if out.status != 0 {
            return Err(r.failure(format!("download of {} failed: {}", d.from, out.stderr.trim())));
        }
        let bytes: std::result::Result<Vec<u8>, _> =
            out.stdout.split_whitespace().map(|h| u8::from_str_radix(h, 16)).collect();
        let bytes = bytes.map_err(|e| r.failure(format!("download of {}: bad od output: {e}", d.from)))?;
        save_download(r, d, &bytes)
    }
}

/// Write what came back into the run directory and record it.
fn save_download(r: &mut Run<'_>, d: &Download, bytes: &[u8]) -> Result<()> {
    let to = r.run_dir.join(&d.to);
    std::fs::write(&to, bytes).map_err(|e| Error::infra(format!("writing {}: {e}", to.display())))?;
    r.drain(None);
    r.record(Event::Transfer { direction: "download".into(), path: d.from.clone(), bytes: bytes.len() as u64 });
    Ok(())
}
