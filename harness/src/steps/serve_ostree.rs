//! `serve_ostree`: Publish an OSTree image's commit on the update server: the harness serves the arch's archive repo at `/ostree/` and answers the booted image's branch (`refs/heads/devlab/<image>`) with this image's commit, so `ostree admin upgrade` on the device pulls it.

use super::prelude::*;

/// Publish an OSTree image's commit on the update server: the harness
/// serves the arch's archive repo at `/ostree/` and answers the booted
/// image's branch (`refs/heads/devlab/<image>`) with this image's commit,
/// so `ostree admin upgrade` on the device pulls it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOstree {
    /// An OSTree image recipe (`images/recipes/<image>.toml` with `[ostree]`).
    pub image: toml::Spanned<String>,
    /// Also generate a static delta from the commit the branch pointed at
    /// before (what the device has) to this one; the device's pull finds
    /// it at `deltas/…/superblock` and fetches it instead of loose objects.
    #[serde(default)]
    pub delta: bool,
}

impl StepKind for ServeOstree {
    fn lab(&self) -> bool {
        true
    }

    super::serves_image!();

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.scenario.ostree_recipe(&cx.root, &self.image)?;
        cx.scenario.ostree_recipe(&cx.root, &cx.image)?;
        cx.server = true;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let o = self;
        let name = o.image.get_ref().clone();
        let recipe = r.scenario.recipe_for(&crate::rundir::workspace_root(), &o.image)?;
        let image = devlab_images::locate(&recipe, r.board.arch)?;
        let (Some(served), Some(booted)) = (image.manifest.ostree, r.image.manifest.ostree.clone()) else {
            return Err(r.failure(format!("`{name}` and the scenario's image must both be OSTree images")));
        };
        let from = r.ostree.published.clone().unwrap_or_else(|| booted.commit.clone());
        if o.delta && from != served.commit {
            let (repo, to) = (served.repo.clone(), served.commit.clone());
            blocking(move || {
                devlab_images::ostree::static_delta(&repo, &from, &to).map_err(|e| Error::infra(e.to_string()))
            })
            .await?;
        }
        r.start_server().await?;
        let server = r.server.as_ref().expect("started");
        server.serve_ostree_repo(served.repo.clone(), o.delta);
        server.publish_ostree(&booted.branch, &served.commit);
        r.ostree.published = Some(served.commit.clone());
        r.ostree.insert(&name, &served.commit);
        r.record(Event::OstreeServed { image: name, delta: o.delta });
        Ok(())
    }
}
