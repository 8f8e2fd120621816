//! Device profiles end to end, on a team-style copy of devlab's base image
//! (compressed, in a folder of its own, named by a profile): it boots
//! through an overlay, the serial shell and SSH both log in, facts are read
//! through the profile, `run.json` names the image's SHA-256, and the
//! user's files are byte-identical afterwards. Mistakes in a profile are
//! input errors (exit 2) naming the profile's line and field before
//! anything boots; a device that never gets `ready` fails (exit 1) naming
//! the fact to look at. These boot QEMU.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn devlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_devlab"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sha256(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// A product folder: the base image of each arch as `product-<arch>.img.gz`,
/// its SSH key, and `device.toml` (`extra` appended to its `[facts]`).
fn product(dir: &Path, facts: &str) -> PathBuf {
    let recipe = root().join("images/recipes/base.toml");
    for arch in devlab_images::Arch::ALL {
        let built = devlab_images::locate(&recipe, arch).expect("the base image is built (cargo xtask images)");
        std::fs::copy(built.disk.with_extension("raw.gz"), dir.join(format!("product-{arch}.img.gz"))).unwrap();
        std::fs::copy(&built.ssh_key, dir.join(format!("key-{arch}"))).unwrap();
    }
    // Every byte value, and more than one base64 line of the serial shell.
    let blob: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(dir.join("blob.bin"), blob).unwrap();
    let profile = dir.join("device.toml");
    let text = "[device]\nname = \"product\"\narches = [\"x86_64\", \"aarch64\"]\nimage = \"product-{arch}.img.gz\"\n\
        \n[login]\ndefault = \"serial\"\n[login.ssh]\nkey = \"key-{arch}\"\n\
        [login.serial]\nlogin_prompt = 'login: $'\nshell_prompt = '# $'\n\
        \n[facts]\nslot = { command = \"cat /proc/cmdline\", match = 'devlab\\.slot=(?<slot>\\S+)' }\n"
        .to_string()
        + facts
        + "\n[[marker]]\nmatch = 'devlab-health: committed slot (?<slot>\\w)'\nevent = \"committed\"\n";
    std::fs::write(&profile, text).unwrap();
    profile
}

fn scenario(dir: &Path, boards: &str, steps: &str) -> PathBuf {
    let p = dir.join("scenario.toml");
    let text = "[scenario]\nname = \"product-smoke\"\nboards = [".to_string()
        + boards
        + "]\ndevice = \"device.toml\"\ntimeout = \"3m\"\n"
        + steps;
    std::fs::write(&p, text).unwrap();
    p
}

const SMOKE: &str = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n\
    [[step]]\naction = \"login\"\n\
    [[step]]\naction = \"ssh\"\ncommand = \"uname -m; echo \\\"it's\\\"; exit 3\"\nexpect_status = 3\nexpect_stdout = \"^{arch}\\nit's$\"\n\
    [[step]]\naction = \"assert_slot\"\nslot = \"A\"\n\
    [[step]]\naction = \"assert_version\"\nversion = \"1\"\n\
    [[step]]\naction = \"upload\"\nfrom = \"blob.bin\"\nto = \"/run/blob.bin\"\nmode = 0o600\n\
    [[step]]\naction = \"ssh\"\ncommand = \"stat -c %a /run/blob.bin\"\nexpect_stdout = \"^600$\"\n\
    [[step]]\naction = \"download\"\nfrom = \"/run/blob.bin\"\nto = \"blob-back.bin\"\n\
    [[step]]\naction = \"login\"\nvia = \"ssh\"\n\
    [[step]]\naction = \"ssh\"\nvia = \"ssh\"\ncommand = \"test -e /etc/devlab\"\n\
    [[step]]\naction = \"assert_env\"\nvars = { BOOT_ORDER = \"A B\" }\n\
    [[step]]\naction = \"ssh\"\ncommand = \"echo writing 10%; echo writing 50%; sleep 60\"\npower_cut_on_output = '(?m)^writing 50%$'\n\
    [[step]]\naction = \"power_on\"\n[[step]]\naction = \"login\"\n\
    [[step]]\naction = \"ssh\"\ncommand = \"echo cut-''here; sleep 60\"\npower_cut_at = 'cut-here'\n";

fn run(dir: &Path, scenario: &Path) -> std::process::Output {
    devlab()
        .args(["run", scenario.to_str().unwrap(), "--no-snapshots", "--report-dir"])
        .arg(dir.join("reports"))
        .env("DEVLAB_RUNS", dir.join("runs"))
        .output()
        .unwrap()
}

fn run_json(dir: &Path) -> serde_json::Value {
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    serde_json::from_str(&std::fs::read_to_string(runs[0].join("run.json")).unwrap()).unwrap()
}

#[test]
fn a_teams_compressed_image_boots_over_an_overlay_with_serial_and_ssh_logins() {
    let d = tempfile::tempdir().unwrap();
    product(d.path(), "ready = { console = 'devlab-rc: ready' }\n");
    let files: Vec<PathBuf> =
        ["product-x86_64.img.gz", "product-aarch64.img.gz", "device.toml"].iter().map(|f| d.path().join(f)).collect();
    let before: Vec<String> = files.iter().map(|f| sha256(f)).collect();
    let blob = std::fs::read(d.path().join("blob.bin")).unwrap();
    let s = scenario(d.path(), "\"qemu-aarch64\"", SMOKE);
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rec = run_json(d.path());
    assert_eq!(rec["device"]["sha256"], before[1], "run.json names the image's hash: {rec}");
    assert_eq!(rec["device"]["partition_table"], "gpt");
    let after: Vec<String> = files.iter().map(|f| sha256(f)).collect();
    assert_eq!(before, after, "the user's files are never written");
    // The timeline holds the device's own marker, its facts and both logins.
    let run_dir = std::fs::read_dir(d.path().join("runs")).unwrap().flatten().next().unwrap().path();
    assert_eq!(std::fs::read(run_dir.join("blob-back.bin")).unwrap(), blob, "a round trip over the serial shell");
    let timeline = std::fs::read_to_string(run_dir.join("timeline.json")).unwrap();
    // Both power cuts ran their command over the serial shell (the default).
    assert_eq!(timeline.matches(r#""event": "power_cut""#).count(), 2, "{timeline}");
    assert_eq!(timeline.matches(r#""via": "ssh""#).count(), 1, "one SSH login: {timeline}");
    for want in [r#""name": "committed""#, r#""slot": "A""#, r#""via": "serial""#, r#""via": "ssh""#] {
        assert!(timeline.contains(want), "timeline lacks {want}: {timeline}");
    }
}

#[test]
fn profile_mistakes_are_bad_input_before_anything_boots() {
    let d = tempfile::tempdir().unwrap();
    let profile = product(d.path(), "ready = { console = 'devlab-rc: ready' }\n");
    let s = scenario(d.path(), "\"qemu-x86_64\"", SMOKE);
    let cases: [(&str, &str, &str); 3] = [
        ("product-{arch}.img.gz", "missing-{arch}.img", "device.toml:4:9: field `image`: "),
        ("'devlab\\.slot=(?<slot>\\S+)'", "'devlab\\.slot=(?<slot>\\S+'", "device.toml:15:49: field `slot`: "),
        ("key = \"key-{arch}\"", "key = \"nokey-{arch}\"", "device.toml:9:7: field `key`: "),
    ];
    let good = std::fs::read_to_string(&profile).unwrap();
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from}");
        std::fs::write(&profile, good.replace(from, to)).unwrap();
        let out = run(d.path(), &s);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(want), "{to}: wanted {want:?} in {err}");
        assert!(!d.path().join("runs").exists(), "nothing started for {to}");
    }
    // A file system image (no partition table) is not a disk.
    std::fs::write(d.path().join("fs-x86_64.img"), vec![0u8; 1 << 16]).unwrap();
    std::fs::write(&profile, good.replace("product-{arch}.img.gz", "fs-{arch}.img")).unwrap();
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("field `image`") && err.contains("has no partition table"), "{err}");
    // A checkpoint after a serial login: the shell's login is not saved.
    std::fs::write(&profile, &good).unwrap();
    let steps = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n\
        [[step]]\naction = \"login\"\n[[step]]\naction = \"checkpoint\"\nname = \"in\"\n";
    let s = scenario(d.path(), "\"qemu-x86_64\"", steps);
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "scenario.toml:13:1: field `action`: a checkpoint saves the machine, not the serial shell's login"
        ),
        "{err}"
    );
    assert!(!d.path().join("runs").exists(), "nothing started");
}

#[test]
fn a_device_that_never_gets_ready_fails_naming_the_fact() {
    let d = tempfile::tempdir().unwrap();
    product(d.path(), "ready = { console = 'product is up' }\n");
    let steps = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"boot\"\n\
        [[step]]\naction = \"login\"\ntimeout = \"20s\"\n";
    let s = scenario(d.path(), "\"qemu-aarch64\"", steps);
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the device never showed `ready` (see facts.ready at "), "{err}");
    assert!(err.contains("device.toml:16"), "{err}");
    assert!(err.contains("devlab-rc: ready"), "the last console lines are shown: {err}");
}

/// aarch64: the device's U-Boot environment in the board's second flash
/// bank (`[firmware] env_flash`). U-Boot loads it, and its `saveenv` goes
/// to the run's overlay: the next power-on in the run sees the saved value,
/// and the team's file is unchanged.
#[test]
fn a_devices_env_flash_is_loaded_and_saved_to_an_overlay() {
    let d = tempfile::tempdir().unwrap();
    let profile = product(d.path(), "ready = { console = 'devlab-rc: ready' }\n");
    let text = std::fs::read_to_string(&profile).unwrap().replace("[\"x86_64\", \"aarch64\"]", "[\"aarch64\"]")
        + "\n[firmware]\nenv_flash = \"env.img\"\n";
    std::fs::write(&profile, text).unwrap();
    let vars = "bootdelay=0\nboots=1\n\
        bootcmd=echo team-env boots=${boots}; setexpr boots ${boots} + 1; saveenv; echo team-env-saved\n";
    std::fs::write(d.path().join("env.txt"), vars).unwrap();
    let made = Command::new("mkenvimage")
        .args(["-s", "0x40000", "-o"])
        .arg(d.path().join("env.img"))
        .arg(d.path().join("env.txt"))
        .status()
        .expect("mkenvimage (u-boot-tools)");
    assert!(made.success());
    let before = sha256(&d.path().join("env.img"));
    let steps = "[[step]]\naction = \"power_on\"\n\
        [[step]]\naction = \"expect\"\npattern = 'team-env boots=1'\n\
        [[step]]\naction = \"expect\"\npattern = 'team-env-saved'\n\
        [[step]]\naction = \"power_cut\"\n[[step]]\naction = \"power_on\"\n\
        [[step]]\naction = \"expect\"\npattern = 'team-env boots=2'\n";
    let s = scenario(d.path(), "\"qemu-aarch64\"", steps);
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(sha256(&d.path().join("env.img")), before, "the team's env image is never written");
    let runs: Vec<PathBuf> = std::fs::read_dir(d.path().join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    let argv = std::fs::read_to_string(runs[0].join("qemu.argv.json")).unwrap();
    assert!(argv.contains("if=pflash,unit=1,format=qcow2"), "{argv}");

    // x86_64 has no environment flash: the profile says so, at the field.
    let text = std::fs::read_to_string(&profile).unwrap().replace("[\"aarch64\"]", "[\"x86_64\", \"aarch64\"]");
    std::fs::write(&profile, text).unwrap();
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("field `env_flash`"), "{err}");
}

/// A team-style OSTree product on x86_64: devlab's OSTree disk as the
/// team's image, and the team's own archive repo (made with the `ostree`
/// CLI from two of devlab's commits: release 2 on `team/stable`, a release
/// that panics on `team/broken`) served as it is. The device's own commands
/// pull and deploy; the outcome is read through `ostree admin status` by
/// version and the profile's facts; the rollback is the device's boot
/// script's (bootcount past bootlimit, altbootcmd) and shows on the
/// timeline through the profile's markers.
#[test]
fn a_teams_ostree_repo_is_pulled_and_a_broken_release_rolls_back_through_the_boot_script() {
    let d = tempfile::tempdir().unwrap();
    let arch = devlab_images::Arch::X86_64;
    let built = |name: &str| {
        devlab_images::locate(&root().join(format!("images/recipes/{name}.toml")), arch)
            .expect("the OSTree images are built (cargo xtask images)")
    };
    let (os, good, broken) = (built("ostree"), built("ostree-v2"), built("ostree-v2-panic"));
    let commit = |b: &devlab_images::BuiltImage| b.manifest.ostree.as_ref().unwrap().commit.clone();
    let repo = d.path().join("repo-x86_64");
    let ostree = |args: &[&str]| {
        let out = Command::new("ostree").arg(format!("--repo={}", repo.display())).args(args).output().unwrap();
        assert!(out.status.success(), "ostree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ostree(&["init", "--mode=archive-z2"]);
    let devlab_repo = os.manifest.ostree.as_ref().unwrap().repo.to_string_lossy().into_owned();
    ostree(&["pull-local", &devlab_repo, &commit(&good), &commit(&broken)]);
    ostree(&["refs", "--create=team/stable/x86_64", &commit(&good)]);
    ostree(&["refs", "--create=team/broken/x86_64", &commit(&broken)]);
    std::fs::copy(&os.ssh_key, d.path().join("key-x86_64")).unwrap();
    let profile = format!(
        "[device]\nname = \"ostree-product\"\narches = [\"x86_64\"]\nimage = \"{}\"\n\
         \n[login.ssh]\nkey = \"key-{{arch}}\"\n\
         \n[facts]\nready = {{ console = 'devlab-health: (ok|kept rollback)' }}\n\
         \n[update]\ninstall = \"ostree remote add --force --no-gpg-verify lab {{url}} && ostree admin switch lab:{{ref}} \
           && fw_setenv upgrade_available 1 && fw_setenv bootcount 0 && fw_setenv rollback 0\"\n\
         artifacts = {{ good = {{ ostree_repo = \"repo-{{arch}}\", ref = \"team/stable/{{arch}}\" }}, \
           broken = {{ ostree_repo = \"repo-{{arch}}\", ref = \"team/broken/{{arch}}\" }} }}\n\
         \n[markers]\ninclude = [\"uboot\"]\n\
         [[marker]]\nmatch = 'devlab-boot: bootcount (?<count>\\d+) > bootlimit (?<limit>\\d+), altbootcmd'\nevent = \"altbootcmd\"\n\
         [[marker]]\nmatch = 'devlab-boot: ostree rollback deployment'\nevent = \"rollback_deployment\"\n",
        os.disk.display()
    );
    std::fs::write(d.path().join("device.toml"), profile).unwrap();
    let mut repo_files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![repo.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path())
            } else {
                repo_files.push(e.path())
            }
        }
    }
    repo_files.sort();
    let hashes = |files: &[PathBuf]| files.iter().map(|f| sha256(f)).collect::<Vec<_>>();
    let before = hashes(&repo_files);
    let steps = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"login\"\n\
        [[step]]\naction = \"assert_ostree\"\ndeployments = [{ version = \"1\", state = \"booted\" }]\n\
        [[step]]\naction = \"ssh\"\ncommand = \"mkdir -p /var/lib/team && echo kept > /var/lib/team/data\"\n\
        [[step]]\naction = \"serve_artifact\"\nartifact = \"broken\"\n\
        [[step]]\naction = \"install\"\nartifact = \"broken\"\ntimeout = \"3m\"\n\
        [[step]]\naction = \"assert_ostree\"\ndeployments = [{ version = \"2\", state = \"pending\" }, { version = \"1\", state = \"booted\" }]\n\
        [[step]]\naction = \"reboot\"\n\
        [[step]]\naction = \"login\"\ntimeout = \"5m\"\n\
        [[step]]\naction = \"assert_version\"\nversion = \"1\"\n\
        [[step]]\naction = \"assert_ostree\"\ndeployments = [{ version = \"2\", state = \"pending\" }, { version = \"1\", state = \"booted\" }]\n\
        [[step]]\naction = \"ssh\"\ncommand = \"ostree admin undeploy 0\"\ntimeout = \"60s\"\n\
        [[step]]\naction = \"serve_artifact\"\nartifact = \"good\"\n\
        [[step]]\naction = \"http_fault\"\nfault = { kind = \"corrupt\", bytes = 16 }\n\
        [[step]]\naction = \"install\"\nartifact = \"good\"\nexpect_status = 1\ntimeout = \"3m\"\n\
        [[step]]\naction = \"install\"\nartifact = \"good\"\ntimeout = \"3m\"\n\
        [[step]]\naction = \"reboot\"\n\
        [[step]]\naction = \"login\"\ntimeout = \"3m\"\n\
        [[step]]\naction = \"assert_version\"\nversion = \"2\"\n\
        [[step]]\naction = \"assert_ostree\"\ndeployments = [{ version = \"2\", state = \"booted\" }, { version = \"1\", state = \"rollback\" }]\n\
        [[step]]\naction = \"assert_file\"\npath = \"/var/lib/team/data\"\nequals = \"kept\\n\"\n";
    let s = scenario(d.path(), "\"qemu-x86_64\"", steps);
    let text = std::fs::read_to_string(&s).unwrap();
    // The broken release panics on purpose.
    let text = text.replacen("timeout = \"3m\"", "timeout = \"12m\"\nbad_patterns = [\"Unknown command\"]", 1);
    std::fs::write(&s, text).unwrap();
    let out = run(d.path(), &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(before, hashes(&repo_files), "the team's repo is never written");
    let run_dir = std::fs::read_dir(d.path().join("runs")).unwrap().flatten().next().unwrap().path();
    let timeline = std::fs::read_to_string(run_dir.join("timeline.json")).unwrap();
    for want in [r#""name": "altbootcmd""#, r#""name": "rollback_deployment""#, r#""ostree_ref": "team/stable/x86_64""#]
    {
        assert!(timeline.contains(want), "timeline lacks {want}: {timeline}");
    }
    let log = std::fs::read_to_string(run_dir.join("http.log")).unwrap_or_default();
    assert!(log.contains("/files/x86_64/good/objects/"), "the device pulled the team's repo: {log}");
}
