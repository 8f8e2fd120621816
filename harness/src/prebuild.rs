//! Before a run boots anything: the guest images its jobs need, built when
//! missing or stale, several at once with progress and an estimate
//! ([`devlab_images::batch`]). A fresh machine's first `devlab run
//! scenarios/boot-smoke.toml` builds the two images it boots, not all of
//! them; `cargo xtask images` still builds everything.
//!
//! Invariants: what a job needs is read from its scenario alone (the disk
//! image of each machine, every image a step serves or a `[provision]`
//! profile installs, the management OS of a provisioning lab), per arch of
//! the boards it runs on; a device's images are the team's own files and
//! never built here; building happens only for a run, never for `devlab
//! check` or `--list`.
use crate::error::Result;
use crate::plan::Job;
use devlab_images::Arch;
use std::path::PathBuf;

/// Every (recipe, arch) the jobs need, each once, in job order.
pub fn needed(jobs: &[Job]) -> Result<Vec<(PathBuf, Arch)>> {
    let root = crate::rundir::workspace_root();
    let mut out: Vec<(PathBuf, Arch)> = Vec::new();
    let mut add = |recipe: PathBuf, arch: Arch| {
        if !out.contains(&(recipe.clone(), arch)) {
            out.push((recipe, arch));
        }
    };
    for job in jobs {
        let s = &job.scenario;
        if s.device.is_some() {
            continue;
        }
        for plan in s.machines_for(&job.board)? {
            let arch = plan.board.arch;
            add(s.recipe_for(&root, &plan.image)?, arch);
            for served in s.served_images() {
                add(s.recipe_for(&root, served)?, arch);
            }
            if s.provision.is_some() {
                add(root.join("images/recipes").join(format!("{}.toml", crate::provision::MGMT_IMAGE)), arch);
            }
        }
    }
    Ok(out)
}

/// Builds what the jobs need and is not built yet; returns how many images
/// they need in all.
pub fn build_missing(jobs: &[Job]) -> Result<usize> {
    let need = needed(jobs)?;
    devlab_images::batch::build_all(&need, devlab_images::batch::default_workers(), false)?;
    Ok(need.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn jobs(text: &str) -> Vec<Job> {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Scenario::load_variants(&path)
            .unwrap()
            .into_iter()
            .map(|s| {
                let boards = s.resolve_boards().unwrap();
                (s, boards)
            })
            .collect();
        crate::plan::expand(loaded)
    }

    fn names(need: &[(PathBuf, Arch)]) -> Vec<String> {
        need.iter().map(|(r, a)| format!("{}@{a}", r.file_stem().unwrap().to_string_lossy())).collect()
    }

    #[test]
    fn a_run_needs_its_disk_and_served_images_per_arch_once() {
        let j = jobs(
            "[scenario]\nname = \"n\"\nboards = [\"qemu-x86_64\", \"qemu-aarch64\"]\nimage = \"ostree\"\n\
             [[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n\
             [[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n",
        );
        let need = needed(&j).unwrap();
        assert_eq!(
            names(&need),
            ["ostree@aarch64", "ostree-v2@aarch64", "ostree@x86_64", "ostree-v2@x86_64"],
            "jobs are planned in id order; each image once"
        );
        assert!(need.iter().all(|(r, _)| r.is_file()), "{need:?}");
    }

    #[test]
    fn machines_bring_their_images_and_boards() {
        let j = jobs(
            "[scenario]\nname = \"m\"\n\
             [[machine]]\nname = \"main\"\nboard = \"qemu-x86_64\"\n\
             [[machine]]\nname = \"sub\"\nboard = \"qemu-aarch64\"\nimage = \"v2\"\n\
             [[step]]\naction = \"power_on\"\n",
        );
        assert_eq!(names(&needed(&j).unwrap()), ["base@x86_64", "v2@aarch64"]);
    }
}
