//! Board profiles: data files (`harness/boards/*.toml`) describing a virtual
//! board — machine type, CPU, RAM, firmware, console, disk and NIC models,
//! SMBIOS identity, U-Boot prompts — and their translation into QEMU
//! arguments. Nothing here spawns a process or touches the run directory.

use crate::error::{InputError, Result};
use devlab_images::Arch;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub arch: Arch,
    pub machine: String,
    pub cpu: String,
    #[serde(default = "one")]
    pub smp: u32,
    pub memory_mib: u32,
    /// Accelerators in order of preference; the first that works is used.
    #[serde(default = "default_accel")]
    pub accel: Vec<Accel>,
    pub firmware: Firmware,
    pub console: Console,
    pub disk: Disk,
    pub nic: Nic,
    #[serde(default)]
    pub smbios: Option<Smbios>,
    /// U-Boot's prompts; required for `kind = "bios"` firmware (U-Boot),
    /// absent for SeaBIOS.
    #[serde(default)]
    pub uboot: Option<UbootPrompts>,
    /// How the firmware boots from the network, if the board does: `ipxe`
    /// (SeaBIOS runs the NIC's iPXE ROM, network first, then the disk; the
    /// harness serves `boot.ipxe` over the user network's TFTP) or `uboot`
    /// (U-Boot's stock boot targets: a disk with a boot partition first,
    /// then DHCP, `boot.scr.uimg`, `pxe get`, `pxe boot`).
    #[serde(default)]
    pub pxe: Option<Pxe>,
    /// A hardware watchdog model (`i6300esb`), reset on expiry; `None` if
    /// the board has none (a scenario that needs one is refused).
    #[serde(default)]
    pub watchdog: Option<String>,
    /// Extra QEMU arguments, appended last.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Where the profile was read from.
    #[serde(skip)]
    pub path: PathBuf,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pxe {
    Ipxe,
    Uboot,
}

impl Pxe {
    /// The file the user network's DHCP names as the boot file.
    pub fn bootfile(self) -> &'static str {
        match self {
            Pxe::Ipxe => "boot.ipxe",
            Pxe::Uboot => devlab_provision::pxelinux::BOOT_SCRIPT_NAME,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub path: PathBuf,
    /// The Debian package that ships it, named when the file is missing.
    pub package: String,
    /// What it is; QEMU loads either with `-bios FILE`. `bios`: U-Boot
    /// (the board needs `[uboot]`). `seabios`: SeaBIOS, which prints on the
    /// serial port only under `-nographic` (that sets its serial console).
    #[serde(default = "bios")]
    pub kind: String,
}

fn bios() -> String {
    "bios".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// The guest's name for its serial console (`ttyS0`, `ttyAMA0`).
    pub guest_device: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootPrompts {
    pub autoboot_prompt: String,
    pub prompt: String,
    pub boot_command: String,
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
    /// The TFTP folder of the user network (with `boot.ipxe`), for a board
    /// that boots from the network.
    pub tftp: Option<&'a Path>,
    /// Turn all-zero writes into zero clusters (an install writing a whole
    /// disk image then costs only its data).
    pub detect_zeroes: bool,
    /// A lab network tap for the NIC, instead of the user network.
    pub tap: Option<&'a str>,
}

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
        "node-name": "disk0",
        "image": {"driver": "qcow2", "file": {"driver": "file", "filename": disk.to_string_lossy()}},
        "inject-error": rules,
    })
    .to_string()
}

impl Board {
    /// Read and validate a profile file.
    pub fn load(path: &Path) -> Result<Board> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, format!("cannot read board profile: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Board> {
        let mut board: Board = toml::from_str(text).map_err(|e| InputError::from_toml(path, text, 0, &e))?;
        board.path = path.to_path_buf();
        let field_err = |field: &str, msg: String| {
            let offset = find_key(text, field).unwrap_or(0);
            InputError::new(path, msg).at(text, offset).field(field)
        };
        if board.smp == 0 {
            return Err(field_err("smp", "must be at least 1".into()).into());
        }
        if board.memory_mib < 64 {
            return Err(field_err("memory_mib", "must be at least 64".into()).into());
        }
        if board.accel.is_empty() {
            return Err(field_err("accel", "name at least one accelerator".into()).into());
        }
        if !valid_mac(&board.nic.mac) {
            return Err(
                field_err("mac", format!("`{}` is not a MAC address like 52:54:00:12:34:56", board.nic.mac)).into()
            );
        }
        match board.firmware.kind.as_str() {
            "bios" if board.uboot.is_none() => {
                return Err(field_err("kind", "U-Boot firmware (`bios`) needs a [uboot] table".into()).into())
            }
            "bios" | "seabios" => {}
            other => {
                return Err(field_err("kind", format!("unknown firmware kind `{other}` (known: bios, seabios)")).into())
            }
        }
        if board.pxe == Some(Pxe::Ipxe) && board.firmware.kind != "seabios" {
            return Err(field_err("pxe", "`ipxe` network boot needs SeaBIOS (firmware kind `seabios`)".into()).into());
        }
        if board.pxe == Some(Pxe::Uboot) && board.firmware.kind != "bios" {
            return Err(field_err("pxe", "`uboot` network boot needs U-Boot (firmware kind `bios`)".into()).into());
        }
        // U-Boot 2023.01 (Debian bookworm's u-boot-qemu) and virtio network devices, both found here:
        let why_not = match board.nic.model.split(',').next() {
            Some("virtio-net-pci") => Some(
                "U-Boot reads the wrong MAC (52:52:52:52:52:52) from virtio-net-pci, so its PXELINUX lookup \
                 and DHCP identity are wrong",
            ),
            Some("virtio-net-device") => Some(
                "U-Boot's virtio-net driver hands received buffers back without notifying the device, so once \
                 more than 32 frames arrive between two network commands (broadcasts from the other nodes of a \
                 lab network) QEMU waits for a notification that never comes and the node receives nothing more",
            ),
            _ => None,
        };
        if let (Some(Pxe::Uboot), Some(why)) = (board.pxe, why_not) {
            return Err(field_err("model", format!("{why}: use e1000 for a U-Boot network-boot board")).into());
        }
        Ok(board)
    }

    /// What the KVM probe waits for on the serial port: U-Boot's autoboot
    /// prompt; for iPXE, its DHCP (iPXE's protected-mode code is what KVM
    /// fails on here, after SeaBIOS and the ROM banner ran fine); else
    /// SeaBIOS trying the (absent) disk.
    pub fn firmware_marker(&self) -> String {
        match (&self.uboot, self.pxe) {
            (Some(u), _) => u.autoboot_prompt.clone(),
            (None, Some(Pxe::Ipxe)) => "Configuring (net0".into(),
            (None, _) => "Booting from Hard Disk".into(),
        }
    }

    /// Devices the KVM probe adds: the NIC (with its boot ROM) of a board
    /// that boots from the network.
    pub fn probe_args(&self) -> Vec<String> {
        match self.pxe {
            Some(Pxe::Ipxe) => vec![
                "-netdev".into(),
                "user,id=net0".into(),
                "-device".into(),
                format!("{},netdev=net0,mac={},bootindex=1", self.nic.model, self.nic.mac),
            ],
            Some(Pxe::Uboot) | None => Vec::new(),
        }
    }

    /// QEMU's display arguments: none, but SeaBIOS needs `-nographic` to
    /// print (and run iPXE's console) on the serial port.
    pub fn display_args(&self) -> &'static [&'static str] {
        if self.firmware.kind == "seabios" {
            &["-nographic"]
        } else {
            &["-display", "none"]
        }
    }

    /// Is the firmware file present? (`devlab boards` shows it; starting a
    /// machine without it is an input error naming the package.)
    pub fn firmware_present(&self) -> bool {
        self.firmware.path.is_file()
    }

    pub fn check_firmware(&self) -> Result<()> {
        if self.firmware_present() {
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
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-nodefaults", "-no-user-config"]);
        push(self.display_args());
        push(&["-machine", &self.machine, "-accel", accel.as_str()]);
        push(&["-cpu", &self.cpu, "-smp", &self.smp.to_string()]);
        push(&["-m", &format!("{}M", self.memory_mib)]);
        push(&["-bios", &self.firmware.path.to_string_lossy()]);
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
        let (nic_boot, disk_boot) = if self.pxe.is_some() { (",bootindex=1", ",bootindex=2") } else { ("", "") };
        let zeroes = if paths.detect_zeroes { ",detect-zeroes=on" } else { "" };
        if paths.disk_errors.is_empty() {
            push(&["-drive", &format!("if=none,id=disk0,file={},format=qcow2{zeroes}", paths.disk.display())]);
            push(&["-device", &format!("{},drive=disk0{disk_boot}", self.disk.model)]);
        } else {
            push(&["-blockdev", &blkdebug_blockdev(paths.disk, paths.disk_errors)]);
            // Report every error to the guest (never pause the VM).
            push(&["-device", &format!("{},drive=disk0,werror=report,rerror=report{disk_boot}", self.disk.model)]);
        }
        let mut netdev = "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22".to_string();
        if let (Some(dir), Some(pxe)) = (paths.tftp, self.pxe) {
            netdev += &format!(",tftp={},bootfile={}", dir.display(), pxe.bootfile());
        }
        if let Some(tap) = paths.tap {
            // A lab network's tap (its dnsmasq serves DHCP and TFTP).
            netdev = format!("tap,id=net0,ifname={tap},script=no,downscript=no");
        }
        push(&["-netdev", &netdev]);
        push(&["-device", &format!("{},netdev=net0,mac={}{nic_boot}", self.nic.model, self.nic.mac)]);
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
        a.extend(self.extra_args.iter().cloned());
        if let Some(tag) = paths.loadvm {
            a.extend(["-loadvm".to_string(), tag.to_string()]);
        }
        a
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

/// The directory shipped profiles live in: `$DEVLAB_BOARDS`, else the
/// `boards/` folder of this crate's source tree.
pub fn boards_dir() -> PathBuf {
    std::env::var_os("DEVLAB_BOARDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("boards"))
}

/// Load the profile called `name` from [`boards_dir`].
pub fn find(name: &str) -> Result<Board> {
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
            tftp: None,
            detect_zeroes: false,
            tap: None,
        }
    }

    #[test]
    fn shipped_profiles_parse() {
        let x86 = shipped("qemu-x86_64");
        assert_eq!(x86.arch, Arch::X86_64);
        assert_eq!(x86.machine, "pc");
        let arm = shipped("qemu-aarch64");
        assert_eq!(arm.arch, Arch::Aarch64);
        assert_eq!(arm.console.guest_device, "ttyAMA0");
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
        assert!(err.contains("field `model`") && err.contains("52:52:52:52:52:52"), "{err}");
        let bad = text.replace("model = \"e1000\"", "model = \"virtio-net-device\"");
        let err = Board::parse(Path::new("b.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("field `model`") && err.contains("more than 32 frames"), "{err}");
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
