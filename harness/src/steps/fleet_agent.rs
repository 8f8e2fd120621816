//! `fleet_agent`: Make a machine of a `[fleet]` a fleet member: write its
//! agent's config (`/data/devlab/fleet.conf`: the run's update and lock
//! servers, its id, its channel, the check-in interval) and start the agent
//! (one that is running already keeps its lock and the new one leaves);
//! rcS starts it on every later boot. Run again with
//! `channel`, it switches the machine's channel (the agent reads its config
//! before every check-in).

use super::prelude::*;

/// Where the agent's config lives (the data partition: it survives updates).
const CONF: &str = "/data/devlab/fleet.conf";

/// Make a machine of a `[fleet]` a fleet member (or switch its channel).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetAgent {
    /// Switch to this channel (else the machine's own `channel`).
    #[serde(default)]
    pub channel: Option<toml::Spanned<String>>,
}

impl StepKind for FleetAgent {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(fleet) = &cx.scenario.fleet else {
            return Err(cx.at("action", "fleet_agent needs a [fleet] table (its channels and reboot slots)"));
        };
        if let Some(msg) = self.channel.as_ref().and_then(|c| fleet.refuse_channel(c.get_ref())) {
            return Err(cx.at("channel", msg));
        }
        cx.need_ssh()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let spec = r.scenario.fleet.as_ref().expect("checked: a [fleet]");
        let decl = r.scenario.machines.iter().find(|m| m.name.get_ref() == &r.name);
        let channel = match (&self.channel, decl) {
            (Some(c), _) => c.get_ref().clone(),
            (None, Some(m)) => spec.channel_of(m),
            (None, None) => spec.channels[0].get_ref().clone(),
        };
        let lab = r.fleet.clone().ok_or_else(|| Error::infra("the fleet's lock server is not running"))?;
        let server = r.server.clone().ok_or_else(|| Error::infra("the update server is not running"))?;
        let interval = spec.interval.0.as_secs().max(1);
        let conf = format!(
            "SERVER=http://{}\nLOCK={}\nID={}\nGROUP={channel}\nLOCK_GROUP={}\nINTERVAL={interval}\n",
            server.guest_address(),
            lab.guest_url(),
            r.name,
            crate::fleet::LOCK_GROUP,
        );
        wait_health_check(r).await?;
        start_agent(r, Event::FleetAgent { channel }, CONF, "devlab-fleet", conf).await
    }
}

/// Wait for rcS's health check (it mounts /data first): the env gate's
/// fifo blocks a reader until then (and ends its read with EOF). Then
/// `/data/devlab` is there for an agent's files.
pub(super) async fn wait_health_check(r: &mut Run<'_>) -> Result<()> {
    let gate =
        "{ [ ! -e /run/devlab-env.gate ] || read -r _ < /run/devlab-env.gate; } 2> /dev/null; mkdir -p /data/devlab";
    let out = r.ssh()?.exec(gate, Duration::from_secs(60)).await.map_err(|e| r.failure(e.to_string()))?;
    if out.status != 0 {
        return Err(r.failure(format!("waiting for the health check failed: {}", out.stderr.trim())));
    }
    Ok(())
}

/// Record `event` (before the agent starts: its first line comes after),
/// write `conf` to `path` whole, then renamed (an agent never reads half a
/// file), and start `/usr/sbin/<agent>` in the background for good (one
/// already running keeps going and the new one leaves).
pub(super) async fn start_agent(r: &mut Run<'_>, event: Event, path: &str, agent: &str, conf: String) -> Result<()> {
    r.drain(None);
    r.record(event);
    let command = format!(
        "cat > {path}.new && mv {path}.new {path} && sync && \
         {{ setsid /usr/sbin/{agent} < /dev/null > /dev/null 2>&1 & }}"
    );
    let out = r.ssh()?.exec_with_input(&command, conf.into_bytes(), Duration::from_secs(30)).await;
    let out = out.map_err(|e| r.failure(e.to_string()))?;
    if out.status != 0 {
        return Err(r.failure(format!("configuring {agent} failed: {}", out.stderr.trim())));
    }
    Ok(())
}

