//! Machines kept running after a failure (`--keep-on-failure`), for a
//! person to inspect: a registry file per kept machine, and the client side
//! of `devlab ps`, `attach`, `ssh` and `stop`.
//!
//! Invariants: the `devlab run` process that kept a machine (the keeper)
//! owns it; the registry entry lives exactly as long as the keeper holds
//! the machine (written when it is kept, removed when the keeper lets go,
//! and entries whose keeper died are swept by `list`). `stop` never kills
//! QEMU itself: it interrupts the keeper, whose teardown ladder ends the
//! machine, and waits for the keeper to exit.
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One kept machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Kept {
    /// The run directory's name.
    pub run_id: String,
    pub scenario: String,
    pub board: String,
    pub run_dir: PathBuf,
    /// The `devlab run` process holding the machine.
    pub keeper_pid: u32,
    pub qemu_pid: u32,
    /// The serial console, relayed (`devlab attach`).
    pub attach_sock: PathBuf,
    /// QEMU's human monitor.
    pub monitor_sock: PathBuf,
    /// Host port forwarded to the guest's SSH, once SSH was up.
    pub ssh_port: Option<u16>,
    pub ssh_key: PathBuf,
    /// The failed step.
    pub failed_step: String,
}

/// How many runs in this process hold a kept machine right now. While one
/// does, Ctrl-C (or `devlab stop`'s SIGINT) releases the kept machine
/// instead of interrupting the whole run.
pub static HOLDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many kept machines were released by a Ctrl-C so far. The keeper and
/// the run loop both hear one SIGINT, in either order: the loop ignores a
/// Ctrl-C while a machine is held, or when a keeper has just taken it.
pub static RELEASED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where registry entries live: `$XDG_RUNTIME_DIR/devlab/kept`, else
/// `/tmp/devlab-<uid>/kept`.
pub fn registry_dir() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .map(|p| p.join("devlab"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/devlab-{}", nix::unistd::Uid::current())));
    base.join("kept")
}

/// Removes the registry entry when the keeper lets go of the machine.
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Record `k` in `dir` (written whole: temp file + rename).
pub fn register(dir: &Path, k: &Kept) -> std::io::Result<Registration> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", k.run_id));
    let tmp = dir.join(format!(".{}.tmp", k.run_id));
    std::fs::write(&tmp, serde_json::to_vec_pretty(k).expect("serialises"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Registration { path })
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The kept machines in `dir` whose keeper still runs (stale entries removed).
pub fn list(dir: &Path) -> Vec<Kept> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Kept>(&b).ok()) {
            Some(k) if alive(k.keeper_pid) => out.push(k),
            _ => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    out
}

/// The one kept machine whose run id is `id` or starts with it.
pub fn find(dir: &Path, id: &str) -> Result<Kept, String> {
    let all = list(dir);
    if let Some(k) = all.iter().find(|k| k.run_id == id) {
        return Ok(k.clone());
    }
    let matching: Vec<&Kept> = all.iter().filter(|k| k.run_id.starts_with(id)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] if all.is_empty() => Err(format!("no kept machine `{id}`: none is kept (run with --keep-on-failure)")),
        [] => Err(format!(
            "no kept machine `{id}`; kept: {}",
            all.iter().map(|k| k.run_id.as_str()).collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!(
            "`{id}` matches {} kept machines: {}",
            many.len(),
            many.iter().map(|k| k.run_id.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The `ssh` command line that reaches a kept machine.
pub fn ssh_command(k: &Kept) -> Result<Vec<String>, String> {
    let port = k.ssh_port.ok_or_else(|| format!("{}: SSH never came up in this run; use `devlab attach`", k.run_id))?;
    Ok([
        "ssh",
        "-i",
        &k.ssh_key.to_string_lossy(),
        "-p",
        &port.to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "root@127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
}

/// The lines printed when a machine is kept.
pub fn how_to_reach(k: &Kept) -> String {
    let mut s = format!(
        "machine kept running for inspection: {}\n  devlab attach {}   # serial console (Ctrl-] detaches)\n",
        k.run_id, k.run_id
    );
    if k.ssh_port.is_some() {
        s.push_str(&format!("  devlab ssh {}      # a shell\n", k.run_id));
    }
    s.push_str(&format!("  devlab stop {}     # end it (or Ctrl-C here)\n", k.run_id));
    s.push_str(&format!("  QEMU monitor: socat - UNIX-CONNECT:{}\n", k.monitor_sock.display()));
    s
}

/// Ask the keeper to let go (SIGINT, as Ctrl-C would) and wait for it to
/// exit, which it does after tearing the machine down.
pub fn stop(k: &Kept, timeout: Duration) -> Result<(), String> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, k.keeper_pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(format!("keeper {} of {} is gone", k.keeper_pid, k.run_id));
    }
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(k.keeper_pid as i32), nix::sys::signal::Signal::SIGINT)
        .map_err(|e| format!("cannot signal keeper {}: {e}", k.keeper_pid))?;
    let mut fds = [nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("keeper {} did not exit within {timeout:?}", k.keeper_pid)),
    }
}

/// Restores the terminal mode when attach ends, however it ends.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin().as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// The detach key: Ctrl-].
const DETACH: u8 = 0x1d;

/// An interactive serial console on a kept machine: the last 4 KiB of
/// output, then live; keys go to the guest; Ctrl-] detaches (the machine
/// keeps running).
pub fn attach(k: &Kept) -> Result<(), String> {
    let stream = std::os::unix::net::UnixStream::connect(&k.attach_sock)
        .map_err(|e| format!("cannot reach {} ({}): {e}", k.run_id, k.attach_sock.display()))?;
    eprintln!("attached to {} (Ctrl-] detaches)\r", k.run_id);
    let raw = nix::unistd::isatty(std::io::stdin().as_raw_fd()).unwrap_or(false).then(RawMode::enter).flatten();
    let mut from_guest = stream.try_clone().map_err(|e| e.to_string())?;
    let shutdown = stream.try_clone().map_err(|e| e.to_string())?;
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut to_guest = stream;
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (keys, detach) = match buf[..n].iter().position(|&b| b == DETACH) {
            Some(i) => (&buf[..i], true),
            None => (&buf[..n], false),
        };
        if to_guest.write_all(keys).is_err() || detach {
            break;
        }
    }
    let _ = shutdown.shutdown(std::net::Shutdown::Both);
    let _ = printer.join();
    drop(raw);
    eprintln!("\ndetached from {}; it keeps running", k.run_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: &str, keeper: u32) -> Kept {
        Kept {
            run_id: id.into(),
            scenario: "s".into(),
            board: "b".into(),
            run_dir: "/r".into(),
            keeper_pid: keeper,
            qemu_pid: 1,
            attach_sock: "/s/attach.sock".into(),
            monitor_sock: "/s/monitor.sock".into(),
            ssh_port: Some(2222),
            ssh_key: "/k/id".into(),
            failed_step: "step 3".into(),
        }
    }

    #[test]
    fn registry_lists_live_keepers_and_finds_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let a = register(dir.path(), &kept("boot-smoke-qemu-x86_64-1", me)).unwrap();
        let _b = register(dir.path(), &kept("boot-smoke-qemu-aarch64-2", me)).unwrap();
        // A keeper that no longer exists: swept.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let _c = register(dir.path(), &kept("ab-update-qemu-x86_64-3", dead)).unwrap();
        let ids: Vec<String> = list(dir.path()).into_iter().map(|k| k.run_id).collect();
        assert_eq!(ids, ["boot-smoke-qemu-aarch64-2", "boot-smoke-qemu-x86_64-1"]);
        assert!(!dir.path().join("ab-update-qemu-x86_64-3.json").exists());
        assert_eq!(find(dir.path(), "boot-smoke-qemu-x").unwrap().run_id, "boot-smoke-qemu-x86_64-1");
        assert!(find(dir.path(), "boot-smoke").unwrap_err().contains("matches 2"));
        assert!(find(dir.path(), "nope").unwrap_err().contains("kept: boot-smoke"));
        drop(a);
        assert_eq!(list(dir.path()).len(), 1);
    }

    #[test]
    fn ssh_command_targets_the_forwarded_port() {
        let cmd = ssh_command(&kept("x", 1)).unwrap().join(" ");
        assert!(cmd.starts_with("ssh -i /k/id -p 2222 "), "{cmd}");
        assert!(cmd.ends_with("root@127.0.0.1"), "{cmd}");
        let mut k = kept("x", 1);
        k.ssh_port = None;
        assert!(ssh_command(&k).unwrap_err().contains("devlab attach"));
    }
}
