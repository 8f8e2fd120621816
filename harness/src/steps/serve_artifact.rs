//! `serve_artifact`: Publish one of a device's own update artifacts (its profile's `[update] artifacts`), as the team built it, on the update server.

use super::prelude::*;
use crate::device::ArtifactSource;

/// Publish one of a device's own update artifacts (its profile's
/// `[update] artifacts`: a RAUC bundle, an image, any file) on the update
/// server at `/files/<arch>/<artifact><ext>`, byte for byte, for every
/// arch of the run's machines; an OSTree repo is served as it is (its own
/// refs, objects and deltas) below `/files/<arch>/<artifact>/`. Download
/// faults (`http_fault`, on an OSTree repo's objects) and power-cut
/// triggers on its requests apply as to devlab's own releases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArtifact {
    /// The artifact's name in the profile.
    pub artifact: String,
}

/// The name an artifact is served under: a file's, its name and the
/// file's own extensions (`good` + `bundle-v2.raucb` → `good.raucb`); an
/// OSTree repo's, its name (the repo's files are below it).
pub fn served_name(artifact: &str, source: &ArtifactSource) -> String {
    let ArtifactSource::File(path) = source else { return artifact.to_string() };
    let file = std::path::Path::new(path);
    let base = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match base.split_once('.') {
        Some((_, ext)) => format!("{artifact}.{ext}"),
        None => artifact.to_string(),
    }
}

impl StepKind for ServeArtifact {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(d) = cx.scenario.device.clone() else {
            return Err(cx.at("action", "serve_artifact serves a device profile's artifacts: the scenario has no device"));
        };
        let Some(u) = &d.update else {
            return Err(cx.at("artifact", format!("device `{}` has no [update] artifacts", d.name)));
        };
        if !u.artifacts.contains_key(&self.artifact) {
            let known: Vec<&str> = u.artifacts.keys().map(String::as_str).collect();
            let msg = format!("device `{}` has no artifact `{}` (it has: {})", d.name, self.artifact, known.join(", "));
            return Err(cx.at("artifact", msg));
        }
        cx.server = true;
        cx.bundles.push(format!("artifact:{}", self.artifact));
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let device = r.scenario.device.clone().expect("checked: a device scenario");
        r.start_server().await?;
        let source = device.update.as_ref().and_then(|u| u.artifacts.get(&self.artifact)).expect("checked").get_ref();
        let name = served_name(&self.artifact, source);
        let arches = r.lab_arches.clone();
        for arch in arches {
            let path = device.artifact(&self.artifact, arch).expect("checked: the artifact exists");
            if let ArtifactSource::Ostree { .. } = source {
                r.server.as_ref().expect("started").add_dir(arch.uname(), &name, path);
                continue;
            }
            let bytes = blocking(move || {
                std::fs::read(&path).map_err(|e| Error::infra(format!("reading {}: {e}", path.display())))
            })
            .await?;
            r.server.as_ref().expect("started").add_file(arch.uname(), &name, bytes);
        }
        let ostree_ref = source.ostree_ref(r.board.arch);
        r.record(Event::ArtifactServed { name: self.artifact.clone(), file: name, ostree_ref });
        Ok(())
    }
}
