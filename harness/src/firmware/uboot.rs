//! U-Boot (Debian's `u-boot-qemu` builds) as a board's firmware: loaded with
//! `-bios`, stopped at its autoboot prompt by a `boot` step (the board's
//! `[uboot]` prompts and boot command), network boot through its stock boot
//! targets (`pxe = "uboot"`), and the NIC models its network drivers get
//! wrong, refused for network boot.

use super::{Behaviour, ProfileError, Pxe};
use serde::Deserialize;
use std::path::Path;

/// Its `kind` in the profile (historical: U-Boot is QEMU's `-bios`).
pub const KIND: &str = "bios";

/// U-Boot's prompts, from the profile's `[uboot]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootPrompts {
    pub autoboot_prompt: String,
    pub prompt: String,
    pub boot_command: String,
}

#[derive(Debug, Clone)]
pub struct UBoot {
    pub prompts: UbootPrompts,
}

impl UBoot {
    /// A U-Boot board must say how to stop U-Boot and boot it.
    pub fn from_profile(prompts: Option<UbootPrompts>) -> Result<UBoot, ProfileError> {
        let prompts = prompts.ok_or_else(|| ProfileError {
            field: "kind",
            message: format!("U-Boot firmware (`{KIND}`) needs a [uboot] table"),
        })?;
        Ok(UBoot { prompts })
    }
}

impl Behaviour for UBoot {
    fn kind_name(&self) -> &'static str {
        KIND
    }

    fn display_name(&self) -> &'static str {
        "U-Boot"
    }

    fn load_args(&self, path: &Path) -> Vec<String> {
        vec!["-bios".into(), path.to_string_lossy().into_owned()]
    }

    fn display_args(&self) -> &'static [&'static str] {
        &["-display", "none"]
    }

    /// The autoboot prompt, network boot or not: U-Boot's own code is what
    /// stalls under a broken KVM.
    fn probe_marker(&self, _net_boot: bool) -> String {
        self.prompts.autoboot_prompt.clone()
    }

    fn probe_needs_nic(&self, _net_boot: bool) -> bool {
        false
    }

    fn prompts(&self) -> Option<&UbootPrompts> {
        Some(&self.prompts)
    }

    fn net_boot(&self) -> Pxe {
        Pxe::Uboot
    }

    /// U-Boot 2023.01 (Debian bookworm's u-boot-qemu) and virtio network
    /// devices, both found here.
    fn refuses_boot_nic(&self, model: &str) -> Option<&'static str> {
        match model {
            "virtio-net-pci" => Some(
                "U-Boot reads the wrong MAC (52:52:52:52:52:52) from virtio-net-pci, so its PXELINUX lookup \
                 and DHCP identity are wrong",
            ),
            "virtio-net-device" => Some(
                "U-Boot's virtio-net driver hands received buffers back without notifying the device, so once \
                 more than 32 frames arrive between two network commands (broadcasts from the other nodes of a \
                 lab network) QEMU waits for a notification that never comes and the node receives nothing more",
            ),
            _ => None,
        }
    }
}
