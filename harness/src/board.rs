//! Board profiles: data files (`harness/boards/*.toml`) describing a virtual
//! board — machine type, CPU, RAM, firmware (typed by [`crate::firmware`],
//! which owns what differs between firmware), disk and NIC models, SMBIOS
//! identity — and their translation into QEMU arguments, for a run and for
//! the KVM probe. Nothing here spawns a process or touches the run directory.

use crate::error::{InputError, Result};
use crate::firmware::FirmwareTable;
pub use crate::firmware::{Firmware, Pxe, UbootPrompts};
use devlab_images::Arch;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A board profile, validated: what the harness uses.
#[derive(Debug, Clone)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub machine: String,
    pub cpu: String,
    pub smp: u32,
    pub memory_mib: u32,
    /// Accelerators in order of preference; the first that works is used.
    pub accel: Vec<Accel>,
    /// The firmware, typed: its kind owns everything that differs between
    /// firmware (see [`crate::firmware`]).
    pub firmware: Firmware,
    pub disk: Disk,
    pub nic: Nic,
    pub smbios: Option<Smbios>,
    /// Whether (and how: the firmware decides, the profile's `pxe` must
    /// agree) the board boots from the network, network first, then disk.
    pub pxe: Option<Pxe>,
    /// A hardware watchdog model (`i6300esb`), reset on expiry; `None` if
    /// the board has none (a scenario that needs one is refused).
    pub watchdog: Option<String>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// The guest port SSH is forwarded to (22; a device profile may say
    /// otherwise).
    pub ssh_guest_port: u16,
    /// Where the profile was read from.
    pub path: PathBuf,
    /// A board devlab does not run as QEMU (`[external]`): its console,
    /// power switch, SSH address and flash command.
    pub external: Option<crate::external::External>,
}

/// The profile file as written (`harness/boards/*.toml`); [`Board::parse`]
/// checks it and builds the [`Board`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    #[serde(default)]
    description: String,
    arch: Arch,
    machine: String,
    cpu: String,
    #[serde(default = "one")]
    smp: u32,
    memory_mib: u32,
    #[serde(default = "default_accel")]
    accel: Vec<Accel>,
    firmware: FirmwareTable,
    /// Accepted for older profiles, and unused: the harness reads the
    /// serial port QEMU gives it, whatever the guest calls it.
    #[serde(default)]
    #[allow(dead_code)]
    console: Console,
    disk: Disk,
    nic: Nic,
    #[serde(default)]
    smbios: Option<Smbios>,
    /// U-Boot's prompts; required for U-Boot firmware, refused for others.
    #[serde(default)]
    uboot: Option<UbootPrompts>,
    /// `ipxe` or `uboot`: see [`Pxe`].
    #[serde(default)]
    pxe: Option<Pxe>,
    #[serde(default)]
    watchdog: Option<String>,
    #[serde(default)]
    extra_args: Vec<String>,
}

/// An external board's profile file (see [`Board::parse_external`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalProfileFile {
    name: String,
    #[serde(default)]
    description: String,
    arch: Arch,
    uboot: UbootPrompts,
    /// The board has a hardware watchdog that resets it.
    #[serde(default)]
    watchdog: bool,
    /// The board's MAC address (for lab-network leases), if known.
    #[serde(default)]
    mac: Option<String>,
    external: crate::external::ExternalFile,
}

fn one() -> u32 {
    1
}

fn default_accel() -> Vec<Accel> {
    vec![Accel::Kvm, Accel::Tcg]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// `[console]`: accepted for compatibility with older profiles, unused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Console {
    /// The guest's name for its serial console (`ttyS0`): never read.
    #[serde(default)]
    #[allow(dead_code)]
    guest_device: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub model: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub model: String,
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smbios {
    pub manufacturer: String,
    pub product: String,
    pub serial: String,
    pub uuid: String,
}

/// Paths the machine lives at, handed to [`Board::qemu_args`].
pub struct QemuPaths<'a> {
    pub console_sock: &'a Path,
    pub qmp_sock: &'a Path,
    pub monitor_sock: &'a Path,
    pub disk: &'a Path,
    /// Injected disk errors (empty: the plain `-drive`).
    pub disk_errors: &'a [DiskError],
    /// An internal snapshot of the disk to start from (`-loadvm`).
    pub loadvm: Option<&'a str>,
    /// The run's overlay on the firmware's flash image (second bank).
    pub env_flash: Option<&'a Path>,
    /// The TFTP folder of the user network (with `boot.ipxe`), for a board
    /// that boots from the network.
    pub tftp: Option<&'a Path>,
    /// Turn all-zero writes into zero clusters (an install writing a whole
    /// disk image then costs only its data).
    pub detect_zeroes: bool,
    /// A lab network tap for the NIC, instead of the user network.
    pub tap: Option<&'a str>,
    /// Faults may change the disk while the machine runs (an armed
    /// `disk_errors` or `corrupt_disk`): see [`DISK_NODE`].
    pub disk_armable: bool,
    /// Its end of a product's private link (a second NIC), if any.
    pub link: Option<&'a crate::product::LinkEnd>,
}

/// With `QemuPaths::disk_armable` the disk is a `raw` node named `disk0`
/// over the overlay (node `disk0-layer0`, the overlay's qcow2 or the
/// blkdebug node above it), and the device is `disk0-dev`: an armed fault
/// adds a blkdebug node above the current layer and points `disk0` at it
/// (QMP `blockdev-reopen`), or writes through the device (`qemu-io`).
pub const DISK_NODE: &str = "disk0";
/// The disk device's qdev id when the disk is armable.
pub const DISK_DEVICE: &str = "disk0-dev";

/// Which requests a disk error hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoType {
    Read,
    Write,
}

/// The error a failing request returns to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Errno {
    EIO,
    ENOSPC,
}

impl Errno {
    pub fn number(self) -> i32 {
        match self {
            Errno::EIO => 5,
            Errno::ENOSPC => 28,
        }
    }
}

/// A bad spot on the disk, injected by QEMU's `blkdebug` driver: every
/// request of `iotype` that touches disk byte `offset` fails with `errno`,
/// for as long as the machine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskError {
    pub offset: u64,
    pub iotype: IoType,
    pub errno: Errno,
}

/// The `-blockdev` JSON for the overlay behind a blkdebug node. blkdebug
/// sits ABOVE the qcow2 format node, so offsets are guest disk offsets (below
/// qcow2 they would be offsets in the overlay file); its rules use the
/// `none` event, which blkdebug fires itself when it opens, because no
/// format driver above it ever sends events.
fn blkdebug_blockdev(disk: &Path, errors: &[DiskError]) -> String {
    blkdebug_node("disk0", qcow2_node(None, disk), errors).to_string()
}

/// The overlay's qcow2 node (named, or QEMU names it).
fn qcow2_node(name: Option<&str>, disk: &Path) -> serde_json::Value {
    let mut node =
        serde_json::json!({"driver": "qcow2", "file": {"driver": "file", "filename": disk.to_string_lossy()}});
    if let Some(name) = name {
        node["node-name"] = name.into();
    }
    node
}

/// A blkdebug node named `name` over `image` (a node, or a node's name).
pub(crate) fn blkdebug_node(name: &str, image: serde_json::Value, errors: &[DiskError]) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| {
            serde_json::json!({
                "event": "none",
                "iotype": match e.iotype { IoType::Read => "read", IoType::Write => "write" },
                "errno": e.errno.number(),
                "sector": e.offset / 512,
                "once": false,
                "immediately": true,
            })
        })
        .collect();
    serde_json::json!({
        "driver": "blkdebug",
        "node-name": name,
        "image": image,
        "inject-error": rules,
    })
}

/// The armable disk's top node (see [`DISK_NODE`]) over `file`.
pub(crate) fn armable_top(file: serde_json::Value, detect_zeroes: bool) -> serde_json::Value {
    let mut top = serde_json::json!({"driver": "raw", "node-name": DISK_NODE, "file": file});
    if detect_zeroes {
        top["detect-zeroes"] = "on".into();
    }
    top
}

/// Layer `n` of the armable disk.
pub(crate) fn disk_layer(n: usize) -> String {
    format!("{DISK_NODE}-layer{n}")
}

impl Board {
    /// Read and validate a profile file.
    pub fn load(path: &Path) -> Result<Board> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, format!("cannot read board profile: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Board> {
        if text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("external")) {
            return Self::parse_external(path, text);
        }
        let file: ProfileFile = toml::from_str(text).map_err(|e| InputError::from_toml(path, text, 0, &e))?;
        let field_err = |field: &str, msg: String| {
            let offset = locate(text, field).unwrap_or(0);
            InputError::new(path, msg).at(text, offset).field(field)
        };
        if file.smp == 0 {
            return Err(field_err("smp", "must be at least 1".into()).into());
        }
        if file.memory_mib < 64 {
            return Err(field_err("memory_mib", "must be at least 64".into()).into());
        }
        if file.accel.is_empty() {
            return Err(field_err("accel", "name at least one accelerator".into()).into());
        }
        if !valid_mac(&file.nic.mac) {
            return Err(
                field_err("mac", format!("`{}` is not a MAC address like 52:54:00:12:34:56", file.nic.mac)).into()
            );
        }
        let firmware = Firmware::from_profile(file.firmware, file.uboot, file.pxe, &file.nic.model)
            .map_err(|e| field_err(e.field, e.message))?;
        Ok(Board {
            name: file.name,
            description: file.description,
            arch: file.arch,
            machine: file.machine,
            cpu: file.cpu,
            smp: file.smp,
            memory_mib: file.memory_mib,
            accel: file.accel,
            firmware,
            disk: file.disk,
            nic: file.nic,
            smbios: file.smbios,
            pxe: file.pxe,
            watchdog: file.watchdog,
            extra_args: file.extra_args,
            ssh_guest_port: 22,
            path: path.to_path_buf(),
            external: None,
        })
    }

    /// An external board's profile: name, arch, U-Boot's prompts, whether
    /// it has a watchdog, and `[external]` (see [`crate::external`]). What
    /// describes QEMU hardware is not asked for, and refused.
    fn parse_external(path: &Path, text: &str) -> Result<Board> {
        let file: ExternalProfileFile = toml::from_str(text).map_err(|e| InputError::from_toml(path, text, 0, &e))?;
        let at = |field: &str, msg: String| {
            let offset = locate(text, field).unwrap_or(0);
            InputError::new(path, msg).at(text, offset).field(field)
        };
        let external = file.external.validate(path, &file.name, &at)?;
        let table = FirmwareTable { path: PathBuf::new(), package: String::new(), kind: "bios".into() };
        let firmware = Firmware::from_profile(table, Some(file.uboot), None, "").map_err(|e| at(e.field, e.message))?;
        Ok(Board {
            name: file.name,
            description: file.description,
            arch: file.arch,
            machine: "external".into(),
            cpu: String::new(),
            smp: 1,
            memory_mib: 0,
            accel: Vec::new(),
            firmware,
            disk: Disk { model: String::new() },
            nic: Nic { model: String::new(), mac: file.mac.unwrap_or_default() },
            smbios: None,
            pxe: None,
            watchdog: file.watchdog.then(|| "board".to_string()),
            extra_args: Vec::new(),
            ssh_guest_port: 22,
            path: path.to_path_buf(),
            external: Some(external),
        })
    }

    /// Is this a board devlab does not run as QEMU?
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// U-Boot's prompts, if the firmware is U-Boot (a `boot` step needs them).
    pub fn uboot(&self) -> Option<&UbootPrompts> {
        self.firmware.prompts()
    }

    /// What the KVM probe waits for on the serial port (the firmware's
    /// choice: U-Boot's autoboot prompt, iPXE's DHCP, SeaBIOS trying the disk).
    pub fn firmware_marker(&self) -> String {
        self.firmware.probe_marker(self.pxe.is_some())
    }

    /// Devices the KVM probe adds: the NIC (with its boot ROM) when the
    /// firmware's network boot runs there (iPXE).
    pub fn probe_args(&self) -> Vec<String> {
        if !self.firmware.probe_needs_nic(self.pxe.is_some()) {
            return Vec::new();
        }
        vec!["-netdev".into(), "user,id=net0".into(), "-device".into(), self.nic_device()]
    }

    /// QEMU's display arguments (the firmware's: SeaBIOS needs `-nographic`
    /// to print on the serial port).
    pub fn display_args(&self) -> &'static [&'static str] {
        self.firmware.display_args()
    }

    /// Is the firmware file present? (`devlab boards` shows it; starting a
    /// machine without it is an input error naming the package.)
    pub fn firmware_present(&self) -> bool {
        self.firmware.present()
    }

    pub fn check_firmware(&self) -> Result<()> {
        if self.firmware_present() || self.is_external() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let offset = find_key(&text, "path").unwrap_or(0);
        Err(InputError::new(
            &self.path,
            format!(
                "firmware {} is missing: install Debian package `{}` (cargo xtask setup)",
                self.firmware.path.display(),
                self.firmware.package
            ),
        )
        .at(&text, offset)
        .field("firmware.path")
        .into())
    }

    /// The QEMU command line (without the binary) for this board.
    pub fn qemu_args(&self, accel: Accel, paths: &QemuPaths<'_>) -> Vec<String> {
        let mut a = self.machine_args(accel);
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        // The harness listens on both sockets before QEMU starts, and QEMU
        // connects as a client: no console byte or QMP event is ever missed,
        // and nothing polls for a socket file to appear.
        push(&["-chardev", &format!("socket,id=con0,path={}", paths.console_sock.display())]);
        push(&["-serial", "chardev:con0"]);
        push(&["-chardev", &format!("socket,id=qmp0,path={}", paths.qmp_sock.display())]);
        push(&["-mon", "chardev=qmp0,mode=control"]);
        // A human monitor for people who attach to a kept machine.
        push(&["-monitor", &format!("unix:{},server=on,wait=off", paths.monitor_sock.display())]);
        // Network boot first, then the disk (the NIC's ROM `exit`s to it).
        let disk_boot = if self.pxe.is_some() { ",bootindex=2" } else { "" };
        let zeroes = if paths.detect_zeroes { ",detect-zeroes=on" } else { "" };
        if paths.disk_armable {
            let layer0 = match paths.disk_errors {
                [] => qcow2_node(Some(&disk_layer(0)), paths.disk),
                errors => blkdebug_node(&disk_layer(0), qcow2_node(None, paths.disk), errors),
            };
            push(&["-blockdev", &armable_top(layer0, paths.detect_zeroes).to_string()]);
            push(&[
                "-device",
                &format!(
                    "{},drive={DISK_NODE},id={DISK_DEVICE},werror=report,rerror=report{disk_boot}",
                    self.disk.model
                ),
            ]);
        } else if paths.disk_errors.is_empty() {
            push(&["-drive", &format!("if=none,id=disk0,file={},format=qcow2{zeroes}", paths.disk.display())]);
            push(&["-device", &format!("{},drive=disk0{disk_boot}", self.disk.model)]);
        } else {
            push(&["-blockdev", &blkdebug_blockdev(paths.disk, paths.disk_errors)]);
            // Report every error to the guest (never pause the VM).
            push(&["-device", &format!("{},drive=disk0,werror=report,rerror=report{disk_boot}", self.disk.model)]);
        }
        let mut netdev = format!("user,id=net0,hostfwd=tcp:127.0.0.1:0-:{}", self.ssh_guest_port);
        if let (Some(dir), Some(pxe)) = (paths.tftp, self.pxe) {
            netdev += &format!(",tftp={},bootfile={}", dir.display(), pxe.bootfile());
        }
        if let Some(tap) = paths.tap {
            // A lab network's tap (its dnsmasq serves DHCP and TFTP).
            netdev = format!("tap,id=net0,ifname={tap},script=no,downscript=no");
        }
        push(&["-netdev", &netdev]);
        push(&["-device", &self.nic_device()]);
        if let Some(end) = paths.link {
            let link = crate::product::qemu_args(end, &self.nic.model);
            push(&link.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if let Some(s) = &self.smbios {
            push(&[
                "-smbios",
                &format!(
                    "type=1,manufacturer={},product={},serial={},uuid={}",
                    s.manufacturer, s.product, s.serial, s.uuid
                ),
            ]);
            push(&["-uuid", &s.uuid]);
            // The same identity where firmware without SMBIOS (U-Boot on
            // arm64 boots the kernel without UEFI) leaves it readable:
            // /sys/firmware/qemu_fw_cfg/by_name/opt/org.devlab/<key>/raw.
            for (key, value) in
                [("uuid", &s.uuid), ("serial", &s.serial), ("manufacturer", &s.manufacturer), ("product", &s.product)]
            {
                push(&["-fw_cfg", &format!("name=opt/org.devlab/{key},string={}", value.replace(',', ",,"))]);
            }
        }
        if let Some(model) = &self.watchdog {
            push(&["-device", model, "-action", "watchdog=reset"]);
        }
        if let Some(flash) = paths.env_flash {
            // Writethrough: every flash write is flushed, qcow2's own tables
            // included, so a power cut keeps what U-Boot saved, as flash does.
            let drive = format!("if=pflash,unit=1,format=qcow2,cache=writethrough,file={}", flash.display());
            push(&["-drive", &drive]);
        }
        a.extend(self.extra_args.iter().cloned());
        if let Some(tag) = paths.loadvm {
            a.extend(["-loadvm".to_string(), tag.to_string()]);
        }
        a
    }

    /// The KVM probe's command line (without the binary): this board's
    /// machine, CPU, memory and firmware as a run has them, under KVM, the
    /// serial port on stdout, no disk, and the devices the firmware's probe
    /// needs ([`Board::probe_args`]).
    pub fn probe_qemu_args(&self) -> Vec<String> {
        let mut a = self.machine_args(Accel::Kvm);
        a.extend(["-serial".to_string(), "stdio".to_string()]);
        a.extend(self.probe_args());
        a
    }

    /// The start of every command line: no defaults, display, machine,
    /// accelerator, CPU, memory and the firmware.
    fn machine_args(&self, accel: Accel) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-nodefaults", "-no-user-config"]);
        push(self.display_args());
        push(&["-machine", &self.machine, "-accel", accel.as_str()]);
        push(&["-cpu", &self.cpu, "-smp", &self.smp.to_string()]);
        push(&["-m", &format!("{}M", self.memory_mib)]);
        a.extend(self.firmware.load_args());
        a
    }

    /// The NIC's `-device` (first in the boot order on a network-boot board).
    fn nic_device(&self) -> String {
        let boot = if self.pxe.is_some() { ",bootindex=1" } else { "" };
        format!("{},netdev=net0,mac={}{boot}", self.nic.model, self.nic.mac)
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

/// Byte offset of `key = ` in a TOML text (for errors found after parsing).
pub(crate) fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(offset + (line.len() - trimmed.len()));
            }
        }
        offset += line.len();
    }
    None
}

/// Where `key = ` is inside an inline table (`{ ..., key = ... }`).
pub(crate) fn find_inline_key(text: &str, key: &str) -> Option<usize> {
    text.match_indices(key).map(|(i, _)| i).find(|&i| {
        let before = text[..i].trim_end();
        let after = text[i + key.len()..].trim_start();
        (before.ends_with('{') || before.ends_with(',')) && after.starts_with('=')
    })
}

/// Where a field of a profile is: `key = ` (in its table for a dotted
/// `table.key`), else the table's header (a `kind` left to its default, the
/// `[uboot]` table).
fn locate(text: &str, field: &str) -> Option<usize> {
    let (table, key) = match field.split_once('.') {
        Some((t, k)) => (Some(t), k),
        None => (None, field),
    };
    let header = |t: &str| {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.trim() == format!("[{t}]") {
                return Some(offset);
            }
            offset += line.len();
        }
        None
    };
    if let Some(t) = table {
        let start = header(t)?;
        return find_key(&text[start..], key).map(|o| start + o).or(Some(start));
    }
    let in_table = match field {
        "kind" => Some("firmware"),
        "uboot" => Some("uboot"),
        _ => None,
    };
    find_key(text, key).or_else(|| in_table.and_then(header))
}

/// The directory shipped profiles live in: `$DEVLAB_BOARDS`, else the
/// `boards/` folder of this crate's source tree.
pub fn boards_dir() -> PathBuf {
    std::env::var_os("DEVLAB_BOARDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("boards"))
}

/// Load the profile called `name` from [`boards_dir`], or from a path (a
/// team keeps its bench's profiles with its lab: `labs/bench-3.toml`).
pub fn find(name: &str) -> Result<Board> {
    if name.ends_with(".toml") || name.contains('/') {
        let path = Path::new(name);
        if !path.is_file() {
            return Err(InputError::new(path, "no such board profile file").into());
        }
        return Board::load(path);
    }
    let dir = boards_dir();
    let path = dir.join(format!("{name}.toml"));
    if !path.is_file() {
        let known = list_names(&dir).join(", ");
        return Err(InputError::new(&path, format!("unknown board `{name}` (known: {known})")).into());
    }
    Board::load(&path)
}

/// Names of the profiles in `dir`, sorted.
pub fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "toml" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Board {
        Board::load(&boards_dir().join(format!("{name}.toml"))).unwrap()
    }

    /// Paths under `/r`, no faults, the user network: tests change what they test.
    fn paths<'a>() -> QemuPaths<'a> {
        QemuPaths {
            console_sock: Path::new("/r/console.sock"),
            qmp_sock: Path::new("/r/qmp.sock"),
            monitor_sock: Path::new("/r/monitor.sock"),
            disk: Path::new("/r/disk.qcow2"),
            disk_errors: &[],
            loadvm: None,
            env_flash: None,
            tftp: None,
            link: None,
            detect_zeroes: false,
            disk_armable: false,
            tap: None,
        }
    }

    /// The stand-in's profiles parse as external boards; each mistake in
    /// `[external]` is an input error at its line and field.
    #[test]
    fn external_profiles_parse_and_their_mistakes_are_located() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let path = root.join("examples/standin-board/boards/standin-x86_64.toml");
        let b = Board::load(&path).unwrap();
        let ext = b.external.as_ref().unwrap();
        assert_eq!(ext.ssh, ("127.0.0.1".to_string(), 4122));
        assert_eq!(ext.server_address, "10.0.2.2");
        assert!(b.watchdog.is_some() && b.uboot().is_some() && b.check_firmware().is_ok());
        let text = std::fs::read_to_string(&path).unwrap();
        let cases = [
            ("bind = \"127.0.0.1\"", "bind = \"0.0.0.0\"", "bind", "must not listen on every interface"),
            ("ssh = \"127.0.0.1:4122\"", "ssh = \"bench\"", "ssh", "is not host:port"),
            ("console = { tcp", "console = { serial = \"/dev/ttyUSB0\", tcp", "console", "exactly one of"),
            (
                "power = { pdudaemon = \"127.0.0.1:16431\", hostname = \"standin-x86_64\", port = 1 }",
                "power = { on = \"relay on\" }",
                "power",
                "both on and off",
            ),
            ("command_timeout = \"2m\"", "command_timeout = \"soon\"", "command_timeout", "`soon`"),
            ("arch = \"x86_64\"", "arch = \"x86_64\"\nmachine = \"pc\"", "machine", "unknown field"),
        ];
        for (from, to, field, says) in cases {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let err = Board::parse(&path, &bad).unwrap_err();
            let shown = err.to_string();
            assert!(shown.contains(says) && shown.contains(&format!("field `{field}`")), "{field}: {shown}");
            let line = bad.lines().position(|l| l.contains(to.lines().last().unwrap())).unwrap() + 1;
            assert!(shown.contains(&format!("standin-x86_64.toml:{line}:")), "{field}: {shown}");
        }
    }

    #[test]
    fn shipped_profiles_parse() {
        let x86 = shipped("qemu-x86_64");
        assert_eq!(x86.arch, Arch::X86_64);
        assert_eq!(x86.machine, "pc");
        let arm = shipped("qemu-aarch64");
        assert_eq!(arm.arch, Arch::Aarch64);
        assert!(matches!(arm.firmware.kind, crate::firmware::Kind::UBoot(_)));
        assert_eq!(arm.uboot().map(|u| u.prompt.as_str()), Some("=> "));
        let pxe = shipped("qemu-x86_64-pxe");
        assert!(matches!(pxe.firmware.kind, crate::firmware::Kind::SeaBios(_)));
        assert!(pxe.uboot().is_none());
    }

    fn profile(name: &str) -> String {
        std::fs::read_to_string(boards_dir().join(format!("{name}.toml"))).unwrap()
    }

    fn line_of(text: &str, starts: &str) -> usize {
        text.lines().position(|l| l.starts_with(starts)).unwrap() + 1
    }

    #[test]
    fn console_guest_device_is_accepted_and_unused() {
        let text = profile("qemu-aarch64");
        assert!(!text.contains("[console]"));
        let old = text.replace("[disk]", "[console]\nguest_device = \"ttyAMA0\"\n\n[disk]");
        assert_ne!(old, text);
        Board::parse(Path::new("b.toml"), &old).unwrap();
        let bad = text.replace("[disk]", "[console]\nguest_dev = \"ttyAMA0\"\n\n[disk]");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("field `guest_dev`"), "{err}");
    }

    #[test]
    fn firmware_errors_name_file_line_column_and_field() {
        let text = profile("qemu-x86_64");
        // U-Boot without its prompts: at `kind`.
        let start = text.find("[uboot]").unwrap();
        let bad = &text[..start];
        let err = Board::parse(Path::new("b.toml"), bad).unwrap_err().to_string();
        let line = line_of(bad, "kind =");
        assert!(err.starts_with(&format!("b.toml:{line}:1: field `kind`: ")), "{err}");
        assert!(err.contains("U-Boot firmware (`bios`) needs a [uboot] table"), "{err}");
        // ... and with `kind` left to its default, at `[firmware]`.
        let bad = bad.replace("kind = \"bios\"\n", "");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("b.toml:{}:1: field `kind`", line_of(&bad, "[firmware]"))), "{err}");
        // An unknown kind lists the known ones.
        let bad = text.replace("kind = \"bios\"", "kind = \"uefi\"");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("b.toml:{}:1: field `kind`", line_of(&bad, "kind ="))), "{err}");
        assert!(err.ends_with("unknown firmware kind `uefi` (known: bios, seabios)"), "{err}");
        // SeaBIOS with U-Boot prompts: at `[uboot]`.
        let pxe = profile("qemu-x86_64-pxe");
        let bad = format!("{pxe}\n[uboot]\nautoboot_prompt = \"x\"\nprompt = \"=> \"\nboot_command = \"boot\"\n");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("b.toml:{}:1: field `uboot`", line_of(&bad, "[uboot]"))), "{err}");
        // Network boot the firmware does not do: at `pxe`.
        let bad = text.replace("[firmware]", "pxe = \"ipxe\"\n\n[firmware]");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("b.toml:{}:1: field `pxe`", line_of(&bad, "pxe ="))), "{err}");
        assert!(err.ends_with("`ipxe` network boot needs SeaBIOS (firmware kind `seabios`)"), "{err}");
    }

    #[test]
    fn qemu_args_connect_console_and_qmp_as_clients() {
        let b = shipped("qemu-aarch64");
        let p = paths();
        let args = b.qemu_args(Accel::Tcg, &p).join(" ");
        assert!(args.contains("-drive if=none,id=disk0,file=/r/disk.qcow2,format=qcow2"), "{args}");
        assert!(args.contains("-chardev socket,id=con0,path=/r/console.sock -serial chardev:con0"));
        assert!(!args.contains("console.sock,server"), "{args}");
        assert!(args.contains("-accel tcg"));
        assert!(args.contains("hostfwd=tcp:127.0.0.1:0-:22"));
        assert!(args.contains("-bios /usr/lib/u-boot/qemu_arm64/u-boot.bin"));
    }

    #[test]
    fn disk_errors_put_blkdebug_above_the_overlay() {
        let b = shipped("qemu-x86_64");
        let errors = [DiskError { offset: 1024 * 1024 + 4096, iotype: IoType::Write, errno: Errno::EIO }];
        let p = QemuPaths { disk_errors: &errors, ..paths() };
        let args = b.qemu_args(Accel::Tcg, &p);
        assert!(!args.iter().any(|a| a == "-drive"), "{args:?}");
        let i = args.iter().position(|a| a == "-blockdev").expect("a -blockdev");
        let node: serde_json::Value = serde_json::from_str(&args[i + 1]).unwrap();
        assert_eq!(node["driver"], "blkdebug");
        assert_eq!(node["image"]["driver"], "qcow2");
        assert_eq!(node["image"]["file"]["filename"], "/r/disk.qcow2");
        let rule = &node["inject-error"][0];
        assert_eq!((rule["sector"].as_u64(), rule["errno"].as_i64()), (Some(2056), Some(5)));
        assert_eq!((rule["event"].as_str(), rule["iotype"].as_str()), (Some("none"), Some("write")));
        assert!(args.iter().any(|a| a.ends_with(",drive=disk0,werror=report,rerror=report")), "{args:?}");
    }

    #[test]
    fn unknown_field_is_refused_with_line() {
        let text = std::fs::read_to_string(boards_dir().join("qemu-x86_64.toml")).unwrap();
        let bad = text.replace("memory_mib = 512", "memory_mb = 512");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        let line = bad.lines().position(|l| l.starts_with("memory_mb")).unwrap() + 1;
        assert!(err.starts_with(&format!("b.toml:{line}:")), "{err}");
        assert!(err.contains("field `memory_mb`"), "{err}");
    }

    #[test]
    fn bad_mac_names_the_field() {
        let text = std::fs::read_to_string(boards_dir().join("qemu-x86_64.toml")).unwrap();
        let bad = text.replace("52:54:00:de:00:01", "52:54:00:zz");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("field `mac`"), "{err}");
    }

    #[test]
    fn uboot_network_boot_refuses_the_nic_uboot_misreads() {
        let text = std::fs::read_to_string(boards_dir().join("qemu-aarch64-pxe.toml")).unwrap();
        let bad = text.replace("model = \"e1000\"", "model = \"virtio-net-pci\"");
        assert_ne!(bad, text);
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("field `nic.model`") && err.contains("52:52:52:52:52:52"), "{err}");
        // Located in [nic], not at the disk's `model`.
        let nic = bad.find("[nic]").unwrap();
        let line = bad[..nic].lines().count() + bad[nic..].lines().position(|l| l.starts_with("model")).unwrap() + 1;
        assert!(err.starts_with(&format!("b.toml:{line}:1: ")), "{err}");
        let bad = text.replace("model = \"e1000\"", "model = \"virtio-net-device\"");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("field `nic.model`") && err.contains("more than 32 frames"), "{err}");
    }

    #[test]
    fn uboot_network_boot_board_serves_its_script_and_identity_in_fw_cfg() {
        let b = shipped("qemu-aarch64-pxe");
        let p = QemuPaths { tftp: Some(Path::new("/r/tftp")), detect_zeroes: true, ..paths() };
        let args = b.qemu_args(Accel::Tcg, &p).join(" ");
        assert!(args.contains(",tftp=/r/tftp,bootfile=boot.scr.uimg "), "{args}");
        assert!(args.contains("-device e1000,netdev=net0,mac=52:54:00:de:02:01"), "{args}");
        assert!(
            args.contains("-fw_cfg name=opt/org.devlab/uuid,string=6b1e4c2a-0d3f-4a51-9f0e-000000000201"),
            "{args}"
        );
        assert!(args.contains("-fw_cfg name=opt/org.devlab/serial,string=DEVLAB-PXE-ARM-0001"), "{args}");
    }

    #[test]
    fn unknown_board_lists_known_ones() {
        let err = find("no-such-board").unwrap_err().to_string();
        assert!(err.contains("unknown board `no-such-board`"), "{err}");
        assert!(err.contains("qemu-x86_64"), "{err}");
    }
}
