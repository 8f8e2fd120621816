//! A real etcd (Debian's `etcd-server`) run by the harness for reboot
//! coordination, and the little of its v3 API the lock service needs,
//! spoken as JSON through etcd's gRPC gateway (`/v3/kv/range`, `/v3/kv/txn`)
//! over plain HTTP/1.1 on loopback.
//!
//! Invariants:
//! - etcd listens on 127.0.0.1 only (client and peer ports), its data dir is
//!   `devlab-<pid>-etcd-<n>` in the temp dir;
//! - [`Etcd::start`] returns once etcd logged that it serves clients
//!   (read from its log as it is written, bounded), never after a guess;
//! - `Drop` (hence also a failed run or a panic) kills etcd and removes its
//!   data dir; etcd gets `PR_SET_PDEATHSIG`, so a SIGKILLed harness takes it
//!   along, and the data dir it leaves is removed by the next harness
//!   (`machine::remove_orphaned_socket_dirs` sweeps `devlab-<dead pid>-*`);
//! - [`Etcd::stop`] and [`Etcd::start_again`] take it down and up on the same
//!   data dir and ports (the "etcd down" fault): what it stored survives.
use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long etcd may take to serve after it is started.
const START_BOUND: Duration = Duration::from_secs(20);
/// One request to etcd, connect to last byte.
const REQUEST_BOUND: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd not found: install etcd-server (cargo xtask setup)")]
    Missing,
    #[error("etcd: {0}")]
    Start(String),
    #[error("etcd at {addr}: {what}")]
    Request { addr: String, what: String },
}

/// A running (or stopped) etcd and its data dir.
pub struct Etcd {
    binary: PathBuf,
    data: PathBuf,
    log: PathBuf,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A port free on 127.0.0.1 right now (the kernel's pick, released).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    /// Starts etcd with a fresh data dir; its log goes to `log`. Call it
    /// from the runtime's own thread, not a `spawn_blocking` one: the
    /// death signal fires when the spawning thread ends.
    pub async fn start(log: &Path) -> Result<Etcd, EtcdError> {
        let binary = which::which("etcd").map_err(|_| EtcdError::Missing)?;
        // Data dirs of harnesses killed outright go first.
        crate::machine::remove_orphaned_socket_dirs();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let data = std::env::temp_dir().join(format!("devlab-{}-etcd-{n}", std::process::id()));
        let io = |e: std::io::Error| EtcdError::Start(e.to_string());
        let (client, peer) = (free_port().map_err(io)?, free_port().map_err(io)?);
        let mut etcd = Etcd { binary, data, log: log.to_path_buf(), client, peer, child: None };
        etcd.start_again().await?;
        Ok(etcd)
    }

    /// Starts it (again) on the same data dir and ports; a no-op while it runs.
    pub async fn start_again(&mut self) -> Result<(), EtcdError> {
        if self.child.is_some() {
            return Ok(());
        }
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let client = self.client_url();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| EtcdError::Start(format!("{}: {e}", self.log.display())))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--name", "devlab", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("devlab={peer}"), "--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| EtcdError::Start(format!("spawning {}: {e}", self.binary.display())))?;
        let stderr = child.stderr.take().expect("piped");
        // Its log, copied line by line into the run's log file; the start-up
        // line that says it serves clients is sent back once.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = log;
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("serving client traffic") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        self.child = Some(child);
        let started = Instant::now();
        match tokio::time::timeout(START_BOUND, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                self.stop();
                let tail = crate::machine::read_tail(&self.log);
                Err(EtcdError::Start(match exited {
                    Some(status) => format!("exited ({status}) before serving; its log ends:\n{tail}"),
                    None => format!("not serving after {:.0?}; its log ends:\n{tail}", started.elapsed()),
                }))
            }
        }
    }

    /// Kills etcd (SIGKILL: the "etcd down" fault); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether etcd's process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A client of this etcd.
    pub fn client(&self) -> Client {
        Client { addr: format!("127.0.0.1:{}", self.client) }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A key's value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The v3 JSON gateway of one etcd.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Client {
    pub fn new(addr: &str) -> Client {
        Client { addr: addr.to_string() }
    }

    /// The key's value, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let reply = self.post("/v3/kv/range", &json!({ "key": b64(key.as_bytes()) })).await?;
        let Some(kv) = reply["kvs"].as_array().and_then(|a| a.first()) else { return Ok(None) };
        let value = base64::engine::general_purpose::STANDARD
            .decode(kv["value"].as_str().unwrap_or_default())
            .map_err(|e| self.bad(format!("value of {key} is not base64: {e}")))?;
        let mod_revision = kv["mod_revision"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
        Ok(Some(Kv { value, mod_revision }))
    }

    /// Writes `value` only if the key is still as read: absent (`None`) or
    /// last changed at `revision`. Returns whether it was written.
    pub async fn compare_and_swap(&self, key: &str, revision: Option<i64>, value: &[u8]) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let compare = match revision {
            // Absent: created at revision 0.
            None => json!({"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}),
            Some(r) => json!({"key": k, "result": "EQUAL", "target": "MOD", "mod_revision": r.to_string()}),
        };
        let txn = json!({
            "compare": [compare],
            "success": [{"request_put": {"key": k, "value": b64(value)}}],
        });
        let reply = self.post("/v3/kv/txn", &txn).await?;
        Ok(reply["succeeded"].as_bool().unwrap_or(false))
    }

    fn bad(&self, what: String) -> EtcdError {
        EtcdError::Request { addr: self.addr.clone(), what }
    }

    /// One POST, bounded by [`REQUEST_BOUND`]; the JSON reply of a 200.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let exchange = async {
            let mut conn = tokio::net::TcpStream::connect(&self.addr).await?;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.addr,
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(body.as_bytes()).await?;
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = match tokio::time::timeout(REQUEST_BOUND, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.bad(format!("{path}: {e}"))),
            Err(_) => return Err(self.bad(format!("{path}: no answer in {REQUEST_BOUND:?}"))),
        };
        let text = String::from_utf8_lossy(&reply);
        let (head, rest) = text.split_once("\r\n\r\n").ok_or_else(|| self.bad(format!("{path}: no HTTP reply")))?;
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
        let body = if chunked { dechunk(rest) } else { rest.to_string() };
        if status != "200" {
            return Err(self.bad(format!("{path}: HTTP {status}: {}", body.trim())));
        }
        serde_json::from_str(&body).map_err(|e| self.bad(format!("{path}: not JSON ({e}): {}", body.trim())))
    }
}

/// The body of a chunked HTTP/1.1 reply.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }
}
