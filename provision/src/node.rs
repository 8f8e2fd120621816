//! What a node is: the registration the management OS sends, its validation
//! (canonical UUID, well-formed MACs), and the node as stored and served.
//! UUIDs are kept lowercase and MACs lowercase with colons, sorted and
//! deduplicated, so two registrations of one machine compare equal however
//! its agent spelled them. No I/O here.

use crate::error::ProvisionError;
use crate::state::NodeState;
use std::collections::BTreeMap;

/// CPU architecture of a node, as the management OS kernels are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// An architecture as iPXE's `${buildarch}` or the agent name it:
    /// `x86_64`/`i386` (a 32-bit iPXE on an x86-64 machine) and
    /// `aarch64`/`arm64`.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "i386" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
}

/// The body of `POST /api/register`. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// SMBIOS system UUID.
    pub uuid: String,
    pub serial: String,
    pub vendor: String,
    pub model: String,
    pub macs: Vec<String>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Free-form firmware versions (`bios`, `bmc`, `nic0`, ...).
    #[serde(default)]
    pub firmware: BTreeMap<String, String>,
    /// Link neighbours (LLDP-like, free-form string maps), if any.
    #[serde(default)]
    pub neighbours: Vec<BTreeMap<String, String>>,
    #[serde(default)]
    pub arch: Option<Arch>,
}

impl Registration {
    /// Check and canonicalise: lowercase UUID, MACs lowercase with colons,
    /// sorted, without duplicates.
    pub fn validated(mut self) -> Result<Registration, ProvisionError> {
        self.uuid = canonical_uuid(&self.uuid)?;
        if self.macs.is_empty() {
            return Err(ProvisionError::BadRequest(format!(
                "node {}: no MAC address given (`macs` is empty)",
                self.uuid
            )));
        }
        let mut macs = self.macs.iter().map(|m| canonical_mac(m)).collect::<Result<Vec<_>, _>>()?;
        macs.sort();
        macs.dedup();
        self.macs = macs;
        for d in &self.disks {
            if d.name.trim().is_empty() {
                return Err(ProvisionError::BadRequest(format!("node {}: a disk has an empty name", self.uuid)));
            }
        }
        Ok(self)
    }
}

/// `8-4-4-4-12` hex digits, lowercased. The nil and all-ones UUIDs are
/// refused: firmware that reports them (QEMU without `-uuid` reports nil)
/// gives every machine the same identity.
pub fn canonical_uuid(s: &str) -> Result<String, ProvisionError> {
    let bad = || {
        ProvisionError::BadRequest(format!(
            "`{s}` is not a canonical UUID (expected 8-4-4-4-12 hex digits, e.g. 4c4c4544-0042-3010-8052-b4c04f4e3732)"
        ))
    };
    let b = s.as_bytes();
    if b.len() != 36 {
        return Err(bad());
    }
    for (i, c) in b.iter().enumerate() {
        let ok = if [8, 13, 18, 23].contains(&i) { *c == b'-' } else { c.is_ascii_hexdigit() };
        if !ok {
            return Err(bad());
        }
    }
    let lower = s.to_ascii_lowercase();
    if lower.chars().filter(|c| *c != '-').all(|c| c == '0') || lower.chars().filter(|c| *c != '-').all(|c| c == 'f') {
        return Err(ProvisionError::BadRequest(format!(
            "UUID {lower} is not unique to a machine (firmware placeholder; QEMU needs -uuid)"
        )));
    }
    Ok(lower)
}

/// Six hex octets separated by `:` or `-`, as lowercase `aa:bb:cc:dd:ee:ff`.
/// Multicast and all-zero addresses are refused: no NIC has them.
pub fn canonical_mac(s: &str) -> Result<String, ProvisionError> {
    let bad = |why: &str| ProvisionError::BadRequest(format!("`{s}` is not a valid MAC address: {why}"));
    let sep = if s.contains('-') { '-' } else { ':' };
    let octets: Vec<&str> = s.split(sep).collect();
    if octets.len() != 6 || octets.iter().any(|o| o.len() != 2 || !o.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(bad("expected six hex octets like 52:54:00:12:34:56"));
    }
    let bytes: Vec<u8> = octets.iter().map(|o| u8::from_str_radix(o, 16).expect("checked hex")).collect();
    if bytes.iter().all(|b| *b == 0) {
        return Err(bad("all zero"));
    }
    if bytes[0] & 1 == 1 {
        return Err(bad("a multicast address"));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub uuid: String,
    pub serial: String,
    pub vendor: String,
    pub model: String,
    pub arch: Option<Arch>,
    /// Sorted, lowercase, colon-separated.
    pub macs: Vec<String>,
    pub disks: Vec<Disk>,
    pub firmware: BTreeMap<String, String>,
    pub neighbours: Vec<BTreeMap<String, String>>,
    pub state: NodeState,
    /// The assigned profile's name.
    pub profile: Option<String>,
    /// RFC 3339, UTC.
    pub registered_at: String,
    /// Last registration or state change, RFC 3339, UTC.
    pub updated_at: String,
}

/// One entry of a node's history. The first has `from: None`: the
/// registration that created the node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    pub at: String,
    pub from: Option<NodeState>,
    pub to: NodeState,
    pub message: String,
}

/// A node with its transition history, oldest first (`GET /api/nodes/{uuid}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeDetail {
    #[serde(flatten)]
    pub node: Node,
    pub history: Vec<Transition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_checked_and_lowercased() {
        assert_eq!(
            canonical_uuid("4C4C4544-0042-3010-8052-B4C04F4E3732").unwrap(),
            "4c4c4544-0042-3010-8052-b4c04f4e3732"
        );
        for bad in [
            "",
            "4c4c4544004230108052b4c04f4e3732",
            "{4c4c4544-0042-3010-8052-b4c04f4e3732}",
            "4c4c4544-0042-3010-8052-b4c04f4e373",
            "4c4c4544-0042-3010-8052_b4c04f4e3732",
            "4c4c4544-0042-3010-8052-b4c04f4e373g",
            "4c4c4544-00423-010-8052-b4c04f4e3732",
        ] {
            let e = canonical_uuid(bad).unwrap_err();
            assert!(e.to_string().contains("is not a canonical UUID"), "{bad}: {e}");
            assert_eq!(e.status(), 400);
        }
        for placeholder in ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"] {
            assert!(canonical_uuid(placeholder).unwrap_err().to_string().contains("not unique"));
        }
    }

    #[test]
    fn macs_are_checked_and_canonical() {
        assert_eq!(canonical_mac("52:54:00:AB:cd:0F").unwrap(), "52:54:00:ab:cd:0f");
        assert_eq!(canonical_mac("52-54-00-ab-cd-0f").unwrap(), "52:54:00:ab:cd:0f");
        for (bad, why) in [
            ("52:54:00:ab:cd", "six hex octets"),
            ("52:54:00:ab:cd:0f:11", "six hex octets"),
            ("5254.00ab.cd0f", "six hex octets"),
            ("52:54:00:ab:cd:zz", "six hex octets"),
            ("52:54:00:ab:cd:f", "six hex octets"),
            ("00:00:00:00:00:00", "all zero"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("01:00:5e:00:00:01", "multicast"),
        ] {
            let e = canonical_mac(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn registration_is_canonicalised() {
        let r = Registration {
            uuid: "4C4C4544-0042-3010-8052-B4C04F4E3732".into(),
            serial: "S1".into(),
            vendor: "QEMU".into(),
            model: "q35".into(),
            macs: vec!["52:54:00:00:00:02".into(), "52-54-00-00-00-01".into(), "52:54:00:00:00:02".into()],
            disks: vec![],
            firmware: BTreeMap::new(),
            neighbours: vec![],
            arch: None,
        };
        let v = r.clone().validated().unwrap();
        assert_eq!(v.uuid, "4c4c4544-0042-3010-8052-b4c04f4e3732");
        assert_eq!(v.macs, ["52:54:00:00:00:01", "52:54:00:00:00:02"]);
        let e = Registration { macs: vec![], ..r }.validated().unwrap_err();
        assert_eq!(e.to_string(), "node 4c4c4544-0042-3010-8052-b4c04f4e3732: no MAC address given (`macs` is empty)");
    }

    #[test]
    fn registration_refuses_unknown_fields() {
        let e = serde_json::from_str::<Registration>(
            r#"{"uuid":"x","serial":"s","vendor":"v","model":"m","macs":[],"mac":"52:54:00:00:00:01"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `mac`"), "{e}");
    }

    #[test]
    fn arch_names_from_ipxe() {
        assert_eq!(Arch::parse("i386"), Some(Arch::X86_64));
        assert_eq!(Arch::parse("arm64"), Some(Arch::Aarch64));
        assert_eq!(Arch::parse("riscv64"), None);
    }
}
