//! A device's own network boot (`[netboot]` in its profile): on a PXE
//! board whose disk does not boot, the board's firmware boots the team's
//! kernel, initrd and command line (its management OS or installer, e.g.
//! Debian's netboot installer with the team's preseed), which then runs
//! the team's provisioning as it is: fetches its install image from the
//! update server (`serve_artifact`), writes the disk, powers off or
//! reboots; the next boot comes from the disk.
//!
//! Both boards try the disk first, then the network:
//! - x86_64 (SeaBIOS + iPXE, network first in the boot order): the TFTP
//!   folder's `boot.ipxe` tries `sanboot` on the first disk (an MBR without
//!   its boot signature fails at once), then fetches kernel and initrd over
//!   HTTP from the update server and boots them;
//! - U-Boot boards (aarch64 `virt`, x86_64 `pc` with the 32-bit ROM: both
//!   try the disk, then DHCP): `boot.scr.uimg` reads `pxelinux.cfg/netboot`,
//!   which boots `netboot/kernel` and `netboot/initrd` over TFTP.
//!
//! Layout under `<run>/netboot/tftp/`: the boot script, `pxelinux.cfg/`,
//! and `netboot/kernel|initrd`: links to the team's files, or (several
//! initrds) their concatenation, written here. The team's files are only
//! read. Nothing here runs QEMU.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::firmware::Pxe;
use crate::update_server::UpdateServer;
use devlab_images::Arch;
use std::path::{Path, PathBuf};

/// The console line the iPXE script prints before it boots the device's
/// netboot kernel (the disk did not boot).
pub const IPXE_NETBOOT_LINE: &str = "devlab-netboot: the disk does not boot: booting the device netboot kernel";

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::infra(format!("{}: {e}", what.display()))
}

/// The command line with `{server}` (as the device reaches the update
/// server), `{arch}` and `{console}` (the board's serial console) filled in.
pub fn cmdline(template: &str, server: &str, arch: Arch) -> String {
    let console = match arch {
        Arch::X86_64 => "ttyS0,115200",
        Arch::Aarch64 => "ttyAMA0",
    };
    template.replace("{server}", server).replace("{arch}", arch.uname()).replace("{console}", console)
}

/// The iPXE script: the first disk, else the device's kernel over HTTP.
pub fn ipxe_script(kernel_url: &str, initrd_url: Option<&str>, cmdline: &str) -> String {
    let mut s = String::from("#!ipxe\n");
    s += &format!("sanboot --no-describe --drive 0x80 || echo {IPXE_NETBOOT_LINE}\n");
    match initrd_url {
        Some(initrd) => {
            s += &format!("kernel {kernel_url} initrd=initrd {cmdline}\n");
            s += &format!("initrd --name initrd {initrd}\n");
        }
        None => s += &format!("kernel {kernel_url} {cmdline}\n"),
    }
    s + "boot\n"
}

/// The PXELINUX config U-Boot's script reads, in the TFTP folder.
pub const PXELINUX_CONFIG: &str = "pxelinux.cfg/netboot";

/// The console line U-Boot's script prints before it boots the device's
/// netboot kernel (its boot targets tried the disk first). No quote
/// characters: U-Boot's shell would parse them.
pub const UBOOT_NETBOOT_LINE: &str = "devlab-netboot: no disk booted: booting the device netboot kernel";

/// The script U-Boot's `dhcp` boot target sources. aarch64: read
/// [`PXELINUX_CONFIG`] and `pxe boot` it. x86's 32-bit U-Boot: plain
/// commands (no `setexpr`, no `pxefile_addr_r`), and no `pxe boot` (2023.01
/// hands `zboot` no usable initrd), so kernel and initrd are loaded over
/// TFTP and `zboot`ed here, the initrd above the kernel's decompression
/// window (`ramdisk_addr_r` 0x8000000, not the default 0x4000000). The
/// command line goes in single quotes, so a `'` in it is left out.
pub fn uboot_script(arch: Arch, has_initrd: bool, cmdline: &str) -> String {
    let head = format!("echo {UBOOT_NETBOOT_LINE}\n");
    match arch {
        Arch::Aarch64 => {
            head + &format!(
                "if tftpboot ${{pxefile_addr_r}} {PXELINUX_CONFIG}; then pxe boot ${{pxefile_addr_r}}; fi\n"
            )
        }
        Arch::X86_64 => {
            let mut s = head + "setenv ramdisk_addr_r 0x8000000\n";
            s += "tftpboot ${kernel_addr_r} netboot/kernel || exit\nsetenv nb_ksize ${filesize}\n";
            let initrd = if has_initrd {
                s += "tftpboot ${ramdisk_addr_r} netboot/initrd || exit\n";
                " ${ramdisk_addr_r} ${filesize}"
            } else {
                ""
            };
            s += &format!("setenv bootargs '{}'\n", cmdline.replace('\'', ""));
            s + &format!("zboot ${{kernel_addr_r}} ${{nb_ksize}}{initrd}\n")
        }
    }
}

/// The PXELINUX config U-Boot boots (paths relative to the TFTP root;
/// U-Boot expands `${...}` in `append`, so a `$` is left out).
pub fn pxelinux_config(has_initrd: bool, cmdline: &str) -> String {
    let mut s = String::from("default netboot\nprompt 0\nlabel netboot\n  kernel netboot/kernel\n");
    if has_initrd {
        s += "  initrd netboot/initrd\n";
    }
    s + &format!("  append {}\n", cmdline.replace('$', ""))
}

/// Lay out `<run>/netboot/tftp/` for `device` on `arch` booted by `pxe`,
/// publishing kernel and initrd on `server` (iPXE fetches them over HTTP);
/// returns the TFTP folder.
pub fn prepare(run_dir: &Path, device: &Device, arch: Arch, pxe: Pxe, server: &UpdateServer) -> Result<PathBuf> {
    let (Some(n), Some((kernel, initrds))) = (&device.netboot, device.netboot_files(arch)) else {
        return Err(Error::infra(format!("device `{}` has no [netboot]", device.name)));
    };
    let tftp = run_dir.join("netboot").join("tftp");
    let files = tftp.join("netboot");
    std::fs::create_dir_all(&files).map_err(io(&files))?;
    // Links resolve from the TFTP folder: they point at absolute paths.
    let link = |from: &Path, to: &Path| {
        let from = std::fs::canonicalize(from).map_err(io(from))?;
        std::os::unix::fs::symlink(from, to).map_err(io(to))
    };
    link(&kernel, &files.join("kernel"))?;
    let initrd = files.join("initrd");
    match initrds.as_slice() {
        [] => {}
        [one] => link(one, &initrd)?,
        more => {
            let mut out = std::fs::File::create(&initrd).map_err(io(&initrd))?;
            for part in more {
                let mut f = std::fs::File::open(part).map_err(io(part))?;
                std::io::copy(&mut f, &mut out).map_err(io(&initrd))?;
            }
        }
    }
    let cmdline = cmdline(&n.cmdline, &server.guest_address(), arch);
    match pxe {
        Pxe::Ipxe => {
            let read = |p: &Path| std::fs::read(p).map_err(io(p));
            let kernel_url = server.add_file(arch.uname(), "netboot/kernel", read(&kernel)?);
            let initrd_url = if initrds.is_empty() {
                None
            } else {
                Some(server.add_file(arch.uname(), "netboot/initrd", read(&initrd)?))
            };
            let script = ipxe_script(&kernel_url, initrd_url.as_deref(), &cmdline);
            write(&tftp.join(pxe.bootfile()), script.as_bytes())?;
        }
        Pxe::Uboot => {
            let script = uboot_script(arch, !initrds.is_empty(), &cmdline);
            let script = devlab_provision::pxelinux::script_uimage("devlab netboot", &script);
            write(&tftp.join(pxe.bootfile()), &script)?;
            // x86's script loads and zboots the files itself.
            if arch == Arch::Aarch64 {
                let config = tftp.join(PXELINUX_CONFIG);
                std::fs::create_dir_all(config.parent().expect("in pxelinux.cfg/")).map_err(io(&config))?;
                write(&config, pxelinux_config(!initrds.is_empty(), &cmdline).as_bytes())?;
            }
        }
    }
    Ok(tftp)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tftp_folder_links_to_the_teams_files_even_from_a_relative_profile_path() {
        let d = tempfile::tempdir().unwrap();
        for (f, bytes) in [("k", "kernel"), ("i1", "one+"), ("i2", "two")] {
            std::fs::write(d.path().join(f), bytes).unwrap();
        }
        let text = "[device]\nname = \"p\"\narches = [\"aarch64\"]\nimage = \"x.img\"\n[login.ssh]\npassword = \"x\"\n\
            [netboot]\nkernel = \"k\"\ninitrd = [\"i1\", \"i2\"]\ncmdline = \"console={console} u={server}\"\n";
        // As `device = "../device.toml"` in a scenario gives it: relative to the working folder.
        let depth = std::env::current_dir().unwrap().components().count() - 1;
        let relative = Path::new(&"../".repeat(depth)).join(d.path().strip_prefix("/").unwrap()).join("device.toml");
        let device = Device::parse(&relative, text).unwrap();
        let server = UpdateServer::start(d.path().join("http.log")).await.unwrap();
        let run = d.path().join("run");
        let tftp = prepare(&run, &device, Arch::Aarch64, Pxe::Uboot, &server).unwrap();
        assert_eq!(
            std::fs::read(tftp.join("netboot/kernel")).unwrap(),
            b"kernel",
            "the link resolves from the TFTP folder"
        );
        assert_eq!(std::fs::read(tftp.join("netboot/initrd")).unwrap(), b"one+two", "initrds concatenated in order");
        let config = std::fs::read_to_string(tftp.join(PXELINUX_CONFIG)).unwrap();
        assert!(config.contains(&format!("append console=ttyAMA0 u=10.0.2.2:{}\n", server.port())), "{config}");
        assert_eq!(std::fs::read(d.path().join("i1")).unwrap(), b"one+", "the team's files are only read");
    }

    #[test]
    fn ipxe_tries_the_disk_then_boots_the_devices_kernel() {
        let s = ipxe_script("http://h/k", Some("http://h/i"), "console=ttyS0 url=http://10.0.2.2:80/p");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert!(lines[1].starts_with("sanboot --no-describe --drive 0x80 || echo "), "the disk first: {s}");
        assert!(lines[2].starts_with("kernel http://h/k initrd=initrd console=ttyS0 url="), "{s}");
        assert_eq!(lines[3], "initrd --name initrd http://h/i");
        assert_eq!(lines.last(), Some(&"boot"));
        assert!(!ipxe_script("http://h/k", None, "x").contains("initrd"));
    }

    #[test]
    fn uboot_scripts_per_arch() {
        let x86 = uboot_script(Arch::X86_64, true, "console=ttyS0,115200 it's");
        assert!(x86.contains("setenv ramdisk_addr_r 0x8000000\n"), "{x86}");
        assert!(x86.contains("setenv bootargs 'console=ttyS0,115200 its'\n"), "{x86}");
        assert!(x86.ends_with("zboot ${kernel_addr_r} ${nb_ksize} ${ramdisk_addr_r} ${filesize}\n"), "{x86}");
        assert!(!x86.contains("setexpr") && !x86.contains("pxe boot"), "{x86}");
        assert!(uboot_script(Arch::X86_64, false, "").ends_with("zboot ${kernel_addr_r} ${nb_ksize}\n"));
        let arm = uboot_script(Arch::Aarch64, true, "x");
        assert!(
            arm.contains("tftpboot ${pxefile_addr_r} pxelinux.cfg/netboot; then pxe boot ${pxefile_addr_r}"),
            "{arm}"
        );
    }

    #[test]
    fn pxelinux_boots_the_tftp_copies_without_uboot_expansions() {
        let c = pxelinux_config(true, "console=ttyAMA0 a=${x}");
        assert!(
            c.contains("  kernel netboot/kernel\n  initrd netboot/initrd\n  append console=ttyAMA0 a={x}\n"),
            "{c}"
        );
        assert!(!pxelinux_config(false, "").contains("initrd"));
        let c = cmdline("console={console} url=http://{server}/files/{arch}/p", "10.0.2.2:81", Arch::Aarch64);
        assert_eq!(c, "console=ttyAMA0 url=http://10.0.2.2:81/files/aarch64/p");
        assert!(cmdline("console={console}", "", Arch::X86_64).ends_with("=ttyS0,115200"));
    }
}
