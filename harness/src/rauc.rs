//! The RAUC update flavour's own state and parsing: the bundles a run has
//! served (name -> URL as the guest sees it) and what `rauc status
//! --detailed --output-format=json` says, by bootname. No I/O; the steps
//! run RAUC over SSH and build bundles through `devlab_images::rauc`.

use std::collections::BTreeMap;

/// Served RAUC bundles: name -> URL as the guest reaches it.
#[derive(Debug, Default, Clone)]
pub struct Bundles(BTreeMap<String, String>);

impl Bundles {
    pub fn insert(&mut self, name: &str, url: String) {
        self.0.insert(name.to_string(), url);
    }

    pub fn url(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// What `rauc status --detailed --output-format=json` says, by bootname.
#[derive(Debug, Default, PartialEq)]
pub struct RaucStatus {
    pub booted: Option<String>,
    /// The bootname of RAUC's `boot_primary` slot.
    pub primary: Option<String>,
    pub boot_status: BTreeMap<String, String>,
    /// The bundle version RAUC last installed into each slot.
    pub installed: BTreeMap<String, String>,
}

impl RaucStatus {
    pub fn parse(json: &str) -> std::result::Result<RaucStatus, String> {
        let v: serde_json::Value =
            serde_json::from_str(json.trim()).map_err(|e| format!("rauc status is not JSON ({e}): {json}"))?;
        let mut st = RaucStatus { booted: v["booted"].as_str().map(str::to_string), ..Default::default() };
        let primary = v["boot_primary"].as_str();
        // `slots` is a list of one-entry objects {"rootfs.0": {...}}.
        for entry in v["slots"].as_array().into_iter().flatten() {
            for (name, slot) in entry.as_object().into_iter().flatten() {
                let Some(bootname) = slot["bootname"].as_str() else { continue };
                if primary == Some(name.as_str()) {
                    st.primary = Some(bootname.to_string());
                }
                if let Some(b) = slot["boot_status"].as_str() {
                    st.boot_status.insert(bootname.to_string(), b.to_string());
                }
                if let Some(ver) = slot["slot_status"]["bundle"]["version"].as_str() {
                    st.installed.insert(bootname.to_string(), ver.to_string());
                }
            }
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rauc_status_json_is_read_by_bootname() {
        // As printed by RAUC 1.8 in the guest after installing v2 into B.
        let json = r#"{"compatible":"devlab","variant":"","booted":"A","boot_primary":"rootfs.1","slots":[
            {"rootfs.1":{"class":"rootfs","device":"/dev/vda5","type":"ext4","bootname":"B","state":"inactive",
             "boot_status":"good","slot_status":{"bundle":{"compatible":"devlab","version":"2"},"status":"ok"}}},
            {"rootfs.0":{"class":"rootfs","device":"/dev/vda4","type":"ext4","bootname":"A","state":"booted",
             "boot_status":"bad","slot_status":{"bundle":{"compatible":null}}}}]}"#;
        let st = RaucStatus::parse(json).unwrap();
        assert_eq!(st.booted.as_deref(), Some("A"));
        assert_eq!(st.primary.as_deref(), Some("B"));
        assert_eq!(st.boot_status.get("A").map(String::as_str), Some("bad"));
        assert_eq!(st.boot_status.get("B").map(String::as_str), Some("good"));
        assert_eq!(st.installed.get("B").map(String::as_str), Some("2"));
        assert!(!st.installed.contains_key("A"));
        assert!(RaucStatus::parse("installing").unwrap_err().contains("not JSON"));
    }
}
