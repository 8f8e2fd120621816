//! `publish`: Serve an image recipe's release as `version` (every arch of
//! the lab's machines) and make it the target of a `[fleet]` channel, rolled
//! out in waves: shares of the fleet (`waves`, percentages by a stable hash
//! of the machine's id) or named groups of machines (`groups`); halted
//! after `halt_after` failed updates in one wave; the next wave opened by
//! itself once the open ones run it (`auto_advance`), else by `rollout`.

use super::prelude::*;
use crate::rollout::{Rollout, Wave};
use crate::scenario::FleetSpec;

/// Publish a release on a fleet channel, in waves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub channel: String,
    pub version: String,
    /// The image recipe whose root slot is the release (`images/recipes/<image>.toml`).
    pub image: toml::Spanned<String>,
    /// Waves as percentages of the fleet (each 1–100, at most 100 in all).
    #[serde(default)]
    pub waves: Vec<u32>,
    /// Waves as named groups of machines (each machine in one at most).
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// Failed updates in one wave that halt the rollout.
    #[serde(default = "one")]
    pub halt_after: u32,
    /// Open the next wave once every machine of the open ones runs it.
    #[serde(default = "yes")]
    pub auto_advance: bool,
}

impl Publish {
    /// The rollout, or what is wrong with it and in which field.
    fn rollout(&self) -> std::result::Result<Rollout, (&'static str, String)> {
        let (field, waves) = match (self.waves.is_empty(), self.groups.is_empty()) {
            (false, false) => return Err(("groups", "`waves` or `groups`, not both".into())),
            (false, true) => ("waves", self.waves.iter().map(|p| Wave::Share(*p)).collect()),
            (true, false) => ("groups", self.groups.iter().map(|g| Wave::Devices(g.clone())).collect()),
            (true, true) => ("waves", vec![Wave::Share(100)]),
        };
        let field = if self.halt_after == 0 { "halt_after" } else { field };
        Rollout::new(&self.version, waves, self.halt_after, self.auto_advance).map_err(|e| (field, e))
    }
}

impl StepKind for Publish {
    fn lab(&self) -> bool {
        true
    }

    super::serves_image!();

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(fleet) = &cx.scenario.fleet else {
            return Err(cx.at("action", "publish needs a [fleet] table (its channels)"));
        };
        if let Some(msg) = fleet.refuse_channel(&self.channel) {
            return Err(cx.at("channel", msg));
        }
        self.rollout().map_err(|(field, e)| cx.at(field, e))?;
        if let Some(msg) = FleetSpec::refuse_machines(&cx.scenario.machines, self.groups.iter().flatten()) {
            return Err(cx.at("groups", msg));
        }
        cx.scenario.recipe_for(&cx.root, &self.image)?;
        cx.server = true;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        super::serve_release::serve(r, &self.image, &self.version).await?;
        let rollout = self.rollout().map_err(|(_, e)| Error::infra(e))?;
        let server = r.server.clone().expect("served");
        server.fleet(|f, t| f.publish(t, &self.channel, rollout)).map_err(|e| r.failure(e))?;
        let waves = if self.groups.is_empty() {
            self.waves.iter().map(|p| format!("{p}%")).collect::<Vec<_>>()
        } else {
            self.groups.iter().map(|g| g.join("+")).collect()
        };
        let waves = if waves.is_empty() { "one wave of all".to_string() } else { format!("waves {}", waves.join(", ")) };
        let detail = format!("publish {} from {} in {waves}", self.version, self.image.get_ref());
        r.record(Event::Rollout { channel: self.channel.clone(), detail });
        Ok(())
    }
}
