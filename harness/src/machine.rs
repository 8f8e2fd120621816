//! The machine: the only module that owns a QEMU child. One `Machine` owns
//! one QEMU process (or holds an external board switched on: see
//! [`crate::external`]; no QEMU, no QMP) and its run directory files (`qemu.cmdline`,
//! `qemu.stderr`, sockets, the qcow2 overlay). QEMU runs in its own process
//! group with `PR_SET_PDEATHSIG`, so a SIGKILLed harness leaves nothing;
//! teardown is a ladder (QMP `quit` → SIGTERM to the group → grace →
//! SIGKILL), idempotent, from `shutdown()`, timeouts, Ctrl-C (the future is
//! dropped) and `Drop` (panics). Exits are awaited on a pidfd, never polled.

use crate::board::{Accel, Board, QemuPaths};
use crate::console::Console;
use crate::error::{Error, Result};
use crate::qmp::{parse_usernet_port, Qmp};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::UnixListener;

/// How long QEMU may take to connect its console and QMP sockets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace after QMP `quit`, and again after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

/// Everything needed to start a machine.
pub struct MachineSpec<'a> {
    pub board: &'a Board,
    pub accel: Accel,
    /// The read-only base disk; the machine boots a qcow2 overlay on it.
    pub base_disk: &'a Path,
    pub run_dir: &'a Path,
    /// Time zero for logs and events; `None` = this spawn. A run that powers
    /// the board on again passes its first power-on, so `serial.log`,
    /// `qmp.jsonl` and the timeline share one clock.
    pub epoch: Option<Instant>,
    /// Bad spots QEMU injects on the disk (blkdebug); empty for a sound disk.
    pub disk_errors: &'a [crate::board::DiskError],
    /// Start from this internal snapshot of the overlay (`-loadvm`).
    pub loadvm: Option<&'a str>,
    /// The user network's TFTP folder (network-booting boards).
    pub tftp: Option<&'a Path>,
    /// See [`QemuPaths::detect_zeroes`].
    pub detect_zeroes: bool,
    /// A lab network: QEMU starts inside its namespace, its NIC on `tap`
    /// (instead of the user network).
    pub lab_net: Option<(&'a crate::labnet::NetnsHandle, &'a str)>,
    /// Faults may change the disk while it runs (see [`crate::board::DISK_NODE`]).
    pub disk_armable: bool,
    /// Its end of a product's private link (see [`crate::product`]).
    pub link: Option<&'a crate::product::LinkEnd>,
}

/// What a task needs to change a running machine's armable disk.
#[derive(Clone)]
pub struct DiskSeam {
    /// Layers added since power-on (see [`crate::board::disk_layer`]).
    pub layers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub detect_zeroes: bool,
    /// The qdev path `qemu-io -d` writes through: the device's block backend.
    pub backend: String,
}

/// A running (or stopped) machine: a QEMU child, or an external board
/// (see [`crate::external`]) switched on through its power switch.
pub struct Machine {
    pub board: Board,
    pub run_dir: PathBuf,
    /// The disk overlay (QEMU); the image flashed to an external board.
    pub overlay: PathBuf,
    pub console: Console,
    /// Shared with tasks that act on the machine on their own (an armed
    /// fault completed the moment it fires). `None` for an external
    /// board: devlab opens no QMP socket for it.
    pub qmp: Option<std::sync::Arc<Qmp>>,
    /// Time zero of this machine's log and event times (see `MachineSpec::epoch`).
    pub t0: Instant,
    /// The armable disk (`None`: the disk is as it was at power-on).
    pub disk: Option<DiskSeam>,
    /// The machine's unix sockets live here, not in the run directory: a
    /// socket path must fit in 108 bytes, and run directories can be deep.
    /// Removed when the machine drops.
    sockets: tempfile::TempDir,
    body: Body,
}

/// What runs the machine.
enum Body {
    Qemu { child: Child, pidfd: AsyncFd<OwnedFd>, exit: Option<ExitStatus> },
    External(ExternalBody),
}

/// An external board while devlab holds it powered on.
struct ExternalBody {
    ext: std::sync::Arc<crate::external::External>,
    /// Turns `true` once the power switch has switched it off.
    off: tokio::sync::watch::Sender<bool>,
    /// A command console's process (killed on drop).
    _console_child: Option<tokio::process::Child>,
}

/// How a task cuts the power of a machine on its own (an armed fault).
#[derive(Clone)]
pub enum Cutter {
    /// SIGKILL to QEMU's process group.
    Qemu(Pid),
    /// The external board's power switch, then `off` set.
    External(std::sync::Arc<crate::external::External>, tokio::sync::watch::Sender<bool>),
}

impl Cutter {
    pub async fn cut(&self) -> std::result::Result<(), String> {
        match self {
            Cutter::Qemu(pgid) => {
                let _ = killpg(*pgid, Signal::SIGKILL);
                Ok(())
            }
            Cutter::External(ext, off) => {
                ext.power(false).await.map_err(|e| e.to_string())?;
                off.send_replace(true);
                Ok(())
            }
        }
    }
}

/// A pidfd for `pid` (readable once it has exited), child or not.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Shell-quote an argument for `qemu.cmdline` (so it can be pasted).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=+,./:@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Create the qcow2 overlay `overlay` on the read-only `base` (raw, or a
/// device's qcow2 image: told by its magic, never guessed by QEMU).
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<()> {
    let qemu_img = crate::disk::tool("qemu-img", "qemu-utils")?;
    let mut magic = [0u8; 4];
    let is_qcow2 = std::fs::File::open(base)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == b"QFI\xfb");
    let format = if is_qcow2 { "qcow2" } else { "raw" };
    crate::disk::run_tool(
        Command::new(qemu_img).args(["create", "-q", "-f", "qcow2", "-F", format, "-b"]).arg(base).arg(overlay),
        &format!("qemu-img create {}", overlay.display()),
    )?;
    Ok(())
}

/// A flash bank of QEMU's `virt` board: what a pflash drive must hold.
pub const ENV_FLASH_BYTES: u64 = 64 << 20;

/// A qcow2 overlay of `size` bytes on the raw `base` (smaller than `size`:
/// the rest reads as zeroes), e.g. a flash bank on a team's env image.
pub fn create_sized_overlay(base: &Path, overlay: &Path, size: u64) -> Result<()> {
    let qemu_img = crate::disk::tool("qemu-img", "qemu-utils")?;
    crate::disk::run_tool(
        Command::new(qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(base)
            .arg(overlay)
            .arg(size.to_string()),
        &format!("qemu-img create {}", overlay.display()),
    )?;
    Ok(())
}

/// The firmware's flash image (a device's U-Boot environment) gets an
/// overlay beside the disk's, made once and kept across power cycles of
/// the run like the disk's.
fn env_flash_overlay(board: &Board, disk_overlay: &Path) -> Result<Option<PathBuf>> {
    let Some(image) = &board.firmware.env_flash else { return Ok(None) };
    let flash = disk_overlay.with_file_name("env-flash.qcow2");
    if !flash.exists() {
        create_sized_overlay(image, &flash, ENV_FLASH_BYTES)?;
    }
    Ok(Some(flash))
}

impl Machine {
    /// Create the overlay, spawn QEMU, and take its console and QMP.
    pub async fn start(spec: MachineSpec<'_>) -> Result<Machine> {
        let run = spec.run_dir;
        let overlay = run.join("disk.qcow2");
        create_overlay(spec.base_disk, &overlay)?;
        Self::start_on(spec, overlay).await
    }

    /// Spawn QEMU on an existing overlay (a reboot after power cut reuses it).
    pub async fn start_on(spec: MachineSpec<'_>, overlay: PathBuf) -> Result<Machine> {
        let board = spec.board;
        board.check_firmware()?;
        let run = spec.run_dir;
        let binary = board.arch.qemu_binary();
        let qemu = which::which(binary).map_err(|_| {
            let pkg = match board.arch {
                devlab_images::Arch::X86_64 => "qemu-system-x86",
                devlab_images::Arch::Aarch64 => "qemu-system-arm",
            };
            Error::infra(format!("{binary} not found: install Debian package {pkg} (cargo xtask setup)"))
        })?;
        let env_flash = env_flash_overlay(board, &overlay)?;
        remove_orphaned_socket_dirs();
        let sockets = tempfile::Builder::new()
            .prefix(&format!("devlab-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::infra(format!("cannot create a socket folder: {e}")))?;
        let console_sock = sockets.path().join("console.sock");
        let qmp_sock = sockets.path().join("qmp.sock");
        let monitor_sock = sockets.path().join("monitor.sock");
        let bind = |p: &Path| {
            UnixListener::bind(p).map_err(|e| Error::infra(format!("cannot listen on {}: {e}", p.display())))
        };
        let console_l = bind(&console_sock)?;
        let qmp_l = bind(&qmp_sock)?;
        let args = board.qemu_args(
            spec.accel,
            &QemuPaths {
                console_sock: &console_sock,
                qmp_sock: &qmp_sock,
                monitor_sock: &monitor_sock,
                disk: &overlay,
                disk_errors: spec.disk_errors,
                loadvm: spec.loadvm,
                env_flash: env_flash.as_deref(),
                tftp: spec.tftp,
                detect_zeroes: spec.detect_zeroes,
                tap: spec.lab_net.map(|(_, tap)| tap),
                disk_armable: spec.disk_armable,
                link: spec.link,
            },
        );
        if let Some(end) = spec.link {
            end.unbind_previous()?;
        }
        let cmdline = std::iter::once(qemu.to_string_lossy().into_owned())
            .chain(args.iter().cloned())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let write = |name: &str, body: String| {
            std::fs::write(run.join(name), body).map_err(|e| Error::infra(format!("cannot write {name}: {e}")))
        };
        write("qemu.cmdline", cmdline + "\n")?;
        let argv: Vec<String> =
            std::iter::once(qemu.to_string_lossy().into_owned()).chain(args.iter().cloned()).collect();
        write("qemu.argv.json", serde_json::to_string(&argv).unwrap_or_default())?;
        let stderr_path = run.join("qemu.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| Error::infra(format!("cannot create {}: {e}", stderr_path.display())))?;

        let mut cmd = Command::new(&qemu);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run
        // between fork and exec.
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The harness may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        if let Some((net, _)) = spec.lab_net {
            net.enter_in_child(&mut cmd).map_err(|e| Error::infra(format!("lab network: {e}")))?;
        }
        let t0 = spec.epoch.unwrap_or_else(Instant::now);
        let child = cmd.spawn().map_err(|e| Error::infra(format!("cannot start {binary}: {e}")))?;
        let _ = std::fs::write(run.join("qemu.pid"), format!("{}\n", child.id()));
        let mut m = MachineHalf { child: Some(child), pidfd: None, exit: None };
        let fd = pidfd_open(m.pid()).map_err(|e| Error::infra(format!("pidfd_open: {e}")))?;
        // SAFETY: the pidfd is owned by the AsyncFd and lives as long as it.
        m.pidfd = Some(
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| Error::infra(format!("registering the pidfd: {e}")))?,
        );

        let accept = async {
            let (c, q) = tokio::join!(console_l.accept(), qmp_l.accept());
            Ok::<_, std::io::Error>((c?.0, q?.0))
        };
        let streams = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, accept) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => { m.kill_now(); return Err(Error::infra(format!("accepting QEMU's sockets: {e}"))) }
                Err(_) => { m.kill_now(); return Err(Error::infra(format!("{binary} did not connect its console within {CONNECT_TIMEOUT:?}; stderr: {}", read_tail(&stderr_path)))) }
            },
            status = m.wait() => {
                return Err(Error::infra(format!(
                    "{binary} exited at start ({}): {}",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    read_tail(&stderr_path)
                )));
            }
        };
        let console = Console::start(streams.0, run.join("serial.log"), t0).map_err(|e| {
            m.kill_now();
            Error::infra(format!("serial.log: {e}"))
        })?;
        let qmp = match Qmp::handshake(streams.1, run.join("qmp.jsonl"), t0).await {
            Ok(q) => q,
            Err(e) => {
                m.kill_now();
                return Err(Error::infra(format!("QMP handshake: {e}; stderr: {}", read_tail(&stderr_path))));
            }
        };
        for s in [&console_sock, &qmp_sock] {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::write(run.join("monitor.path"), format!("{}\n", monitor_sock.display()));
        let (child, pidfd, exit) = m.into_parts();
        Ok(Machine {
            board: board.clone(),
            run_dir: run.to_path_buf(),
            overlay,
            console,
            qmp: Some(std::sync::Arc::new(qmp)),
            t0,
            disk: spec.disk_armable.then(|| DiskSeam {
                layers: Default::default(),
                detect_zeroes: spec.detect_zeroes,
                // A virtio PCI device keeps its block backend on its inner
                // virtio device.
                backend: match board.disk.model.starts_with("virtio") && board.disk.model.ends_with("-pci") {
                    true => format!("{}/virtio-backend", crate::board::DISK_DEVICE),
                    false => crate::board::DISK_DEVICE.to_string(),
                },
            }),
            sockets,
            body: Body::Qemu { child, pidfd, exit },
        })
    }

    /// Power on an external board: open its console line (what it buffered
    /// while nobody read is forgotten), then switch the power on. The
    /// first power-on of a run flashes `image` first (the profile's
    /// `flash`; never written to: the command reads it).
    pub async fn start_external(spec: MachineSpec<'_>, image: &Path, flash: bool) -> Result<Machine> {
        let board = spec.board;
        let ext = std::sync::Arc::new(board.external.clone().expect("an external board"));
        let run = spec.run_dir;
        if flash {
            // Known state first: a board left on by someone must not run
            // while its disk is written.
            ext.power(false).await?;
            ext.flash(image).await?;
        }
        let sockets = tempfile::Builder::new()
            .prefix(&format!("devlab-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::infra(format!("cannot create a socket folder: {e}")))?;
        let (read, write, child) = ext.open_console().await?;
        let t0 = spec.epoch.unwrap_or_else(Instant::now);
        let mut console = Console::start_on(read, write, run.join("serial.log"), t0)
            .map_err(|e| Error::infra(format!("serial.log: {e}")))?;
        console.forget_past();
        ext.power(true).await?;
        // A board that says nothing at all is the lab's problem (power,
        // cable, console server), not the product's.
        let anything = regex::bytes::Regex::new("(?s).").expect("valid");
        if let Err(e) = console.seen_after(&anything, console.origin(), ext.console_timeout).await {
            let _ = ext.power(false).await;
            return Err(Error::infra(format!(
                "board {}: its console ({}) stayed silent for {} after power on ({}): check the power switch and \
                 the console line; {e}",
                board.name,
                ext.console_label(),
                humantime::format_duration(ext.console_timeout),
                ext.power_label(),
            )));
        }
        let (off, _) = tokio::sync::watch::channel(false);
        Ok(Machine {
            board: board.clone(),
            run_dir: run.to_path_buf(),
            overlay: image.to_path_buf(),
            console,
            qmp: None,
            t0,
            disk: None,
            sockets,
            body: Body::External(ExternalBody { ext, off, _console_child: child }),
        })
    }

    /// The QMP events so far (none for an external board).
    pub fn qmp_events(&self) -> Vec<crate::qmp::QmpEvent> {
        self.qmp.as_ref().map(|q| q.events()).unwrap_or_default()
    }

    /// The QMP connection, or why there is none (an external board).
    pub fn qmp(&self) -> Result<&std::sync::Arc<Qmp>> {
        self.qmp.as_ref().ok_or_else(|| {
            Error::infra(format!("board {} is external: devlab has no QMP connection to it", self.board.name))
        })
    }

    /// Path of a unix socket belonging to this machine (`monitor.sock`, …).
    pub fn socket(&self, name: &str) -> PathBuf {
        self.sockets.path().join(name)
    }

    /// QEMU's pid (0 for an external board: no process of devlab's).
    pub fn pid(&self) -> u32 {
        match &self.body {
            Body::Qemu { child, .. } => child.id(),
            Body::External(_) => 0,
        }
    }

    /// Seconds since power-on.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// The host port forwarded to the guest's SSH port, read back from QEMU
    /// (an external board: its profile's).
    pub async fn ssh_port(&self) -> Result<u16> {
        if let Some(ext) = &self.board.external {
            return Ok(ext.ssh.1);
        }
        let text = self.qmp()?.hmp("info usernet").await.map_err(|e| Error::infra(format!("info usernet: {e}")))?;
        parse_usernet_port(&text, 22)
            .ok_or_else(|| Error::infra(format!("no SSH port forward in `info usernet`: {text:?}")))
    }

    /// Has QEMU exited (an external board: been switched off)?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match &mut self.body {
            Body::Qemu { child, exit, .. } => {
                if exit.is_none() {
                    *exit = child.try_wait().ok().flatten();
                }
                *exit
            }
            Body::External(b) => b.off.borrow().then(switched_off),
        }
    }

    /// Wait for QEMU to exit, at most `timeout`. An external board cannot
    /// exit: it is off once the kernel said it powered down (`reboot: Power
    /// down` on the console) and the switch then cut its power, or once
    /// something switched it off.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        match &mut self.body {
            Body::Qemu { child, pidfd, exit } => {
                let mut half = HalfRef { child, pidfd, exit };
                tokio::time::timeout(timeout, half.wait()).await.ok().and_then(|r| r.ok())
            }
            Body::External(b) => {
                let mut off = b.off.subscribe();
                let halted = [regex::bytes::Regex::new(r"reboot: (Power down|System halted)").expect("valid")];
                tokio::select! {
                    _ = off.wait_for(|o| *o) => Some(switched_off()),
                    got = self.console.expect(&halted, timeout) => match got {
                        Ok(_) => {
                            b.ext.power(false).await.ok()?;
                            b.off.send_replace(true);
                            Some(switched_off())
                        }
                        Err(_) => None,
                    },
                }
            }
        }
    }

    /// Cut the power: SIGKILL to QEMU's process group, no flush, no
    /// goodbye; an external board's switch turned off.
    pub async fn power_cut(&mut self) -> Result<ExitStatus> {
        if let Body::External(b) = &self.body {
            b.ext.power(false).await?;
            b.off.send_replace(true);
            return Ok(switched_off());
        }
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
            .await
            .ok_or_else(|| Error::infra(format!("QEMU (pid {}) survived SIGKILL", self.pid())))
    }

    /// What cuts this machine's power from a task of its own.
    pub fn cutter(&self) -> Cutter {
        match &self.body {
            Body::Qemu { child, .. } => Cutter::Qemu(Pid::from_raw(child.id() as i32)),
            Body::External(b) => Cutter::External(b.ext.clone(), b.off.clone()),
        }
    }

    /// A hook for a console trigger: freeze QEMU (SIGSTOP to its process
    /// group) from the console reader the moment the line arrives, so the
    /// guest runs no further while the harness completes the fault. An
    /// external board cannot be frozen: the hook does nothing, and the
    /// fault lands as fast as its power switch or server acts.
    pub fn freeze_hook(&self) -> Box<dyn FnOnce() + Send> {
        match self.qemu_group() {
            Some(pgid) => Box::new(move || {
                let _ = killpg(pgid, Signal::SIGSTOP);
            }),
            None => Box::new(|| ()),
        }
    }

    /// Let a frozen QEMU (see [`Machine::freeze_hook`]) run again.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// A signal to QEMU's process group that a task can send on its own
    /// (SIGCONT to thaw); nothing for an external board.
    pub fn signal_hook(&self, sig: Signal) -> impl Fn() + Send + 'static {
        let pgid = self.qemu_group();
        move || {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, sig);
            }
        }
    }

    fn qemu_group(&self) -> Option<Pid> {
        match &self.body {
            Body::Qemu { child, .. } => Some(Pid::from_raw(child.id() as i32)),
            Body::External(_) => None,
        }
    }

    fn signal(&self, sig: Signal) {
        if let Body::Qemu { child, exit: None, .. } = &self.body {
            let _ = killpg(Pid::from_raw(child.id() as i32), sig);
        }
    }

    /// The teardown ladder: QMP `quit` → SIGTERM to the group → SIGKILL
    /// (an external board: switched off). Idempotent; returns how it ended.
    pub async fn shutdown(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.exited() {
            return Some(s);
        }
        if let Body::External(_) = &self.body {
            return match self.power_cut().await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("devlab: switching board {} off: {e}", self.board.name);
                    None
                }
            };
        }
        // A machine a trigger froze must run to hear `quit` (and SIGTERM).
        self.signal(Signal::SIGCONT);
        if let Some(qmp) = self.qmp.as_ref().filter(|q| !q.is_closed()) {
            let _ = qmp.execute_timeout("quit", None, GRACE).await;
            if let Some(s) = self.wait_exit(GRACE).await {
                return Some(s);
            }
        }
        self.signal(Signal::SIGTERM);
        if let Some(s) = self.wait_exit(GRACE).await {
            return Some(s);
        }
        self.signal(Signal::SIGKILL);
        self.wait_exit(GRACE).await
    }
}

/// How an external board that was switched off "exited".
fn switched_off() -> ExitStatus {
    std::os::unix::process::ExitStatusExt::from_raw(0)
}

impl Drop for Machine {
    /// The emergency path (panic, dropped future on Ctrl-C or timeout):
    /// SIGTERM to the group, a bounded wait on the pidfd, then SIGKILL; an
    /// external board still on is switched off (on a thread of its own, at
    /// most its command timeout).
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Body::External(b) = &self.body {
            let ext = b.ext.clone();
            let off = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                rt.map(|rt| rt.block_on(ext.power(false)))
            });
            if let Ok(Ok(Err(e))) = off.join() {
                eprintln!("devlab: switching board {} off: {e}", self.board.name);
            }
            return;
        }
        self.signal(Signal::SIGTERM);
        let Body::Qemu { child, pidfd, exit } = &mut self.body else { return };
        if !wait_pidfd_blocking(pidfd.get_ref(), GRACE) {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        }
        *exit = child.wait().ok();
    }
}

/// Block until the pidfd is readable (the process exited), at most `timeout`.
fn wait_pidfd_blocking(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, a bounded timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n > 0
}

/// The child and its pidfd before the machine is fully assembled; kills
/// QEMU if dropped before `into_parts` (a failed or abandoned start).
struct MachineHalf {
    child: Option<Child>,
    pidfd: Option<AsyncFd<OwnedFd>>,
    exit: Option<ExitStatus>,
}

impl MachineHalf {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let (Some(child), Some(pidfd)) = (self.child.as_mut(), self.pidfd.as_ref()) else {
            return Err(std::io::Error::other("no child"));
        };
        HalfRef { child, pidfd, exit: &mut self.exit }.wait().await
    }

    fn kill_now(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            self.exit = child.wait().ok();
        }
    }

    fn into_parts(mut self) -> (Child, AsyncFd<OwnedFd>, Option<ExitStatus>) {
        let child = self.child.take().expect("child present");
        let pidfd = self.pidfd.take().expect("pidfd registered");
        (child, pidfd, self.exit)
    }
}

impl Drop for MachineHalf {
    fn drop(&mut self) {
        if self.exit.is_none() && self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none()) {
            self.kill_now();
        }
    }
}

struct HalfRef<'a> {
    child: &'a mut Child,
    pidfd: &'a AsyncFd<OwnedFd>,
    exit: &'a mut Option<ExitStatus>,
}

impl HalfRef<'_> {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = *self.exit {
                return Ok(s);
            }
            if let Some(s) = self.child.try_wait()? {
                *self.exit = Some(s);
                return Ok(s);
            }
            let mut guard = self.pidfd.readable().await?;
            guard.clear_ready();
        }
    }
}

/// Remove socket folders (`devlab-<pid>-*` in the temp dir) whose harness
/// process is gone: a SIGKILLed harness cannot clean up after itself, and
/// its QEMU died with it (PDEATHSIG), so nothing uses them any more.
pub(crate) fn remove_orphaned_socket_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("devlab-").and_then(|r| r.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The last few lines of a file (QEMU's stderr in error messages).
pub fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.trim().is_empty() {
        "(QEMU printed nothing on stderr)".into()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphaned_socket_dirs_go_and_live_ones_stay() {
        let tmp = std::env::temp_dir();
        // pid 0x7ffffff0 does not exist; our own pid does.
        let dead = tmp.join("devlab-2147483632-test");
        let live = tmp.join(format!("devlab-{}-test", std::process::id()));
        for d in [&dead, &live] {
            std::fs::create_dir_all(d).unwrap();
        }
        remove_orphaned_socket_dirs();
        assert!(!dead.exists());
        assert!(live.exists());
        std::fs::remove_dir_all(&live).unwrap();
    }

    #[test]
    fn quoting_keeps_plain_args_and_quotes_the_rest() {
        assert_eq!(shell_quote("-machine"), "-machine");
        assert_eq!(shell_quote("type=1,serial=X"), "type=1,serial=X");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
