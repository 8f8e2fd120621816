//! Reboot coordination for a fleet: the FleetLock protocol (Zincati's and
//! Flatcar's: `POST /v1/pre-reboot` takes a reboot slot, `POST
//! /v1/steady-state` gives it back; header `fleet-lock-protocol: true`; body
//! `{"client_params": {"id": ..., "group": ...}}`; 200 on success, otherwise
//! a JSON `{"kind", "value"}` error) served by the harness and backed by a
//! counting semaphore in a real etcd ([`crate::etcd`]), kept the way
//! locksmith keeps its reboot lock: one key per group holding
//! `{"semaphore": free, "max": N, "holders": [ids]}`.
//!
//! Invariants:
//! - the semaphore in etcd is the only state: every change is a
//!   compare-and-swap on the key's revision, so two requests racing for the
//!   last slot cannot both win (the loser reads again);
//! - locks are recursive and owned: a holder asking again keeps its one
//!   slot, only the holder's own `steady-state` (or [`FleetLock::release`],
//!   the operator) frees it; a device that dies holding a slot keeps it;
//! - etcd unreachable means no slot for anyone (HTTP 503, kind
//!   `etcd_unavailable`): nobody reboots, nothing is half-written;
//! - every decision (and every refusal) is one line of `fleetlock.log` and
//!   one [`Decision`], in order.
use crate::etcd::{Client, EtcdError};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times one request re-reads the semaphore after losing a race.
const CAS_ATTEMPTS: usize = 32;

/// The semaphore as stored in etcd (locksmith's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Semaphore {
    /// Free slots.
    pub semaphore: u32,
    pub max: u32,
    pub holders: Vec<String>,
}

impl Semaphore {
    pub fn new(max: u32) -> Semaphore {
        Semaphore { semaphore: max, max, holders: Vec::new() }
    }

    /// Takes a slot for `id`: `Ok(true)` if taken now, `Ok(false)` if `id`
    /// holds one already, `Err(())` if all are taken.
    #[allow(clippy::result_unit_err)]
    pub fn lock(&mut self, id: &str) -> Result<bool, ()> {
        if self.holders.iter().any(|h| h == id) {
            return Ok(false);
        }
        if self.semaphore == 0 {
            return Err(());
        }
        self.semaphore -= 1;
        self.holders.push(id.to_string());
        Ok(true)
    }

    /// Frees `id`'s slot; whether it held one.
    pub fn unlock(&mut self, id: &str) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| h != id);
        let held = self.holders.len() != before;
        if held {
            self.semaphore += 1;
        }
        held
    }
}

/// The request body Zincati sends.
#[derive(Debug, Deserialize)]
struct Body {
    client_params: ClientParams,
}

#[derive(Debug, Deserialize)]
struct ClientParams {
    id: String,
    group: String,
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Seconds since the service started.
    pub t: f64,
    /// `pre-reboot`, `steady-state` or `release` (the operator).
    pub op: String,
    pub group: String,
    pub id: String,
    /// `locked`, `already-held`, `full`, `unlocked`, `not-held`,
    /// `etcd-unavailable`, `bad-request`.
    pub outcome: String,
    /// The holders after it (empty when etcd could not be read).
    pub holders: Vec<String>,
}

/// An error reply of the protocol.
#[derive(Debug)]
pub struct LockError {
    pub status: u16,
    pub kind: &'static str,
    pub value: String,
}

impl IntoResponse for LockError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"kind": self.kind, "value": self.value});
        (StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body))
            .into_response()
    }
}

fn unavailable(e: EtcdError) -> LockError {
    LockError { status: 503, kind: "etcd_unavailable", value: format!("the lock store cannot be reached: {e}") }
}

struct Shared {
    etcd: Client,
    slots: u32,
    started: Instant,
    log: Mutex<std::fs::File>,
    decisions: Mutex<Vec<Decision>>,
    /// The "slow lock server" fault: every answer waits this long first.
    delay: Mutex<Duration>,
}

/// The running service (its HTTP server ends when this is dropped).
pub struct FleetLock {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FleetLock {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The etcd key of a group's semaphore.
pub fn key(group: &str) -> String {
    format!("devlab/fleetlock/{group}/semaphore")
}

/// A group name as the protocol allows it (`^[a-zA-Z0-9.-]+$`).
pub fn valid_group(group: &str) -> bool {
    !group.is_empty() && group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

impl FleetLock {
    /// Serves on `listen` (port 0: any), `slots` reboot slots per group in
    /// the etcd behind `etcd`, decisions logged to `log`.
    pub async fn start(listen: &str, slots: u32, etcd: Client, log: &Path) -> std::io::Result<FleetLock> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let file = std::fs::File::options().create(true).append(true).open(log)?;
        let shared = Arc::new(Shared {
            etcd,
            slots,
            started: Instant::now(),
            log: Mutex::new(file),
            decisions: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
        });
        let s1 = shared.clone();
        let s2 = shared.clone();
        let app = axum::Router::new()
            .route(
                "/v1/pre-reboot",
                axum::routing::post(move |h: HeaderMap, b: axum::body::Bytes| {
                    let s = s1.clone();
                    async move { s.answer("pre-reboot", &h, &b).await }
                }),
            )
            .route(
                "/v1/steady-state",
                axum::routing::post(move |h: HeaderMap, b: axum::body::Bytes| {
                    let s = s2.clone();
                    async move { s.answer("steady-state", &h, &b).await }
                }),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FleetLock { shared, addr, server })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The base URL a client on this host uses.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every decision so far, in order.
    pub fn decisions(&self) -> Vec<Decision> {
        self.shared.decisions.lock().unwrap().clone()
    }

    /// The "slow lock server" fault: answer every request `delay` late.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// The operator frees `id`'s slot in `group` (a device that died
    /// holding it); whether it held one.
    pub async fn release(&self, group: &str, id: &str) -> Result<bool, LockError> {
        self.shared.change("release", group, id).await.map(|o| o == "unlocked")
    }

    /// The group's semaphore as etcd has it (a fresh one if never used).
    pub async fn semaphore(&self, group: &str) -> Result<Semaphore, LockError> {
        self.shared.read(group).await.map(|(s, _)| s)
    }
}

impl Shared {
    async fn answer(&self, op: &'static str, headers: &HeaderMap, body: &[u8]) -> Response {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            // The injected fault itself: this answer is late on purpose.
            tokio::time::sleep(delay).await;
        }
        let refuse = |kind: &'static str, value: String| {
            self.record(op, "", "", "bad-request", &[]);
            LockError { status: 400, kind, value }.into_response()
        };
        if headers.get("fleet-lock-protocol").and_then(|v| v.to_str().ok()) != Some("true") {
            return refuse("missing_header", "the `fleet-lock-protocol: true` header is required".into());
        }
        let params = match serde_json::from_slice::<Body>(body) {
            Ok(b) => b.client_params,
            Err(e) => {
                return refuse("invalid_body", format!("expected {{\"client_params\": {{\"id\", \"group\"}}}}: {e}"))
            }
        };
        if params.id.is_empty() || !valid_group(&params.group) {
            return refuse("invalid_client_params", "id must be non-empty, group must match ^[a-zA-Z0-9.-]+$".into());
        }
        match self.change(op, &params.group, &params.id).await {
            Ok(_) => (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response(),
            Err(e) => e.into_response(),
        }
    }

    /// The group's semaphore and the revision it was read at (`None`: not
    /// stored yet).
    async fn read(&self, group: &str) -> Result<(Semaphore, Option<i64>), LockError> {
        match self.etcd.get(&key(group)).await.map_err(unavailable)? {
            None => Ok((Semaphore::new(self.slots), None)),
            Some(kv) => {
                let sem = serde_json::from_slice(&kv.value).map_err(|e| LockError {
                    status: 500,
                    kind: "corrupt_semaphore",
                    value: format!("{} holds no semaphore: {e}", key(group)),
                })?;
                Ok((sem, Some(kv.mod_revision)))
            }
        }
    }

    /// One lock or unlock, compare-and-swapped into etcd; the outcome.
    async fn change(&self, op: &str, group: &str, id: &str) -> Result<&'static str, LockError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut sem, revision) = match self.read(group).await {
                Ok(r) => r,
                Err(e) => {
                    self.record(op, group, id, "etcd-unavailable", &[]);
                    return Err(e);
                }
            };
            let outcome = if op == "pre-reboot" {
                match sem.lock(id) {
                    Ok(true) => "locked",
                    Ok(false) => "already-held",
                    Err(()) => {
                        self.record(op, group, id, "full", &sem.holders);
                        return Err(LockError {
                            status: 409,
                            kind: "failed_lock_semaphore_full",
                            value: format!(
                                "all {} slots of group {group} are taken: {}",
                                sem.max,
                                sem.holders.join(", ")
                            ),
                        });
                    }
                }
            } else if sem.unlock(id) {
                "unlocked"
            } else {
                "not-held"
            };
            if matches!(outcome, "already-held" | "not-held") {
                self.record(op, group, id, outcome, &sem.holders);
                return Ok(outcome);
            }
            let value = serde_json::to_vec(&sem).expect("serialises");
            match self.etcd.compare_and_swap(&key(group), revision, &value).await {
                Ok(true) => {
                    self.record(op, group, id, outcome, &sem.holders);
                    return Ok(outcome);
                }
                // Another request changed it first: read again.
                Ok(false) => continue,
                Err(e) => {
                    self.record(op, group, id, "etcd-unavailable", &[]);
                    return Err(unavailable(e));
                }
            }
        }
        Err(LockError { status: 503, kind: "contention", value: format!("{CAS_ATTEMPTS} conflicting writes in a row") })
    }

    fn record(&self, op: &str, group: &str, id: &str, outcome: &str, holders: &[String]) {
        let d = Decision {
            t: self.started.elapsed().as_secs_f64(),
            op: op.into(),
            group: group.into(),
            id: id.into(),
            outcome: outcome.into(),
            holders: holders.to_vec(),
        };
        let _ = writeln!(
            self.log.lock().unwrap(),
            "{:9.3} {} group={} id={} -> {} (holders: {})",
            d.t,
            d.op,
            d.group,
            d.id,
            d.outcome,
            d.holders.join(",")
        );
        self.decisions.lock().unwrap().push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_semaphore_is_recursive_owned_and_counted() {
        let mut s = Semaphore::new(2);
        assert_eq!(s.lock("a"), Ok(true));
        assert_eq!(s.lock("a"), Ok(false), "a holder asking again keeps its one slot");
        assert_eq!(s.lock("b"), Ok(true));
        assert_eq!(s.lock("c"), Err(()));
        assert_eq!((s.semaphore, s.holders.clone()), (0, vec!["a".to_string(), "b".to_string()]));
        assert!(!s.unlock("c"), "only a holder frees a slot");
        assert!(s.unlock("a"));
        assert!(!s.unlock("a"));
        assert_eq!(s.lock("c"), Ok(true));
        assert_eq!(s.semaphore, 0);
        // Stored the way locksmith stores it.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json, serde_json::json!({"semaphore": 0, "max": 2, "holders": ["b", "c"]}));
    }

    #[test]
    fn groups_follow_the_protocol() {
        assert!(valid_group("default") && valid_group("workers.eu-1"));
        assert!(!valid_group("") && !valid_group("a b") && !valid_group("a/b") && !valid_group("ü"));
    }
}
