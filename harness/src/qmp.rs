//! QMP client, written here: JSON over the unix socket QEMU connects to.
//! One reader task routes replies to their command by `id` and appends every
//! event to an append-only log (and `qmp.jsonl`), so RESET, SHUTDOWN, STOP and
//! WATCHDOG events are never dropped: waiters read the log from a cursor
//! instead of a lossy broadcast. This module never spawns or kills QEMU.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

/// An asynchronous event QEMU reported.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    /// Seconds since power-on, as seen by the harness.
    pub at: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection closed (QEMU exited?)")]
    Closed,
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP protocol: {0}")]
    Protocol(String),
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command { command: String, class: String, desc: String },
    #[error("timed out after {0:?} waiting for QMP {1}")]
    Timeout(Duration, String),
}

type Pending = HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>;

struct Shared {
    pending: Mutex<Pending>,
    events: Mutex<Vec<QmpEvent>>,
    closed: Mutex<bool>,
    log: Mutex<Option<std::fs::File>>,
    t0: Instant,
    /// The wall-clock time of `t0`: QEMU stamps its events with the wall
    /// clock.
    wall_t0: std::time::SystemTime,
}

impl Shared {
    fn log(&self, dir: &str, v: &Value) {
        if let Some(f) = self.log.lock().unwrap().as_mut() {
            let line = json!({"t": self.t0.elapsed().as_secs_f64(), "dir": dir, "msg": v});
            let _ = writeln!(f, "{line}");
        }
    }
}

/// A connected QMP session.
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    next_id: Mutex<u64>,
    events_tx: watch::Sender<usize>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Qmp {
    /// Take over a stream QEMU opened: read the greeting, negotiate
    /// capabilities, start the reader. `log` is the `qmp.jsonl` path.
    pub async fn handshake(stream: UnixStream, log: PathBuf, t0: Instant) -> Result<Qmp, QmpError> {
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            closed: Mutex::new(false),
            log: Mutex::new(Some(file)),
            t0,
            wall_t0: std::time::SystemTime::now() - t0.elapsed(),
        });
        let greeting = lines.next_line().await?.ok_or(QmpError::Closed)?;
        let greeting: Value = serde_json::from_str(&greeting)
            .map_err(|e| QmpError::Protocol(format!("bad greeting {greeting:?}: {e}")))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("expected a QMP greeting, got {greeting}")));
        }
        shared.log("in", &greeting);
        let (events_tx, _) = watch::channel(0usize);
        let reader = tokio::spawn(read_loop(lines, shared.clone(), events_tx.clone()));
        let qmp = Qmp { writer: tokio::sync::Mutex::new(write), shared, next_id: Mutex::new(0), events_tx, reader };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Run a command and return its `return` value.
    pub async fn execute(&self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            *n
        };
        let mut msg = json!({"execute": command, "id": id});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let (tx, rx) = oneshot::channel();
        {
            if *self.shared.closed.lock().unwrap() {
                return Err(QmpError::Closed);
            }
            self.shared.pending.lock().unwrap().insert(id, tx);
        }
        self.shared.log("out", &msg);
        let mut line = serde_json::to_vec(&msg).expect("json");
        line.push(b'\n');
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(&line).await {
                self.shared.pending.lock().unwrap().remove(&id);
                return Err(e.into());
            }
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(QmpError::Command { class, desc, .. })) => {
                Err(QmpError::Command { command: command.to_string(), class, desc })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QmpError::Closed),
        }
    }

    /// `execute` with a bound.
    pub async fn execute_timeout(
        &self,
        command: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        tokio::time::timeout(timeout, self.execute(command, args))
            .await
            .map_err(|_| QmpError::Timeout(timeout, format!("reply to `{command}`")))?
    }

    /// Run an HMP command through QMP and return its text output.
    pub async fn hmp(&self, command_line: &str) -> Result<String, QmpError> {
        let v = self
            .execute_timeout(
                "human-monitor-command",
                Some(json!({"command-line": command_line})),
                Duration::from_secs(10),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// A snapshot of every event seen so far.
    pub fn events(&self) -> Vec<QmpEvent> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Wait until an event named one of `names` appears at index >= `from`;
    /// returns its index and the event.
    pub async fn wait_event(
        &self,
        names: &[&str],
        from: usize,
        timeout: Duration,
    ) -> Result<(usize, QmpEvent), QmpError> {
        let mut rx = self.events_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let events = self.shared.events.lock().unwrap();
                if let Some((i, e)) =
                    events.iter().enumerate().skip(from).find(|(_, e)| names.contains(&e.name.as_str()))
                {
                    return Ok((i, e.clone()));
                }
                if *self.shared.closed.lock().unwrap() {
                    return Err(QmpError::Closed);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(QmpError::Closed),
                Err(_) => return Err(QmpError::Timeout(timeout, format!("event {}", names.join("|")))),
            }
        }
    }

    /// Has the connection ended?
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.lock().unwrap()
    }
}

/// When QEMU emitted an event (its `timestamp`), in seconds since the
/// wall-clock time of `t0`.
fn emitted_at(v: &Value, wall_t0: std::time::SystemTime) -> Option<f64> {
    let ts = v.get("timestamp")?;
    let (secs, micros) = (ts.get("seconds")?.as_u64()?, ts.get("microseconds")?.as_u64()?);
    let at = std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
    let since = at.duration_since(wall_t0).ok()?;
    Some(since.as_secs_f64())
}

/// An event's time on the console's clock: when QEMU emitted it, not when
/// this reader got it. A console line is stamped when it arrives, and the
/// guest's output after a reset can arrive before the QMP reader has the
/// `RESET` (seen once in 225 runs under load: U-Boot's banner before the
/// reset). The emission time is trusted only within a second before the
/// arrival (a wall clock that jumped is not).
fn event_time(received: f64, emitted: Option<f64>) -> f64 {
    match emitted {
        Some(e) if e <= received && e >= received - 1.0 => e,
        _ => received,
    }
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    shared: Arc<Shared>,
    events_tx: watch::Sender<usize>,
) {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            _ => break,
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            shared.log("in-garbled", &Value::String(line));
            continue;
        };
        shared.log("in", &v);
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            let ev = QmpEvent {
                name: name.to_string(),
                data: v.get("data").cloned().unwrap_or(Value::Null),
                at: event_time(shared.t0.elapsed().as_secs_f64(), emitted_at(&v, shared.wall_t0)),
            };
            let n = {
                let mut events = shared.events.lock().unwrap();
                events.push(ev);
                events.len()
            };
            events_tx.send_replace(n);
            continue;
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else { continue };
        let Some(tx) = shared.pending.lock().unwrap().remove(&id) else { continue };
        let reply = if let Some(r) = v.get("return") {
            Ok(r.clone())
        } else if let Some(e) = v.get("error") {
            Err(QmpError::Command {
                command: String::new(),
                class: e.get("class").and_then(Value::as_str).unwrap_or("?").to_string(),
                desc: e.get("desc").and_then(Value::as_str).unwrap_or("?").to_string(),
            })
        } else {
            Err(QmpError::Protocol(format!("reply without return or error: {v}")))
        };
        let _ = tx.send(reply);
    }
    *shared.closed.lock().unwrap() = true;
    for (_, tx) in shared.pending.lock().unwrap().drain() {
        let _ = tx.send(Err(QmpError::Closed));
    }
    events_tx.send_modify(|_| {});
}

/// Parse the host port forwarded to guest port `guest_port` from HMP
/// `info usernet` output (a line like
/// `TCP[HOST_FORWARD]  9  127.0.0.1 46059  10.0.2.15    22 …`).
pub fn parse_usernet_port(text: &str, guest_port: u16) -> Option<u16> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !f.first()?.starts_with("TCP[HOST_FORWARD]") || f.len() < 6 {
            return None;
        }
        (f[5].parse::<u16>().ok()? == guest_port).then(|| f[3].parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_timed_when_qemu_emitted_it() {
        let wall_t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = json!({"event": "RESET", "timestamp": {"seconds": 1_000_002, "microseconds": 500_000}});
        assert_eq!(emitted_at(&v, wall_t0), Some(2.5));
        assert_eq!(emitted_at(&json!({"event": "RESET"}), wall_t0), None);
        // Emitted 20 ms before it was read: the emission counts.
        assert_eq!(event_time(2.52, Some(2.5)), 2.5);
        // A wall clock that jumped (after arrival, or long before): arrival.
        assert_eq!(event_time(2.5, Some(2.6)), 2.5);
        assert_eq!(event_time(5.0, Some(2.5)), 5.0);
        assert_eq!(event_time(2.5, None), 2.5);
    }
    use tokio::io::AsyncReadExt;

    #[test]
    fn usernet_port_is_parsed() {
        let text = "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]  13       127.0.0.1 40123       10.0.2.15    22     0     0\r\n";
        assert_eq!(parse_usernet_port(text, 22), Some(40123));
        assert_eq!(parse_usernet_port(text, 80), None);
        assert_eq!(parse_usernet_port("", 22), None);
    }

    /// A scripted peer speaking QMP framing: greeting, capabilities, an
    /// event interleaved before a reply, replies out of order.
    #[tokio::test]
    async fn replies_route_by_id_and_events_are_kept() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("qmp.jsonl");
        let peer = tokio::spawn(async move {
            theirs.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n").await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = theirs.read(&mut buf).await.unwrap();
            let cap: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(cap["execute"], "qmp_capabilities");
            let id = cap["id"].clone();
            theirs.write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes()).await.unwrap();
            // Two commands arrive; answer the second first, with events between.
            let mut got = Vec::new();
            while got.len() < 2 {
                let n = theirs.read(&mut buf).await.unwrap();
                for l in buf[..n].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    got.push(serde_json::from_slice::<Value>(l).unwrap());
                }
            }
            theirs
                .write_all(b"{\"event\": \"RESET\", \"data\": {\"guest\": true}, \"timestamp\": {}}\r\n")
                .await
                .unwrap();
            theirs
                .write_all(format!("{{\"return\": \"two\", \"id\": {}}}\r\n", got[1]["id"]).as_bytes())
                .await
                .unwrap();
            theirs.write_all(b"{\"event\": \"WATCHDOG\", \"data\": {\"action\": \"reset\"}}\r\n").await.unwrap();
            theirs
                .write_all(
                    format!(
                        "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"nope\"}}, \"id\": {}}}\r\n",
                        got[0]["id"]
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
            theirs.write_all(b"{\"event\": \"SHUTDOWN\", \"data\": {}}\r\n").await.unwrap();
            theirs
        });
        let qmp = Qmp::handshake(ours, log.clone(), Instant::now()).await.unwrap();
        let (a, b) = tokio::join!(qmp.execute("first", None), qmp.execute("second", None));
        assert_eq!(b.unwrap(), json!("two"));
        match a.unwrap_err() {
            QmpError::Command { command, desc, .. } => {
                assert_eq!(command, "first");
                assert_eq!(desc, "nope");
            }
            e => panic!("unexpected {e}"),
        }
        let (i, ev) = qmp.wait_event(&["SHUTDOWN"], 0, Duration::from_secs(5)).await.unwrap();
        assert_eq!((i, ev.name.as_str()), (2, "SHUTDOWN"));
        let names: Vec<String> = qmp.events().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["RESET", "WATCHDOG", "SHUTDOWN"]);
        // A cursor past an event does not see it again.
        let err = qmp.wait_event(&["RESET"], 1, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout(..)), "{err}");
        drop(peer.await.unwrap());
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(logged.lines().filter(|l| l.contains("\"event\"")).count(), 3, "{logged}");
        // Peer gone: the connection reports closed and commands fail fast.
        let err = qmp.wait_event(&["NEVER"], 0, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, QmpError::Closed), "{err}");
        assert!(matches!(qmp.execute("x", None).await, Err(QmpError::Closed | QmpError::Io(_))));
    }
}
