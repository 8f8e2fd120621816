//! `assert_rauc`: Assert what `rauc status` reports (JSON output); every field optional.

use super::prelude::*;
use crate::rauc::RaucStatus;

/// Assert what `rauc status` reports (JSON output); every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertRauc {
    /// The booted slot's bootname (`A` or `B`).
    #[serde(default)]
    pub booted: Option<String>,
    /// The bootname U-Boot tries first (RAUC's `boot_primary`).
    #[serde(default)]
    pub primary: Option<String>,
    /// Boot status per bootname: `good` or `bad`.
    #[serde(default)]
    pub boot_status: BTreeMap<String, String>,
    /// Bundle version installed per bootname (from RAUC's slot status).
    #[serde(default)]
    pub installed: BTreeMap<String, String>,
}

impl StepKind for AssertRauc {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_login(None)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let a = self;
        // Over SSH, or a device's default transport.
        let via = r.via(None);
        let out = r.exec_via("rauc status --detailed --output-format=json", Duration::from_secs(60), via).await?;
        if out.status != 0 {
            return Err(r.failure(format!("rauc status failed: {}{}", out.stdout, out.stderr)));
        }
        let status = RaucStatus::parse(&out.stdout).map_err(|e| r.failure(e))?;
        let mut wrong = Vec::new();
        let mut check = |what: &str, want: Option<&String>, got: Option<&String>| {
            if let Some(w) = want {
                if Some(w) != got {
                    wrong.push(format!("{what}: {} (expected {w})", got.map_or("none", |g| g.as_str())));
                }
            }
        };
        check("booted", a.booted.as_ref(), status.booted.as_ref());
        check("primary", a.primary.as_ref(), status.primary.as_ref());
        for (slot, want) in &a.boot_status {
            check(&format!("boot status of {slot}"), Some(want), status.boot_status.get(slot));
        }
        for (slot, want) in &a.installed {
            check(&format!("bundle installed in {slot}"), Some(want), status.installed.get(slot));
        }
        if !wrong.is_empty() {
            return Err(r.failure(format!("rauc status: {}\n{}", wrong.join("; "), out.stdout.trim())));
        }
        r.drain(None);
        r.record(Event::RaucStatus {
            booted: status.booted.unwrap_or_default(),
            primary: status.primary.unwrap_or_default(),
            boot_status: status
                .boot_status
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        });
        Ok(())
    }
}
