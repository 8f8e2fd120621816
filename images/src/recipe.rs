//! Image recipes: the TOML data that says what goes into an image (packages,
//! kernel, sizes, U-Boot env, fixtures). Parsing and validation only; must not
//! run tools or build anything. Unknown fields are refused; errors carry
//! file:line:column.
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

fn default_pretty() -> String {
    String::new()
}

fn default_hostname() -> String {
    "devlab".into()
}

impl Recipe {
    /// Reads and validates a recipe; fixture paths become absolute.
    pub fn load(path: &Path) -> Result<(Recipe, Vec<u8>), ImageError> {
        let bytes = std::fs::read(path).map_err(ImageError::io(path))?;
        let text = String::from_utf8(bytes.clone()).map_err(|_| ImageError::invalid(path, "recipe is not UTF-8"))?;
        let mut recipe: Recipe = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            ImageError::Recipe { path: path.to_path_buf(), line, column, message: e.message().to_string() }
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).map_err(ImageError::io(base))?;
        for p in [&mut recipe.fixtures.boot_script, &mut recipe.fixtures.init, &mut recipe.fixtures.rootfs_overlay] {
            *p = base.join(&*p);
        }
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
    fn line_col_counts() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
