//! `assert_file`: A file's content, in the guest or on a disk partition (`data:/path`).

use super::prelude::*;

/// A file's content, in the guest or on a disk partition (`data:/path`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertFile {
    #[serde(default = "guest")]
    pub source: Source,
    /// Guest path, or `LABEL:/path` on an ext4 partition for `source = "disk"`.
    pub path: String,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

impl StepKind for AssertFile {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        match self.source {
            Source::Guest => cx.need_login(None),
            Source::Disk => {
                cx.need(&[Power::Off, Power::On, Power::Ssh], "reads the machine's disk")?;
                let Some((label, _)) = self.path.split_once(':') else {
                    return Err(cx.at("path", format!("disk path `{}` must be LABEL:/path", self.path)));
                };
                if !cx.disk_labels.contains(&label) && cx.scenario.device.is_none() {
                    let labels = cx.disk_labels.join(", ");
                    return Err(cx.at("path", format!("no partition `{label}` (the disk has: {labels})")));
                }
                Ok(())
            }
        }
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        let content = match a.source {
            Source::Guest => {
                // Over SSH, or a device's default transport.
                let via = r.via(None);
                let command = format!("cat {}", crate::machine::shell_quote(&a.path));
                let out = r.exec_via(&command, Duration::from_secs(30), via).await?;
                if out.status != 0 {
                    let said = format!("{} {}", out.stderr.trim(), out.stdout.trim());
                    return Err(r.failure(format!("cannot read {}: {}", a.path, said.trim())));
                }
                out.stdout
            }
            Source::Disk => {
                let (label, path) = a
                    .path
                    .split_once(':')
                    .ok_or_else(|| r.failure(format!("disk path `{}` must be LABEL:/path", a.path)))?;
                let overlay = r.overlay()?;
                let (manifest, label, path) = (r.image.manifest.clone(), label.to_string(), path.to_string());
                let read = blocking(move || crate::disk::read_file(&overlay, &manifest, &label, &path)).await;
                let bytes = read.map_err(|e| r.failure(e.to_string()))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        if let Some(eq) = &a.equals {
            if content.trim_end() != eq.trim_end() {
                return Err(r.failure(format!("{} holds {:?}, expected {eq:?}", a.path, content)));
            }
        }
        if let Some(c) = &a.contains {
            if !content.contains(c.as_str()) {
                return Err(r.failure(format!("{} does not contain {c:?}: {:?}", a.path, content)));
            }
        }
        r.drain(None);
        r.record(Event::File { source: a.source.as_str().into(), path: a.path.clone() });
        Ok(())
    }
}
