//! devlab-images: builds guest disk images (GPT, FAT boot, redundant U-Boot env,
//! root slots A/B, data) from Debian packages without root, loop devices or mounts,
//! and caches them under a content key. Never spawns QEMU.
//!
//! Entry points: [`build`] (resolve, then build unless cached), [`locate`]
//! (fast lookup of the last build, no processes) and [`ubootenv`] (read the
//! redundant env back from a powered-off disk).
pub mod apt;
pub mod arch;
pub mod batch;
pub mod cache;
pub mod disk;
mod error;
pub mod initramfs;
pub mod kernel;
pub mod lock;
pub mod ostree;
pub mod rauc;
pub mod recipe;
pub mod rewrap;
pub mod rootfs;
pub mod tools;
pub mod ubootenv;

pub use arch::Arch;
pub use cache::cache_root;
pub use error::ImageError;

/// The passphrase a release package of image `image_key` is encrypted with.
/// Derived, so a cached package stays valid: a test secret, not a real one.
pub fn release_key(image_key: &str) -> String {
    cache::sha256_hex(format!("devlab-release:{image_key}").as_bytes())[..32].to_string()
}
pub use recipe::{Fault, Recipe};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A finished image in the cache.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The cache entry folder.
    pub dir: PathBuf,
    /// The read-only base disk (boot it through a qcow2 overlay).
    pub disk: PathBuf,
    /// Private key (PEM, ECDSA P-256) for `root` over SSH; `.pub` next to it.
    /// The same pair for every recipe of one arch (see [`arch_keys`]), so a
    /// release slot written onto a base disk accepts the base image's key.
    pub ssh_key: PathBuf,
    pub manifest: Manifest,
    /// The read-only ext4 slot image (`rootfs.ext4`, 0444): what a release
    /// ships; the disk holds it in both rootfs-a and rootfs-b. An OSTree
    /// image has none (its tree is a commit; see `manifest.ostree`).
    pub rootfs: PathBuf,
}

/// The per-arch key material shared by every recipe: the SSH client pair
/// and dropbear's host key.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Private client key (`id_devlab`; `id_devlab.pub` next to it).
    pub ssh_key: PathBuf,
    pub pubkey: Vec<u8>,
    /// dropbear's ed25519 host key (dropbear format).
    pub host_key: Vec<u8>,
}

/// The key material for `arch`, generated once into `<cache_root>/keys/<arch>/`
/// (in a temp folder renamed into place, so a half-made set is never used)
/// and reused by every recipe.
pub fn arch_keys(root: &Path, arch: Arch) -> Result<Keys, ImageError> {
    let dir = root.join("keys").join(arch.to_string());
    let ssh_key = dir.join("id_devlab");
    let read = |dir: &Path| -> Result<Keys, ImageError> {
        let pubp = dir.join("id_devlab.pub");
        let hostp = dir.join("dropbear_ed25519_host_key");
        Ok(Keys {
            ssh_key: dir.join("id_devlab"),
            pubkey: std::fs::read(&pubp).map_err(ImageError::io(&pubp))?,
            host_key: std::fs::read(&hostp).map_err(ImageError::io(&hostp))?,
        })
    };
    if !ssh_key.is_file() {
        make_keys_once(root, &arch.to_string(), |tmp| {
            tools::Tool::new("ssh-keygen")?
                .args(["-q", "-t", "ecdsa", "-b", "256", "-m", "PEM", "-N", "", "-C"])
                .arg(format!("devlab-{arch}"))
                .arg("-f")
                .arg(tmp.join("id_devlab"))
                .run()?;
            tools::Tool::new("dropbearkey")?
                .args(["-t", "ed25519", "-f"])
                .arg(tmp.join("dropbear_ed25519_host_key"))
                .run()?;
            Ok(())
        })?;
    }
    read(&dir)
}

/// Make `<root>/keys/<name>/` with `make` in a temp folder renamed into
/// place, so a half-made set is never used; if another build made it
/// meanwhile, theirs is kept.
pub(crate) fn make_keys_once(
    root: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> Result<(), ImageError>,
) -> Result<PathBuf, ImageError> {
    let parent = root.join("keys");
    let dir = parent.join(name);
    std::fs::create_dir_all(&parent).map_err(ImageError::io(&parent))?;
    let tmp = parent.join(format!("{name}.{}", cache::tmp_suffix()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ImageError::io(&tmp))?;
    if let Err(e) = make(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

/// What an entry contains; `manifest.json` in the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub arch: Arch,
    pub recipe: String,
    pub version: String,
    pub key: String,
    /// `uname -r` of the guest kernel.
    pub kernel_version: String,
    /// `name=version` of the kernel package.
    pub kernel_package: String,
    /// `name=version`, sorted.
    pub packages: Vec<String>,
    pub disk_size: u64,
    pub partitions: Vec<Partition>,
    pub env: EnvLayout,
    /// RAUC's `compatible` when the image is updated with RAUC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rauc_compatible: Option<String>,
    /// The commit and where it lives, for an OSTree image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostree: Option<OstreeInfo>,
}

/// An OSTree image's commit: on `branch` of the arch's archive `repo`, and
/// deployed as stateroot `os` on the image's own disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OstreeInfo {
    pub os: String,
    pub branch: String,
    pub commit: String,
    pub repo: PathBuf,
}

/// One GPT partition (bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub index: u32,
    pub label: String,
    pub start: u64,
    pub size: u64,
    pub fs: String,
}

/// Where the redundant U-Boot env lives on the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvLayout {
    /// Bytes per copy.
    pub size: u64,
    /// Copy 0, then copy 1.
    pub copies: Vec<EnvCopy>,
    /// The allow-list U-Boot imports and saves.
    pub vars: Vec<String>,
}

/// One env copy: partition index and byte offset inside the partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvCopy {
    pub partition: u32,
    pub offset: u64,
}

impl Manifest {
    /// Byte offset of env copy `i` on the disk.
    pub fn env_copy_offset(&self, i: usize) -> Option<u64> {
        let c = self.env.copies.get(i)?;
        let p = self.partitions.iter().find(|p| p.index == c.partition)?;
        Some(p.start + c.offset)
    }

    /// Reads both env copies from a (powered-off) disk image and decodes them.
    pub fn read_env(&self, disk: &Path) -> Result<ubootenv::EnvState, ImageError> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(disk).map_err(ImageError::io(disk))?;
        let mut bufs = [vec![0u8; self.env.size as usize], vec![0u8; self.env.size as usize]];
        for (i, b) in bufs.iter_mut().enumerate() {
            let off = self.env_copy_offset(i).ok_or_else(|| ImageError::invalid(disk, "manifest has no env copy"))?;
            f.read_exact_at(b, off).map_err(ImageError::io(disk))?;
        }
        Ok(ubootenv::decode(&bufs[0], &bufs[1]))
    }
}

fn timed<T>(log: &mut dyn FnMut(&str), what: &str, f: impl FnOnce() -> Result<T, ImageError>) -> Result<T, ImageError> {
    let t = Instant::now();
    let r = f()?;
    log(&format!("{what}: {:.2}s", t.elapsed().as_secs_f64()));
    Ok(r)
}

fn image_name(recipe: &Recipe, arch: Arch) -> String {
    format!("{}-{}", recipe.name, arch)
}

/// What `build` writes and `locate` reads a pointer under: the recipe's
/// inputs and the arch's locked versions.
fn pointer_key(inputs: &str, locked: Option<&lock::Lock>, arch: Arch) -> String {
    cache::pointer_inputs(inputs, locked.and_then(|l| l.get(&arch.to_string())))
}

/// The entry's kernel, for network boot.
pub const NETBOOT_KERNEL: &str = "vmlinuz";
/// The entry's initramfs, for network boot.
pub const NETBOOT_INITRD: &str = "initrd.img";

/// Builds (or finds in the cache) the image for `recipe` and `arch`, and
/// points `images/<recipe>-<arch>.<inputs16>.current` at it.
pub fn build(recipe_path: &Path, arch: Arch, log: &mut dyn FnMut(&str)) -> Result<BuiltImage, ImageError> {
    let root = cache_root();
    let images = root.join("images");
    std::fs::create_dir_all(&images).map_err(ImageError::io(&images))?;
    let (recipe, bytes) = Recipe::load(recipe_path)?;
    let lock_path = lock::path_for(recipe_path);
    let locked = lock::read(&lock_path)?;
    let inputs = cache::inputs_hash(&recipe, &bytes)?;
    let pointer_inputs = pointer_key(&inputs, locked.as_ref(), arch);
    let mut res = timed(log, "resolve packages", || {
        apt::resolve(&root, arch, &recipe.packages, &recipe.exclude, recipe.kernel_package(arch))
    })?;
    if let Some(l) = &locked {
        let downloads = root.join("downloads").join(arch.debian());
        lock::pin(l, &lock_path, arch, &mut res, &mut |r, v| apt::available(&root, &downloads, arch, r, v))?;
    }
    let keys = arch_keys(&root, arch)?;
    let mut lock: Vec<String> = res.packages.iter().map(|r| r.lock_line()).collect();
    lock.push(format!("kernel:{}", res.kernel.lock_line()));
    lock.push(format!("ssh-key:{}", String::from_utf8_lossy(&keys.pubkey).trim()));
    lock.push(format!("host-key:{}", cache::sha256_hex(&keys.host_key)));
    if let Some(r) = &recipe.rauc {
        // The generated system.conf is code's output, not a recipe input:
        // key on its text so a change to it rebuilds.
        let ca = rauc::rauc_keys(&root)?.ca_cert;
        let pem = std::fs::read(&ca).map_err(ImageError::io(&ca))?;
        lock.push(format!("rauc-ca:{}", cache::sha256_hex(&pem)));
        let conf = rauc::system_conf(&r.compatible, &disk::layout(&recipe).0);
        lock.push(format!("rauc-conf:{}", cache::sha256_hex(conf.as_bytes())));
    }
    let key = cache::entry_key(&inputs, &lock, arch);
    let name = image_name(&recipe, arch);
    let entry = images.join(format!("{name}-{}", &key[..16]));
    if !entry.join("manifest.json").is_file() || commit_missing(&entry) {
        if entry.exists() {
            // Its commit left the shared repo (removed by hand): rebuild.
            let _ = std::fs::remove_dir_all(&entry);
        }
        cache::remove_stale(&images, &format!("{name}-"));
        let tmp = images.join(format!("{name}-{}.{}", &key[..16], cache::tmp_suffix()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(ImageError::io(&tmp))?;
        let t = Instant::now();
        let built = build_entry(&root, &recipe, arch, &res, &keys, &key, &tmp, log);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if entry.exists() {
            // Built concurrently by someone else: keep theirs.
            let _ = std::fs::remove_dir_all(&tmp);
        } else {
            std::fs::rename(&tmp, &entry).map_err(ImageError::io(&entry))?;
        }
        log(&format!("built {}: {:.2}s", entry.display(), t.elapsed().as_secs_f64()));
    } else {
        log(&format!("cached {}", entry.display()));
    }
    let pointer = cache::Pointer { entry: entry.clone(), inputs: pointer_inputs };
    let json = serde_json::to_vec_pretty(&pointer).expect("pointer serialises");
    cache::write_atomic(&cache::pointer_path(&root, &recipe.name, arch, &pointer.inputs), &json)?;
    cache::prune_superseded(&images, &name, &entry);
    open_entry(&entry)
}

/// `images.lock` refreshed from apt's candidates for every recipe and arch
/// given (`cargo xtask images --lock`); returns its path.
pub fn refresh_lock(recipe_paths: &[PathBuf], arches: &[Arch]) -> Result<PathBuf, ImageError> {
    let root = cache_root();
    let Some(first) = recipe_paths.first() else {
        return Err(ImageError::invalid(".", "no recipes to lock"));
    };
    let path = lock::path_for(first);
    let mut fresh = lock::Lock::new();
    for recipe_path in recipe_paths {
        let (recipe, _) = Recipe::load(recipe_path)?;
        for &arch in arches {
            let res = apt::resolve(&root, arch, &recipe.packages, &recipe.exclude, recipe.kernel_package(arch))?;
            lock::record(&mut fresh, arch, &res);
        }
    }
    lock::write(&path, &fresh)?;
    Ok(path)
}

/// The last build for `recipe` and `arch`, if recipe and fixtures are
/// unchanged since. Fast: reads files only, runs no process.
pub fn locate(recipe_path: &Path, arch: Arch) -> Result<BuiltImage, ImageError> {
    let root = cache_root();
    let (recipe, bytes) = Recipe::load(recipe_path)?;
    let name = image_name(&recipe, arch);
    let locked = lock::read(&lock::path_for(recipe_path))?;
    let inputs = pointer_key(&cache::inputs_hash(&recipe, &bytes)?, locked.as_ref(), arch);
    let ptr_path = cache::pointer_path(&root, &recipe.name, arch, &inputs);
    let text = match std::fs::read(&ptr_path) {
        Ok(t) => t,
        // Built for another state of the recipe or its fixtures only.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !cache::pointers_of(&root.join("images"), &name).is_empty() =>
        {
            return Err(ImageError::Stale {
                image: name,
                reason: format!("{}, its fixtures or images.lock changed", recipe_path.display()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NotBuilt { image: name, path: ptr_path })
        }
        Err(e) => return Err(ImageError::io(&ptr_path)(e)),
    };
    let pointer: cache::Pointer =
        serde_json::from_slice(&text).map_err(|e| ImageError::invalid(&ptr_path, e.to_string()))?;
    if pointer.inputs != inputs {
        return Err(ImageError::Stale {
            image: name,
            reason: format!("{}, its fixtures or images.lock changed", recipe_path.display()),
        });
    }
    if !pointer.entry.join("manifest.json").is_file() {
        return Err(ImageError::NotBuilt { image: name, path: pointer.entry.join("manifest.json") });
    }
    let built = open_entry(&pointer.entry)?;
    if let Some(o) = &built.manifest.ostree {
        if !ostree::has_commit(&o.repo, &o.commit) {
            return Err(ImageError::NotBuilt { image: name, path: o.repo.join("objects") });
        }
    }
    Ok(built)
}

/// True when `entry` is an OSTree image whose commit is gone from its repo.
fn commit_missing(entry: &Path) -> bool {
    match open_entry(entry) {
        Ok(b) => b.manifest.ostree.is_some_and(|o| !ostree::has_commit(&o.repo, &o.commit)),
        Err(_) => false,
    }
}

fn open_entry(entry: &Path) -> Result<BuiltImage, ImageError> {
    let mpath = entry.join("manifest.json");
    let text = std::fs::read(&mpath).map_err(ImageError::io(&mpath))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| ImageError::invalid(&mpath, e.to_string()))?;
    Ok(BuiltImage {
        dir: entry.to_path_buf(),
        disk: entry.join("disk.raw"),
        ssh_key: entry.join("id_devlab"),
        manifest,
        rootfs: entry.join("rootfs.ext4"),
    })
}

/// Reads a boot script template and expands its `#include <file>` lines
/// (paths relative to the template; one level, no nesting). Returns the
/// text and the included files (part of the image's inputs).
pub fn read_boot_script(path: &Path) -> Result<(String, Vec<PathBuf>), ImageError> {
    let text = std::fs::read_to_string(path).map_err(ImageError::io(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = String::with_capacity(text.len());
    let mut included = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("#include ") {
            let inc = dir.join(name.trim());
            let body = std::fs::read_to_string(&inc).map_err(ImageError::io(&inc))?;
            if body.lines().any(|l| l.starts_with("#include ")) {
                return Err(ImageError::invalid(&inc, "an included script may not include another"));
            }
            out.push_str(&body);
            included.push(inc);
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok((out, included))
}

/// Substitutes the recipe's values into the boot script template.
pub fn render_boot_script(template: &str, recipe: &Recipe) -> String {
    let quote = |v: &str| format!("\"{v}\"");
    let defaults: Vec<String> = recipe.env.defaults.iter().map(|(k, v)| format!("setenv {k} {}", quote(v))).collect();
    let missing: Vec<String> =
        recipe.env.defaults.iter().map(|(k, v)| format!("env exists {k} || setenv {k} {}", quote(v))).collect();
    let mut text = template.to_string();
    for (k, v) in &recipe.env.defaults {
        text = text.replace(&format!("@DEFAULT_{k}@"), v);
    }
    text.replace("@ENV_VARS@", &recipe.env.vars.join(" "))
        .replace("@ENV_DEFAULTS@", &defaults.join("; "))
        .replace("@ENV_MISSING@", &missing.join("; "))
        .replace("@CMDLINE@", &recipe.kernel.cmdline)
}

#[allow(clippy::too_many_arguments)]
fn build_entry(
    root: &Path,
    recipe: &Recipe,
    arch: Arch,
    res: &apt::Resolution,
    keys: &Keys,
    key: &str,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let work = out.join("work");
    std::fs::create_dir_all(&work).map_err(ImageError::io(&work))?;
    let downloads = root.join("downloads").join(arch.debian());
    let mut all: Vec<&apt::Resolved> = res.packages.iter().collect();
    all.push(&res.kernel);
    let debs = timed(log, "download packages", || apt::download(root, &downloads, arch, &all))?;
    let (kernel_deb, pkg_debs) = debs.split_last().expect("kernel is last");

    // Kernel: unpacked once per package version (shared, read-only), then
    // pick vmlinuz and the module closure.
    let kroot = timed(log, "unpack kernel", || kernel::unpacked(root, arch, kernel_deb))?;
    let mods_dir = kroot.join("lib/modules");
    let kver = std::fs::read_dir(&mods_dir)
        .map_err(ImageError::io(&mods_dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| ImageError::invalid(kernel_deb, "no lib/modules/<version>"))?;
    // x86_64: the same vmlinux in a bzImage that unpacks fast under TCG.
    let vmlinuz_path = timed(log, "kernel", || rewrap::vmlinuz(root, arch, &res.kernel, &kroot, &kver))?;
    let modules = timed(log, "resolve modules", || initramfs::module_closure(&kroot, &kver, &recipe.kernel.modules))?;

    // Root filesystem tree.
    let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut tree = rootfs::Tree::new(mtime);
    timed(log, "merge packages", || {
        for deb in pkg_debs {
            tree.merge_deb(deb)?;
        }
        Ok(())
    })?;
    tree.strip(&recipe.strip);
    let busybox = match tree_file(&tree, "usr/bin/busybox") {
        Some(b) => b,
        None => {
            return Err(ImageError::invalid(
                &recipe.fixtures.init,
                "no /bin/busybox in the package set (add busybox-static)",
            ))
        }
    };
    let init = std::fs::read(&recipe.fixtures.init).map_err(ImageError::io(&recipe.fixtures.init))?;
    let initrd = timed(log, "initramfs", || initramfs::build(&busybox, &init, &modules))?;
    let vmlinuz = std::fs::read(&vmlinuz_path).map_err(ImageError::io(&vmlinuz_path))?;

    // Keys: the per-arch pair, copied into the entry (private key 0600).
    for name in ["id_devlab", "id_devlab.pub"] {
        let from = keys.ssh_key.with_file_name(name);
        std::fs::copy(&from, out.join(name)).map_err(ImageError::io(&from))?;
    }
    std::fs::set_permissions(out.join("id_devlab"), std::fs::Permissions::from_mode(0o600))
        .map_err(ImageError::io(out.join("id_devlab")))?;

    add_generated(&mut tree, recipe, key, &keys.pubkey, &keys.host_key);
    if recipe.ostree.is_some() {
        // Where `ostree admin deploy` looks for them.
        tree.file(&format!("usr/lib/modules/{kver}/vmlinuz"), 0o644, vmlinuz.clone());
        tree.file(&format!("usr/lib/modules/{kver}/initramfs.img"), 0o644, initrd.clone());
    } else {
        tree.file("boot/vmlinuz", 0o644, vmlinuz.clone());
        tree.file("boot/initrd.img", 0o644, initrd.clone());
    }
    // The kernel and initramfs on their own, for network boot (the
    // management OS is booted this way) and for the BIOS boot path.
    for (name, data) in [(NETBOOT_KERNEL, &vmlinuz), (NETBOOT_INITRD, &initrd)] {
        let p = out.join(name);
        std::fs::write(&p, data).map_err(ImageError::io(&p))?;
    }
    tree.overlay(&recipe.fixtures.rootfs_overlay)?;
    gate_env_tools(&mut tree);
    let (parts, total) = disk::layout(recipe);
    if let Some(r) = &recipe.rauc {
        let ca = rauc::rauc_keys(root)?.ca_cert;
        let pem = std::fs::read(&ca).map_err(ImageError::io(&ca))?;
        tree.dir("etc/rauc", 0o755);
        tree.file("etc/rauc/keyring.pem", 0o644, pem);
        tree.file("etc/rauc/system.conf", 0o644, rauc::system_conf(&r.compatible, &parts));
    }

    // Filesystems.
    const MIB: u64 = 1024 * 1024;
    if recipe.ostree.is_some() {
        // OSTree layout: /etc is the deployment's merge of /usr/etc; /var
        // is the stateroot's, bound over the commit's empty one.
        tree.move_prefix("etc", "usr/etc");
        tree.strip(&["var".to_string()]);
        for d in ["var", "boot", "sysroot"] {
            tree.dir(d, 0o755);
        }
        tree.symlink("ostree", "sysroot/ostree");
    }
    let tar = work.join("rootfs.tar");
    timed(log, "rootfs tar", || tree.write_tar(&tar))?;
    drop(tree);
    let rootfs_img = out.join("rootfs.ext4");
    let data_img = work.join("data.ext4");
    let sysroot_img = work.join("sysroot.ext4");
    let mut ostree_info = None;
    let mut part_images: Vec<Option<&Path>> = if let Some(o) = &recipe.ostree {
        let repo = ostree::ensure_repo(root, arch)?;
        let branch = ostree::branch(&recipe.name);
        let commit =
            timed(log, "ostree commit", || ostree::commit(&repo, &tar, &branch, &recipe.version, &recipe.pretty_name))?;
        timed(log, "ostree sysroot", || {
            ostree::sysroot_image(&repo, &branch, &o.os, &recipe.kernel.cmdline, &work, &sysroot_img, o.sysroot * MIB)
        })?;
        ostree_info = Some(OstreeInfo { os: o.os.clone(), branch, commit, repo });
        vec![None, None, None, Some(sysroot_img.as_path())]
    } else {
        timed(log, "mke2fs rootfs", || disk::mke2fs(&rootfs_img, recipe.sizes.rootfs * MIB, "rootfs", Some(&tar)))?;
        disk::mke2fs(&data_img, recipe.sizes.data * MIB, "data", None)?;
        vec![None, None, None, Some(&rootfs_img), Some(&rootfs_img), Some(&data_img)]
    };
    let (template, _) = read_boot_script(&recipe.fixtures.boot_script)?;
    let cmd = work.join("boot.cmd");
    std::fs::write(&cmd, render_boot_script(&template, recipe)).map_err(ImageError::io(&cmd))?;
    let scr = work.join("boot.scr");
    let boot_img = work.join("boot.vfat");
    // x86 A/B disks can also be booted by a plain BIOS (slot A).
    let bios = (arch == Arch::X86_64 && recipe.ostree.is_none()).then(|| disk::BiosBoot {
        work: &work,
        vmlinuz: &vmlinuz,
        initrd: &initrd,
        cmdline: format!("console=ttyS0,115200 devlab.slot=A rauc.slot=A {}", recipe.kernel.cmdline),
    });
    timed(log, "boot partition", || {
        disk::mkimage_script(&cmd, &scr)?;
        disk::boot_fat(&boot_img, recipe.sizes.boot * MIB, &scr, bios.as_ref())
    })?;

    // Env copies: both valid with the defaults, copy 0 current (flag 1).
    let size = recipe.env.size as usize;
    let env0 = ubootenv::encode_copy(&recipe.env.defaults, 1, size)
        .map_err(|e| ImageError::invalid(&recipe.fixtures.boot_script, e.to_string()))?;
    let env1 = ubootenv::encode_copy(&recipe.env.defaults, 0, size)
        .map_err(|e| ImageError::invalid(&recipe.fixtures.boot_script, e.to_string()))?;
    let disk_path = out.join("disk.raw");
    part_images[0] = Some(&boot_img);
    timed(log, "assemble disk", || {
        disk::assemble(&disk_path, &parts, total, &part_images, &[(parts[1].start, &env0), (parts[2].start, &env1)])?;
        if bios.is_some() {
            disk::write_gpt_mbr(&disk_path)?;
        }
        Ok(())
    })?;
    for p in [&disk_path, &rootfs_img] {
        if p.exists() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444)).map_err(ImageError::io(p))?;
        }
    }

    let manifest = Manifest {
        arch,
        recipe: recipe.name.clone(),
        version: recipe.version.clone(),
        key: key.to_string(),
        kernel_version: kver,
        kernel_package: res.kernel.lock_line(),
        packages: res.packages.iter().map(|r| r.lock_line()).collect(),
        disk_size: total,
        partitions: parts.clone(),
        env: EnvLayout {
            size: recipe.env.size,
            copies: vec![
                EnvCopy { partition: parts[1].index, offset: 0 },
                EnvCopy { partition: parts[2].index, offset: 0 },
            ],
            vars: recipe.env.vars.clone(),
        },
        rauc_compatible: recipe.rauc.as_ref().map(|r| r.compatible.clone()),
        ostree: ostree_info,
    };
    let mut lock = manifest.packages.join("\n");
    lock.push('\n');
    lock.push_str(&manifest.kernel_package);
    lock.push('\n');
    let lock_path = out.join("packages.lock");
    std::fs::write(&lock_path, lock).map_err(ImageError::io(&lock_path))?;
    std::fs::remove_dir_all(&work).map_err(ImageError::io(&work))?;
    // The manifest is written last: its presence marks a complete entry.
    let mpath = out.join("manifest.json");
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    std::fs::write(&mpath, json).map_err(ImageError::io(&mpath))?;
    Ok(())
}

fn tree_file(tree: &rootfs::Tree, path: &str) -> Option<Vec<u8>> {
    match tree.get(path)? {
        rootfs::Node::File { data, .. } => Some(data.clone()),
        _ => None,
    }
}

/// The programs that read or change what the boot-time health check
/// decides on (the U-Boot env, RAUC's slot state, OSTree deployments).
pub const GATED_TOOLS: [&str; 4] = ["fw_printenv", "fw_setenv", "rauc", "ostree"];
/// The env gate script (`fixtures/rootfs`), and where the gated programs go.
pub const ENV_GATE: &str = "usr/libexec/devlab/env-gate";
const ENV_GATE_DIR: &str = "usr/libexec/devlab";

/// Puts each of [`GATED_TOOLS`] the packages installed in `/usr/bin` at
/// `/usr/libexec/devlab/<name>` and links `/usr/bin/<name>` to the env gate,
/// so a login reaches it only once rcS has let the health check finish
/// (see `fixtures/rootfs/usr/libexec/devlab/env-gate`). A tree without the
/// gate script (another overlay) is left as it is.
fn gate_env_tools(tree: &mut rootfs::Tree) {
    if !matches!(tree.get(ENV_GATE), Some(rootfs::Node::File { .. })) {
        return;
    }
    for name in GATED_TOOLS {
        let bin = format!("usr/bin/{name}");
        if matches!(tree.get(&bin), Some(rootfs::Node::File { .. })) {
            tree.move_prefix(&bin, &format!("{ENV_GATE_DIR}/{name}"));
            tree.symlink(&bin, "../libexec/devlab/env-gate");
        }
    }
}

/// Files a package's maintainer scripts would have created, plus identity,
/// keys and busybox applet links.
fn add_generated(tree: &mut rootfs::Tree, recipe: &Recipe, key: &str, pubkey: &[u8], host_key: &[u8]) {
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        if tree.contains(target) || link != "lib64" {
            tree.raw_symlink(link, target);
        }
    }
    for d in ["dev", "proc", "sys", "run", "tmp", "data", "mnt", "etc", "var", "usr/sbin"] {
        tree.dir(d, 0o755);
    }
    tree.dir("tmp", 0o1777);
    tree.dir("root", 0o700);
    tree.dir("root/.ssh", 0o700);
    tree.file("root/.ssh/authorized_keys", 0o600, pubkey.to_vec());
    tree.symlink("var/run", "../run");
    tree.symlink("var/lock", "../run/lock");
    tree.symlink("var/tmp", "../tmp");
    tree.file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
    tree.file("etc/group", 0o644, "root:x:0:\n");
    tree.file("etc/shadow", 0o600, "root:*:19000:0:99999:7:::\n");
    tree.file("etc/shells", 0o644, "/bin/sh\n");
    tree.file("etc/hostname", 0o644, format!("{}\n", recipe.hostname));
    tree.file("etc/machine-id", 0o444, format!("{}\n", &key[..32]));
    tree.file(
        "etc/os-release",
        0o644,
        format!(
            "ID=devlab\nNAME=devlab\nVERSION_ID={}\nPRETTY_NAME=\"{}\"\nVARIANT_ID={}\n",
            recipe.version, recipe.pretty_name, recipe.name
        ),
    );
    let initial: String = recipe.env.defaults.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    tree.file("etc/u-boot-initial-env", 0o644, initial);
    tree.dir("etc/devlab", 0o755);
    tree.file("etc/devlab/fault", 0o644, format!("{}\n", recipe.fault.as_str()));
    tree.dir("etc/dropbear", 0o755);
    tree.file("etc/dropbear/dropbear_ed25519_host_key", 0o600, host_key.to_vec());
    for applet in &recipe.busybox_applets {
        let (path, target) = if applet == "init" {
            ("usr/sbin/init".to_string(), "../bin/busybox")
        } else {
            (format!("usr/bin/{applet}"), "busybox")
        };
        if !tree.contains(&path) && !tree.contains(&format!("usr/sbin/{applet}")) {
            tree.symlink(&path, target);
        }
    }
}

/// The install form of an image's disk: `disk.raw.gz` in its entry (gzip
/// -1 of the raw disk; all-zero runs cost almost nothing) and its SHA-256,
/// made on first use. Written to a temporary file and renamed, so a build
/// that is interrupted leaves no half-written file behind; concurrent
/// callers each write their own and the last rename wins (same bytes).
pub fn install_image(image: &BuiltImage) -> Result<(PathBuf, String), ImageError> {
    use sha2::Digest;
    let gz = image.dir.join("disk.raw.gz");
    let sum_path = image.dir.join("disk.raw.gz.sha256");
    if let (true, Ok(sum)) = (gz.is_file(), std::fs::read_to_string(&sum_path)) {
        let sum = sum.trim();
        if sum.len() == 64 {
            return Ok((gz, sum.to_string()));
        }
    }
    // Leftovers of interrupted runs (their process is gone).
    for e in std::fs::read_dir(&image.dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("disk.raw.gz-partial-") {
            let pid = rest.split('-').next().unwrap_or(rest);
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // Not `disk.raw.gz.tmp-*`: write_atomic's temporary for the checksum
    // file. Unique per call: parallel runs in one process share the pid.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = image.dir.join(format!("disk.raw.gz-partial-{}-{call}", std::process::id()));
    let out = std::fs::File::create(&tmp).map_err(ImageError::io(&tmp))?;
    let status = std::process::Command::new(tools::find("gzip")?)
        .args(["-1", "-c", "-n"])
        .arg(&image.disk)
        .stdout(out)
        .stderr(std::process::Stdio::inherit())
        .status()
        .map_err(ImageError::io(&image.disk));
    let fail = |e: ImageError| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    let status = status.map_err(fail)?;
    if !status.success() {
        return Err(fail(ImageError::invalid(&image.disk, format!("gzip failed ({status})"))));
    }
    let bytes = std::fs::read(&tmp).map_err(|e| fail(ImageError::io(&tmp)(e)))?;
    let sum = hex::encode(sha2::Sha256::digest(&bytes));
    drop(bytes);
    // The image first, then its checksum: the checksum file says it is done.
    std::fs::rename(&tmp, &gz).map_err(|e| fail(ImageError::io(&gz)(e)))?;
    cache::write_atomic(&sum_path, format!("{sum}\n").as_bytes())?;
    Ok((gz, sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gated_tools_move_behind_the_env_gate() {
        let mut t = rootfs::Tree::new(0);
        t.file("usr/bin/fw_setenv", 0o755, "elf");
        t.file("usr/bin/fw_printenv", 0o755, "elf");
        t.file("usr/bin/dropbearkey", 0o755, "elf");
        gate_env_tools(&mut t);
        assert!(t.contains("usr/bin/fw_setenv"), "without the gate script nothing moves");
        assert!(!t.contains("usr/libexec/devlab/fw_setenv"));
        t.file(ENV_GATE, 0o755, "#!/bin/sh\n");
        gate_env_tools(&mut t);
        for name in ["fw_setenv", "fw_printenv"] {
            assert!(
                matches!(t.get(&format!("usr/libexec/devlab/{name}")), Some(rootfs::Node::File { data, .. }) if data == b"elf")
            );
            assert!(
                matches!(t.get(&format!("usr/bin/{name}")), Some(rootfs::Node::Symlink { target }) if target == "../libexec/devlab/env-gate")
            );
        }
        assert!(!t.contains("usr/bin/rauc") && !t.contains("usr/libexec/devlab/rauc"), "absent tools are not made up");
        assert!(matches!(t.get("usr/bin/dropbearkey"), Some(rootfs::Node::File { .. })));
    }

    #[test]
    fn boot_script_includes_expand_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("env.cmd"), "setenv a 1\n").unwrap();
        std::fs::write(d.path().join("boot.cmd"), "# head\n#include env.cmd\nboot\n").unwrap();
        let (text, inc) = read_boot_script(&d.path().join("boot.cmd")).unwrap();
        assert_eq!(text, "# head\nsetenv a 1\nboot\n");
        assert_eq!(inc, [d.path().join("env.cmd")]);
        std::fs::write(d.path().join("env.cmd"), "#include boot.cmd\n").unwrap();
        let e = read_boot_script(&d.path().join("boot.cmd")).unwrap_err().to_string();
        assert!(e.contains("env.cmd") && e.contains("may not include"), "{e}");
        std::fs::write(d.path().join("boot.cmd"), "#include gone.cmd\n").unwrap();
        let e = read_boot_script(&d.path().join("boot.cmd")).unwrap_err().to_string();
        assert!(e.contains("gone.cmd"), "{e}");
    }

    #[test]
    fn arch_keys_are_made_once_into_place() {
        let d = tempfile::tempdir().unwrap();
        let k = arch_keys(d.path(), Arch::Aarch64).unwrap();
        assert!(k.ssh_key.is_file() && k.pubkey.starts_with(b"ecdsa-sha2-nistp256 "));
        assert!(!k.host_key.is_empty());
        let again = arch_keys(d.path(), Arch::Aarch64).unwrap();
        assert_eq!((again.pubkey, again.host_key), (k.pubkey, k.host_key));
        let names: Vec<_> = std::fs::read_dir(d.path().join("keys")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["aarch64"], "no temp folder left");
    }
}
