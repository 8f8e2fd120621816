//! The `devlab-provision` binary refuses bad profiles before it serves:
//! exit 2, and the message names the file, line and field.

use std::process::Command;

const GOOD: &str = "kernel = \"k/vmlinuz\"\ninitrd = \"k/initrd.img\"\ncmdline = \"console=ttyS0\"\n\
                    image = \"images/x.img.gz\"\nimage_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
                    install_script = \"true\"\n";

/// Run `serve` on a profile folder holding `x.toml` = `profile` (and the
/// files a good profile names); return the exit code and stderr. It listens
/// on an address no host has (TEST-NET-1), so a profile wrongly accepted
/// ends the run with the listen error (69), not with a server that never
/// stops.
fn serve(profile: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(profiles.join("k")).unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::write(profiles.join("k").join(f), b"x").unwrap();
    }
    std::fs::write(profiles.join("x.toml"), profile).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_devlab-provision"))
        .args(["serve", "--listen", "192.0.2.1:1", "--db"])
        .arg(dir.path().join("db.sqlite"))
        .arg("--profiles")
        .arg(&profiles)
        .arg("--boot-dir")
        .arg(dir.path().join("boot"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&*dir.path().to_string_lossy(), "[dir]");
    (out.status.code(), stderr)
}

#[test]
fn a_profile_naming_a_missing_kernel_is_refused_with_its_line_and_field() {
    let (code, err) = serve(&GOOD.replace("k/vmlinuz", "k/vmlinuz-6.1"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("[dir]/profiles/x.toml:1:10: field `kernel`: kernel file `k/vmlinuz-6.1` does not exist"),
        "{err}"
    );
}

#[test]
fn a_malformed_profile_is_refused_with_its_line_and_field() {
    // A wrong type: the span of the value, and the key it belongs to.
    let (code, err) = serve(&GOOD.replace("cmdline = \"console=ttyS0\"", "cmdline = 3"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("[dir]/profiles/x.toml:3:") && err.contains("cmdline"), "{err}");
    // A bad checksum.
    let (code, err) = serve(&GOOD.replace("0000000000000000", "zz"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("[dir]/profiles/x.toml:5:") && err.contains("field `image_sha256`"), "{err}");
    // A field the format does not have.
    let (code, err) = serve(&format!("{GOOD}kernal = \"k/vmlinuz\"\n"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("[dir]/profiles/x.toml:7:") && err.contains("kernal"), "{err}");
}

#[test]
fn a_good_profile_gets_as_far_as_listening() {
    let (code, err) = serve(GOOD);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.1:1"), "{err}");
}
