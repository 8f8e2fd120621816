//! A two-board product (`[product]`): a main machine and a sub machine
//! updated as one, as a robot's main and sub computers are. The run joins
//! them with a private link (a second NIC on each, the two ends of a QEMU
//! `dgram` socket pair: no host network, nothing else on it); only the main
//! reaches the lab's update server. The guest side is the reference
//! images' `devlab-product` agent (`fixtures/rootfs/usr/sbin/`); the
//! harness serves the product's releases (`publish_product`) and
//! configures the agents (`product_agent`).
//!
//! Invariants: main and sub are two different `[[machine]]`s; the link's
//! sockets live in a folder of the run's own (`devlab-<pid>-link-*` in the
//! temp dir) that is removed with it, and that the next start sweeps if the
//! harness was SIGKILLed (`machine::remove_orphaned_socket_dirs`, by pid);
//! a machine powered on again binds its end afresh (QEMU never unlinks it).

use crate::error::{Error, InputError, Result};
use crate::scenario::MachineDecl;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The main's address on the private link (CIDR) and the sub's.
pub const MAIN_ADDR: &str = "192.168.77.1/24";
pub const SUB_ADDR: &str = "192.168.77.2/24";
/// The link NICs' MACs (each machine's user-network NIC keeps its own).
pub const MAIN_MAC: &str = "52:54:00:77:00:01";
pub const SUB_MAC: &str = "52:54:00:77:00:02";

/// `[product]`: which machine is the main (it reaches the update server)
/// and which the sub (reached only over the private link).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    /// The product's name on the update server (`/api/products/<name>`).
    pub name: toml::Spanned<String>,
    pub main: toml::Spanned<String>,
    pub sub: toml::Spanned<String>,
    /// How often the main asks for the product's release (compressed for tests).
    #[serde(default = "default_interval")]
    pub interval: crate::steps::Dur,
}

fn default_interval() -> crate::steps::Dur {
    crate::steps::Dur(std::time::Duration::from_secs(2))
}

/// The part a machine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Main,
    Sub,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Sub => "sub",
        }
    }
}

impl ProductSpec {
    /// The part `machine` plays, if any.
    pub fn role_of(&self, machine: &str) -> Option<Role> {
        if self.main.get_ref() == machine {
            Some(Role::Main)
        } else if self.sub.get_ref() == machine {
            Some(Role::Sub)
        } else {
            None
        }
    }
}

/// `[product]`: a plain name; main and sub two different machines of the
/// scenario's `[[machine]]` tables.
pub fn check(path: &Path, text: &str, product: Option<&ProductSpec>, machines: &[MachineDecl]) -> Result<()> {
    let Some(p) = product else { return Ok(()) };
    let at = |offset: usize, field: &str, msg: String| -> Error {
        InputError::new(path, msg).at(text, offset).field(field).into()
    };
    if !crate::fleetlock::valid_group(p.name.get_ref()) {
        let msg = format!("product name {:?}: letters, digits, `.` and `-` only", p.name.get_ref());
        return Err(at(p.name.span().start, "product.name", msg));
    }
    let known: Vec<&str> = machines.iter().map(|m| m.name.get_ref().as_str()).collect();
    for (field, name) in [("product.main", &p.main), ("product.sub", &p.sub)] {
        if !known.contains(&name.get_ref().as_str()) {
            let msg = match known.is_empty() {
                true => "a [product] needs its two machines, as [[machine]] tables".to_string(),
                false => format!("no machine `{}` (the scenario's: {})", name.get_ref(), known.join(", ")),
            };
            return Err(at(name.span().start, field, msg));
        }
    }
    if p.main.get_ref() == p.sub.get_ref() {
        let msg = format!("`{}` cannot be both the main and the sub", p.sub.get_ref());
        return Err(at(p.sub.span().start, "product.sub", msg));
    }
    Ok(())
}

/// One machine's end of the private link.
#[derive(Debug, Clone)]
pub struct LinkEnd {
    /// The socket this machine's QEMU binds.
    pub local: PathBuf,
    /// The socket of the other machine's QEMU (where frames go).
    pub remote: PathBuf,
    pub mac: &'static str,
    pub role: Role,
}

impl LinkEnd {
    /// Remove the socket a previous QEMU of this machine bound (powered on
    /// again): QEMU binds its end, never unlinks it.
    pub fn unbind_previous(&self) -> Result<()> {
        match std::fs::remove_file(&self.local) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::infra(format!("cannot remove {}: {e}", self.local.display())))
            }
            _ => Ok(()),
        }
    }
}

/// The product's link for the run: the folder of its sockets (removed with
/// the last holder), the arch of each part, and the SSH key the sub's image
/// accepts (the main logs in to it over the link).
#[derive(Debug)]
pub struct ProductLab {
    dir: tempfile::TempDir,
    pub main_arch: devlab_images::Arch,
    pub sub_arch: devlab_images::Arch,
    pub sub_key: PathBuf,
}

impl ProductLab {
    pub fn new(main_arch: devlab_images::Arch, sub_arch: devlab_images::Arch, sub_key: PathBuf) -> Result<ProductLab> {
        // In /tmp, short: a socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix(&format!("devlab-{}-link-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::infra(format!("cannot create the product link's folder: {e}")))?;
        Ok(ProductLab { dir, main_arch, sub_arch, sub_key })
    }

    /// The end of the link `role` plugs into.
    pub fn end(&self, role: Role) -> LinkEnd {
        let sock = |r: Role| self.dir.path().join(format!("{}.sock", r.as_str()));
        let (other, mac) = match role {
            Role::Main => (Role::Sub, MAIN_MAC),
            Role::Sub => (Role::Main, SUB_MAC),
        };
        LinkEnd { local: sock(role), remote: sock(other), mac, role }
    }

    pub fn arch_of(&self, role: Role) -> devlab_images::Arch {
        match role {
            Role::Main => self.main_arch,
            Role::Sub => self.sub_arch,
        }
    }
}

/// The QEMU arguments of a machine's link NIC (`model` as its board's NIC;
/// no option ROM: nothing boots from the link).
pub fn qemu_args(end: &LinkEnd, model: &str) -> [String; 4] {
    [
        "-netdev".into(),
        format!(
            "dgram,id=link0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            end.local.display(),
            end.remote.display()
        ),
        "-device".into(),
        format!("{model},netdev=link0,mac={},romfile=", end.mac),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_ends_cross_and_differ() {
        let lab =
            ProductLab::new(devlab_images::Arch::X86_64, devlab_images::Arch::Aarch64, PathBuf::from("/k")).unwrap();
        let (m, s) = (lab.end(Role::Main), lab.end(Role::Sub));
        assert_eq!(m.local, s.remote);
        assert_eq!(m.remote, s.local);
        assert_ne!(m.mac, s.mac);
        assert!(m.local.as_os_str().len() < 108, "{}", m.local.display());
        let args = qemu_args(&m, "virtio-net-pci").join(" ");
        assert!(args.contains("dgram,id=link0,local.type=unix"), "{args}");
        assert!(args.contains("virtio-net-pci,netdev=link0,mac=52:54:00:77:00:01,romfile="), "{args}");
        // A previous QEMU's socket is removed; none there is fine.
        std::fs::write(&m.local, b"").unwrap();
        m.unbind_previous().unwrap();
        assert!(!m.local.exists());
        m.unbind_previous().unwrap();
        let dir = m.local.parent().unwrap().to_path_buf();
        drop(lab);
        assert!(!dir.exists(), "the link's folder goes with the run");
    }
}
