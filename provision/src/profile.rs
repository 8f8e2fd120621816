//! Install profiles: one TOML file per profile (`<name>.toml`) in a profile
//! directory, loaded and checked when the service opens, so a broken profile
//! stops the service before any node is sent to it.
//!
//! ```toml
//! kernel = "debian-12/vmlinuz"          # file, relative to the profile dir
//! initrd = "debian-12/initrd.img"       # file, relative to the profile dir
//! cmdline = "console=ttyS0 root=/dev/vda2"
//! image = "images/debian-12.raw"        # URL, or path under the boot base URL
//! image_sha256 = "9f86d08...0f00a08"    # 64 hex digits
//! install_script = "dd if=... of=/dev/vda"   # the script's text, or
//! # install_script = { file = "debian-12/install.sh" }  (relative to the profile dir)
//! ```
//!
//! Unknown fields are refused. Every error names the file, the line and
//! column, and the field (from toml's span for syntax and type errors, from
//! `toml::Spanned` field spans for the checks made after parsing: files that
//! do not exist, a malformed checksum).
//!
//! The agent is served the profile as a [`ProfileDocument`]: kernel and
//! initrd become URLs on this service (`/files/<name>/kernel|initrd`), and a
//! relative `image` becomes `<boot-base-url>/<image>`.

use crate::error::{ProfileError, ProvisionError};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A checked profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The file's stem.
    pub name: String,
    /// The TOML file it came from.
    pub source: PathBuf,
    /// Resolved against the profile directory; exists.
    pub kernel: PathBuf,
    /// Resolved against the profile directory; exists.
    pub initrd: PathBuf,
    pub cmdline: String,
    /// As written: a URL, or a path under the boot base URL.
    pub image: String,
    /// Lowercase hex.
    pub image_sha256: String,
    /// The script's text (read from its file when given as `{ file = ... }`).
    pub install_script: String,
}

/// Quote `s` for a POSIX shell: `'...'`, with `'` as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl ProfileDocument {
    /// The document as shell assignments (`GET /profile/{uuid}?format=sh`),
    /// for an agent with only a busybox shell: `PROFILE_NAME`,
    /// `PROFILE_KERNEL`, `PROFILE_INITRD`, `PROFILE_CMDLINE`, `PROFILE_IMAGE`
    /// and `PROFILE_IMAGE_SHA256`, each single-quoted (nothing expands when
    /// it is sourced). The install script is served on its own
    /// (`/profile/{uuid}/install.sh`).
    pub fn to_shell(&self) -> String {
        [
            ("PROFILE_NAME", &self.name),
            ("PROFILE_KERNEL", &self.kernel),
            ("PROFILE_INITRD", &self.initrd),
            ("PROFILE_CMDLINE", &self.cmdline),
            ("PROFILE_IMAGE", &self.image),
            ("PROFILE_IMAGE_SHA256", &self.image_sha256),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}\n", sh_quote(v)))
        .collect()
    }
}

/// What `GET /profile/{uuid}` answers: everything the agent needs, as URLs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProfileDocument {
    pub name: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub image: String,
    pub image_sha256: String,
    pub install_script: String,
}

impl Profile {
    /// The profile as served: `api_base` is this service as the node reaches
    /// it, `boot_base` the base URL relative images live under.
    pub fn document(&self, api_base: &str, boot_base: &str) -> ProfileDocument {
        let api = api_base.trim_end_matches('/');
        let image = if self.image.contains("://") {
            self.image.clone()
        } else {
            format!("{}/{}", boot_base.trim_end_matches('/'), self.image.trim_start_matches('/'))
        };
        ProfileDocument {
            name: self.name.clone(),
            kernel: format!("{api}/files/{}/kernel", self.name),
            initrd: format!("{api}/files/{}/initrd", self.name),
            cmdline: self.cmdline.clone(),
            image,
            image_sha256: self.image_sha256.clone(),
            install_script: self.install_script.clone(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    kernel: Spanned<PathBuf>,
    initrd: Spanned<PathBuf>,
    cmdline: String,
    image: Spanned<String>,
    image_sha256: Spanned<String>,
    install_script: Spanned<RawScript>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawScript {
    Text(String),
    File(ScriptFile),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    file: PathBuf,
}

/// All profiles of a directory, by name.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    dir: PathBuf,
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Load every `*.toml` file of `dir` (other files are the kernels,
    /// initrds and scripts the profiles name). The first broken profile, in
    /// file name order, is the error.
    pub fn load_dir(dir: &Path) -> Result<Profiles, ProvisionError> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(ProvisionError::io(dir))? {
            let path = entry.map_err(ProvisionError::io(dir))?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut by_name = BTreeMap::new();
        for file in files {
            let p = load_profile(&file)?;
            by_name.insert(p.name.clone(), p);
        }
        Ok(Profiles { dir: dir.to_path_buf(), by_name })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

/// Read and check one profile file; its name is the file's stem.
pub fn load_profile(file: &Path) -> Result<Profile, ProvisionError> {
    let text = std::fs::read_to_string(file).map_err(ProvisionError::io(file))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = file.parent().unwrap_or(Path::new("."));
    Ok(parse_profile(&name, file, &text, dir)?)
}

/// Parse and check a profile's text. `file` is only used in errors; relative
/// paths are resolved against `dir`.
pub fn parse_profile(name: &str, file: &Path, text: &str, dir: &Path) -> Result<Profile, ProfileError> {
    let err_at = |offset: usize, field: Option<&str>, message: String| {
        let (line, column) = line_col(text, offset);
        ProfileError { file: file.to_path_buf(), line, column, field: field.map(str::to_string), message }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(err_at(
            0,
            None,
            format!("profile name `{name}` (the file name) may only use letters, digits, `.`, `_` and `-`"),
        ));
    }
    let raw: RawProfile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let mut message = e.message().trim().to_string();
        let field = field_from_message(&message).or_else(|| field_at(text, offset));
        if message.contains("untagged enum RawScript") {
            message = "expected the script's text (a string) or { file = \"<path>\" } (relative to the profile \
                       directory)"
                .to_string();
        }
        err_at(offset, field.as_deref(), message)
    })?;

    let existing = |field: &str, value: &Spanned<PathBuf>| -> Result<PathBuf, ProfileError> {
        let path = dir.join(value.get_ref());
        if path.is_file() {
            Ok(path)
        } else {
            Err(err_at(
                value.span().start,
                Some(field),
                format!("{field} file `{}` does not exist (looked for {})", value.get_ref().display(), path.display()),
            ))
        }
    };
    let kernel = existing("kernel", &raw.kernel)?;
    let initrd = existing("initrd", &raw.initrd)?;

    let image = raw.image.get_ref().trim();
    if image.is_empty() {
        return Err(err_at(raw.image.span().start, Some("image"), "is empty".into()));
    }
    if !image.contains("://") && image.split('/').any(|c| c == "..") {
        return Err(err_at(
            raw.image.span().start,
            Some("image"),
            format!("`{image}`: a path under the boot base URL may not contain `..`"),
        ));
    }
    let sha = raw.image_sha256.get_ref();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err_at(
            raw.image_sha256.span().start,
            Some("image_sha256"),
            format!("`{sha}` is not a sha256 (64 hex digits)"),
        ));
    }
    let span = raw.install_script.span();
    let install_script = match raw.install_script.into_inner() {
        RawScript::Text(t) => t,
        RawScript::File(ScriptFile { file: script }) => {
            let path = dir.join(&script);
            std::fs::read_to_string(&path).map_err(|e| {
                err_at(
                    span.start,
                    Some("install_script"),
                    format!("install_script file `{}` cannot be read ({}: {e})", script.display(), path.display()),
                )
            })?
        }
    };
    if install_script.trim().is_empty() {
        return Err(err_at(span.start, Some("install_script"), "is empty".into()));
    }
    Ok(Profile {
        name: name.to_string(),
        source: file.to_path_buf(),
        kernel,
        initrd,
        cmdline: raw.cmdline,
        image: image.to_string(),
        image_sha256: sha.to_ascii_lowercase(),
        install_script,
    })
}

/// serde names the field in a few message shapes; pick it out.
fn field_from_message(msg: &str) -> Option<String> {
    ["unknown field `", "missing field `", "duplicate field `", "duplicate key `"]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
}

/// The top-level field whose value holds byte `offset`: from the value
/// spans when the text is valid TOML, else from the `key =` on that line.
fn field_at(text: &str, offset: usize) -> Option<String> {
    if let Ok(doc) = toml::from_str::<BTreeMap<String, Spanned<toml::Value>>>(text) {
        let inside = |r: Range<usize>| r.start <= offset && offset < r.end.max(r.start + 1);
        return doc.iter().find(|(_, v)| inside(v.span())).map(|(k, _)| k.clone());
    }
    let start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')).then(|| key.to_string())
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn dir_with_files() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("deb")).unwrap();
        for f in ["deb/vmlinuz", "deb/initrd.img", "deb/install.sh"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        d
    }

    fn good(extra: &str) -> String {
        format!(
            "kernel = \"deb/vmlinuz\"\ninitrd = \"deb/initrd.img\"\ncmdline = \"console=ttyS0\"\n\
             image = \"images/deb.raw\"\nimage_sha256 = \"{SHA}\"\ninstall_script = \"dd if=/img of=/dev/vda\"\n{extra}"
        )
    }

    fn parse(d: &Path, text: &str) -> Result<Profile, ProfileError> {
        parse_profile("deb", &d.join("deb.toml"), text, d)
    }

    #[test]
    fn a_good_profile_loads_and_documents_urls() {
        let d = dir_with_files();
        std::fs::write(d.path().join("deb.toml"), good("")).unwrap();
        std::fs::write(d.path().join("vmlinuz"), "not a profile").unwrap();
        let profiles = Profiles::load_dir(d.path()).unwrap();
        assert_eq!(profiles.names(), ["deb"]);
        let p = profiles.get("deb").unwrap();
        assert_eq!(p.kernel, d.path().join("deb/vmlinuz"));
        let doc = p.document("http://10.0.2.2:8080/", "http://10.0.2.2:9000/boot/");
        assert_eq!(doc.kernel, "http://10.0.2.2:8080/files/deb/kernel");
        assert_eq!(doc.initrd, "http://10.0.2.2:8080/files/deb/initrd");
        assert_eq!(doc.image, "http://10.0.2.2:9000/boot/images/deb.raw");
        assert_eq!(doc.install_script, "dd if=/img of=/dev/vda");

        let url = good("").replace("images/deb.raw", "https://mirror.example/deb.raw");
        let p = parse(d.path(), &url).unwrap();
        assert_eq!(p.document("http://a", "http://b").image, "https://mirror.example/deb.raw");

        let from_file = good("").replace("\"dd if=/img of=/dev/vda\"", "{ file = \"deb/install.sh\" }");
        assert_eq!(parse(d.path(), &from_file).unwrap().install_script, "x");
    }

    fn err(d: &Path, text: &str) -> String {
        parse(d, text).unwrap_err().to_string().replace(&d.display().to_string(), "<dir>")
    }

    #[test]
    fn unknown_field_names_file_line_column_and_field() {
        let d = dir_with_files();
        let e = parse(d.path(), &good("\nkernal = \"x\"\n")).unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_deref()), (8, 1, Some("kernal")));
        assert!(
            err(d.path(), &good("\nkernal = \"x\"\n"))
                .starts_with("<dir>/deb.toml:8:1: field `kernal`: unknown field `kernal`, expected one of"),
            "{}",
            err(d.path(), &good("\nkernal = \"x\"\n"))
        );
    }

    #[test]
    fn missing_kernel_file_points_at_its_value() {
        let d = dir_with_files();
        let text = good("").replace("deb/vmlinuz", "deb/vmlinuz-6.1");
        assert_eq!(
            err(d.path(), &text),
            "<dir>/deb.toml:1:10: field `kernel`: kernel file `deb/vmlinuz-6.1` does not exist \
             (looked for <dir>/deb/vmlinuz-6.1)"
        );
        let text = good("").replace("deb/initrd.img", "nope.img");
        assert_eq!(
            err(d.path(), &text),
            "<dir>/deb.toml:2:10: field `initrd`: initrd file `nope.img` does not exist (looked for <dir>/nope.img)"
        );
        let text = good("").replace("\"dd if=/img of=/dev/vda\"", "{ file = \"gone.sh\" }");
        let e = err(d.path(), &text);
        assert!(
            e.starts_with("<dir>/deb.toml:6:18: field `install_script`: install_script file `gone.sh` cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn malformed_toml_names_line_column_and_field() {
        let d = dir_with_files();
        let text = good("").replace("cmdline = \"console=ttyS0\"", "cmdline = \"console=ttyS0");
        let e = parse(d.path(), &text).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("cmdline")), "{e}");
        assert!(e.to_string().starts_with(&format!("{}:3:", d.path().join("deb.toml").display())), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_name_the_field() {
        let d = dir_with_files();
        let text = good("").replace("cmdline = \"console=ttyS0\"", "cmdline = 3");
        assert_eq!(
            err(d.path(), &text),
            "<dir>/deb.toml:3:11: field `cmdline`: invalid type: integer `3`, expected a string"
        );
        let text = good("").replace(SHA, "abc");
        assert_eq!(
            err(d.path(), &text),
            "<dir>/deb.toml:5:16: field `image_sha256`: `abc` is not a sha256 (64 hex digits)"
        );
        let text = good("").replace("\"dd if=/img of=/dev/vda\"", "{ path = \"deb/install.sh\" }");
        let e = err(d.path(), &text);
        assert!(e.starts_with("<dir>/deb.toml:6:18: field `install_script`: expected the script's text"), "{e}");
        let text = good("").replace("images/deb.raw", "../etc/passwd");
        assert!(err(d.path(), &text).starts_with("<dir>/deb.toml:4:9: field `image`: "));
    }

    #[test]
    fn missing_field_is_named() {
        let d = dir_with_files();
        let text = good("").replace(&format!("image_sha256 = \"{SHA}\"\n"), "");
        let e = parse(d.path(), &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("image_sha256"), "{e}");
        assert!(e.to_string().contains("missing field `image_sha256`"), "{e}");
    }

    #[test]
    fn load_dir_stops_at_a_broken_profile() {
        let d = dir_with_files();
        std::fs::write(d.path().join("a.toml"), good("")).unwrap();
        std::fs::write(d.path().join("b.toml"), good("extra = 1\n")).unwrap();
        let e = Profiles::load_dir(d.path()).unwrap_err();
        assert!(e.to_string().contains("b.toml:7:1: field `extra`"), "{e}");
        let e = Profiles::load_dir(&d.path().join("none")).unwrap_err();
        assert!(matches!(e, ProvisionError::Io { .. }), "{e}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nbé=c", 5), (2, 3), "`=` is the third character");
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc", 99), (1, 4));
    }
}
