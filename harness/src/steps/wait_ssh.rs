//! `wait_ssh`: 

use super::prelude::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSsh {
    #[serde(default = "default_ssh_timeout")]
    pub timeout: Dur,
}

fn default_ssh_timeout() -> Dur {
    Dur(Duration::from_secs(120))
}

impl StepKind for WaitSsh {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        cx.power = Power::Ssh;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let w = self;
        let t0 = r.machine()?.t0;
        let port = r.machine()?.ssh_port().await?;
        let ssh = r.new_ssh(port, t0);
        let m = r.machine()?;
        tokio::select! {
            up = ssh.wait_up(w.timeout.0) => up.map_err(|e| r.failure(e.to_string()))?,
            bad = m.console.wait_bad() => return Err(r.console_failure(bad)),
        }
        r.ssh = Some(ssh);
        r.drain(None);
        r.record(Event::SshUp);
        Ok(())
    }
}
