//! Device profiles: a team's own product as data (`devices/<name>.toml`, or
//! a profile beside the team's build), used by a scenario with `device =`
//! instead of `image =`. A profile says what the product is and how to talk
//! to it, so no step needs devlab's own guest:
//!
//! - the disk image (raw, qcow2, `.wic`/`.img`, optionally `.gz`/`.xz`/
//!   `.zst`), per arch through `{arch}`; never written (see
//!   [`crate::device_image`]);
//! - firmware: the board's, or the device's own U-Boot binary; and on
//!   aarch64 `virt` a flash image holding U-Boot's environment (each run
//!   writes to an overlay on it);
//! - login: SSH (user, key or password, port) and/or the serial console
//!   (login prompt, user, password, shell prompt), and which of them the
//!   command steps use by default;
//! - facts, each a command (or a console line) and a regex: `ready`,
//!   `slot`, `version`, `env`, `update_state`;
//! - console markers (`[[marker]]`, the format of [`crate::markers`]) that
//!   turn the device's own U-Boot, kernel and init lines into timeline
//!   events;
//! - the device's own update tool (`[update]`: its install command and the
//!   team's artifacts).
//!
//! Everything is checked when the profile loads: unknown fields, a regex
//! that does not compile, a transport without its login table, firmware or
//! artifacts that do not exist: an input error (exit 2) naming the profile
//! file, line, column and field. Passwords and key paths are never put in
//! an event, a log line or a report. Nothing here boots or writes.

use crate::error::{InputError, Result};
use crate::markers::{Marker, MarkerSpec, Markers};
use devlab_images::Arch;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// How command steps reach the device's shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Ssh,
    Serial,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Ssh => "ssh",
            Via::Serial => "serial",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    device: DeviceTable,
    #[serde(default)]
    firmware: Option<FirmwareTable>,
    login: LoginTable,
    #[serde(default)]
    facts: FactsTable,
    #[serde(default)]
    update: Option<UpdateTable>,
    #[serde(default)]
    markers: MarkersTable,
    #[serde(default)]
    marker: Vec<MarkerSpec>,
    #[serde(default)]
    suite: Option<SuiteTable>,
    #[serde(default)]
    netboot: Option<NetbootTable>,
}

/// `[netboot]`: the device's own network-boot kernel (its management OS
/// or installer), booted by a PXE board whose disk does not boot.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetbootTable {
    kernel: Spanned<String>,
    #[serde(default)]
    initrd: Option<Spanned<OneOrMore>>,
    #[serde(default)]
    cmdline: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(String),
    More(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceTable {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    arches: Spanned<Vec<Spanned<Arch>>>,
    image: Spanned<String>,
    #[serde(default)]
    memory_mib: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FirmwareTable {
    #[serde(default)]
    uboot: Option<Spanned<String>>,
    /// aarch64: the image of the second flash bank (U-Boot's environment).
    #[serde(default)]
    env_flash: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginTable {
    /// Optional when only one transport is described.
    #[serde(default)]
    default: Option<Spanned<Via>>,
    #[serde(default)]
    ssh: Option<SshTable>,
    #[serde(default)]
    serial: Option<SerialTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SshTable {
    #[serde(default = "root")]
    user: String,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default = "ssh_port")]
    port: u16,
}

fn root() -> String {
    "root".into()
}

fn ssh_port() -> u16 {
    22
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SerialTable {
    login_prompt: Spanned<String>,
    #[serde(default = "root")]
    user: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_prompt: Option<Spanned<String>>,
    shell_prompt: Spanned<String>,
}

/// `[facts]`: the known ones (`ready`, `slot`, `version`, `env`,
/// `update_state`) and any the team names (read by `assert_fact`).
type FactsTable = BTreeMap<Spanned<String>, Spanned<FactTable>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactTable {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    console: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    pattern: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTable {
    install: Spanned<String>,
    #[serde(default)]
    artifacts: BTreeMap<String, Spanned<ArtifactSource>>,
}

/// `[suite]`: what `devlab suite device` needs to know of the device.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteTable {
    #[serde(default)]
    slots: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    data: Option<Spanned<String>>,
    #[serde(default)]
    update: Option<SuiteArtifact>,
    #[serde(default)]
    back: Option<String>,
    #[serde(default)]
    writing: Option<Spanned<String>>,
    #[serde(default)]
    broken: Option<SuiteArtifact>,
    #[serde(default = "one")]
    failed_status: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteArtifact {
    artifact: Spanned<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    boot_limit: Option<u32>,
}

fn one() -> i32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MarkersTable {
    /// Shipped marker files to try after the device's own (`uboot`).
    #[serde(default)]
    include: Vec<Spanned<String>>,
}

/// The SSH login of a device.
#[derive(Debug, Clone)]
pub struct SshLogin {
    pub user: String,
    pub auth: SshAuth,
    /// The guest port sshd listens on (QEMU forwards a host port to it).
    pub port: u16,
}

/// How SSH proves who we are. Never printed (`Debug` hides the secret).
#[derive(Clone)]
pub enum SshAuth {
    Key(PathBuf),
    Password(String),
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshAuth::Key(_) => f.write_str("Key(..)"),
            SshAuth::Password(_) => f.write_str("Password(..)"),
        }
    }
}

/// A serial-console login.
#[derive(Clone)]
pub struct SerialLogin {
    pub login_prompt: Regex,
    pub user: String,
    pub password: Option<String>,
    pub password_prompt: Regex,
    pub shell_prompt: Regex,
}

impl std::fmt::Debug for SerialLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialLogin")
            .field("login_prompt", &self.login_prompt.as_str())
            .field("user", &self.user)
            .field("shell_prompt", &self.shell_prompt.as_str())
            .finish_non_exhaustive()
    }
}

/// Where a fact is read.
#[derive(Debug, Clone)]
pub enum FactSource {
    /// A command's standard output.
    Command(String),
    /// A console line (`ready` only: "the device is up").
    Console(Regex),
}

/// A fact of the device: where it is read and the regex that picks the
/// value (its named capture of the fact's name, else its first group,
/// else the whole match; no regex: the whole trimmed output).
#[derive(Debug, Clone)]
pub struct Fact {
    pub name: String,
    pub source: FactSource,
    pub pattern: Option<Regex>,
    /// `file:line` of the fact in the profile, for failure messages.
    pub origin: String,
}

impl Fact {
    /// The fact's value in `text` (a command's output or a console line).
    pub fn value(&self, text: &str) -> Option<String> {
        let Some(re) = &self.pattern else { return Some(text.trim().to_string()) };
        let caps = re.captures(text)?;
        let m = caps.name(&self.name).or_else(|| caps.get(1)).or_else(|| caps.get(0))?;
        Some(m.as_str().trim().to_string())
    }

    /// `command`: the command that reads the fact, if it is one.
    pub fn command(&self) -> Option<&str> {
        match &self.source {
            FactSource::Command(c) => Some(c),
            FactSource::Console(_) => None,
        }
    }
}

/// The device's facts.
#[derive(Debug, Clone)]
pub struct Facts {
    pub ready: Option<Fact>,
    pub slot: Option<Fact>,
    pub version: Fact,
    pub env: Option<Fact>,
    pub update_state: Option<Fact>,
    /// The team's own facts, by name.
    pub other: BTreeMap<String, Fact>,
}

impl Facts {
    /// The fact called `name`, known or the team's own.
    pub fn get(&self, name: &str) -> Option<&Fact> {
        match name {
            "ready" => self.ready.as_ref(),
            "slot" => self.slot.as_ref(),
            "version" => Some(&self.version),
            "env" => self.env.as_ref(),
            "update_state" => self.update_state.as_ref(),
            _ => self.other.get(name),
        }
    }
}

/// The device's own update tool.
#[derive(Debug, Clone)]
pub struct Update {
    /// The command that installs, `{url}` replaced by the artifact's URL
    /// (and `{ref}` by an OSTree artifact's ref).
    pub install: String,
    /// Artifacts by name, `{arch}` still in the path.
    pub artifacts: BTreeMap<String, Spanned<ArtifactSource>>,
}

/// One of the team's artifacts as the profile names it: a file (a RAUC
/// bundle, an image, anything), or an OSTree archive repo and the ref the
/// device pulls from it (`{ ostree_repo = "build/{arch}/repo", ref = "…" }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    File(String),
    Ostree { repo: String, reference: String },
}

impl ArtifactSource {
    /// The path in the profile (`{arch}` still in it): the file, or the repo.
    pub fn path(&self) -> &str {
        match self {
            ArtifactSource::File(p) | ArtifactSource::Ostree { repo: p, .. } => p,
        }
    }

    /// The OSTree ref, `{arch}` still in it.
    pub fn ostree_ref_template(&self) -> Option<&str> {
        match self {
            ArtifactSource::File(_) => None,
            ArtifactSource::Ostree { reference, .. } => Some(reference),
        }
    }

    /// The OSTree ref, for `arch`.
    pub fn ostree_ref(&self, arch: Arch) -> Option<String> {
        self.ostree_ref_template().map(|r| for_arch(r, arch))
    }
}

impl<'de> Deserialize<'de> for ArtifactSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Repo {
            ostree_repo: String,
            #[serde(rename = "ref")]
            reference: String,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ArtifactSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file's path, or { ostree_repo = \"<repo folder>\", ref = \"<ref>\" }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<ArtifactSource, E> {
                Ok(ArtifactSource::File(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> std::result::Result<ArtifactSource, A::Error> {
                let r = Repo::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(ArtifactSource::Ostree { repo: r.ostree_repo, reference: r.reference })
            }
        }
        d.deserialize_any(V)
    }
}

/// `[suite]`: what the standard suite (`devlab suite device`) asserts and
/// installs. Every part is optional; a flow whose part is missing is
/// skipped, and the suite says which and why.
#[derive(Debug, Clone, Default)]
pub struct SuiteSpec {
    /// The slot the image boots first, then the one an update moves to.
    pub slots: Option<[String; 2]>,
    /// The version the image runs.
    pub version: Option<String>,
    /// A fact (of `[facts]`) that must still hold after every update.
    pub data: Option<String>,
    /// The update the update flows install.
    pub update: Option<SuiteUpdate>,
    /// The command that goes back to the other slot after an update (then a reboot).
    pub back: Option<String>,
    /// A regex on the install command's output while it writes the slot
    /// (where "power cut mid-write" cuts).
    pub writing: Option<String>,
    /// A release that does not boot (the rollback flow).
    pub broken: Option<SuiteUpdate>,
    /// The install command's exit status when an update fails.
    pub failed_status: i32,
}

/// An artifact the suite installs.
#[derive(Debug, Clone)]
pub struct SuiteUpdate {
    pub artifact: String,
    /// The version it runs once booted (an update).
    pub version: Option<String>,
    /// Boots the new slot gets before the device's boot script falls back
    /// (a broken release: bounds the rollback's wait).
    pub boot_limit: Option<u32>,
}

/// A checked device profile. Its `Debug` form names it only: the profile's
/// text holds passwords.
#[derive(Clone)]
pub struct Device {
    pub name: String,
    pub description: String,
    /// The profile file.
    pub path: PathBuf,
    pub arches: Vec<Arch>,
    /// The image path as written (`{arch}` not yet replaced).
    image: Spanned<String>,
    pub memory_mib: Option<u32>,
    /// Where `[login.ssh] key` is written.
    ssh_key: Option<usize>,
    /// The device's own U-Boot, `{arch}` not yet replaced.
    firmware: Option<Spanned<String>>,
    /// Its U-Boot environment's flash image (aarch64), `{arch}` not yet replaced.
    env_flash: Option<Spanned<String>>,
    pub default_via: Via,
    pub ssh: Option<SshLogin>,
    pub serial: Option<SerialLogin>,
    pub facts: Facts,
    pub update: Option<Update>,
    pub markers: Markers,
    /// `[suite]` (none: the standard suite boots and logs in only).
    pub suite: Option<SuiteSpec>,
    /// `[netboot]`: what a PXE board boots when its disk does not.
    pub netboot: Option<Netboot>,
    text: String,
}

/// The device's own network boot (`[netboot]`), `{arch}` still in the paths.
#[derive(Debug, Clone)]
pub struct Netboot {
    pub kernel: Spanned<String>,
    /// Booted as one: the files are concatenated in order (an installer's
    /// initrd, then a cpio of extra modules or firmware).
    pub initrds: Spanned<Vec<String>>,
    /// The kernel command line; `{server}` is the update server as the
    /// device reaches it (`10.0.2.2:<port>`), `{arch}` the arch,
    /// `{console}` the board's serial console (`ttyS0,115200`, `ttyAMA0`).
    pub cmdline: String,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}

/// `/etc/os-release`'s `VERSION_ID`: the version fact when a profile names none.
const DEFAULT_VERSION: &str = r#"(?m)^VERSION_ID="?(?<version>[^"\s]+)"?"#;

impl Device {
    /// Read and check the profile at `path`.
    pub fn load(path: &Path) -> Result<Device> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, format!("cannot read device profile: {e}")))?;
        Device::parse(path, &text)
    }

    /// Check a profile's text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Device> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| InputError::from_toml(path, text, 0, &e))?;
        let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
            InputError::new(path, msg).at(text, offset).field(field).into()
        };
        let regex = |s: &Spanned<String>, field: &str| -> Result<Regex> {
            Regex::new(s.get_ref()).map_err(|e| at(s.span().start, field, format!("not a regex: {e}")))
        };
        let d = &file.device;
        let name = d.name.get_ref().clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(at(d.name.span().start, "name", format!("`{name}`: use letters, digits, `-`, `_` and `.`")));
        }
        if d.arches.get_ref().is_empty() {
            return Err(at(d.arches.span().start, "arches", "name at least one arch".into()));
        }
        let arches: Vec<Arch> = d.arches.get_ref().iter().map(|a| *a.get_ref()).collect();
        if arches.len() > 1 && !d.image.get_ref().contains("{arch}") {
            return Err(at(
                d.image.span().start,
                "image",
                "several arches need `{arch}` in the image path (one image per arch)".into(),
            ));
        }
        if let Some(m) = &d.memory_mib {
            if !(64..=65536).contains(m.get_ref()) {
                return Err(at(m.span().start, "memory_mib", "between 64 and 65536".into()));
            }
        }
        let login = &file.login;
        let ssh = match &login.ssh {
            None => None,
            Some(s) => {
                let auth = match (&s.key, &s.password) {
                    // `{arch}` is replaced per run (see `ssh_login`).
                    (Some(k), None) => SshAuth::Key(resolve(path, k.get_ref())),
                    (None, Some(p)) => SshAuth::Password(p.get_ref().clone()),
                    (Some(k), Some(_)) => {
                        return Err(at(k.span().start, "key", "give `key` or `password`, not both".into()))
                    }
                    (None, None) => {
                        let line = find_table(text, "login.ssh");
                        return Err(at(line, "key", "[login.ssh] needs `key` or `password`".into()));
                    }
                };
                Some(SshLogin { user: s.user.clone(), auth, port: s.port })
            }
        };
        let serial = match &login.serial {
            None => None,
            Some(s) => Some(SerialLogin {
                login_prompt: regex(&s.login_prompt, "login_prompt")?,
                user: s.user.clone(),
                password: s.password.clone(),
                password_prompt: match &s.password_prompt {
                    Some(p) => regex(p, "password_prompt")?,
                    None => Regex::new("(?i)password: ?$").expect("a fixed regex"),
                },
                shell_prompt: regex(&s.shell_prompt, "shell_prompt")?,
            }),
        };
        let default_via = default_via(login.default.as_ref(), ssh.is_some(), serial.is_some(), text, &at)?;
        let facts = facts(path, text, &file.facts)?;
        let firmware = file.firmware.as_ref().and_then(|f| f.uboot.clone());
        let env_flash = file.firmware.as_ref().and_then(|f| f.env_flash.clone());
        if let Some(fw) = &file.firmware {
            if fw.uboot.is_none() && fw.env_flash.is_none() {
                let line = find_table(text, "firmware");
                return Err(at(line, "uboot", "[firmware] names `uboot` and/or `env_flash`".into()));
            }
        }
        if let (Some(e), true) = (&env_flash, arches.contains(&Arch::X86_64)) {
            let msg = "env_flash is U-Boot's environment in the second flash bank of aarch64 `virt`; \
                       x86_64 has none: list aarch64 only in `arches`, or use a profile per arch";
            return Err(at(e.span().start, "env_flash", msg.into()));
        }
        let update = match &file.update {
            None => None,
            Some(u) => {
                if !u.install.get_ref().contains("{url}") {
                    let msg = "the install command takes the artifact's URL: put `{url}` in it";
                    return Err(at(u.install.span().start, "install", msg.into()));
                }
                Some(Update { install: u.install.get_ref().clone(), artifacts: u.artifacts.clone() })
            }
        };
        let suite = match &file.suite {
            None => None,
            Some(t) => Some(suite(t, update.as_ref(), &facts, at)?),
        };
        let file_name = path.display().to_string();
        let mut all: Vec<Marker> = crate::markers::load_specs(&file_name, text, file.marker, true)?;
        for inc in &file.markers.include {
            let Some((f, t)) = crate::markers::BUILTIN.iter().find(|(f, _)| marker_file_stem(f) == inc.get_ref())
            else {
                let known: Vec<&str> = crate::markers::BUILTIN.iter().map(|(f, _)| marker_file_stem(f)).collect();
                let msg = format!("no shipped marker file `{}` (known: {})", inc.get_ref(), known.join(", "));
                return Err(at(inc.span().start, "include", msg));
            };
            all.extend(crate::markers::load(f, t)?);
        }
        Ok(Device {
            name,
            description: d.description.clone(),
            path: path.to_path_buf(),
            arches,
            image: d.image.clone(),
            memory_mib: d.memory_mib.as_ref().map(|m| *m.get_ref()),
            ssh_key: login.ssh.as_ref().and_then(|s| s.key.as_ref()).map(|k| k.span().start),
            firmware,
            env_flash,
            default_via,
            ssh,
            serial,
            facts,
            update,
            markers: Markers::new(all),
            suite,
            netboot: file.netboot.as_ref().map(Netboot::from_table),
            text: text.to_string(),
        })
    }

    /// The profile's text (for errors located in it).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The image file for `arch`, and where the profile names it.
    pub fn image_file(&self, arch: Arch) -> (PathBuf, usize) {
        (resolve(&self.path, &for_arch(self.image.get_ref(), arch)), self.image.span().start)
    }

    /// An input error at `offset` of the profile.
    pub fn error_at(&self, offset: usize, field: &str, msg: String) -> crate::error::Error {
        InputError::new(&self.path, msg).at(&self.text, offset).field(field).into()
    }

    /// The SSH login on `arch` (its key's `{arch}` replaced).
    pub fn ssh_login(&self, arch: Arch) -> Option<SshLogin> {
        let mut login = self.ssh.clone()?;
        if let SshAuth::Key(k) = &login.auth {
            login.auth = SshAuth::Key(PathBuf::from(for_arch(&k.to_string_lossy(), arch)));
        }
        Some(login)
    }

    /// The device's own U-Boot for `arch` (none: the board's firmware).
    pub fn uboot(&self, arch: Arch) -> Option<PathBuf> {
        self.firmware.as_ref().map(|u| resolve(&self.path, &for_arch(u.get_ref(), arch)))
    }

    /// The device's U-Boot environment flash image for `arch` (aarch64).
    pub fn env_flash(&self, arch: Arch) -> Option<PathBuf> {
        self.env_flash.as_ref().map(|e| resolve(&self.path, &for_arch(e.get_ref(), arch)))
    }

    /// Before anything boots on `arch`: the arch is one of the device's,
    /// and its files (firmware, SSH key, artifacts) can be read; else an
    /// input error at the field that names the file. The image is checked
    /// by [`crate::device_image::prepare`].
    pub fn check_files(&self, arch: Arch) -> Result<()> {
        self.check_arch(arch)?;
        if let Some(u) = &self.firmware {
            let p = resolve(&self.path, &for_arch(u.get_ref(), arch));
            if !p.is_file() {
                let msg = format!("{} does not exist (the device's firmware for {arch})", p.display());
                return Err(self.error_at(u.span().start, "uboot", msg));
            }
        }
        if let Some(e) = &self.env_flash {
            let p = resolve(&self.path, &for_arch(e.get_ref(), arch));
            let limit = crate::machine::ENV_FLASH_BYTES;
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() && m.len() <= limit => {}
                Ok(m) if m.is_file() => {
                    let msg = format!("{} holds {} bytes: a flash bank holds {limit}", p.display(), m.len());
                    return Err(self.error_at(e.span().start, "env_flash", msg));
                }
                _ => {
                    let msg =
                        format!("{} does not exist (the device's U-Boot environment flash for {arch})", p.display());
                    return Err(self.error_at(e.span().start, "env_flash", msg));
                }
            }
        }
        if let Some((k, SshLogin { auth: SshAuth::Key(p), .. })) =
            self.ssh_key.as_ref().zip(self.ssh_login(arch).as_ref())
        {
            if let Err(e) = std::fs::File::open(p) {
                let msg = format!("SSH key {} cannot be read: {e} (is the device built?)", p.display());
                return Err(self.error_at(*k, "key", msg));
            }
        }
        if let (Some(n), Some((kernel, initrds))) = (&self.netboot, self.netboot_files(arch)) {
            let fields = std::iter::once((&kernel, n.kernel.span().start, "kernel"))
                .chain(initrds.iter().map(|i| (i, n.initrds.span().start, "initrd")));
            for (file, at, field) in fields {
                if let Err(e) = std::fs::File::open(file)
                    .and_then(|f| f.metadata())
                    .and_then(|m| m.is_file().then_some(()).ok_or_else(|| std::io::Error::other("not a file")))
                {
                    let msg =
                        format!("{} cannot be read: {e} (the device's netboot {field} for {arch})", file.display());
                    return Err(self.error_at(at, field, msg));
                }
            }
        }
        for (name, v) in self.update.iter().flat_map(|u| u.artifacts.iter()) {
            let p = resolve(&self.path, &for_arch(v.get_ref().path(), arch));
            let problem = match v.get_ref().ostree_ref(arch) {
                None if p.is_dir() => Some("is a folder (an OSTree repo is `{ ostree_repo = …, ref = … }`)".into()),
                None => std::fs::File::open(&p).err().map(|e| format!("cannot be read: {e}")),
                Some(r) => ostree_repo_problem(&p, &r),
            };
            if let Some(problem) = problem {
                let msg = format!("artifact `{name}`: {} {problem} (for {arch})", p.display());
                return Err(self.error_at(v.span().start, name, msg));
            }
        }
        Ok(())
    }

    /// The netboot kernel and initrds for `arch` (`[netboot]`).
    pub fn netboot_files(&self, arch: Arch) -> Option<(PathBuf, Vec<PathBuf>)> {
        let n = self.netboot.as_ref()?;
        let file = |p: &str| resolve(&self.path, &for_arch(p, arch));
        Some((file(n.kernel.get_ref()), n.initrds.get_ref().iter().map(|i| file(i)).collect()))
    }

    /// The artifact `name` for `arch`: its file, or its OSTree repo's folder.
    pub fn artifact(&self, name: &str, arch: Arch) -> Option<PathBuf> {
        let u = self.update.as_ref()?;
        u.artifacts.get(name).map(|p| resolve(&self.path, &for_arch(p.get_ref().path(), arch)))
    }

    /// Every file of the artifact `name` for `arch`: the file, or each file
    /// of its OSTree repo.
    pub fn artifact_files(&self, name: &str, arch: Arch) -> Vec<PathBuf> {
        let Some(top) = self.artifact(name, arch) else { return Vec::new() };
        let mut files = Vec::new();
        let mut dirs = vec![top];
        while let Some(d) = dirs.pop() {
            match std::fs::read_dir(&d) {
                Err(_) => files.push(d),
                Ok(entries) => {
                    for e in entries.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(e.path());
                        } else {
                            files.push(e.path());
                        }
                    }
                }
            }
        }
        files
    }

    /// The profile refuses `arch`: an error naming its `arches`.
    pub fn check_arch(&self, arch: Arch) -> Result<()> {
        if self.arches.contains(&arch) {
            return Ok(());
        }
        let listed: Vec<String> = self.arches.iter().map(|a| a.to_string()).collect();
        let offset = self.text.find("arches").unwrap_or(0);
        Err(self.error_at(
            offset,
            "arches",
            format!("device `{}` is not built for {arch} ({})", self.name, listed.join(", ")),
        ))
    }
}

/// `[suite]` checked against the profile's artifacts and facts.
fn suite(
    t: &SuiteTable,
    update: Option<&Update>,
    facts: &Facts,
    at: impl Fn(usize, &str, String) -> crate::error::Error,
) -> Result<SuiteSpec> {
    let slots = match &t.slots {
        None => None,
        Some(s) => match s.get_ref().as_slice() {
            [a, b] if a != b => Some([a.clone(), b.clone()]),
            _ => {
                return Err(at(
                    s.span().start,
                    "slots",
                    "two different slots: the one booted first, then the other".into(),
                ))
            }
        },
    };
    if let Some(d) = &t.data {
        if facts.get(d.get_ref()).and_then(Fact::command).is_none() {
            let msg = format!("no fact `{}` read by a command in [facts]", d.get_ref());
            return Err(at(d.span().start, "data", msg));
        }
    }
    if let Some(w) = &t.writing {
        Regex::new(w.get_ref()).map_err(|e| at(w.span().start, "writing", format!("not a regex: {e}")))?;
    }
    let artifact = |a: &Option<SuiteArtifact>, field: &str| -> Result<Option<SuiteUpdate>> {
        let Some(a) = a else { return Ok(None) };
        let name = a.artifact.get_ref();
        if !update.is_some_and(|u| u.artifacts.contains_key(name)) {
            let msg = format!("no artifact `{name}` in [update] artifacts");
            return Err(at(a.artifact.span().start, &format!("{field}.artifact"), msg));
        }
        Ok(Some(SuiteUpdate { artifact: name.clone(), version: a.version.clone(), boot_limit: a.boot_limit }))
    };
    Ok(SuiteSpec {
        slots,
        version: t.version.clone(),
        data: t.data.as_ref().map(|d| d.get_ref().clone()),
        update: artifact(&t.update, "update")?,
        back: t.back.clone(),
        writing: t.writing.as_ref().map(|w| w.get_ref().clone()),
        broken: artifact(&t.broken, "broken")?,
        failed_status: t.failed_status,
    })
}

/// The profile file a device name or path stands for: a path (with `/`
/// or ending `.toml`) is relative to `base`; a bare name is
/// `devices/<name>.toml` in the workspace.
pub fn profile_path(name: &str, base: &Path) -> PathBuf {
    if name.contains('/') || name.ends_with(".toml") {
        base.join(name)
    } else {
        crate::rundir::workspace_root().join("devices").join(format!("{name}.toml"))
    }
}

/// Is `path` a device profile (a TOML file with a `[device]` table and no
/// `[scenario]`)? Anything unreadable is not.
pub fn is_profile_file(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(table) = text.parse::<toml::Table>() else { return false };
    table.contains_key("device") && !table.contains_key("scenario")
}

/// A shipped marker file's short name (`harness/markers/uboot.toml` → `uboot`).
fn marker_file_stem(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file).trim_end_matches(".toml")
}

/// `{arch}` replaced by the arch's name.
fn for_arch(template: &str, arch: Arch) -> String {
    template.replace("{arch}", arch.uname())
}

/// The transport command steps use by default: `[login] default`, or the
/// one transport described; an error at the field otherwise.
fn default_via(
    default: Option<&Spanned<Via>>,
    ssh: bool,
    serial: bool,
    text: &str,
    at: &dyn Fn(usize, &str, String) -> crate::error::Error,
) -> Result<Via> {
    let login_at = text.find("[login").unwrap_or(0);
    match (default, ssh, serial) {
        (None, true, false) => Ok(Via::Ssh),
        (None, false, true) => Ok(Via::Serial),
        (None, false, false) => {
            Err(at(login_at, "login", "say how to log in: [login.ssh] and/or [login.serial]".into()))
        }
        (None, true, true) => {
            let msg = "say which transport command steps use: default = \"ssh\" or \"serial\"";
            Err(at(login_at, "default", msg.into()))
        }
        (Some(d), _, _) => match d.get_ref() {
            Via::Ssh if !ssh => {
                let msg = "command steps go over SSH, but there is no [login.ssh]";
                Err(at(d.span().start, "default", msg.into()))
            }
            Via::Serial if !serial => {
                let msg = "command steps go over the serial console, but there is no [login.serial]";
                Err(at(d.span().start, "default", msg.into()))
            }
            via => Ok(*via),
        },
    }
}

impl Netboot {
    fn from_table(n: &NetbootTable) -> Netboot {
        let (span, initrds) = match &n.initrd {
            None => (n.kernel.span(), Vec::new()),
            Some(i) => (
                i.span(),
                match i.get_ref() {
                    OneOrMore::One(one) => vec![one.clone()],
                    OneOrMore::More(more) => more.clone(),
                },
            ),
        };
        Netboot { kernel: n.kernel.clone(), initrds: Spanned::new(span, initrds), cmdline: n.cmdline.clone() }
    }
}

/// Why `repo` cannot be served as an OSTree repo with `reference` (over
/// HTTP a repo must be in archive mode, and a pull without a summary reads
/// `refs/heads/<ref>`), or `None`.
fn ostree_repo_problem(repo: &Path, reference: &str) -> Option<String> {
    let config = match std::fs::read_to_string(repo.join("config")) {
        Ok(c) => c,
        Err(e) => return Some(format!("is not an OSTree repo: its `config` cannot be read: {e}")),
    };
    let mode = config.lines().find_map(|l| l.trim().strip_prefix("mode")?.trim().strip_prefix('=')).map(str::trim);
    if !matches!(mode, Some("archive" | "archive-z2")) {
        let mode = mode.unwrap_or("bare");
        return Some(format!(
            "is an OSTree repo in `{mode}` mode: serve one in `archive` mode (ostree init --mode=archive)"
        ));
    }
    if reference.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Some(format!("ref `{reference}` is not a ref name"));
    }
    if !repo.join("refs/heads").join(reference).is_file() {
        return Some(format!("has no ref `{reference}` (refs/heads/{reference}: see `ostree refs`)"));
    }
    None
}

/// A path of the profile, relative to the profile's folder.
fn resolve(profile: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    profile.parent().unwrap_or(Path::new(".")).join(p)
}

/// Where `[name]` starts in `text` (for errors about a whole table).
fn find_table(text: &str, name: &str) -> usize {
    text.find(&format!("[{name}]")).unwrap_or(0)
}

fn facts(path: &Path, text: &str, t: &FactsTable) -> Result<Facts> {
    let mut all = BTreeMap::new();
    for (key, f) in t {
        let name = key.get_ref().clone();
        let at = f.span().start;
        let err = |offset: usize, msg: String| -> crate::error::Error {
            InputError::new(path, msg).at(text, offset).field(name.clone()).into()
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(key.span().start, format!("`{name}`: a fact's name is letters, digits and `_`")));
        }
        let table = f.get_ref();
        let pattern = match &table.pattern {
            None => None,
            Some(p) => {
                let re =
                    Regex::new(p.get_ref()).map_err(|e| err(p.span().start, format!("`match` is not a regex: {e}")))?;
                Some(re)
            }
        };
        let source = match (&table.command, &table.console) {
            (Some(c), None) => FactSource::Command(c.clone()),
            (None, Some(c)) if name == "ready" => {
                let re = Regex::new(c.get_ref())
                    .map_err(|e| err(c.span().start, format!("`console` is not a regex: {e}")))?;
                FactSource::Console(re)
            }
            (None, Some(c)) => {
                return Err(err(
                    c.span().start,
                    format!("fact `{name}` is read by a command (`console` is for `ready`)"),
                ))
            }
            _ => return Err(err(at, format!("fact `{name}`: give `command` (or, for `ready`, `console`), not both"))),
        };
        let (line, _) = crate::error::line_col(text, at);
        all.insert(name.clone(), Fact { name, source, pattern, origin: format!("{}:{line}", path.display()) });
    }
    let version = all.remove("version").unwrap_or_else(|| Fact {
        name: "version".into(),
        source: FactSource::Command("cat /etc/os-release".into()),
        pattern: Some(Regex::new(DEFAULT_VERSION).expect("a fixed regex")),
        origin: format!("{} (default: /etc/os-release VERSION_ID)", path.display()),
    });
    Ok(Facts {
        ready: all.remove("ready"),
        slot: all.remove("slot"),
        version,
        env: all.remove("env"),
        update_state: all.remove("update_state"),
        other: all,
    })
}

/// `NAME=VALUE` lines (`fw_printenv`) as a map; other lines are skipped.
pub fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[device]
name = "product"
arches = ["x86_64"]
image = "disk.img"

[login]
default = "serial"
[login.serial]
login_prompt = 'login: $'
password = "s3cret"
shell_prompt = '# $'

[facts]
ready = { console = 'Reached target' }
slot = { command = "cat /proc/cmdline", match = 'rauc\.slot=(?<slot>\S+)' }

[[marker]]
match = 'example-boot: slot (?<slot>[AB]) tries left (?<tries_left>\d+)'
event = "slot_chosen"
numbers = ["tries_left"]
"#;

    fn parse(text: &str) -> Result<Device> {
        Device::parse(Path::new("/nowhere/devices/product.toml"), text)
    }

    fn input_error(text: &str) -> InputError {
        match parse(text) {
            Err(crate::error::Error::Input(e)) => e,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn a_profile_reads_its_facts_and_markers() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.default_via, Via::Serial);
        assert_eq!(d.image_file(Arch::X86_64).0, PathBuf::from("/nowhere/devices/disk.img"));
        let slot = d.facts.slot.as_ref().unwrap();
        assert_eq!(slot.value("quiet rauc.slot=B panic=5").as_deref(), Some("B"));
        assert_eq!(slot.value("quiet"), None);
        // The default version fact: os-release's VERSION_ID, quoted or not.
        assert_eq!(d.facts.version.value("NAME=x\nVERSION_ID=\"12\"\n").as_deref(), Some("12"));
        assert_eq!(d.facts.version.value("VERSION_ID=3.1\n").as_deref(), Some("3.1"));
        let e = d.markers.event("example-boot: slot A tries left 2").unwrap();
        assert_eq!(e, crate::timeline::Event::SlotChosen { slot: "A".into(), tries_left: 2 });
        // An event name of the device's own: a mark with its captures as text.
        let d = parse(&format!("{GOOD}\n[[marker]]\nmatch = 'good slot (?<slot>[AB]) v(?<v>\\d+)'\nevent = \"slot_good\"\nnumbers = [\"v\"]\n")).unwrap();
        let fields = [("slot".to_string(), "B".to_string()), ("v".to_string(), "2".to_string())].into();
        assert_eq!(
            d.markers.event("good slot B v2"),
            Some(crate::timeline::Event::Mark { name: "slot_good".into(), fields })
        );
        // The password is not in the profile's Debug form.
        assert!(!format!("{d:?}").contains("s3cret"));
    }

    #[test]
    fn mistakes_name_line_and_field() {
        let e = input_error(&GOOD.replace(r"(?<slot>\S+)", r"(?<slot>\S+"));
        assert_eq!((e.line, e.field.as_deref()), (Some(16), Some("slot")), "{e}");
        let e = input_error(&GOOD.replace("default = \"serial\"", "default = \"ssh\""));
        assert_eq!((e.line, e.field.as_deref()), (Some(8), Some("default")), "{e}");
        // One transport is the default by itself; with both, the profile says which.
        assert_eq!(parse(&GOOD.replace("default = \"serial\"", "")).unwrap().default_via, Via::Serial);
        let both = GOOD.replace("default = \"serial\"", "[login.ssh]\npassword = \"x\"");
        let e = input_error(&both);
        assert_eq!((e.line, e.field.as_deref()), (Some(7), Some("default")), "{e}");
        let e = input_error(&GOOD.replace("shell_prompt = '# $'", "shell_prompt = '# ['"));
        assert_eq!((e.line, e.field.as_deref()), (Some(12), Some("shell_prompt")), "{e}");
        let e = input_error(&GOOD.replace("image = ", "imag = "));
        assert_eq!((e.line, e.field.as_deref()), (Some(5), Some("imag")), "{e}");
        let e = input_error(&GOOD.replace("[\"x86_64\"]", "[\"x86_64\", \"aarch64\"]"));
        assert_eq!((e.line, e.field.as_deref()), (Some(5), Some("image")), "{e}");
        let d = parse(&format!("{GOOD}\n[firmware]\nuboot = \"u-boot-{{arch}}.bin\"\n")).unwrap();
        let Err(crate::error::Error::Input(e)) = d.check_files(Arch::X86_64) else { panic!("firmware missing") };
        assert_eq!((e.line, e.field.as_deref()), (Some(24), Some("uboot")), "{e}");
        assert!(e.message.contains("/nowhere/devices/u-boot-x86_64.bin does not exist"), "{e}");
        let Err(crate::error::Error::Input(e)) = d.check_files(Arch::Aarch64) else { panic!("arch refused") };
        assert_eq!(e.field.as_deref(), Some("arches"), "{e}");
        // A known event kind is checked field by field.
        let e = input_error(&GOOD.replace("slot (?<slot>[AB])", "slot (?<slott>[AB])"));
        assert_eq!(e.field.as_deref(), Some("slott"), "{e}");
        let e = input_error(&format!("{GOOD}\n[update]\ninstall = \"rauc install\"\n"));
        assert_eq!((e.line, e.field.as_deref()), (Some(24), Some("install")), "{e}");
        let e = input_error(&GOOD.replace("ready = { console", "slot2 = { console"));
        assert_eq!((e.line, e.field.as_deref()), (Some(15), Some("slot2")), "{e}");
        assert!(e.message.contains("read by a command"), "{e}");
    }

    #[test]
    fn an_artifact_is_a_file_or_an_ostree_repo_with_its_ref() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("device.toml");
        let text = format!(
            "{GOOD}\n[update]\ninstall = \"ostree admin switch {{ref}} # {{url}}\"\n\
             artifacts = {{ bundle = \"b.raucb\", os = {{ ostree_repo = \"repo-{{arch}}\", ref = \"product/{{arch}}/stable\" }} }}\n"
        );
        let d = Device::parse(&profile, &text).unwrap();
        let u = d.update.as_ref().unwrap();
        assert_eq!(u.artifacts["bundle"].get_ref(), &ArtifactSource::File("b.raucb".into()));
        assert_eq!(u.artifacts["os"].get_ref().ostree_ref(Arch::X86_64).as_deref(), Some("product/x86_64/stable"));
        assert_eq!(d.artifact("os", Arch::X86_64), Some(dir.path().join("repo-x86_64")));
        std::fs::write(dir.path().join("b.raucb"), b"bundle").unwrap();
        let check = |what: &str| match d.check_files(Arch::X86_64) {
            Err(crate::error::Error::Input(e)) => {
                assert_eq!((e.line, e.field.as_deref()), (Some(25), Some("os")), "{e}");
                assert!(e.message.contains(what), "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        };
        check("its `config` cannot be read");
        let repo = dir.path().join("repo-x86_64");
        std::fs::create_dir_all(repo.join("refs/heads/product/x86_64")).unwrap();
        std::fs::write(repo.join("config"), "[core]\nrepo_version=1\nmode=bare\n").unwrap();
        check("in `bare` mode");
        std::fs::write(repo.join("config"), "[core]\nrepo_version=1\nmode=archive-z2\n").unwrap();
        check("has no ref `product/x86_64/stable`");
        std::fs::write(repo.join("refs/heads/product/x86_64/stable"), "ab\n").unwrap();
        d.check_files(Arch::X86_64).unwrap();
        let mut files = d.artifact_files("os", Arch::X86_64);
        files.sort();
        assert_eq!(files, [repo.join("config"), repo.join("refs/heads/product/x86_64/stable")]);
        // A table that is not a repo is refused at the field.
        let e = input_error(&text.replace("ostree_repo =", "repo ="));
        assert_eq!(e.line, Some(25), "{e}");
        assert!(e.message.contains("unknown field `repo`"), "{e}");
    }

    #[test]
    fn env_lines_read_fw_printenv() {
        let env = env_lines("BOOT_ORDER=B A\nBOOT_A_LEFT=3\nnot a var\n");
        assert_eq!(env.get("BOOT_ORDER").map(String::as_str), Some("B A"));
        assert_eq!(env.len(), 2);
    }
}
