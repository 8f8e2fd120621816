//! The update server a real fleet talks to, run by the harness on
//! 127.0.0.1 (guests reach it as 10.0.2.2 through user-mode networking),
//! or on an external board's lab address only.
//! `GET /api/releases/<version>` answers `key=value` lines with a signed,
//! expiring download URL (HMAC-SHA256 over path and expiry), the file's
//! sha256 and size, and the decryption passphrase; `GET /releases/<file>`
//! checks the signature and expiry and serves the bytes. Fault switches
//! (corrupt, truncate, drop, stall, slow, expire, HTTP 500) apply to the
//! next N requests they target. Hand-written HTTP/1.1 (one request per
//! connection) because the faults need byte-level control of the body.
//! RAUC bundles are served as-is at `/bundles/<file>` (signed themselves),
//! a team's own artifacts at `/files/<arch>/<file>`, and a team's own
//! OSTree repo as it is (its refs, summary and deltas too) below
//! `/files/<arch>/<artifact>/`, download faults applying to its objects.
//! `/callback/<name>` (any method, optional body) records that the guest
//! called back, for steps that wait for it. An OSTree archive repo is
//! served read-only at `/ostree/`: its files as they are, except `refs/`,
//! which answers only the refs the scenario published (branch -> commit),
//! and no `summary` (so the published refs are the ones a pull sees), and
//! `deltas/` only when the scenario asked for static deltas;
//! download faults apply to its `objects/`. Every request path is kept in
//! order, for steps that act while a given request is being answered.
//! A two-board product's release is `/api/products/<name>` (`version=`,
//! and `main=`/`sub=`, the release API of each part, served as releases
//! keyed by part in place of an arch).
//! Every request is logged to `http.log`. It serves only what it is given.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A release the server hands out.
#[derive(Clone)]
pub struct Release {
    pub version: String,
    /// The arch it is built for (`x86_64`, `aarch64`): a lab with machines
    /// of several arches serves each its own build of a version.
    pub arch: String,
    pub file_name: String,
    pub bytes: Arc<Vec<u8>>,
    pub sha256: String,
    pub key: String,
}

/// A fault applied to the next `count` requests of its kind.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Flip `bytes` bytes in the middle of the file (checksum must refuse it).
    Corrupt { bytes: usize },
    /// Serve only the first `percent` % of the file, as if it were whole.
    Truncate { percent: u8 },
    /// Close the connection after `percent` % of the file (a broken transfer).
    Drop { percent: u8 },
    /// Pause `seconds` half-way through the body, then go on.
    Stall { seconds: u64 },
    /// Send at most `kib_per_s` KiB per second.
    Slow { kib_per_s: u64 },
    /// Hand out a URL that has already expired.
    Expire,
    /// Answer `500 Internal Server Error` (to the API when `api`, else to the download).
    Error500 {
        #[serde(default)]
        api: bool,
    },
}

impl Fault {
    fn targets_api(&self) -> bool {
        matches!(self, Fault::Expire | Fault::Error500 { api: true })
    }

    pub fn name(&self) -> String {
        match self {
            Fault::Corrupt { bytes } => format!("corrupt {bytes} bytes"),
            Fault::Truncate { percent } => format!("truncate at {percent}%"),
            Fault::Drop { percent } => format!("drop the connection at {percent}%"),
            Fault::Stall { seconds } => format!("stall {seconds}s"),
            Fault::Slow { kib_per_s } => format!("slow {kib_per_s} KiB/s"),
            Fault::Expire => "expired URL".into(),
            Fault::Error500 { api } => format!("HTTP 500 on the {}", if *api { "API" } else { "download" }),
        }
    }
}

struct State {
    /// The host guests reach the server at (see [`UpdateServer`]).
    seen_as: String,
    /// By (version, arch).
    releases: BTreeMap<(String, String), Release>,
    /// RAUC bundles by file name, served as-is at `/bundles/<file>` (they
    /// carry their own signature); download faults apply to them too.
    bundles: BTreeMap<String, Arc<Vec<u8>>>,
    /// A team's own artifacts (a device's `[update] artifacts`) by
    /// `<arch>/<file>`, served as-is at `/files/<arch>/<file>`; download
    /// faults apply to them too.
    files: BTreeMap<String, Arc<Vec<u8>>>,
    /// A team's OSTree repos by `<arch>/<artifact>`, served as they are
    /// below `/files/<arch>/<artifact>/` (read per request).
    dirs: BTreeMap<String, PathBuf>,
    faults: Vec<(Fault, u32)>,
    secret: [u8; 32],
    url_ttl: Duration,
    log: Option<std::fs::File>,
    t0: Instant,
    /// Release bytes sent so far, across downloads (watched by steps that
    /// act mid-transfer).
    progress: tokio::sync::watch::Sender<u64>,
    /// Callbacks the guest made (`/callback/<name>`, any method): name and
    /// body, in arrival order; the watch counts them.
    callbacks: Vec<(String, Vec<u8>)>,
    callback_count: tokio::sync::watch::Sender<usize>,
    /// The OSTree repo served at `/ostree/`, and its published refs.
    ostree_repo: Option<PathBuf>,
    ostree_refs: BTreeMap<String, String>,
    /// Whether `deltas/` is served (else a pull sees no static delta).
    ostree_deltas: bool,
    /// Paths requested so far, in arrival order; the watch counts them.
    requests: Vec<String>,
    request_count: tokio::sync::watch::Sender<usize>,
    /// Channels, rollouts and the devices that checked in (`/v1/check-in`).
    fleet: crate::rollout::Fleet,
    /// A product's current release, by product name: its version and the
    /// release API path of each part (`main`, `sub`).
    products: BTreeMap<String, ProductRelease>,
}

/// What `/api/products/<name>` answers: the product's version and the
/// release API path of each part.
#[derive(Debug, Clone, PartialEq)]
struct ProductRelease {
    version: String,
    main: String,
    sub: String,
}

impl State {
    /// Runs `f` on the fleet at the server's time; the decisions it made go
    /// to the log.
    fn with_fleet<R>(&mut self, f: impl FnOnce(&mut crate::rollout::Fleet, f64) -> R) -> R {
        let t = self.t0.elapsed().as_secs_f64();
        let before = self.fleet.decisions.len();
        let r = f(&mut self.fleet, t);
        let new: Vec<String> = self.fleet.decisions[before..].iter().map(decision_line).collect();
        for line in new {
            self.log(&line);
        }
        r
    }

    fn log(&mut self, line: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        if let Some(f) = self.log.as_mut() {
            let _ = writeln!(f, "[{t:10.6}] {line}");
        }
    }

    /// Take one use of the first fault matching `api`.
    fn take_fault(&mut self, api: bool) -> Option<Fault> {
        let i = self.faults.iter().position(|(f, n)| *n > 0 && f.targets_api() == api)?;
        self.faults[i].1 -= 1;
        let f = self.faults[i].0.clone();
        self.faults.retain(|(_, n)| *n > 0);
        Some(f)
    }
}

/// A running update server.
pub struct UpdateServer {
    port: u16,
    /// The host guests reach the server at (`10.0.2.2` on QEMU's user
    /// network; an external board's `server_address`).
    seen_as: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UpdateServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type HmacSha256 = Hmac<Sha256>;

fn sign(secret: &[u8], path: &str, expires: u64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
    mac.update(format!("{path}|{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl UpdateServer {
    /// Listen on 127.0.0.1 (a port the kernel picks) and log to `log`;
    /// guests reach it as 10.0.2.2.
    pub async fn start(log: PathBuf) -> std::io::Result<UpdateServer> {
        Self::start_on([127, 0, 0, 1].into(), "10.0.2.2", log).await
    }

    /// Listen on `bind` only (an external board's lab address: never every
    /// interface), guests reaching it as `seen_as`.
    pub async fn start_on(bind: std::net::IpAddr, seen_as: &str, log: PathBuf) -> std::io::Result<UpdateServer> {
        let listener = TcpListener::bind((bind, 0)).await?;
        let port = listener.local_addr()?.port();
        let mut secret = [0u8; 32];
        let seed = Sha256::digest(format!("{:?}{}{port}", SystemTime::now(), std::process::id()));
        secret.copy_from_slice(&seed);
        let state = Arc::new(Mutex::new(State {
            releases: BTreeMap::new(),
            bundles: BTreeMap::new(),
            files: BTreeMap::new(),
            faults: Vec::new(),
            secret,
            url_ttl: Duration::from_secs(600),
            log: std::fs::OpenOptions::new().create(true).append(true).open(&log).ok(),
            t0: Instant::now(),
            progress: tokio::sync::watch::channel(0).0,
            callbacks: Vec::new(),
            callback_count: tokio::sync::watch::channel(0).0,
            dirs: BTreeMap::new(),
            ostree_repo: None,
            ostree_refs: BTreeMap::new(),
            ostree_deltas: false,
            requests: Vec::new(),
            request_count: tokio::sync::watch::channel(0).0,
            fleet: crate::rollout::Fleet::default(),
            products: BTreeMap::new(),
            seen_as: seen_as.to_string(),
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(handle(conn, st.clone()));
            }
        });
        Ok(UpdateServer { port, seen_as: seen_as.to_string(), state, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Works on the fleet's channels and rollouts (publish, advance, pause,
    /// read decisions) with the server's clock (seconds since it started).
    pub fn fleet<R>(&self, f: impl FnOnce(&mut crate::rollout::Fleet, f64) -> R) -> R {
        self.state.lock().unwrap().with_fleet(f)
    }

    /// The API URL of a release as the guest sees it.
    /// Where a device of `arch` asks for release `version`.
    pub fn guest_api_url(&self, version: &str, arch: &str) -> String {
        format!("http://{}:{}/api/releases/{version}?arch={arch}", self.seen_as, self.port)
    }

    pub fn add_release(&self, r: Release) {
        let mut s = self.state.lock().unwrap();
        s.log(&format!(
            "release {} for {} = {} ({} bytes, sha256 {})",
            r.version,
            r.arch,
            r.file_name,
            r.bytes.len(),
            r.sha256
        ));
        s.releases.insert((r.version.clone(), r.arch.clone()), r);
    }

    /// Publish a RAUC bundle as `/bundles/<file>`; returns its URL as the guest sees it.
    pub fn add_bundle(&self, file: &str, bytes: Vec<u8>) -> String {
        let mut s = self.state.lock().unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        s.log(&format!("bundle {file} ({} bytes, sha256 {sha})", bytes.len()));
        s.bundles.insert(file.to_string(), Arc::new(bytes));
        format!("http://{}:{}/bundles/{file}", self.seen_as, self.port)
    }

    /// Make `version` product `name`'s release: its parts served as
    /// releases of their own (keyed `<name>-main`, `<name>-sub` in place of
    /// an arch, so two parts of one arch never meet), and
    /// `/api/products/<name>` pointing at them.
    pub fn set_product(&self, name: &str, version: &str, mut main: Release, mut sub: Release) {
        main.arch = format!("{name}-main");
        sub.arch = format!("{name}-sub");
        self.add_release(main.clone());
        self.add_release(sub.clone());
        let mut s = self.state.lock().unwrap();
        s.log(&format!("product {name} = {version} (main {}, sub {})", main.version, sub.version));
        let api = |r: &Release| format!("/api/releases/{}?arch={}", r.version, r.arch);
        let (main, sub) = (api(&main), api(&sub));
        s.products.insert(name.to_string(), ProductRelease { version: version.to_string(), main, sub });
    }

    /// Publish a team's artifact as `/files/<arch>/<file>` (bytes as the
    /// user built them); returns its URL as the guest sees it.
    pub fn add_file(&self, arch: &str, file: &str, bytes: Vec<u8>) -> String {
        let mut s = self.state.lock().unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        s.log(&format!("file {arch}/{file} ({} bytes, sha256 {sha})", bytes.len()));
        s.files.insert(format!("{arch}/{file}"), Arc::new(bytes));
        format!("http://{}:{}/files/{arch}/{file}", self.seen_as, self.port)
    }

    /// Serve a team's OSTree archive repo as it is (its own refs, objects
    /// and deltas) below `/files/<arch>/<name>/`; returns its URL.
    pub fn add_dir(&self, arch: &str, name: &str, repo: PathBuf) -> String {
        let mut s = self.state.lock().unwrap();
        s.log(&format!("ostree repo {} as files/{arch}/{name}/", repo.display()));
        s.dirs.insert(format!("{arch}/{name}"), repo);
        format!("http://{}:{}/files/{arch}/{name}", self.seen_as, self.port)
    }

    /// Serve the OSTree archive repo `repo` at `/ostree/` (nothing published
    /// yet), with its static deltas or without (`deltas/` then answers 404).
    pub fn serve_ostree_repo(&self, repo: PathBuf, deltas: bool) {
        let mut s = self.state.lock().unwrap();
        s.log(&format!("ostree repo {} (static deltas {})", repo.display(), if deltas { "on" } else { "off" }));
        s.ostree_repo = Some(repo);
        s.ostree_deltas = deltas;
    }

    /// Answer `refs/heads/<branch>` with `commit` from now on.
    pub fn publish_ostree(&self, branch: &str, commit: &str) {
        let mut s = self.state.lock().unwrap();
        s.log(&format!("ostree ref {branch} = {commit}"));
        s.ostree_refs.insert(format!("refs/heads/{branch}"), commit.to_string());
    }

    /// The repo's URL as the guest sees it.
    pub fn ostree_url(&self) -> String {
        format!("http://{}:{}/ostree", self.seen_as, self.port)
    }

    /// Requests so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Wait until a request whose path matches `re` (at index >= `from`)
    /// starts being answered; returns its path. Never times out by itself.
    pub async fn wait_request(&self, re: &regex::Regex, from: usize) -> String {
        let mut rx = self.state.lock().unwrap().request_count.subscribe();
        loop {
            let hit = self.state.lock().unwrap().requests.iter().skip(from).find(|p| re.is_match(p)).cloned();
            if let Some(p) = hit {
                return p;
            }
            if rx.changed().await.is_err() {
                return String::new();
            }
        }
    }

    pub fn add_fault(&self, fault: Fault, count: u32) {
        let mut s = self.state.lock().unwrap();
        s.log(&format!("fault armed: {} (next {count} request(s))", fault.name()));
        s.faults.push((fault, count.max(1)));
    }

    /// The server as the guest reaches it: `10.0.2.2:<port>`.
    pub fn guest_address(&self) -> String {
        format!("{}:{}", self.seen_as, self.port)
    }

    /// Callbacks received so far.
    pub fn callbacks(&self) -> usize {
        self.state.lock().unwrap().callbacks.len()
    }

    /// Wait (at most `timeout`) for a callback named `name` at index >=
    /// `from`; returns its index and body.
    pub async fn wait_callback(&self, name: &str, from: usize, timeout: Duration) -> Option<(usize, Vec<u8>)> {
        let mut rx = self.state.lock().unwrap().callback_count.subscribe();
        let found = |s: &State| {
            s.callbacks.iter().enumerate().skip(from).find(|(_, (n, _))| n == name).map(|(i, (_, b))| (i, b.clone()))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(hit) = found(&self.state.lock().unwrap()) {
                return Some(hit);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Release bytes sent so far.
    pub fn downloaded(&self) -> u64 {
        *self.state.lock().unwrap().progress.borrow()
    }

    /// Wait until at least `bytes` release bytes have been sent in total.
    pub async fn wait_downloaded(&self, bytes: u64) {
        let mut rx = self.state.lock().unwrap().progress.subscribe();
        let _ = rx.wait_for(|b| *b >= bytes).await;
    }
}

async fn handle(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    // Read the request head (bounded: 16 KiB, 10 s).
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
            let n = conn.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    })
    .await;
    let Ok(Some(head)) = head else { return };
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    if let Some(name) = path.strip_prefix("/callback/") {
        // The body follows the head: Content-Length bytes (at most 64 KiB, 10 s).
        let start = buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(buf.len(), |i| i + 4);
        let want = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
            .min(65536);
        let mut body = buf[start.min(buf.len())..].to_vec();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while body.len() < want {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        body.truncate(want);
        let reply = text(200, "ok\n");
        send(&mut conn, &reply, &state).await;
        let mut s = state.lock().unwrap();
        s.log(&format!("{method} {target} -> callback `{name}` ({} bytes)", body.len()));
        s.callbacks.push((name.to_string(), body));
        let n = s.callbacks.len();
        s.callback_count.send_replace(n);
        return;
    }
    let reply = route(method, path, &query, &state);
    {
        let mut s = state.lock().unwrap();
        s.requests.push(path.to_string());
        let n = s.requests.len();
        s.request_count.send_replace(n);
    }
    let (sent, total) = send(&mut conn, &reply, &state).await;
    let mut s = state.lock().unwrap();
    s.log(&format!(
        "{method} {target} -> {} ({sent} of {total} bytes){}",
        reply.status,
        reply.fault.as_ref().map(|f| format!(" [fault: {}]", f.name())).unwrap_or_default()
    ));
}

struct Reply {
    status: u16,
    body: Arc<Vec<u8>>,
    fault: Option<Fault>,
    /// A release download (counted in the progress watch).
    release: bool,
}

fn text(status: u16, body: &str) -> Reply {
    Reply { status, body: Arc::new(body.as_bytes().to_vec()), fault: None, release: false }
}

fn decision_line(d: &crate::rollout::Decision) -> String {
    format!("fleet: {} channel={} id={} {}", d.what, d.channel, d.id, d.detail)
}

/// `/v1/check-in?id=&channel=&arch=&version=` and
/// `/v1/report?id=&version=&result=ok|failed`: `key=value` lines, like the
/// release API, so a shell agent reads them.
fn fleet_route(s: &mut State, path: &str, query: &BTreeMap<&str, &str>) -> Reply {
    let q = |k: &str| query.get(k).copied().unwrap_or_default();
    s.with_fleet(|fleet, t| match path {
        "/v1/check-in" => match fleet.check_in(t, q("id"), q("channel"), q("arch"), q("version")) {
            Ok(crate::rollout::Answer::Update { version, wave }) => text(
                200,
                &format!(
                    "action=update\nversion={version}\nwave={}\nrelease=/api/releases/{version}?arch={}\n",
                    wave + 1,
                    q("arch")
                ),
            ),
            Ok(crate::rollout::Answer::None { reason }) => text(200, &format!("action=none\nreason={reason}\n")),
            Err(e) => text(404, &format!("error={e}\n")),
        },
        _ => match fleet.report(t, q("id"), q("version"), q("result") == "ok") {
            Ok(()) => text(200, "ok\n"),
            Err(e) => text(404, &format!("error={e}\n")),
        },
    })
}

fn route(method: &str, path: &str, query: &BTreeMap<&str, &str>, state: &Arc<Mutex<State>>) -> Reply {
    let mut s = state.lock().unwrap();
    if method != "GET" {
        return text(405, "only GET\n");
    }
    if path == "/v1/check-in" || path == "/v1/report" {
        return fleet_route(&mut s, path, query);
    }
    if let Some(name) = path.strip_prefix("/api/products/") {
        let Some(p) = s.products.get(name) else { return text(404, "no such product\n") };
        return text(200, &format!("version={}\nmain={}\nsub={}\n", p.version, p.main, p.sub));
    }
    if let Some(version) = path.strip_prefix("/api/releases/") {
        let fault = s.take_fault(true);
        if let Some(f @ Fault::Error500 { .. }) = &fault {
            return Reply { fault: Some(f.clone()), ..text(500, "internal error\n") };
        }
        // `?arch=` picks the build; without it, a version built for one
        // arch only.
        let found = match query.get("arch") {
            Some(arch) => s.releases.get(&(version.to_string(), arch.to_string())).cloned(),
            None => {
                let mut builds = s.releases.values().filter(|r| r.version == version);
                match (builds.next(), builds.next()) {
                    (Some(one), None) => Some(one.clone()),
                    _ => None,
                }
            }
        };
        let Some(r) = found else { return text(404, "no such release\n") };
        let expires = if fault == Some(Fault::Expire) { now_unix() - 60 } else { now_unix() + s.url_ttl.as_secs() };
        let file_path = format!("/releases/{}", r.file_name);
        let sig = sign(&s.secret, &file_path, expires);
        let body = format!(
            "version={}\nurl=http://{}:{{port}}{file_path}?expires={expires}&sig={sig}\nsha256={}\nsize={}\nkey={}\n",
            r.version,
            s.seen_as,
            r.sha256,
            r.bytes.len(),
            r.key
        );
        return Reply { fault, ..text(200, &body) };
    }
    if let Some(file) = path.strip_prefix("/releases/") {
        let Some(r) = s.releases.values().find(|r| r.file_name == file).cloned() else {
            return text(404, "no such file\n");
        };
        let expires: u64 = query.get("expires").and_then(|e| e.parse().ok()).unwrap_or(0);
        let sig = query.get("sig").copied().unwrap_or("");
        if sig != sign(&s.secret, path, expires) {
            return text(403, "bad signature\n");
        }
        if expires < now_unix() {
            return text(403, "URL expired\n");
        }
        let fault = s.take_fault(false);
        if let Some(f @ Fault::Error500 { .. }) = &fault {
            return Reply { fault: Some(f.clone()), ..text(500, "internal error\n") };
        }
        return Reply { status: 200, body: r.bytes.clone(), fault, release: true };
    }
    if let Some(file) = path.strip_prefix("/bundles/") {
        let bytes = s.bundles.get(file).cloned();
        return download(&mut s, bytes, "no such bundle\n");
    }
    if let Some(file) = path.strip_prefix("/files/") {
        let dir = s.dirs.iter().find_map(|(k, d)| Some((d.clone(), file.strip_prefix(k.as_str())?.strip_prefix('/')?)));
        if let Some((repo, rel)) = dir {
            return repo_file(&mut s, &repo, rel);
        }
        let bytes = s.files.get(file).cloned();
        return download(&mut s, bytes, "no such file\n");
    }
    if let Some(rel) = path.strip_prefix("/ostree/") {
        return ostree_file(&mut s, rel);
    }
    text(404, "not found\n")
}

/// A download of bytes served as-is (a bundle, a team's file), with the
/// next download fault; 404 with `missing` when there is none.
fn download(s: &mut State, bytes: Option<Arc<Vec<u8>>>, missing: &str) -> Reply {
    let Some(bytes) = bytes else { return text(404, missing) };
    let fault = s.take_fault(false);
    if let Some(f @ Fault::Error500 { .. }) = &fault {
        return Reply { fault: Some(f.clone()), ..text(500, "internal error\n") };
    }
    Reply { status: 200, body: bytes, fault, release: true }
}

/// A file of the served OSTree repo (see the module doc).
fn ostree_file(s: &mut State, rel: &str) -> Reply {
    let Some(repo) = s.ostree_repo.clone() else { return text(404, "no ostree repo served\n") };
    if rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return text(403, "bad path\n");
    }
    if rel.starts_with("refs/") {
        return match s.ostree_refs.get(rel) {
            Some(commit) => text(200, &format!("{commit}\n")),
            None => text(404, "ref not published\n"),
        };
    }
    if rel.starts_with("summary") {
        return text(404, "no summary\n");
    }
    if (rel.starts_with("deltas/") || rel.starts_with("delta-indexes/")) && !s.ostree_deltas {
        return text(404, "static deltas not served\n");
    }
    repo_file(s, &repo, rel)
}

/// A file of an OSTree repo folder, as it is; the next download fault
/// applies to objects.
fn repo_file(s: &mut State, repo: &Path, rel: &str) -> Reply {
    if rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return text(403, "bad path\n");
    }
    let Ok(bytes) = std::fs::read(repo.join(rel)) else { return text(404, "no such file\n") };
    let fault = if rel.starts_with("objects/") { s.take_fault(false) } else { None };
    if let Some(f @ Fault::Error500 { .. }) = &fault {
        return Reply { fault: Some(f.clone()), ..text(500, "internal error\n") };
    }
    Reply { status: 200, body: Arc::new(bytes), fault, release: rel.starts_with("objects/") }
}

/// Write the reply, applying a body fault; returns the body bytes sent and
/// the body's length (an API answer's, with the port filled in).
async fn send(conn: &mut TcpStream, reply: &Reply, state: &Arc<Mutex<State>>) -> (usize, usize) {
    let port = conn.local_addr().map_or(0, |a| a.port());
    let mut body: std::borrow::Cow<[u8]> = std::borrow::Cow::Borrowed(&reply.body[..]);
    if reply.status == 200 && body.starts_with(b"version=") {
        body =
            std::borrow::Cow::Owned(String::from_utf8_lossy(&body).replace("{port}", &port.to_string()).into_bytes());
    }
    let len = body.len();
    let (mut limit, mut declared) = (len, len);
    let mut stall = None;
    let mut rate = None;
    match &reply.fault {
        Some(Fault::Corrupt { bytes }) => {
            let mut owned = body.into_owned();
            let start = owned.len() / 2;
            for b in owned.iter_mut().skip(start).take(*bytes) {
                *b ^= 0xA5;
            }
            body = std::borrow::Cow::Owned(owned);
        }
        Some(Fault::Truncate { percent }) => {
            limit = len * usize::from(*percent).min(100) / 100;
            declared = limit;
        }
        Some(Fault::Drop { percent }) => limit = len * usize::from(*percent).min(100) / 100,
        Some(Fault::Stall { seconds }) => stall = Some(Duration::from_secs(*seconds)),
        Some(Fault::Slow { kib_per_s }) => rate = Some((*kib_per_s).max(1) * 1024),
        _ => {}
    }
    let reason = match reply.status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {declared}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        reply.status
    );
    if conn.write_all(head.as_bytes()).await.is_err() {
        return (0, len);
    }
    let mut sent = 0;
    let block = 64 * 1024;
    let started = Instant::now();
    while sent < limit {
        let end = (sent + block).min(limit);
        if let Some(d) = stall.filter(|_| sent >= len / 2) {
            state.lock().unwrap().log(&format!("stalling {d:?} at byte {sent}"));
            // The fault itself: hold the transfer until the stall is over.
            tokio::time::sleep_until(tokio::time::Instant::now() + d).await;
            stall = None;
        }
        if conn.write_all(&body[sent..end]).await.is_err() {
            return (sent, len);
        }
        if reply.release {
            let n = (end - sent) as u64;
            state.lock().unwrap().progress.send_modify(|b| *b += n);
        }
        sent = end;
        if let Some(rate) = rate {
            // Throttle: wait until the average rate is back under the limit.
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let _ = conn.flush().await;
    let _ = conn.shutdown().await;
    (sent, len)
}

/// A release package: the slot image, gzip'ed and encrypted the way the
/// fleet's CDN ships it (`openssl enc -aes-256-cbc -pbkdf2`), cached beside
/// the image. Each call writes its own temp file and publishes it without
/// clobbering, so runs packaging the same release at once cannot tear it:
/// the first one published wins and the others use it.
pub fn package(rootfs: &std::path::Path, out: &std::path::Path, key: &str) -> Result<(), String> {
    if out.is_file() {
        return Ok(());
    }
    for (tool, pkg) in [("gzip", "gzip"), ("openssl", "openssl")] {
        which::which(tool)
            .map_err(|_| format!("{tool} not found: install Debian package {pkg} (cargo xtask setup)"))?;
    }
    let dir = out.parent().unwrap_or(std::path::Path::new("."));
    let tmp =
        tempfile::Builder::new().prefix(".release-").tempfile_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = format!(
        "set -o pipefail; gzip -1 -c {} | DEVLAB_KEY={key} openssl enc -aes-256-cbc -pbkdf2 -salt -pass env:DEVLAB_KEY -out {}",
        crate::machine::shell_quote(&rootfs.to_string_lossy()),
        crate::machine::shell_quote(&tmp.path().to_string_lossy())
    );
    let res = std::process::Command::new("bash").arg("-c").arg(&script).output().map_err(|e| e.to_string())?;
    if !res.status.success() {
        return Err(format!("packaging {}: {}", rootfs.display(), String::from_utf8_lossy(&res.stderr).trim()));
    }
    match tmp.persist_noclobber(out) {
        Ok(_) => Ok(()),
        Err(_) if out.is_file() => Ok(()),
        Err(e) => Err(format!("publishing {}: {}", out.display(), e.error)),
    }
}

/// Load a packaged release for serving.
pub fn load_release(version: &str, arch: &str, file: &std::path::Path, key: &str) -> std::io::Result<Release> {
    let bytes = std::fs::read(file)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Release {
        version: version.to_string(),
        arch: arch.to_string(),
        file_name: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        bytes: Arc::new(bytes),
        sha256,
        key: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An external board's lab address only: a connection to another
    /// address of the host is refused, and the board is told the address
    /// it reaches the server at.
    #[tokio::test]
    async fn a_server_for_an_external_board_listens_on_its_lab_address_only() {
        let d = tempfile::tempdir().unwrap();
        let lab: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let s = UpdateServer::start_on(lab, "192.168.50.1", d.path().join("http.log")).await.unwrap();
        assert!(tokio::net::TcpStream::connect((lab, s.port())).await.is_ok());
        let outside = tokio::net::TcpStream::connect(("127.0.0.1", s.port())).await;
        assert_eq!(outside.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(s.guest_address(), format!("192.168.50.1:{}", s.port()));
        assert!(s.guest_api_url("2", "x86_64").starts_with("http://192.168.50.1:"));
    }

    async fn get(port: u16, target: &str) -> (u16, Vec<u8>, bool) {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).await.unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let body = all[split + 4..].to_vec();
        let complete = body.len() == declared;
        (status, body, complete)
    }

    fn field<'a>(api: &'a str, k: &str) -> &'a str {
        api.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap()
    }

    async fn server() -> (UpdateServer, tempfile::TempDir, Vec<u8>) {
        let d = tempfile::tempdir().unwrap();
        let s = UpdateServer::start(d.path().join("http.log")).await.unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        s.add_release(Release {
            version: "2".into(),
            arch: "x86_64".into(),
            file_name: "v2.img.enc".into(),
            bytes: Arc::new(bytes.clone()),
            sha256,
            key: "k".into(),
        });
        (s, d, bytes)
    }

    /// The guest's view: API, then the signed URL rewritten to the host.
    async fn download(s: &UpdateServer) -> (String, u16, Vec<u8>, bool) {
        let (st, api, _) = get(s.port(), "/api/releases/2").await;
        assert_eq!(st, 200);
        let api = String::from_utf8(api).unwrap();
        let url = field(&api, "url").to_string();
        assert!(url.starts_with(&format!("http://10.0.2.2:{}/releases/v2.img.enc?expires=", s.port())), "{url}");
        let target = url.split_once(&format!(":{}", s.port())).unwrap().1.to_string();
        let (status, body, complete) = get(s.port(), &target).await;
        (api, status, body, complete)
    }

    #[tokio::test]
    async fn devices_check_in_on_their_channel_and_report() {
        use crate::rollout::{Fleet, Rollout, Wave};
        let (s, d, _) = server().await;
        s.fleet(|f, t| {
            *f = Fleet::new(["stable", "beta"]);
            let waves = vec![Wave::Devices(vec!["n1".into()]), Wave::Devices(vec!["n2".into()])];
            f.publish(t, "stable", Rollout::new("2", waves, 1, false).unwrap()).unwrap();
        });
        let body = |r: (u16, Vec<u8>, bool)| (r.0, String::from_utf8(r.1).unwrap());
        let (st, a) = body(get(s.port(), "/v1/check-in?id=n1&channel=stable&arch=x86_64&version=1").await);
        assert_eq!(st, 200);
        assert_eq!((field(&a, "action"), field(&a, "version"), field(&a, "wave")), ("update", "2", "1"));
        assert_eq!(field(&a, "release"), "/api/releases/2?arch=x86_64");
        let (_, a) = body(get(s.port(), "/v1/check-in?id=n2&channel=stable&arch=aarch64&version=1").await);
        assert_eq!(field(&a, "action"), "none");
        assert!(field(&a, "reason").contains("wave 2 of 2 not open"));
        let (st, a) = body(get(s.port(), "/v1/check-in?id=n3&channel=nightly&arch=x86_64&version=1").await);
        assert_eq!((st, field(&a, "error")), (404, "unknown channel nightly"));
        // One failed update halts this rollout: n1's report stops n2's wave.
        assert_eq!(get(s.port(), "/v1/report?id=n1&version=2&result=failed").await.0, 200);
        assert!(s.fleet(|f, t| !f.advance(t, "stable")));
        let log = std::fs::read_to_string(d.path().join("http.log")).unwrap();
        assert!(log.contains("fleet: halt channel=stable id= 1 failed update(s) in wave 1: rollout halted"), "{log}");
        assert!(log.contains("fleet: check-in channel=stable id=n1 runs 1 (x86_64): update to 2 (wave 1)"), "{log}");
    }

    #[tokio::test]
    async fn each_arch_gets_its_own_build_of_a_version() {
        let (s, _d, _) = server().await;
        let arm: Vec<u8> = vec![7; 1000];
        s.add_release(Release {
            version: "2".into(),
            arch: "aarch64".into(),
            file_name: "v2-aarch64.img.enc".into(),
            sha256: hex::encode(Sha256::digest(&arm)),
            bytes: Arc::new(arm),
            key: "k".into(),
        });
        let url_of = |api: Vec<u8>| field(&String::from_utf8(api).unwrap(), "url").to_string();
        let (st, api, _) = get(s.port(), "/api/releases/2?arch=aarch64").await;
        assert_eq!(st, 200);
        assert!(url_of(api).contains("/releases/v2-aarch64.img.enc?"));
        let (st, api, _) = get(s.port(), "/api/releases/2?arch=x86_64").await;
        assert_eq!(st, 200);
        assert!(url_of(api).contains("/releases/v2.img.enc?"));
        assert_eq!(get(s.port(), "/api/releases/2?arch=riscv64").await.0, 404);
        // Without an arch, a version built for several is ambiguous.
        assert_eq!(get(s.port(), "/api/releases/2").await.0, 404);
        assert!(s.guest_api_url("2", "aarch64").ends_with("/api/releases/2?arch=aarch64"));
    }

    #[tokio::test]
    async fn a_product_names_each_parts_release_and_two_parts_of_one_arch_never_meet() {
        let (s, d, _) = server().await;
        let part = |version: &str, fill: u8| {
            let bytes = vec![fill; 1000];
            Release {
                version: version.into(),
                arch: "x86_64".into(),
                file_name: format!("part-{fill}.img.enc"),
                sha256: hex::encode(Sha256::digest(&bytes)),
                bytes: Arc::new(bytes),
                key: "k".into(),
            }
        };
        assert_eq!(get(s.port(), "/api/products/robot").await.0, 404);
        // Both parts built for x86_64, at different versions.
        s.set_product("robot", "7", part("5", 1), part("3", 2));
        let (st, body, _) = get(s.port(), "/api/products/robot").await;
        let body = String::from_utf8(body).unwrap();
        assert_eq!(st, 200);
        assert_eq!(
            (field(&body, "version"), field(&body, "main"), field(&body, "sub")),
            ("7", "/api/releases/5?arch=robot-main", "/api/releases/3?arch=robot-sub")
        );
        for (api, file) in [(field(&body, "main"), "part-1"), (field(&body, "sub"), "part-2")] {
            let (st, a, _) = get(s.port(), api).await;
            let a = String::from_utf8(a).unwrap();
            assert_eq!(st, 200, "{api}");
            assert!(field(&a, "url").contains(&format!("/releases/{file}.img.enc?")), "{a}");
        }
        // The arch's own build of version 2 is untouched.
        assert_eq!(get(s.port(), "/api/releases/2?arch=x86_64").await.0, 200);
        let log = std::fs::read_to_string(d.path().join("http.log")).unwrap();
        assert!(log.contains("product robot = 7 (main 5, sub 3)"), "{log}");
    }

    #[tokio::test]
    async fn signed_url_serves_the_release_and_checks_signature() {
        let (s, d, bytes) = server().await;
        let (api, status, body, complete) = download(&s).await;
        assert_eq!((status, complete), (200, true));
        assert_eq!(body, bytes);
        assert_eq!(field(&api, "sha256"), hex::encode(Sha256::digest(&bytes)));
        assert_eq!(field(&api, "size"), "200000");
        let url = field(&api, "url");
        let target = url.split_once(&format!(":{}", s.port())).unwrap().1;
        let forged = target.replace("sig=", "sig=00");
        assert_eq!(get(s.port(), &forged).await.0, 403);
        let unsigned = target.split('?').next().unwrap();
        assert_eq!(get(s.port(), unsigned).await.0, 403);
        assert_eq!(get(s.port(), "/api/releases/9").await.0, 404);
        let log = std::fs::read_to_string(d.path().join("http.log")).unwrap();
        assert!(log.contains("GET /api/releases/2 -> 200"), "{log}");
        // The API answer was sent whole: its length counts the port as
        // filled in, not the `{port}` of the template.
        let api = log.lines().find(|l| l.contains("GET /api/releases/2 -> 200")).unwrap();
        let counts = api.split_once('(').unwrap().1.split_once(" bytes)").unwrap().0;
        let (sent, total) = counts.split_once(" of ").unwrap();
        assert_eq!(sent, total, "{api}");
    }

    #[tokio::test]
    async fn faults_apply_to_the_next_request_only() {
        let (s, _d, bytes) = server().await;
        s.add_fault(Fault::Corrupt { bytes: 10 }, 1);
        let (_, status, body, complete) = download(&s).await;
        assert_eq!((status, complete), (200, true));
        assert_ne!(body, bytes);
        assert_eq!(body.iter().zip(&bytes).filter(|(a, b)| a != b).count(), 10);
        let (_, _, body, _) = download(&s).await;
        assert_eq!(body, bytes, "the fault was used up");

        s.add_fault(Fault::Truncate { percent: 50 }, 1);
        let (_, status, body, complete) = download(&s).await;
        assert_eq!((status, body.len(), complete), (200, 100_000, true), "looks whole, is short");

        s.add_fault(Fault::Drop { percent: 30 }, 1);
        let (_, status, body, complete) = download(&s).await;
        assert_eq!((status, body.len(), complete), (200, 60_000, false), "connection dropped");

        s.add_fault(Fault::Expire, 1);
        let (_, status, _, _) = download(&s).await;
        assert_eq!(status, 403);

        s.add_fault(Fault::Error500 { api: true }, 1);
        assert_eq!(get(s.port(), "/api/releases/2").await.0, 500);
        s.add_fault(Fault::Error500 { api: false }, 2);
        assert_eq!(download(&s).await.1, 500);
        assert_eq!(download(&s).await.1, 500);
        assert_eq!(download(&s).await.1, 200);
    }

    /// Several runs packaging one release at once all end with the same,
    /// whole file (the regression: a shared temp name tore it).
    #[test]
    fn concurrent_packaging_publishes_one_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs.ext4");
        std::fs::write(&rootfs, (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let out = d.path().join("release.img.gz.enc");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| package(&rootfs, &out, "k").unwrap());
            }
        });
        let script = format!(
            "DEVLAB_KEY=k openssl enc -d -aes-256-cbc -pbkdf2 -pass env:DEVLAB_KEY -in {} | gunzip -c | cmp - {}",
            out.display(),
            rootfs.display()
        );
        let ok = std::process::Command::new("bash").arg("-c").arg(script).status().unwrap().success();
        assert!(ok, "the published package decrypts to the slot image");
        let leftovers = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temp files left behind");
    }

    #[tokio::test]
    async fn a_teams_ostree_repo_is_served_as_it_is_below_files() {
        let (s, dir, _) = server().await;
        let repo = dir.path().join("team-repo");
        for (rel, body) in [
            ("config", "[core]\nmode=archive-z2\n"),
            ("refs/heads/team/stable", "cccc\n"),
            ("objects/ab/cd.filez", "obj"),
        ] {
            std::fs::create_dir_all(repo.join(rel).parent().unwrap()).unwrap();
            std::fs::write(repo.join(rel), body).unwrap();
        }
        assert_eq!(get(s.port(), "/files/x86_64/os/config").await.0, 404, "nothing served yet");
        let url = s.add_dir("x86_64", "os", repo);
        assert!(url.ends_with("/files/x86_64/os"), "{url}");
        assert_eq!(get(s.port(), "/files/x86_64/os/refs/heads/team/stable").await.1, b"cccc\n", "its own refs");
        assert_eq!(get(s.port(), "/files/aarch64/os/config").await.0, 404, "per arch");
        assert_eq!(get(s.port(), "/files/x86_64/os/../../secret").await.0, 403);
        assert_eq!(get(s.port(), "/files/x86_64/osx/config").await.0, 404, "a name, not a prefix");
        s.add_fault(Fault::Error500 { api: false }, 1);
        assert_eq!(get(s.port(), "/files/x86_64/os/config").await.0, 200, "faults are for objects");
        assert_eq!(get(s.port(), "/files/x86_64/os/objects/ab/cd.filez").await.0, 500);
        assert_eq!(get(s.port(), "/files/x86_64/os/objects/ab/cd.filez").await.1, b"obj");
    }

    #[tokio::test]
    async fn ostree_repo_serves_published_refs_and_deltas_on_request() {
        let (s, d, _) = server().await;
        let repo = d.path().join("repo");
        for (path, body) in [
            ("config", "[core]\nmode=archive-z2\n"),
            ("refs/heads/devlab/ostree", "aaaa\n"),
            ("objects/ab/cdef.filez", "object-bytes"),
            ("deltas/xy/z/superblock", "delta"),
            ("summary", "real summary"),
        ] {
            let p = repo.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        assert_eq!(get(s.port(), "/ostree/config").await.0, 404, "nothing served yet");
        s.serve_ostree_repo(repo.clone(), false);
        let (status, body, _) = get(s.port(), "/ostree/config").await;
        assert_eq!((status, body.as_slice()), (200, b"[core]\nmode=archive-z2\n".as_slice()));
        assert_eq!(
            get(s.port(), "/ostree/refs/heads/devlab/ostree").await.0,
            404,
            "the repo's own ref is not published"
        );
        s.publish_ostree("devlab/ostree", "bbbb");
        assert_eq!(get(s.port(), "/ostree/refs/heads/devlab/ostree").await.1, b"bbbb\n");
        assert_eq!(get(s.port(), "/ostree/summary").await.0, 404);
        assert_eq!(get(s.port(), "/ostree/deltas/xy/z/superblock").await.0, 404, "deltas off");
        assert_eq!(get(s.port(), "/ostree/../secret").await.0, 403);
        let from = s.requests();
        s.add_fault(Fault::Corrupt { bytes: 2 }, 1);
        let (status, body, _) = get(s.port(), "/ostree/objects/ab/cdef.filez").await;
        assert_eq!(status, 200);
        assert_ne!(body, b"object-bytes", "download faults apply to objects");
        let re = regex::Regex::new(r"\.filez$").unwrap();
        assert_eq!(s.wait_request(&re, from).await, "/ostree/objects/ab/cdef.filez");
        s.serve_ostree_repo(repo, true);
        assert_eq!(get(s.port(), "/ostree/deltas/xy/z/superblock").await.1, b"delta");
    }

    #[tokio::test]
    async fn slow_and_stall_delay_but_deliver() {
        let (s, _d, bytes) = server().await;
        s.add_fault(Fault::Slow { kib_per_s: 1000 }, 1);
        let t = Instant::now();
        let before = s.downloaded();
        let (_, _, body, complete) = download(&s).await;
        assert_eq!(s.downloaded() - before, bytes.len() as u64, "progress counts release bytes");
        s.wait_downloaded(before + 1).await;
        assert!(complete && body == bytes);
        assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
        s.add_fault(Fault::Stall { seconds: 1 }, 1);
        let t = Instant::now();
        let (_, _, body, complete) = download(&s).await;
        assert!(complete && body == bytes);
        assert!(t.elapsed() >= Duration::from_secs(1));
    }
}
