//! The lab network: several QEMU nodes PXE-boot on one L2 segment served by a
//! real dnsmasq (DHCP, TFTP, IPv6 router advertisements) and reach services the
//! harness runs in-process, all inside a network namespace this module owns.
//!
//! Layout: a namespace `devlab-<pid>-<n>` (unique per process and instance)
//! with `lo` up and a bridge `br0` (STP off, forward delay 0) holding the
//! subnet's first address (10.77.0.1/24 by default) and `fd00:de71::1/64`;
//! one tap per node is enslaved to the bridge; dnsmasq runs in the foreground
//! as our child, bound to `br0` only, with its log, leases and pid file in the
//! run directory. The harness reaches the segment through the namespace's fd:
//! sockets bound or connected from a short-lived thread that entered the
//! namespace ([`LabNet::bind_tcp`], [`LabNet::connect_tcp`]) and processes
//! spawned into it ([`LabNet::enter_in_child`]).
//!
//! Invariants:
//! - nothing routes out: the namespace has no uplink, no default route (IPv4
//!   or IPv6), forwarding off, and ignores router advertisements itself;
//! - nothing is created before the privilege, tool and configuration checks
//!   pass, and a failure half-way through [`LabNet::create`] removes what was
//!   made;
//! - [`LabNet::teardown`] (also run by `Drop`, hence on panic) stops dnsmasq
//!   and deletes the namespace; namespaces left by a harness that died
//!   without it (SIGKILL) are deleted, with their dnsmasq, by the next
//!   [`LabNet::create`].
//!
//! The kernel frees the namespace with its bridge and taps once the last
//! process or socket inside it is gone, so callers end their QEMU processes
//! and drop the sockets they got from here too. Every call blocks (external
//! commands take a few ms each): from async code, use `spawn_blocking`.

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The bridge inside the namespace (names are per namespace: no clash).
pub const BRIDGE: &str = "br0";
/// The bridge's IPv6 address: router advertisements need one (without them
/// iPXE waits ~16 s for IPv6 autoconfiguration before it goes on).
pub const BRIDGE_IPV6: &str = "fd00:de71::1/64";
/// The advertised IPv6 prefix (`ra-only`: no DHCPv6 addresses).
const IPV6_RA_RANGE: &str = "fd00:de71::,ra-only,64";
/// Host number of the bridge in the subnet, and of the DHCP pool's ends.
const BRIDGE_HOST: u32 = 1;
const POOL_FIRST: u32 = 100;
const POOL_LAST: u32 = 199;
/// dnsmasq's last start-up line; it logs it after all its sockets are bound.
const READY_MARK: &str = "TFTP root is ";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dnsmasq may take to exit on SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
const NETNS_DIR: &str = "/run/netns";
const NAME_PREFIX: &str = "devlab-";
/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const IFNAME_MAX: usize = 15;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Instance counter for namespace names (`devlab-<pid>-<n>`).
static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// What can go wrong with the lab network.
#[derive(Debug, thiserror::Error)]
pub enum LabNetError {
    /// The process may not create namespaces, bridges and taps (exit code 2).
    #[error("{0}")]
    NotPrivileged(String),
    /// A host tool (`ip`, `dnsmasq`) or `/dev/net/tun` is missing.
    #[error("{0}")]
    MissingTool(String),
    /// The configuration is unusable (bad MAC, address outside the subnet...).
    #[error("invalid lab network configuration: {0}")]
    Config(String),
    /// An external command failed: its command line, exit status and stderr.
    #[error("`{cmdline}` failed ({status}): {stderr}")]
    Command { cmdline: String, status: String, stderr: String },
    /// dnsmasq did not start, or stopped on its own.
    #[error("dnsmasq: {0}")]
    Dnsmasq(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The lab network was torn down already.
    #[error("lab network {0} has been torn down")]
    TornDown(String),
}

impl LabNetError {
    /// The harness's exit code for this error: 2 (the caller's setup or input
    /// is wrong: not privileged, bad configuration), else 69 (the host failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            LabNetError::NotPrivileged(_) | LabNetError::Config(_) => crate::error::EXIT_BAD_INPUT,
            _ => crate::error::EXIT_INFRA,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabNetError {
    let what = what.into();
    move |source| LabNetError::Io { what, source }
}

type Result<T, E = LabNetError> = std::result::Result<T, E>;

/// An IPv4 subnet of prefix length 8 to 24 (the DHCP pool is hosts .100 to .199).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet holding `addr` (its host bits are cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if !(8..=24).contains(&prefix) {
            return Err(LabNetError::Config(format!("subnet prefix /{prefix}: must be /8 to /24")));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Ipv4Subnet { network: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }

    /// Host number `n` of the subnet (network address + n).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask()))
    }
}

impl Default for Ipv4Subnet {
    /// 10.77.0.0/24: bridge 10.77.0.1, pool 10.77.0.100 to 10.77.0.199.
    fn default() -> Self {
        Ipv4Subnet { network: Ipv4Addr::new(10, 77, 0, 0), prefix: 24 }
    }
}

impl FromStr for Ipv4Subnet {
    type Err = LabNetError;

    /// `A.B.C.D/N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || LabNetError::Config(format!("subnet `{s}`: expected A.B.C.D/N"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        Ipv4Subnet::new(addr.parse().map_err(|_| bad())?, prefix.parse().map_err(|_| bad())?)
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What the lab network serves and where it keeps its files.
#[derive(Debug, Clone)]
pub struct LabNetConfig {
    /// dnsmasq's log (`dnsmasq.log`), stderr, leases and pid file go here
    /// (created if missing), e.g. `<run>/labnet/`.
    pub run_dir: PathBuf,
    /// Served by dnsmasq's TFTP (read-only); must exist.
    pub tftp_root: PathBuf,
    /// Default 10.77.0.0/24: bridge .1, DHCP pool .100 to .199.
    pub subnet: Ipv4Subnet,
    /// Boot file name given to DHCP clients, e.g. `boot.ipxe`.
    pub dhcp_boot: String,
    /// Boot file name given instead to clients that identify as iPXE
    /// (DHCP option 175), when it must differ from `dhcp_boot`.
    pub ipxe_boot: Option<String>,
    /// Fixed leases: (MAC `52:54:00:..`, address in the subnet), for stable
    /// addresses per node.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Appended verbatim to dnsmasq's command line (e.g. `--dhcp-option=...`).
    pub extra_dnsmasq_args: Vec<String>,
}

impl LabNetConfig {
    /// The default subnet, no fixed leases, the same boot file for every client.
    pub fn new(run_dir: impl Into<PathBuf>, tftp_root: impl Into<PathBuf>, dhcp_boot: impl Into<String>) -> Self {
        LabNetConfig {
            run_dir: run_dir.into(),
            tftp_root: tftp_root.into(),
            subnet: Ipv4Subnet::default(),
            dhcp_boot: dhcp_boot.into(),
            ipxe_boot: None,
            hosts: Vec::new(),
            extra_dnsmasq_args: Vec::new(),
        }
    }

    /// Check everything that can be checked without touching the system
    /// (paths are checked by `create`).
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LabNetError::Config(m));
        for (what, name) in [("dhcp_boot", Some(&self.dhcp_boot)), ("ipxe_boot", self.ipxe_boot.as_ref())] {
            if let Some(name) = name {
                if name.is_empty() || name.contains([',', '\n', '\0']) {
                    return bad(format!("{what} `{name}`: must be a non-empty file name without commas"));
                }
            }
        }
        let bridge = self.subnet.host(BRIDGE_HOST);
        for (mac, ip) in &self.hosts {
            if !valid_mac(mac) {
                return bad(format!("host MAC `{mac}`: expected six hex pairs separated by colons"));
            }
            if !self.subnet.contains(*ip) || *ip == self.subnet.network() || *ip == self.subnet.broadcast() {
                return bad(format!("host {mac}: {ip} is not a host address of {}", self.subnet));
            }
            if *ip == bridge {
                return bad(format!("host {mac}: {ip} is the bridge's own address"));
            }
        }
        Ok(())
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Where the host tools are.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    dnsmasq: PathBuf,
}

/// A tool on PATH, or in /usr/sbin or /sbin (often not on a user's PATH).
fn find_tool(name: &str) -> Option<PathBuf> {
    which::which(name)
        .ok()
        .or_else(|| ["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file()))
}

const FALLBACK_HINT: &str = "without it, single-node scenarios work with QEMU user-mode networking \
                             (boards `qemu-x86_64-pxe`, `qemu-aarch64-pxe`)";

/// The capabilities the lab network needs that the `CapEff` line of
/// `/proc/self/status` (given as `status`) lacks.
fn missing_caps(status: &str) -> Result<Vec<&'static str>, String> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| "no CapEff line in /proc/self/status".to_string())?
        .trim();
    let eff = u64::from_str_radix(hex, 16).map_err(|e| format!("CapEff `{hex}`: {e}"))?;
    Ok([(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
        .into_iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect())
}

fn not_privileged_message(detail: &str) -> String {
    format!(
        "the lab network needs root or CAP_NET_ADMIN (with CAP_SYS_ADMIN) to create a network namespace, \
         bridge and taps ({detail}); {FALLBACK_HINT}"
    )
}

/// Capabilities first, then tools: nothing is created here.
fn preflight() -> Result<Tools> {
    let status = fs::read_to_string("/proc/self/status").map_err(io_err("reading /proc/self/status"))?;
    match missing_caps(&status) {
        Ok(m) if m.is_empty() => {}
        Ok(m) => return Err(LabNetError::NotPrivileged(not_privileged_message(&format!("lacking {}", m.join(", "))))),
        Err(e) => return Err(LabNetError::NotPrivileged(not_privileged_message(&e))),
    }
    let tool = |name: &str, package: &str| {
        find_tool(name).ok_or_else(|| {
            LabNetError::MissingTool(format!(
                "the lab network needs `{name}` (package {package}), found neither on PATH nor in /usr/sbin, /sbin; \
                 {FALLBACK_HINT}"
            ))
        })
    };
    let tools = Tools { ip: tool("ip", "iproute2")?, dnsmasq: tool("dnsmasq", "dnsmasq-base")? };
    if !Path::new("/dev/net/tun").exists() {
        return Err(LabNetError::MissingTool(format!(
            "the lab network needs /dev/net/tun for its taps (load the `tun` module); {FALLBACK_HINT}"
        )));
    }
    Ok(tools)
}

/// Run a command to completion; failure names the command line and its stderr.
fn run(program: &Path, args: &[&str]) -> Result<String> {
    let cmdline = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabNetError::Io { what: format!("cannot run `{cmdline}`"), source })?;
    if !out.status.success() {
        return Err(LabNetError::Command {
            cmdline,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tap name of at most 15 bytes: `t<index>-<node>`, the node name reduced
/// to `[A-Za-z0-9_-]` and cut; the index keeps names unique in the namespace.
pub fn tap_name(index: usize, node: &str) -> String {
    let mut name = format!("t{index}-");
    name.extend(node.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }));
    name.truncate(IFNAME_MAX);
    name.trim_end_matches('-').to_string()
}

/// `(mac, ip)` of each IPv4 lease in a dnsmasq lease file
/// (`expiry mac ip hostname client-id` lines; IPv6 lines are skipped).
pub fn parse_leases(text: &str) -> Vec<(String, Ipv4Addr)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_expiry, mac, ip) = (f.next()?, f.next()?, f.next()?);
            Some((mac.to_ascii_lowercase(), ip.parse().ok()?))
        })
        .filter(|(mac, _)| valid_mac(mac))
        .collect()
}

/// dnsmasq's files in the run directory.
#[derive(Debug, Clone)]
struct DnsmasqFiles {
    log: PathBuf,
    stderr: PathBuf,
    leases: PathBuf,
    pid: PathBuf,
}

impl DnsmasqFiles {
    fn in_dir(dir: &Path) -> Self {
        DnsmasqFiles {
            log: dir.join("dnsmasq.log"),
            stderr: dir.join("dnsmasq.stderr"),
            leases: dir.join("dnsmasq.leases"),
            pid: dir.join("dnsmasq.pid"),
        }
    }
}

/// dnsmasq's command line (paths are absolute and free of commas: `create`
/// checked). It runs as root (`--user=root`) because it only serves our own
/// namespace and the TFTP root or run directory may be private (0700) to us.
fn dnsmasq_args(cfg: &LabNetConfig, files: &DnsmasqFiles) -> Vec<String> {
    let s = &cfg.subnet;
    let mut args = vec![
        "--keep-in-foreground".to_string(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        "--user=root".into(),
        format!("--interface={BRIDGE}"),
        "--bind-interfaces".into(),
        format!("--log-facility={}", files.log.display()),
        "--log-dhcp".into(),
        format!("--pid-file={}", files.pid.display()),
        format!("--dhcp-leasefile={}", files.leases.display()),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        format!("--dhcp-range={},{},{},1h", s.host(POOL_FIRST), s.host(POOL_LAST), s.netmask()),
        "--enable-ra".into(),
        format!("--dhcp-range={IPV6_RA_RANGE}"),
        "--enable-tftp".into(),
        format!("--tftp-root={}", cfg.tftp_root.display()),
        "--dhcp-match=set:ipxe,175".into(),
    ];
    match &cfg.ipxe_boot {
        Some(ipxe) => {
            args.push(format!("--dhcp-boot=tag:ipxe,{ipxe}"));
            args.push(format!("--dhcp-boot=tag:!ipxe,{}", cfg.dhcp_boot));
        }
        None => args.push(format!("--dhcp-boot={}", cfg.dhcp_boot)),
    }
    args.extend(cfg.hosts.iter().map(|(mac, ip)| format!("--dhcp-host={},{ip}", mac.to_ascii_lowercase())));
    args.extend(cfg.extra_dnsmasq_args.iter().cloned());
    args
}

/// `(pid, n)` of a namespace name `devlab-<pid>-<n>`.
fn parse_ns_name(name: &str) -> Option<(u32, u32)> {
    let (pid, n) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    Some((pid.parse().ok()?, n.parse().ok()?))
}

/// The names among `names` that belong to a dead harness (not `me`).
fn stale_names(names: impl IntoIterator<Item = String>, me: u32, alive: impl Fn(u32) -> bool) -> Vec<String> {
    let mut stale: Vec<String> =
        names.into_iter().filter(|n| parse_ns_name(n).is_some_and(|(pid, _)| pid != me && !alive(pid))).collect();
    stale.sort();
    stale
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // EPERM: it exists but is not ours to signal; ESRCH: gone.
    !matches!(kill(Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

/// Delete the `devlab-<pid>-<n>` namespaces whose harness is gone, killing
/// the dnsmasq left running in them (other processes are left alone: the
/// namespace then lives on, unnamed, until they end). Returns the names
/// deleted; each is also reported on stderr.
pub fn remove_stale_namespaces() -> Result<Vec<String>> {
    let tools = preflight()?;
    remove_stale(&tools)
}

fn remove_stale(tools: &Tools) -> Result<Vec<String>> {
    let names = match fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(format!("listing {NETNS_DIR}"))(e)),
    };
    let mut removed = Vec::new();
    for name in stale_names(names, std::process::id(), pid_alive) {
        let mut killed = Vec::new();
        // A harness killed with SIGKILL leaves its dnsmasq behind.
        for pid in run(&tools.ip, &["netns", "pids", &name]).unwrap_or_default().split_whitespace() {
            let Ok(pid) = pid.parse::<i32>() else { continue };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "dnsmasq" && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed.push(pid.to_string());
            }
        }
        match run(&tools.ip, &["netns", "del", &name]) {
            Ok(_) => {}
            // Another harness of this host may have removed it just now.
            Err(_) if !Path::new(NETNS_DIR).join(&name).exists() => {}
            Err(e) => {
                eprintln!("devlab: cannot remove stale network namespace {name}: {e}");
                continue;
            }
        }
        let killed =
            if killed.is_empty() { String::new() } else { format!(", killed its dnsmasq {}", killed.join(" ")) };
        eprintln!("devlab: removed stale network namespace {name} (its harness is gone{killed})");
        removed.push(name);
    }
    Ok(removed)
}

/// Enter the network namespace `fd` (this thread only, or the child between
/// fork and exec). Async-signal-safe: a raw syscall and errno.
fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns takes a valid fd (borrowed for the call) and a flag.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned to us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Wait until any of `fds` is readable, at most `timeout`; which ones are.
fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // Round up: a 0 ms poll on a sub-millisecond remainder would spin.
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: a valid array of pollfds of the given length, a bounded timeout.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// An inotify watch for writes to one file.
struct FileWatch(OwnedFd);

impl FileWatch {
    fn new(path: &Path) -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just returned to us and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c =
            CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileWatch(fd))
    }

    /// Consume the pending events (we only care that there were some).
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
    }
}

/// The file's contents from byte `offset` on (lossy UTF-8; "" if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut s);
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// The last `max` bytes of `s`, on a char boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The running dnsmasq: our child, with a pidfd to wait on it.
struct Dnsmasq {
    child: Child,
    pidfd: OwnedFd,
    exited: Option<ExitStatus>,
}

impl Dnsmasq {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// SIGTERM, up to `STOP_GRACE` to exit, then SIGKILL; reaped either way.
    fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.exited {
            return Ok(st);
        }
        let pid = Pid::from_raw(self.pid() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = kill(pid, Signal::SIGKILL);
                break;
            }
            if poll_readable(&[self.pidfd.as_fd()], left).map_err(io_err("waiting for dnsmasq"))?[0] {
                break;
            }
        }
        let st = self.child.wait().map_err(io_err(format!("reaping dnsmasq (pid {pid})")))?;
        self.exited = Some(st);
        Ok(st)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("devlab: stopping dnsmasq: {e}");
        }
    }
}

/// The lab network's dnsmasq, shared: [`DhcpSwitch::stop`] from a task (an
/// armed DHCP outage) stops what the network runs; the network starts it
/// again. Teardown takes it out, so a switch used afterwards stops nothing.
#[derive(Clone, Default)]
pub struct DhcpSwitch(std::sync::Arc<std::sync::Mutex<Option<Dnsmasq>>>);

impl DhcpSwitch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Dnsmasq>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stop dnsmasq (SIGTERM, reaped; blocking for up to its grace). A
    /// no-op when it is not running.
    pub fn stop(&self) -> Result<()> {
        let taken = self.lock().take();
        match taken {
            Some(mut d) => d.stop().map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Enters a lab network's namespace in a child (see [`LabNet::handle`]).
#[derive(Clone, Debug)]
pub struct NetnsHandle(std::sync::Arc<OwnedFd>);

impl NetnsHandle {
    /// Make `cmd` start inside the namespace (as [`LabNet::enter_in_child`]).
    pub fn enter_in_child(&self, cmd: &mut Command) -> Result<()> {
        let fd = self.0.try_clone().map_err(io_err("duplicating the namespace fd"))?;
        // SAFETY: the hook only calls setns and reads errno, both
        // async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || setns_net(fd.as_fd()));
        }
        Ok(())
    }
}

/// The lab network: an owned namespace, its bridge and taps, and dnsmasq.
pub struct LabNet {
    name: String,
    cfg: LabNetConfig,
    files: DnsmasqFiles,
    tools: Tools,
    /// `/run/netns/<name>`, open while the lab network is up.
    fd: Option<OwnedFd>,
    /// The namespace still has to be deleted.
    exists: bool,
    /// Shared with [`DhcpSwitch`]es (an outage armed on a trigger).
    dnsmasq: DhcpSwitch,
    taps: Vec<String>,
    stale_removed: Vec<String>,
}

impl fmt::Debug for LabNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabNet")
            .field("name", &self.name)
            .field("subnet", &self.cfg.subnet)
            .field("taps", &self.taps)
            .field("dnsmasq_pid", &self.dnsmasq.lock().as_ref().map(Dnsmasq::pid))
            .field("up", &self.fd.is_some())
            .finish()
    }
}

impl LabNet {
    /// Fails clearly, before anything is created, when the process lacks
    /// CAP_NET_ADMIN (or CAP_SYS_ADMIN, which `ip netns add` needs too) in
    /// `CapEff` ([`LabNetError::NotPrivileged`], exit code 2) or when `ip`,
    /// `dnsmasq` or `/dev/net/tun` is missing ([`LabNetError::MissingTool`]).
    pub fn check_privileges() -> Result<()> {
        preflight().map(|_| ())
    }

    /// Check privileges, tools and `cfg`; delete stale namespaces of dead
    /// harnesses; create the namespace, its bridge with its addresses, and
    /// start dnsmasq, returning once dnsmasq serves (its last start-up log
    /// line, written after its sockets are bound). The run directory is
    /// created; its lease file and log start empty.
    pub fn create(cfg: LabNetConfig) -> Result<LabNet> {
        let tools = preflight()?;
        cfg.validate()?;
        let cfg = prepare_dirs(cfg)?;
        let files = DnsmasqFiles::in_dir(&cfg.run_dir);
        for f in [&files.log, &files.leases, &files.stderr] {
            File::create(f).map_err(io_err(format!("creating {}", f.display())))?;
        }
        let stale_removed = match remove_stale(&tools) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("devlab: looking for stale network namespaces: {e}");
                Vec::new()
            }
        };
        let name = format!("{NAME_PREFIX}{}-{}", std::process::id(), NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed));
        run(&tools.ip, &["netns", "add", &name])?;
        // From here on, dropping `net` undoes what was made.
        let mut net = LabNet {
            name,
            cfg,
            files,
            tools,
            fd: None,
            exists: true,
            dnsmasq: DhcpSwitch::default(),
            taps: Vec::new(),
            stale_removed,
        };
        net.set_up()?;
        Ok(net)
    }

    fn set_up(&mut self) -> Result<()> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let f = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        self.fd = Some(OwnedFd::from(f));
        // Written from a thread inside the namespace: /proc/sys/net is the
        // calling thread's namespace's. `default` before br0 exists, so br0
        // inherits it: no DAD (its link-local address serves router
        // advertisements at once) and it ignores advertisements itself.
        self.in_netns(|| {
            [
                ("ipv4/ip_forward", "0"),
                ("ipv6/conf/all/forwarding", "0"),
                ("ipv6/conf/all/accept_dad", "0"),
                ("ipv6/conf/default/accept_dad", "0"),
                ("ipv6/conf/all/accept_ra", "0"),
                ("ipv6/conf/default/accept_ra", "0"),
            ]
            .into_iter()
            .try_for_each(|(key, value)| {
                let p = format!("/proc/sys/net/{key}");
                fs::write(&p, value).map_err(io_err(format!("writing {value} to {p} in the lab namespace")))
            })
        })??;
        let bridge_cidr = format!("{}/{}", self.bridge_addr(), self.cfg.subnet.prefix());
        self.ip(&["link", "set", "dev", "lo", "up"])?;
        self.ip(&["link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
        self.ip(&["addr", "add", &bridge_cidr, "dev", BRIDGE])?;
        self.ip(&["-6", "addr", "add", BRIDGE_IPV6, "dev", BRIDGE, "nodad"])?;
        self.ip(&["link", "set", "dev", BRIDGE, "up"])?;
        self.start_dhcp()
    }

    /// The namespace's name (`ip -n NAME ...`, `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn subnet(&self) -> Ipv4Subnet {
        self.cfg.subnet
    }

    /// The bridge's address: where nodes reach dnsmasq and the harness.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.cfg.subnet.host(BRIDGE_HOST)
    }

    /// The run directory (absolute): `dnsmasq.log`, `.stderr`, `.leases`, `.pid`.
    pub fn run_dir(&self) -> &Path {
        &self.cfg.run_dir
    }

    pub fn dnsmasq_log(&self) -> &Path {
        &self.files.log
    }

    /// The taps made so far, in order.
    pub fn taps(&self) -> &[String] {
        &self.taps
    }

    /// The stale namespaces `create` deleted (also reported on stderr).
    pub fn stale_removed(&self) -> &[String] {
        &self.stale_removed
    }

    fn live_fd(&self) -> Result<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd()).ok_or_else(|| LabNetError::TornDown(self.name.clone()))
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run(&self.tools.ip, &full)
    }

    /// A tap for `node` (name from [`tap_name`], ≤ 15 bytes), made in the
    /// namespace, enslaved to the bridge and up. QEMU, started inside the
    /// namespace, opens it with `-netdev tap,id=...,ifname=TAP,script=no,downscript=no`.
    pub fn add_tap(&mut self, node: &str) -> Result<String> {
        self.live_fd()?;
        let tap = tap_name(self.taps.len(), node);
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        if let Err(e) = self.ip(&["link", "set", "dev", &tap, "master", BRIDGE, "up"]) {
            let _ = self.ip(&["link", "del", "dev", &tap]);
            return Err(e);
        }
        self.taps.push(tap.clone());
        Ok(tap)
    }

    /// Run `f` on a short-lived thread that entered the namespace: sockets
    /// it makes stay in the namespace after the thread ends. A panic in `f`
    /// is propagated. In `f`, `/proc/sys/net` is the namespace's but
    /// `/proc/self/net` is still the process's (use `/proc/thread-self/net`).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.live_fd()?;
        let joined = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("labnet-setns".into())
                .spawn_scoped(s, move || setns_net(fd).map(|()| f()))
                .map(|h| h.join())
        });
        match joined {
            Err(e) => Err(io_err("spawning a thread for the lab namespace")(e)),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(r)) => r.map_err(io_err(format!("entering network namespace {}", self.name))),
        }
    }

    /// A TCP listener bound inside the namespace on `bridge_addr:port` (0: any
    /// free port; `local_addr` tells). It is in blocking mode: for tokio, call
    /// `set_nonblocking(true)` then `tokio::net::TcpListener::from_std`.
    pub fn bind_tcp(&self, port: u16) -> Result<TcpListener> {
        let addr = SocketAddrV4::new(self.bridge_addr(), port);
        self.in_netns(|| TcpListener::bind(addr))?.map_err(io_err(format!("binding {addr} in {}", self.name)))
    }

    /// A TCP connection made from inside the namespace (to a node's SSH, say),
    /// within `timeout`. Blocking mode, like `bind_tcp`'s listener.
    pub fn connect_tcp(&self, addr: SocketAddrV4, timeout: Duration) -> Result<TcpStream> {
        self.in_netns(|| TcpStream::connect_timeout(&addr.into(), timeout))?
            .map_err(io_err(format!("connecting to {addr} from {}", self.name)))
    }

    /// The namespace's fd (`/run/netns/NAME`), valid until `teardown`. A child
    /// enters the namespace with `setns(fd, CLONE_NEWNET)` in its `pre_exec`;
    /// [`LabNet::enter_in_child`] does that for you.
    pub fn netns_fd(&self) -> Result<BorrowedFd<'_>> {
        self.live_fd()
    }

    /// A handle that moves children into the namespace, for a machine to
    /// keep: it owns a duplicate of the namespace's fd, so it outlives no
    /// borrow of `self` (the namespace itself goes with `teardown`).
    pub fn handle(&self) -> Result<NetnsHandle> {
        let fd = self.live_fd()?.try_clone_to_owned().map_err(io_err("duplicating the namespace fd"))?;
        Ok(NetnsHandle(std::sync::Arc::new(fd)))
    }

    /// A `pre_exec` hook that moves the child into the namespace. It owns a
    /// duplicate of the namespace's fd (close-on-exec: the program does not
    /// inherit it), so the command may be spawned even after `self` is gone.
    pub fn pre_exec_hook(&self) -> Result<impl FnMut() -> io::Result<()> + Send + Sync + 'static> {
        let fd = self.live_fd()?.try_clone_to_owned().map_err(io_err("duplicating the namespace fd"))?;
        Ok(move || setns_net(fd.as_fd()))
    }

    /// Make `cmd` start inside the namespace (QEMU, for one): adds a
    /// `pre_exec` hook (after any already registered) calling `setns`. The
    /// child still reaches Unix sockets bound to file paths (QEMU's console
    /// and QMP), but not the host's TCP ports nor abstract Unix sockets.
    pub fn enter_in_child(&self, cmd: &mut Command) -> Result<()> {
        let hook = self.pre_exec_hook()?;
        // SAFETY: the hook only calls setns and reads errno, both
        // async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(hook);
        }
        Ok(())
    }

    /// [`LabNet::enter_in_child`] for a tokio command.
    pub fn enter_in_child_tokio(&self, cmd: &mut tokio::process::Command) -> Result<()> {
        self.enter_in_child(cmd.as_std_mut())
    }

    /// dnsmasq's pid while it runs.
    pub fn dnsmasq_pid(&mut self) -> Option<u32> {
        let mut d = self.dnsmasq.lock();
        let d = d.as_mut()?;
        d.running().then(|| d.pid())
    }

    /// A handle that stops this network's dnsmasq from elsewhere (a task).
    pub fn dhcp_switch(&self) -> DhcpSwitch {
        self.dnsmasq.clone()
    }

    /// Fault injection: stop dnsmasq (SIGTERM, reaped): DHCP, TFTP and router
    /// advertisements vanish; leases already handed out stay on the nodes and
    /// in the lease file. A no-op when it is not running.
    pub fn stop_dhcp(&mut self) -> Result<()> {
        self.dnsmasq.stop()
    }

    /// Start dnsmasq (again) with the same configuration and lease file, and
    /// return once it serves: its last start-up log line (written after its
    /// sockets are bound) waited for without polling, on an inotify watch of
    /// its log and a pidfd for its exit, at most 10 s. A no-op when it runs
    /// already. It gets no PR_SET_PDEATHSIG: that fires when the spawning
    /// *thread* ends (a `spawn_blocking` thread, say); a dnsmasq left by a
    /// harness killed outright goes with its namespace at the next `create`.
    pub fn start_dhcp(&mut self) -> Result<()> {
        {
            let mut running = self.dnsmasq.lock();
            if running.as_mut().is_some_and(Dnsmasq::running) {
                return Ok(());
            }
            *running = None;
        }
        let hook = self.pre_exec_hook()?;
        let files = &self.files;
        let log_offset = file_len(&files.log);
        let err_offset = file_len(&files.stderr);
        // Watch before spawning: no write can be missed.
        let watch = FileWatch::new(&files.log).map_err(io_err(format!("watching {}", files.log.display())))?;
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.stderr)
            .map_err(io_err(format!("opening {}", files.stderr.display())))?;
        let mut cmd = Command::new(&self.tools.dnsmasq);
        cmd.args(dnsmasq_args(&self.cfg, files)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: the hook only calls setns and reads errno, both
        // async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(hook);
        }
        let child = cmd.spawn().map_err(io_err(format!("starting {}", self.tools.dnsmasq.display())))?;
        let pidfd = match pidfd_open(child.id()) {
            Ok(fd) => fd,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_err("pidfd_open on dnsmasq")(e));
            }
        };
        // Dropped on any error below: killed and reaped.
        let mut d = Dnsmasq { child, pidfd, exited: None };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if read_from(&files.log, log_offset).contains(READY_MARK) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let describe = |files: &DnsmasqFiles| {
                format!(
                    "stderr: {}; log {}: {}",
                    tail(&read_from(&files.stderr, err_offset), 2000),
                    files.log.display(),
                    tail(&read_from(&files.log, log_offset), 2000)
                )
            };
            if left.is_zero() {
                return Err(LabNetError::Dnsmasq(format!(
                    "in {}: not ready within {READY_TIMEOUT:?} (no `{READY_MARK}` line); {}",
                    self.name,
                    describe(files)
                )));
            }
            // Event-driven: a write to the log, or dnsmasq's exit.
            let ready = poll_readable(&[watch.0.as_fd(), d.pidfd.as_fd()], left)
                .map_err(io_err("waiting for dnsmasq to start"))?;
            if ready[1] {
                let st = d.stop()?;
                return Err(LabNetError::Dnsmasq(format!(
                    "in {}: exited at start ({st}); {}",
                    self.name,
                    describe(files)
                )));
            }
            watch.drain();
        }
        *self.dnsmasq.lock() = Some(d);
        Ok(())
    }

    /// The IPv4 leases dnsmasq handed out, from its lease file (which it
    /// rewrites before it answers a request): `(mac, ip)`, MAC lower-case.
    pub fn leases(&self) -> Result<Vec<(String, Ipv4Addr)>> {
        match fs::read_to_string(&self.files.leases) {
            Ok(text) => Ok(parse_leases(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(format!("reading {}", self.files.leases.display()))(e)),
        }
    }

    /// Stop dnsmasq (SIGTERM, reaped), close the namespace fd and delete the
    /// namespace. Idempotent; `Drop` calls it. Later calls that need the
    /// namespace fail with [`LabNetError::TornDown`].
    pub fn teardown(&mut self) -> Result<()> {
        let mut first_err = None;
        if let Err(e) = self.dnsmasq.stop() {
            first_err.get_or_insert(e);
        }
        self.fd = None;
        if self.exists {
            match run(&self.tools.ip, &["netns", "del", &self.name]) {
                Ok(_) => self.exists = false,
                Err(_) if !Path::new(NETNS_DIR).join(&self.name).exists() => self.exists = false,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for LabNet {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("devlab: tearing down lab network {}: {e}", self.name);
        }
    }
}

/// Create the run directory and make both directories absolute (dnsmasq
/// changes to `/`); refuse paths dnsmasq's option syntax cannot carry.
fn prepare_dirs(mut cfg: LabNetConfig) -> Result<LabNetConfig> {
    if !cfg.tftp_root.is_dir() {
        return Err(LabNetError::Config(format!("tftp_root {} is not a directory", cfg.tftp_root.display())));
    }
    cfg.tftp_root =
        fs::canonicalize(&cfg.tftp_root).map_err(io_err(format!("resolving {}", cfg.tftp_root.display())))?;
    fs::create_dir_all(&cfg.run_dir).map_err(io_err(format!("creating {}", cfg.run_dir.display())))?;
    cfg.run_dir = fs::canonicalize(&cfg.run_dir).map_err(io_err(format!("resolving {}", cfg.run_dir.display())))?;
    for dir in [&cfg.run_dir, &cfg.tftp_root] {
        match dir.to_str() {
            Some(s) if !s.contains([',', '\n']) => {}
            _ => {
                return Err(LabNetError::Config(format!(
                    "{}: dnsmasq needs a UTF-8 path without commas",
                    dir.display()
                )))
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_ifnamsiz_and_stay_unique() {
        assert_eq!(tap_name(0, "node-a"), "t0-node-a");
        assert_eq!(tap_name(12, "x86 node/1"), "t12-x86-node-1");
        let long = tap_name(3, "a-very-long-node-name-indeed");
        assert_eq!(long, "t3-a-very-long");
        assert!(long.len() <= 15);
        assert_eq!(tap_name(7, ""), "t7");
        assert_eq!(tap_name(123, "ab--------------"), "t123-ab");
        assert_ne!(tap_name(1, "same-long-name-here"), tap_name(2, "same-long-name-here"));
        assert_eq!(tap_name(0, "nœud"), "t0-n-ud");
    }

    #[test]
    fn leases_are_parsed_and_ipv6_lines_skipped() {
        let text = "1795521161 52:54:00:12:34:56 10.77.0.42 * 01:52:54:00:12:34:56\n\
                    1795521162 52:54:00:AB:CD:EF 10.77.0.150 node-b *\n\
                    duid 00:01:00:01:2c:aa:bb:cc:52:54:00:12:34:56\n\
                    1795521163 1234 fd00:de71::5 * 00:01:00:01\n\
                    garbage\n";
        assert_eq!(
            parse_leases(text),
            vec![
                ("52:54:00:12:34:56".to_string(), Ipv4Addr::new(10, 77, 0, 42)),
                ("52:54:00:ab:cd:ef".to_string(), Ipv4Addr::new(10, 77, 0, 150)),
            ]
        );
        assert!(parse_leases("").is_empty());
    }

    fn cfg() -> LabNetConfig {
        LabNetConfig::new("/run/x/labnet", "/srv/tftp", "boot.ipxe")
    }

    #[test]
    fn dnsmasq_args_serve_the_subnet_on_the_bridge_only() {
        let mut c = cfg();
        c.hosts.push(("52:54:00:AA:00:01".into(), Ipv4Addr::new(10, 77, 0, 11)));
        c.extra_dnsmasq_args.push("--dhcp-option=66,10.77.0.1".into());
        let args = dnsmasq_args(&c, &DnsmasqFiles::in_dir(&c.run_dir));
        for want in [
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--log-facility=/run/x/labnet/dnsmasq.log",
            "--pid-file=/run/x/labnet/dnsmasq.pid",
            "--dhcp-leasefile=/run/x/labnet/dnsmasq.leases",
            "--no-ping",
            "--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h",
            "--enable-ra",
            "--dhcp-range=fd00:de71::,ra-only,64",
            "--enable-tftp",
            "--tftp-root=/srv/tftp",
            "--dhcp-match=set:ipxe,175",
            "--dhcp-boot=boot.ipxe",
            "--dhcp-host=52:54:00:aa:00:01,10.77.0.11",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("--dhcp-option=66,10.77.0.1"));
        assert!(!args.iter().any(|a| a.contains("/var/lib")));
    }

    #[test]
    fn ipxe_clients_get_their_own_boot_file() {
        let mut c = cfg();
        c.dhcp_boot = "u-boot.scr".into();
        c.ipxe_boot = Some("boot.ipxe".into());
        c.subnet = "10.9.0.0/16".parse().unwrap();
        let args = dnsmasq_args(&c, &DnsmasqFiles::in_dir(&c.run_dir));
        assert!(args.contains(&"--dhcp-boot=tag:ipxe,boot.ipxe".to_string()));
        assert!(args.contains(&"--dhcp-boot=tag:!ipxe,u-boot.scr".to_string()));
        assert!(args.contains(&"--dhcp-range=10.9.0.100,10.9.0.199,255.255.0.0,1h".to_string()));
    }

    #[test]
    fn config_is_checked_before_anything_is_made() {
        let mut c = cfg();
        assert!(c.validate().is_ok());
        c.hosts = vec![("52:54:00:aa:00".into(), Ipv4Addr::new(10, 77, 0, 11))];
        assert!(matches!(c.validate(), Err(LabNetError::Config(m)) if m.contains("six hex pairs")));
        c.hosts = vec![("52:54:00:aa:00:01".into(), Ipv4Addr::new(10, 78, 0, 11))];
        assert!(matches!(c.validate(), Err(LabNetError::Config(m)) if m.contains("not a host address")));
        c.hosts = vec![("52:54:00:aa:00:01".into(), Ipv4Addr::new(10, 77, 0, 1))];
        assert!(matches!(c.validate(), Err(LabNetError::Config(m)) if m.contains("bridge")));
        c.hosts.clear();
        c.dhcp_boot = "a,b".into();
        assert!(matches!(c.validate(), Err(LabNetError::Config(_))));
        assert_eq!(LabNetError::Config(String::new()).exit_code(), 2);
    }

    #[test]
    fn subnets() {
        let s: Ipv4Subnet = "10.77.0.9/24".parse().unwrap();
        assert_eq!(s, Ipv4Subnet::default());
        assert_eq!(s.to_string(), "10.77.0.0/24");
        assert_eq!(s.host(1), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 77, 0, 255));
        assert!(s.contains(Ipv4Addr::new(10, 77, 0, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 77, 1, 1)));
        assert!("10.0.0.0/25".parse::<Ipv4Subnet>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Subnet>().is_err());
    }

    #[test]
    fn capabilities_are_read_from_capeff() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(missing_caps(root), Ok(vec![]));
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(missing_caps(none), Ok(vec!["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]));
        let net_admin_only = format!("CapEff:\t{:016x}\n", 1u64 << 12);
        assert_eq!(missing_caps(&net_admin_only), Ok(vec!["CAP_SYS_ADMIN"]));
        assert!(missing_caps("Name: x\n").is_err());
        let m = not_privileged_message("lacking CAP_NET_ADMIN");
        for want in ["root or CAP_NET_ADMIN", "network namespace, bridge and taps", "user-mode networking"] {
            assert!(m.contains(want), "{m}");
        }
        assert!(m.contains("qemu-x86_64-pxe") && m.contains("qemu-aarch64-pxe"));
        assert_eq!(LabNetError::NotPrivileged(m).exit_code(), 2);
    }

    #[test]
    fn stale_namespaces_are_those_of_dead_harnesses_only() {
        assert_eq!(parse_ns_name("devlab-123-4"), Some((123, 4)));
        assert_eq!(parse_ns_name("devlab-123"), None);
        assert_eq!(parse_ns_name("other-123-4"), None);
        let names = ["devlab-10-0", "devlab-20-1", "devlab-30-0", "devlabx-40-0", "devlab-40-z", "devlab-10-3"];
        let alive = |pid: u32| pid == 20;
        assert_eq!(
            stale_names(names.iter().map(|s| s.to_string()), 30, alive),
            vec!["devlab-10-0".to_string(), "devlab-10-3".to_string()]
        );
    }
}
