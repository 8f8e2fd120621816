//! OSTree images: every recipe with an `[ostree]` table becomes a commit on
//! its own branch `devlab/<recipe>` in one `archive` repo per arch
//! (`<cache>/ostree/<arch>/repo`, the repo the harness serves), and a disk
//! whose `sysroot` partition holds an OSTree sysroot with that commit
//! deployed (`ostree admin init-fs --modern`, `os-init`,
//! `sysroot.bootloader=uboot`, `pull-local`, `admin deploy`, `mke2fs -d`).
//!
//! Rootless: the sysroot steps run inside `unshare --map-root-user`
//! (files owned by uid 0 of the namespace, mapped to the caller), as does
//! `mke2fs -d`, so the ext4 image has root-owned files and the hard links
//! between the repo and the deployment. Commits carry no parent and a
//! timestamp derived from the recipe version (v2 is newer than v1, so
//! `ostree admin upgrade` accepts it; nothing depends on the build time)
//! and no ref binding (the harness publishes a commit under the booted
//! image's branch, which a binding to `devlab/<recipe>` would refuse).
//!
//! Invariants: the commit tree has `/usr/etc` and no `/etc`, the kernel and
//! initramfs in `/usr/lib/modules/<kver>/`, `/sysroot`, an empty `/boot`
//! and `/ostree -> sysroot/ostree`; the deployment's origin is
//! `devlab:devlab/<recipe>`, so a guest adds the remote `devlab` and
//! upgrades from the harness server.
use crate::tools::Tool;
use crate::{Arch, ImageError};
use std::path::{Path, PathBuf};

/// The remote name every deployment's origin refers to.
pub const REMOTE: &str = "devlab";

/// The archive repo shared by every OSTree recipe of `arch`.
pub fn repo_path(root: &Path, arch: Arch) -> PathBuf {
    root.join("ostree").join(arch.to_string()).join("repo")
}

/// The branch a recipe's commit is on.
pub fn branch(recipe: &str) -> String {
    format!("devlab/{recipe}")
}

/// Creates the archive repo if it does not exist yet (in a temp folder
/// renamed into place, so a half-made repo is never used).
pub fn ensure_repo(root: &Path, arch: Arch) -> Result<PathBuf, ImageError> {
    let repo = repo_path(root, arch);
    if repo.join("config").is_file() {
        return Ok(repo);
    }
    let parent = repo.parent().expect("repo has a parent");
    std::fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
    let tmp = parent.join(format!("repo.{}", crate::cache::tmp_suffix()));
    let _ = std::fs::remove_dir_all(&tmp);
    Tool::new("ostree")?.arg(format!("--repo={}", tmp.display())).args(["init", "--mode=archive"]).run()?;
    if std::fs::rename(&tmp, &repo).is_err() {
        // Made meanwhile by another build: keep theirs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(repo)
}

/// The commit timestamp for a recipe version: 2024-01-01 plus one day per
/// version number (a version without a leading number counts as 0).
pub fn timestamp(version: &str) -> String {
    let n: u64 = version.chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap_or(0);
    let secs = 1_704_067_200 + n * 86_400;
    format!("@{secs}")
}

/// Commits `tar` (a root tree already in OSTree layout) to `branch` and
/// returns the commit checksum.
pub fn commit(repo: &Path, tar: &Path, branch: &str, version: &str, subject: &str) -> Result<String, ImageError> {
    // Parallel builds commit to one repo: one commit at a time.
    let _lock = crate::cache::lock(&repo.join(".devlab-commit.lock"))?;
    let out = Tool::new("ostree")?
        .arg(format!("--repo={}", repo.display()))
        .arg("commit")
        .arg(format!("--branch={branch}"))
        .arg(format!("--tree=tar={}", tar.display()))
        .arg("--tar-autocreate-parents")
        .arg("--parent=none")
        // No ref binding: the harness publishes any commit on the device's
        // branch (a bound commit would be refused under another ref).
        .arg("--no-bindings")
        .arg(format!("--timestamp={}", timestamp(version)))
        .arg(format!("--add-metadata-string=version={version}"))
        .arg(format!("--subject={subject}"))
        .run()?;
    let csum = String::from_utf8_lossy(&out).trim().to_string();
    if csum.len() != 64 || !csum.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ImageError::invalid(repo, format!("ostree commit printed {csum:?}, not a checksum")));
    }
    Ok(csum)
}

/// True when `repo` holds commit `csum` (the repo is shared and may have been
/// removed or pruned since an image was built).
pub fn has_commit(repo: &Path, csum: &str) -> bool {
    csum.len() == 64 && repo.join("objects").join(&csum[..2]).join(format!("{}.commit", &csum[2..])).is_file()
}

/// Builds the ext4 image of a sysroot with `branch` of `repo` deployed as
/// stateroot `os`, kernel arguments `kargs`. `work` is a scratch folder.
pub fn sysroot_image(
    repo: &Path,
    branch: &str,
    os: &str,
    kargs: &str,
    work: &Path,
    out: &Path,
    size: u64,
) -> Result<(), ImageError> {
    let sysroot = work.join("sysroot");
    std::fs::create_dir_all(&sysroot).map_err(ImageError::io(&sysroot))?;
    let karg_flags: String = kargs.split_whitespace().map(|k| format!(" --karg={}", shell_quote(k))).collect();
    // 2022.7 fails the first deploy with the uboot backend on
    // openat(boot/loader/uEnv.txt): give it an empty one to replace.
    let script = format!(
        "set -e\n\
         S={s}\n\
         ostree admin init-fs --modern \"$S\"\n\
         ostree admin os-init {os} --sysroot=\"$S\"\n\
         ostree config --repo=\"$S/ostree/repo\" set sysroot.bootloader uboot\n\
         mkdir -p \"$S/boot/loader.0\"\n\
         : > \"$S/boot/loader.0/uEnv.txt\"\n\
         ln -s loader.0 \"$S/boot/loader\"\n\
         ostree --repo=\"$S/ostree/repo\" pull-local --remote={remote} {repo} {branch}\n\
         ostree admin deploy --sysroot=\"$S\" --os={os}{karg_flags} {remote}:{branch}\n\
         mke2fs -q -F -t ext4 -L sysroot -m 0 -E root_owner=0:0 -d \"$S\" {out} {kib}k\n",
        s = shell_quote(&sysroot.to_string_lossy()),
        os = shell_quote(os),
        remote = REMOTE,
        repo = shell_quote(&repo.to_string_lossy()),
        branch = shell_quote(branch),
        out = shell_quote(&out.to_string_lossy()),
        kib = size / 1024,
    );
    for tool in ["ostree", "mke2fs", "unshare"] {
        crate::tools::find(tool)?;
    }
    Tool::new("unshare")?.args(["--map-root-user", "sh", "-c"]).arg(script).run()?;
    Ok(())
}

/// Generates the static delta `from` → `to` in `repo` (what a device that
/// has `from` pulls instead of loose objects when it upgrades to `to`).
/// Serialised with other devlab processes by a lock on the repo, since
/// parallel runs may ask for the same delta; an existing one is kept.
pub fn static_delta(repo: &Path, from: &str, to: &str) -> Result<(), ImageError> {
    let lock_path = repo.join(".devlab-delta.lock");
    let file = std::fs::File::create(&lock_path).map_err(ImageError::io(&lock_path))?;
    // Held until it drops at the end of this function.
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| ImageError::io(&lock_path)(std::io::Error::from(e)))?;
    let listed = Tool::new("ostree")?.arg(format!("--repo={}", repo.display())).args(["static-delta", "list"]).run()?;
    if String::from_utf8_lossy(&listed).lines().any(|l| l.trim() == format!("{from}-{to}")) {
        return Ok(());
    }
    Tool::new("ostree")?
        .arg(format!("--repo={}", repo.display()))
        .args(["static-delta", "generate"])
        .arg(format!("--from={from}"))
        .arg(format!("--to={to}"))
        .run()?;
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_order_by_version() {
        assert_eq!(timestamp("1"), "@1704153600");
        assert!(timestamp("2") > timestamp("1"));
        assert_eq!(timestamp("2-panic"), timestamp("2"));
        assert_eq!(timestamp("x"), "@1704067200");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
