//! Image recipes: the TOML data that says what goes into an image (packages,
//! kernel, sizes, U-Boot env, fixtures, injected fault). Parsing and
//! validation only; must not run tools or build anything. Unknown fields are
//! refused; errors carry file:line:column.
//!
//! A recipe may start with `extends = "base.toml"` (relative to its own
//! folder) and then set only what differs: tables are merged key by key,
//! everything else is replaced; `name` must be set, `pretty_name` is never
//! inherited. Each file is checked on its own text first
//! (every field optional), so errors keep the line of the file that has them;
//! fixture paths resolve against the file that names them.
use crate::{Arch, ImageError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed recipe, with fixture paths resolved against the recipe's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    #[serde(default = "default_pretty")]
    pub pretty_name: String,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// A fault the guest injects on its own (`/etc/devlab/fault`).
    #[serde(default)]
    pub fault: Fault,
    pub packages: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Path prefixes (inside the root) dropped from the rootfs: docs, man pages.
    #[serde(default)]
    pub strip: Vec<String>,
    /// Busybox applets linked into /usr/bin (init and friends into /usr/sbin).
    #[serde(default)]
    pub busybox_applets: Vec<String>,
    pub kernel: Kernel,
    pub sizes: Sizes,
    pub env: Env,
    pub fixtures: Fixtures,
    /// Present for images updated with RAUC (packages rauc, rauc-service,
    /// dbus-daemon): the builder writes `/etc/rauc/system.conf` and the
    /// test CA as the keyring.
    #[serde(default)]
    pub rauc: Option<Rauc>,
    /// Present for OSTree-managed images (package ostree): the build commits
    /// the tree to the arch's repo and deploys it into a `sysroot` partition
    /// (instead of root slots A/B and data).
    #[serde(default)]
    pub ostree: Option<Ostree>,
}

/// OSTree settings of an image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ostree {
    /// The stateroot (`ostree admin os-init <os>`).
    pub os: String,
    /// Size of the sysroot partition in MiB (repo and deployments share it).
    pub sysroot: u64,
}

/// RAUC settings of an image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rauc {
    /// `compatible` in system.conf and in every bundle made from it.
    pub compatible: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Kernel package per Debian architecture (a meta package is followed to
    /// the real `linux-image-<abi>-<flavour>`).
    pub package: BTreeMap<String, String>,
    /// Modules the initramfs loads (their dependencies are added).
    pub modules: Vec<String>,
    /// Extra kernel command line appended by the boot script.
    #[serde(default)]
    pub cmdline: String,
}

/// Partition sizes in MiB.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub boot: u64,
    pub env: u64,
    pub rootfs: u64,
    pub data: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Env {
    /// Bytes per copy (0x4000).
    pub size: u64,
    /// Initial values, written to both copies.
    pub defaults: BTreeMap<String, String>,
    /// Variables U-Boot imports and persists (the allow-list).
    pub vars: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    pub boot_script: PathBuf,
    pub init: PathBuf,
    pub rootfs_overlay: PathBuf,
}

/// What a release variant does wrong on purpose, read by the guest scripts
/// from `/etc/devlab/fault`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Boots and passes the health check.
    #[default]
    None,
    /// The initramfs panics the kernel right after mounting the root.
    Panic,
    /// rcS hangs before dropbear and the watchdog feeder start.
    Hang,
    /// Everything starts, but the health check fails (nothing is committed).
    Unhealthy,
}

impl Fault {
    /// The word written to `/etc/devlab/fault`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Panic => "panic",
            Fault::Hang => "hang",
            Fault::Unhealthy => "unhealthy",
        }
    }
}

/// One recipe file as written: every field optional, so a file that extends
/// another is checked (unknown fields, types) against its own text and lines.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Layer {
    extends: Option<String>,
    name: Option<String>,
    version: Option<String>,
    pretty_name: Option<String>,
    hostname: Option<String>,
    fault: Option<Fault>,
    packages: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    strip: Option<Vec<String>>,
    busybox_applets: Option<Vec<String>>,
    kernel: Option<KernelLayer>,
    sizes: Option<SizesLayer>,
    env: Option<EnvLayer>,
    fixtures: Option<FixturesLayer>,
    rauc: Option<RaucLayer>,
    ostree: Option<OstreeLayer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OstreeLayer {
    os: Option<String>,
    sysroot: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RaucLayer {
    compatible: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KernelLayer {
    package: Option<BTreeMap<String, String>>,
    modules: Option<Vec<String>>,
    cmdline: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SizesLayer {
    boot: Option<u64>,
    env: Option<u64>,
    rootfs: Option<u64>,
    data: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EnvLayer {
    size: Option<u64>,
    defaults: Option<BTreeMap<String, String>>,
    vars: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FixturesLayer {
    boot_script: Option<PathBuf>,
    init: Option<PathBuf>,
    rootfs_overlay: Option<PathBuf>,
}

/// How many `extends` links a recipe may follow.
const MAX_EXTENDS: usize = 8;

fn recipe_error(path: &Path, text: &str, e: &toml::de::Error) -> ImageError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    ImageError::Recipe { path: path.to_path_buf(), line, column, message: e.message().to_string() }
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Loads one recipe file and the chain it extends: the merged table, the
/// bytes of every file in the chain (for the cache key) and this file's text.
fn load_layers(path: &Path, depth: usize) -> Result<(toml::Table, Vec<u8>, String), ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io(path))?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| ImageError::invalid(path, "recipe is not UTF-8"))?;
    toml::from_str::<Layer>(&text).map_err(|e| recipe_error(path, &text, &e))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| recipe_error(path, &text, &e))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).map_err(ImageError::io(dir))?;
    if let Some(toml::Value::Table(f)) = table.get_mut("fixtures") {
        for (_, v) in f.iter_mut() {
            if let toml::Value::String(s) = v {
                let joined = dir.join(s.as_str()).to_string_lossy().into_owned();
                *v = toml::Value::String(joined);
            }
        }
    }
    let Some(toml::Value::String(parent)) = table.remove("extends") else {
        return Ok((table, bytes, text));
    };
    let at = |field: &str, message: String| {
        let (line, column) = text.find(field).map(|i| line_col(&text, i)).unwrap_or((1, 1));
        ImageError::Recipe { path: path.to_path_buf(), line, column, message }
    };
    if depth >= MAX_EXTENDS {
        return Err(at("extends", format!("extends: more than {MAX_EXTENDS} levels (a cycle?)")));
    }
    if !table.contains_key("name") {
        return Err(at("extends", "a recipe that extends another must set its own `name`".into()));
    }
    let parent_path = dir.join(&parent);
    if !parent_path.is_file() {
        return Err(at("extends", format!("extends: {} does not exist", parent_path.display())));
    }
    let (mut merged, parent_bytes, _) = load_layers(&parent_path, depth + 1)?;
    // Identity is not inherited: without its own pretty_name a child gets
    // the default made from its own name and version.
    merged.remove("pretty_name");
    merge(&mut merged, table);
    let mut all = bytes;
    all.extend_from_slice(format!("\n# extends {parent}\n").as_bytes());
    all.extend_from_slice(&parent_bytes);
    Ok((merged, all, text))
}

fn default_pretty() -> String {
    String::new()
}

fn default_hostname() -> String {
    "devlab".into()
}

impl Recipe {
    /// Reads and validates a recipe (following `extends`); fixture paths
    /// become absolute. The bytes are those of every file in the chain.
    pub fn load(path: &Path) -> Result<(Recipe, Vec<u8>), ImageError> {
        let (table, bytes, text) = load_layers(path, 0)?;
        let mut recipe = Recipe::deserialize(toml::Value::Table(table)).map_err(|e| ImageError::Recipe {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: e.message().to_string(),
        })?;
        recipe.validate(path, &text)?;
        if recipe.pretty_name.is_empty() {
            recipe.pretty_name = format!("devlab {} {}", recipe.name, recipe.version);
        }
        Ok((recipe, bytes))
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ImageError> {
        let err = |field: &str, message: String| {
            let (line, column) = text.find(field).map(|i| line_col(text, i)).unwrap_or((1, 1));
            ImageError::Recipe { path: path.to_path_buf(), line, column, message: format!("{field}: {message}") }
        };
        let ok_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok_name(&self.name) {
            return Err(err("name", format!("{:?} is not a plain name", self.name)));
        }
        if self.env.size as usize != crate::ubootenv::ENV_SIZE {
            return Err(err("size", "only 0x4000 is supported".into()));
        }
        if self.sizes.env * 1024 * 1024 < self.env.size {
            return Err(err("env", "partition smaller than one env copy".into()));
        }
        for arch in Arch::ALL {
            if !self.kernel.package.contains_key(arch.debian()) {
                return Err(err("package", format!("no kernel package for {}", arch.debian())));
            }
        }
        for v in self.env.defaults.keys() {
            if !self.env.vars.contains(v) {
                return Err(err(v, format!("default {v} is not in env.vars")));
            }
        }
        if let Some(r) = &self.rauc {
            if !ok_name(&r.compatible) {
                return Err(err("compatible", format!("{:?} is not a plain name", r.compatible)));
            }
        }
        if let Some(o) = &self.ostree {
            if !ok_name(&o.os) {
                return Err(err("os", format!("{:?} is not a plain name", o.os)));
            }
            if self.rauc.is_some() {
                return Err(err("ostree", "an image is updated with RAUC or OSTree, not both".into()));
            }
            if o.sysroot < 64 {
                return Err(err("sysroot", format!("{} MiB is too small for a sysroot", o.sysroot)));
            }
        }
        for v in &self.env.vars {
            if !ok_name(v) {
                return Err(err("vars", format!("{v:?} is not a plain name")));
            }
        }
        Ok(())
    }

    /// The kernel package for `arch`.
    pub fn kernel_package(&self, arch: Arch) -> &str {
        self.kernel.package.get(arch.debian()).map(String::as_str).unwrap_or_default()
    }
}

/// 1-based line and column of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, "name = \"x\"\nversion = \"1\"\nbogus = 1\n").unwrap();
        let e = Recipe::load(&p).unwrap_err().to_string();
        assert!(e.contains("r.toml:3:1"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn base_recipe_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/base.toml");
        let (r, _) = Recipe::load(&p).unwrap();
        assert_eq!(r.name, "base");
        assert!(r.fixtures.boot_script.is_file());
    }

    #[test]
    fn extends_overrides_and_keeps_lines() {
        let dir = tempfile::tempdir().unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/base.toml");
        std::fs::copy(&base, dir.path().join("base.toml")).unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let p = dir.path().join("sub/v9.toml");
        std::fs::write(&p, "extends = \"../base.toml\"\nname = \"v9\"\nversion = \"9\"\nfault = \"hang\"\n").unwrap();
        let (r, bytes) = Recipe::load(&p).unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str(), r.fault), ("v9", "9", Fault::Hang));
        assert_eq!(r.pretty_name, "devlab v9 9");
        assert!(r.packages.iter().any(|p| p == "dropbear-bin"));
        assert_eq!(r.env.defaults.get("BOOT_ORDER").map(String::as_str), Some("A B"));
        // Fixture paths resolve against base.toml's folder, not sub/.
        assert_eq!(r.fixtures.init, dir.path().canonicalize().unwrap().join("../../fixtures/initramfs/init"));
        // The parent's bytes are part of the input.
        assert!(bytes.windows(14).any(|w| w == b"busybox-static"));

        std::fs::write(&p, "extends = \"../base.toml\"\nname = \"v9\"\n\n[kernel]\nbogus = 1\n").unwrap();
        let e = Recipe::load(&p).unwrap_err().to_string();
        assert!(e.contains("v9.toml:5:1") && e.contains("bogus"), "{e}");
        std::fs::write(&p, "extends = \"../base.toml\"\nname = \"v9\"\nfault = \"melt\"\n").unwrap();
        let e = Recipe::load(&p).unwrap_err().to_string();
        assert!(e.contains("v9.toml:3:"), "{e}");
        std::fs::write(&p, "extends = \"../base.toml\"\nversion = \"2\"\n").unwrap();
        let e = Recipe::load(&p).unwrap_err().to_string();
        assert!(e.contains("v9.toml:1:1") && e.contains("name"), "{e}");
    }

    #[test]
    fn shipped_recipes_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        for (file, version, fault) in [
            ("v2.toml", "2", Fault::None),
            ("v3.toml", "3", Fault::None),
            ("v2-panic.toml", "2", Fault::Panic),
            ("v2-hang.toml", "2", Fault::Hang),
            ("v2-unhealthy.toml", "2", Fault::Unhealthy),
            ("rauc.toml", "1", Fault::None),
            ("rauc-v2.toml", "2", Fault::None),
            ("rauc-v3.toml", "3", Fault::None),
            ("rauc-v2-unhealthy.toml", "2", Fault::Unhealthy),
        ] {
            let (r, _) = Recipe::load(&dir.join(file)).unwrap();
            assert_eq!(format!("{}.toml", r.name), file);
            assert_eq!((r.version.as_str(), r.fault), (version, fault), "{file}");
            // Only the RAUC family carries a [rauc] table, and it is inherited.
            assert_eq!(r.rauc.is_some(), file.starts_with("rauc"), "{file}");
        }
    }

    #[test]
    fn line_col_counts() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
