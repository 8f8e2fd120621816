//! SeaBIOS (Debian's `seabios`) as a board's firmware: loaded with `-bios`,
//! on the serial port only under `-nographic`, no prompt to stop, and
//! network boot through the NIC's iPXE ROM (`pxe = "ipxe"`, QEMU's default
//! ROM for the model).

use super::{Behaviour, ProfileError, Pxe, UbootPrompts};
use std::path::Path;

/// Its `kind` in the profile.
pub const KIND: &str = "seabios";

#[derive(Debug, Clone)]
pub struct SeaBios;

impl SeaBios {
    /// SeaBIOS has no U-Boot prompts: a `[uboot]` table would make a `boot`
    /// step wait for a prompt that never comes.
    pub fn from_profile(prompts: Option<UbootPrompts>) -> Result<SeaBios, ProfileError> {
        if prompts.is_some() {
            return Err(ProfileError {
                field: "uboot",
                message: format!("SeaBIOS (firmware kind `{KIND}`) has no U-Boot prompts: remove the [uboot] table"),
            });
        }
        Ok(SeaBios)
    }
}

impl Behaviour for SeaBios {
    fn kind_name(&self) -> &'static str {
        KIND
    }

    fn display_name(&self) -> &'static str {
        "SeaBIOS"
    }

    fn load_args(&self, path: &Path) -> Vec<String> {
        vec!["-bios".into(), path.to_string_lossy().into_owned()]
    }

    /// SeaBIOS prints (and iPXE runs its console) on the serial port only
    /// under `-nographic`.
    fn display_args(&self) -> &'static [&'static str] {
        &["-nographic"]
    }

    /// For iPXE, its DHCP (iPXE's protected-mode code is what KVM fails on
    /// here, after SeaBIOS and the ROM banner ran fine); else SeaBIOS trying
    /// the (absent) disk.
    fn probe_marker(&self, net_boot: bool) -> String {
        if net_boot { "Configuring (net0" } else { "Booting from Hard Disk" }.into()
    }

    /// iPXE is the NIC's ROM: the probe needs the NIC to run it.
    fn probe_needs_nic(&self, net_boot: bool) -> bool {
        net_boot
    }

    fn net_boot(&self) -> Pxe {
        Pxe::Ipxe
    }
}
