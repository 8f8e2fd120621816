//! The iPXE scripts `GET /ipxe/{uuid}` answers, one per node state:
//!
//! | node | script |
//! |---|---|
//! | unknown, `REGISTERED` | management OS, `devlab.mode=register` |
//! | `DEPLOY_START`, `DEPLOYING` | management OS, `devlab.mode=install` (a node that reboots mid-install starts the install again) |
//! | `INSTALLED` | `exit`: iPXE ends and the firmware goes on to the next boot device, the disk |
//! | `UNRECOVERABLE_ERROR` | boots nothing: prints the failure, waits 60 s (`prompt --timeout`, a key skips the wait) and chains `/ipxe/{uuid}` again |
//!
//! Why the error answer boots nothing: the disk holds a half-written image
//! (`exit` would let the firmware boot it), and register mode would power the
//! node off as if nothing had happened. Looping keeps the failure on the
//! console and lets the node pick up install mode by itself as soon as an
//! operator re-provisions it (`UNRECOVERABLE_ERROR -> DEPLOY_START`). No
//! `shell`: nothing waits for a person.
//!
//! The management OS is `<boot-base-url>/mgmt/<arch>/vmlinuz` and
//! `.../initrd.img`; its kernel gets the arch's serial console (`quiet`:
//! the agent's lines are what matters), `devlab.mode`, `devlab.api` (this
//! service as the node reached it) and `devlab.uuid`. Text that came from a
//! node (the failure message) is reduced to plain characters before it goes
//! into a script, so it cannot expand `${...}` or end a line.

use crate::node::Arch;
use crate::state::NodeState;

/// How long an `UNRECOVERABLE_ERROR` node waits before it asks again.
pub const ERROR_RETRY_SECONDS: u32 = 60;

/// What the script is made from.
#[derive(Debug, Clone)]
pub struct ScriptInput<'a> {
    pub uuid: &'a str,
    /// `None`: the node is not registered.
    pub state: Option<NodeState>,
    pub profile: Option<&'a str>,
    pub arch: Arch,
    /// This service as the node reaches it, e.g. `http://10.0.2.2:8080`.
    pub api_base: &'a str,
    pub boot_base: &'a str,
    /// The message of the node's last transition (shown for errors).
    pub last_message: &'a str,
}

/// Render the script for `input`.
pub fn script(input: &ScriptInput) -> String {
    let uuid = input.uuid;
    let api = input.api_base.trim_end_matches('/');
    let mut s = String::from("#!ipxe\n");
    match input.state {
        None | Some(NodeState::Registered) => {
            let what = if input.state.is_none() { "is not registered" } else { "is REGISTERED, no profile assigned" };
            s += &format!("# devlab-provision: node {uuid} {what}: management OS in register mode\n");
            s += &format!("echo devlab: node {uuid}: register\n");
            s += &mgmt_boot(input, "register");
        }
        Some(st @ (NodeState::DeployStart | NodeState::Deploying)) => {
            let profile = input.profile.map(plain).unwrap_or_else(|| "-".into());
            s += &format!(
                "# devlab-provision: node {uuid} is {st} (profile {profile}): management OS in install mode\n"
            );
            s += &format!("echo devlab: node {uuid}: install profile {profile}\n");
            s += &mgmt_boot(input, "install");
        }
        Some(NodeState::Installed) => {
            s += &format!("# devlab-provision: node {uuid} is INSTALLED: leave iPXE, so the firmware goes on to\n");
            s += "# the next boot device, the installed disk\n";
            s += &format!("echo devlab: node {uuid}: installed, booting from disk\n");
            s += "exit\n";
        }
        Some(NodeState::UnrecoverableError) => {
            s += &format!("# devlab-provision: node {uuid} is UNRECOVERABLE_ERROR. Neither the disk (its install\n");
            s += "# failed part-way) nor register mode (which would hide the failure) is booted: the node\n";
            s += &format!(
                "# asks again every {ERROR_RETRY_SECONDS} s and boots install mode once it is re-provisioned.\n"
            );
            s += &format!("echo devlab: node {uuid}: UNRECOVERABLE_ERROR: {}\n", plain(input.last_message));
            s += &format!("echo devlab: waiting to be re-provisioned (PUT {api}/api/nodes/{uuid}/profile)\n");
            s += &format!("prompt --timeout {} Press any key to ask again now ||\n", ERROR_RETRY_SECONDS * 1000);
            s += &format!("chain --replace --autofree {api}/ipxe/{uuid}?arch=${{buildarch}}\n");
        }
    }
    s
}

fn mgmt_boot(input: &ScriptInput, mode: &str) -> String {
    let base = format!("{}/mgmt/{}", input.boot_base.trim_end_matches('/'), input.arch.as_str());
    format!(
        "kernel {base}/vmlinuz initrd=initrd.img {}\n\
         initrd {base}/initrd.img\n\
         boot\n",
        mgmt_cmdline(input.arch, mode, input.api_base, Some(input.uuid))
    )
}

/// The management OS's kernel command line: the arch's serial console
/// (`quiet`: the agent's lines are what matters), `devlab.mode`,
/// `devlab.api` and, when known, `devlab.uuid`. Shared with [`crate::pxelinux`].
pub(crate) fn mgmt_cmdline(arch: Arch, mode: &str, api_base: &str, uuid: Option<&str>) -> String {
    let console = match arch {
        Arch::X86_64 => "ttyS0,115200",
        Arch::Aarch64 => "ttyAMA0",
    };
    let api = api_base.trim_end_matches('/');
    let mut s = format!("console={console} quiet devlab.mode={mode} devlab.api={api}");
    if let Some(uuid) = uuid {
        s += &format!(" devlab.uuid={uuid}");
    }
    s
}

/// Letters, digits and a little punctuation; anything else becomes `_`;
/// at most 200 characters.
pub(crate) fn plain(text: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || " .,:;/()=+@_-".contains(c);
    let mut out: String = text.chars().take(200).map(|c| if keep(c) { c } else { '_' }).collect();
    if out.trim().is_empty() {
        out = "(no message)".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "4c4c4544-0042-3010-8052-b4c04f4e3732";

    fn input(state: Option<NodeState>) -> ScriptInput<'static> {
        ScriptInput {
            uuid: U,
            state,
            profile: Some("debian"),
            arch: Arch::X86_64,
            api_base: "http://10.0.2.2:8080/",
            boot_base: "http://10.0.2.2:9000/boot",
            last_message: "",
        }
    }

    #[test]
    fn unknown_and_registered_nodes_boot_register_mode() {
        for st in [None, Some(NodeState::Registered)] {
            let s = script(&input(st));
            assert!(s.starts_with("#!ipxe\n"), "{s}");
            assert!(s.contains(&format!(
                "\nkernel http://10.0.2.2:9000/boot/mgmt/x86_64/vmlinuz initrd=initrd.img console=ttyS0,115200 quiet devlab.mode=register \
                 devlab.api=http://10.0.2.2:8080 devlab.uuid={U}\n"
            )));
            assert!(s.contains("\ninitrd http://10.0.2.2:9000/boot/mgmt/x86_64/initrd.img\nboot\n"), "{s}");
        }
    }

    #[test]
    fn deploying_nodes_boot_install_mode_for_their_arch() {
        for st in [NodeState::DeployStart, NodeState::Deploying] {
            let s = script(&ScriptInput { arch: Arch::Aarch64, ..input(Some(st)) });
            assert!(
                s.contains(
                    "/mgmt/aarch64/vmlinuz initrd=initrd.img console=ttyAMA0 quiet devlab.mode=install devlab.api="
                ),
                "{s}"
            );
            assert!(s.contains("(profile debian)"), "{s}");
            assert!(!s.contains("register"), "{s}");
        }
    }

    #[test]
    fn installed_nodes_leave_ipxe_for_the_disk() {
        let s = script(&input(Some(NodeState::Installed)));
        assert!(s.starts_with("#!ipxe\n# devlab-provision: node"), "{s}");
        assert!(s.ends_with("\nexit\n"), "{s}");
        assert!(!s.contains("kernel"), "{s}");
    }

    #[test]
    fn failed_nodes_boot_nothing_and_ask_again() {
        let s = script(&ScriptInput {
            last_message: "dd: /dev/vda: I/O error ${evil}\nkernel http://x",
            ..input(Some(NodeState::UnrecoverableError))
        });
        assert!(!s.contains("\nkernel"), "no boot: {s}");
        assert!(!s.contains("\nexit"), "no disk boot: {s}");
        assert!(!s.contains("shell"), "{s}");
        assert!(s.contains("echo devlab: node 4c4c4544-0042-3010-8052-b4c04f4e3732: UNRECOVERABLE_ERROR: dd: /dev/vda: I/O error __evil__kernel http://x\n"), "{s}");
        assert!(s.contains("\nprompt --timeout 60000 "), "{s}");
        assert!(
            s.ends_with(&format!("\nchain --replace --autofree http://10.0.2.2:8080/ipxe/{U}?arch=${{buildarch}}\n"))
        );
        assert_eq!(s.matches("${").count(), 1, "only the script's own ${{buildarch}}: {s}");
    }
}
