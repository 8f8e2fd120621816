//! `serve_release`: Build (or reuse) the release package of an image recipe and serve it from the harness's update server as `version`.

use super::prelude::*;

/// Build (or reuse) the release package of an image recipe and serve it
/// from the harness's update server as `version`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeRelease {
    pub version: String,
    /// The image recipe whose root slot is the release (`images/recipes/<image>.toml`).
    pub image: toml::Spanned<String>,
}

impl StepKind for ServeRelease {
    fn lab(&self) -> bool {
        true
    }

    super::serves_image!();

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.scenario.recipe_for(&cx.root, &self.image)?;
        cx.server = true;
        Ok(())
    }

    /// One build per arch of the lab's machines, all served as `version`.
    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        serve(r, &self.image, &self.version).await?;
        r.record(Event::ReleaseServed { version: self.version.clone(), image: self.image.get_ref().clone() });
        Ok(())
    }
}

/// Builds (or reuses) the release package of recipe `image` for every arch
/// of the lab's machines and serves each as `version` (the update server
/// started if it was not).
pub(crate) async fn serve(r: &mut Run<'_>, image: &toml::Spanned<String>, version: &str) -> Result<()> {
    r.start_server().await?;
    for arch in r.lab_arches.clone() {
        let release = release(r, image, arch).await?;
        if release.version != version {
            return Err(r.failure(format!("image `{}` is version {}, not {version}", image.get_ref(), release.version)));
        }
        r.server.as_ref().expect("started").add_release(release);
    }
    Ok(())
}

/// The release package of recipe `image` for `arch` (built once, then
/// reused), as the recipe's version.
pub(crate) async fn release(
    r: &mut Run<'_>,
    image: &toml::Spanned<String>,
    arch: devlab_images::Arch,
) -> Result<crate::update_server::Release> {
    let recipe = r.scenario.recipe_for(&crate::rundir::workspace_root(), image)?;
    let built = devlab_images::locate(&recipe, arch)?;
    let key = devlab_images::release_key(&built.manifest.key);
    let file = built.dir.join(format!("release-{}-{arch}.img.gz.enc", built.manifest.recipe));
    let rootfs = built.rootfs.clone();
    let version = built.manifest.version.clone();
    blocking(move || {
        crate::update_server::package(&rootfs, &file, &key).map_err(Error::infra)?;
        crate::update_server::load_release(&version, arch.uname(), &file, &key)
            .map_err(|e| Error::infra(format!("reading {}: {e}", file.display())))
    })
    .await
}
