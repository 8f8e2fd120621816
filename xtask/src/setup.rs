//! Host set-up, idempotent: adds Debian's bookworm-backports suite (reusing
//! the URI of the machine's existing bookworm sources), enables the arm64
//! foreign architecture, and installs the host packages with
//! `-t bookworm-backports`. When everything is already there it only reads
//! dpkg's database and says that nothing changed.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Host packages: (package, minimum version or "").
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "1:10.0"),
    ("qemu-system-arm", "1:10.0"),
    ("qemu-system-data", "1:10.0"),
    ("qemu-utils", "1:10.0"),
    ("u-boot-qemu", ""),
    ("ipxe-qemu", ""),
    ("u-boot-tools", ""),
    ("gdisk", ""),
    ("mtools", ""),
    ("dosfstools", ""),
    ("e2fsprogs", "1.47.1"),
    ("mmdebstrap", ""),
    ("uidmap", ""),
    ("busybox-static", ""),
    ("dropbear-bin", ""),
    ("openssh-client", ""),
    // The harness encrypts releases with `openssl enc` (the guest decrypts).
    ("openssl", ""),
    ("ostree", ""),
    ("rauc", ""),
    ("squashfs-tools", ""),
    ("dnsmasq-base", ""),
    ("cpio", ""),
    // The x86 disks' legacy BIOS boot path (SeaBIOS after a PXE install):
    // the mtools-based installer and the GPT MBR code.
    ("syslinux", ""),
    ("syslinux-common", ""),
    // SeaBIOS for the PXE board (its iPXE ROM comes from ipxe-qemu).
    ("seabios", ""),
    ("kmod", ""),
    ("socat", ""),
    // External boards and examples/standin-board (a QEMU board run as if it
    // were hardware): its power switch is pdudaemon (localcmdline driver,
    // HTTP API), its console ser2net (4.x, YAML) on a pty, and it is flashed
    // with `bmaptool copy`; strace proves (harness/tests/standin.rs) that
    // devlab itself starts no QEMU for it.
    ("pdudaemon", ""),
    ("ser2net", ""),
    ("bmap-tools", ""),
    ("strace", ""),
    ("xz-utils", ""),
    ("zstd", ""),
    // x86_64 kernels re-wrapped with an LZ4 payload (images/src/rewrap.rs):
    // arch/x86/boot of Kbuild runs from Debian's linux-source package.
    ("lz4", ""),
    ("make", ""),
    ("gcc", ""),
    ("flex", ""),
    ("bison", ""),
    ("bc", ""),
    // Reboot coordination for fleets: FleetLock on a real etcd.
    ("etcd-server", ""),
    // examples/debian-rauc, a product built the way a team builds one: a
    // full arm64 mmdebstrap runs its maintainer scripts under qemu-user
    // (registered with binfmt_misc below), and its build is Python.
    ("qemu-user-static", "1:10.0"),
    ("arch-test", ""),
    ("python3", ""),
    // Its factory provisioning: Debian's own netboot installer, preseeded,
    // booted by the PXE boards as the device's [netboot] kernel.
    ("debian-installer-12-netboot-amd64", ""),
    ("debian-installer-12-netboot-arm64", ""),
    // Build dependencies of the harness (ssh2 → libssh2 → OpenSSL).
    ("libssl-dev", ""),
    ("pkg-config", ""),
];

const SOURCES_FILE: &str = "/etc/apt/sources.list.d/devlab-backports.sources";

pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut changed = Vec::new();
    let mut need_update = false;
    let root = nix_is_root();

    if !has_backports()? {
        let (uri, signed_by) = bookworm_source()?;
        let body = format!(
            "# Added by `cargo xtask setup` (devlab): QEMU 10 and e2fsprogs >= 1.47.1 come from here.\n\
             Types: deb\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\n{}",
            signed_by.map(|s| format!("Signed-By: {s}\n")).unwrap_or_default()
        );
        require_root(root, "add the bookworm-backports apt source")?;
        std::fs::write(SOURCES_FILE, body).with_context(|| format!("writing {SOURCES_FILE}"))?;
        changed.push(format!("added bookworm-backports ({uri}) in {SOURCES_FILE}"));
        need_update = true;
    }
    let foreign = output("dpkg", &["--print-foreign-architectures"])?;
    if !foreign.split_whitespace().any(|a| a == "arm64") {
        require_root(root, "enable the arm64 foreign architecture")?;
        run_cmd("dpkg", &["--add-architecture", "arm64"])?;
        changed.push("enabled the arm64 foreign architecture".into());
        need_update = true;
    }
    let missing = missing_packages()?;
    if !missing.is_empty() || need_update || !arm64_lists_present() {
        require_root(root, &format!("install {}", missing.join(" ")))?;
        run_cmd("apt-get", &["update", "-q"])?;
        changed.push("apt-get update".into());
    }
    if !missing.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends", "-t", "bookworm-backports"];
        args.extend(missing.iter().map(String::as_str));
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get install")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        changed.push(format!("installed {}", missing.join(" ")));
        let still = missing_packages()?;
        if !still.is_empty() {
            bail!("still missing or too old after install: {}", still.join(", "));
        }
    }
    if let Some(done) = register_binfmt(root)? {
        changed.push(done);
    }
    if changed.is_empty() {
        eprintln!("setup: host already set up, nothing changed ({:.2}s)", started.elapsed().as_secs_f64());
    } else {
        for c in &changed {
            eprintln!("setup: {c}");
        }
        eprintln!("setup: done in {:.1}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// binfmt_misc must run arm64 binaries through qemu-user for the example's
/// arm64 bootstrap. Debian's qemu-user-binfmt registers them through
/// systemd-binfmt, which nothing runs in a container: mount binfmt_misc if
/// needed and write the packaged rule into `register`.
fn register_binfmt(root: bool) -> Result<Option<String>> {
    let dir = std::path::Path::new("/proc/sys/fs/binfmt_misc");
    if dir.join("qemu-aarch64").exists() {
        return Ok(None);
    }
    require_root(root, "register qemu-aarch64 with binfmt_misc")?;
    if !dir.join("register").exists() {
        run_cmd("mount", &["-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])?;
    }
    let rule_file = "/usr/lib/binfmt.d/qemu-aarch64.conf";
    let rule = std::fs::read_to_string(rule_file).with_context(|| format!("reading {rule_file} (qemu-user-binfmt)"))?;
    std::fs::write(dir.join("register"), rule.trim())
        .with_context(|| format!("registering {rule_file} with binfmt_misc"))?;
    Ok(Some("registered qemu-aarch64 with binfmt_misc".into()))
}

fn nix_is_root() -> bool {
    output("id", &["-u"]).map(|s| s.trim() == "0").unwrap_or(false)
}

fn require_root(root: bool, what: &str) -> Result<()> {
    if !root {
        bail!("setup needs root to {what}: run `sudo -E cargo xtask setup`");
    }
    Ok(())
}

fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_cmd(cmd: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Every apt source file's text.
fn sources() -> Vec<(String, String)> {
    let mut files = vec!["/etc/apt/sources.list".to_string()];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            let p = e.path();
            let name = p.to_string_lossy().into_owned();
            if name.ends_with(".list") || name.ends_with(".sources") {
                files.push(name);
            }
        }
    }
    files.into_iter().filter_map(|f| std::fs::read_to_string(&f).ok().map(|t| (f, t))).collect()
}

fn has_backports() -> Result<bool> {
    Ok(sources().iter().any(|(_, text)| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.split_whitespace().any(|w| w == "bookworm-backports"))
    }))
}

/// The URI (and Signed-By) of the existing Debian bookworm source.
fn bookworm_source() -> Result<(String, Option<String>)> {
    for (_, text) in sources() {
        // deb822 stanzas.
        for stanza in text.split("\n\n") {
            let field = |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
            let suites = field("Suites:").unwrap_or_default();
            if suites.split_whitespace().any(|s| s == "bookworm") {
                if let Some(uri) = field("URIs:") {
                    let uri = uri.split_whitespace().next().unwrap_or_default().to_string();
                    return Ok((uri, field("Signed-By:")));
                }
            }
        }
        // One-line format: deb [opts] URI bookworm main
        for line in text.lines().filter(|l| l.trim_start().starts_with("deb ")) {
            let words: Vec<&str> =
                line.split_whitespace().filter(|w| !w.starts_with('[') && !w.ends_with(']')).collect();
            if words.len() >= 3 && words[2] == "bookworm" {
                return Ok((words[1].to_string(), None));
            }
        }
    }
    bail!("no Debian bookworm apt source found to reuse for bookworm-backports (looked in /etc/apt/sources.list and sources.list.d)")
}

/// Has apt fetched the arm64 package lists (for `apt-get download PKG:arm64`)?
/// apt may keep them compressed (`…_Packages.lz4`).
fn arm64_lists_present() -> bool {
    let dir = Path::new("/var/lib/apt/lists");
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.contains("_dists_bookworm_main_binary-arm64_Packages")
    })
}

/// Packages not installed, or older than required.
fn missing_packages() -> Result<Vec<String>> {
    let names: Vec<&str> = PACKAGES.iter().map(|(p, _)| *p).collect();
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev} ${Version}\n"])
        .args(&names)
        .output()
        .context("running dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut missing = Vec::new();
    for (pkg, min) in PACKAGES {
        let installed = text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == *pkg).then_some(())?;
            let status = w.next()?;
            let version = w.next()?;
            status.starts_with("ii").then(|| version.to_string())
        });
        match installed {
            None => missing.push(pkg.to_string()),
            Some(v) if !min.is_empty() && !version_at_least(&v, min) => missing.push(pkg.to_string()),
            Some(_) => {}
        }
    }
    Ok(missing)
}

fn version_at_least(have: &str, min: &str) -> bool {
    Command::new("dpkg").args(["--compare-versions", have, "ge", min]).status().map(|s| s.success()).unwrap_or(false)
}
