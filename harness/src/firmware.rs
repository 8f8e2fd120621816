//! Firmware: what runs before Linux on a board, as one typed value per kind
//! (U-Boot, SeaBIOS with the NIC's iPXE ROM), built from the board profile's
//! `[firmware]` table (with `[uboot]` and `pxe`). Each kind owns what differs
//! between firmware: the QEMU arguments that load it and put it on the serial
//! port, what the KVM probe waits for and which devices it needs, whether it
//! has a prompt to stop, how it boots from the network, and what a profile
//! must say about it. Adding a firmware (UEFI, a vendor U-Boot with its
//! environment in pflash) is a module under `firmware/` implementing
//! [`Behaviour`], a variant of [`Kind`], and its arm in [`Firmware::from_profile`].
//! Nothing here spawns a process or reads a file.

pub mod seabios;
pub mod uboot;

pub use seabios::SeaBios;
pub use uboot::{UBoot, UbootPrompts};

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A board's firmware: the file QEMU loads, the package that ships it, and
/// what kind of firmware it is.
#[derive(Debug, Clone)]
pub struct Firmware {
    pub path: PathBuf,
    /// The Debian package that ships it, named when the file is missing.
    pub package: String,
    pub kind: Kind,
    /// An image for the second flash bank (aarch64 `virt`: U-Boot's
    /// environment), never written: each run's writes go to an overlay.
    /// Only a device profile sets it.
    pub env_flash: Option<PathBuf>,
}

/// The firmware kinds devlab knows.
#[derive(Debug, Clone)]
pub enum Kind {
    UBoot(UBoot),
    SeaBios(SeaBios),
}

/// How the firmware boots from the network, when the board does (`pxe` in
/// the profile): `ipxe` (SeaBIOS runs the NIC's iPXE ROM, network first,
/// then the disk; the harness serves `boot.ipxe` over TFTP) or `uboot`
/// (U-Boot's stock boot targets: a disk with a boot partition first, then
/// DHCP, `boot.scr.uimg`, `pxe get`, `pxe boot`).
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

    pub fn as_str(self) -> &'static str {
        match self {
            Pxe::Ipxe => "ipxe",
            Pxe::Uboot => "uboot",
        }
    }
}

/// What every firmware kind answers. A new kind implements it in its own
/// module; [`Firmware`] dispatches to it.
pub trait Behaviour {
    /// Its `kind` in the profile's `[firmware]` table.
    fn kind_name(&self) -> &'static str;
    /// Its name for people (`U-Boot`, `SeaBIOS`).
    fn display_name(&self) -> &'static str;
    /// QEMU arguments that load the firmware file.
    fn load_args(&self, path: &Path) -> Vec<String>;
    /// QEMU's display arguments (what puts the firmware on the serial port).
    fn display_args(&self) -> &'static [&'static str];
    /// What the KVM probe waits for on the serial port: text the firmware
    /// prints only once it ran the code KVM may fail on. `net_boot`: the
    /// board boots from the network.
    fn probe_marker(&self, net_boot: bool) -> String;
    /// Whether the KVM probe needs the board's NIC (with its boot ROM).
    fn probe_needs_nic(&self, net_boot: bool) -> bool;
    /// The prompts a `boot` step uses to stop the firmware, if it has them.
    fn prompts(&self) -> Option<&UbootPrompts> {
        None
    }
    /// The one way this firmware boots from the network.
    fn net_boot(&self) -> Pxe;
    /// Why this firmware cannot boot from the network through a NIC of
    /// QEMU device `model` (the part before any comma), if it cannot.
    fn refuses_boot_nic(&self, _model: &str) -> Option<&'static str> {
        None
    }
}

/// The profile's `[firmware]` table, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareTable {
    pub path: PathBuf,
    pub package: String,
    /// What it is: `bios` (U-Boot: the board needs `[uboot]`) or `seabios`.
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_kind() -> String {
    uboot::KIND.into()
}

/// The `kind`s a profile may name, in the order errors list them.
pub const KINDS: &[&str] = &[uboot::KIND, seabios::KIND];

/// What is wrong with a profile's firmware: the field concerned (`kind`,
/// `uboot`, `pxe`, `nic.model`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub field: &'static str,
    pub message: String,
}

impl Firmware {
    /// The firmware a profile describes: its `[firmware]` table, its
    /// `[uboot]` table and its `pxe` key, checked against each other and
    /// against the NIC model the firmware would boot from the network with.
    pub fn from_profile(
        table: FirmwareTable,
        uboot: Option<UbootPrompts>,
        pxe: Option<Pxe>,
        nic_model: &str,
    ) -> Result<Firmware, ProfileError> {
        let kind = match table.kind.as_str() {
            uboot::KIND => Kind::UBoot(UBoot::from_profile(uboot)?),
            seabios::KIND => Kind::SeaBios(SeaBios::from_profile(uboot)?),
            other => {
                return Err(ProfileError {
                    field: "kind",
                    message: format!("unknown firmware kind `{other}` (known: {})", KINDS.join(", ")),
                })
            }
        };
        let fw = Firmware { path: table.path, package: table.package, kind, env_flash: None };
        if let Some(p) = pxe {
            if p != fw.behaviour().net_boot() {
                let (name, kind) = match p {
                    Pxe::Ipxe => ("SeaBIOS", seabios::KIND),
                    Pxe::Uboot => ("U-Boot", uboot::KIND),
                };
                return Err(ProfileError {
                    field: "pxe",
                    message: format!("`{}` network boot needs {name} (firmware kind `{kind}`)", p.as_str()),
                });
            }
            let model = nic_model.split(',').next().unwrap_or(nic_model);
            if let Some(why) = fw.behaviour().refuses_boot_nic(model) {
                return Err(ProfileError {
                    field: "nic.model",
                    message: format!("{why}: use e1000 for a {} network-boot board", fw.display_name()),
                });
            }
        }
        Ok(fw)
    }

    /// The kind's behaviour (the one `match` a new kind extends).
    pub fn behaviour(&self) -> &dyn Behaviour {
        match &self.kind {
            Kind::UBoot(u) => u,
            Kind::SeaBios(s) => s,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.behaviour().kind_name()
    }

    pub fn display_name(&self) -> &'static str {
        self.behaviour().display_name()
    }

    /// `-bios FILE` (or whatever loads this kind).
    pub fn load_args(&self) -> Vec<String> {
        self.behaviour().load_args(&self.path)
    }

    pub fn display_args(&self) -> &'static [&'static str] {
        self.behaviour().display_args()
    }

    pub fn probe_marker(&self, net_boot: bool) -> String {
        self.behaviour().probe_marker(net_boot)
    }

    pub fn probe_needs_nic(&self, net_boot: bool) -> bool {
        self.behaviour().probe_needs_nic(net_boot)
    }

    /// The prompts to stop it at, if it has any (U-Boot).
    pub fn prompts(&self) -> Option<&UbootPrompts> {
        self.behaviour().prompts()
    }

    /// How it boots from the network (if the board does).
    pub fn net_boot(&self) -> Pxe {
        self.behaviour().net_boot()
    }

    /// Is the firmware file present?
    pub fn present(&self) -> bool {
        self.path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kind: &str) -> FirmwareTable {
        FirmwareTable { path: "/fw.bin".into(), package: "pkg".into(), kind: kind.into() }
    }

    fn prompts() -> UbootPrompts {
        UbootPrompts { autoboot_prompt: "Hit any key".into(), prompt: "=> ".into(), boot_command: "boot".into() }
    }

    #[test]
    fn kinds_are_typed_and_checked_against_the_profile() {
        let u = Firmware::from_profile(table("bios"), Some(prompts()), None, "virtio-net-pci").unwrap();
        assert!(matches!(u.kind, Kind::UBoot(_)));
        assert_eq!(u.prompts().map(|p| p.prompt.as_str()), Some("=> "));
        assert_eq!(u.load_args(), ["-bios", "/fw.bin"]);
        let s = Firmware::from_profile(table("seabios"), None, Some(Pxe::Ipxe), "virtio-net-pci").unwrap();
        assert!(s.prompts().is_none());
        assert_eq!(s.display_args(), ["-nographic"]);

        let err = Firmware::from_profile(table("bios"), None, None, "e1000").unwrap_err();
        assert_eq!(err.field, "kind");
        assert!(err.message.contains("needs a [uboot] table"), "{err:?}");
        let err = Firmware::from_profile(table("uefi"), None, None, "e1000").unwrap_err();
        assert_eq!(
            err,
            ProfileError { field: "kind", message: "unknown firmware kind `uefi` (known: bios, seabios)".into() }
        );
        let err = Firmware::from_profile(table("seabios"), Some(prompts()), None, "e1000").unwrap_err();
        assert_eq!(err.field, "uboot");
        let err = Firmware::from_profile(table("seabios"), None, Some(Pxe::Uboot), "e1000").unwrap_err();
        assert_eq!(err.field, "pxe");
        assert_eq!(err.message, "`uboot` network boot needs U-Boot (firmware kind `bios`)");
        let err = Firmware::from_profile(table("bios"), Some(prompts()), Some(Pxe::Ipxe), "e1000").unwrap_err();
        assert_eq!(err.message, "`ipxe` network boot needs SeaBIOS (firmware kind `seabios`)");
        let err =
            Firmware::from_profile(table("bios"), Some(prompts()), Some(Pxe::Uboot), "virtio-net-pci,x=1").unwrap_err();
        assert_eq!(err.field, "nic.model");
        assert!(err.message.ends_with(": use e1000 for a U-Boot network-boot board"), "{err:?}");
        // Only network boot cares about the NIC.
        assert!(Firmware::from_profile(table("bios"), Some(prompts()), None, "virtio-net-pci").is_ok());
    }
}
