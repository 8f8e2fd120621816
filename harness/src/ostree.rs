//! The OSTree update flavour's own state and parsing: the commits a run
//! knows by image name (for `{commit:<image>}`, `assert_ostree` and the
//! snapshot's `[commit:<image>]` redactions), the commit last published on
//! the device's branch, and `ostree admin status` (Debian's ostree 2022.7
//! text output: the deployments in order, each with its commit, serial,
//! state marker and `Version:`). No I/O besides reading image manifests;
//! the steps run the commands over SSH.

use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A deployment's marker in `ostree admin status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// `*`: running now.
    Booted,
    /// `(pending)`: boots next (listed before the booted one).
    Pending,
    /// `(rollback)`: listed after the booted one.
    Rollback,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Booted => "booted",
            DeploymentState::Pending => "pending",
            DeploymentState::Rollback => "rollback",
        }
    }
}

/// The commits a run knows: image name -> checksum, and what `serve_ostree`
/// last published on the device's branch.
#[derive(Debug, Default, Clone)]
pub struct Commits {
    known: BTreeMap<String, String>,
    /// The commit `serve_ostree` last published.
    pub published: Option<String>,
}

impl Commits {
    pub fn insert(&mut self, image: &str, commit: &str) {
        self.known.insert(image.to_string(), commit.to_string());
    }

    /// The commit of image `name`: one the run knows, else its last build
    /// for `arch`.
    pub fn of(&mut self, name: &str, arch: devlab_images::Arch) -> Result<String, String> {
        if let Some(c) = self.known.get(name) {
            return Ok(c.clone());
        }
        let recipe = crate::rundir::workspace_root().join("images/recipes").join(format!("{name}.toml"));
        let image = devlab_images::locate(&recipe, arch).map_err(|e| e.to_string())?;
        let Some(o) = image.manifest.ostree else {
            return Err(format!("image `{name}` is not an OSTree image"));
        };
        self.known.insert(name.to_string(), o.commit.clone());
        Ok(o.commit)
    }

    /// Replaces `{commit:<image>}` in `s` with that image's commit.
    pub fn subst(&mut self, s: &str, arch: devlab_images::Arch) -> Result<String, String> {
        static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
        let re = RE.get_or_init(|| Regex::new(r"\{commit:([A-Za-z0-9_.-]+)\}").expect("static regex"));
        let mut out = s.to_string();
        let names: Vec<String> = re.captures_iter(s).map(|c| c[1].to_string()).collect();
        for name in names {
            let commit = self.of(&name, arch)?;
            out = out.replace(&format!("{{commit:{name}}}"), &commit);
        }
        Ok(out)
    }

    /// The image a commit belongs to, if the run knows it.
    pub fn name_of(&self, commit: &str) -> Option<&str> {
        self.known.iter().find(|(_, v)| v.as_str() == commit).map(|(k, _)| k.as_str())
    }

    /// (commit, `[commit:<image>]`) for the snapshot's redactor.
    pub fn redactions(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.known.iter().map(|(name, c)| (c.clone(), format!("[commit:{name}]")))
    }
}

/// One deployment line of `ostree admin status` and its `Version:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub os: String,
    pub commit: String,
    pub serial: u32,
    pub state: DeploymentState,
    /// The commit's `version` metadata (empty when it has none).
    pub version: String,
}

/// Parses the status text. Lines look like `* devlab <csum>.0`,
/// `  devlab <csum>.0 (rollback)`, then indented `Version: 2` and
/// `origin refspec: …` lines. A line that is neither is ignored.
pub fn parse_status(text: &str) -> Vec<Deployment> {
    let mut out: Vec<Deployment> = Vec::new();
    for line in text.lines() {
        let booted = line.starts_with("* ");
        let rest = if booted { &line[2..] } else { line.strip_prefix("  ").unwrap_or("") };
        if rest.starts_with(' ') || rest.is_empty() {
            if let Some(v) = line.trim().strip_prefix("Version:") {
                if let Some(last) = out.last_mut() {
                    last.version = v.trim().to_string();
                }
            }
            continue;
        }
        let mut words = rest.split_whitespace();
        let (Some(os), Some(id)) = (words.next(), words.next()) else { continue };
        let Some((commit, serial)) = id.split_once('.') else { continue };
        if commit.len() != 64 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let label = words.next().unwrap_or("");
        let state = match (booted, label) {
            (true, _) => DeploymentState::Booted,
            (false, "(pending)") => DeploymentState::Pending,
            (false, "(rollback)") => DeploymentState::Rollback,
            // Unlabelled (no booted deployment, e.g. read from outside).
            (false, _) if out.iter().any(|d| d.state == DeploymentState::Booted) => DeploymentState::Rollback,
            (false, _) => DeploymentState::Pending,
        };
        out.push(Deployment {
            os: os.to_string(),
            commit: commit.to_string(),
            serial: serial.parse().unwrap_or(0),
            state,
            version: String::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "8bf3bc736a35e2d048ddf4c7868979617ace2e1a1354e0960c4674eacb75666e";
    const B: &str = "95bc11e2c981fdf5fc3f69b4dd71faa464931ab1a83c5356e1d0e0d9db6db88b";

    #[test]
    fn pending_booted_rollback() {
        let text = format!(
            "  devlab {A}.0 (pending)\n    Version: 2\n    origin refspec: devlab:devlab/ostree\n\
             * devlab {B}.0\n    Version: 1\n    origin refspec: devlab:devlab/ostree\n\
             \x20 devlab {A}.1 (rollback)\n    Version: 2\n"
        );
        let d = parse_status(&text);
        let got: Vec<_> = d.iter().map(|d| (d.commit.as_str(), d.serial, d.state, d.version.as_str())).collect();
        assert_eq!(
            got,
            [
                (A, 0, DeploymentState::Pending, "2"),
                (B, 0, DeploymentState::Booted, "1"),
                (A, 1, DeploymentState::Rollback, "2")
            ]
        );
        assert_eq!(d[0].os, "devlab");
    }

    #[test]
    fn noise_is_ignored() {
        assert!(parse_status("error: not booted\n").is_empty());
        assert!(parse_status("* devlab nothex.0\n").is_empty());
        let d = parse_status(&format!("* devlab {B}.3\n"));
        assert_eq!((d[0].serial, d[0].state, d[0].version.as_str()), (3, DeploymentState::Booted, ""));
    }
}
