//! Accelerator probe: does KVM really run this board's firmware here?
//! `/dev/kvm` may exist, create VMs and vCPUs, and even run a few real-mode
//! instructions, while U-Boot stalls under it (so it is on these machines:
//! x86 U-Boot hangs after `Model:`). So the probe boots the board's own
//! firmware, with the board's own arguments ([`Board::probe_qemu_args`]:
//! `-accel kvm`, no disk), and KVM counts as working only if the firmware's
//! marker (U-Boot's autoboot prompt, iPXE's DHCP) appears within a bound.
//! It runs on a blocking thread ([`choose_async`]), one probe at a time. The answer is
//! cached per host boot (`boot_id`), QEMU binary, machine, CPU and firmware,
//! so only the first run on a host pays for it. A guest of another
//! architecture than the host always gets TCG.

use crate::board::{Accel, Board};
use devlab_images::Arch;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The accelerator chosen for a run, and why (recorded in `run.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// How long the firmware may take to reach its marker under KVM (U-Boot's
/// prompt takes ~0.2 s under TCG; iPXE's DHCP ~2.5 s, after its Ctrl-B wait).
const PROBE_BOUND: Duration = Duration::from_secs(3);
const PROBE_BOUND_IPXE: Duration = Duration::from_secs(8);

fn host_arch() -> Option<Arch> {
    Arch::parse(std::env::consts::ARCH)
}

/// [`choose`] on a blocking thread: the probe spawns QEMU and waits for it
/// (up to [`PROBE_BOUND_IPXE`]), which must not stall the one thread every
/// concurrent run shares. Probes still run one at a time (see [`PROBE`]).
pub async fn choose_async(board: &Board) -> AccelChoice {
    if board.is_external() {
        return AccelChoice { accel: Accel::Tcg, reason: "external board: devlab runs no QEMU for it".into() };
    }
    let board = board.clone();
    match tokio::task::spawn_blocking(move || choose(&board)).await {
        Ok(choice) => choice,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => AccelChoice { accel: Accel::Tcg, reason: format!("kvm probe did not finish: {e}") },
    }
}

/// One probe at a time: concurrent runs of a board wait for the first
/// one's answer (then cached) instead of starting KVM guests side by side,
/// which on a loaded host could miss the bound and wrongly count KVM as broken.
static PROBE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Pick the first accelerator from the board's preferences that works.
/// Blocks while a probe runs: from async code, use [`choose_async`].
pub fn choose(board: &Board) -> AccelChoice {
    let guest = board.arch;
    let mut reasons = Vec::new();
    for &accel in &board.accel {
        match accel {
            Accel::Tcg => {
                let reason =
                    if reasons.is_empty() { "tcg is the board's first choice".to_string() } else { reasons.join("; ") };
                return AccelChoice { accel, reason };
            }
            Accel::Kvm => {
                if std::env::var_os("DEVLAB_NO_KVM").is_some() {
                    reasons.push("kvm disabled by DEVLAB_NO_KVM".into());
                    continue;
                }
                if host_arch() != Some(guest) {
                    reasons.push(format!("kvm: {guest} guest on a {} host", std::env::consts::ARCH));
                    continue;
                }
                match kvm_runs_firmware(board) {
                    Ok(why) => return AccelChoice { accel, reason: why },
                    Err(e) => reasons.push(format!("kvm probe failed: {e}")),
                }
            }
        }
    }
    AccelChoice { accel: Accel::Tcg, reason: format!("no preferred accelerator works ({})", reasons.join("; ")) }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    key: String,
    works: bool,
    detail: String,
}

fn cache_file(board: &Board) -> PathBuf {
    devlab_images::cache_root().join("kvm-probe").join(format!("{}.json", board.name))
}

/// Whether KVM runs the board's firmware, from the per-boot cache or a fresh probe.
pub fn kvm_runs_firmware(board: &Board) -> Result<String, String> {
    std::fs::metadata("/dev/kvm").map_err(|e| format!("/dev/kvm: {e}"))?;
    let qemu = which::which(board.arch.qemu_binary()).map_err(|_| format!("{} not found", board.arch.qemu_binary()))?;
    let mtime = |p: &std::path::Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    };
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let key = format!(
        "probe 2|{}|{}@{}|{}|{}|{}@{}|{}",
        boot_id.trim(),
        qemu.display(),
        mtime(&qemu),
        board.machine,
        board.cpu,
        board.firmware.path.display(),
        mtime(&board.firmware.path),
        board.firmware_marker(),
    );
    let path = cache_file(board);
    let _one_at_a_time = PROBE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Ok(c) =
        std::fs::read(&path).map_err(|_| ()).and_then(|t| serde_json::from_slice::<Cached>(&t).map_err(|_| ()))
    {
        if c.key == key {
            let detail = format!("{} (probed earlier this boot)", c.detail);
            return if c.works { Ok(detail) } else { Err(detail) };
        }
    }
    let result = probe(board, &qemu);
    let c = Cached { key, works: result.is_ok(), detail: result.clone().unwrap_or_else(|e| e) };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, serde_json::to_vec(&c).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    result
}

fn probe(board: &Board, qemu: &std::path::Path) -> Result<String, String> {
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(board.probe_qemu_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let wanted = board.firmware_marker();
    let wanted_shown = wanted.clone();
    let (tx, rx) = mpsc::channel();
    // The reader ends when QEMU is killed below (EOF on the pipe).
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(wanted.len()).any(|w| w == wanted.as_bytes()) {
                let _ = tx.send(());
                break;
            }
        }
        String::from_utf8_lossy(&seen).lines().last().unwrap_or_default().trim().to_string()
    });
    let bound = if board.pxe.is_some() { PROBE_BOUND_IPXE } else { PROBE_BOUND };
    let reached = rx.recv_timeout(bound).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    let last = reader.join().unwrap_or_default();
    if reached {
        Ok(format!(
            "kvm probe: firmware reached {wanted_shown:?} in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ))
    } else {
        Err(format!("under kvm the firmware did not reach {wanted_shown:?} within {bound:?} (last line: {last:?})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str, accel: &[Accel]) -> Board {
        let mut b = crate::board::find(name).unwrap();
        b.accel = accel.to_vec();
        b
    }

    #[test]
    fn foreign_guest_gets_tcg() {
        let name = if host_arch() == Some(Arch::X86_64) { "qemu-aarch64" } else { "qemu-x86_64" };
        let c = choose(&board(name, &[Accel::Kvm, Accel::Tcg]));
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("guest on a"), "{}", c.reason);
    }

    #[test]
    fn tcg_first_means_no_probe() {
        let c = choose(&board("qemu-x86_64", &[Accel::Tcg, Accel::Kvm]));
        assert_eq!(c, AccelChoice { accel: Accel::Tcg, reason: "tcg is the board's first choice".into() });
    }

    #[test]
    fn choose_async_answers_like_choose() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let b = board("qemu-x86_64", &[Accel::Tcg, Accel::Kvm]);
        assert_eq!(rt.block_on(choose_async(&b)), choose(&b));
    }

    /// The probe's command line is the board's own (machine, CPU, memory,
    /// firmware as a run has them), under KVM, with the firmware's probe devices.
    #[test]
    fn probe_uses_the_boards_own_arguments() {
        let b = board("qemu-x86_64-pxe", &[Accel::Kvm]);
        let args = b.probe_qemu_args().join(" ");
        assert_eq!(
            args,
            "-nodefaults -no-user-config -nographic -machine pc -accel kvm -cpu qemu64,+rdrand -smp 1 -m 512M \
             -bios /usr/share/seabios/bios-256k.bin -serial stdio -netdev user,id=net0 \
             -device virtio-net-pci,netdev=net0,mac=52:54:00:de:01:01,bootindex=1"
        );
        let b = board("qemu-aarch64-pxe", &[Accel::Kvm]);
        let args = b.probe_qemu_args().join(" ");
        assert!(args.starts_with("-nodefaults -no-user-config -display none -machine virt -accel kvm"), "{args}");
        assert!(args.ends_with("-bios /usr/lib/u-boot/qemu_arm64/u-boot.bin -serial stdio"), "{args}");
    }

    /// Whatever the host, the choice for a native guest comes with the
    /// probe's reason, and a second choice agrees with the first (cached).
    #[test]
    fn native_guest_choice_is_probed_and_cached() {
        if host_arch() != Some(Arch::X86_64) || which::which("qemu-system-x86_64").is_err() {
            return;
        }
        let b = board("qemu-x86_64", &[Accel::Kvm, Accel::Tcg]);
        let first = choose(&b);
        assert!(first.reason.contains("kvm"), "{}", first.reason);
        let second = choose(&b);
        assert_eq!(first.accel, second.accel);
        assert!(second.reason.contains("probed earlier this boot"), "{}", second.reason);
    }
}
