//! Board validation for hardware teams: `devlab board new` writes a profile
//! from an existing one, `devlab board check` asks this QEMU whether the
//! profile can work here — firmware present, machine type, CPU model and
//! devices known (`-machine help`, `-cpu help`, `-device help`). It spawns
//! QEMU only to ask for those lists; it never boots anything.

use crate::board::Board;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One line of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

fn qemu_list(binary: &str, what: &str) -> Result<String, String> {
    let out = Command::new(binary)
        .args([what, "help"])
        .output()
        .map_err(|e| format!("{binary}: {e} (install it with cargo xtask setup)"))?;
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Is `name` a first word of a line (machine and CPU lists), or a quoted
/// name (`name "virtio-blk-pci", bus PCI`) in QEMU's help output?
fn listed(help: &str, name: &str) -> bool {
    help.lines().any(|l| {
        let t = l.trim();
        t.split_whitespace().next() == Some(name) || t.contains(&format!("\"{name}\""))
    })
}

fn listing(ok: bool, binary: &str, what: &str) -> String {
    format!("{} `{binary} {what} help`", if ok { "listed by" } else { "NOT listed by" })
}

/// Validate `board` against the QEMU on this machine.
pub fn check(board: &Board) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut add = |what: String, ok: bool, detail: String| checks.push(Check { what, ok, detail });
    add(
        format!("firmware {}", board.firmware.path.display()),
        board.firmware_present(),
        if board.firmware_present() {
            "present".into()
        } else {
            format!("missing: install `{}`", board.firmware.package)
        },
    );
    let binary = board.arch.qemu_binary();
    let lists = ["-machine", "-cpu", "-device"].map(|w| qemu_list(binary, w));
    match &lists[0] {
        Ok(m) => add(
            format!("machine `{}`", board.machine),
            listed(m, &board.machine),
            format!("in `{binary} -machine help`"),
        ),
        Err(e) => add(format!("machine `{}`", board.machine), false, e.clone()),
    }
    let cpu = board.cpu.split(',').next().unwrap_or(&board.cpu);
    match &lists[1] {
        Ok(c) => {
            let ok = listed(c, cpu);
            add(format!("cpu `{cpu}`"), ok, listing(ok, binary, "-cpu"))
        }
        Err(e) => add(format!("cpu `{cpu}`"), false, e.clone()),
    }
    let mut devices = vec![("disk", board.disk.model.clone()), ("nic", board.nic.model.clone())];
    if let Some(w) = &board.watchdog {
        devices.push(("watchdog", w.clone()));
    }
    for (role, model) in devices {
        match &lists[2] {
            Ok(d) => {
                // `e1000,autonegotiation=off`: the device is the part before the first comma.
                let ok = listed(d, model.split(',').next().unwrap_or(&model));
                add(format!("{role} device `{model}`"), ok, listing(ok, binary, "-device"))
            }
            Err(e) => add(format!("{role} device `{model}`"), false, e.clone()),
        }
    }
    checks
}

/// Write a new profile `<dir>/<name>.toml` from the profile `from`
/// (name and description replaced, everything else to be edited).
pub fn new_profile(dir: &Path, name: &str, from: &Board) -> Result<PathBuf, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("`{name}` is not a board name (letters, digits, - and _)"));
    }
    let path = dir.join(format!("{name}.toml"));
    if path.exists() {
        return Err(format!("{} already exists", path.display()));
    }
    let text = std::fs::read_to_string(&from.path).map_err(|e| format!("{}: {e}", from.path.display()))?;
    let mut out = format!(
        "# Board profile `{name}`, started from `{}`: edit machine, cpu, memory,\n# firmware, console, disk, nic and smbios, then `devlab board check {name}`.\n",
        from.name
    );
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("name =") {
            out.push_str(&format!("name = \"{name}\"\n"));
        } else if t.starts_with("description =") {
            out.push_str(&format!("description = \"{name} (from {})\"\n", from.name));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_listings_are_matched_by_name() {
        let machines =
            "Supported machines are:\nvirt                 QEMU 10.0 ARM Virtual Machine (alias of virt-10.0)\n";
        assert!(listed(machines, "virt"));
        assert!(!listed(machines, "vir"));
        let devices = "name \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\"\nname \"i6300esb\", bus PCI\n";
        assert!(listed(devices, "virtio-blk-pci") && listed(devices, "i6300esb"));
        assert!(!listed(devices, "virtio-blk-p"));
    }

    #[test]
    fn shipped_boards_check_out_with_this_qemu() {
        for name in ["qemu-x86_64", "qemu-aarch64"] {
            let b = crate::board::find(name).unwrap();
            if which::which(b.arch.qemu_binary()).is_err() {
                return;
            }
            let checks = check(&b);
            assert!(checks.iter().all(|c| c.ok), "{name}: {checks:?}");
            assert_eq!(checks.len(), 6, "firmware, machine, cpu, disk, nic, watchdog");
        }
    }

    #[test]
    fn a_new_profile_parses_and_a_bad_model_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let from = crate::board::find("qemu-aarch64").unwrap();
        let p = new_profile(d.path(), "my-board", &from).unwrap();
        let b = Board::load(&p).unwrap();
        assert_eq!(b.name, "my-board");
        assert!(new_profile(d.path(), "my-board", &from).unwrap_err().contains("already exists"));
        assert!(new_profile(d.path(), "bad name", &from).is_err());
        if which::which(b.arch.qemu_binary()).is_ok() {
            let text = std::fs::read_to_string(&p).unwrap().replace("virtio-net-pci", "no-such-nic");
            std::fs::write(&p, text).unwrap();
            let checks = check(&Board::load(&p).unwrap());
            let nic = checks.iter().find(|c| c.what.starts_with("nic")).unwrap();
            assert!(!nic.ok, "{nic:?}");
            // Device properties after the model are QEMU's business; the model is checked.
            let text = std::fs::read_to_string(&p).unwrap().replace("no-such-nic", "virtio-net-pci,disable-legacy=on");
            std::fs::write(&p, text).unwrap();
            let checks = check(&Board::load(&p).unwrap());
            let nic = checks.iter().find(|c| c.what.starts_with("nic")).unwrap();
            assert!(nic.ok, "{nic:?}");
        }
    }
}
