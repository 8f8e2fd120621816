//! The run's provisioning lab: the real provisioning service
//! (`devlab-provision`, in-process) with the scenario's `[provision]`
//! profiles, its database and request log in the run directory, the files
//! it serves, and the TFTP folder the user network hands to iPXE.
//!
//! Layout under `<run>/provision/`:
//! - `provision.db`: the service's SQLite database (kept with the run);
//! - `profiles/<name>.toml`: one generated profile per `[provision]` entry
//!   (the image's kernel and initramfs, the install image and its SHA-256,
//!   [`INSTALL_SCRIPT`]);
//! - `boot/mgmt/<arch>/vmlinuz|initrd.img`: the management OS (the `mgmt`
//!   image), `boot/images/<profile>.img.gz`: the install images (links into
//!   the image cache; a `corrupt_image` profile gets a damaged copy);
//! - `tftp/boot.ipxe`: chains `http://10.0.2.2:<port>/ipxe/${uuid}` (iPXE);
//! - `tftp/boot.scr.uimg`, `tftp/pxelinux.cfg/`, `tftp/mgmt`: U-Boot's
//!   network boot, kept up to date by the service
//!   (`devlab_provision::pxelinux`).
//!
//! Invariants: nothing here changes the image cache except through
//! `devlab_images::install_image` (atomic); the service listens on
//! 127.0.0.1 only (slirp's 10.0.2.2 reaches it) and stops with the lab.

use crate::error::{Error, InputError, Result};
use crate::scenario::{ProfileSpec, ProvisionSpec, Scenario};
use devlab_images::Arch;
use devlab_provision::{ServerHandle, Service};
use std::path::{Path, PathBuf};

/// The install script every generated profile carries. The image is a
/// gzip'd raw disk. Everything but the first MiB is written first and the
/// first MiB (protective MBR, GPT header and table) last, each synced: a
/// node that loses power mid-write has no partition table, so no firmware
/// boots a half-written disk, and the next network boot installs again.
pub const INSTALL_SCRIPT: &str = "\
# devlab install script: $IMAGE (gzip'd raw disk) onto $DISK.
# The first MiB (MBR + GPT) goes last: a half-written disk has no partition table.
gunzip -c \"$IMAGE\" | dd of=\"$DISK\" bs=1M skip=1 seek=1 iflag=fullblock conv=fsync
gunzip -c \"$IMAGE\" | dd of=\"$DISK\" bs=1M count=1 iflag=fullblock conv=fsync
echo \"devlab-install: wrote $DISK\"
";

/// The image recipe of the management OS.
pub const MGMT_IMAGE: &str = "mgmt";

/// A running provisioning lab.
pub struct Lab {
    pub service: Service,
    server: Option<ServerHandle>,
    /// The TFTP folder (`boot.ipxe`, `boot.scr.uimg`, `pxelinux.cfg/`).
    pub tftp: PathBuf,
    /// `<run>/provision/`: `provision.db`, `profiles/`, `boot/`.
    dir: PathBuf,
    /// The request log (`<run>/provision.log`), appended to across restarts.
    log: PathBuf,
    /// When the first service started: the log's clock, kept across restarts.
    log_t0: std::time::Instant,
    /// The service as the nodes reach it.
    node_url: String,
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::infra(format!("{}: {e}", what.display()))
}

/// The management OS built for `arch`, or an input error at `[provision]`
/// of `file` saying how to build it.
pub fn mgmt_image(file: &Path, text: &str, arch: Arch) -> Result<devlab_images::BuiltImage> {
    let root = crate::rundir::workspace_root();
    let recipe = root.join("images/recipes").join(format!("{MGMT_IMAGE}.toml"));
    devlab_images::locate(&recipe, arch).map_err(|e| match e {
        devlab_images::ImageError::NotBuilt { .. } | devlab_images::ImageError::Stale { .. } => {
            let offset = text.find("[provision]").unwrap_or(0);
            InputError::new(file, format!("the management OS: {e}")).at(text, offset).field("provision").into()
        }
        other => other.into(),
    })
}

/// What a lab is made for.
pub struct LabSetup<'a> {
    pub run_dir: &'a Path,
    /// The scenario (or fleet) file and its text, for input errors.
    pub file: &'a Path,
    pub text: &'a str,
    pub profiles: &'a [ProfileSpec],
    /// The arches of the nodes: a management OS and install images for each.
    pub arches: &'a [Arch],
    /// Name the generated profiles `<name>-<arch>` (nodes of several arches;
    /// a profile installs one image). Otherwise just `<name>`.
    pub per_arch_profiles: bool,
    /// The service's address as the nodes reach it (`10.0.2.2` on the user
    /// network, the bridge on a lab network).
    pub node_host: &'a str,
}

/// The service's name for `profile` on a node of `arch`.
pub fn profile_name(profile: &str, arch: Arch, per_arch: bool) -> String {
    if per_arch {
        format!("{profile}-{}", arch.uname())
    } else {
        profile.to_string()
    }
}

impl Lab {
    /// Lay out `<run>/provision/` for `spec` and start the service on
    /// 127.0.0.1 (the user network's 10.0.2.2 reaches it).
    pub async fn start(run_dir: &Path, scenario: &Scenario, spec: &ProvisionSpec, arch: Arch) -> Result<Lab> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::infra(format!("provisioning service: cannot listen on 127.0.0.1: {e}")))?;
        let setup = LabSetup {
            run_dir,
            file: &scenario.path,
            text: scenario.text(),
            profiles: &spec.profiles,
            arches: &[arch],
            per_arch_profiles: false,
            node_host: "10.0.2.2",
        };
        Self::start_with(&setup, listener).await
    }

    /// Lay out `<run>/provision/` for `setup` and serve on `listener`.
    pub async fn start_with(setup: &LabSetup<'_>, listener: tokio::net::TcpListener) -> Result<Lab> {
        let run_dir = setup.run_dir;
        let dir = run_dir.join("provision");
        let profiles = dir.join("profiles");
        let boot = dir.join("boot");
        let images = boot.join("images");
        let tftp = dir.join("tftp");
        for d in [&profiles, &images, &tftp] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let root = crate::rundir::workspace_root();
        for &arch in setup.arches {
            let mgmt_dir = boot.join("mgmt").join(arch.uname());
            std::fs::create_dir_all(&mgmt_dir).map_err(io(&mgmt_dir))?;
            let mgmt = mgmt_image(setup.file, setup.text, arch)?;
            for name in [devlab_images::NETBOOT_KERNEL, devlab_images::NETBOOT_INITRD] {
                let link = mgmt_dir.join(name);
                std::os::unix::fs::symlink(mgmt.dir.join(name), &link).map_err(io(&link))?;
            }
            for p in setup.profiles {
                let name = profile_name(p.name.get_ref(), arch, setup.per_arch_profiles);
                let built = crate::scenario::locate_image(setup.file, setup.text, &root, &p.image, arch)?;
                let image = built.clone();
                let (gz, sum) = tokio::task::spawn_blocking(move || devlab_images::install_image(&image))
                    .await
                    .map_err(|e| Error::infra(format!("making the install image: {e}")))??;
                let served = images.join(format!("{name}.img.gz"));
                if p.corrupt_image {
                    corrupt_copy(&gz, &served)?;
                } else {
                    std::os::unix::fs::symlink(&gz, &served).map_err(io(&served))?;
                }
                let toml = profile_toml(&built, &format!("images/{name}.img.gz"), &sum);
                let file = profiles.join(format!("{name}.toml"));
                std::fs::write(&file, toml).map_err(io(&file))?;
            }
        }
        let log = run_dir.join("provision.log");
        let log_t0 = std::time::Instant::now();
        let service = open_service(&dir, &log, log_t0)?;
        let server = service.serve(listener);
        let port = server.local_addr().port();
        let node_url = format!("http://{}:{port}", setup.node_host);
        let script = format!("#!ipxe\nchain {node_url}/ipxe/${{uuid}}?arch=${{buildarch}}\n");
        let file = tftp.join(crate::board::Pxe::Ipxe.bootfile());
        std::fs::write(&file, script).map_err(io(&file))?;
        let lab = Lab { service, server: Some(server), tftp, dir, log, log_t0, node_url };
        lab.serve_pxelinux()?;
        Ok(lab)
    }

    /// U-Boot nodes: `boot.scr.uimg`, `pxelinux.cfg/`, `mgmt` in the TFTP
    /// folder (kept up to date by the service on every change).
    fn serve_pxelinux(&self) -> Result<()> {
        self.service
            .serve_pxelinux(&self.tftp, &self.node_url)
            .map_err(|e| Error::infra(format!("provisioning service TFTP folder: {e}")))
    }

    /// Stop the service (waiting for the requests in flight), delete the
    /// profile files of `remove` (service names), and open the service
    /// again from the same database and folders, listening on the same
    /// address (the nodes were told that URL). Armed faults do not
    /// survive; the nodes' states do.
    pub async fn restart(&mut self, remove: &[String]) -> Result<()> {
        let Some(addr) = self.server.as_ref().map(ServerHandle::local_addr) else {
            return Err(Error::infra("the provisioning service is not serving".to_string()));
        };
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::infra(format!("provisioning service: listening on {addr} again: {e}")))?;
        for name in remove {
            let file = self.dir.join("profiles").join(format!("{name}.toml"));
            std::fs::remove_file(&file).map_err(io(&file))?;
        }
        self.service = open_service(&self.dir, &self.log, self.log_t0)?;
        self.server = Some(self.service.serve(listener));
        self.serve_pxelinux()
    }

    /// Stop serving (the database stays in the run directory).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown().await;
        }
    }
}

/// The service of the lab laid out in `dir`, logging requests to `log`
/// (times since `t0`).
fn open_service(dir: &Path, log: &Path, t0: std::time::Instant) -> Result<Service> {
    let service = Service::open_serving(&dir.join("provision.db"), &dir.join("profiles"), &dir.join("boot"))
        .map_err(|e| Error::infra(format!("starting the provisioning service: {e}")))?;
    service.set_request_log(log, t0).map_err(|e| Error::infra(format!("provisioning service log: {e}")))?;
    Ok(service)
}

/// The profile file for an image: its own kernel and initramfs, the
/// install image (a path under the service's boot folder) and its SHA-256.
fn profile_toml(image: &devlab_images::BuiltImage, rel_image: &str, sha256: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "# Generated by devlab for this run.\nkernel = {}\ninitrd = {}\ncmdline = {}\nimage = {}\nimage_sha256 = {}\ninstall_script = {}\n",
        q(&image.dir.join(devlab_images::NETBOOT_KERNEL).to_string_lossy()),
        q(&image.dir.join(devlab_images::NETBOOT_INITRD).to_string_lossy()),
        q(&format!("devlab image {} {}", image.manifest.recipe, image.manifest.version)),
        q(rel_image),
        q(sha256),
        q(INSTALL_SCRIPT),
    )
}

/// A copy of `from` with one byte in the middle changed: same size, wrong
/// checksum (what a flaky mirror or a bad disk hands out).
fn corrupt_copy(from: &Path, to: &Path) -> Result<()> {
    let mut bytes = std::fs::read(from).map_err(io(from))?;
    if let Some(mid) = bytes.len().checked_div(2).filter(|_| !bytes.is_empty()) {
        bytes[mid] ^= 0xff;
    }
    std::fs::write(to, bytes).map_err(io(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_script_writes_the_partition_table_last() {
        let lines: Vec<&str> = INSTALL_SCRIPT.lines().filter(|l| l.starts_with("gunzip")).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("skip=1 seek=1"), "{}", lines[0]);
        assert!(lines[1].contains("count=1") && !lines[1].contains("seek"), "{}", lines[1]);
        assert!(lines.iter().all(|l| l.contains("conv=fsync")));
    }

    #[test]
    fn corrupt_copy_keeps_the_size_and_changes_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"0123456789").unwrap();
        corrupt_copy(&a, &b).unwrap();
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(x.len(), y.len());
        assert_ne!(x, y);
        assert_eq!(x.iter().zip(&y).filter(|(p, q)| p != q).count(), 1);
    }
}
