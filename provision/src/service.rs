//! The service: the store, the profiles, the fault switches and the request
//! log behind one cheap-to-clone handle, used in-process by the harness and
//! by the HTTP layer alike (both go through the same methods, so the rules
//! hold whichever side acts).
//!
//! Duplicate registration: a node that registers again with the same serial
//! and the same MAC set is answered `200` with its details refreshed
//! (vendor, model, disks, firmware, neighbours, arch) and its state
//! unchanged, so a node that reboots into register mode mid-deploy keeps
//! its deploy. The same UUID with another serial or another MAC set, or a
//! MAC that already belongs to another UUID, is refused (`409`): one of the
//! two machines is lying about its identity, and the operator has to look.
//!
//! Every committed change bumps a `watch` counter; [`Service::wait_state`]
//! re-reads the node when it moves, never on a timer. SQLite calls are short
//! and made under a mutex on the calling thread.

use crate::error::ProvisionError;
use crate::fault::{Endpoint, Fault, Faults};
use crate::ipxe::{self, ScriptInput};
use crate::node::{canonical_uuid, Arch, Node, NodeDetail, Registration};
use crate::profile::{Profile, Profiles};
use crate::pxelinux;
use crate::state::NodeState;
use crate::store::{Registered, Store};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One request as the service answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    pub status: u16,
    /// The fault that answered it, if one did.
    pub fault: Option<String>,
}

struct RequestLog {
    records: Vec<RequestRecord>,
    file: Option<std::fs::File>,
    t0: Instant,
}

impl RequestLog {
    fn line(&mut self, line: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(f, "[{t:10.6}] {line}");
        }
    }
}

struct Inner {
    store: Mutex<Store>,
    profiles: Profiles,
    boot_base_url: String,
    /// Files served at `/boot/...` (the management OS, images), if any.
    boot_dir: Option<std::path::PathBuf>,
    /// Bumped after every committed change.
    changes: watch::Sender<u64>,
    faults: Mutex<Faults>,
    log: Mutex<RequestLog>,
    /// The TFTP folder kept up to date for U-Boot nodes, if any.
    pxelinux: Mutex<Option<PxelinuxOut>>,
}

/// Where [`crate::pxelinux`] files go and the API base they name.
struct PxelinuxOut {
    dir: std::path::PathBuf,
    api_base: String,
}

/// The provisioning service. Clones share everything.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Service {
    /// Open (or create) the database and load every profile of
    /// `profiles_dir`; a broken profile is an error here, before anything
    /// is served. `boot_base_url` serves `mgmt/<arch>/vmlinuz|initrd.img`
    /// and the images profiles name by relative path; a URL that starts
    /// with `/` is a path on this service, as the node reached it.
    pub fn open(db: &Path, profiles_dir: &Path, boot_base_url: String) -> Result<Service, ProvisionError> {
        Self::open_with(db, profiles_dir, boot_base_url, None)
    }

    /// [`Service::open`] that also serves the files of `boot_dir` at
    /// `/boot/...` itself, and makes that its boot base URL.
    pub fn open_serving(db: &Path, profiles_dir: &Path, boot_dir: &Path) -> Result<Service, ProvisionError> {
        if !boot_dir.is_dir() {
            return Err(ProvisionError::io(boot_dir)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the boot folder does not exist",
            )));
        }
        Self::open_with(db, profiles_dir, "/boot".into(), Some(boot_dir.to_path_buf()))
    }

    fn open_with(
        db: &Path,
        profiles_dir: &Path,
        boot_base_url: String,
        boot_dir: Option<std::path::PathBuf>,
    ) -> Result<Service, ProvisionError> {
        let profiles = Profiles::load_dir(profiles_dir)?;
        let store = Store::open(db)?;
        Ok(Service {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                profiles,
                boot_base_url: boot_base_url.trim_end_matches('/').to_string(),
                boot_dir,
                changes: watch::channel(0).0,
                faults: Mutex::new(Faults::default()),
                log: Mutex::new(RequestLog { records: Vec::new(), file: None, t0: Instant::now() }),
                pxelinux: Mutex::new(None),
            }),
        })
    }

    /// Append every request (method, path, status, fault) to `path` from now
    /// on, each line stamped with the seconds since `t0`. A restarted service
    /// given the first one's `t0` continues its clock in the same log.
    pub fn set_request_log(&self, path: &Path, t0: Instant) -> Result<(), ProvisionError> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(ProvisionError::io(path))?;
        let mut log = lock(&self.inner.log);
        log.file = Some(f);
        log.t0 = t0;
        Ok(())
    }

    pub fn profiles(&self) -> &Profiles {
        &self.inner.profiles
    }

    pub fn boot_base_url(&self) -> &str {
        &self.inner.boot_base_url
    }

    /// The boot base URL as a node that reached this service at `api_base`
    /// uses it (a base that is a path is made absolute on `api_base`).
    pub fn boot_base_for(&self, api_base: &str) -> String {
        let base = &self.inner.boot_base_url;
        if base.starts_with('/') {
            format!("{}{base}", api_base.trim_end_matches('/'))
        } else {
            base.clone()
        }
    }

    /// The file `/boot/<rel>` names, if this service serves a boot folder
    /// and `rel` stays inside it (plain components only).
    pub fn boot_file(&self, rel: &str) -> Option<std::path::PathBuf> {
        let dir = self.inner.boot_dir.as_ref()?;
        let plain =
            !rel.is_empty() && rel.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
        plain.then(|| dir.join(rel))
    }

    fn changed(&self) {
        // Files first: whoever wakes up on the change may power a node on.
        if let Err(e) = self.render_pxelinux() {
            lock(&self.inner.log).line(&format!("pxelinux: {e}"));
        }
        self.inner.changes.send_modify(|n| *n += 1);
    }

    /// Keep `tftp_dir` ready for U-Boot nodes from now on (see
    /// [`crate::pxelinux`]): the boot script image, a link to the boot
    /// folder's management OS (when this service serves one), the default
    /// config and one config per MAC of every node, rewritten after every
    /// change. `api_base` is this service as the nodes reach it.
    pub fn serve_pxelinux(&self, tftp_dir: &Path, api_base: &str) -> Result<(), ProvisionError> {
        let io = ProvisionError::io;
        std::fs::create_dir_all(tftp_dir.join("pxelinux.cfg")).map_err(io(tftp_dir))?;
        let script = pxelinux::script_uimage("devlab netboot", pxelinux::BOOT_SCRIPT);
        write_whole(&tftp_dir.join(pxelinux::BOOT_SCRIPT_NAME), &script)?;
        if let Some(boot) = &self.inner.boot_dir {
            let link = tftp_dir.join("mgmt");
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(boot.join("mgmt"), &link).map_err(io(&link))?;
            }
        }
        *lock(&self.inner.pxelinux) =
            Some(PxelinuxOut { dir: tftp_dir.to_path_buf(), api_base: api_base.trim_end_matches('/').to_string() });
        self.render_pxelinux()
    }

    fn render_pxelinux(&self) -> Result<(), ProvisionError> {
        let out = lock(&self.inner.pxelinux);
        let Some(out) = out.as_ref() else { return Ok(()) };
        write_whole(&out.dir.join(pxelinux::DEFAULT_NAME), pxelinux::default_config(&out.api_base).as_bytes())?;
        let store = lock(&self.inner.store);
        for node in store.nodes()? {
            let last_message = match node.state {
                NodeState::UnrecoverableError => store.progress(&node.uuid)?.map(|p| p.2).unwrap_or_default(),
                _ => String::new(),
            };
            let text = pxelinux::config(&ScriptInput {
                uuid: &node.uuid,
                state: Some(node.state),
                profile: node.profile.as_deref(),
                arch: node.arch.unwrap_or(Arch::Aarch64),
                api_base: &out.api_base,
                boot_base: "",
                last_message: &last_message,
            });
            for mac in &node.macs {
                write_whole(&out.dir.join(pxelinux::file_name(mac)), text.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Register a node (see the module doc for repeated registrations).
    pub fn register(&self, reg: Registration) -> Result<(Node, Registered), ProvisionError> {
        let reg = reg.validated()?;
        let res = lock(&self.inner.store).register(&reg)?;
        self.changed();
        Ok(res)
    }

    /// Assign `profile` to node `uuid`: `-> DEPLOY_START` (operator).
    pub fn assign(&self, uuid: &str, profile: &str) -> Result<Node, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        if self.inner.profiles.get(profile).is_none() {
            return Err(ProvisionError::UnknownProfile {
                name: profile.to_string(),
                known: self.inner.profiles.names(),
            });
        }
        let node = lock(&self.inner.store).transition(
            &uuid,
            NodeState::DeployStart,
            &format!("profile {profile} assigned"),
            Some(profile),
        )?;
        self.changed();
        Ok(node)
    }

    /// The agent's progress report (`POST /detail/{uuid}`): `DEPLOYING` or
    /// `UNRECOVERABLE_ERROR` only; `INSTALLED` has its own call.
    pub fn detail(&self, uuid: &str, state: NodeState, message: &str) -> Result<Node, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        if !matches!(state, NodeState::Deploying | NodeState::UnrecoverableError) {
            return Err(ProvisionError::BadRequest(format!(
                "a detail report sets DEPLOYING or UNRECOVERABLE_ERROR, not {state} (INSTALLED: POST /installed/{uuid})"
            )));
        }
        let node = lock(&self.inner.store).transition(&uuid, state, message, None)?;
        self.changed();
        Ok(node)
    }

    /// The agent wrote the image (`POST /installed/{uuid}`): `-> INSTALLED`.
    pub fn installed(&self, uuid: &str) -> Result<Node, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        let node = lock(&self.inner.store).transition(&uuid, NodeState::Installed, "installed", None)?;
        self.changed();
        Ok(node)
    }

    /// All nodes, sorted by UUID.
    pub fn nodes(&self) -> Result<Vec<Node>, ProvisionError> {
        lock(&self.inner.store).nodes()
    }

    /// One node with its history.
    pub fn node(&self, uuid: &str) -> Result<NodeDetail, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        let store = lock(&self.inner.store);
        let node = store.node(&uuid)?.ok_or_else(|| ProvisionError::UnknownNode(uuid.clone()))?;
        let history = store.history(&uuid)?;
        Ok(NodeDetail { node, history })
    }

    /// The profile assigned to node `uuid` (what `GET /profile/{uuid}` serves).
    pub fn profile_of(&self, uuid: &str) -> Result<Profile, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        let node = lock(&self.inner.store).node(&uuid)?.ok_or_else(|| ProvisionError::UnknownNode(uuid.clone()))?;
        let missing = |detail: String| ProvisionError::ProfileMissing { uuid: uuid.clone(), detail };
        let Some(name) = node.profile else {
            return Err(missing(format!("no profile is assigned (node is {})", node.state)));
        };
        self.inner.profiles.get(&name).cloned().ok_or_else(|| {
            missing(format!("it is assigned profile `{name}`, which is not in {}", self.inner.profiles.dir().display()))
        })
    }

    /// The iPXE script for node `uuid` (see [`crate::ipxe`]). The arch is the
    /// node's registered one, else `arch_hint` (iPXE's `${buildarch}`),
    /// else x86_64. `api_base` is this service as the node reached it.
    pub fn ipxe_script(&self, uuid: &str, arch_hint: Option<&str>, api_base: &str) -> Result<String, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        let hint = match arch_hint.filter(|a| !a.is_empty()) {
            Some(a) => Some(Arch::parse(a).ok_or_else(|| {
                ProvisionError::BadRequest(format!("unknown arch `{a}` (x86_64, i386, aarch64 or arm64)"))
            })?),
            None => None,
        };
        let store = lock(&self.inner.store);
        let node = store.node(&uuid)?;
        let last_message = match node.as_ref().map(|n| n.state) {
            Some(NodeState::UnrecoverableError) => store.progress(&uuid)?.map(|p| p.2).unwrap_or_default(),
            _ => String::new(),
        };
        drop(store);
        let arch = node.as_ref().and_then(|n| n.arch).or(hint).unwrap_or(Arch::X86_64);
        Ok(ipxe::script(&ScriptInput {
            uuid: &uuid,
            state: node.as_ref().map(|n| n.state),
            profile: node.as_ref().and_then(|n| n.profile.as_deref()),
            arch,
            api_base,
            boot_base: &self.boot_base_for(api_base),
            last_message: &last_message,
        }))
    }

    /// Wait until node `uuid` is in `state` (it may not be registered yet),
    /// at most `timeout`. Woken by each committed change, never by a timer.
    /// Fails early when the node goes to `UNRECOVERABLE_ERROR` during the
    /// wait (unless that is the state waited for).
    pub async fn wait_state(&self, uuid: &str, state: NodeState, timeout: Duration) -> Result<Node, ProvisionError> {
        let uuid = canonical_uuid(uuid)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.changes.subscribe();
        let start = lock(&self.inner.store).progress(&uuid)?;
        let mut now = start.as_ref().map(|p| p.0);
        loop {
            let progress = lock(&self.inner.store).progress(&uuid)?;
            if let Some((st, entries, message)) = &progress {
                now = Some(*st);
                if *st == state {
                    return lock(&self.inner.store)
                        .node(&uuid)?
                        .ok_or_else(|| ProvisionError::UnknownNode(uuid.clone()));
                }
                let moved = start.as_ref().map_or(true, |s| s.1 != *entries);
                if *st == NodeState::UnrecoverableError && moved {
                    return Err(ProvisionError::NodeFailed { uuid, want: state, message: message.clone() });
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(ProvisionError::Timeout { uuid, want: state, now, timeout }),
            }
        }
    }

    /// A stable plain-text table of all nodes, sorted by UUID (uuid, serial,
    /// state, profile, MACs), for snapshots. No times.
    pub fn state_table(&self) -> String {
        match self.nodes() {
            Ok(nodes) => state_table(&nodes),
            Err(e) => format!("state table unavailable: {e}\n"),
        }
    }

    /// Arm `fault` on `endpoint` (see [`crate::fault`]).
    pub fn fault(&self, endpoint: Endpoint, fault: Fault) {
        lock(&self.inner.faults).arm(endpoint, fault);
        lock(&self.inner.log).line(&format!(
            "fault armed on {endpoint}: {} (next {} request(s))",
            fault.name(),
            fault.count()
        ));
    }

    /// Requests still to be faulted on `endpoint`.
    pub fn faults_pending(&self, endpoint: Endpoint) -> u32 {
        lock(&self.inner.faults).pending(endpoint)
    }

    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    pub(crate) fn take_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        lock(&self.inner.faults).take(endpoint)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.log).records.clone()
    }

    pub(crate) fn record(&self, r: RequestRecord) {
        let mut log = lock(&self.inner.log);
        let fault = r.fault.as_ref().map(|f| format!(" [fault: {f}]")).unwrap_or_default();
        log.line(&format!("{} {} -> {}{fault}", r.method, r.path, r.status));
        log.records.push(r);
    }

    /// Serve the HTTP API on `listener` in a spawned task (call from inside
    /// a tokio runtime). Dropping the handle or `shutdown()` stops it.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> ServerHandle {
        let addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (stop, stop_rx) = watch::channel(false);
        let app = crate::http::router(self.clone(), addr, stop_rx.clone());
        let mut signal = stop_rx;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = signal.wait_for(|s| *s).await;
                })
                .await
        });
        ServerHandle { addr, stop, task: Some(task) }
    }
}

/// Write `bytes` to `path` under a temporary name, then rename it over
/// `path`: a reader sees the old file or the new one, never half of one.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(ProvisionError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ProvisionError::io(path))
}

/// The table [`Service::state_table`] prints.
pub fn state_table(nodes: &[Node]) -> String {
    let mut rows = vec![["UUID".to_string(), "SERIAL".into(), "STATE".into(), "PROFILE".into(), "MACS".into()]];
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    for n in sorted {
        rows.push([
            n.uuid.clone(),
            if n.serial.is_empty() { "-".into() } else { n.serial.clone() },
            n.state.to_string(),
            n.profile.clone().unwrap_or_else(|| "-".into()),
            n.macs.join(","),
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            line.push_str(&" ".repeat(w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A running HTTP server. Dropping it stops accepting at once and ends
/// hanging requests; `shutdown()` also waits for the requests in flight.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, end hanging requests, and wait until every
    /// connection has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.send_replace(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
