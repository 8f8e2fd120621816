//! `assert_env`: U-Boot environment variables, read with `fw_printenv` (guest) or from the disk's env copies (disk). A value of `""` asserts the variable is unset.

use super::prelude::*;

/// U-Boot environment variables, read with `fw_printenv` (guest) or from
/// the disk's env copies (disk). A value of `""` asserts the variable is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertEnv {
    #[serde(default = "guest")]
    pub source: Source,
    pub vars: BTreeMap<String, String>,
}

impl StepKind for AssertEnv {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        match self.source {
            Source::Guest => cx.need_login(None),
            Source::Disk if cx.scenario.device.is_some() => {
                Err(cx.at("source", "a device's U-Boot env is read in the guest (its `env` fact), not from the disk"))
            }
            Source::Disk => cx.need(&[Power::Off, Power::On, Power::Ssh], "reads the machine's disk"),
        }
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        let actual: BTreeMap<String, String> = match a.source {
            Source::Guest => {
                // A device's own tool (its `env` fact), else fw_printenv.
                let fact = r.scenario.device.as_ref().and_then(|d| d.facts.env.clone());
                let command = fact.as_ref().and_then(|f| f.command()).unwrap_or("fw_printenv").to_string();
                let via = r.via(None);
                let out = r.exec_via(&command, Duration::from_secs(30), via).await?;
                if out.status != 0 {
                    let said = format!("{} {}", out.stderr.trim(), out.stdout.trim());
                    return Err(r.failure(format!("`{command}` exited {}: {}", out.status, said.trim())));
                }
                crate::device::env_lines(&out.stdout)
            }
            Source::Disk => {
                let overlay = r.overlay()?;
                let manifest = r.image.manifest.clone();
                let state = blocking(move || crate::disk::read_env(&overlay, &manifest)).await?;
                state.vars().cloned().ok_or_else(|| {
                    r.failure("both U-Boot environment copies on the disk are corrupt".into())
                })?
            }
        };
        let mut seen = BTreeMap::new();
        for (k, want) in &a.vars {
            let got = actual.get(k).cloned().unwrap_or_default();
            if &got != want {
                return Err(r.failure(format!(
                    "U-Boot env ({}) {k}={got:?}, expected {want:?}; whole env: {actual:?}",
                    a.source.as_str()
                )));
            }
            seen.insert(k.clone(), got);
        }
        r.drain(None);
        r.record(Event::Env { source: a.source.as_str().into(), vars: seen });
        Ok(())
    }
}

