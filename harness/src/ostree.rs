//! Reading `ostree admin status` (Debian's ostree 2022.7 text output): the
//! deployments in order, each with its commit, serial, state marker and
//! `Version:`. Pure parsing; the runner runs the command over SSH.
use crate::scenario::DeploymentState;

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
