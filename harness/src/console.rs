//! Serial console. A reader task takes bytes from the socket QEMU connects to
//! as they arrive (no sleep-polling), keeps them in memory, and writes them
//! to `serial.log` with a timestamp at each line start. `expect` matches
//! regexes on bytes from a cursor: the earliest match among the patterns
//! wins; armed "bad patterns" (`Kernel panic`, `Unknown command` …) fail at
//! once. Every failure carries the last lines seen and the log path.
//! Triggers (armed faults) are matched by the reader task itself, as the
//! bytes arrive, and run their hook there at once (e.g. freeze QEMU), so a
//! fault tied to a console line lands at the same point every run, however
//! busy the runtime is. This module never spawns or kills QEMU itself.

use regex::bytes::Regex;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// The console's read side: QEMU's socket, a TCP console server
/// (ser2net), a serial device, or a command's stdout.
pub type ConsoleRead = Box<dyn AsyncRead + Send + Unpin>;
/// The console's write side (what the guest's serial port receives).
pub type ConsoleWrite = Box<dyn AsyncWrite + Send + Unpin>;
use tokio::sync::{broadcast, watch};

/// How many lines a console error carries.
pub const ERROR_LINES: usize = 40;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsoleError {
    #[error("timed out after {waited:?} waiting for {wanted} on the console (log: {})", log.display())]
    Timeout { wanted: String, waited: Duration, last_lines: Vec<String>, log: PathBuf },
    #[error("bad pattern `{label}` on the console: {line:?} (log: {})", log.display())]
    Bad { label: String, line: String, last_lines: Vec<String>, log: PathBuf },
    #[error("console closed (QEMU exited) while waiting for {wanted} (log: {})", log.display())]
    Closed { wanted: String, last_lines: Vec<String>, log: PathBuf },
    #[error("console write failed: {0}")]
    Write(String),
}

impl ConsoleError {
    pub fn last_lines(&self) -> &[String] {
        match self {
            ConsoleError::Timeout { last_lines, .. }
            | ConsoleError::Bad { last_lines, .. }
            | ConsoleError::Closed { last_lines, .. } => last_lines,
            ConsoleError::Write(_) => &[],
        }
    }
}

/// A successful match.
#[derive(Debug, Clone)]
pub struct Match {
    /// Which of the patterns matched.
    pub index: usize,
    pub text: String,
    /// Named capture groups.
    pub captures: Vec<(String, String)>,
    /// Seconds since power-on when the matched bytes arrived.
    pub at: f64,
    /// Byte offset just past the match.
    pub end: usize,
}

#[derive(Default)]
struct Inner {
    bytes: Vec<u8>,
    /// (offset, seconds since power-on) of each chunk as it arrived.
    chunks: Vec<(usize, f64)>,
    closed: bool,
}

impl Inner {
    fn time_at(&self, offset: usize) -> f64 {
        let i = self.chunks.partition_point(|(o, _)| *o <= offset);
        if i == 0 {
            0.0
        } else {
            self.chunks[i - 1].1
        }
    }
}

/// A console pattern the reader watches for, with what it does at once.
struct Trigger {
    regex: Regex,
    /// Scan from here (bytes before it were there when it was armed).
    from: usize,
    hook: Option<Box<dyn FnOnce() + Send>>,
    fired: watch::Sender<Option<usize>>,
}

struct Shared {
    inner: Mutex<Inner>,
    triggers: Mutex<Vec<Trigger>>,
    len_tx: watch::Sender<usize>,
    live: broadcast::Sender<Vec<u8>>,
    log: PathBuf,
}

/// A pattern that fails the run as soon as it appears.
#[derive(Clone)]
pub struct BadPattern {
    pub label: String,
    pub regex: Regex,
}

/// The console of one machine.
pub struct Console {
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<Option<ConsoleWrite>>>,
    cursor: usize,
    bad: Vec<BadPattern>,
    bad_cursor: usize,
    /// Where this power-on's output starts (see [`Console::forget_past`]).
    origin: usize,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Console {
    /// Take over the stream QEMU opened for the serial port.
    pub fn start(stream: UnixStream, log: PathBuf, t0: Instant) -> std::io::Result<Console> {
        let (read, write) = stream.into_split();
        Self::start_on(Box::new(read), Box::new(write), log, t0)
    }

    /// Take over any console line (an external board's: see
    /// [`crate::external`]).
    pub fn start_on(read: ConsoleRead, write: ConsoleWrite, log: PathBuf, t0: Instant) -> std::io::Result<Console> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let (len_tx, _) = watch::channel(0);
        let (live, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            triggers: Mutex::new(Vec::new()),
            len_tx,
            live,
            log,
        });
        let reader = tokio::spawn(read_loop(read, shared.clone(), file, t0));
        Ok(Console {
            shared,
            writer: Arc::new(tokio::sync::Mutex::new(Some(write))),
            cursor: 0,
            bad: Vec::new(),
            bad_cursor: 0,
            origin: 0,
            reader,
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.shared.log
    }

    /// Arm a bad pattern: from now on, its appearance fails the current wait.
    pub fn arm_bad(&mut self, label: &str, regex: Regex) {
        self.bad.retain(|b| b.label != label);
        self.bad.push(BadPattern { label: label.to_string(), regex });
    }

    /// Disarm the bad pattern `label` (a `refuse` that a later step lifts).
    pub fn disarm_bad(&mut self, label: &str) {
        self.bad.retain(|b| b.label != label);
    }

    /// Arm a trigger: the first match of `regex` in bytes that arrive from
    /// now on runs `hook` inside the reader, before anything else reads
    /// those bytes, and the returned receiver then holds the offset just
    /// past the match.
    pub fn arm_trigger(&self, regex: Regex, hook: Box<dyn FnOnce() + Send>) -> watch::Receiver<Option<usize>> {
        let (fired, rx) = watch::channel(None);
        let from = self.len();
        self.shared.triggers.lock().unwrap().push(Trigger { regex, from, hook: Some(hook), fired });
        // Bytes may have arrived between `len` and the push: check them now.
        let inner = self.shared.inner.lock().unwrap();
        check_triggers(&self.shared, &inner.bytes, 0);
        rx
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.shared.inner.lock().unwrap().bytes.len()
    }

    /// Let the next `expect` see only bytes that arrive from now on (a
    /// prompt printed before is stale: a serial login wakes it again).
    pub fn skip_to_end(&mut self) {
        self.cursor = self.len();
    }

    /// Wait (at most `timeout`) until `re` matches bytes from offset `from`
    /// on, without moving the expect cursor; returns the offset past the
    /// match (an external board's reset seen as its firmware's banner,
    /// which the next step still reads).
    pub async fn seen_after(&self, re: &Regex, from: usize, timeout: Duration) -> Result<usize, ConsoleError> {
        let mut rx = self.shared.len_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let inner = self.shared.inner.lock().unwrap();
                let from = from.min(inner.bytes.len());
                if let Some(m) = re.find(&inner.bytes[from..]) {
                    return Ok(from + m.end());
                }
                if inner.closed {
                    let (wanted, log) = (format!("`{}`", re.as_str()), self.shared.log.clone());
                    return Err(ConsoleError::Closed {
                        wanted,
                        last_lines: last_lines(&inner.bytes, ERROR_LINES),
                        log,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(ConsoleError::Timeout {
                    wanted: format!("`{}`", re.as_str()),
                    waited: timeout,
                    last_lines: self.last_lines(ERROR_LINES),
                    log: self.shared.log.clone(),
                });
            }
        }
    }

    /// The bytes received from offset `from` on.
    pub fn bytes_from(&self, from: usize) -> Vec<u8> {
        let inner = self.shared.inner.lock().unwrap();
        inner.bytes.get(from..).unwrap_or_default().to_vec()
    }

    /// Forget everything received so far, for good: the next `expect`, bad
    /// pattern and trigger see only what arrives from now on (an external
    /// board's serial line hands over what it buffered while nobody read it:
    /// the previous power-on's last words).
    pub fn forget_past(&mut self) {
        self.cursor = self.len();
        self.bad_cursor = self.cursor;
        self.origin = self.cursor;
    }

    /// Where this power-on's output starts: 0, or what
    /// [`Console::forget_past`] forgot.
    pub fn origin(&self) -> usize {
        self.origin
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last `n` lines received (without `\r`).
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let inner = self.shared.inner.lock().unwrap();
        last_lines(&inner.bytes, n)
    }

    /// Complete lines starting at or after byte `from`, with their arrival
    /// time and the offset just past each line.
    pub fn lines_from(&self, from: usize) -> Vec<(String, f64, usize)> {
        let inner = self.shared.inner.lock().unwrap();
        let mut out = Vec::new();
        let mut start = from.min(inner.bytes.len());
        while let Some(nl) = inner.bytes[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            let text = String::from_utf8_lossy(&inner.bytes[start..end]);
            out.push((
                text.trim_end_matches(['\n', '\r']).trim_start_matches('\r').to_string(),
                inner.time_at(start),
                end,
            ));
            start = end;
        }
        out
    }

    /// The line (possibly incomplete) that contains byte `offset`: its
    /// start offset, text and arrival time.
    pub fn line_at(&self, offset: usize) -> Option<(usize, String, f64)> {
        let inner = self.shared.inner.lock().unwrap();
        if offset > inner.bytes.len() {
            return None;
        }
        let start = inner.bytes[..offset].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let end = inner.bytes[start..].iter().position(|b| *b == b'\n').map_or(inner.bytes.len(), |p| start + p);
        let text = String::from_utf8_lossy(&inner.bytes[start..end]);
        Some((start, text.trim_matches(['\r', '\n']).to_string(), inner.time_at(start)))
    }

    /// Wait (at most `timeout`) until the line containing byte `offset` is
    /// complete; the expect cursor does not move. Returns whether it is.
    pub async fn wait_line_end(&self, offset: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.len_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let inner = self.shared.inner.lock().unwrap();
                if inner.bytes.get(offset..).is_some_and(|rest| rest.contains(&b'\n')) {
                    return true;
                }
                if inner.closed {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return false;
            }
        }
    }

    /// Send bytes to the guest's serial port.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let mut w = self.writer.lock().await;
        let w = w.as_mut().ok_or_else(|| ConsoleError::Write("console detached".into()))?;
        w.write_all(bytes).await.map_err(|e| ConsoleError::Write(e.to_string()))
    }

    /// Wait for the earliest match of any of `patterns` after the cursor.
    pub async fn expect(&mut self, patterns: &[Regex], timeout: Duration) -> Result<Match, ConsoleError> {
        let wanted = patterns.iter().map(|p| format!("`{}`", p.as_str())).collect::<Vec<_>>().join(" or ");
        let mut rx = self.shared.len_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let inner = self.shared.inner.lock().unwrap();
                let hay = &inner.bytes[self.cursor..];
                let good = patterns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.captures(hay).map(|c| (i, c)))
                    .min_by_key(|(i, c)| (c.get(0).unwrap().start(), *i));
                let good_start = good.as_ref().map(|(_, c)| c.get(0).unwrap().start());
                if let Some((label, s, _)) = self.first_bad(&inner.bytes, self.cursor) {
                    if good_start.is_none_or(|g| self.cursor + g > s) {
                        return Err(self.bad_error(&inner, label, s));
                    }
                }
                if let Some((i, c)) = good {
                    let m = c.get(0).unwrap();
                    let names = patterns[i].capture_names().flatten();
                    let captures = names
                        .filter_map(|n| {
                            c.name(n).map(|v| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        })
                        .collect();
                    let at = inner.time_at(self.cursor + m.start());
                    let end = self.cursor + m.end();
                    let text = String::from_utf8_lossy(m.as_bytes()).into_owned();
                    drop(inner);
                    self.cursor = end;
                    return Ok(Match { index: i, text, captures, at, end });
                }
                if inner.closed {
                    return Err(ConsoleError::Closed {
                        wanted,
                        last_lines: last_lines(&inner.bytes, ERROR_LINES),
                        log: self.shared.log.clone(),
                    });
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(ConsoleError::Timeout {
                    wanted,
                    waited: timeout,
                    last_lines: self.last_lines(ERROR_LINES),
                    log: self.shared.log.clone(),
                });
            }
        }
    }

    /// Resolves when an armed bad pattern appears after the last check (to be
    /// raced against waits that do not read the console, such as SSH).
    pub async fn wait_bad(&mut self) -> ConsoleError {
        let mut rx = self.shared.len_tx.subscribe();
        loop {
            {
                let inner = self.shared.inner.lock().unwrap();
                if let Some((label, s, _)) = self.first_bad(&inner.bytes, self.bad_cursor) {
                    let e = self.bad_error(&inner, label, s);
                    return e;
                }
                // Only complete lines are settled; rescan the partial tail.
                self.bad_cursor = inner
                    .bytes
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(self.bad_cursor, |p| p + 1)
                    .max(self.bad_cursor);
                if inner.closed {
                    return ConsoleError::Closed {
                        wanted: "the machine to keep running".into(),
                        last_lines: last_lines(&inner.bytes, ERROR_LINES),
                        log: self.shared.log.clone(),
                    };
                }
            }
            if rx.changed().await.is_err() {
                return ConsoleError::Closed {
                    wanted: "the machine to keep running".into(),
                    last_lines: self.last_lines(ERROR_LINES),
                    log: self.shared.log.clone(),
                };
            }
        }
    }

    fn first_bad(&self, bytes: &[u8], from: usize) -> Option<(String, usize, usize)> {
        let from = from.min(bytes.len());
        self.bad
            .iter()
            .filter_map(|b| b.regex.find(&bytes[from..]).map(|m| (b.label.clone(), from + m.start(), from + m.end())))
            .min_by_key(|(_, s, _)| *s)
    }

    fn bad_error(&self, inner: &Inner, label: String, at: usize) -> ConsoleError {
        let line_start = inner.bytes[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let line_end = inner.bytes[at..].iter().position(|b| *b == b'\n').map_or(inner.bytes.len(), |p| at + p);
        let line = String::from_utf8_lossy(&inner.bytes[line_start..line_end]).trim().to_string();
        ConsoleError::Bad {
            label,
            line,
            last_lines: last_lines(&inner.bytes, ERROR_LINES),
            log: self.shared.log.clone(),
        }
    }

    /// Serve the console on a unix socket for people to attach to (kept
    /// machines): each client gets the recent output, then live bytes; what
    /// it types goes to the guest. Runs until the returned task is aborted.
    pub fn serve_attach(&self, path: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let shared = self.shared.clone();
        let writer = self.writer.clone();
        Ok(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mut r, mut w) = stream.into_split();
                let mut live = shared.live.subscribe();
                let recent = {
                    let inner = shared.inner.lock().unwrap();
                    let from = inner.bytes.len().saturating_sub(4096);
                    inner.bytes[from..].to_vec()
                };
                tokio::spawn(async move {
                    if w.write_all(&recent).await.is_err() {
                        return;
                    }
                    while let Ok(chunk) = live.recv().await {
                        if w.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let mut g = writer.lock().await;
                        let Some(w) = g.as_mut() else { return };
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }))
    }
}

async fn read_loop(mut read: ConsoleRead, shared: Arc<Shared>, mut log: std::fs::File, t0: Instant) {
    let mut buf = vec![0u8; 16384];
    let mut at_line_start = true;
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let t = t0.elapsed().as_secs_f64();
        let chunk = &buf[..n];
        let _ = log.write_all(&timestamped(chunk, t, &mut at_line_start));
        let len = {
            let mut inner = shared.inner.lock().unwrap();
            let offset = inner.bytes.len();
            inner.chunks.push((offset, t));
            inner.bytes.extend_from_slice(chunk);
            check_triggers(&shared, &inner.bytes, offset);
            inner.bytes.len()
        };
        let _ = shared.live.send(chunk.to_vec());
        shared.len_tx.send_replace(len);
    }
    let _ = log.flush();
    shared.inner.lock().unwrap().closed = true;
    shared.len_tx.send_modify(|_| {});
}

/// Fire every armed trigger whose pattern now matches, scanning from the
/// start of the line that holds byte `new_from` (a match may span chunks
/// within a line; patterns that span lines use `(?s)` and are scanned from
/// where they were armed).
fn check_triggers(shared: &Shared, bytes: &[u8], new_from: usize) {
    let mut triggers = shared.triggers.lock().unwrap();
    // A trigger nobody waits for any more (its step ended, its fault was
    // disarmed) must not freeze the machine.
    triggers.retain(|t| !t.fired.is_closed());
    if triggers.is_empty() {
        return;
    }
    let line_start = bytes[..new_from.min(bytes.len())].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for t in triggers.iter_mut().filter(|t| t.hook.is_some()) {
        let spans_lines = t.regex.as_str().starts_with("(?s)");
        let start = if spans_lines { t.from } else { line_start.max(t.from) };
        if let Some(m) = t.regex.find_at(bytes, start.min(bytes.len())) {
            if let Some(hook) = t.hook.take() {
                hook();
            }
            let _ = t.fired.send(Some(m.end()));
        }
    }
    triggers.retain(|t| t.hook.is_some());
}

/// The log form of a chunk: `\r` dropped, `[  secs] ` before each line.
fn timestamped(chunk: &[u8], t: f64, at_line_start: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 32);
    for &b in chunk {
        if b == b'\r' {
            continue;
        }
        if *at_line_start {
            out.extend_from_slice(format!("[{t:10.6}] ").as_bytes());
            *at_line_start = false;
        }
        out.push(b);
        if b == b'\n' {
            *at_line_start = true;
        }
    }
    out
}

fn last_lines(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<String> = text.split('\n').map(|l| l.replace('\r', "")).filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Console, UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let c = Console::start(ours, dir.path().join("serial.log"), Instant::now()).unwrap();
        (c, theirs, dir)
    }

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    #[tokio::test]
    async fn earliest_match_wins_across_chunks() {
        let (mut c, mut peer, _d) = pair();
        peer.write_all(b"U-Boot 2023.01\r\r\nHit any key to st").await.unwrap();
        let waiter = tokio::spawn(async move {
            let m = c.expect(&[re("=> "), re("Hit any key to stop autoboot")], Duration::from_secs(5)).await;
            (c, m)
        });
        peer.write_all(b"op autoboot:  2 \r\r\n=> ").await.unwrap();
        let (mut c, m) = waiter.await.unwrap();
        let m = m.unwrap();
        assert_eq!(m.index, 1, "the autoboot line comes first");
        // The cursor moved past it: the prompt is next.
        let m = c.expect(&[re("=> ")], Duration::from_secs(5)).await.unwrap();
        assert_eq!(m.index, 0);
        assert_eq!(c.last_lines(1), vec!["=> ".to_string()]);
    }

    #[tokio::test]
    async fn named_captures_are_returned() {
        let (mut c, mut peer, _d) = pair();
        peer.write_all(b"devlab-boot: slot B tries-left 2\n").await.unwrap();
        let m = c.expect(&[re(r"slot (?<slot>[AB]) tries-left (?<left>\d+)")], Duration::from_secs(5)).await.unwrap();
        assert_eq!(m.captures, vec![("slot".into(), "B".into()), ("left".into(), "2".into())]);
    }

    #[tokio::test]
    async fn bad_pattern_fails_at_once_with_last_lines() {
        let (mut c, mut peer, _d) = pair();
        c.arm_bad("kernel panic", re("Kernel panic"));
        peer.write_all(b"booting\nKernel panic - not syncing: VFS\nmore\n").await.unwrap();
        let started = Instant::now();
        let err = c.expect(&[re("login:")], Duration::from_secs(30)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match &err {
            ConsoleError::Bad { label, line, last_lines, .. } => {
                assert_eq!(label, "kernel panic");
                assert_eq!(line, "Kernel panic - not syncing: VFS");
                assert!(last_lines.contains(&"booting".to_string()));
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[tokio::test]
    async fn good_match_before_bad_pattern_succeeds() {
        let (mut c, mut peer, _d) = pair();
        c.arm_bad("unknown command", re("Unknown command"));
        peer.write_all(b"ready\nUnknown command 'x'\n").await.unwrap();
        c.expect(&[re("ready")], Duration::from_secs(5)).await.unwrap();
        let err = c.expect(&[re("never")], Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, ConsoleError::Bad { .. }), "{err}");
    }

    #[tokio::test]
    async fn timeout_reports_pattern_and_last_lines() {
        let (mut c, mut peer, _d) = pair();
        for i in 0..50 {
            peer.write_all(format!("line {i}\r\n").as_bytes()).await.unwrap();
        }
        let err = c.expect(&[re("never")], Duration::from_millis(200)).await.unwrap_err();
        let ConsoleError::Timeout { wanted, last_lines, .. } = &err else { panic!("{err}") };
        assert_eq!(wanted, "`never`");
        assert_eq!(last_lines.len(), ERROR_LINES);
        assert_eq!(last_lines.last().unwrap(), "line 49");
        assert!(err.to_string().contains("serial.log"), "{err}");
    }

    #[tokio::test]
    async fn closed_console_fails_fast() {
        let (mut c, peer, _d) = pair();
        drop(peer);
        let err = c.expect(&[re("never")], Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, ConsoleError::Closed { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_trigger_fires_in_the_reader_once_across_chunks() {
        let (c, mut peer, _d) = pair();
        peer.write_all(b"virtio write: device 0 old\n").await.unwrap();
        // Wait until the old line is read, so only new bytes count.
        while c.len() < 27 {
            tokio::task::yield_now().await;
        }
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let mut fired = c.arm_trigger(
            re("virtio write: device"),
            Box::new(move || {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        assert_eq!(*fired.borrow(), None, "bytes from before arming do not count");
        peer.write_all(b"U-Boot> virtio wr").await.unwrap();
        peer.write_all(b"ite: device 0 block # 2048\nvirtio write: device 0 again\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), fired.wait_for(|f| f.is_some())).await.unwrap().unwrap();
        let end = fired.borrow().unwrap();
        assert_eq!(end, 27 + "U-Boot> virtio write: device".len());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "fires once");
    }

    #[tokio::test]
    async fn a_trigger_nobody_waits_for_never_fires() {
        let (c, mut peer, _d) = pair();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let fired = c.arm_trigger(
            re("link back"),
            Box::new(move || {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        drop(fired);
        // A live trigger after it proves the bytes were checked.
        let mut later = c.arm_trigger(re("link back"), Box::new(|| {}));
        peer.write_all(b"link back\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), later.wait_for(|f| f.is_some())).await.unwrap().unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the abandoned trigger did not run its hook");
    }

    #[tokio::test]
    async fn wait_bad_sees_panic_while_not_expecting() {
        let (mut c, mut peer, _d) = pair();
        c.arm_bad("kernel panic", re("Kernel panic"));
        peer.write_all(b"fine\n").await.unwrap();
        let w = tokio::spawn(async move { c.wait_bad().await });
        peer.write_all(b"Kernel panic - not syncing\n").await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
        assert!(matches!(err, ConsoleError::Bad { .. }), "{err}");
    }

    #[tokio::test]
    async fn log_has_a_timestamp_per_line_and_no_cr() {
        let (mut c, mut peer, d) = pair();
        peer.write_all(b"one\r\r\ntw").await.unwrap();
        peer.write_all(b"o\r\nthree\n").await.unwrap();
        c.expect(&[re("three")], Duration::from_secs(5)).await.unwrap();
        drop(peer);
        let _ = c.expect(&[re("never")], Duration::from_secs(5)).await;
        let log = std::fs::read_to_string(d.path().join("serial.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log:?}");
        for (l, want) in lines.iter().zip(["one", "two", "three"]) {
            assert!(l.starts_with('[') && l.ends_with(&format!("] {want}")), "{l:?}");
        }
        assert!(!log.contains('\r'));
        let got: Vec<String> = c.lines_from(0).into_iter().map(|(l, _, _)| l).collect();
        assert_eq!(got, ["one", "two", "three"]);
    }
}
