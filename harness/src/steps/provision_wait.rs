//! `provision_wait`: Wait until this board's node is in `state` in the provisioning service.

use super::prelude::*;
use devlab_provision::NodeState;

/// The line the management OS's agent prints once the service has taken a
/// state change it made (see `provision_wait`). Each pattern runs to the
/// end of its line: a match that ended mid-line would let the step drain a
/// line still arriving, before its marker can be read whole.
fn agent_ack(state: NodeState) -> Option<&'static str> {
    use NodeState as S;
    match state {
        S::Registered => Some(r"devlab-mgmt: registered[^\n]*\n"),
        S::Deploying => Some(r"devlab-mgmt: DEPLOYING[^\n]*\n"),
        S::Installed => Some(r"devlab-mgmt: INSTALLED[^\n]*\n"),
        S::UnrecoverableError => Some(r"devlab-mgmt: FAILED[^\n]*\n"),
        S::DeployStart => None,
    }
}

/// How long the agent may take to print its line after the service
/// answered it (it prints at once).
const AGENT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Wait until this board's node is in `state` in the provisioning service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionWait {
    pub state: NodeState,
    #[serde(default = "default_provision_timeout")]
    pub timeout: Dur,
}

fn default_provision_timeout() -> Dur {
    Dur(Duration::from_secs(180))
}

impl StepKind for ProvisionWait {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_provision()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let w = self;
        r.ensure_lab().await?;
        let uuid = r.node_uuid()?;
        let state = w.state;
        let service = r.service()?;
        let wait = service.wait_state(&uuid, state, w.timeout.0);
        // Raced with the console (a panic, or the machine powering
        // off without reaching the state, ends the wait at once);
        // `biased`: a state already reached wins over a closed console.
        let got = if r.machine_running() {
            let m = r.machine.as_mut().expect("running");
            let bad = tokio::select! {
                biased;
                reached = wait => Ok(reached),
                bad = m.console.wait_bad() => Err(bad),
            };
            match bad {
                Ok(reached) => reached,
                Err(bad) => return Err(r.console_failure(bad)),
            }
        } else {
            wait.await
        };
        got.map_err(|e| r.failure(format!("node {uuid}: {e}")))?;
        // The service changes state before it answers the agent,
        // which then prints its own line: wait for that line too, so
        // the timeline's order does not depend on who was faster.
        let mut end = None;
        if let (Some(ack), true) = (agent_ack(state), r.machine_running()) {
            let re = BytesRegex::new(ack).expect("static pattern");
            let m = r.machine()?;
            let got = m.console.expect(&[re], AGENT_ACK_TIMEOUT).await.map_err(|e| r.console_failure(e))?;
            r.settle_line(got.end).await;
            end = Some(got.end);
        }
        r.drain(end);
        r.record(Event::Provision { detail: format!("node {}", w.state.as_str()) });
        Ok(())
    }
}
