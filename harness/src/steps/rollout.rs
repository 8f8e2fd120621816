//! `rollout`: The operator on a `[fleet]` channel's rollout: open the next
//! wave (`advance`), `pause`, `resume` or `abort` it.

use super::prelude::*;

/// What the operator does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Advance,
    Pause,
    Resume,
    Abort,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Advance => "advance",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Abort => "abort",
        }
    }
}

/// Act on a channel's rollout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutOp {
    pub channel: String,
    pub op: Op,
}

impl StepKind for RolloutOp {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(fleet) = &cx.scenario.fleet else {
            return Err(cx.at("action", "rollout needs a [fleet] table (its channels)"));
        };
        if let Some(msg) = fleet.refuse_channel(&self.channel) {
            return Err(cx.at("channel", msg));
        }
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let server = r.server.clone().ok_or_else(|| Error::infra("the update server is not running"))?;
        let channel = self.channel.as_str();
        let done = server.fleet(|f, t| match self.op {
            Op::Advance if f.advance(t, channel) => {
                Ok(format!("advance: wave {} open", f.rollout(channel).map_or(0, |r| r.open_waves())))
            }
            Op::Advance => Err(format!("no wave of channel {channel} left to open (or its rollout is not rolling)")),
            op => f.set_state(t, channel, op.name()).map(|()| op.name().to_string()),
        });
        let detail = done.map_err(|e| r.failure(e))?;
        r.record(Event::Rollout { channel: self.channel.clone(), detail });
        Ok(())
    }
}
