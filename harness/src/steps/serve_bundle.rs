//! `serve_bundle`: Publish a signed RAUC bundle of an image's root slot on the update server (`/bundles/<name>.raucb`), built on first use with `rauc bundle`.

use super::prelude::*;

/// Publish a signed RAUC bundle of an image's root slot on the update
/// server (`/bundles/<name>.raucb`), built on first use with `rauc bundle`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeBundle {
    /// What `rauc_install` calls it.
    pub name: String,
    /// A RAUC image recipe (`images/recipes/<image>.toml` with a `[rauc]` table).
    pub image: toml::Spanned<String>,
    /// `release` (certified by the device's keyring) or `untrusted`.
    #[serde(default = "release_signer")]
    pub signer: devlab_images::rauc::Signer,
}

fn release_signer() -> devlab_images::rauc::Signer {
    devlab_images::rauc::Signer::Release
}

impl StepKind for ServeBundle {
    fn lab(&self) -> bool {
        true
    }

    super::serves_image!();

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.scenario.recipe_for(&cx.root, &self.image)?;
        cx.server = true;
        cx.bundles.push(self.name.clone());
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let b = self;
        let recipe = r.scenario.recipe_for(&crate::rundir::workspace_root(), &b.image)?;
        let image = devlab_images::locate(&recipe, r.board.arch)?;
        r.start_server().await?;
        let signer = b.signer;
        let bytes = blocking(move || {
            let path = devlab_images::rauc::bundle(&image, signer).map_err(|e| Error::infra(e.to_string()))?;
            std::fs::read(&path).map_err(|e| Error::infra(format!("reading {}: {e}", path.display())))
        })
        .await?;
        let file = format!("{}.raucb", b.name);
        let url = r.server.as_ref().expect("started").add_bundle(&file, bytes);
        r.rauc.insert(&b.name, url);
        r.record(Event::BundleServed {
            name: b.name.clone(),
            image: b.image.get_ref().clone(),
            signer: b.signer.as_str().into(),
        });
        Ok(())
    }
}
