//! External boards: a board devlab does not run as QEMU, reached through
//! a console line, a power switch, SSH to an address, and a flash command
//! (a physical board on a bench, or the stand-in of
//! `examples/standin-board`). A board profile says so with `[external]`:
//!
//! - `console`: `{ tcp = "host:port" }` (ser2net, conserver), `{ serial =
//!   "/dev/ttyUSB0", baud = 115200 }`, or `{ command = "…" }` (its stdin and
//!   stdout are the console: `picocom -q`, `socat - …`);
//! - `power`: `{ pdudaemon = "host:port", hostname = "pdu", port = "3" }`
//!   (pdudaemon's HTTP API, as LAVA and labgrid use it), or `{ on = "…",
//!   off = "…" }` commands (`usbrelay`, `ipmitool`, a vendor tool);
//! - `ssh = "host:port"`; `flash = "bmaptool copy {image} /dev/sdX"`;
//! - `host_disk`: the board's disk as the host sees it while the board is
//!   off (behind an SD mux; the stand-in's disk file), for the steps that
//!   read or write a powered-off disk;
//! - `bind`: the lab address every server devlab starts for the board
//!   listens on (never 0.0.0.0), `server_address` the address the board
//!   reaches it at (default: `bind`).
//!
//! Commands run through `sh -c` in the profile's folder, `{board}` (and
//! `{image}` for `flash`) substituted, each in its own process group, killed
//! when it outlives `command_timeout`. Every failure here is the lab's
//! (exit 69), naming the command and its stderr. This module spawns no QEMU
//! and opens no QMP socket: what needs one is refused at plan time
//! ([`qemu_only`]).

use crate::error::{Error, InputError, Result};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a power, flash or console command may run by default.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the console may stay silent after power-on by default.
const DEFAULT_CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting the console or the PDU daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[external]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExternalFile {
    console: ConsoleFile,
    power: PowerFile,
    ssh: String,
    #[serde(default)]
    flash: Option<String>,
    bind: String,
    #[serde(default)]
    server_address: Option<String>,
    #[serde(default)]
    command_timeout: Option<String>,
    #[serde(default)]
    host_disk: Option<String>,
    #[serde(default)]
    console_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleFile {
    #[serde(default)]
    tcp: Option<String>,
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    baud: Option<u32>,
    #[serde(default)]
    command: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerFile {
    #[serde(default)]
    pdudaemon: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    port: Option<toml::Value>,
    #[serde(default)]
    on: Option<String>,
    #[serde(default)]
    off: Option<String>,
}

/// How devlab reads and writes the board's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleLine {
    Tcp(String),
    Serial { path: PathBuf, baud: u32 },
    Command(String),
}

/// How devlab switches the board's power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerSwitch {
    /// pdudaemon's HTTP listener (`host:port`), the PDU's name and outlet.
    Pdudaemon {
        daemon: String,
        hostname: String,
        port: String,
    },
    Commands {
        on: String,
        off: String,
    },
}

/// An external board, validated.
#[derive(Debug, Clone)]
pub struct External {
    pub console: ConsoleLine,
    pub power: PowerSwitch,
    /// SSH's host and port.
    pub ssh: (String, u16),
    pub flash: Option<String>,
    /// The lab address servers bind.
    pub bind: IpAddr,
    /// The address the board reaches `bind` at.
    pub server_address: String,
    pub command_timeout: Duration,
    /// How long the console may stay silent after power-on before the
    /// lab is blamed (exit 69).
    pub console_timeout: Duration,
    /// The board's disk as the host sees it while the board is off (an SD
    /// card behind a mux, the stand-in's disk file): steps that read or
    /// write the powered-off disk use it. `None`: they are refused.
    pub host_disk: Option<PathBuf>,
    /// Commands run here (the profile's folder).
    pub dir: PathBuf,
    /// The board's name (`{board}` in commands).
    pub board: String,
}

/// A `host:port` pair.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), port))
}

impl ExternalFile {
    /// Check the table; `at(field, message)` locates an error in the file.
    pub(crate) fn validate(
        self,
        profile: &Path,
        board: &str,
        at: &dyn Fn(&str, String) -> InputError,
    ) -> std::result::Result<External, InputError> {
        let c = self.console;
        let console = match (c.tcp, c.serial, c.command) {
            (Some(t), None, None) => {
                host_port(&t).ok_or_else(|| at("tcp", format!("`{t}` is not host:port")))?;
                ConsoleLine::Tcp(t)
            }
            (None, Some(path), None) => ConsoleLine::Serial { path: path.into(), baud: c.baud.unwrap_or(115_200) },
            (None, None, Some(cmd)) => ConsoleLine::Command(cmd),
            _ => return Err(at("console", "name exactly one of tcp, serial or command".into())),
        };
        let p = self.power;
        let power = match (p.pdudaemon, p.on, p.off) {
            (Some(d), None, None) => {
                host_port(&d).ok_or_else(|| at("pdudaemon", format!("`{d}` is not host:port")))?;
                let hostname =
                    p.hostname.ok_or_else(|| at("pdudaemon", "pdudaemon needs `hostname` (the PDU)".into()))?;
                let port = match p.port {
                    Some(toml::Value::Integer(n)) => n.to_string(),
                    Some(toml::Value::String(s)) => s,
                    Some(_) => return Err(at("port", "the outlet: a number or a string".into())),
                    None => return Err(at("pdudaemon", "pdudaemon needs `port` (the outlet)".into())),
                };
                PowerSwitch::Pdudaemon { daemon: d, hostname, port }
            }
            (None, Some(on), Some(off)) => PowerSwitch::Commands { on, off },
            _ => return Err(at("power", "name either pdudaemon (with hostname and port) or both on and off".into())),
        };
        let ssh = host_port(&self.ssh).ok_or_else(|| at("ssh", format!("`{}` is not host:port", self.ssh)))?;
        let bind: IpAddr =
            self.bind.parse().map_err(|_| at("bind", format!("`{}` is not an IP address", self.bind)))?;
        if bind.is_unspecified() {
            return Err(at("bind", "name the lab address (servers must not listen on every interface)".into()));
        }
        let command_timeout = match self.command_timeout {
            Some(t) => humantime::parse_duration(&t).map_err(|e| at("command_timeout", format!("`{t}`: {e}")))?,
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        let console_timeout = match self.console_timeout {
            Some(t) => humantime::parse_duration(&t).map_err(|e| at("console_timeout", format!("`{t}`: {e}")))?,
            None => DEFAULT_CONSOLE_TIMEOUT,
        };
        Ok(External {
            console_timeout,
            console,
            power,
            ssh,
            flash: self.flash,
            bind,
            server_address: self.server_address.unwrap_or_else(|| bind.to_string()),
            command_timeout,
            host_disk: self.host_disk.map(|d| {
                let d = PathBuf::from(d.replace("{board}", board));
                profile.parent().unwrap_or(Path::new(".")).join(d)
            }),
            dir: profile.parent().map(Path::to_path_buf).unwrap_or_default(),
            board: board.to_string(),
        })
    }
}

/// What a step needs that an external board cannot give (QMP, the host's
/// view of the disk, a saved machine), or `None`. `devlab check` refuses
/// such a step for an external board, naming it and why.
pub fn qemu_only(action: &str, step: &serde_json::Value, host_disk: bool) -> Option<&'static str> {
    let source_disk = step.get("source").and_then(serde_json::Value::as_str) == Some("disk") && !host_disk;
    match action {
        "wait_qmp" => Some("it waits for a QMP event, and an external board has no QMP"),
        "link" => Some("it sets the NIC's link through QMP (`set_link`)"),
        "reset" => Some("it resets the board through QMP (`system_reset`)"),
        "corrupt_disk" if !host_disk => {
            Some("it writes the powered-off disk from the host, and the profile names no `host_disk`")
        }
        "disk_errors" | "clear_disk_errors" => Some("it injects disk errors with QEMU's blkdebug"),
        "ssh" | "update" if step.get("link_drop").is_some() => Some("its `link_drop` sets the NIC's link through QMP"),
        "assert_env" | "assert_file" if source_disk => {
            Some("it reads the powered-off disk from the host, and the profile names no `host_disk` (or use `source = \"guest\"`)")
        }
        "arm_fault" if step.get("on_qmp").is_some() => Some("its trigger is a QMP event"),
        "arm_fault" => match step.get("fault").and_then(serde_json::Value::as_str) {
            Some("disk_errors" | "corrupt_disk" | "link_down" | "link_up" | "reset") => {
                Some("the fault acts through QMP or the host's view of the disk")
            }
            _ => None,
        },
        _ => None,
    }
}

/// Run `command` (`sh -c`, in `ext.dir`, own process group) to the end,
/// at most `ext.command_timeout`; the failure names it and its stderr.
pub async fn run_command(ext: &External, what: &str, command: &str) -> Result<String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&ext.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| Error::infra(format!("{what}: cannot run `{command}`: {e}")))?;
    let pid = child.id();
    match tokio::time::timeout(ext.command_timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => Err(Error::infra(format!(
            "{what}: `{command}` exited {}; stderr: {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ))),
        Ok(Err(e)) => Err(Error::infra(format!("{what}: `{command}`: {e}"))),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
            }
            Err(Error::infra(format!(
                "{what}: `{command}` did not finish within {} (killed)",
                humantime::format_duration(ext.command_timeout)
            )))
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    match lines[lines.len().saturating_sub(10)..].join("\n") {
        t if t.is_empty() => "(nothing)".into(),
        t => t,
    }
}

impl External {
    /// `{board}` (and extra pairs) substituted into a command.
    pub fn subst(&self, command: &str, extra: &[(&str, &str)]) -> String {
        let mut s = command.replace("{board}", &self.board);
        for (k, v) in extra {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }

    /// The console line, as messages name it.
    pub fn console_label(&self) -> String {
        match &self.console {
            ConsoleLine::Tcp(a) => format!("tcp {a}"),
            ConsoleLine::Serial { path, baud } => format!("serial {} at {baud}", path.display()),
            ConsoleLine::Command(c) => format!("command `{}`", self.subst(c, &[])),
        }
    }

    /// The power switch, as messages name it.
    pub fn power_label(&self) -> String {
        match &self.power {
            PowerSwitch::Pdudaemon { daemon, hostname, port } => {
                format!("pdudaemon at {daemon}, PDU {hostname}, port {port}")
            }
            PowerSwitch::Commands { on, .. } => format!("`{}`", self.subst(on, &[])),
        }
    }

    /// Switch the power on or off; returns when the switch accepted it.
    pub async fn power(&self, on: bool) -> Result<()> {
        let word = if on { "on" } else { "off" };
        match &self.power {
            PowerSwitch::Commands { on: c_on, off: c_off } => {
                let command = self.subst(if on { c_on } else { c_off }, &[]);
                run_command(self, &format!("power {word}"), &command).await.map(drop)
            }
            PowerSwitch::Pdudaemon { daemon, hostname, port } => {
                pdudaemon_request(daemon, word, hostname, port, self.command_timeout).await
            }
        }
    }

    /// Write `image` to the board's disk with the profile's `flash`.
    pub async fn flash(&self, image: &Path) -> Result<()> {
        let Some(flash) = &self.flash else { return Ok(()) };
        let command = self.subst(flash, &[("image", &image.to_string_lossy())]);
        run_command(self, "flash", &command).await.map(drop)
    }

    /// Open the console line (nothing is read yet: the caller starts the
    /// reader). A command console's child is returned too: kill it to close.
    pub async fn open_console(
        &self,
    ) -> Result<(crate::console::ConsoleRead, crate::console::ConsoleWrite, Option<tokio::process::Child>)> {
        match &self.console {
            ConsoleLine::Tcp(addr) => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| Error::infra(format!("console tcp {addr}: no answer within {CONNECT_TIMEOUT:?}")))?
                    .map_err(|e| Error::infra(format!("console tcp {addr}: {e}")))?;
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                Ok((Box::new(r), Box::new(w), None))
            }
            ConsoleLine::Serial { path, baud } => {
                let (r, w) = open_serial(path, *baud)?;
                Ok((Box::new(r), Box::new(w), None))
            }
            ConsoleLine::Command(c) => {
                let command = self.subst(c, &[]);
                let mut child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&command)
                    .current_dir(&self.dir)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| Error::infra(format!("console command `{command}`: {e}")))?;
                let r = child.stdout.take().expect("piped");
                let w = child.stdin.take().expect("piped");
                Ok((Box::new(r), Box::new(w), Some(child)))
            }
        }
    }
}

/// Open a serial device raw at `baud` (8N1, no flow control), as two
/// halves the runtime reads and writes on blocking threads.
fn open_serial(path: &Path, baud: u32) -> Result<(tokio::fs::File, tokio::fs::File)> {
    use nix::sys::termios;
    if !path.exists() {
        return Err(Error::infra(format!("serial device {} does not exist", path.display())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::infra(format!("serial device {}: {e}", path.display())))?;
    let rate = match baud {
        9600 => termios::BaudRate::B9600,
        19200 => termios::BaudRate::B19200,
        38400 => termios::BaudRate::B38400,
        57600 => termios::BaudRate::B57600,
        115_200 => termios::BaudRate::B115200,
        230_400 => termios::BaudRate::B230400,
        460_800 => termios::BaudRate::B460800,
        921_600 => termios::BaudRate::B921600,
        1_500_000 => termios::BaudRate::B1500000,
        other => return Err(Error::infra(format!("serial device {}: unsupported baud {other}", path.display()))),
    };
    let setup = || -> nix::Result<()> {
        let mut t = termios::tcgetattr(&file)?;
        termios::cfmakeraw(&mut t);
        termios::cfsetspeed(&mut t, rate)?;
        t.control_flags |= termios::ControlFlags::CLOCAL | termios::ControlFlags::CREAD;
        t.control_flags &= !(termios::ControlFlags::CRTSCTS | termios::ControlFlags::CSTOPB);
        termios::tcsetattr(&file, termios::SetArg::TCSANOW, &t)
    };
    setup().map_err(|e| Error::infra(format!("serial device {}: {e}", path.display())))?;
    let write = file.try_clone().map_err(|e| Error::infra(format!("serial device {}: {e}", path.display())))?;
    Ok((tokio::fs::File::from_std(file), tokio::fs::File::from_std(write)))
}

use std::os::unix::fs::OpenOptionsExt;

/// `GET /power/control/<word>?hostname=…&port=…` on pdudaemon's HTTP
/// listener. pdudaemon answers at once and switches later: a 200 means it
/// accepted the request, not that the outlet switched.
async fn pdudaemon_request(daemon: &str, word: &str, hostname: &str, port: &str, timeout: Duration) -> Result<()> {
    let what = format!("power {word} through pdudaemon at {daemon} (PDU {hostname}, port {port})");
    let req = async {
        let mut s = tokio::net::TcpStream::connect(daemon).await?;
        let q = format!(
            "GET /power/control/{word}?hostname={}&port={} HTTP/1.0\r\nHost: {daemon}\r\n\r\n",
            query_escape(hostname),
            query_escape(port)
        );
        s.write_all(q.as_bytes()).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(timeout.min(CONNECT_TIMEOUT * 3), req)
        .await
        .map_err(|_| Error::infra(format!("{what}: no answer within {:?}", timeout.min(CONNECT_TIMEOUT * 3))))?
        .map_err(|e| Error::infra(format!("{what}: {e}")))?;
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Err(Error::infra(format!("{what}: pdudaemon answered `{status}`: {body}")))
}

/// Percent-encode a query value (names and outlets are plain; anything
/// else is escaped).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(power: PowerSwitch, timeout: Duration) -> External {
        External {
            console: ConsoleLine::Tcp("127.0.0.1:1".into()),
            power,
            ssh: ("127.0.0.1".into(), 22),
            flash: None,
            bind: "127.0.0.1".parse().unwrap(),
            server_address: "127.0.0.1".into(),
            command_timeout: timeout,
            console_timeout: Duration::from_secs(1),
            host_disk: None,
            dir: std::env::temp_dir(),
            board: "bench-1".into(),
        }
    }

    #[tokio::test]
    async fn a_failing_power_command_names_itself_and_its_stderr() {
        let e = ext(
            PowerSwitch::Commands { on: "echo relay {board} jammed >&2; exit 3".into(), off: "true".into() },
            Duration::from_secs(10),
        );
        let err = e.power(true).await.unwrap_err().to_string();
        assert!(err.contains("power on"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("relay bench-1 jammed"), "{err}");
        assert!(e.power(false).await.is_ok());
    }

    #[tokio::test]
    async fn a_hanging_power_command_is_killed_with_its_group() {
        let marker = tempfile::tempdir().unwrap();
        let pidfile = marker.path().join("pid");
        let e = ext(
            PowerSwitch::Commands {
                // The fault: a power command that hangs (30 s, far past its 500 ms).
                on: format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
                off: "true".into(),
            },
            Duration::from_millis(500),
        );
        let err = e.power(true).await.unwrap_err().to_string();
        assert!(err.contains("did not finish within 500ms"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The group's SIGKILL reached the grandchild too (reaped by init).
        let gone = (0..200).any(|_| {
            let alive =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false);
            if alive {
                // Bounded backoff: at most 200 looks, 2 s in all.
                std::thread::sleep(Duration::from_millis(10));
            }
            !alive
        });
        assert!(gone, "sleep {pid} outlived the timeout");
    }

    #[tokio::test]
    async fn pdudaemon_refusal_and_absence_are_lab_errors() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\nno such pdu\n").await.unwrap();
            req
        });
        let pdu = PowerSwitch::Pdudaemon { daemon: addr.clone(), hostname: "rack 2".into(), port: "7".into() };
        let err = ext(pdu, Duration::from_secs(5)).power(false).await.unwrap_err().to_string();
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /power/control/off?hostname=rack%202&port=7 HTTP/1.0"), "{req}");
        assert!(err.contains("503") && err.contains("no such pdu") && err.contains(&addr), "{err}");
        // Nobody listens there any more.
        let pdu = PowerSwitch::Pdudaemon { daemon: addr, hostname: "rack".into(), port: "7".into() };
        let err = ext(pdu, Duration::from_secs(5)).power(true).await.unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_INFRA, "{err}");
    }

    #[test]
    fn a_missing_serial_device_is_named() {
        let err = open_serial(Path::new("/dev/ttyDOESNOTEXIST9"), 115_200).unwrap_err().to_string();
        assert!(err.contains("/dev/ttyDOESNOTEXIST9 does not exist"), "{err}");
    }

    #[test]
    fn qemu_only_steps_are_named_and_plain_ones_pass() {
        let t = |s: &str| serde_json::to_value(s.parse::<toml::Table>().unwrap()).unwrap();
        assert!(qemu_only("wait_qmp", &t("event = 'WATCHDOG'"), true).is_some());
        assert!(qemu_only("assert_env", &t("source = 'disk'"), false).is_some());
        assert!(qemu_only("assert_env", &t("source = 'disk'"), true).is_none());
        assert!(qemu_only("assert_env", &t("source = 'guest'"), false).is_none());
        assert!(qemu_only("corrupt_disk", &t("partition = 'env'"), false).is_some());
        assert!(qemu_only("corrupt_disk", &t("partition = 'env'"), true).is_none());
        assert!(qemu_only("arm_fault", &t("fault = 'disk_errors'"), true).is_some());
        assert!(qemu_only("arm_fault", &t("fault = 'power_cut'"), false).is_none());
        assert!(qemu_only("update", &t("version = '2'\nlink_drop = '1s'"), false).is_some());
        assert!(qemu_only("ssh", &t("command = 'true'"), false).is_none());
        assert!(qemu_only("power_cut", &t(""), false).is_none());
    }
}
