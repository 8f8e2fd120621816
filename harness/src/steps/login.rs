//! `login`: Wait until a device is up (its profile's `ready` fact) and log in over its command transport (SSH or the serial console).

use super::prelude::*;
use crate::device::{FactSource, Via};

/// Wait until a device is up (its profile's `ready` fact) and log in over
/// its command transport: the profile's default, or `via`. Later command
/// steps use that login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// `ssh` or `serial` (default: the device profile's `[login] default`).
    #[serde(default)]
    pub via: Option<Via>,
    #[serde(default = "default_login_timeout")]
    pub timeout: Dur,
}

fn default_login_timeout() -> Dur {
    Dur(Duration::from_secs(240))
}

impl StepKind for Login {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        let Some(d) = cx.scenario.device.clone() else {
            return Err(cx.at("action", "login logs in to a device profile's product: use wait_ssh for a devlab image"));
        };
        let via = self.via.unwrap_or(d.default_via);
        match via {
            Via::Serial if d.serial.is_none() => {
                return Err(cx.at("via", format!("device `{}` has no [login.serial]", d.name)))
            }
            Via::Ssh if d.ssh.is_none() => return Err(cx.at("via", format!("device `{}` has no [login.ssh]", d.name))),
            _ => {}
        }
        cx.power = Power::Ssh;
        cx.logins.push(via);
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let device = r.scenario.device.clone().expect("checked: a device scenario");
        let deadline = tokio::time::Instant::now() + self.timeout.0;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        // A second login in the same boot (the other transport) does not
        // wait for `ready` again: its line is long gone.
        let first = r.ssh.is_none() && r.serial.is_none();
        if let Some(fact) = device.facts.ready.as_ref().filter(|_| first) {
            if let FactSource::Console(re) = &fact.source {
                let re = BytesRegex::new(re.as_str()).expect("compiled at load");
                let m = r.machine()?;
                let got = m.console.expect(&[re], left()).await.map_err(|e| {
                    let why = format!("the device never showed `ready` (see facts.ready at {})", fact.origin);
                    r.console_failure_because(e, &why)
                })?;
                r.drain(Some(got.end));
                r.record(Event::Fact { name: "ready".into(), value: String::new() });
            }
        }
        // The transport asked for, else the default (not "the one logged in").
        let via = self.via.unwrap_or(device.default_via);
        match via {
            Via::Ssh => {
                let t0 = r.machine()?.t0;
                let port = r.machine()?.ssh_port().await?;
                let ssh = r.new_ssh(port, t0);
                let m = r.machine()?;
                tokio::select! {
                    up = ssh.wait_up(left()) => up.map_err(|e| r.failure(format!("{e} (see [login.ssh] in {})", device.path.display())))?,
                    bad = m.console.wait_bad() => return Err(r.console_failure(bad)),
                }
                r.ssh = Some(ssh);
            }
            Via::Serial => {
                let login = device.serial.clone().expect("checked: [login.serial]");
                let m = r.machine()?;
                let shell = crate::serial_shell::SerialShell::login(&mut m.console, &login, left()).await;
                let why = format!("no serial login (see [login.serial] in {})", device.path.display());
                r.serial = Some(shell.map_err(|e| match e {
                    crate::serial_shell::ShellError::Console(c) => r.console_failure_because(c, &why),
                    other => r.failure(other.to_string()),
                })?);
            }
        }
        if let Some(fact) = device.facts.ready.as_ref().filter(|f| first && f.command().is_some()) {
            let value = r.read_fact(fact).await?;
            r.record(Event::Fact { name: "ready".into(), value });
        }
        r.drain(None);
        r.record(Event::LoggedIn { via: via.name().into() });
        Ok(())
    }
}
