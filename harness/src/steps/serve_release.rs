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
        let st = self;
        let recipe = r.scenario.recipe_for(&crate::rundir::workspace_root(), &st.image)?;
        r.start_server().await?;
        for arch in r.lab_arches.clone() {
            let image = devlab_images::locate(&recipe, arch)?;
            if image.manifest.version != st.version {
                return Err(r.failure(format!(
                    "image `{}` is version {}, not {}",
                    st.image.get_ref(),
                    image.manifest.version,
                    st.version
                )));
            }
            let key = devlab_images::release_key(&image.manifest.key);
            let file = image.dir.join(format!("release-{}-{arch}.img.gz.enc", image.manifest.recipe));
            let rootfs = image.rootfs.clone();
            let (f, k) = (file.clone(), key.clone());
            let version = st.version.clone();
            let release = blocking(move || {
                crate::update_server::package(&rootfs, &f, &k).map_err(Error::infra)?;
                crate::update_server::load_release(&version, arch.uname(), &f, &k)
                    .map_err(|e| Error::infra(format!("reading {}: {e}", f.display())))
            })
            .await?;
            r.server.as_ref().expect("started").add_release(release);
        }
        r.record(Event::ReleaseServed { version: st.version.clone(), image: st.image.get_ref().clone() });
        Ok(())
    }
}
