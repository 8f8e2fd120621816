//! RAUC support: the test PKI (a CA, a release signing pair, and an
//! untrusted pair for refusal tests), the device's `/etc/rauc/system.conf`
//! and signed bundles made with the host's `rauc bundle`.
//!
//! Invariants: the PKI is generated once per cache into `keys/rauc/` (made
//! in a temp folder and renamed, so a half-made set is never used); it is a
//! test secret that protects nothing and is never committed. A bundle is
//! cached beside its image and published whole (temp file, no-clobber
//! rename), so concurrent runs never see a torn bundle.
use crate::tools::Tool;
use crate::{BuiltImage, ImageError, Partition};
use std::path::{Path, PathBuf};

/// Who signs a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signer {
    /// The release key, certified by the CA in the device's keyring.
    Release,
    /// A self-signed key the device does not trust (must be refused).
    Untrusted,
}

impl Signer {
    pub fn as_str(self) -> &'static str {
        match self {
            Signer::Release => "release",
            Signer::Untrusted => "untrusted",
        }
    }
}

/// Paths of the test PKI.
#[derive(Debug, Clone)]
pub struct RaucKeys {
    /// The CA certificate: the device's keyring.
    pub ca_cert: PathBuf,
    dir: PathBuf,
}

impl RaucKeys {
    fn pair(&self, signer: Signer) -> (PathBuf, PathBuf) {
        let n = signer.as_str();
        (self.dir.join(format!("{n}.pem")), self.dir.join(format!("{n}.key")))
    }
}

const SIGNING_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

fn ec_req(dir: &Path, name: &str, subject: &str, self_signed: bool) -> Result<(), ImageError> {
    let mut t = Tool::new("openssl")?.arg("req");
    if self_signed {
        t = t.args(["-x509", "-days", "36500"]);
    }
    t = t
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject, "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.{}", if self_signed { "pem" } else { "csr" })));
    if self_signed && name == "ca" {
        t = t.args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    t.run().map(|_| ())
}

/// The test PKI, generated on first use into `<cache_root>/keys/rauc/`.
pub fn rauc_keys(root: &Path) -> Result<RaucKeys, ImageError> {
    let dir = root.join("keys").join("rauc");
    let keys = RaucKeys { ca_cert: dir.join("ca.pem"), dir: dir.clone() };
    if keys.ca_cert.is_file() {
        return Ok(keys);
    }
    crate::make_keys_once(root, "rauc", |tmp| {
        ec_req(tmp, "ca", "/O=devlab/CN=devlab test CA", true)?;
        ec_req(tmp, "release", "/O=devlab/CN=devlab release signing", false)?;
        let ext = tmp.join("release.ext");
        std::fs::write(&ext, SIGNING_EXT).map_err(ImageError::io(&ext))?;
        Tool::new("openssl")?
            .args(["x509", "-req", "-days", "36500", "-set_serial", "2", "-in"])
            .arg(tmp.join("release.csr"))
            .arg("-CA")
            .arg(tmp.join("ca.pem"))
            .arg("-CAkey")
            .arg(tmp.join("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(tmp.join("release.pem"))
            .run()?;
        ec_req(tmp, "untrusted", "/O=elsewhere/CN=untrusted signer", true)
    })?;
    Ok(keys)
}

/// `/etc/rauc/system.conf` for a disk with `partitions` (slots on
/// `rootfs-a`/`rootfs-b`, RAUC's U-Boot backend with `BOOT_ORDER` and
/// `BOOT_<x>_LEFT`, state on the data partition, bundles mounted under /run
/// because the root filesystem is read-only).
pub fn system_conf(compatible: &str, partitions: &[Partition]) -> String {
    let index = |label: &str| partitions.iter().find(|p| p.label == label).map_or(0, |p| p.index);
    format!(
        "[system]\ncompatible={compatible}\nbootloader=uboot\nmountprefix=/run/rauc\n\
         data-directory=/data/rauc\nbundle-formats=plain\nmax-bundle-download-size=536870912\nboot-attempts-primary=1\n\n\
         [keyring]\npath=/etc/rauc/keyring.pem\n\n\
         [slot.rootfs.0]\ndevice=/dev/vda{}\ntype=ext4\nbootname=A\n\n\
         [slot.rootfs.1]\ndevice=/dev/vda{}\ntype=ext4\nbootname=B\n",
        index("rootfs-a"),
        index("rootfs-b")
    )
}

/// The bundle of `image`'s root slot signed by `signer`, built on first
/// use into the image's cache entry. `image` must be a RAUC image.
pub fn bundle(image: &BuiltImage, signer: Signer) -> Result<PathBuf, ImageError> {
    let Some(compatible) = image.manifest.rauc_compatible.as_deref() else {
        return Err(ImageError::invalid(
            &image.dir,
            format!("image `{}` has no [rauc] table in its recipe: not a RAUC image", image.manifest.recipe),
        ));
    };
    let out = image.dir.join(format!("bundle-{}-{}.raucb", image.manifest.recipe, signer.as_str()));
    if out.is_file() {
        return Ok(out);
    }
    let keys = rauc_keys(&crate::cache_root())?;
    let work =
        tempfile::Builder::new().prefix(".bundle-").tempdir_in(&image.dir).map_err(ImageError::io(&image.dir))?;
    let content = work.path().join("content");
    std::fs::create_dir(&content).map_err(ImageError::io(&content))?;
    let manifest = format!(
        "[update]\ncompatible={compatible}\nversion={}\ndescription=devlab {} ({})\n\n\
         [bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n",
        image.manifest.version, image.manifest.recipe, image.manifest.arch
    );
    let mpath = content.join("manifest.raucm");
    std::fs::write(&mpath, manifest).map_err(ImageError::io(&mpath))?;
    let slot = content.join("rootfs.ext4");
    std::fs::hard_link(&image.rootfs, &slot)
        .or_else(|_| std::fs::copy(&image.rootfs, &slot).map(|_| ()))
        .map_err(ImageError::io(&slot))?;
    let (cert, key) = keys.pair(signer);
    let tmp = work.path().join("bundle.raucb");
    Tool::new("rauc")?
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("bundle")
        // zstd: 1.3 s for 68 MB against 10 s with the default (VERIFIED.md);
        // Debian's kernels read zstd squashfs.
        .arg("--mksquashfs-args=-comp zstd -Xcompression-level 3")
        .arg(&content)
        .arg(&tmp)
        .run()?;
    match std::fs::hard_link(&tmp, &out) {
        Ok(()) => Ok(out),
        Err(_) if out.is_file() => Ok(out),
        Err(e) => Err(ImageError::io(&out)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_pki_is_made_once_and_chains_to_its_ca() {
        let d = tempfile::tempdir().unwrap();
        let keys = rauc_keys(d.path()).unwrap();
        let ca = std::fs::read(&keys.ca_cert).unwrap();
        // The release cert verifies against the CA; the untrusted one does not.
        let verify = |cert: &Path| {
            std::process::Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&keys.ca_cert)
                .arg(cert)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(&keys.pair(Signer::Release).0));
        assert!(!verify(&keys.pair(Signer::Untrusted).0));
        // A second call reuses the set; no temp folder is left.
        assert_eq!(std::fs::read(&rauc_keys(d.path()).unwrap().ca_cert).unwrap(), ca);
        assert_eq!(std::fs::read_dir(d.path().join("keys")).unwrap().count(), 1);
    }

    #[test]
    fn system_conf_names_the_slot_partitions() {
        let p = |index, label: &str| Partition { index, label: label.into(), start: 0, size: 0, fs: String::new() };
        let conf = system_conf("devlab", &[p(1, "boot"), p(4, "rootfs-a"), p(5, "rootfs-b")]);
        assert!(conf.contains("[slot.rootfs.0]\ndevice=/dev/vda4\ntype=ext4\nbootname=A"), "{conf}");
        assert!(conf.contains("[slot.rootfs.1]\ndevice=/dev/vda5\ntype=ext4\nbootname=B"), "{conf}");
        assert!(conf.contains("compatible=devlab\nbootloader=uboot"), "{conf}");
    }
}
