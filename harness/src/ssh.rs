//! SSH to the guest over the port QEMU forwards on 127.0.0.1. ssh2 (libssh2)
//! is blocking, so every call runs under `spawn_blocking` with a session
//! timeout. Waiting for SSH: slirp accepts a host-side connection at once
//! even while nothing listens in the guest, so a connect proves nothing; the
//! wait opens a fresh connection every ~50 ms (at most 3 open at once),
//! keeps each for up to 0.5 s, and takes the first that shows the `SSH-`
//! banner (peeked, not consumed, so libssh2 still reads it); after 5 s it
//! backs off (longer patience, fewer connections: a slow guest's OpenSSH
//! never answers a flood). The socket has TCP_NODELAY (commands are
//! small exchanges). Every command goes to the SSH transcript.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Spacing of connection attempts while waiting for the guest's sshd
/// (while the wait is young: each attempt is cheap and bounded).
const ATTEMPT_SPACING: Duration = Duration::from_millis(50);
/// How long one attempt waits for the banner before giving up on it.
const ATTEMPT_PATIENCE: Duration = Duration::from_millis(500);
/// Connection attempts open at once, at most.
const MAX_OPEN: usize = 3;
/// After this long without a banner, attempts back off (see [`pace`]).
const FAST_PHASE: Duration = Duration::from_secs(5);
/// The longest one attempt waits for a banner.
const MAX_PATIENCE: Duration = Duration::from_secs(8);

/// Spacing and patience of the next attempt after `waited` without a
/// banner. First every 50 ms, each kept 0.5 s (a fast guest: slirp accepts
/// the host side at once, so a connection that sees no banner may be one
/// nothing will ever answer). Then a backoff: a slow guest's sshd (OpenSSH
/// re-executing itself per connection under TCG) needs more than 0.5 s per
/// banner, and a flood of new connections keeps it from ever answering; so
/// each attempt waits longer (a quarter of the wait so far, up to 8 s) and
/// at most ~4 are open at once.
fn pace(waited: Duration) -> (Duration, Duration) {
    if waited < FAST_PHASE {
        return (ATTEMPT_SPACING, ATTEMPT_PATIENCE);
    }
    let patience = (waited / 4).clamp(ATTEMPT_PATIENCE, MAX_PATIENCE);
    (patience / 4, patience)
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("SSH on {host}:{port} not up after {waited:?} (last error: {last})")]
    NotUp { host: String, port: u16, waited: Duration, last: String },
    #[error("SSH: {0}")]
    Session(String),
    #[error("SSH command `{command}` timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("not connected: wait for SSH first")]
    NotConnected,
}

/// What a remote command did.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// An SSH client for one machine.
pub struct Ssh {
    /// Where sshd answers: QEMU's forward on 127.0.0.1, or an external
    /// board's address.
    host: String,
    port: u16,
    user: String,
    auth: crate::device::SshAuth,
    transcript: PathBuf,
    t0: Instant,
    session: Arc<Mutex<Option<ssh2::Session>>>,
}

impl Ssh {
    pub fn new(port: u16, key: &Path, transcript: PathBuf, t0: Instant) -> Ssh {
        let auth = crate::device::SshAuth::Key(key.to_path_buf());
        let host = "127.0.0.1".into();
        Ssh { host, port, user: "root".into(), auth, transcript, t0, session: Arc::new(Mutex::new(None)) }
    }

    /// Reach sshd at `host` (an external board) instead of 127.0.0.1.
    pub fn with_host(mut self, host: &str) -> Ssh {
        self.host = host.to_string();
        self
    }

    /// Log in as `user` with `auth` (a device profile's) instead of root
    /// with devlab's key.
    pub fn with_login(mut self, user: &str, auth: crate::device::SshAuth) -> Ssh {
        self.user = user.to_string();
        self.auth = auth;
        self
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forget the session (the guest rebooted or was powered off).
    pub fn disconnect(&self) {
        *self.session.lock().unwrap() = None;
    }

    fn note(&self, text: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.transcript) {
            for line in text.lines() {
                let _ = writeln!(f, "[{t:10.6}] {line}");
            }
        }
    }

    /// Wait until the guest's sshd answers, then log in. Bounded by `timeout`.
    pub async fn wait_up(&self, timeout: Duration) -> Result<(), SshError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let (host, port) = (self.host.clone(), self.port);
        let mut attempts = JoinSet::new();
        let mut next = tokio::time::Instant::now();
        let mut last = String::from("no attempt finished");
        let stream = loop {
            tokio::select! {
                // Never more than MAX_OPEN at once: each connection sshd
                // accepts costs it a fork and exec, which a slow guest feels.
                _ = tokio::time::sleep_until(next), if attempts.len() < MAX_OPEN => {
                    let (spacing, patience) = pace(started.elapsed());
                    attempts.spawn(banner_attempt(host.clone(), port, patience));
                    next = next.max(tokio::time::Instant::now() - spacing) + spacing;
                }
                Some(r) = attempts.join_next(), if !attempts.is_empty() => match r {
                    Ok(Ok(s)) => break s,
                    Ok(Err(e)) => last = e,
                    Err(e) => last = e.to_string(),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(SshError::NotUp { host, port, waited: timeout, last });
                }
            }
        };
        attempts.abort_all();
        let std_stream = stream.into_std().map_err(|e| SshError::Session(e.to_string()))?;
        std_stream.set_nonblocking(false).map_err(|e| SshError::Session(e.to_string()))?;
        // Commands are small request/answer exchanges: Nagle's algorithm
        // would hold each back for the peer's delayed ACK.
        std_stream.set_nodelay(true).map_err(|e| SshError::Session(e.to_string()))?;
        let auth = self.auth.clone();
        let user = self.user.clone();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(5));
        let session = tokio::task::spawn_blocking(move || login(std_stream, &user, &auth, remaining))
            .await
            .map_err(|e| SshError::Session(e.to_string()))??;
        *self.session.lock().unwrap() = Some(session);
        let user = &self.user;
        self.note(&format!("# logged in as {user} on {host}:{port} after {:.3}s", started.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Run `f` on the logged-in session in a blocking thread (libssh2
    /// blocks), the session's timeout set to `timeout`.
    async fn on_session<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&ssh2::Session) -> Result<T, SshError> + Send + 'static,
    ) -> Result<T, SshError> {
        let session = self.session.clone();
        tokio::task::spawn_blocking(move || {
            let guard = session.lock().unwrap();
            let sess = guard.as_ref().ok_or(SshError::NotConnected)?;
            sess.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
            f(sess)
        })
        .await
        .map_err(|e| SshError::Session(e.to_string()))?
    }

    /// Run `command`, feeding `stdin`, and collect its output and status.
    pub async fn exec_with_input(&self, command: &str, stdin: Vec<u8>, timeout: Duration) -> Result<Output, SshError> {
        let cmd = command.to_string();
        let res = self
            .on_session(timeout, move |sess| {
                run(sess, &cmd, &stdin).map_err(|e| {
                    // libssh2 reports its session timeout as error -9.
                    if e.contains("[Session(-9)]") || e.to_lowercase().contains("timed out") {
                        SshError::Timeout { command: cmd.clone(), timeout }
                    } else {
                        SshError::Session(format!("`{cmd}`: {e}"))
                    }
                })
            })
            .await;
        match &res {
            Ok(o) => {
                let mut t = format!("$ {command}\n");
                for l in o.stdout.lines() {
                    t.push_str(&format!("  {l}\n"));
                }
                for l in o.stderr.lines() {
                    t.push_str(&format!("  stderr: {l}\n"));
                }
                t.push_str(&format!("  exit {}", o.status));
                self.note(&t);
            }
            Err(e) => self.note(&format!("$ {command}\n  error: {e}")),
        }
        if matches!(res, Err(SshError::Session(_) | SshError::Timeout { .. })) {
            self.disconnect();
        }
        res
    }

    /// Run `command` on a terminal until its output matches `until` (checked
    /// as each chunk arrives): `Some(the match)`; `None` when the command
    /// ended first (its output and status go to the transcript). The
    /// session is not reused afterwards: the caller cuts the power.
    pub async fn exec_until_output(
        &self,
        command: &str,
        until: regex::Regex,
        timeout: Duration,
    ) -> Result<Option<String>, SshError> {
        let cmd = command.to_string();
        let res = self
            .on_session(timeout, move |sess| {
                read_until(sess, &cmd, &until).map_err(|e| SshError::Session(format!("`{cmd}`: {e}")))
            })
            .await;
        self.disconnect();
        match &res {
            Ok((out, Some(m))) => {
                let lines: String = out.lines().map(|l| format!("  {l}\n")).collect();
                self.note(&format!("$ {command}\n{lines}  (its output matched {m:?}: stopped reading)"))
            }
            Ok((out, None)) => {
                let lines: String = out.lines().map(|l| format!("  {l}\n")).collect();
                self.note(&format!("$ {command}\n{lines}  ended before its output matched"))
            }
            Err(e) => self.note(&format!("$ {command}\n  error: {e}")),
        }
        res.map(|(_, m)| m)
    }

    pub async fn exec(&self, command: &str, timeout: Duration) -> Result<Output, SshError> {
        self.exec_with_input(command, Vec::new(), timeout).await
    }

    /// Write `data` to `remote` in the guest (through `cat`, which every
    /// busybox has; no sftp server needed).
    pub async fn upload(&self, data: Vec<u8>, remote: &str, mode: u32, timeout: Duration) -> Result<(), SshError> {
        let q = crate::machine::shell_quote(remote);
        let out = self.exec_with_input(&format!("cat > {q} && chmod {mode:o} {q}"), data, timeout).await?;
        if out.status != 0 {
            return Err(SshError::Session(format!("upload to {remote} failed: {}", out.stderr.trim())));
        }
        Ok(())
    }
}

/// One attempt: connect and wait (bounded) until the server's banner starts.
async fn banner_attempt(host: String, port: u16, patience: Duration) -> Result<TcpStream, String> {
    let attempt = async {
        let s = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        loop {
            let n = s.peek(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before the banner".to_string());
            }
            if n >= 4 {
                return if &buf == b"SSH-" { Ok(s) } else { Err(format!("not an SSH banner: {buf:?}")) };
            }
            // Fewer than 4 bytes so far: wait for more to arrive.
            s.readable().await.map_err(|e| e.to_string())?;
        }
    };
    let err = || format!("no banner within {:.1} s", patience.as_secs_f64());
    tokio::time::timeout(patience, attempt).await.map_err(|_| err())?
}

fn login(
    stream: StdTcpStream,
    user: &str,
    auth: &crate::device::SshAuth,
    timeout: Duration,
) -> Result<ssh2::Session, SshError> {
    let err = |what: &str, e: ssh2::Error| SshError::Session(format!("{what}: {e}"));
    let mut sess = ssh2::Session::new().map_err(|e| err("session", e))?;
    sess.set_timeout(timeout.as_millis() as u32);
    sess.set_tcp_stream(stream);
    sess.handshake().map_err(|e| err("handshake", e))?;
    match auth {
        crate::device::SshAuth::Key(key) => sess
            .userauth_pubkey_file(user, None, key, None)
            .map_err(|e| err(&format!("public key login as {user} with {}", key.display()), e))?,
        // The password itself is never part of a message.
        crate::device::SshAuth::Password(p) => {
            sess.userauth_password(user, p).map_err(|e| err(&format!("password login as {user}"), e))?
        }
    }
    if !sess.authenticated() {
        return Err(SshError::Session("not authenticated".into()));
    }
    Ok(sess)
}

/// Run `cmd` on a terminal (so its output is line-buffered; stderr joins
/// stdout) reading its output until `until` matches it: (the output so
/// far, the match), or the whole output and `None` when it ends first.
fn read_until(sess: &ssh2::Session, cmd: &str, until: &regex::Regex) -> Result<(String, Option<String>), String> {
    let mut ch = sess.channel_session().map_err(|e| format!("channel: {e}"))?;
    // On a terminal a program's stdio is line-buffered: its progress
    // arrives as it is printed, not in one block when it exits.
    ch.request_pty("dumb", None, Some((200, 50, 0, 0))).map_err(|e| format!("pty: {e}"))?;
    ch.exec(cmd).map_err(|e| format!("exec: {e}"))?;
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = ch.read(&mut buf).map_err(|e| format!("stdout: {e}"))?;
        if n == 0 {
            return Ok((String::from_utf8_lossy(&out).replace("\r\n", "\n"), None));
        }
        out.extend_from_slice(&buf[..n]);
        // A terminal ends lines with CR LF: give the pattern plain lines.
        let text = String::from_utf8_lossy(&out).replace("\r\n", "\n");
        if let Some(m) = until.find(&text) {
            let m = m.as_str().to_string();
            return Ok((text, Some(m)));
        }
    }
}

fn run(sess: &ssh2::Session, cmd: &str, stdin: &[u8]) -> Result<Output, String> {
    fn e(what: &'static str) -> impl Fn(ssh2::Error) -> String {
        move |err| format!("{what}: {err} [{:?}]", err.code())
    }
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    let mut ch = sess.channel_session().map_err(e("channel"))?;
    ch.exec(cmd).map_err(e("exec"))?;
    if !stdin.is_empty() {
        ch.write_all(stdin).map_err(io("stdin"))?;
    }
    ch.send_eof().map_err(e("eof"))?;
    let mut stdout = Vec::new();
    ch.read_to_end(&mut stdout).map_err(io("stdout"))?;
    let mut stderr = Vec::new();
    ch.stderr().read_to_end(&mut stderr).map_err(io("stderr"))?;
    ch.wait_close().map_err(e("close"))?;
    Ok(Output {
        status: ch.exit_status().map_err(e("exit status"))?,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A listener that accepts but stays silent (like slirp before sshd is
    /// up), then one that sends a banner: only the banner counts as "up".
    #[tokio::test]
    async fn banner_attempt_requires_the_banner() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let err = banner_attempt("127.0.0.1".into(), port, ATTEMPT_PATIENCE).await.unwrap_err();
        assert!(err.contains("no banner"), "{err}");
        keep.abort();

        let talker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = talker.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = talker.accept().await.unwrap();
            s.write_all(b"SS").await.unwrap();
            s.write_all(b"H-2.0-dropbear\r\n").await.unwrap();
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut [0u8; 1]).await;
        });
        let s = banner_attempt("127.0.0.1".into(), port, ATTEMPT_PATIENCE).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.peek(&mut buf).await.unwrap(), 8, "banner still unread for libssh2");
    }

    #[test]
    fn attempts_back_off_after_the_fast_phase() {
        assert_eq!(pace(Duration::from_secs(1)), (ATTEMPT_SPACING, ATTEMPT_PATIENCE));
        let (spacing, patience) = pace(Duration::from_secs(20));
        assert_eq!((spacing, patience), (Duration::from_millis(1250), Duration::from_secs(5)));
        assert_eq!(pace(Duration::from_secs(600)).1, MAX_PATIENCE);
        // Never more than ~4 open at once once backed off.
        for s in [6, 10, 40, 200] {
            let (spacing, patience) = pace(Duration::from_secs(s));
            assert!(patience.as_millis() / spacing.as_millis() <= 4, "{s}s");
        }
    }

    #[tokio::test]
    async fn wait_up_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // A port with nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ssh = Ssh::new(port, Path::new("/nonexistent"), dir.path().join("ssh.log"), Instant::now());
        let started = Instant::now();
        let err = ssh.wait_up(Duration::from_millis(400)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(err, SshError::NotUp { .. }), "{err}");
    }

    /// A guest whose sshd accepts but is slow to answer (OpenSSH forking
    /// and exec'ing per connection under TCG) never has more than MAX_OPEN
    /// of the wait's connections open at once.
    #[tokio::test]
    async fn a_silent_server_never_sees_more_than_max_open_connections() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (open, most, total) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (o, m, t) = (open.clone(), most.clone(), total.clone());
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let (o, m) = (o.clone(), m.clone());
                t.fetch_add(1, SeqCst);
                m.fetch_max(o.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    // Silent until the client gives up on this connection.
                    while tokio::io::AsyncReadExt::read(&mut s, &mut buf).await.is_ok_and(|n| n > 0) {}
                    o.fetch_sub(1, SeqCst);
                });
            }
        });
        let ssh = Ssh::new(port, Path::new("/nonexistent"), dir.path().join("ssh.log"), Instant::now());
        let err = ssh.wait_up(Duration::from_millis(1500)).await.unwrap_err();
        server.abort();
        assert!(matches!(err, SshError::NotUp { .. }), "{err}");
        assert!(total.load(SeqCst) > MAX_OPEN, "it went on trying: {} connections", total.load(SeqCst));
        assert!(most.load(SeqCst) <= MAX_OPEN, "{} open at once", most.load(SeqCst));
    }
}
