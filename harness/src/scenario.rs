//! Scenario files (TOML) read into a typed step enum. Control flow lives in
//! the runner's `match`; the file is data. Unknown steps and fields are
//! refused with `file:line:column`, the field and what was expected: each
//! `[[step]]` table is deserialized on its own against its variant's struct,
//! so toml's spans stay exact. Parsing never boots anything.

use crate::error::{InputError, Result};
use regex::Regex;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A duration written as `"30s"`, `"2m"`, `"500ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"30s\" or \"2m\": {e}")))
    }
}

/// A regex, checked when the file is read.
#[derive(Debug, Clone)]
pub struct Pattern(pub String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // `{arch}` and friends are substituted per board before compiling.
        let probe = s.replace("{arch}", "x").replace("{board}", "x").replace("{mac}", "x").replace("{serial}", "x");
        Regex::new(&probe).map_err(|e| serde::de::Error::custom(format!("not a valid regex: {e}")))?;
        Ok(Pattern(s))
    }
}

/// Where an assertion reads its state: the running guest (over SSH) or the
/// disk, read from the host (works when the guest is off or does not boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Guest,
    Disk,
}

fn default_boot_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_step_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_ssh_timeout() -> Dur {
    Dur(Duration::from_secs(120))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerOn {}

/// Stop U-Boot's autoboot at its prompt, run `commands` at the `=> `
/// prompt, then the board's boot command (or `boot_command`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub boot_command: Option<String>,
    #[serde(default = "default_boot_timeout")]
    pub timeout: Dur,
}

/// Wait for a regex on the serial console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub pattern: Pattern,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// The name recorded in the timeline (default: the pattern).
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSsh {
    #[serde(default = "default_ssh_timeout")]
    pub timeout: Dur,
}

/// Run a command over SSH and check its status and output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRun {
    pub command: String,
    #[serde(default)]
    pub expect_status: i32,
    /// Regex the trimmed stdout must match; its match is recorded.
    #[serde(default)]
    pub expect_stdout: Option<Pattern>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// Cut the power when this console pattern appears while the command
    /// runs (the command must not end first).
    #[serde(default)]
    pub power_cut_at: Option<Pattern>,
    /// Cut the power when the update server starts answering a request
    /// whose path matches (e.g. an OSTree object while a pull runs).
    #[serde(default)]
    pub power_cut_on_request: Option<Pattern>,
    /// Take the NIC's link down while the command runs, when the update
    /// server starts answering a matching request, for `seconds`; the
    /// command then runs on to its end (a transfer resumes or fails).
    #[serde(default)]
    pub link_drop: Option<LinkDrop>,
}

/// A link outage in the middle of a transfer (see [`SshRun::link_drop`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDrop {
    /// Regex on the request path that triggers it.
    pub on_request: Pattern,
    /// How long the link stays down (the fault's length, not a wait).
    pub seconds: u64,
}

/// The slot the guest booted (kernel command line `devlab.slot=`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertSlot {
    pub slot: Slot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

/// U-Boot environment variables, read with `fw_printenv` (guest) or from
/// the disk's env copies (disk). A value of `""` asserts the variable is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertEnv {
    #[serde(default = "guest")]
    pub source: Source,
    pub vars: BTreeMap<String, String>,
}

fn guest() -> Source {
    Source::Guest
}

/// A file's content, in the guest or on a disk partition (`data:/path`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertFile {
    #[serde(default = "guest")]
    pub source: Source,
    /// Guest path, or `LABEL:/path` on an ext4 partition for `source = "disk"`.
    pub path: String,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

/// Copy a host file (relative to the scenario file) into the guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub from: String,
    pub to: String,
    /// File mode in the guest (TOML octal: `0o755`).
    #[serde(default = "mode_644")]
    pub mode: u32,
}

fn mode_644() -> u32 {
    0o644
}

/// Copy a guest file into the run directory (as `to`, a plain file name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub from: String,
    pub to: String,
}

/// Wait for a QMP event (`WATCHDOG`, `RESET`, `BLOCK_IO_ERROR`, ...) that
/// arrived after the previous step ended.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQmp {
    pub event: String,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

/// Wait until the guest calls `http://{server}/callback/<name>` (any
/// method) after the previous `wait_callback`; `{server}` in `ssh` commands
/// is the harness's server as the guest reaches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitCallback {
    pub name: String,
    /// A regex the callback's body must match.
    #[serde(default)]
    pub body: Option<Pattern>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

/// Is a service (a process by name, `pidof`) running in the guest?
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertService {
    pub name: String,
    #[serde(default = "yes")]
    pub running: bool,
}

/// Power off from inside the guest and wait for QEMU to exit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poweroff {
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
}

/// Cut the power: QEMU is killed, nothing is flushed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCut {}

/// Overwrite bytes of a partition on the powered-off disk (a fault: a torn
/// or bit-rotted write). The machine must be off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptDisk {
    /// GPT partition label, e.g. `uboot-env-a`.
    pub partition: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default = "sixteen")]
    pub length: u64,
    /// The byte written over the range.
    #[serde(default = "ff")]
    pub byte: u8,
}

fn sixteen() -> u64 {
    16
}
fn ff() -> u8 {
    0xff
}

/// Build (or reuse) the release package of an image recipe and serve it
/// from the harness's update server as `version`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeRelease {
    pub version: String,
    /// The image recipe whose root slot is the release (`images/recipes/<image>.toml`).
    pub image: toml::Spanned<String>,
}

/// Arm a fault on the update server for its next `count` requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub fault: crate::update_server::Fault,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// What an update attempt must end in (the agent's exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    Installed,
    ApiFailed,
    AlreadyRunning,
    DownloadFailed,
    ChecksumMismatch,
    WriteFailed,
    SwitchFailed,
}

impl UpdateOutcome {
    pub const ALL: [UpdateOutcome; 7] = [
        UpdateOutcome::Installed,
        UpdateOutcome::ApiFailed,
        UpdateOutcome::AlreadyRunning,
        UpdateOutcome::DownloadFailed,
        UpdateOutcome::ChecksumMismatch,
        UpdateOutcome::WriteFailed,
        UpdateOutcome::SwitchFailed,
    ];

    /// The update agent's exit status for this outcome.
    pub fn exit_status(self) -> i32 {
        match self {
            UpdateOutcome::Installed => 0,
            UpdateOutcome::ApiFailed => 2,
            UpdateOutcome::AlreadyRunning => 3,
            UpdateOutcome::DownloadFailed => 4,
            UpdateOutcome::ChecksumMismatch => 5,
            UpdateOutcome::WriteFailed => 6,
            UpdateOutcome::SwitchFailed => 7,
        }
    }

    pub fn from_exit_status(code: i32) -> Option<UpdateOutcome> {
        Self::ALL.into_iter().find(|o| o.exit_status() == code)
    }
}

/// Run the device's update agent against a served release.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub version: String,
    #[serde(default = "installed")]
    pub expect: UpdateOutcome,
    /// Reboot into the new slot when installed (default true).
    #[serde(default = "yes")]
    pub reboot: bool,
    #[serde(default = "default_update_timeout")]
    pub timeout: Dur,
    /// Cut the power when this console pattern appears while the agent
    /// runs (e.g. `devlab-update: writing slot`): the step then ends in a
    /// power cut instead of an outcome.
    #[serde(default)]
    pub power_cut_at: Option<Pattern>,
    /// Take the NIC's link down once the download is under way (1 MiB
    /// served) and up again when the agent reports on the console.
    #[serde(default)]
    pub link_down_mid_transfer: bool,
}

fn installed() -> UpdateOutcome {
    UpdateOutcome::Installed
}
fn yes() -> bool {
    true
}
fn default_update_timeout() -> Dur {
    Dur(Duration::from_secs(180))
}

/// The running release (`VERSION_ID` in the guest's /etc/os-release).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertVersion {
    pub version: String,
}

/// Take the board's network link down or up (QMP `set_link`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub up: bool,
}

/// Save the machine here (RAM, devices and disk) so a later run of the same
/// steps on the same image, board, firmware and QEMU starts from it instead
/// of repeating them. At most one per scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub name: String,
}

/// Give the disk a bad spot (QEMU blkdebug) from the next power-on on:
/// requests of `iotype` touching byte `offset` of `partition` fail with
/// `errno`. The machine must be off (the disk is configured at power-on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskErrors {
    /// GPT partition label, e.g. `rootfs-b`.
    pub partition: String,
    /// Bytes into the partition (default 1 MiB).
    #[serde(default = "one_mib")]
    pub offset: u64,
    #[serde(default = "write_io")]
    pub iotype: crate::board::IoType,
    #[serde(default = "eio")]
    pub errno: crate::board::Errno,
}

fn one_mib() -> u64 {
    1 << 20
}
fn write_io() -> crate::board::IoType {
    crate::board::IoType::Write
}
fn eio() -> crate::board::Errno {
    crate::board::Errno::EIO
}

/// Remove every injected disk error from the next power-on on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearDiskErrors {}

/// Publish a signed RAUC bundle of an image's root slot on the update
/// server (`/bundles/<name>.raucb`), built on first use with `rauc bundle`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeBundle {
    /// What `rauc_install` calls it.
    pub name: String,
    /// A RAUC image recipe (`images/recipes/<image>.toml` with a `[rauc]` table).
    pub image: toml::Spanned<String>,
    /// `release` (certified by the device's keyring) or `untrusted`.
    #[serde(default = "release_signer")]
    pub signer: devlab_images::rauc::Signer,
}

/// Publish an OSTree image's commit on the update server: the harness
/// serves the arch's archive repo at `/ostree/` and answers the booted
/// image's branch (`refs/heads/devlab/<image>`) with this image's commit,
/// so `ostree admin upgrade` on the device pulls it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOstree {
    /// An OSTree image recipe (`images/recipes/<image>.toml` with `[ostree]`).
    pub image: toml::Spanned<String>,
    /// Also generate a static delta from the commit the branch pointed at
    /// before (what the device has) to this one; the device's pull finds
    /// it at `deltas/…/superblock` and fetches it instead of loose objects.
    #[serde(default)]
    pub delta: bool,
}

/// `ostree admin status` on the device: the deployments, in order, each
/// the commit of an image in a state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertOstree {
    pub deployments: Vec<ExpectedDeployment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDeployment {
    /// The OSTree image whose commit is deployed.
    pub image: String,
    pub state: DeploymentState,
}

/// A deployment's marker in `ostree admin status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// `*`: running now.
    Booted,
    /// `(pending)`: boots next (listed before the booted one).
    Pending,
    /// `(rollback)`: listed after the booted one.
    Rollback,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Booted => "booted",
            DeploymentState::Pending => "pending",
            DeploymentState::Rollback => "rollback",
        }
    }
}

fn release_signer() -> devlab_images::rauc::Signer {
    devlab_images::rauc::Signer::Release
}

/// What `rauc install` is expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaucOutcome {
    /// Exit 0: the inactive slot written and made primary.
    Installed,
    /// Non-zero exit: the bundle was refused or the install failed.
    Failed,
}

/// Run `rauc install <url>` on the device against a served bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaucInstall {
    pub bundle: String,
    #[serde(default = "rauc_installed")]
    pub expect: RaucOutcome,
    /// A regex RAUC's output must match when it failed (the reason).
    #[serde(default)]
    pub error: Option<Pattern>,
    /// Reboot into the new slot when installed (default true).
    #[serde(default = "yes")]
    pub reboot: bool,
    #[serde(default = "default_update_timeout")]
    pub timeout: Dur,
}

fn rauc_installed() -> RaucOutcome {
    RaucOutcome::Installed
}

/// Assert what `rauc status` reports (JSON output); every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertRauc {
    /// The booted slot's bootname (`A` or `B`).
    #[serde(default)]
    pub booted: Option<String>,
    /// The bootname U-Boot tries first (RAUC's `boot_primary`).
    #[serde(default)]
    pub primary: Option<String>,
    /// Boot status per bootname: `good` or `bad`.
    #[serde(default)]
    pub boot_status: BTreeMap<String, String>,
    /// Bundle version installed per bootname (from RAUC's slot status).
    #[serde(default)]
    pub installed: BTreeMap<String, String>,
}

/// Hardware reset (QMP `system_reset`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    PowerOn(PowerOn),
    Boot(Boot),
    Expect(Expect),
    WaitSsh(WaitSsh),
    Ssh(SshRun),
    AssertSlot(AssertSlot),
    AssertEnv(AssertEnv),
    AssertFile(AssertFile),
    Poweroff(Poweroff),
    PowerCut(PowerCut),
    Reset(Reset),
    CorruptDisk(CorruptDisk),
    ServeRelease(ServeRelease),
    HttpFault(HttpFault),
    Update(Update),
    AssertVersion(AssertVersion),
    Link(Link),
    ServeBundle(ServeBundle),
    RaucInstall(RaucInstall),
    AssertRauc(AssertRauc),
    DiskErrors(DiskErrors),
    ClearDiskErrors(ClearDiskErrors),
    Upload(Upload),
    Download(Download),
    WaitQmp(WaitQmp),
    AssertService(AssertService),
    Checkpoint(Checkpoint),
    WaitCallback(WaitCallback),
    ServeOstree(ServeOstree),
    AssertOstree(AssertOstree),
    ProvisionAssign(ProvisionAssign),
    ProvisionWait(ProvisionWait),
    ProvisionFault(ProvisionFault),
    ProvisionTable(ProvisionTable),
    ProvisionRestart(ProvisionRestart),
    WaitPoweroff(WaitPoweroff),
}

/// Assign an install profile (`[provision]`) to this board's node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionAssign {
    pub profile: String,
}

/// Node states of the provisioning service (its own names).
pub const PROVISION_STATES: &[&str] = &["REGISTERED", "DEPLOY_START", "DEPLOYING", "INSTALLED", "UNRECOVERABLE_ERROR"];

/// Wait until this board's node is in `state` in the provisioning service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionWait {
    pub state: String,
    #[serde(default = "default_provision_timeout")]
    pub timeout: Dur,
}

fn default_provision_timeout() -> Dur {
    Dur(Duration::from_secs(180))
}

/// Arm a fault on one node-facing endpoint of the provisioning service for
/// its next `count` requests: `error500`, or `hang` for `seconds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionFault {
    pub endpoint: String,
    pub fault: String,
    #[serde(default = "one_u32")]
    pub count: u32,
    /// How long a `hang` holds each answer back (the fault's length).
    #[serde(default)]
    pub seconds: u64,
}

fn one_u32() -> u32 {
    1
}

/// Stop the provisioning service and start it again on the same address
/// from the same database (what a restarted service must not lose), with
/// the profiles of `remove_profiles` gone from its profile folder (an
/// operator deleted them; a node assigned one is refused its profile).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRestart {
    #[serde(default)]
    pub remove_profiles: Vec<String>,
}

/// Put the provisioning service's state table in the timeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionTable {}

/// Wait for the guest to power the machine off by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitPoweroff {
    #[serde(default = "default_boot_timeout")]
    pub timeout: Dur,
}

/// `[provision]`: the run starts the provisioning service (in-process,
/// its database in the run directory) with these install profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSpec {
    pub profiles: Vec<ProfileSpec>,
}

/// One install profile: the image recipe it installs (its disk, gzip'd,
/// with its SHA-256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: toml::Spanned<String>,
    pub image: toml::Spanned<String>,
    /// Serve an image whose bytes do not match the profile's checksum (a
    /// download corrupted on the way): the agent must refuse it.
    #[serde(default)]
    pub corrupt_image: bool,
}

/// What the board's disk holds at the first power-on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskStart {
    /// The scenario's image.
    #[default]
    Image,
    /// Nothing (all zeroes): a bare node waiting to be provisioned.
    Blank,
}

/// The action names, in the order the docs list them.
pub const ACTIONS: &[&str] = &[
    "power_on",
    "boot",
    "expect",
    "wait_ssh",
    "ssh",
    "assert_slot",
    "assert_env",
    "assert_file",
    "poweroff",
    "power_cut",
    "reset",
    "corrupt_disk",
    "serve_release",
    "http_fault",
    "update",
    "assert_version",
    "link",
    "serve_bundle",
    "rauc_install",
    "assert_rauc",
    "disk_errors",
    "clear_disk_errors",
    "upload",
    "download",
    "wait_qmp",
    "assert_service",
    "checkpoint",
    "wait_callback",
    "serve_ostree",
    "assert_ostree",
    "provision_assign",
    "provision_wait",
    "provision_fault",
    "provision_table",
    "provision_restart",
    "wait_poweroff",
];

impl Step {
    pub fn action(&self) -> &'static str {
        match self {
            Step::PowerOn(_) => "power_on",
            Step::Boot(_) => "boot",
            Step::Expect(_) => "expect",
            Step::WaitSsh(_) => "wait_ssh",
            Step::Ssh(_) => "ssh",
            Step::AssertSlot(_) => "assert_slot",
            Step::AssertEnv(_) => "assert_env",
            Step::AssertFile(_) => "assert_file",
            Step::Poweroff(_) => "poweroff",
            Step::PowerCut(_) => "power_cut",
            Step::Reset(_) => "reset",
            Step::CorruptDisk(_) => "corrupt_disk",
            Step::ServeRelease(_) => "serve_release",
            Step::HttpFault(_) => "http_fault",
            Step::Update(_) => "update",
            Step::AssertVersion(_) => "assert_version",
            Step::Link(_) => "link",
            Step::ServeBundle(_) => "serve_bundle",
            Step::RaucInstall(_) => "rauc_install",
            Step::AssertRauc(_) => "assert_rauc",
            Step::DiskErrors(_) => "disk_errors",
            Step::ClearDiskErrors(_) => "clear_disk_errors",
            Step::Upload(_) => "upload",
            Step::Download(_) => "download",
            Step::WaitQmp(_) => "wait_qmp",
            Step::AssertService(_) => "assert_service",
            Step::Checkpoint(_) => "checkpoint",
            Step::WaitCallback(_) => "wait_callback",
            Step::ServeOstree(_) => "serve_ostree",
            Step::AssertOstree(_) => "assert_ostree",
            Step::ProvisionAssign(_) => "provision_assign",
            Step::ProvisionWait(_) => "provision_wait",
            Step::ProvisionFault(_) => "provision_fault",
            Step::ProvisionTable(_) => "provision_table",
            Step::ProvisionRestart(_) => "provision_restart",
            Step::WaitPoweroff(_) => "wait_poweroff",
        }
    }

    /// The step's `image` field (a recipe name), if it has one.
    fn image_mut(&mut self) -> Option<&mut toml::Spanned<String>> {
        match self {
            Step::ServeRelease(r) => Some(&mut r.image),
            Step::ServeBundle(b) => Some(&mut b.image),
            Step::ServeOstree(o) => Some(&mut o.image),
            _ => None,
        }
    }

    fn parse(action: &str, text: &str) -> std::result::Result<Option<Step>, toml::de::Error> {
        fn p<T: serde::de::DeserializeOwned>(t: &str) -> std::result::Result<T, toml::de::Error> {
            toml::from_str(t)
        }
        Ok(Some(match action {
            "power_on" => Step::PowerOn(p(text)?),
            "boot" => Step::Boot(p(text)?),
            "expect" => Step::Expect(p(text)?),
            "wait_ssh" => Step::WaitSsh(p(text)?),
            "ssh" => Step::Ssh(p(text)?),
            "assert_slot" => Step::AssertSlot(p(text)?),
            "assert_env" => Step::AssertEnv(p(text)?),
            "assert_file" => Step::AssertFile(p(text)?),
            "poweroff" => Step::Poweroff(p(text)?),
            "power_cut" => Step::PowerCut(p(text)?),
            "reset" => Step::Reset(p(text)?),
            "corrupt_disk" => Step::CorruptDisk(p(text)?),
            "serve_release" => Step::ServeRelease(p(text)?),
            "http_fault" => Step::HttpFault(p(text)?),
            "update" => Step::Update(p(text)?),
            "assert_version" => Step::AssertVersion(p(text)?),
            "link" => Step::Link(p(text)?),
            "serve_bundle" => Step::ServeBundle(p(text)?),
            "rauc_install" => Step::RaucInstall(p(text)?),
            "assert_rauc" => Step::AssertRauc(p(text)?),
            "disk_errors" => Step::DiskErrors(p(text)?),
            "clear_disk_errors" => Step::ClearDiskErrors(p(text)?),
            "upload" => Step::Upload(p(text)?),
            "download" => Step::Download(p(text)?),
            "wait_qmp" => Step::WaitQmp(p(text)?),
            "assert_service" => Step::AssertService(p(text)?),
            "checkpoint" => Step::Checkpoint(p(text)?),
            "wait_callback" => Step::WaitCallback(p(text)?),
            "serve_ostree" => Step::ServeOstree(p(text)?),
            "assert_ostree" => Step::AssertOstree(p(text)?),
            "provision_assign" => Step::ProvisionAssign(p(text)?),
            "provision_wait" => Step::ProvisionWait(p(text)?),
            "provision_fault" => Step::ProvisionFault(p(text)?),
            "provision_table" => Step::ProvisionTable(p(text)?),
            "provision_restart" => Step::ProvisionRestart(p(text)?),
            "wait_poweroff" => Step::WaitPoweroff(p(text)?),
            _ => return Ok(None),
        }))
    }
}

/// A step with where it was written.
#[derive(Debug, Clone)]
pub struct PlacedStep {
    pub step: Step,
    /// 1-based line of the step's `[[step]]` header.
    pub line: usize,
    /// The step's table as canonical JSON (no comments, no layout): what a
    /// checkpoint key hashes.
    pub canonical: String,
}

/// The `[scenario]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub boards: Vec<toml::Spanned<String>>,
    /// The image recipe (`images/recipes/<image>.toml`).
    #[serde(default = "base")]
    pub image: toml::Spanned<String>,
    /// What the disk holds at the first power-on: the image, or nothing
    /// (`blank`: a bare node the scenario provisions over the network; the
    /// image is then what it ends up running).
    #[serde(default)]
    pub disk: DiskStart,
    /// Bound on the whole run.
    #[serde(default = "default_run_timeout")]
    pub timeout: Dur,
    /// Console patterns that fail the run at once.
    #[serde(default = "default_bad_patterns")]
    pub bad_patterns: Vec<Pattern>,
    /// Board features the scenario relies on (`"watchdog"`): a board that
    /// lacks one is refused before anything boots.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Parameters: every combination of their values is its own run (see
    /// `Scenario::variants`).
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<toml::Value>>,
}

fn base() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "base".to_string())
}
fn default_run_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_bad_patterns() -> Vec<Pattern> {
    vec![Pattern("Kernel panic".into()), Pattern("Unknown command".into())]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    scenario: Header,
    #[serde(default)]
    provision: Option<ProvisionSpec>,
    #[serde(default)]
    step: Vec<toml::Spanned<toml::Table>>,
}

/// A parsed scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub header: Header,
    pub provision: Option<ProvisionSpec>,
    pub steps: Vec<PlacedStep>,
    /// The matrix values this variant runs with (`param` -> value name).
    pub variant: Vec<(String, String)>,
    text: String,
}

/// One value of a matrix parameter: `{param}` gives its name, `{param.key}`
/// one of its fields (a table value's other keys).
#[derive(Debug, Clone)]
struct MatrixValue {
    name: String,
    fields: BTreeMap<String, String>,
}

fn matrix_scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A matrix value is put into the scenario text as-is, inside a string:
/// it must not be able to end that string or the line.
fn matrix_safe(s: &str) -> bool {
    !s.chars().any(|c| matches!(c, '\'' | '"' | '\\' | '\n' | '\r'))
}

impl Scenario {
    /// Every variant of a scenario file: the file itself without a
    /// `[scenario.matrix]`, else one scenario per combination of the matrix
    /// values, named `<name>.<param>=<value>...`, with `{param}` and
    /// `{param.key}` substituted in the steps.
    pub fn load_variants(path: &Path) -> Result<Vec<Scenario>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| InputError::new(path, format!("cannot read scenario: {e}")))?;
        Self::variants(path, text)
    }

    pub fn variants(path: &Path, text: String) -> Result<Vec<Scenario>> {
        let raw: Raw = toml::from_str(&text).map_err(|e| InputError::from_toml(path, &text, 0, &e))?;
        if raw.scenario.matrix.is_empty() {
            return Ok(vec![Self::parse(path, text)?]);
        }
        let at = |key: &str, msg: String| -> crate::error::Error {
            let offset = crate::board::find_key(&text, key).unwrap_or(0);
            InputError::new(path, msg).at(&text, offset).field(format!("matrix.{key}")).into()
        };
        let mut params: Vec<(String, Vec<MatrixValue>)> = Vec::new();
        for (name, values) in &raw.scenario.matrix {
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain || name == "arch" || name == "board" {
                return Err(at(
                    name,
                    format!("`{name}` cannot be a matrix parameter (plain names; not arch or board)"),
                ));
            }
            if values.is_empty() {
                return Err(at(name, format!("`{name}` has no values")));
            }
            let mut list = Vec::new();
            for v in values {
                let value = match v {
                    toml::Value::Table(t) => {
                        let Some(name_v) = t.get("name").and_then(matrix_scalar) else {
                            return Err(at(name, format!("a table value of `{name}` needs a `name`")));
                        };
                        let mut fields = BTreeMap::new();
                        for (k, fv) in t {
                            let Some(f) = matrix_scalar(fv) else {
                                return Err(at(name, format!("`{name}.{k}`: only strings, integers and booleans")));
                            };
                            fields.insert(k.clone(), f);
                        }
                        MatrixValue { name: name_v, fields }
                    }
                    v => match matrix_scalar(v) {
                        Some(s) => MatrixValue { name: s, fields: BTreeMap::new() },
                        None => {
                            return Err(at(name, format!("`{name}`: values are strings, integers, booleans or tables")))
                        }
                    },
                };
                let all_safe = matrix_safe(&value.name) && value.fields.values().all(|f| matrix_safe(f));
                if !all_safe {
                    return Err(at(name, format!("`{name}`: a value may not contain quotes, backslashes or newlines")));
                }
                if list.iter().any(|o: &MatrixValue| o.name == value.name) {
                    return Err(at(name, format!("`{name}`: value `{}` twice", value.name)));
                }
                list.push(value);
            }
            params.push((name.clone(), list));
        }
        // The steps start at the first [[step]]: the header keeps its text.
        let steps_at = text.find("\n[[step]]").map_or(0, |i| i + 1);
        let mut combos: Vec<Vec<(String, MatrixValue)>> = vec![Vec::new()];
        for (name, values) in &params {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((name.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let placeholder = Regex::new(r"\{([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?\}").expect("static regex");
        let mut out = Vec::new();
        for combo in combos {
            let mut body = String::with_capacity(text.len());
            let mut last = steps_at;
            for m in placeholder.captures_iter(&text[steps_at..]) {
                let whole = m.get(0).expect("match");
                let Some((_, value)) = combo.iter().find(|(n, _)| n == &m[1]) else { continue };
                let got = match m.get(2) {
                    None => Some(&value.name),
                    Some(k) => value.fields.get(k.as_str()),
                };
                let Some(got) = got else {
                    return Err(InputError::new(
                        path,
                        format!("`{}`: value `{}` of `{}` has no field `{}`", whole.as_str(), value.name, &m[1], &m[2]),
                    )
                    .at(&text, steps_at + whole.start())
                    .field("matrix")
                    .into());
                };
                body.push_str(&text[last..steps_at + whole.start()]);
                body.push_str(got);
                last = steps_at + whole.end();
            }
            let substituted = format!("{}{body}{}", &text[..steps_at], &text[last..]);
            let mut s = Self::parse(path, substituted)?;
            let label: Vec<String> = combo.iter().map(|(n, v)| format!("{n}={}", v.name)).collect();
            s.header.name = format!("{}.{}", s.header.name, label.join("."));
            s.variant = combo.into_iter().map(|(n, v)| (n, v.name)).collect();
            out.push(s);
        }
        Ok(out)
    }

    pub fn parse(path: &Path, text: String) -> Result<Scenario> {
        let raw: Raw = toml::from_str(&text).map_err(|e| InputError::from_toml(path, &text, 0, &e))?;
        let mut steps: Vec<PlacedStep> = Vec::new();
        for spanned in &raw.step {
            let span = spanned.span();
            let at = |msg: String, field: &str| InputError::new(path, msg).at(&text, span.start).field(field);
            let action = match spanned.get_ref().get("action") {
                Some(toml::Value::String(a)) => a.clone(),
                Some(_) => return Err(at("`action` must be a string".into(), "action").into()),
                None => {
                    return Err(at(format!("missing field `action` (one of: {})", ACTIONS.join(", ")), "action").into())
                }
            };
            // Parse the step's own text with its header and `action` line
            // blanked out (same length), so spans still point into the file.
            let slice = blank_header_and_action(&text[span.clone()]);
            match Step::parse(&action, &slice) {
                Ok(Some(step)) => steps.push(PlacedStep {
                    step,
                    line: crate::error::line_col(&text, span.start).0,
                    canonical: serde_json::to_string(spanned.get_ref()).unwrap_or_default(),
                }),
                Ok(None) => {
                    let offset = text[span.clone()].find("action").map_or(span.start, |o| span.start + o);
                    return Err(InputError::new(
                        path,
                        format!("unknown action `{action}`, expected one of: {}", ACTIONS.join(", ")),
                    )
                    .at(&text, offset)
                    .field("action")
                    .into());
                }
                Err(e) => return Err(InputError::from_toml(path, &text, span.start, &e).into()),
            }
        }
        if steps.is_empty() {
            return Err(InputError::new(path, "a scenario needs at least one [[step]]").into());
        }
        // Step spans are relative to each step's own text; `image` fields
        // were parsed from a blanked copy of the same length, so they point
        // into the file too.
        for (placed, spanned) in steps.iter_mut().zip(&raw.step) {
            if let Some(image) = placed.step.image_mut() {
                let span = image.span();
                let base = spanned.span().start;
                *image = toml::Spanned::new(base + span.start..base + span.end, image.get_ref().clone());
            }
        }
        if raw.scenario.boards.is_empty() {
            let offset = crate::board::find_key(&text, "boards").unwrap_or(0);
            return Err(InputError::new(path, "name at least one board").at(&text, offset).field("boards").into());
        }
        let scenario = Scenario {
            path: path.to_path_buf(),
            header: raw.scenario,
            provision: raw.provision,
            steps,
            variant: Vec::new(),
            text,
        };
        scenario.check_provision(path)?;
        let root = crate::rundir::workspace_root();
        let mut bundles: Vec<&str> = Vec::new();
        let mut checkpoint_seen = false;
        let mut disk_errors_seen = false;
        // The partitions of the scenario's disk: A/B slots, or an OSTree sysroot.
        let is_ostree = scenario
            .recipe_path(&root)
            .ok()
            .and_then(|r| devlab_images::Recipe::load(&r).ok())
            .is_some_and(|(r, _)| r.ostree.is_some());
        let disk_labels: &[&str] =
            if is_ostree { &devlab_images::disk::OSTREE_LABELS } else { &devlab_images::disk::LABELS };
        for (placed, spanned) in scenario.steps.iter().zip(&raw.step) {
            let step_at = |key: &str, msg: String| -> crate::error::Error {
                let step_text = &scenario.text[spanned.span()];
                let offset = spanned.span().start + crate::board::find_key(step_text, key).unwrap_or(0);
                InputError::new(path, msg).at(&scenario.text, offset).field(key).into()
            };
            match &placed.step {
                Step::Checkpoint(_) if checkpoint_seen => {
                    return Err(step_at("action", "only one checkpoint per scenario".into()));
                }
                Step::Checkpoint(_) if disk_errors_seen => {
                    return Err(step_at(
                        "action",
                        "a checkpoint cannot follow disk_errors (blkdebug disks are not saved)".into(),
                    ));
                }
                Step::Checkpoint(c)
                    if !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
                        || c.name.is_empty() =>
                {
                    return Err(step_at("name", format!("checkpoint name {:?} is not a plain name", c.name)));
                }
                Step::Checkpoint(_) => checkpoint_seen = true,
                Step::DiskErrors(DiskErrors { partition, .. }) | Step::CorruptDisk(CorruptDisk { partition, .. })
                    if !disk_labels.contains(&partition.as_str()) =>
                {
                    let labels = disk_labels.join(", ");
                    return Err(step_at("partition", format!("no partition `{partition}` (the disk has: {labels})")));
                }
                Step::DiskErrors(_) => disk_errors_seen = true,
                Step::ServeRelease(ServeRelease { image, .. }) => {
                    scenario.recipe_for(&root, image)?;
                }
                Step::ServeBundle(b) => {
                    scenario.recipe_for(&root, &b.image)?;
                    bundles.push(&b.name);
                }
                Step::ServeOstree(o) => {
                    scenario.ostree_recipe(&root, &o.image)?;
                    scenario.ostree_recipe(&root, &scenario.header.image)?;
                }
                Step::AssertOstree(a) => {
                    for d in &a.deployments {
                        let recipe = root.join("images/recipes").join(format!("{}.toml", d.image));
                        let is_ostree = devlab_images::Recipe::load(&recipe).is_ok_and(|(r, _)| r.ostree.is_some());
                        if !is_ostree {
                            return Err(step_at(
                                "deployments",
                                format!("`{}` is not an OSTree image recipe ({})", d.image, recipe.display()),
                            ));
                        }
                    }
                }
                Step::Ssh(s)
                    if [s.power_cut_at.is_some(), s.power_cut_on_request.is_some(), s.link_drop.is_some()]
                        .iter()
                        .filter(|x| **x)
                        .count()
                        > 1 =>
                {
                    let key = if s.link_drop.is_some() { "link_drop" } else { "power_cut_on_request" };
                    return Err(step_at(key, "set one of power_cut_at, power_cut_on_request and link_drop".into()));
                }
                Step::Upload(u) if !path.parent().unwrap_or(Path::new(".")).join(&u.from).is_file() => {
                    return Err(step_at("from", format!("no file `{}` next to the scenario", u.from)));
                }
                Step::Download(d)
                    if d.to.is_empty() || d.to.contains('/') || d.to.starts_with('.') || d.to.contains('\0') =>
                {
                    return Err(step_at(
                        "to",
                        format!("`{}` must be a plain file name (it goes in the run directory)", d.to),
                    ));
                }
                Step::ProvisionAssign(_)
                | Step::ProvisionWait(_)
                | Step::ProvisionFault(_)
                | Step::ProvisionTable(_)
                | Step::ProvisionRestart(_)
                    if scenario.provision.is_none() =>
                {
                    return Err(step_at(
                        "action",
                        format!("{} needs a [provision] table (the service and its profiles)", placed.step.action()),
                    ));
                }
                Step::ProvisionAssign(a) if !scenario.profile_names().any(|n| n == a.profile) => {
                    let known: Vec<&str> = scenario.profile_names().collect();
                    return Err(step_at(
                        "profile",
                        format!("no profile `{}` in [provision] (known: {})", a.profile, known.join(", ")),
                    ));
                }
                Step::ProvisionRestart(r) => {
                    if let Some(p) = r.remove_profiles.iter().find(|p| !scenario.profile_names().any(|n| n == *p)) {
                        let known: Vec<&str> = scenario.profile_names().collect();
                        return Err(step_at(
                            "remove_profiles",
                            format!("no profile `{p}` in [provision] (known: {})", known.join(", ")),
                        ));
                    }
                }
                Step::ProvisionWait(w) if !PROVISION_STATES.contains(&w.state.as_str()) => {
                    return Err(step_at(
                        "state",
                        format!("unknown node state `{}` (one of {})", w.state, PROVISION_STATES.join(", ")),
                    ));
                }
                Step::ProvisionFault(f) => {
                    if let Err(e) = f.endpoint.parse::<devlab_provision::Endpoint>() {
                        return Err(step_at("endpoint", e));
                    }
                    match f.fault.as_str() {
                        "error500" => {}
                        "hang" if f.seconds > 0 => {}
                        "hang" => return Err(step_at("seconds", "a hang needs `seconds` (its length)".into())),
                        other => {
                            return Err(step_at("fault", format!("unknown fault `{other}` (error500 or hang)")));
                        }
                    }
                    if f.count == 0 {
                        return Err(step_at("count", "count must be at least 1".into()));
                    }
                }
                Step::RaucInstall(i) if !bundles.contains(&i.bundle.as_str()) => {
                    return Err(step_at(
                        "bundle",
                        format!("no bundle `{}` served before this step (add a serve_bundle step)", i.bundle),
                    ));
                }
                _ => {}
            }
        }
        Ok(scenario)
    }

    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// The names of the `[provision]` profiles.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.provision.iter().flat_map(|p| p.profiles.iter().map(|x| x.name.get_ref().as_str()))
    }

    /// `[provision]`: profile names plain and unique, images that exist;
    /// a blank disk only with a provisioning service to fill it.
    fn check_provision(&self, path: &Path) -> Result<()> {
        let root = crate::rundir::workspace_root();
        let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
            InputError::new(path, msg).at(&self.text, offset).field(field).into()
        };
        if self.header.disk == DiskStart::Blank && self.provision.is_none() {
            let offset = crate::board::find_key(&self.text, "disk").unwrap_or(0);
            return Err(at(offset, "disk", "a blank disk needs a [provision] table to install it".into()));
        }
        let Some(spec) = &self.provision else { return Ok(()) };
        if spec.profiles.is_empty() {
            let offset = crate::board::find_key(&self.text, "profiles").unwrap_or(0);
            return Err(at(offset, "provision.profiles", "name at least one profile".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &spec.profiles {
            let name = p.name.get_ref();
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
            if !plain {
                return Err(at(
                    p.name.span().start,
                    "provision.profiles.name",
                    format!("{name:?} is not a plain name"),
                ));
            }
            if !seen.insert(name) {
                return Err(at(p.name.span().start, "provision.profiles.name", format!("profile `{name}` twice")));
            }
            self.recipe_for(&root, &p.image)?;
        }
        Ok(())
    }

    /// Boards named in the file, resolved to profiles; an unknown one is an
    /// input error pointing at its entry.
    pub fn resolve_boards(&self) -> Result<Vec<crate::board::Board>> {
        self.header.boards.iter().map(|b| self.resolve_board(b)).collect()
    }

    fn resolve_board(&self, b: &toml::Spanned<String>) -> Result<crate::board::Board> {
        let board = crate::board::find(b.get_ref()).map_err(|e| match e {
            crate::error::Error::Input(ie) if !ie.file.exists() => {
                InputError::new(&self.path, ie.message).at(&self.text, b.span().start).field("boards").into()
            }
            other => other,
        })?;
        self.check_board(&board)?;
        Ok(board)
    }

    /// Refuse a board that lacks a feature the scenario `needs`, has no
    /// U-Boot for a `boot` step, or cannot boot from the network to fill a
    /// blank disk.
    pub fn check_board(&self, board: &crate::board::Board) -> Result<()> {
        let refuse = |key: &str, msg: String| -> crate::error::Error {
            let offset = crate::board::find_key(&self.text, key).unwrap_or(0);
            InputError::new(&self.path, msg).at(&self.text, offset).field(key).into()
        };
        if self.header.disk == DiskStart::Blank && board.pxe.is_none() {
            return Err(refuse(
                "disk",
                format!("a blank disk needs a board that boots from the network; `{}` does not (no `pxe`)", board.name),
            ));
        }
        if board.uboot().is_none() {
            if let Some(p) = self.steps.iter().find(|p| matches!(p.step, Step::Boot(_))) {
                let offset = self.text.lines().take(p.line - 1).map(|l| l.len() + 1).sum();
                return Err(InputError::new(
                    &self.path,
                    format!("board `{}` has no U-Boot to stop (`boot` step)", board.name),
                )
                .at(&self.text, offset)
                .field("action")
                .into());
            }
        }
        for need in &self.header.needs {
            let ok = match need.as_str() {
                "watchdog" => board.watchdog.is_some(),
                other => {
                    let offset = self.text.find(&format!("\"{other}\"")).unwrap_or(0);
                    return Err(InputError::new(&self.path, format!("unknown need `{other}` (known: watchdog)"))
                        .at(&self.text, offset)
                        .field("needs")
                        .into());
                }
            };
            if !ok {
                let offset = crate::board::find_key(&self.text, "needs").unwrap_or(0);
                return Err(InputError::new(
                    &self.path,
                    format!("board `{}` has no {need} (its profile {} sets none)", board.name, board.path.display()),
                )
                .at(&self.text, offset)
                .field("needs")
                .into());
            }
        }
        Ok(())
    }

    /// The image recipe path, or an input error at the `image` field.
    pub fn recipe_path(&self, root: &Path) -> Result<PathBuf> {
        self.recipe_for(root, &self.header.image)
    }

    /// Like [`Scenario::recipe_for`], and the recipe must be an OSTree image.
    pub fn ostree_recipe(&self, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
        let path = self.recipe_for(root, image)?;
        let is_ostree = devlab_images::Recipe::load(&path)?.0.ostree.is_some();
        if !is_ostree {
            return Err(InputError::new(
                &self.path,
                format!(
                    "image `{}` is not an OSTree image ({} has no [ostree] table)",
                    image.get_ref(),
                    path.display()
                ),
            )
            .at(&self.text, image.span().start)
            .field("image")
            .into());
        }
        Ok(path)
    }

    /// The last build of the image a (spanned) `image` field names, for
    /// `arch`; one that is not built (or stale) is an input error at that
    /// field, saying how to build it.
    pub fn built_image(
        &self,
        root: &Path,
        image: &toml::Spanned<String>,
        arch: devlab_images::Arch,
    ) -> Result<devlab_images::BuiltImage> {
        locate_image(&self.path, &self.text, root, image, arch)
    }

    /// Every `image` a step serves (releases, bundles, OSTree commits) or
    /// a `[provision]` profile installs.
    pub fn served_images(&self) -> Vec<&toml::Spanned<String>> {
        self.steps
            .iter()
            .filter_map(|p| match &p.step {
                Step::ServeRelease(r) => Some(&r.image),
                Step::ServeBundle(b) => Some(&b.image),
                Step::ServeOstree(o) => Some(&o.image),
                _ => None,
            })
            .chain(self.provision.iter().flat_map(|p| p.profiles.iter().map(|x| &x.image)))
            .collect()
    }

    /// The recipe named by a (spanned) `image` field anywhere in the file.
    pub fn recipe_for(&self, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
        recipe_for(&self.path, &self.text, root, image)
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The recipe a (spanned) `image` field of `file` names; an input error at
/// that field if there is none.
pub fn recipe_for(file: &Path, text: &str, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
    let name = image.get_ref();
    let path = root.join("images").join("recipes").join(format!("{name}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    Err(InputError::new(file, format!("no image recipe `{name}` ({} does not exist)", path.display()))
        .at(text, image.span().start)
        .field("image")
        .into())
}

/// The built image a (spanned) `image` field of `file` names, for `arch`;
/// an input error at that field if it is not built (or stale).
pub fn locate_image(
    file: &Path,
    text: &str,
    root: &Path,
    image: &toml::Spanned<String>,
    arch: devlab_images::Arch,
) -> Result<devlab_images::BuiltImage> {
    let recipe = recipe_for(file, text, root, image)?;
    devlab_images::locate(&recipe, arch).map_err(|e| match e {
        devlab_images::ImageError::NotBuilt { .. } | devlab_images::ImageError::Stale { .. } => {
            InputError::new(file, e.to_string()).at(text, image.span().start).field("image").into()
        }
        other => other.into(),
    })
}

/// Is `path` a scenario file? (`*.toml`, but not a crate's `Cargo.toml`.)
pub fn is_scenario_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "toml") && path.file_name().is_some_and(|n| n != "Cargo.toml")
}

fn blank_header_and_action(slice: &str) -> String {
    let mut out = String::with_capacity(slice.len());
    for line in slice.split_inclusive('\n') {
        let t = line.trim_start();
        let is_action = t.strip_prefix("action").is_some_and(|r| r.trim_start().starts_with('='));
        if t.starts_with("[[") || is_action {
            out.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::parse(Path::new("s.toml"), text.to_string())
    }

    const HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n\n";

    #[test]
    fn steps_parse_in_order() {
        let s = parse(&format!(
            "{HEAD}[[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"expect\"\npattern = 'slot (?<s>[AB])'\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].line, 8);
        match &s.steps[1].step {
            Step::Expect(e) => assert_eq!(e.timeout.0, Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
    }

    const PXE_HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64-pxe\"]\ndisk = \"blank\"\n\n";

    #[test]
    fn provision_steps_and_profiles_are_checked() {
        let prov = "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";
        let ok = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_assign\"\nprofile = \"ab\"\n\n[[step]]\naction = \"provision_wait\"\nstate = \"INSTALLED\"\n"
        ))
        .unwrap();
        assert_eq!(ok.profile_names().collect::<Vec<_>>(), ["ab"]);
        assert_eq!(ok.header.disk, DiskStart::Blank);

        let err = parse(&format!("{PXE_HEAD}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:4:1: field `disk`: a blank disk needs a [provision] table"), "{err}");

        let err = parse(&format!("{HEAD}[[step]]\naction = \"provision_table\"\n")).unwrap_err().to_string();
        assert!(err.contains("provision_table needs a [provision] table"), "{err}");

        let err = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"provision_assign\"\nprofile = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `profile`: no profile `nope` in [provision] (known: ab)"), "{err}");

        let err = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"provision_wait\"\nstate = \"DONE\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `state`: unknown node state `DONE`"), "{err}");

        let err = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_fault\"\nendpoint = \"profile\"\nfault = \"hang\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `seconds`: a hang needs `seconds`"), "{err}");

        let err = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_restart\"\nremove_profiles = [\"ab\", \"abc\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("s.toml:11:1: field `remove_profiles`: no profile `abc` in [provision] (known: ab)"),
            "{err}"
        );

        let dup =
            "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" },\n  { name = \"ab\", image = \"v2\" }]\n\n";
        let err = parse(&format!("{PXE_HEAD}{dup}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:12: field `provision.profiles.name`: profile `ab` twice"), "{err}");

        let missing = "[provision]\nprofiles = [{ name = \"ab\", image = \"no-such\" }]\n\n";
        let err = parse(&format!("{PXE_HEAD}{missing}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.contains("field `image`: no image recipe `no-such`"), "{err}");
    }

    #[test]
    fn boards_without_network_boot_or_uboot_are_refused() {
        let prov = "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";
        let s = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"power_on\"\n")).unwrap();
        let uboot_board = crate::board::find("qemu-x86_64").unwrap();
        let err = s.check_board(&uboot_board).unwrap_err().to_string();
        assert!(err.contains("field `disk`: a blank disk needs a board that boots from the network"), "{err}");
        let pxe_board = crate::board::find("qemu-x86_64-pxe").unwrap();
        s.check_board(&pxe_board).unwrap();

        let s = parse(&format!("{HEAD}[[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"boot\"\n")).unwrap();
        let err = s.check_board(&pxe_board).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:1: field `action`: board `qemu-x86_64-pxe` has no U-Boot"), "{err}");
    }

    #[test]
    fn unknown_field_points_at_its_line() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"expect\"\npatern = \"x\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:1: field `patern`: unknown field `patern`"), "{err}");
    }

    #[test]
    fn unknown_action_lists_the_known_ones() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"explode\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:6:1: field `action`: unknown action `explode`"), "{err}");
        assert!(err.contains("power_on"), "{err}");
    }

    #[test]
    fn every_action_is_listed_and_parses() {
        // Each name in ACTIONS maps to a step (unknown ones parse to None).
        for action in ACTIONS {
            let parsed = Step::parse(action, "");
            assert!(!matches!(parsed, Ok(None)), "{action} is listed but not parsed");
        }
        assert!(matches!(Step::parse("explode", ""), Ok(None)));
    }

    #[test]
    fn ostree_steps_name_ostree_images() {
        // The scenario's own image (base) is not an OSTree image.
        let err = parse(&format!("{HEAD}[[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `image`: image `base` is not an OSTree image"), "{err}");
        let head = HEAD.replace("[scenario]\n", "[scenario]\nimage = \"ostree\"\n");
        let err =
            parse(&format!("{head}[[step]]\naction = \"serve_ostree\"\nimage = \"v2\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: image `v2` is not an OSTree image"), "{err}");
        let err =
            parse(&format!("{head}[[step]]\naction = \"serve_ostree\"\nimage = \"nope\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: no image recipe `nope`"), "{err}");
        let err = parse(&format!(
            "{head}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree-v9\", state = \"booted\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:8:1: field `deployments`: `ostree-v9` is not an OSTree image recipe"), "{err}");
        let err = parse(&format!(
            "{head}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree\", state = \"up\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `up`"), "{err}");
        // An OSTree disk has a sysroot, not root slots.
        parse(&format!("{head}[[step]]\naction = \"corrupt_disk\"\npartition = \"sysroot\"\n")).unwrap();
        let err = parse(&format!("{head}[[step]]\naction = \"corrupt_disk\"\npartition = \"rootfs-a\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no partition `rootfs-a` (the disk has: boot, uboot-env-a, uboot-env-b, sysroot)"),
            "{err}"
        );
        let err = parse(&format!(
            "{HEAD}[[step]]\naction = \"ssh\"\ncommand = \"x\"\npower_cut_at = 'a'\nlink_drop = {{ on_request = 'b', seconds = 1 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:9:1: field `link_drop`: set one of power_cut_at"), "{err}");
        parse(&format!(
            "{head}[[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n\n\
             [[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree-v2\", state = \"pending\" }}]\n"
        ))
        .unwrap();
    }

    #[test]
    fn rauc_install_needs_a_bundle_served_before_it() {
        let text = format!(
            "{HEAD}[[step]]\naction = \"rauc_install\"\nbundle = \"v2\"\n\n\
             [[step]]\naction = \"serve_bundle\"\nname = \"v2\"\nimage = \"rauc-v2\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:1: field `bundle`: no bundle `v2` served"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"serve_bundle\"\nname = \"x\"\nimage = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: no image recipe `nope`"), "{err}");
        let err = parse(&format!(
            "{HEAD}[[step]]\naction = \"serve_bundle\"\nname = \"x\"\nimage = \"rauc\"\nsigner = \"me\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:9:10:") && err.contains("unknown variant `me`"), "{err}");
    }

    #[test]
    fn disk_fault_steps_name_a_real_partition() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"disk_errors\"\npartition = \"rootfs-c\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:7:1: field `partition`: no partition `rootfs-c`"), "{err}");
        assert!(err.contains("rootfs-b"), "{err}");
        let err =
            parse(&format!("{HEAD}[[step]]\naction = \"disk_errors\"\npartition = \"data\"\nerrno = \"EPERM\"\n"))
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("s.toml:8:9:") && err.contains("unknown variant `EPERM`"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"corrupt_disk\"\npartition = \"env\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:7:1: field `partition`"), "{err}");
        parse(&format!("{HEAD}[[step]]\naction = \"disk_errors\"\npartition = \"rootfs-b\"\niotype = \"read\"\n"))
            .unwrap();
    }

    #[test]
    fn transfers_are_checked_before_booting() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"upload\"\nfrom = \"no/such\"\nto = \"/run/x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:7:1: field `from`: no file `no/such`"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"download\"\nfrom = \"/etc/x\"\nto = \"../x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:8:1: field `to`:") && err.contains("plain file name"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"wait_qmp\"\n")).unwrap_err().to_string();
        assert!(err.contains("missing field `event`"), "{err}");
    }

    #[test]
    fn a_matrix_makes_one_scenario_per_combination() {
        let text = "[scenario]\nname = \"m\"\nboards = [\"qemu-x86_64\"]\n\n[scenario.matrix]\n\
                    copy = [{ name = \"a\", part = \"uboot-env-a\" }, { name = \"b\", part = \"uboot-env-b\" }]\n\
                    wait = [\"1s\", 2]\n\n\
                    [[step]]\naction = \"corrupt_disk\"\npartition = \"{copy.part}\"\n\n\
                    [[step]]\naction = \"expect\"\npattern = 'env {copy} on {arch}'\ntimeout = \"{wait}\"\n";
        // `2` is not a duration: that variant's error points at its line.
        let err = Scenario::variants(Path::new("s.toml"), text.to_string()).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:16:11:") && err.contains("not a duration"), "{err}");
        let text = text.replace("wait = [\"1s\", 2]", "wait = [\"1s\", \"2s\"]");
        let all = Scenario::variants(Path::new("s.toml"), text).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["m.copy=a.wait=1s", "m.copy=a.wait=2s", "m.copy=b.wait=1s", "m.copy=b.wait=2s"]);
        let Step::CorruptDisk(c) = &all[3].steps[0].step else { panic!() };
        assert_eq!(c.partition, "uboot-env-b");
        let Step::Expect(e) = &all[3].steps[1].step else { panic!() };
        // Placeholders that are not parameters ({arch}) stay for the runner.
        assert_eq!((e.pattern.0.as_str(), e.timeout.0), ("env b on {arch}", Duration::from_secs(2)));
        assert_eq!(all[2].variant, [("copy".to_string(), "b".to_string()), ("wait".to_string(), "1s".to_string())]);
        assert!(Scenario::load_variants(Path::new("/nonexistent.toml")).is_err());
    }

    #[test]
    fn bad_matrices_are_refused_where_they_are_written() {
        let head = "[scenario]\nname = \"m\"\nboards = [\"qemu-x86_64\"]\n[scenario.matrix]\n";
        let step = "\n[[step]]\naction = \"expect\"\npattern = '{x.nope}'\n";
        let v = |m: &str| Scenario::variants(Path::new("s.toml"), format!("{head}{m}{step}")).unwrap_err().to_string();
        let e = v("arch = [\"a\"]\n");
        assert!(e.starts_with("s.toml:5:1: field `matrix.arch`") && e.contains("cannot be a matrix parameter"), "{e}");
        let e = v("x = []\n");
        assert!(e.contains("`x` has no values"), "{e}");
        let e = v("x = [\"it's\"]\n");
        assert!(e.contains("quotes"), "{e}");
        let e = v("x = [{ part = \"p\" }]\n");
        assert!(e.contains("needs a `name`"), "{e}");
        let e = v("x = [\"a\", \"a\"]\n");
        assert!(e.contains("value `a` twice"), "{e}");
        let e = v("x = [\"a\"]\n");
        assert!(e.starts_with("s.toml:9:12: field `matrix`") && e.contains("no field `nope`"), "{e}");
    }

    #[test]
    fn bad_duration_and_regex_are_refused_at_the_value() {
        let err =
            parse(&format!("{HEAD}[[step]]\naction = \"wait_ssh\"\ntimeout = \"soon\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:11:"), "{err}");
        assert!(err.contains("not a duration"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"expect\"\npattern = \"(\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:11:"), "{err}");
        assert!(err.contains("regex"), "{err}");
    }

    #[test]
    fn missing_action_and_header_fields() {
        let err = parse(&format!("{HEAD}[[step]]\ntimeout = \"1s\"\n")).unwrap_err().to_string();
        assert!(err.contains("missing field `action`"), "{err}");
        let err = parse("[scenario]\nname = \"t\"\n[[step]]\naction = \"power_on\"\n").unwrap_err().to_string();
        assert!(err.contains("missing field `boards`"), "{err}");
        let err = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\ncolour = 1\n[[step]]\naction = \"power_on\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:4:1: field `colour`"), "{err}");
    }

    #[test]
    fn unknown_board_points_at_the_entry() {
        let s = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\", \"qemu-riscv\"]\n[[step]]\naction = \"power_on\"\n",
        )
        .unwrap();
        let err = s.resolve_boards().unwrap_err().to_string();
        assert!(err.starts_with("s.toml:3:26: field `boards`: unknown board `qemu-riscv`"), "{err}");
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = crate::rundir::workspace_root().join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if is_scenario_file(&p) {
                for s in Scenario::load_variants(&p).unwrap_or_else(|e| panic!("{e}")) {
                    s.resolve_boards().unwrap();
                    s.recipe_path(&crate::rundir::workspace_root()).unwrap();
                    n += 1;
                }
            }
        }
        assert!(n >= 1, "no scenarios in {}", dir.display());
    }
}
