//! The FleetLock service against a real etcd (Debian's `etcd-server`), over
//! real HTTP on loopback, no QEMU: slots counted and owned, races for the
//! last slot, etcd down and back, a dead holder freed only by the operator,
//! protocol errors, and etcd never outliving its owner (SIGKILL included).
use harness::etcd::Etcd;
use harness::fleetlock::FleetLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs a FleetLock request the way Zincati does; (status, body).
async fn post(base: &str, op: &str, id: &str, group: &str, header: bool) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"client_params": {"id": id, "group": group}}).to_string();
    raw(base, op, &body, header).await
}

async fn raw(base: &str, op: &str, body: &str, header: bool) -> (u16, serde_json::Value) {
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra = if header { "fleet-lock-protocol: true\r\n" } else { "" };
    let req = format!(
        "POST /v1/{op} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

struct Lab {
    _dir: tempfile::TempDir,
    etcd: Etcd,
    lock: FleetLock,
}

async fn lab(slots: u32) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let etcd =
        Etcd::start(&dir.path().join("etcd.log")).await.expect("etcd starts (cargo xtask setup installs etcd-server)");
    let lock = FleetLock::start("127.0.0.1:0", slots, etcd.client(), &dir.path().join("fleetlock.log")).await.unwrap();
    Lab { _dir: dir, etcd, lock }
}

#[tokio::test(flavor = "current_thread")]
async fn slots_are_counted_owned_and_recursive() {
    let l = lab(2).await;
    let url = l.lock.url();
    assert_eq!(post(&url, "pre-reboot", "node-1", "default", true).await.0, 200);
    assert_eq!(post(&url, "pre-reboot", "node-1", "default", true).await.0, 200, "recursive");
    assert_eq!(post(&url, "pre-reboot", "node-2", "default", true).await.0, 200);
    let (status, err) = post(&url, "pre-reboot", "node-3", "default", true).await;
    assert_eq!((status, err["kind"].as_str()), (409, Some("failed_lock_semaphore_full")));
    assert!(err["value"].as_str().unwrap().contains("node-1, node-2"));
    // Another group has its own slots.
    assert_eq!(post(&url, "pre-reboot", "node-3", "workers", true).await.0, 200);
    // Only the holder frees its slot; unlocking twice is fine.
    assert_eq!(post(&url, "steady-state", "node-3", "default", true).await.0, 200);
    assert_eq!(l.lock.semaphore("default").await.unwrap().holders, vec!["node-1", "node-2"]);
    assert_eq!(post(&url, "steady-state", "node-1", "default", true).await.0, 200);
    assert_eq!(post(&url, "steady-state", "node-1", "default", true).await.0, 200);
    assert_eq!(post(&url, "pre-reboot", "node-3", "default", true).await.0, 200);
    let sem = l.lock.semaphore("default").await.unwrap();
    assert_eq!((sem.semaphore, sem.max, sem.holders), (0, 2, vec!["node-2".to_string(), "node-3".to_string()]));
    // What etcd itself holds (read directly), in locksmith's shape.
    let kv = l.etcd.client().get("devlab/fleetlock/default/semaphore").await.unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored, serde_json::json!({"semaphore": 0, "max": 2, "holders": ["node-2", "node-3"]}));
    let outcomes: Vec<String> = l.lock.decisions().iter().map(|d| format!("{} {} {}", d.op, d.id, d.outcome)).collect();
    assert_eq!(
        outcomes[..4],
        [
            "pre-reboot node-1 locked",
            "pre-reboot node-1 already-held",
            "pre-reboot node-2 locked",
            "pre-reboot node-3 full"
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn racing_clients_never_exceed_the_slots() {
    let l = lab(3).await;
    let url = l.lock.url();
    let tries = (0..12).map(|i| {
        let url = url.clone();
        async move { post(&url, "pre-reboot", &format!("node-{i}"), "default", true).await.0 }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200 || s == 409), "{statuses:?}");
    assert_eq!(l.lock.semaphore("default").await.unwrap().holders.len(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn etcd_down_means_nobody_reboots_and_its_state_survives() {
    let mut l = lab(1).await;
    let url = l.lock.url();
    assert_eq!(post(&url, "pre-reboot", "node-1", "default", true).await.0, 200);
    l.etcd.stop();
    let (status, err) = post(&url, "pre-reboot", "node-2", "default", true).await;
    assert_eq!((status, err["kind"].as_str()), (503, Some("etcd_unavailable")));
    assert_eq!(post(&url, "steady-state", "node-1", "default", true).await.0, 503);
    l.etcd.start_again().await.unwrap();
    // node-1 still holds the one slot: node-2 still waits.
    assert_eq!(post(&url, "pre-reboot", "node-2", "default", true).await.0, 409);
    assert_eq!(post(&url, "steady-state", "node-1", "default", true).await.0, 200);
    assert_eq!(post(&url, "pre-reboot", "node-2", "default", true).await.0, 200);
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_holder_keeps_its_slot_until_the_operator_frees_it() {
    let l = lab(1).await;
    let url = l.lock.url();
    assert_eq!(post(&url, "pre-reboot", "died", "default", true).await.0, 200);
    // Time passes; nobody else gets in.
    assert_eq!(post(&url, "pre-reboot", "node-2", "default", true).await.0, 409);
    assert!(l.lock.release("default", "died").await.unwrap());
    assert!(!l.lock.release("default", "died").await.unwrap());
    assert_eq!(post(&url, "pre-reboot", "node-2", "default", true).await.0, 200);
    let last = l.lock.decisions().into_iter().rev().nth(2).unwrap();
    assert_eq!((last.op.as_str(), last.id.as_str(), last.outcome.as_str()), ("release", "died", "unlocked"));
}

#[tokio::test(flavor = "current_thread")]
async fn protocol_mistakes_are_refused_with_a_kind() {
    let l = lab(1).await;
    let url = l.lock.url();
    assert_eq!(post(&url, "pre-reboot", "a", "default", false).await.1["kind"], "missing_header");
    assert_eq!(raw(&url, "pre-reboot", "{\"id\": \"a\"}", true).await.1["kind"], "invalid_body");
    assert_eq!(post(&url, "pre-reboot", "a", "bad group", true).await.1["kind"], "invalid_client_params");
    assert_eq!(post(&url, "pre-reboot", "", "default", true).await.0, 400);
    assert!(l.lock.semaphore("default").await.unwrap().holders.is_empty(), "nothing was taken");
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_lock_server_answers_late_but_right() {
    let l = lab(1).await;
    l.lock.set_delay(Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert_eq!(post(&l.lock.url(), "pre-reboot", "a", "default", true).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "current_thread")]
async fn etcd_and_its_data_go_with_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd.log")).await.unwrap();
    let (pid, data) = (etcd.pid().unwrap(), etcd.data_dir().to_path_buf());
    assert!(data.is_dir());
    drop(etcd);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "etcd {pid} outlived its owner");
    assert!(!data.exists(), "{} outlived its owner", data.display());
}

/// The owner SIGKILLed: `devlab fleetlock` (a real harness process) dies
/// outright; its etcd goes with it, and the data dir it could not remove is
/// removed by the next harness to start one.
#[tokio::test(flavor = "current_thread")]
async fn a_sigkilled_harness_leaves_no_etcd_behind() {
    use std::io::BufRead;
    let logs = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(["fleetlock", "--slots", "2", "--log-dir"])
        .arg(logs.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut etcd_pid = None;
    let mut data = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("etcd: pid ") {
            let (pid, dir) = rest.split_once(", data ").unwrap();
            etcd_pid = Some(pid.to_string());
            data = Some(std::path::PathBuf::from(dir));
        }
        if line.starts_with("fleetlock: serving") {
            break;
        }
    }
    let (pid, data) = (etcd_pid.expect("the pid line"), data.expect("the data line"));
    assert!(data.is_dir());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // PR_SET_PDEATHSIG: the kernel kills etcd when its parent dies.
    let gone = match harness::machine::pidfd_open(pid.parse().unwrap()) {
        Err(_) => true,
        Ok(fd) => {
            use std::os::fd::AsFd;
            let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).is_ok_and(|n| n > 0)
        }
    };
    assert!(gone, "etcd {pid} outlived the SIGKILLed harness");
    // The next harness sweeps the orphaned data dir.
    let l = lab(1).await;
    assert!(!data.exists(), "{} was not swept", data.display());
    drop(l);
}
