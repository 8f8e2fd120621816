//! PXELINUX files for U-Boot's network boot (the aarch64 nodes). U-Boot has
//! no HTTP client, so it cannot ask `/ipxe/{uuid}`: instead the service
//! keeps a TFTP folder up to date and U-Boot reads it.
//!
//! | file | what |
//! |---|---|
//! | `boot.scr.uimg` | what U-Boot's stock `dhcp` boot target loads (a legacy script image, made here: no `mkimage` needed); it fetches `pxelinux.cfg/01-<mac>`, else `default-arm`, and runs `pxe boot` on it |
//! | `pxelinux.cfg/01-<mac>` | one per MAC of every registered node, rewritten after every change |
//! | `pxelinux.cfg/default-arm` | a node the service does not know: register mode without `devlab.uuid` (the agent reads the UUID QEMU puts in fw_cfg: an arm board without UEFI has no SMBIOS) |
//! | `mgmt` | a link to the boot folder's `mgmt/` (the management OS), when the service serves one; config paths are relative to the TFTP root |
//!
//! What a node's file boots, by state:
//!
//! | node | config |
//! |---|---|
//! | `REGISTERED` | management OS, register mode |
//! | `DEPLOY_START`, `DEPLOYING` | management OS, install mode (a node that reboots mid-install starts it again) |
//! | `INSTALLED` | `localboot`: nothing. U-Boot's boot targets try the disk before the network, so an installed node only gets here when its disk has no boot partition |
//! | `UNRECOVERABLE_ERROR` | the failure as the one label, and `localboot`: nothing boots, the node stays on at U-Boot's prompt |
//!
//! Unlike iPXE, U-Boot does not ask again by itself: a failed node picks up
//! install mode at its next power cycle after it is re-provisioned.
//! Files are written whole under a temporary name and renamed, so a TFTP
//! read never sees half a file. Text that came from a node is reduced to
//! plain characters (U-Boot expands `${...}` in `append` lines).

use crate::ipxe::{mgmt_cmdline, plain, ScriptInput};
use crate::node::Arch;
use crate::state::NodeState;

/// The script U-Boot's `dhcp` boot target loads from the TFTP root.
pub const BOOT_SCRIPT_NAME: &str = "boot.scr.uimg";

/// The text of [`BOOT_SCRIPT_NAME`].
///
/// It asks for the node's own file, then `default-arm`, and nothing else:
/// `pxe get` would also try the UUID and eight IP-prefix names first, and
/// each missing file costs U-Boot's e1000 driver about 1.5 s (link wait and
/// a lost first answer), 15 s for a node the service does not know yet.
pub const BOOT_SCRIPT: &str = "echo devlab: U-Boot network boot: pxelinux.cfg/01-<mac>, else default-arm\n\
    setexpr devlab_mac gsub : - ${ethaddr}\n\
    if tftpboot ${pxefile_addr_r} pxelinux.cfg/01-${devlab_mac}; then pxe boot ${pxefile_addr_r}; fi\n\
    if tftpboot ${pxefile_addr_r} pxelinux.cfg/default-arm; then pxe boot ${pxefile_addr_r}; fi\n";

/// The config U-Boot reads for a node it has no file for.
pub const DEFAULT_NAME: &str = "pxelinux.cfg/default-arm";

/// `pxelinux.cfg/01-aa-bb-cc-dd-ee-ff` for `aa:bb:cc:dd:ee:ff`.
pub fn file_name(mac: &str) -> String {
    format!("pxelinux.cfg/01-{}", mac.to_ascii_lowercase().replace(':', "-"))
}

/// The config for a registered node (`input.boot_base` is not used: paths
/// are relative to the TFTP root).
pub fn config(input: &ScriptInput) -> String {
    let uuid = input.uuid;
    let head = |what: &str| format!("# devlab-provision: node {uuid} {what}\n");
    match input.state {
        None | Some(NodeState::Registered) => {
            let what = if input.state.is_none() { "is not registered" } else { "is REGISTERED, no profile assigned" };
            head(&format!("{what}: management OS in register mode"))
                + &mgmt(input.arch, "register", input.api_base, Some(uuid))
        }
        Some(st @ (NodeState::DeployStart | NodeState::Deploying)) => {
            let profile = input.profile.map(plain).unwrap_or_else(|| "-".into());
            head(&format!("is {st} (profile {profile}): management OS in install mode"))
                + &mgmt(input.arch, &format!("install profile {profile}"), input.api_base, Some(uuid))
        }
        Some(NodeState::Installed) => {
            head("is INSTALLED: U-Boot tries the disk first, so it only gets here when the disk does not boot")
                + &nothing(&format!("devlab: node {uuid}: installed, but the disk did not boot"))
        }
        Some(NodeState::UnrecoverableError) => {
            head("is UNRECOVERABLE_ERROR: nothing boots (the disk may be half-written); re-provision and power-cycle")
                + &nothing(&format!("devlab: node {uuid}: UNRECOVERABLE_ERROR: {}", plain(input.last_message)))
        }
    }
}

/// The config for nodes the service does not know: register mode.
pub fn default_config(api_base: &str) -> String {
    "# devlab-provision: a node this service does not know: management OS in register mode;\n\
     # the agent reads the node's UUID from SMBIOS or QEMU's fw_cfg\n"
        .to_string()
        + &mgmt(Arch::Aarch64, "register", api_base, None)
}

/// One label booting the management OS; `what` starts with the mode.
fn mgmt(arch: Arch, what: &str, api_base: &str, uuid: Option<&str>) -> String {
    let mode = what.split(' ').next().unwrap_or(what);
    let who = uuid.map(|u| format!("node {u}")).unwrap_or_else(|| "unknown node".into());
    let a = arch.as_str();
    format!(
        "default mgmt\nprompt 0\nlabel mgmt\n  menu label devlab: {who}: {what}\n  kernel mgmt/{a}/vmlinuz\n  \
         initrd mgmt/{a}/initrd.img\n  append {}\n",
        mgmt_cmdline(arch, mode, api_base, uuid)
    )
}

/// A menu that shows `text` (as its one label) and boots nothing.
fn nothing(text: &str) -> String {
    format!(
        "menu title devlab-provision: nothing to boot\ndefault none\nprompt 0\nlabel none\n  menu label {text}\n  \
         localboot 1\n"
    )
}

/// A legacy U-Boot script image (`mkimage -A arm64 -O linux -T script -C
/// none -n NAME`, time 0): a 64-byte big-endian header, then the script as
/// the one part of a multi-file image (its length, a 0 terminator, the text).
pub fn script_uimage(name: &str, script: &str) -> Vec<u8> {
    const MAGIC: u32 = 0x2705_1956;
    const OS_LINUX: u8 = 5;
    const ARCH_ARM64: u8 = 22;
    const TYPE_SCRIPT: u8 = 6;
    const COMP_NONE: u8 = 0;
    let mut data = Vec::with_capacity(script.len() + 8);
    data.extend_from_slice(&(script.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script.as_bytes());
    let mut header = [0u8; 64];
    header[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    // 4..8 header CRC (below), 8..12 time (0), 12..16 size.
    header[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    // 16..20 load address, 20..24 entry point: 0.
    header[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    header[28] = OS_LINUX;
    header[29] = ARCH_ARM64;
    header[30] = TYPE_SCRIPT;
    header[31] = COMP_NONE;
    let n = name.len().min(32);
    header[32..32 + n].copy_from_slice(&name.as_bytes()[..n]);
    let hcrc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&hcrc.to_be_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "6b1e4c2a-0d3f-4a51-9f0e-000000000201";

    fn input(state: Option<NodeState>) -> ScriptInput<'static> {
        ScriptInput {
            uuid: U,
            state,
            profile: Some("ab"),
            arch: Arch::Aarch64,
            api_base: "http://10.0.2.2:8080/",
            boot_base: "/boot",
            last_message: "",
        }
    }

    #[test]
    fn file_names_follow_pxelinux() {
        assert_eq!(file_name("52:54:00:DE:02:01"), "pxelinux.cfg/01-52-54-00-de-02-01");
    }

    #[test]
    fn registered_and_deploying_nodes_boot_the_management_os() {
        let s = config(&input(Some(NodeState::Registered)));
        assert!(s.contains("\ndefault mgmt\nprompt 0\nlabel mgmt\n"), "{s}");
        assert!(s.contains("\n  kernel mgmt/aarch64/vmlinuz\n  initrd mgmt/aarch64/initrd.img\n"), "{s}");
        assert!(
            s.contains(&format!(
                "\n  append console=ttyAMA0 quiet devlab.mode=register devlab.api=http://10.0.2.2:8080 devlab.uuid={U}\n"
            )),
            "{s}"
        );
        for st in [NodeState::DeployStart, NodeState::Deploying] {
            let s = config(&input(Some(st)));
            assert!(s.contains(&format!("menu label devlab: node {U}: install profile ab\n")), "{s}");
            assert!(s.contains(" devlab.mode=install "), "{s}");
        }
    }

    #[test]
    fn installed_and_failed_nodes_boot_nothing() {
        let s = config(&input(Some(NodeState::Installed)));
        assert!(!s.contains("kernel"), "{s}");
        assert!(s.contains("\n  localboot 1\n"), "{s}");
        let s = config(&ScriptInput {
            last_message: "checksum ${evil}\nkernel x",
            ..input(Some(NodeState::UnrecoverableError))
        });
        assert!(!s.contains("\n  kernel"), "{s}");
        assert!(!s.contains("${"), "{s}");
        assert!(
            s.contains(&format!("menu label devlab: node {U}: UNRECOVERABLE_ERROR: checksum __evil__kernel x\n")),
            "{s}"
        );
    }

    #[test]
    fn unknown_nodes_register_without_a_uuid() {
        let s = default_config("http://10.77.0.1:9000");
        assert!(s.contains("devlab.mode=register devlab.api=http://10.77.0.1:9000\n"), "{s}");
        assert!(!s.contains("devlab.uuid"), "{s}");
        assert!(s.contains("menu label devlab: unknown node: register\n"), "{s}");
    }

    /// Byte for byte what `mkimage` makes (when u-boot-tools is installed).
    #[test]
    fn script_image_matches_mkimage() {
        let ours = script_uimage("devlab netboot", BOOT_SCRIPT);
        assert_eq!(&ours[0..4], &[0x27, 0x05, 0x19, 0x56]);
        let Ok(mkimage) = which_mkimage() else {
            eprintln!("mkimage not installed: comparing the header only");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s.txt");
        let out = dir.path().join("s.uimg");
        std::fs::write(&src, BOOT_SCRIPT).unwrap();
        let st = std::process::Command::new(mkimage)
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "devlab netboot", "-d"])
            .arg(&src)
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(&out).unwrap(), ours);
    }

    fn which_mkimage() -> Result<std::path::PathBuf, ()> {
        let p = std::path::PathBuf::from("/usr/bin/mkimage");
        if p.exists() {
            Ok(p)
        } else {
            Err(())
        }
    }
}
