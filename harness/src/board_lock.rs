//! Exclusive use of a physical ("external") board: one run at a time, on one
//! host and across CI jobs on several hosts that share a lab through a shared
//! directory (NFS-like). Modelled on labgrid's coordinator reservations, but
//! with no coordinator: the directory is the only shared state.
//!
//! Files in the lock directory ([`default_dir`], or `$DEVLAB_LOCK_DIR`, which
//! must point at the shared directory when several hosts share boards):
//! - `<board>.lock`: the holder, a [`Holder`] as JSON. Its mtime is the
//!   holder's heartbeat, touched every [`HEARTBEAT`] by a background thread.
//! - `<board>.queue/<unix-nanos>-<host>-<pid>-<nonce>.json`: one ticket per
//!   waiting run (its [`Holder`]); the waiter touches it every [`HEARTBEAT`].
//! - short-lived names that never outlive the call that made them:
//!   `.<board>.lock.tmp-<host>-<pid>-<nonce>` (a lock being created),
//!   `<board>.lock.stale.<nonce>` (a stale lock being taken over),
//!   `<board>.lock.release.<nonce>` (a lock being released) and
//!   `<board>.queue/.tmp-<ticket>` (a ticket being written).
//!
//! Invariants:
//! - at most one `<board>.lock` exists and it is complete: it is written and
//!   fsynced under a unique temporary name, then `link(2)`ed to the lock
//!   name, which fails with `EEXIST` when the board is held. `link` is atomic
//!   on NFS too; a lost NFS reply is detected the classic way (the temporary
//!   file's link count is 2 when the link was made);
//! - a lock is only removed by its holder (release checks the nonce) or by a
//!   taker that judged it stale. Both first `rename(2)` it aside (atomic:
//!   only one of several racers wins, the others see `ENOENT` and start
//!   over), then check that what they moved is what they judged (the nonce
//!   for a release, the inode for a takeover) and put it back with `link`
//!   if it is not;
//! - stale means: holder on this host (same hostname) whose pid is gone, a
//!   zombie, or now a different process (`/proc/<pid>/stat` field 22, the
//!   start time, differs from `pid_start`); holder on another host whose
//!   heartbeat (mtime) is older than [`STALE_AFTER`]. An unreadable lock
//!   file (made by hand) is held by "unknown" and stale only once its mtime
//!   is older than [`STALE_AFTER`]. The mtime is set with `UTIME_NOW`, so on
//!   NFS it is the server's clock; [`STALE_AFTER`] leaves room for clock skew
//!   and the client's attribute cache;
//! - waiting is first come, first served across hosts and processes: only
//!   the waiter whose ticket sorts first among live tickets may try to take
//!   the lock. A run that does not queue takes a free board only when nobody
//!   waits. Dead waiters' tickets (same rules as stale locks) are removed by
//!   whoever sees them; a waiter's own ticket is removed by a guard however
//!   the wait ends (lock, timeout, error, panic);
//! - a waiter sleeps on inotify events on the directory and the queue
//!   directory (a lock released or moved, a ticket gone) with a poll timeout
//!   of at most [`POLL_MAX`], because changes made by other NFS clients
//!   raise no local inotify events;
//! - nothing is left behind: every temporary name is removed on every path,
//!   errors included.

// `LockError` carries the `Holder` by value, as its users match on it; errors
// are rare and returned once per acquisition, so their size does not matter.
#![allow(clippy::result_large_err)]

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a holder touches its lock file and a waiter its ticket.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock or ticket from another host whose mtime is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(180);
/// The longest a waiter sleeps without looking (other hosts' changes raise
/// no inotify events over NFS).
pub const POLL_MAX: Duration = Duration::from_secs(5);
/// Sleep between looks when inotify is not available.
const FALLBACK_POLL: Duration = Duration::from_millis(250);
/// How often one attempt starts over after losing a race for the lock file.
const RACE_RETRIES: usize = 64;

/// The lock directory: `$DEVLAB_LOCK_DIR` if set, else
/// `$XDG_CACHE_HOME/devlab/board-locks`, else `~/.cache/devlab/board-locks`.
/// Only `$DEVLAB_LOCK_DIR` can be shared between hosts.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = env_nonempty("DEVLAB_LOCK_DIR") {
        return PathBuf::from(dir);
    }
    let cache = env_nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env_nonempty("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("devlab").join("board-locks")
}

/// Who a lock is for, as shown to whoever waits: `$DEVLAB_LOCK_OWNER`, else
/// the CI job (`ci job <id> (<name>)`, GitHub Actions or GitLab CI), else
/// `$USER` (or the uid's name).
pub fn default_owner() -> String {
    owner_from(&|name| env_nonempty(name))
}

fn owner_from(get: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(owner) = get("DEVLAB_LOCK_OWNER") {
        return owner;
    }
    let ci = [("GITHUB_RUN_ID", "GITHUB_JOB"), ("CI_JOB_ID", "CI_JOB_NAME")];
    for (id_var, name_var) in ci {
        if let Some(id) = get(id_var) {
            return match get(name_var) {
                Some(name) => format!("ci job {id} ({name})"),
                None => format!("ci job {id}"),
            };
        }
    }
    get("USER").or_else(|| get("LOGNAME")).unwrap_or_else(uid_name)
}

/// The user running this (no `$USER` in a container's shell or a
/// service): the uid's name, else the uid.
fn uid_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The path of a board's lock file in `dir`.
pub fn lock_file(dir: &Path, board: &str) -> PathBuf {
    dir.join(format!("{board}.lock"))
}

fn queue_dir(dir: &Path, board: &str) -> PathBuf {
    dir.join(format!("{board}.queue"))
}

/// Who holds (or waits for) a board: the content of a lock file or ticket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub board: String,
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22 (start time in clock ticks since boot), to
    /// tell the holder from a later process that got the same pid; 0 if unknown.
    pub pid_start: u64,
    /// Unix seconds: when the lock was taken (or the ticket made).
    pub started: u64,
    pub run_dir: String,
    /// Unique per acquisition: tells this lock from any other one.
    pub nonce: String,
}

impl Holder {
    /// How long since `started`.
    pub fn age(&self) -> Duration {
        Duration::from_secs(unix_secs().saturating_sub(self.started))
    }

    /// `owner on host (pid N), held for 3m12s, run dir X`.
    pub fn describe(&self) -> String {
        let run_dir = if self.run_dir.is_empty() { "?" } else { &self.run_dir };
        format!(
            "{} on {} (pid {}), held for {}, run dir {}",
            self.owner,
            self.host,
            self.pid,
            fmt_duration(self.age()),
            run_dir
        )
    }

    fn for_request(req: &Request) -> Holder {
        let pid = std::process::id();
        Holder {
            board: req.board.to_string(),
            owner: req.owner.clone(),
            host: this_host(),
            pid,
            pid_start: pid_start_time(pid).unwrap_or(0),
            started: unix_secs(),
            run_dir: req.run_dir.display().to_string(),
            nonce: new_nonce(),
        }
    }

    /// The holder of a lock file nobody can read.
    fn unknown(board: &str, mtime: SystemTime) -> Holder {
        Holder {
            board: board.to_string(),
            owner: "unknown".to_string(),
            host: "?".to_string(),
            pid: 0,
            pid_start: 0,
            started: mtime.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            run_dir: String::new(),
            nonce: String::new(),
        }
    }
}

/// What [`BoardLock::acquire`] is asked for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub dir: &'a Path,
    pub board: &'a str,
    pub owner: String,
    pub run_dir: &'a Path,
    /// How long to queue; zero fails at once if the board is busy.
    pub wait: Duration,
    /// Refuse to queue when this many runs already wait (0: never queue).
    pub max_queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// `holder` is the holder of the lock, or, when the lock is free for an
    /// instant but others queue ahead, the first of them.
    #[error("{}", busy_message(.holder, .waited, .path))]
    Busy { holder: Holder, waited: Duration, path: PathBuf },
    #[error("{}", queue_full_message(.holder, .waiting, .path))]
    QueueFull { holder: Holder, waiting: usize, path: PathBuf },
    #[error("board lock: {}: {error} (the lock directory must be writable by every run; set it with DEVLAB_LOCK_DIR)", path.display())]
    Io { path: PathBuf, error: String },
}

fn busy_message(holder: &Holder, waited: &Duration, path: &Path) -> String {
    let waited = if waited.is_zero() {
        "did not wait".to_string()
    } else {
        format!("gave up after waiting {}", fmt_duration_ms(*waited))
    };
    format!(
        "board {} is busy: {}; {waited}. Lock file: {}. Wait and retry (or wait longer), \
         run `devlab boards` to see who holds and who waits, or remove {} if you are sure that run is gone.",
        holder.board,
        holder.describe(),
        path.display(),
        path.display()
    )
}

fn queue_full_message(holder: &Holder, waiting: &usize, path: &Path) -> String {
    format!(
        "board {} is busy ({}); its queue is full ({waiting} waiting), so not queueing. \
         Lock file: {}. Retry later, run `devlab boards` to see who holds and who waits, \
         or remove {} if you are sure that run is gone.",
        holder.board,
        holder.describe(),
        path.display(),
        path.display()
    )
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LockError + '_ {
    move |e| LockError::Io { path: path.to_path_buf(), error: e.to_string() }
}

/// One board as `devlab boards` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    pub board: String,
    pub holder: Option<Holder>,
    /// Why the holder's lock is stale (the next taker will take it over).
    pub stale: Option<String>,
    /// Live waiters, first in line first.
    pub waiting: Vec<Holder>,
}

/// Every board with a lock file or a live waiter in `dir`, sorted by name.
/// Reads only; removes nothing.
pub fn list(dir: &Path) -> Vec<Listing> {
    let host = this_host();
    let mut boards = BTreeSet::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else { continue };
        if let Some(board) = name.strip_suffix(".lock") {
            boards.insert(board.to_string());
        } else if let Some(board) = name.strip_suffix(".queue").filter(|_| entry.path().is_dir()) {
            boards.insert(board.to_string());
        }
    }
    let listing = |board: String| {
        let seen = read_entry(&lock_file(dir, &board), &board).ok().flatten();
        let stale = seen.as_ref().and_then(|s| stale_reason(s, &host));
        let waiting: Vec<Holder> =
            live_tickets(&queue_dir(dir, &board), &host, false).into_iter().map(|(_, h)| h).collect();
        let holder = seen.map(|s| s.holder);
        (holder.is_some() || !waiting.is_empty()).then_some(Listing { board, holder, stale, waiting })
    };
    boards.into_iter().filter_map(listing).collect()
}

/// A held board. Dropping it stops the heartbeat and removes the lock file
/// if it is still this lock's (same nonce).
#[derive(Debug)]
pub struct BoardLock {
    holder: Holder,
    path: PathBuf,
    taken_over: Option<Holder>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl BoardLock {
    /// Takes the board, queueing up to `req.wait` behind the holder and
    /// earlier waiters. `on_wait(holder, position)` is called when the wait
    /// starts and whenever the holder or the 1-based queue position changes.
    pub fn acquire(req: &Request, on_wait: &mut dyn FnMut(&Holder, usize)) -> Result<BoardLock, LockError> {
        let lock = lock_file(req.dir, req.board);
        if req.board.is_empty() || req.board.starts_with('.') || req.board.contains(['/', '\0']) {
            let error = format!("invalid board name {:?} for a lock file", req.board);
            return Err(LockError::Io { path: lock, error });
        }
        fs::create_dir_all(req.dir).map_err(io_err(req.dir))?;
        let me = Holder::for_request(req);
        let qdir = queue_dir(req.dir, req.board);
        let tickets = live_tickets(&qdir, &me.host, true);
        let current = if tickets.is_empty() {
            match try_take(&lock, &me)? {
                Took::Got { holder, taken_over } => return BoardLock::start(holder, lock, taken_over),
                Took::Held(holder) => Some(holder),
            }
        } else {
            read_entry(&lock, req.board).ok().flatten().map(|s| s.holder)
        };
        let blocker = current.or_else(|| tickets.first().map(|(_, h)| h.clone())).unwrap_or_else(|| me.clone());
        if req.wait.is_zero() {
            return Err(LockError::Busy { holder: blocker, waited: Duration::ZERO, path: lock });
        }
        if tickets.len() >= req.max_queue {
            return Err(LockError::QueueFull { holder: blocker, waiting: tickets.len(), path: lock });
        }
        wait_in_queue(req, &me, &lock, on_wait)
    }

    /// The previous holder, if this lock was taken over from a stale one.
    pub fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }

    /// This lock's holder, as written in the lock file.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the lock file still names this lock (it does unless someone
    /// removed or replaced it by hand, or took it over believing it stale).
    pub fn still_held(&self) -> bool {
        matches!(read_entry(&self.path, ""), Ok(Some(s)) if s.parsed && s.holder.nonce == self.holder.nonce)
    }

    fn start(holder: Holder, path: PathBuf, taken_over: Option<Holder>) -> Result<BoardLock, LockError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let mut lock = BoardLock { holder, path, taken_over, stop: Some(stop), heartbeat: None };
        let (path, nonce) = (lock.path.clone(), lock.holder.nonce.clone());
        let beat = move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                if touch_if_ours(&path, &nonce) == Beat::NotOurs {
                    break;
                }
            }
        };
        match thread::Builder::new().name("board-lock-heartbeat".to_string()).spawn(beat) {
            Ok(handle) => lock.heartbeat = Some(handle),
            // Dropping `lock` releases the board again.
            Err(e) => return Err(io_err(&lock.path)(e)),
        }
        Ok(lock)
    }
}

impl Drop for BoardLock {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the heartbeat thread at once.
        drop(self.stop.take());
        if let Some(handle) = self.heartbeat.take() {
            let _ = handle.join();
        }
        let nonce = &self.holder.nonce;
        let _ = set_aside(&self.path, nonce, "release", |_, h| h.is_some_and(|h| &h.nonce == nonce));
    }
}

#[derive(Debug, PartialEq)]
enum Beat {
    Touched,
    NotOurs,
    Failed,
}

fn touch_if_ours(path: &Path, nonce: &str) -> Beat {
    match read_entry(path, "") {
        Ok(Some(s)) if s.parsed && s.holder.nonce == nonce => {}
        Ok(_) => return Beat::NotOurs,
        Err(_) => return Beat::Failed,
    }
    match touch(path) {
        Ok(()) => Beat::Touched,
        Err(_) => Beat::Failed,
    }
}

/// Sets the mtime to now (the server's clock on NFS).
fn touch(path: &Path) -> nix::Result<()> {
    utimensat(None, path, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW, UtimensatFlags::FollowSymlink)
}

/// A lock file or ticket as read: content and the file it came from.
#[derive(Debug)]
struct Seen {
    holder: Holder,
    /// False for an unreadable file: then `holder` is [`Holder::unknown`].
    parsed: bool,
    mtime: SystemTime,
    dev: u64,
    ino: u64,
}

/// Reads a lock file or ticket; `Ok(None)` if there is none.
fn read_entry(path: &Path, board: &str) -> io::Result<Option<Seen>> {
    let mut file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        file => file?,
    };
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mtime = meta.modified()?;
    let (holder, parsed) = match serde_json::from_slice::<Holder>(&bytes) {
        Ok(holder) => (holder, true),
        Err(_) => (Holder::unknown(board, mtime), false),
    };
    Ok(Some(Seen { holder, parsed, mtime, dev: meta.dev(), ino: meta.ino() }))
}

/// Why a lock file or ticket is stale, or `None` if its holder may be alive.
fn stale_reason(seen: &Seen, this_host: &str) -> Option<String> {
    let idle = SystemTime::now().duration_since(seen.mtime).unwrap_or_default();
    if !seen.parsed {
        return (idle > STALE_AFTER).then(|| format!("unreadable lock file, untouched for {}", fmt_duration(idle)));
    }
    let holder = &seen.holder;
    if holder.host == this_host {
        return process_gone(holder.pid, holder.pid_start);
    }
    (idle > STALE_AFTER).then(|| format!("no heartbeat from host {} for {}", holder.host, fmt_duration(idle)))
}

/// Why process `pid` (started at `pid_start`) is gone, if it is.
fn process_gone(pid: u32, pid_start: u64) -> Option<String> {
    let gone = Some(format!("process {pid} is gone"));
    // 0 and negative pids would name process groups.
    let Ok(raw) = i32::try_from(pid) else { return gone };
    if raw == 0 || kill(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
        return gone;
    }
    match proc_stat(pid) {
        Some((state, _)) if state == 'Z' || state == 'X' => gone,
        Some((_, start)) if pid_start != 0 && start != pid_start => {
            Some(format!("process {pid} is gone (pid {pid} now belongs to another process)"))
        }
        _ => None,
    }
}

/// State and start time (fields 3 and 22) of `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn pid_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

enum Took {
    Got { holder: Holder, taken_over: Option<Holder> },
    Held(Holder),
}

/// One attempt at the lock: take it if free, take it over if stale.
fn try_take(lock: &Path, me: &Holder) -> Result<Took, LockError> {
    for _ in 0..RACE_RETRIES {
        let seen = read_entry(lock, &me.board).map_err(io_err(lock))?;
        let taken_over = match seen {
            None => None,
            Some(seen) => {
                if stale_reason(&seen, &me.host).is_none() {
                    return Ok(Took::Held(seen.holder));
                }
                let same_file = |m: &fs::Metadata, _: Option<&Holder>| m.dev() == seen.dev && m.ino() == seen.ino;
                match set_aside(lock, &me.nonce, "stale", same_file).map_err(io_err(lock))? {
                    Aside::Removed => Some(seen.holder),
                    // Lost a race: look again.
                    Aside::Gone | Aside::Restored => continue,
                }
            }
        };
        if let Some(holder) = link_new(lock, me)? {
            return Ok(Took::Got { holder, taken_over });
        }
    }
    Err(LockError::Io { path: lock.to_path_buf(), error: "the lock file kept changing; giving up".to_string() })
}

/// Writes `me` (started now) under a unique temporary name and links it to
/// `lock`. `Some(holder written)` if the lock is now ours, `None` if held.
fn link_new(lock: &Path, me: &Holder) -> Result<Option<Holder>, LockError> {
    let holder = Holder { started: unix_secs(), ..me.clone() };
    let name = format!(".{}.tmp-{}-{}-{}", file_name(lock), safe(&holder.host), holder.pid, holder.nonce);
    let tmp = TempFile(lock.with_file_name(name));
    let json = serde_json::to_vec_pretty(&holder).map_err(|e| io_err(&tmp.0)(e.into()))?;
    write_synced(&tmp.0, &json).map_err(io_err(&tmp.0))?;
    let linked = fs::hard_link(&tmp.0, lock);
    // Over NFS a lost reply can make a successful link report an error.
    let made = fs::metadata(&tmp.0).is_ok_and(|m| m.nlink() == 2);
    match linked {
        _ if made => Ok(Some(holder)),
        Ok(()) => Ok(Some(holder)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(io_err(lock)(e)),
    }
}

#[derive(Debug, PartialEq)]
enum Aside {
    /// There was nothing to move.
    Gone,
    /// Moved, it was the one meant, and it is removed.
    Removed,
    /// Moved, but it was another one: linked back (unless the name was taken
    /// again meanwhile) and the aside name removed.
    Restored,
}

/// Removes `lock` if `is_it(metadata, holder)` holds for the file actually
/// there, atomically against others doing the same: renames it to
/// `<lock>.<what>.<nonce>`, checks, then removes or puts it back.
fn set_aside(
    lock: &Path,
    nonce: &str,
    what: &str,
    is_it: impl Fn(&fs::Metadata, Option<&Holder>) -> bool,
) -> io::Result<Aside> {
    let aside = TempFile(lock.with_file_name(format!("{}.{what}.{nonce}", file_name(lock))));
    match fs::rename(lock, &aside.0) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Aside::Gone),
        other => other?,
    }
    let check = || -> io::Result<bool> {
        let meta = fs::metadata(&aside.0)?;
        let holder = serde_json::from_slice::<Holder>(&fs::read(&aside.0)?).ok();
        Ok(is_it(&meta, holder.as_ref()))
    };
    if check().unwrap_or(false) {
        return Ok(Aside::Removed); // `aside` is removed on drop
    }
    let _ = fs::hard_link(&aside.0, lock);
    Ok(Aside::Restored)
}

/// A waiter's ticket in the queue; removed on drop, whatever ends the wait.
struct Ticket {
    path: PathBuf,
    name: String,
    json: Vec<u8>,
    touched: Instant,
}

impl Ticket {
    fn create(qdir: &Path, me: &Holder) -> Result<Ticket, LockError> {
        let name = format!("{:020}-{}-{}-{}.json", unix_nanos(), safe(&me.host), me.pid, me.nonce);
        let path = qdir.join(&name);
        let json = serde_json::to_vec_pretty(me).map_err(|e| io_err(&path)(e.into()))?;
        let ticket = Ticket { path, name, json, touched: Instant::now() };
        ticket.write().map_err(io_err(&ticket.path))?;
        Ok(ticket)
    }

    /// Writes the ticket complete under a temporary name, then renames it.
    fn write(&self) -> io::Result<()> {
        let tmp = TempFile(self.path.with_file_name(format!(".tmp-{}", self.name)));
        write_synced(&tmp.0, &self.json)?;
        fs::rename(&tmp.0, &self.path)
    }

    /// Heartbeat; puts the ticket back (same name, same place) if someone
    /// removed it.
    fn keep_alive(&mut self) {
        if !self.path.exists() {
            let _ = self.write();
            self.touched = Instant::now();
        } else if self.touched.elapsed() >= HEARTBEAT {
            let _ = touch(&self.path);
            self.touched = Instant::now();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Live tickets in `qdir`, first in line first; removes dead ones if `reap`.
fn live_tickets(qdir: &Path, this_host: &str, reap: bool) -> Vec<(String, Holder)> {
    let mut live = Vec::new();
    for entry in fs::read_dir(qdir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.ends_with(".json") && !n.starts_with('.')) else { continue };
        let Ok(Some(seen)) = read_entry(&entry.path(), "") else { continue };
        if stale_reason(&seen, this_host).is_some() {
            if reap {
                let _ = fs::remove_file(entry.path());
            }
        } else if seen.parsed {
            live.push((name.to_string(), seen.holder));
        }
    }
    live.sort_by(|a, b| a.0.cmp(&b.0));
    live
}

/// Queues for the lock until it is ours or `req.wait` has passed.
fn wait_in_queue(
    req: &Request,
    me: &Holder,
    lock: &Path,
    on_wait: &mut dyn FnMut(&Holder, usize),
) -> Result<BoardLock, LockError> {
    let qdir = queue_dir(req.dir, req.board);
    fs::create_dir_all(&qdir).map_err(io_err(&qdir))?;
    // Watch before looking, so no change between a look and the sleep is missed.
    let watcher = Watcher::new(&[req.dir, qdir.as_path()]);
    let mut ticket = Ticket::create(&qdir, me)?;
    let start = Instant::now();
    let mut reported: Option<(String, usize)> = None;
    loop {
        let tickets = live_tickets(&qdir, &me.host, true);
        let position = 1 + tickets.iter().filter(|(name, _)| name.as_str() < ticket.name.as_str()).count();
        let current = if position == 1 {
            match try_take(lock, me)? {
                Took::Got { holder, taken_over } => return BoardLock::start(holder, lock.to_path_buf(), taken_over),
                Took::Held(holder) => Some(holder),
            }
        } else {
            read_entry(lock, req.board).ok().flatten().map(|s| s.holder)
        };
        let blocker = current.or_else(|| tickets.first().map(|(_, h)| h.clone())).unwrap_or_else(|| me.clone());
        let key = (blocker.nonce.clone(), position);
        if reported.as_ref() != Some(&key) {
            on_wait(&blocker, position);
            reported = Some(key);
        }
        let waited = start.elapsed();
        if waited >= req.wait {
            return Err(LockError::Busy { holder: blocker, waited, path: lock.to_path_buf() });
        }
        ticket.keep_alive();
        let timeout = (req.wait - waited).min(POLL_MAX);
        match &watcher {
            Some(watcher) => watcher.wait(timeout),
            // No inotify here: a bounded backoff of FALLBACK_POLL, then
            // the lock and the queue are looked at again.
            None => thread::sleep(timeout.min(FALLBACK_POLL)),
        }
    }
}

/// inotify on the lock directory and the queue directory.
struct Watcher {
    fd: OwnedFd,
}

impl Watcher {
    /// `None` if inotify is not available (then the waiter polls).
    fn new(dirs: &[&Path]) -> Option<Watcher> {
        // SAFETY: plain syscall; the fd is owned right below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
        for dir in dirs {
            let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: valid fd and NUL-terminated path.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
                return None;
            }
        }
        Some(Watcher { fd })
    }

    /// Sleeps until something changes in a watched directory or `timeout`
    /// passes, then discards the events (the caller looks again anyway).
    fn wait(&self, timeout: Duration) {
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a buffer of the given size; the fd is non-blocking.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

/// A name that must not outlive its creator: removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `s` made safe for a file name.
fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' }).collect()
}

fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// 128 bits unique to this acquisition: time, pid, a counter, and the
/// randomly keyed std hasher.
fn new_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(unix_nanos());
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let first = hasher.finish();
    hasher.write_u64(first);
    format!("{first:016x}{:016x}", hasher.finish())
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `45s`, `3m12s`, `4m`, `1h5m`.
fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Like [`fmt_duration`], with milliseconds under a minute (`0.2s`).
fn fmt_duration_ms(d: Duration) -> String {
    if d < Duration::from_secs(60) && d.subsec_millis() != 0 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        fmt_duration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::process::Command;
    use std::sync::{Arc, Mutex};

    fn req<'a>(dir: &'a Path, board: &'a str, owner: &str, wait_ms: u64) -> Request<'a> {
        Request {
            dir,
            board,
            owner: owner.to_string(),
            run_dir: Path::new("/tmp/devlab-run"),
            wait: Duration::from_millis(wait_ms),
            max_queue: 8,
        }
    }

    fn take(r: &Request) -> Result<BoardLock, LockError> {
        BoardLock::acquire(r, &mut |_, _| {})
    }

    fn lock_nonce(dir: &Path, board: &str) -> Option<String> {
        let bytes = fs::read(lock_file(dir, board)).ok()?;
        Some(serde_json::from_slice::<Holder>(&bytes).ok()?.nonce)
    }

    fn ghost(board: &str, host: &str, pid: u32, pid_start: u64) -> Holder {
        Holder {
            board: board.to_string(),
            owner: "ghost".to_string(),
            host: host.to_string(),
            pid,
            pid_start,
            started: unix_secs() - 600,
            run_dir: "/tmp/ghost-run".to_string(),
            nonce: format!("ghost-{host}-{pid}-{pid_start}"),
        }
    }

    fn write_lock(dir: &Path, holder: &Holder, age: Duration) {
        let path = lock_file(dir, &holder.board);
        fs::write(&path, serde_json::to_vec(holder).unwrap()).unwrap();
        set_age(&path, age);
    }

    fn set_age(path: &Path, age: Duration) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    /// Test 11's check: after every test nothing is left but empty queue dirs.
    fn assert_clean(dir: &Path) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(name.ends_with(".queue") && entry.path().is_dir(), "left behind in the lock dir: {name}");
            let left: Vec<_> = fs::read_dir(entry.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "left behind in {name}: {left:?}");
        }
    }

    type Waiter = thread::JoinHandle<(Result<BoardLock, LockError>, Instant)>;

    /// Runs an acquire in a thread; the returned receiver reports each
    /// `on_wait` call (holder's owner, position).
    fn waiter(dir: &Path, board: &str, owner: &str, wait_ms: u64) -> (Waiter, mpsc::Receiver<(String, usize)>) {
        let (dir, board, owner) = (dir.to_path_buf(), board.to_string(), owner.to_string());
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let r = req(&dir, &board, &owner, wait_ms);
            let result = BoardLock::acquire(&r, &mut |h, pos| tx.send((h.owner.clone(), pos)).unwrap());
            (result, Instant::now())
        });
        (handle, rx)
    }

    #[test]
    fn board_lock_acquire_then_drop_removes_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = req(dir.path(), "b1", "first", 0);
        let lock = take(&r).unwrap();
        assert_eq!(lock_nonce(dir.path(), "b1").as_ref(), Some(&lock.holder().nonce));
        assert_eq!(lock.holder().pid, std::process::id());
        assert_eq!(lock.holder().host, this_host());
        assert_eq!(lock.holder().pid_start, pid_start_time(std::process::id()).unwrap());
        assert!(lock.still_held());
        let first_nonce = lock.holder().nonce.clone();
        drop(lock);
        assert!(!lock_file(dir.path(), "b1").exists(), "drop must remove the lock file");
        let again = take(&r).unwrap();
        assert_eq!(again.taken_over(), None);
        assert_ne!(again.holder().nonce, first_nonce);
        drop(again);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_busy_names_the_holder_at_once_and_after_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "b2", "first", 0)).unwrap();
        let err = take(&req(dir.path(), "b2", "second", 0)).unwrap_err();
        let LockError::Busy { holder, waited, path } = &err else { panic!("not Busy: {err:?}") };
        assert_eq!(holder, lock.holder());
        assert!(*waited < Duration::from_millis(100));
        assert_eq!(path, &lock_file(dir.path(), "b2"));
        let msg = err.to_string();
        let pid = format!("pid {}", std::process::id());
        for part in ["b2", "first", &this_host(), &pid, &path.display().to_string(), "devlab boards", "remove"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }

        let mut calls = Vec::new();
        let t0 = Instant::now();
        let r = req(dir.path(), "b2", "second", 200);
        let err = BoardLock::acquire(&r, &mut |h, pos| calls.push((h.nonce.clone(), pos))).unwrap_err();
        let LockError::Busy { holder, waited, .. } = &err else { panic!("not Busy: {err:?}") };
        assert!(t0.elapsed() >= Duration::from_millis(200) && *waited >= Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(3), "waited far too long: {:?}", t0.elapsed());
        assert_eq!(holder, lock.holder());
        assert_eq!(calls, vec![(lock.holder().nonce.clone(), 1)], "on_wait once, at the start");
        assert!(err.to_string().contains("gave up after waiting"));
        drop(lock);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_waiter_wakes_on_release_without_polling() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "b3", "first", 0)).unwrap();
        fs::create_dir_all(queue_dir(dir.path(), "b3")).unwrap();
        // Without inotify the waiter would poll, and this test would prove nothing.
        assert!(Watcher::new(&[dir.path(), &queue_dir(dir.path(), "b3")]).is_some(), "inotify unavailable");
        let (handle, waits) = waiter(dir.path(), "b3", "second", 10_000);
        assert_eq!(waits.recv_timeout(Duration::from_secs(5)).unwrap(), ("first".to_string(), 1));
        // The fault under test: the holder keeps the board 300 ms longer, so
        // the waiter is asleep in its wait (which would last POLL_MAX, not
        // between two looks) when the lock goes; only inotify wakes it early.
        thread::sleep(Duration::from_millis(300));
        let released = Instant::now();
        drop(lock);
        let (result, got_at) = handle.join().unwrap();
        let second = result.unwrap();
        let took = got_at - released;
        assert!(took < Duration::from_secs(1), "waiter took {took:?} after the release (inotify wake broken?)");
        assert_eq!(second.holder().owner, "second");
        assert_eq!(second.taken_over(), None);
        assert_eq!(lock_nonce(dir.path(), "b3").as_ref(), Some(&second.holder().nonce));
        drop(second);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_takes_over_from_a_dead_process_on_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Read while the child is not yet reaped, so only "gone" can make it stale.
        let start = pid_start_time(pid).unwrap();
        child.wait().unwrap();
        let dead = ghost("b4", &this_host(), pid, start);
        write_lock(dir.path(), &dead, Duration::ZERO);
        let listed = list(dir.path());
        assert!(listed[0].stale.as_deref().unwrap().contains(&format!("process {pid} is gone")), "{listed:?}");

        let lock = take(&req(dir.path(), "b4", "me", 0)).unwrap();
        assert_eq!(lock.taken_over(), Some(&dead));
        assert_eq!(lock_nonce(dir.path(), "b4").as_ref(), Some(&lock.holder().nonce));
        drop(lock);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_pid_reuse_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        let start = pid_start_time(pid).unwrap();
        // Control: this very process, right start time: alive, so busy.
        let alive = ghost("b5", &this_host(), pid, start);
        write_lock(dir.path(), &alive, Duration::ZERO);
        let err = take(&req(dir.path(), "b5", "me", 0)).unwrap_err();
        assert!(matches!(&err, LockError::Busy { holder, .. } if holder == &alive), "{err:?}");

        let reused = ghost("b5", &this_host(), pid, start + 1);
        fs::remove_file(lock_file(dir.path(), "b5")).unwrap();
        write_lock(dir.path(), &reused, Duration::ZERO);
        assert!(list(dir.path())[0].stale.as_deref().unwrap().contains("another process"));
        let lock = take(&req(dir.path(), "b5", "me", 0)).unwrap();
        assert_eq!(lock.taken_over(), Some(&reused));
        drop(lock);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_other_host_stale_only_without_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        // Pid 1 exists here, so only the heartbeat rule can make it stale.
        let old = ghost("b6", "elsewhere.example", 1, 1);
        write_lock(dir.path(), &old, Duration::from_secs(240));
        let listed = list(dir.path());
        assert_eq!(listed[0].stale.as_deref(), Some("no heartbeat from host elsewhere.example for 4m"));
        let lock = take(&req(dir.path(), "b6", "me", 0)).unwrap();
        assert_eq!(lock.taken_over(), Some(&old));
        drop(lock);

        let fresh = ghost("b6", "elsewhere.example", 1, 2);
        write_lock(dir.path(), &fresh, Duration::from_secs(60));
        let err = take(&req(dir.path(), "b6", "me", 0)).unwrap_err();
        assert!(matches!(&err, LockError::Busy { holder, .. } if holder == &fresh), "{err:?}");
        assert!(err.to_string().contains("ghost on elsewhere.example (pid 1), held for 10m"), "{err}");
        assert_eq!(lock_nonce(dir.path(), "b6"), Some(fresh.nonce.clone()), "a live lock must stay");
        fs::remove_file(lock_file(dir.path(), "b6")).unwrap();
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_unreadable_lock_file_is_held_by_unknown_until_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_file(dir.path(), "b6u");
        fs::write(&path, "").unwrap();
        let err = take(&req(dir.path(), "b6u", "me", 0)).unwrap_err();
        assert!(matches!(&err, LockError::Busy { holder, .. } if holder.owner == "unknown"), "{err:?}");
        set_age(&path, Duration::from_secs(240));
        let lock = take(&req(dir.path(), "b6u", "me", 0)).unwrap();
        assert_eq!(lock.taken_over().map(|h| h.owner.as_str()), Some("unknown"));
        drop(lock);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_drop_leaves_a_lock_that_is_no_longer_ours() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "b7", "me", 0)).unwrap();
        let other = Holder { nonce: "someone-else".to_string(), ..lock.holder().clone() };
        fs::write(lock.path(), serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(!lock.still_held());
        drop(lock);
        assert_eq!(lock_nonce(dir.path(), "b7").as_deref(), Some("someone-else"), "drop removed a lock not its own");
        fs::remove_file(lock_file(dir.path(), "b7")).unwrap();
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_heartbeat_touches_only_its_own_lock_and_stops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "hb", "me", 0)).unwrap();
        set_age(lock.path(), Duration::from_secs(600));
        assert_eq!(touch_if_ours(lock.path(), &lock.holder().nonce), Beat::Touched);
        let idle = SystemTime::now().duration_since(fs::metadata(lock.path()).unwrap().modified().unwrap());
        assert!(idle.unwrap_or_default() < Duration::from_secs(5), "heartbeat did not touch");
        set_age(lock.path(), Duration::from_secs(600));
        assert_eq!(touch_if_ours(lock.path(), "another-nonce"), Beat::NotOurs);
        let idle = SystemTime::now().duration_since(fs::metadata(lock.path()).unwrap().modified().unwrap());
        assert!(idle.unwrap() > Duration::from_secs(500), "touched a lock that is not ours");
        // The heartbeat thread sleeps HEARTBEAT (30 s); drop must not wait for it.
        let t0 = Instant::now();
        drop(lock);
        assert!(t0.elapsed() < Duration::from_secs(1), "drop took {:?}", t0.elapsed());
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_queue_is_first_come_first_served() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "b8", "holder", 0)).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (a, a_waits) = waiter(dir.path(), "b8", "A", 10_000);
        assert_eq!(a_waits.recv_timeout(Duration::from_secs(5)).unwrap(), ("holder".to_string(), 1));
        let (b, b_waits) = waiter(dir.path(), "b8", "B", 10_000);
        assert_eq!(b_waits.recv_timeout(Duration::from_secs(5)).unwrap(), ("holder".to_string(), 2));
        // A new run that does not queue may not jump the queue.
        assert!(matches!(take(&req(dir.path(), "b8", "C", 0)), Err(LockError::Busy { .. })));
        drop(lock);

        let (a_result, _) = a.join().unwrap();
        let a_lock = a_result.unwrap();
        order.lock().unwrap().push("A got");
        // B now waits first in line, behind A.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(seen) = b_waits.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if seen == ("A".to_string(), 1) {
                break;
            }
        }
        assert!(!b.is_finished(), "B got the lock while A holds it");
        assert_eq!(list(dir.path())[0].waiting.iter().map(|h| h.owner.as_str()).collect::<Vec<_>>(), ["B"]);
        order.lock().unwrap().push("A released");
        drop(a_lock);
        let (b_result, _) = b.join().unwrap();
        let b_lock = b_result.unwrap();
        order.lock().unwrap().push("B got");
        assert_eq!(b_lock.holder().owner, "B");
        assert_eq!(*order.lock().unwrap(), ["A got", "A released", "B got"]);
        drop(b_lock);
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_queue_full_counts_live_tickets_only() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "b9", "holder", 0)).unwrap();
        let (a, a_waits) = waiter(dir.path(), "b9", "A", 10_000);
        a_waits.recv_timeout(Duration::from_secs(5)).unwrap();
        // A dead waiter's ticket (this host, pid gone) must not count, and is reaped.
        let mut child = Command::new("true").spawn().unwrap();
        let dead = ghost("b9", &this_host(), child.id(), 0);
        child.wait().unwrap();
        let dead_ticket = queue_dir(dir.path(), "b9").join(format!("{:020}-x-1-dead.json", 1));
        fs::write(&dead_ticket, serde_json::to_vec(&dead).unwrap()).unwrap();

        let full = Request { max_queue: 1, ..req(dir.path(), "b9", "B", 1000) };
        let err = take(&full).unwrap_err();
        let LockError::QueueFull { holder, waiting, .. } = &err else { panic!("not QueueFull: {err:?}") };
        assert_eq!((holder, *waiting), (lock.holder(), 1));
        assert!(!dead_ticket.exists(), "dead ticket not reaped");
        let msg = err.to_string();
        assert!(msg.contains("b9") && msg.contains("holder on") && msg.contains("devlab boards"), "{msg}");
        assert!(msg.contains(&lock_file(dir.path(), "b9").display().to_string()), "{msg}");

        let room = Request { max_queue: 2, ..req(dir.path(), "b9", "B", 100) };
        let err = take(&room).unwrap_err();
        assert!(matches!(&err, LockError::Busy { .. }), "with room it queues, then times out: {err:?}");
        drop(lock);
        drop(a.join().unwrap().0.unwrap());
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_list_shows_holders_stale_locks_and_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "alpha", "holder", 0)).unwrap();
        let (a, a_waits) = waiter(dir.path(), "alpha", "A", 10_000);
        a_waits.recv_timeout(Duration::from_secs(5)).unwrap();
        let old = ghost("beta", "elsewhere.example", 1, 1);
        write_lock(dir.path(), &old, Duration::from_secs(300));
        fs::write(lock_file(dir.path(), "delta"), "not json").unwrap();
        fs::create_dir(queue_dir(dir.path(), "gamma")).unwrap();

        let listed = list(dir.path());
        let names: Vec<_> = listed.iter().map(|l| l.board.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "delta"], "gamma has no lock and no waiter");
        assert_eq!(listed[0].holder.as_ref(), Some(lock.holder()));
        assert_eq!(listed[0].stale, None);
        assert_eq!(listed[0].waiting.iter().map(|h| h.owner.as_str()).collect::<Vec<_>>(), ["A"]);
        assert_eq!(listed[1].holder.as_ref(), Some(&old));
        assert_eq!(listed[1].stale.as_deref(), Some("no heartbeat from host elsewhere.example for 5m"));
        assert!(listed[1].waiting.is_empty());
        assert_eq!(listed[2].holder.as_ref().map(|h| h.owner.as_str()), Some("unknown"));
        assert_eq!(listed[2].stale, None, "a fresh unreadable lock is held");

        drop(lock);
        drop(a.join().unwrap().0.unwrap());
        fs::remove_file(lock_file(dir.path(), "beta")).unwrap();
        fs::remove_file(lock_file(dir.path(), "delta")).unwrap();
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_leaves_no_temp_files_or_tickets_on_any_path() {
        let dir = tempfile::tempdir().unwrap();
        let lock = take(&req(dir.path(), "b11", "holder", 0)).unwrap();
        assert!(take(&req(dir.path(), "b11", "x", 0)).is_err());
        assert!(take(&req(dir.path(), "b11", "x", 50)).is_err());
        assert!(take(&Request { max_queue: 0, ..req(dir.path(), "b11", "x", 50) }).is_err());
        // A panic in on_wait unwinds through the wait: the ticket guard cleans up.
        let r = req(dir.path(), "b11", "x", 5000);
        let panicked = catch_unwind(AssertUnwindSafe(|| BoardLock::acquire(&r, &mut |_, _| panic!("on_wait panics"))));
        assert!(panicked.is_err());
        let bad = take(&req(dir.path(), "../b11", "x", 0)).unwrap_err();
        assert!(matches!(bad, LockError::Io { .. }));
        drop(lock);
        write_lock(dir.path(), &ghost("b11", "elsewhere.example", 1, 1), Duration::from_secs(600));
        drop(take(&req(dir.path(), "b11", "x", 0)).unwrap());
        assert!(list(dir.path()).is_empty());
        assert_clean(dir.path());
    }

    #[test]
    fn board_lock_helpers() {
        let h = Holder { started: unix_secs() - 192, ..ghost("b", "h1", 42, 1) };
        assert_eq!(h.describe(), "ghost on h1 (pid 42), held for 3m12s, run dir /tmp/ghost-run");
        assert_eq!(fmt_duration(Duration::from_secs(45)), "45s");
        assert_eq!(fmt_duration(Duration::from_secs(3900)), "1h5m");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(owner_from(&env(&[("USER", "ann"), ("DEVLAB_LOCK_OWNER", "bench 3")])), "bench 3");
        assert_eq!(owner_from(&env(&[("USER", "ann"), ("GITHUB_RUN_ID", "1234")])), "ci job 1234");
        assert_eq!(owner_from(&env(&[("CI_JOB_ID", "77"), ("CI_JOB_NAME", "hw")])), "ci job 77 (hw)");
        assert_eq!(owner_from(&env(&[("USER", "ann")])), "ann");
        assert_ne!(new_nonce(), new_nonce());
    }
}
