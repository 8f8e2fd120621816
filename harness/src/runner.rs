//! The scenario runner: runs a scenario's typed steps on one board, each
//! through its own module (`crate::steps`) with `Run` as the context they
//! borrow; times every step, records the timeline, and leaves a run directory with
//! everything (serial log, QMP log, QEMU command line, SSH transcript,
//! `timeline.json`, `run.json`, and on failure `failure.txt`). Every wait is
//! "until X, at most T"; the whole run is bounded by the scenario's timeout.
//! No QEMU outlives a run unless `keep_on_failure` asked for it. A passed
//! run's disk overlay is removed (unless `keep_disks`); nothing else of a
//! run directory is ever deleted.

use crate::accel::{self, AccelChoice};
use crate::board::Board;
use crate::console::{ConsoleError, ERROR_LINES};
use crate::device::Via;
use crate::error::{Error, Failure, Result};
use crate::machine::{Machine, MachineSpec};
use crate::scenario::{MachinePlan, PlacedStep, Scenario, Step};
use crate::ssh::Ssh;
use crate::timeline::{qmp_event, Entry, Event, Origin, Redactor, Timeline};
use devlab_images::BuiltImage;
use regex::bytes::Regex as BytesRegex;
use regex::Regex;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a run treats its stored timeline snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Compare; a changed snapshot fails the run (a missing one is written
    /// as `.snap.new` for review).
    Check,
    /// Write the snapshot.
    Update,
    /// Leave snapshots to the caller (tests assert with insta themselves).
    Skip,
}

/// Told what a run is doing as each step starts ("step 3/12 expect"), for
/// a live progress display. Empty by default.
#[derive(Clone, Default)]
pub struct StepHook(Option<std::sync::Arc<StepFn>>);

type StepFn = dyn Fn(&str) + Send + Sync;

impl StepHook {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> StepHook {
        StepHook(Some(std::sync::Arc::new(f)))
    }

    fn tell(&self, what: &str) {
        if let Some(f) = &self.0 {
            f(what)
        }
    }
}

impl std::fmt::Debug for StepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "StepHook(set)" } else { "StepHook(none)" })
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub runs_root: PathBuf,
    pub keep_on_failure: bool,
    pub snapshots: SnapshotMode,
    pub on_step: StepHook,
    /// Save and restore at `checkpoint` steps (default); off, a checkpoint
    /// step only records its event, so timelines stay the same.
    pub checkpoints: bool,
    /// Keep a passed run's disk overlay (by default only failed runs keep it).
    pub keep_disks: bool,
    /// How long a run waits in a busy external board's queue.
    pub board_wait: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runs_root: crate::rundir::runs_root(),
            keep_on_failure: false,
            snapshots: SnapshotMode::Skip,
            on_step: StepHook::default(),
            checkpoints: true,
            keep_disks: false,
            board_wait: Duration::from_secs(30 * 60),
        }
    }
}

/// The result of one scenario × board run.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    /// The board, or `machines` for a scenario whose machines bring their
    /// own boards.
    pub board: String,
    pub arch: devlab_images::Arch,
    /// The machines bring their own boards: the snapshot is `@machines`.
    pub own_boards: bool,
    /// The external board it ran on: the snapshot is `@<board>`.
    pub external_board: Option<String>,
    pub run_dir: Option<PathBuf>,
    pub timeline: Timeline,
    /// The normalised timeline, as snapshotted.
    pub normalised: Vec<Event>,
    pub duration: Duration,
    /// Each step that ran (a restored checkpoint's steps did not run).
    pub steps: Vec<StepTime>,
    pub result: Result<()>,
}

/// When one step ran and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepTime {
    /// 1-based index in the scenario.
    pub index: usize,
    pub action: &'static str,
    /// The line of its `[[step]]` header.
    pub line: usize,
    /// Seconds since the run started (the first power-on is later).
    pub start_s: f64,
    pub duration_s: f64,
    pub passed: bool,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// The snapshot name: `<scenario>@<arch>` (`<scenario>@machines` when
    /// the machines bring their own boards).
    pub fn snapshot_name(&self) -> String {
        if self.own_boards {
            return format!("{}@machines", self.scenario);
        }
        // An external board's timeline is its own (no QMP events; a real
        // board's timing is not a VM's): one snapshot per board.
        if let Some(board) = &self.external_board {
            return format!("{}@{board}", self.scenario);
        }
        format!("{}@{}", self.scenario, self.arch)
    }
}

/// Run `scenario` on `board` (each of its machines, in a scenario with
/// `[[machine]]` tables).
pub async fn run(scenario: &Scenario, board: &Board, opts: &RunOptions) -> Outcome {
    let started = Instant::now();
    let cpu_at_start = own_cpu_s();
    let mut out = Outcome {
        scenario: scenario.name().to_string(),
        board: scenario.run_label(board),
        arch: board.arch,
        own_boards: scenario.own_boards(),
        external_board: board.is_external().then(|| board.name.clone()),
        run_dir: None,
        timeline: Timeline::default(),
        normalised: Vec::new(),
        duration: Duration::ZERO,
        steps: Vec::new(),
        result: Ok(()),
    };
    // External boards are held (see `take_boards`) until this returns.
    let (machines, run_dir, held) = match prepare(scenario, board, opts) {
        Ok((machines, dir)) => {
            let held = take_boards(&machines, &dir, opts).await;
            (machines, dir, held)
        }
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };
    out.run_dir = Some(run_dir.clone());
    let _held = match held {
        Ok(h) => h,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };
    let mut runs = Vec::new();
    for (plan, image, device_image) in &machines {
        let accel = accel::choose_async(&plan.board).await;
        let dir = if plan.name.is_empty() { run_dir.clone() } else { run_dir.join(&plan.name) };
        let mut r = Run::new(scenario, plan, image.clone(), dir, accel);
        r.device_image.clone_from(device_image);
        r.name = plan.name.clone();
        r.lab_dir = run_dir.clone();
        r.on_step = opts.on_step.clone();
        // An external board cannot be saved: its checkpoint steps only mark
        // the spot (the same event, so timelines compare equal).
        r.checkpoints = opts.checkpoints && !plan.board.is_external();
        runs.push(r);
    }
    share_commits(&mut runs);
    // Several machines share one time zero (the run's start), so their
    // events merge on one time axis.
    if runs.len() > 1 {
        let zero = Instant::now();
        for r in runs.iter_mut() {
            r.t_first = Some(zero);
        }
    }
    let mut arches: Vec<devlab_images::Arch> = Vec::new();
    for (plan, ..) in &machines {
        if !arches.contains(&plan.board.arch) {
            arches.push(plan.board.arch);
        }
    }
    for r in runs.iter_mut() {
        r.lab_arches.clone_from(&arches);
    }
    // The lab's own events (what was served, server faults) in a run with
    // several machines; a one-machine run keeps them in its timeline.
    let mut lab = Timeline::default();
    let bound = scenario.header.timeout.0;
    let steps = async {
        if scenario.header.network == crate::scenario::Network::Lab {
            lab_network(&mut runs, &arches).await?;
        }
        if let Some(spec) = &scenario.fleet {
            start_fleet(&mut runs, spec).await?;
        }
        if let Some(spec) = &scenario.product {
            link_product(&mut runs, spec).await?;
        }
        match runs.as_mut_slice() {
            [one] => one.steps().await,
            several => machine_steps(several, &mut lab).await,
        }
    };
    let result = match tokio::time::timeout(bound, steps).await {
        Ok(res) => res,
        Err(_) => {
            // Told by a machine the step ran on (its console's last lines).
            let on = runs.iter().position(|r| r.current.ends_with(&format!(" on {}", r.name))).unwrap_or(0);
            Err(runs[on].failure(format!("scenario exceeded its timeout of {}", humantime::format_duration(bound))))
        }
    };
    for r in runs.iter_mut() {
        r.drain(None);
    }
    let elapsed = runs[0].started.elapsed().as_secs_f64();
    out.steps = std::mem::take(&mut runs[0].step_times);
    // A step cut off by the run's timeout ran until now.
    if let Some(last) = out.steps.last_mut().filter(|s| !s.passed && s.duration_s == 0.0) {
        last.duration_s = elapsed - last.start_s;
    }
    if let Err(Error::Failed(f)) = &result {
        let failed = Event::Failed { step: f.step.clone() };
        match runs.as_mut_slice() {
            [one] => one.timeline.push(one.now(), Origin::Step, failed),
            several => lab.push(several[0].now(), Origin::Step, failed),
        }
        let _ = std::fs::write(run_dir.join("failure.txt"), f.to_string());
    }
    out.normalised = normalised(&runs, &lab, scenario.header.snapshot);
    out.timeline = merged(&runs, &lab);
    let file = crate::timeline::TimelineFile::new(&out.timeline, &out.steps, runs[0].started, runs[0].t_first);
    let _ = std::fs::write(run_dir.join("timeline.json"), serde_json::to_string_pretty(&file).unwrap_or_default());
    let mut result = result;
    if let Err(e) = &result {
        // The machine the failing step ran on (a lab step's: the first).
        let step = match e {
            Error::Failed(f) => f.step.clone(),
            _ => String::new(),
        };
        let failed = runs.iter().position(|r| r.current == step).unwrap_or(0);
        if opts.keep_on_failure && runs[failed].machine_running() {
            eprintln!("FAIL {} on {}\n{e}", scenario.name(), out.board);
            runs[failed].keep().await;
        }
    }
    // The first machine's `Run` owns the lab: it goes last.
    for r in runs.iter_mut().rev() {
        r.teardown().await;
    }
    if result.is_ok() {
        result = check_snapshot(scenario, &out, opts, &run_dir);
    }
    out.duration = started.elapsed();
    // A passed run's disks (qcow2 overlays, often hundreds of MiB) go; its
    // logs, timeline and transcripts stay. A failed run keeps it all.
    let mut disk_removed = false;
    for r in &runs {
        if result.is_ok() && !opts.keep_disks && std::fs::remove_file(r.run_dir.join("disk.qcow2")).is_ok() {
            disk_removed = true;
            let _ = std::fs::remove_file(r.run_dir.join("blank.raw"));
        }
    }
    let cpu_s = own_cpu_s() - cpu_at_start;
    write_run_json(&run_dir, scenario, &out, &runs, &result, (disk_removed, cpu_s));
    out.result = result;
    out
}

/// Compare the run's timeline with its snapshot (`opts.snapshots`). An
/// external board with no snapshot of its own yet (a new board on a
/// bench) is not failed for it: its steps' own checks decided, and it is
/// said how to record one.
fn check_snapshot(scenario: &Scenario, out: &Outcome, opts: &RunOptions, run_dir: &std::path::Path) -> Result<()> {
    let (dir, name) = (scenario.snapshot_dir(), out.snapshot_name());
    if opts.snapshots == SnapshotMode::Skip {
        return Ok(());
    }
    let new_board = out.external_board.is_some() && !dir.join(format!("{name}.snap")).exists();
    if new_board && opts.snapshots == SnapshotMode::Check {
        eprintln!("devlab: {name}: this board has no timeline snapshot yet (--update-snapshots records one)");
        return Ok(());
    }
    crate::snapshot::check(&dir, &name, &out.normalised, opts.snapshots).map_err(|msg| {
        Error::Failed(Box::new(Failure {
            step: "timeline snapshot".into(),
            message: msg,
            run_dir: run_dir.to_path_buf(),
            last_lines: Vec::new(),
        }))
    })
}

/// Take every external board of the run: one run at a time per board, on
/// this host and across hosts sharing the lock folder (see
/// [`crate::board_lock`]), waiting in the board's queue at most
/// `opts.board_wait`. A busy board after that is the lab's failure (69).
async fn take_boards(
    machines: &[(MachinePlan, BuiltImage, Option<crate::device_image::Prepared>)],
    run_dir: &std::path::Path,
    opts: &RunOptions,
) -> Result<Vec<crate::board_lock::BoardLock>> {
    let mut held = Vec::new();
    for (plan, ..) in machines.iter().filter(|(p, ..)| p.board.is_external()) {
        held.push(take_board(&plan.board.name, run_dir, opts.board_wait, opts.on_step.clone()).await?);
    }
    Ok(held)
}

/// Take board `name`'s lock for a run in `run_dir`, waiting in its queue at
/// most `wait` (saying who holds it meanwhile), and say that this run holds
/// it (and whose stale lock it took over).
pub(crate) async fn take_board(
    name: &str,
    run_dir: &std::path::Path,
    wait: Duration,
    hook: StepHook,
) -> Result<crate::board_lock::BoardLock> {
    let (board, run_dir) = (name.to_string(), run_dir.to_path_buf());
    let lock = blocking(move || {
        let dir = crate::board_lock::default_dir();
        let owner = crate::board_lock::default_owner();
        let req =
            crate::board_lock::Request { dir: &dir, board: &board, owner, run_dir: &run_dir, wait, max_queue: 16 };
        let mut waiting = |h: &crate::board_lock::Holder, place: usize| {
            let msg = format!("waiting for board {board}: {} (place {place} in its queue)", h.describe());
            eprintln!("devlab: {msg}");
            hook.tell(&msg);
        };
        crate::board_lock::BoardLock::acquire(&req, &mut waiting).map_err(|e| Error::infra(e.to_string()))
    })
    .await?;
    if let Some(stale) = lock.taken_over() {
        eprintln!("devlab: board {name}: took over a stale lock ({})", stale.describe());
    }
    eprintln!("devlab: holding board {name} (lock {})", lock.path().display());
    Ok(lock)
}

/// The harness process's own CPU time (user + system, all its threads;
/// not its children's: QEMU, etcd), in seconds.
fn own_cpu_s() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        tv(u.user_time()) + tv(u.system_time())
    })
}

/// `run.json`: what ran where, how it ended, each step's time, the
/// harness's CPU time; with several
/// machines, each machine's board, folder, accelerator and image.
fn write_run_json(
    run_dir: &Path,
    scenario: &Scenario,
    out: &Outcome,
    runs: &[Run<'_>],
    result: &Result<()>,
    (disk_removed, cpu_s): (bool, f64),
) {
    let mut record = json!({
        "scenario": out.scenario,
        "scenario_file": scenario.path,
        "board": out.board,
        "arch": out.arch,
        "accel": runs[0].accel,
        "image": {"dir": runs[0].image.dir, "key": runs[0].image.manifest.key},
        "passed": result.is_ok(),
        "error": result.as_ref().err().map(|e| e.to_string()),
        "duration_s": out.duration.as_secs_f64(),
        "steps": out.steps,
        "disk_removed": disk_removed,
        // The harness's own CPU time over the run (process-wide: runs in
        // parallel in one process share it), not QEMU's or etcd's.
        "harness_cpu_s": cpu_s,
    });
    if let (Some(d), Some(p)) = (&scenario.device, &runs[0].device_image) {
        // The user's image, named and hashed: which release this run tested.
        record["device"] = json!({"name": d.name, "profile": d.path, "image": p.source, "sha256": p.sha256,
                                  "format": p.format, "partition_table": p.table, "booted_from": p.disk});
    }
    if runs.len() > 1 {
        let machines: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                json!({"name": r.name, "board": r.board.name, "arch": r.board.arch, "dir": r.run_dir,
                       "accel": r.accel, "image": {"dir": r.image.dir, "key": r.image.manifest.key}})
            })
            .collect();
        record["machines"] = json!(machines);
    }
    let _ = std::fs::write(run_dir.join("run.json"), serde_json::to_string_pretty(&record).unwrap_or_default());
}

/// Each machine, its built image (and, for a device, what its image is),
/// and the run directory.
type Prepared = (Vec<(MachinePlan, BuiltImage, Option<crate::device_image::Prepared>)>, PathBuf);

fn prepare(scenario: &Scenario, board: &Board, opts: &RunOptions) -> Result<Prepared> {
    let mut machines = Vec::new();
    if scenario.header.network == crate::scenario::Network::Lab {
        crate::labnet::LabNet::check_privileges()
            .map_err(|e| crate::error::InputError::new(&scenario.path, e.to_string()))?;
    }
    for plan in scenario.machines_for(board)? {
        let b = &plan.board;
        b.check_firmware()?;
        let root = crate::rundir::workspace_root();
        if let Some(d) = &scenario.device {
            let (built, prepared) = crate::device_image::built_image(d, b.arch)?;
            machines.push((plan, built, Some(prepared)));
            continue;
        }
        let built = scenario.built_image(&root, &plan.image, b.arch)?;
        // What the steps serve must be built too: say so before anything boots.
        for served in scenario.served_images() {
            scenario.built_image(&root, served, b.arch)?;
        }
        if scenario.provision.is_some() {
            crate::provision::mgmt_image(&scenario.path, scenario.text(), b.arch)?;
        }
        machines.push((plan, built, None));
    }
    check_free_space(&opts.runs_root)?;
    let dir = crate::rundir::create(&opts.runs_root, scenario.name(), &scenario.run_label(board))?;
    for (plan, ..) in &machines {
        if !plan.name.is_empty() {
            let d = dir.join(&plan.name);
            std::fs::create_dir_all(&d).map_err(|e| Error::infra(format!("{}: {e}", d.display())))?;
        }
    }
    Ok((machines, dir))
}

/// Every machine knows the OSTree commit each machine's disk starts from,
/// so the lab's state, shared from the first machine after each lab step,
/// never loses one.
fn share_commits(runs: &mut [Run<'_>]) {
    let booted: Vec<(String, String)> = runs
        .iter()
        .filter_map(|r| {
            let name = r.machine_image.get_ref().clone();
            r.image.manifest.ostree.as_ref().map(|o| (name, o.commit.clone()))
        })
        .collect();
    for r in runs.iter_mut() {
        for (name, commit) in &booted {
            r.ostree.insert(name, commit);
        }
    }
}

/// `network = "lab"`: one lab network for every machine (a namespace, a
/// bridge, a tap per machine, dnsmasq with a fixed address per MAC) and the
/// provisioning service on its bridge, with a profile per arch; the first
/// machine's `Run` owns both, every machine gets the service and its way
/// into the namespace.
async fn lab_network(runs: &mut [Run<'_>], arches: &[devlab_images::Arch]) -> Result<()> {
    let (scenario, run_dir) = (runs[0].scenario, runs[0].lab_dir.clone());
    let Some(spec) = &scenario.provision else {
        return Err(Error::infra("a lab network needs [provision] (checked at load)"));
    };
    let tftp = run_dir.join("provision").join("tftp");
    std::fs::create_dir_all(&tftp).map_err(|e| Error::infra(format!("{}: {e}", tftp.display())))?;
    let mut cfg =
        crate::labnet::LabNetConfig::new(run_dir.join("labnet"), &tftp, devlab_provision::pxelinux::BOOT_SCRIPT_NAME);
    // iPXE gets `boot.ipxe`, everything else (U-Boot) `boot.scr.uimg`.
    cfg.ipxe_boot = Some(crate::board::Pxe::Ipxe.bootfile().to_string());
    cfg.hosts = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.board.nic.mac.clone(), std::net::Ipv4Addr::new(10, 77, 0, 11 + i as u8)))
        .collect();
    let labnet_error = |e: crate::labnet::LabNetError| -> Error {
        match e.exit_code() {
            2 => crate::error::InputError::new(&scenario.path, e.to_string()).into(),
            _ => Error::infra(format!("lab network: {e}")),
        }
    };
    let mut net = blocking(move || crate::labnet::LabNet::create(cfg).map_err(labnet_error_infra)).await?;
    for r in runs.iter_mut() {
        let tap = net.add_tap(&r.name).map_err(labnet_error)?;
        r.netns = Some((net.handle().map_err(labnet_error)?, tap));
        r.per_arch_profiles = true;
    }
    let listener = net.bind_tcp(0).map_err(labnet_error)?;
    listener.set_nonblocking(true).map_err(|e| Error::infra(format!("lab network listener: {e}")))?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| Error::infra(format!("lab network listener: {e}")))?;
    let host = net.bridge_addr().to_string();
    let setup = crate::provision::LabSetup {
        run_dir: &run_dir,
        file: &scenario.path,
        text: scenario.text(),
        profiles: &spec.profiles,
        arches,
        per_arch_profiles: true,
        node_host: &host,
    };
    for r in runs.iter_mut() {
        r.dhcp = Some(net.dhcp_switch());
    }
    // Owned before the lab starts: a failure from here on still tears it down.
    runs[0].net = Some(net);
    let lab = crate::provision::Lab::start_with(&setup, listener).await?;
    for r in runs.iter_mut() {
        r.service = Some(lab.service.clone());
    }
    runs[0].lab = Some(lab);
    Ok(())
}

/// A lab network that cannot be made (privileges are checked before the run).
fn labnet_error_infra(e: crate::labnet::LabNetError) -> Error {
    Error::infra(format!("lab network: {e}"))
}

/// The steps of a scenario with several machines, in order. A step runs on
/// its machines at the same time (one future each on this thread, so a
/// wait over several machines has one deadline and no machine's firmware
/// waits for another's step), or once for the lab; after a lab step the
/// lab's state (the update server, served bundles and commits) is every
/// machine's, and its events are the lab's. The first failure ends the step.
async fn machine_steps(runs: &mut [Run<'_>], lab: &mut Timeline) -> Result<()> {
    let scenario = runs[0].scenario;
    // Every machine's stored state for the checkpoint (the plan puts no lab
    // step before it), or none: the steps before it run.
    let mut start = 0;
    let stored: Vec<_> = runs.iter().map(|r| r.stored_checkpoint()).collect::<Result<_>>()?;
    if stored.iter().all(Option::is_some) {
        if let Some(Some((i, _))) = stored.first() {
            start = i + 1;
            let restores = runs.iter_mut().zip(stored).map(|(r, s)| r.restore_named(s.expect("all stored").1));
            futures_util::future::try_join_all(restores).await?;
        }
    }
    for (i, placed) in scenario.steps.iter().enumerate().skip(start) {
        let at = format!("step {} ({}, {}:{})", i + 1, placed.step.action(), scenario.path.display(), placed.line);
        for r in runs.iter_mut() {
            let on_it = placed.on.contains(&r.name);
            r.current = if on_it { format!("{at} on {}", r.name) } else { at.clone() };
        }
        let start = runs[0].begin_step(i, placed);
        let res = if placed.on.is_empty() {
            if placed.step.reads_machines() {
                for r in runs.iter_mut() {
                    r.drain(None);
                }
                let views = runs.iter().map(|r| (r.name.clone(), r.timeline.entries.clone())).collect();
                runs[0].machine_views = views;
            }
            let (first, rest) = runs.split_first_mut().expect("several");
            let mark = first.timeline.entries.len();
            first.record_rollout_changes();
            let res = placed.step.run(first, placed).await;
            // The step's own events are the lab's; console and QMP events
            // it drained stay the first machine's.
            let (own, machine): (Vec<Entry>, Vec<Entry>) =
                first.timeline.entries.drain(mark..).partition(|e| e.origin == Origin::Step);
            lab.entries.extend(own);
            first.timeline.entries.extend(machine);
            for r in rest {
                r.server.clone_from(&first.server);
                r.rauc.clone_from(&first.rauc);
                r.ostree.clone_from(&first.ostree);
                r.service.clone_from(&first.service);
            }
            res
        } else {
            // Machines run a step together. One whose part ends first is
            // paused until the others' parts end, so none runs on unwatched
            // meanwhile (after an `update` it would autoboot past U-Boot's
            // prompt while the slower one still updates, and the next step,
            // `boot`, could no longer stop it).
            let together = placed.on.len() > 1;
            let on = runs.iter_mut().filter(|r| placed.on.contains(&r.name));
            let res = futures_util::future::try_join_all(on.map(|r| async move {
                placed.step.run(r, placed).await?;
                if together {
                    r.pause_until_all_done().await;
                }
                Ok::<(), Error>(())
            }))
            .await
            .map(|_| ());
            for r in runs.iter_mut() {
                r.resume_if_paused().await;
            }
            res
        };
        runs[0].end_step(start, res.is_ok());
        res?;
    }
    let first = &mut runs[0];
    let mark = first.timeline.entries.len();
    first.record_rollout_changes();
    lab.entries.extend(first.timeline.entries.drain(mark..));
    Ok(())
}

/// `[fleet]`: the update server with the fleet's channels, etcd and the
/// FleetLock server, started before the first power-on and shared by every
/// machine (the first machine's `Run` is dropped last, with them).
async fn start_fleet(runs: &mut [Run<'_>], spec: &crate::scenario::FleetSpec) -> Result<()> {
    let first = &mut runs[0];
    first.start_server().await?;
    let channels: Vec<&str> = spec.channels.iter().map(|c| c.get_ref().as_str()).collect();
    first.server.as_ref().expect("started").fleet(|f, _| *f = crate::rollout::Fleet::new(channels));
    let lab = crate::fleet::FleetLab::start(&first.lab_dir, *spec.lock_slots.get_ref()).await.map_err(Error::infra)?;
    let lab = Some(std::sync::Arc::new(lab));
    let server = first.server.clone();
    for r in runs.iter_mut() {
        r.fleet.clone_from(&lab);
        r.server.clone_from(&server);
    }
    Ok(())
}

/// `[product]`: the private link between the main and the sub, each
/// machine's end given to it before the first power-on, and the update
/// server the main asks (shared by every machine, as a fleet's).
async fn link_product(runs: &mut [Run<'_>], spec: &crate::product::ProductSpec) -> Result<()> {
    runs[0].start_server().await?;
    let server = runs[0].server.clone();
    let find = |name: &str| runs.iter().find(|r| r.name == name).expect("checked: the product's machines");
    let (main, sub) = (find(spec.main.get_ref()), find(spec.sub.get_ref()));
    let lab = crate::product::ProductLab::new(main.board.arch, sub.board.arch, sub.image.ssh_key.clone())?;
    let lab = std::sync::Arc::new(lab);
    for r in runs.iter_mut() {
        r.link = spec.role_of(&r.name).map(|role| lab.end(role));
        r.product = Some(lab.clone());
        r.server.clone_from(&server);
    }
    Ok(())
}

/// The snapshot's events. One machine: its timeline. Several: the lab's
/// events, then each machine's under a `node` event, in `[[machine]]`
/// order, so how the machines' consoles interleave never matters.
fn normalised(runs: &[Run<'_>], lab: &Timeline, mode: crate::scenario::SnapshotEvents) -> Vec<Event> {
    let of = |r: &Run<'_>, t: &Timeline| {
        let mut t = t.clone();
        if mode == crate::scenario::SnapshotEvents::Steps {
            t.entries.retain(|e| e.origin == Origin::Step);
        }
        t.normalised(&r.redactor())
    };
    if let [one] = runs {
        return of(one, &one.timeline);
    }
    let mut all = of(&runs[0], lab);
    for r in runs {
        all.push(Event::Node { name: r.name.clone(), board: r.board.name.clone() });
        all.extend(of(r, &r.timeline));
    }
    all
}

/// The whole run's timeline: one machine's, or every machine's events
/// (marked with the machine) and the lab's, merged by time.
fn merged(runs: &[Run<'_>], lab: &Timeline) -> Timeline {
    if let [one] = runs {
        return one.timeline.clone();
    }
    let mut all = lab.clone();
    for r in runs {
        all.entries.extend(r.timeline.entries.iter().map(|e| Entry { node: Some(r.name.clone()), ..e.clone() }));
    }
    all.entries.sort_by(|a, b| a.t.total_cmp(&b.t));
    all
}

/// Run blocking host work (a host tool like `qemu-img` or `debugfs`, a big
/// file read or copy) on tokio's blocking pool, so the single-threaded
/// runtime that every concurrent run shares keeps reading their consoles.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::infra(format!("a blocking host task failed: {e}")))?
}

/// Free space a run needs where its run directory goes (the overlay grows
/// by every slot written), in MiB; `DEVLAB_MIN_FREE_MIB` overrides it.
const MIN_FREE_MIB: u64 = 1024;

/// Refuse to start a run on a disk that is (nearly) full: QEMU would pause
/// the guest on ENOSPC and the run would end in a confusing timeout.
pub fn check_free_space(root: &std::path::Path) -> Result<()> {
    let need: u64 = std::env::var("DEVLAB_MIN_FREE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(MIN_FREE_MIB);
    // The folder may not exist yet: ask about the nearest one that does.
    let probe = root.ancestors().find(|p| p.exists()).unwrap_or(std::path::Path::new("/"));
    let st = nix::sys::statvfs::statvfs(probe)
        .map_err(|e| Error::infra(format!("cannot check free space in {}: {e}", probe.display())))?;
    let free_mib = st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024);
    if free_mib < need {
        return Err(Error::infra(format!(
            "not enough free disk space for a run in {}: {free_mib} MiB free, a run needs about {need} MiB \
             (free some space, or point DEVLAB_RUNS elsewhere)",
            probe.display()
        )));
    }
    Ok(())
}

/// The device QEMU stopped the guest for because a write found the host
/// disk full (`BLOCK_IO_ERROR` with `nospace` and action `stop`: the
/// default `werror=enospc`). An injected ENOSPC (`disk_errors`) is
/// reported to the guest instead (`werror=report`) and does not count.
fn host_disk_full(events: &[crate::qmp::QmpEvent]) -> Option<String> {
    events.iter().find_map(|e| {
        let d = &e.data;
        let hit = e.name == "BLOCK_IO_ERROR" && d["nospace"] == true && d["action"] == "stop";
        hit.then(|| {
            d["device"].as_str().filter(|s| !s.is_empty()).or(d["node-name"].as_str()).unwrap_or("the disk").to_string()
        })
    })
}

/// When `exec_with_link_outage` takes the link down.
pub(crate) enum OutageStart {
    /// The server has sent another MiB of a release.
    Downloaded,
    /// The server starts answering a request whose path matches.
    Request(Regex),
}

/// When it brings the link back.
pub(crate) enum OutageEnd {
    /// This console pattern appeared.
    Console(BytesRegex),
    /// The outage's own length (the fault itself).
    After(Duration),
}

/// What freezes a machine (see [`Run::arm_freeze`]).
pub(crate) enum FreezeOn {
    Console(BytesRegex),
    Request(Regex),
    /// The update server has sent this many bytes of releases in all.
    Downloaded(u64),
    After(Duration),
    Qmp(String),
}

/// Where `exec_until_power_cut` cuts.
pub(crate) enum CutAt {
    Console(BytesRegex),
    Request(Regex),
    /// The command's own standard output (e.g. an update tool's progress).
    Output(Regex),
}

/// A fault armed on a trigger: when it fires, QEMU is frozen at once (the
/// console reader itself for a console pattern; a watcher task for a
/// server request or a time); `wait_fault` then completes the fault.
pub(crate) struct Armed {
    pub(crate) fault: crate::steps::arm_fault::ArmedFaultKind,
    /// What completes it (resolved when armed).
    pub(crate) action: FireAction,
    /// What the timeline records when it has fired.
    pub(crate) event: Event,
    /// A console trigger's pattern; `None` for a request or a time, which
    /// watch the machine running when armed and never follow it.
    pub(crate) pattern: Option<BytesRegex>,
    /// What the scenario wrote (for messages).
    pub(crate) label: String,
    /// Set once installed: the console offset just past the match
    /// (`usize::MAX` for a trigger that is not a console line).
    pub(crate) fired: Option<tokio::sync::watch::Receiver<Option<usize>>>,
    /// The task watching the server or the clock, aborted with this.
    pub(crate) watcher: Option<AbortOnDrop>,
    /// The task that completes the fault the moment it fires (kills,
    /// resets, or sets the link of the frozen machine), and what it says.
    pub(crate) completion: Option<AbortOnDrop>,
    pub(crate) done: Option<tokio::sync::watch::Receiver<Option<std::result::Result<(), String>>>>,
}

impl Armed {
    /// Watch the running machine `m` for this fault on `on` (see
    /// [`freeze_on`]) and complete it the moment it fires.
    pub(crate) fn install(&mut self, m: &Machine, on: FreezeOn, server: Option<ServerHandle>) {
        let (fired, watcher) = freeze_on(m, on, server);
        let (done, completion) = complete_on_fire(m, self.action.clone(), fired.clone());
        self.fired = Some(fired);
        self.watcher = watcher;
        self.done = Some(done);
        self.completion = Some(completion);
    }

    /// Drop the watch (its machine went off before it fired).
    fn disarm(&mut self) {
        self.fired = None;
        self.watcher = None;
        self.done = None;
        self.completion = None;
    }
}

/// The update server as a task holds it.
pub(crate) type ServerHandle = std::sync::Arc<crate::update_server::UpdateServer>;

/// Arm a freeze of the running machine `m`: the console reader freezes it
/// the moment a pattern arrives, or a watcher task when the update server
/// (`server`) starts answering a matching request, when a QMP event
/// arrives, or when a time has passed. The receiver turns `Some(end)`: the console offset just past
/// the match, `usize::MAX` for a request or a time. The watcher (a task)
/// is aborted when dropped.
pub(crate) fn freeze_on(
    m: &Machine,
    on: FreezeOn,
    server: Option<ServerHandle>,
) -> (tokio::sync::watch::Receiver<Option<usize>>, Option<AbortOnDrop>) {
    let freeze = m.freeze_hook();
    if let FreezeOn::Console(re) = on {
        return (m.console.arm_trigger(re, freeze), None);
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    // Requests and events from now on: counted before the task first runs.
    let from = server.as_ref().map_or(0, |s| s.requests());
    let (qmp, events_from) = (m.qmp.clone(), m.qmp_events().len());
    let watcher = tokio::spawn(async move {
        match (on, server) {
            (FreezeOn::Request(re), Some(server)) => {
                server.wait_request(&re, from).await;
            }
            (FreezeOn::Downloaded(n), Some(server)) => server.wait_downloaded(n).await,
            (FreezeOn::Qmp(name), _) => {
                // Until it comes (the run's own bound ends the wait); an
                // external board has none (refused when checked).
                let Some(qmp) = qmp else { return };
                if qmp.wait_event(&[name.as_str()], events_from, crate::steps::MAX_DURATION).await.is_err() {
                    return;
                }
            }
            // The fault's own moment, not a wait for something.
            (FreezeOn::After(d), _) => tokio::time::sleep(d).await,
            _ => return,
        }
        freeze();
        let _ = tx.send(Some(usize::MAX));
    });
    (rx, Some(AbortOnDrop(watcher)))
}

/// How an armed fault is completed once it has fired (and frozen the
/// machine).
#[derive(Clone)]
pub(crate) enum FireAction {
    /// Cut the power: kill the frozen QEMU (its owner reaps it).
    Kill,
    /// Thaw and send one QMP command (`system_reset`, `set_link`).
    Qmp(&'static str, Option<serde_json::Value>),
    /// Add these bad spots above the disk's current layer.
    DiskErrors(Vec<crate::board::DiskError>),
    /// Overwrite `length` bytes at disk offset `offset` with `byte`.
    Corrupt { offset: u64, length: u64, byte: u8 },
    /// The update server's next `count` answers fail.
    Http(ServerHandle, crate::update_server::Fault, u32),
    /// The provisioning service's next answers on an endpoint fail.
    Provision(devlab_provision::Service, devlab_provision::Endpoint, devlab_provision::Fault),
    /// The lab network's dnsmasq stops.
    DhcpStop(crate::labnet::DhcpSwitch),
}

/// A task that completes `action` on `m` as soon as `fired` turns: a
/// power cut kills the frozen QEMU; anything else is done and the machine
/// thawed, so the guest runs on at once, not when a `wait_fault` step
/// comes.
fn complete_on_fire(
    m: &Machine,
    action: FireAction,
    mut fired: tokio::sync::watch::Receiver<Option<usize>>,
) -> (tokio::sync::watch::Receiver<Option<std::result::Result<(), String>>>, AbortOnDrop) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let qmp = m.qmp.clone();
    let disk = m.disk.clone();
    let cutter = m.cutter();
    let thaw = m.signal_hook(nix::sys::signal::Signal::SIGCONT);
    let task = tokio::spawn(async move {
        if fired.wait_for(|f| f.is_some()).await.is_err() {
            return;
        }
        let res = match action {
            FireAction::Kill => cutter.cut().await,
            FireAction::Http(server, fault, count) => {
                server.add_fault(fault, count);
                thaw();
                Ok(())
            }
            FireAction::Provision(service, endpoint, fault) => {
                service.fault(endpoint, fault);
                thaw();
                Ok(())
            }
            FireAction::DhcpStop(switch) => {
                let stopped = tokio::task::spawn_blocking(move || switch.stop()).await;
                thaw();
                match stopped {
                    Ok(res) => res.map_err(|e| format!("stopping the lab's DHCP/TFTP server: {e}")),
                    Err(e) => Err(format!("stopping the lab's DHCP/TFTP server: {e}")),
                }
            }
            FireAction::Qmp(_, _) | FireAction::DiskErrors(_) | FireAction::Corrupt { .. } if qmp.is_none() => {
                Err("an external board has no QMP (refused when checked)".into())
            }
            FireAction::Qmp(command, args) => {
                thaw();
                let qmp = qmp.expect("checked above");
                let res = qmp.execute_timeout(command, args, Duration::from_secs(10)).await;
                res.map(|_| ()).map_err(|e| format!("{command}: {e}"))
            }
            FireAction::DiskErrors(_) | FireAction::Corrupt { .. } => {
                thaw();
                match disk {
                    Some(disk) => change_disk(qmp.as_deref().expect("checked above"), &disk, &action).await,
                    None => Err("the machine was started without the disk seam".into()),
                }
            }
        };
        let _ = tx.send(Some(res));
    });
    (rx, AbortOnDrop(task))
}

/// Change a running machine's disk with its guest paused (QMP `stop` ..
/// `cont`): add a blkdebug layer and point the disk's top node at it, or
/// write bytes through the device.
async fn change_disk(
    qmp: &crate::qmp::Qmp,
    disk: &crate::machine::DiskSeam,
    action: &FireAction,
) -> std::result::Result<(), String> {
    let t = Duration::from_secs(10);
    let run = |command: &'static str, args: serde_json::Value| async move {
        qmp.execute_timeout(command, Some(args), t).await.map_err(|e| format!("{command}: {e}"))
    };
    qmp.execute_timeout("stop", None, t).await.map_err(|e| format!("stop: {e}"))?;
    let res = match action {
        FireAction::DiskErrors(errors) => {
            let n = disk.layers.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let (below, layer) = (crate::board::disk_layer(n - 1), crate::board::disk_layer(n));
            let node = crate::board::blkdebug_node(&layer, below.into(), errors);
            match run("blockdev-add", node).await {
                Ok(_) => {
                    let top = crate::board::armable_top(layer.into(), disk.detect_zeroes);
                    run("blockdev-reopen", json!({"options": [top]})).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        }
        FireAction::Corrupt { offset, length, byte } => {
            // qemu-io prints its own report on QEMU's stdout; what comes
            // back is the monitor's error, if any.
            let line = format!("qemu-io -d {} \"write -P {byte} {offset} {length}\"", disk.backend);
            match run("human-monitor-command", json!({"command-line": line})).await {
                Ok(out) if out.as_str().is_some_and(|o| !o.trim().is_empty()) => Err(format!("qemu-io: {out}")),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        }
        _ => Ok(()),
    };
    // The guest runs on whatever happened.
    qmp.execute_timeout("cont", None, t).await.map_err(|e| format!("cont: {e}"))?;
    res
}

/// Wait (at most 15 s) for a fired fault's completion task.
pub(crate) async fn completed(
    done: &mut tokio::sync::watch::Receiver<Option<std::result::Result<(), String>>>,
    what: &str,
) -> Result<()> {
    let res = tokio::time::timeout(Duration::from_secs(15), done.wait_for(|d| d.is_some())).await;
    match res.ok().and_then(|d| d.ok().map(|d| d.clone())).flatten() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Error::infra(format!("completing {what}: {e}"))),
        None => Err(Error::infra(format!("{what} fired but was not completed"))),
    }
}

/// A spawned task that is aborted when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pattern refused (`refuse`) until an `allow` names it: armed as a bad
/// pattern (a wait fails at once) and watched by the console reader (so
/// an appearance while no step waits is caught too), on every console
/// from the one running when it was refused.
pub(crate) struct Refusal {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) pattern: BytesRegex,
    pub(crate) seen: Vec<tokio::sync::watch::Receiver<Option<usize>>>,
}

/// The run's context: what every step borrows (the machine, its SSH
/// session, the servers, the timeline) and flavour state.
pub struct Run<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) board: &'a Board,
    pub(crate) image: BuiltImage,
    /// A device's image: the user's file, its hash, format and partitions.
    pub(crate) device_image: Option<crate::device_image::Prepared>,
    /// This machine's folder: the run directory, or a folder in it named
    /// after the machine in a scenario with several.
    pub(crate) run_dir: PathBuf,
    /// The run directory (the lab's logs: the update server's).
    pub(crate) lab_dir: PathBuf,
    /// The machine's `[[machine]]` name (empty: the one machine).
    pub(crate) name: String,
    /// The image its disk starts from (the scenario's, or the machine's own).
    pub(crate) machine_image: toml::Spanned<String>,
    /// The arches of every machine of the run, in `[[machine]]` order: what
    /// the lab serves builds for.
    pub(crate) lab_arches: Vec<devlab_images::Arch>,
    pub(crate) accel: AccelChoice,
    pub(crate) machine: Option<Machine>,
    pub(crate) ssh: Option<Ssh>,
    /// A shell logged in on the serial console (a device's `login`).
    pub(crate) serial: Option<crate::serial_shell::SerialShell>,
    pub(crate) timeline: Timeline,
    /// Time zero of the run: the first power-on.
    pub(crate) t_first: Option<Instant>,
    /// An external board's disk was written (`flash`) by this run.
    flashed: bool,
    /// Console bytes already scanned for markers.
    pub(crate) marker_offset: usize,
    /// QMP events already in the timeline.
    pub(crate) qmp_cursor: usize,
    /// Start of a line whose marker was taken before the line was complete.
    pub(crate) marker_taken_line: Option<usize>,
    /// Which step is running (for failure messages).
    pub(crate) current: String,
    /// The update server, started by the first `serve_release`/`serve_bundle`.
    pub(crate) server: Option<std::sync::Arc<crate::update_server::UpdateServer>>,
    /// The RAUC flavour: bundles served.
    pub(crate) rauc: crate::rauc::Bundles,
    /// Bad spots injected from the next power-on on (`disk_errors`).
    pub(crate) disk_errors: Vec<crate::board::DiskError>,
    /// The scenario arms a fault that changes a running machine's disk:
    /// its machines boot with the disk seam ([`crate::board::DISK_NODE`]).
    pub(crate) disk_armable: bool,
    /// What the disk holds at the first power-on (the machine's plan).
    pub(crate) disk: crate::scenario::DiskStart,
    /// The lab network's dnsmasq, for an armed DHCP outage (every machine's).
    pub(crate) dhcp: Option<crate::labnet::DhcpSwitch>,
    /// Told as each step starts.
    pub(crate) on_step: StepHook,
    /// Use checkpoints (`RunOptions::checkpoints`).
    pub(crate) checkpoints: bool,
    /// The OSTree flavour: commits known and published.
    pub(crate) ostree: crate::ostree::Commits,
    /// Callbacks already consumed by `wait_callback`.
    pub(crate) callback_cursor: usize,
    /// Console sync barriers issued so far.
    pub(crate) syncs: u32,
    /// Paused by the harness until the other machines' parts of a step end.
    paused: bool,
    /// The provisioning service and its files (`[provision]`), started
    /// before the first power-on.
    pub(crate) lab: Option<crate::provision::Lab>,
    /// The TFTP folder of a device's own netboot (`crate::netboot`).
    pub(crate) netboot_tftp: Option<PathBuf>,
    /// The provisioning service (a handle; the lab itself is the first
    /// machine's in a run with several, and this is every machine's).
    pub(crate) service: Option<devlab_provision::Service>,
    /// The service names its profiles `<name>-<arch>` (a lab network).
    pub(crate) per_arch_profiles: bool,
    /// The lab network (the first machine's `Run` owns it) ...
    pub(crate) net: Option<crate::labnet::LabNet>,
    /// ... and this machine's way into it: the namespace and its tap.
    pub(crate) netns: Option<(crate::labnet::NetnsHandle, String)>,
    /// Faults armed on a console trigger (`arm_fault`), in order; each is
    /// installed on the console of the machine running when it is armed,
    /// or of the next one to start.
    pub(crate) armed: Vec<Armed>,
    /// Patterns refused until a later `allow`.
    pub(crate) refusals: Vec<Refusal>,
    /// The run's start (for step times) and each step's time.
    pub(crate) started: Instant,
    pub(crate) step_times: Vec<StepTime>,
    /// The fleet's etcd and lock server (`[fleet]`), every machine's.
    pub(crate) fleet: Option<std::sync::Arc<crate::fleet::FleetLab>>,
    /// A `[product]`'s link and parts, every machine's; this machine's end
    /// of the link when it is the main or the sub.
    pub(crate) product: Option<std::sync::Arc<crate::product::ProductLab>>,
    pub(crate) link: Option<crate::product::LinkEnd>,
    /// Every machine's timeline as it stood when a lab step that reads the
    /// machines (`Step::reads_machines`) began, by machine name.
    pub(crate) machine_views: Vec<(String, Vec<Entry>)>,
    /// How many of the update server's fleet decisions the timeline has
    /// looked at (see [`Run::record_rollout_changes`]).
    rollout_seen: usize,
}

impl<'a> Run<'a> {
    fn new(
        scenario: &'a Scenario,
        plan: &'a MachinePlan,
        image: BuiltImage,
        run_dir: PathBuf,
        accel: AccelChoice,
    ) -> Self {
        let (board, machine_image) = (&plan.board, plan.image.clone());
        Run {
            scenario,
            board,
            image,
            device_image: None,
            lab_dir: run_dir.clone(),
            run_dir,
            name: String::new(),
            machine_image,
            lab_arches: vec![board.arch],
            accel,
            machine: None,
            ssh: None,
            serial: None,
            timeline: Timeline::default(),
            t_first: None,
            flashed: false,
            marker_offset: 0,
            qmp_cursor: 0,
            marker_taken_line: None,
            current: "setup".into(),
            server: None,
            rauc: crate::rauc::Bundles::default(),
            disk_errors: plan.disk_errors.clone(),
            disk_armable: scenario.steps.iter().any(|p| p.step.changes_running_disk()),
            disk: plan.disk,
            dhcp: None,
            on_step: StepHook::default(),
            checkpoints: true,
            callback_cursor: 0,
            syncs: 0,
            paused: false,
            ostree: crate::ostree::Commits::default(),
            lab: None,
            fleet: None,
            product: None,
            link: None,
            machine_views: Vec::new(),
            rollout_seen: 0,
            netboot_tftp: None,
            service: None,
            per_arch_profiles: false,
            net: None,
            netns: None,
            armed: Vec::new(),
            refusals: Vec::new(),
            started: Instant::now(),
            step_times: Vec::new(),
        }
        .with_booted_commit()
    }

    /// Knows the booted image's OSTree commit (if it is an OSTree image).
    fn with_booted_commit(mut self) -> Self {
        if let Some(o) = &self.image.manifest.ostree {
            self.ostree.insert(self.machine_image.get_ref(), &o.commit);
        }
        self
    }

    /// The OSTree commit of image `name` (its last build for this arch).
    pub(crate) fn commit_of(&mut self, name: &str) -> Result<String> {
        let arch = self.board.arch;
        self.ostree.of(name, arch).map_err(|e| self.failure(e))
    }

    /// Replaces `{commit:<image>}` with that image's OSTree commit.
    pub(crate) fn subst_commits(&mut self, s: &str) -> Result<String> {
        let arch = self.board.arch;
        self.ostree.subst(s, arch).map_err(|e| self.failure(e))
    }

    /// Redactions for this run's snapshots: the run folder and every OSTree
    /// commit it named (`[commit:<image>]`).
    fn redactor(&self) -> Redactor {
        let mut lits: Vec<(String, String)> = vec![(self.run_dir.to_string_lossy().into_owned(), "[run]".into())];
        lits.extend(self.ostree.redactions());
        let refs: Vec<(&str, &str)> = lits.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        Redactor::new(&refs)
    }

    fn now(&self) -> f64 {
        self.t_first.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// Seconds from the run's time zero to the current machine's.
    fn machine_offset(&self) -> f64 {
        match (&self.machine, self.t_first) {
            (Some(m), Some(t)) => m.t0.duration_since(t).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub(crate) fn machine_running(&mut self) -> bool {
        self.machine.as_mut().is_some_and(|m| m.exited().is_none())
    }

    fn last_lines(&self) -> Vec<String> {
        self.machine.as_ref().map(|m| m.console.last_lines(ERROR_LINES)).unwrap_or_default()
    }

    pub(crate) fn failure(&self, message: String) -> Error {
        // A guest QEMU paused because the host disk filled up looks like a
        // hang from inside; say what happened.
        let paused = self.machine.as_ref().and_then(|m| host_disk_full(&m.qmp_events()));
        let message = match paused {
            Some(device) => format!(
                "{message}\nQEMU paused the guest: no space left on the host for {device} (the disk holding {} is \
                 full; free space and run again)",
                self.run_dir.display()
            ),
            None => message,
        };
        Error::Failed(Box::new(Failure {
            step: self.current.clone(),
            message,
            run_dir: self.run_dir.clone(),
            last_lines: self.last_lines(),
        }))
    }

    pub(crate) fn console_failure(&self, e: ConsoleError) -> Error {
        let last = e.last_lines().to_vec();
        let mut err = self.failure(e.to_string());
        if let Error::Failed(f) = &mut err {
            if !last.is_empty() {
                f.last_lines = last;
            }
        }
        err
    }

    /// A console error as a failure that says first what it means (`why`:
    /// which profile field to look at), then what the console showed.
    pub(crate) fn console_failure_because(&self, e: ConsoleError, why: &str) -> Error {
        let mut err = self.console_failure(e);
        if let Error::Failed(f) = &mut err {
            f.message = format!("{why}: {}", f.message);
        }
        err
    }

    /// Read a device fact: run its command over the device's command
    /// transport and pick its value; a command that fails or prints nothing
    /// the fact's regex matches is a failure naming the fact in the profile.
    pub(crate) async fn read_fact(&mut self, fact: &crate::device::Fact) -> Result<String> {
        let Some(command) = fact.command() else {
            return Err(
                self.failure(format!("fact `{}` is a console line, not a command ({})", fact.name, fact.origin))
            );
        };
        let via = self.via(None);
        let out = self.exec_via(command, Duration::from_secs(60), via).await?;
        if out.status != 0 {
            return Err(self.failure(format!(
                "fact `{}`: `{command}` exited {} ({}); output: {:?}",
                fact.name,
                out.status,
                fact.origin,
                out.stdout.trim()
            )));
        }
        fact.value(&out.stdout).ok_or_else(|| {
            let pattern = fact.pattern.as_ref().map(|p| p.as_str()).unwrap_or_default();
            self.failure(format!(
                "fact `{}`: `{command}` printed {:?}, which `{pattern}` does not match ({})",
                fact.name,
                out.stdout.trim(),
                fact.origin
            ))
        })
    }

    pub(crate) fn machine(&mut self) -> Result<&mut Machine> {
        if !self.machine_running() {
            return Err(self.failure("the machine is not running (add a power_on step)".into()));
        }
        Ok(self.machine.as_mut().expect("running"))
    }

    pub(crate) fn ssh(&self) -> Result<&Ssh> {
        self.ssh.as_ref().ok_or_else(|| self.failure("no SSH session (add a wait_ssh step)".into()))
    }

    /// Move console markers (up to byte `upto`, or all complete lines) and
    /// new QMP events into the timeline, merged by arrival time.
    pub(crate) fn drain(&mut self, upto: Option<usize>) {
        let offset = self.machine_offset();
        let markers = self.markers();
        let Some(m) = self.machine.as_ref() else { return };
        let mut batch = Vec::new();
        let mut push_marker = |line: &str, t: f64| {
            if let Some(event) = markers.event(line) {
                batch.push(Entry { t: offset + t, origin: Origin::Console, event, node: None });
            }
        };
        for (line, t, end) in m.console.lines_from(self.marker_offset) {
            // Every line that starts before the bound belongs to this step.
            let start = self.marker_offset;
            if upto.is_some_and(|u| start >= u) {
                break;
            }
            self.marker_offset = end;
            if self.marker_taken_line.take() == Some(start) {
                continue;
            }
            push_marker(&line, t);
        }
        // A step that matched inside a line still arriving owns that line's
        // marker (see `settle_line`); take it now, whole or not.
        if let Some(u) = upto {
            if let Some((start, line, t)) = m.console.line_at(u) {
                if start == self.marker_offset && start < u && self.marker_taken_line != Some(start) {
                    push_marker(&line, t);
                    self.marker_taken_line = Some(start);
                }
            }
        }
        let events = m.qmp_events();
        for e in &events[self.qmp_cursor.min(events.len())..] {
            if let Some(event) = qmp_event(&e.name, &e.data) {
                batch.push(Entry { t: offset + e.at, origin: Origin::Qmp, event, node: None });
            }
        }
        self.qmp_cursor = events.len();
        self.timeline.extend_merged(batch);
    }

    /// After a match ending at `end`: if that line carries a timeline
    /// marker and is still arriving, wait (bounded) for the rest of it, so
    /// the marker's text is whole and the timeline the same every run.
    pub(crate) async fn settle_line(&mut self, end: usize) {
        let Some(m) = self.machine.as_ref() else { return };
        let Some((_, line, _)) = m.console.line_at(end) else { return };
        if self.markers().event(&line).is_some() {
            m.console.wait_line_end(end, Duration::from_secs(5)).await;
        }
    }

    /// Pause a running machine (QMP `stop`) whose part of a step ended
    /// before the other machines' parts; a machine that is off is left.
    pub(crate) async fn pause_until_all_done(&mut self) {
        let Some(qmp) = self.machine.as_ref().and_then(|m| m.qmp.as_ref()).filter(|q| !q.is_closed()) else {
            return;
        };
        self.paused = qmp.execute_timeout("stop", None, Duration::from_secs(10)).await.is_ok();
    }

    /// Let a machine paused by [`Run::pause_until_all_done`] run again.
    pub(crate) async fn resume_if_paused(&mut self) {
        if std::mem::take(&mut self.paused) {
            if let Some(qmp) = self.machine.as_ref().and_then(|m| m.qmp.as_ref()).filter(|q| !q.is_closed()) {
                let _ = qmp.execute_timeout("cont", None, Duration::from_secs(10)).await;
            }
        }
    }

    /// The machine rebooted, was cut or went off: its SSH session and its
    /// serial login are gone.
    pub(crate) fn forget_sessions(&mut self) {
        if let Some(s) = self.ssh.take() {
            s.disconnect();
        }
        self.serial = None;
    }

    /// The transport a command step uses: the step's own choice, else the
    /// device's default (else, when only the other one is logged in, that
    /// one), else SSH.
    pub(crate) fn via(&self, chosen: Option<Via>) -> Via {
        if let Some(via) = chosen {
            return via;
        }
        let Some(d) = &self.scenario.device else { return Via::Ssh };
        // When only the other transport is logged in, that one (as planned:
        // `CheckCx::resolved_via`).
        match (d.default_via, self.ssh.is_some(), self.serial.is_some()) {
            (Via::Ssh, false, true) => Via::Serial,
            (Via::Serial, true, false) => Via::Ssh,
            (default, _, _) => default,
        }
    }

    /// The serial shell and the console it types on, or a failure saying
    /// to log in over serial first.
    pub(crate) fn serial_shell(
        &mut self,
    ) -> Result<(&mut crate::serial_shell::SerialShell, &mut crate::console::Console)> {
        if self.serial.is_none() || self.machine.is_none() {
            return Err(self.failure("no serial login (add a login step with via = \"serial\")".into()));
        }
        let (Some(shell), Some(m)) = (self.serial.as_mut(), self.machine.as_mut()) else { unreachable!("checked") };
        Ok((shell, &mut m.console))
    }

    /// Run `command` on the machine over `via` (SSH, or the serial shell).
    pub(crate) async fn exec_via(&mut self, command: &str, timeout: Duration, via: Via) -> Result<crate::ssh::Output> {
        match via {
            Via::Ssh => self.ssh()?.exec(command, timeout).await.map_err(|e| self.failure(e.to_string())),
            Via::Serial => {
                let (shell, console) = self.serial_shell()?;
                let out = shell.exec(console, command, timeout).await;
                out.map_err(|e| self.serial_failure(e))
            }
        }
    }

    /// A serial-shell error as a failure, with the console's last lines.
    pub(crate) fn serial_failure(&self, e: crate::serial_shell::ShellError) -> Error {
        match e {
            crate::serial_shell::ShellError::Console(c) => self.console_failure(c),
            other => self.failure(other.to_string()),
        }
    }

    /// An SSH client for this machine on host `port`: the device's login
    /// (user, key or password), else root with the image's key.
    pub(crate) fn new_ssh(&self, port: u16, t0: Instant) -> Ssh {
        let mut ssh = Ssh::new(port, &self.image.ssh_key, self.run_dir.join("ssh.log"), t0);
        if let Some(ext) = &self.board.external {
            ssh = ssh.with_host(&ext.ssh.0);
        }
        match self.scenario.device.as_ref().and_then(|d| d.ssh_login(self.board.arch)) {
            Some(login) => ssh.with_login(&login.user, login.auth),
            None => ssh,
        }
    }

    /// Which console lines are timeline markers: the device's (its profile's
    /// `[[marker]]`s), else the shipped ones.
    pub(crate) fn markers(&self) -> &'a crate::markers::Markers {
        match &self.scenario.device {
            Some(d) => &d.markers,
            None => crate::markers::builtin(),
        }
    }

    pub(crate) fn record(&mut self, event: Event) {
        let t = self.now();
        self.timeline.push(t, Origin::Step, event);
    }

    /// The board's value of a placeholder (`{arch}`, `{board}`, `{mac}`,
    /// `{serial}`).
    fn placeholder(&self, name: &str) -> Option<String> {
        match name {
            "{arch}" => Some(self.board.arch.uname().to_string()),
            "{board}" => Some(self.board.name.clone()),
            "{mac}" => Some(self.board.nic.mac.clone()),
            "{serial}" => Some(self.board.smbios.as_ref().map_or("", |b| b.serial.as_str()).to_string()),
            _ => None,
        }
    }

    /// A command with the board's placeholders and `{server}` filled in.
    pub(crate) fn subst(&self, s: &str) -> String {
        let s = crate::steps::PLACEHOLDERS
            .iter()
            .fold(s.to_string(), |acc, p| acc.replace(p, &self.placeholder(p).unwrap_or_default()));
        match &self.server {
            Some(server) => s.replace("{server}", &server.guest_address()),
            None => s,
        }
    }

    /// A console pattern for this board, compiled (checked at load).
    pub(crate) fn console_pattern(&self, p: &crate::steps::Pattern) -> BytesRegex {
        p.bytes_regex(|k| self.placeholder(k))
    }

    /// A text pattern (command output, request paths) for this board.
    pub(crate) fn text_pattern(&self, p: &crate::steps::Pattern) -> Regex {
        p.text_regex(|k| self.placeholder(k))
    }

    /// A pattern as this board sees it (what the timeline records).
    pub(crate) fn pattern_source(&self, p: &crate::steps::Pattern) -> String {
        p.filled(|k| self.placeholder(k))
    }

    /// Step `i` starts: the live view hears it, and its time is recorded
    /// before it runs, so a step cut off by the run's timeout still shows
    /// (as not passed, timed to the end).
    fn begin_step(&mut self, i: usize, placed: &PlacedStep) -> Duration {
        let n = self.scenario.steps.len();
        self.on_step.tell(&format!("step {}/{n} {}", i + 1, placed.step.action()));
        let start = self.started.elapsed();
        self.step_times.push(StepTime {
            index: i + 1,
            action: placed.step.action(),
            line: placed.line,
            start_s: start.as_secs_f64(),
            duration_s: 0.0,
            passed: false,
        });
        start
    }

    /// The step that began at `start` ended.
    fn end_step(&mut self, start: Duration, passed: bool) {
        let last = self.step_times.last_mut().expect("pushed by begin_step");
        last.duration_s = (self.started.elapsed() - start).as_secs_f64();
        last.passed = passed;
    }

    /// The scenario's `checkpoint` step (its index) and this machine's
    /// stored state for it, if checkpoints are on and one is stored.
    fn stored_checkpoint(&self) -> Result<Option<(usize, crate::checkpoint::Found)>> {
        let checkpoint = self.scenario.steps.iter().position(|p| matches!(p.step, Step::Checkpoint(_)));
        let Some(i) = checkpoint.filter(|_| self.checkpoints) else { return Ok(None) };
        let Step::Checkpoint(c) = &self.scenario.steps[i].step else { unreachable!() };
        let key = self.checkpoint_key(i)?;
        Ok(crate::checkpoint::find(&crate::checkpoint::root(), &c.name, &key).map(|found| (i, found)))
    }

    /// Start from a stored checkpoint (see [`Run::restore`]), saying so.
    async fn restore_named(&mut self, found: crate::checkpoint::Found) -> Result<()> {
        self.current = format!("restoring checkpoint {}", found.meta.name);
        self.on_step.tell(&format!("restoring checkpoint {}", found.meta.name));
        self.restore(found).await
    }

    async fn steps(&mut self) -> Result<()> {
        // A stored checkpoint for the steps up to the `checkpoint` step
        // replaces running them.
        let mut start = 0;
        if let Some((i, found)) = self.stored_checkpoint()? {
            self.restore_named(found).await?;
            start = i + 1;
        }
        for (i, placed) in self.scenario.steps.iter().enumerate().skip(start) {
            self.current =
                format!("step {} ({}, {}:{})", i + 1, placed.step.action(), self.scenario.path.display(), placed.line);
            let start = self.begin_step(i, placed);
            let res = placed.step.run(self, placed).await;
            self.end_step(start, res.is_ok());
            res?;
        }
        Ok(())
    }

    /// Run `command` over `via` (SSH or the serial shell) and cut the power
    /// at `at` (a console pattern, the update server starting to answer a
    /// matching request, or the command's own output) while it runs; the
    /// command ending first is a failure. A console or request cut is an
    /// armed fault bound to the command (see `arm_fault`): the machine is
    /// frozen the moment the trigger fires, then killed.
    pub(crate) async fn exec_until_power_cut(
        &mut self,
        command: &str,
        timeout: Duration,
        at: CutAt,
        via: Via,
    ) -> Result<()> {
        match via {
            Via::Ssh => {
                self.ssh()?;
            }
            Via::Serial => {
                self.serial_shell()?;
            }
        }
        let (on, what) = match at {
            CutAt::Output(re) => return self.exec_until_output_cut(command, timeout, re, via).await,
            CutAt::Console(re) => {
                let what = format!("`{}` appeared on the console", re.as_str());
                (FreezeOn::Console(re), what)
            }
            CutAt::Request(re) => {
                let what = format!("a request for `{}` reached the server", re.as_str());
                (FreezeOn::Request(re), what)
            }
        };
        // Armed before the command is typed; the serial shell then holds the console.
        let (mut fired, _watcher) = self.arm_freeze(on)?;
        let exec = async {
            match via {
                Via::Ssh => self.ssh.as_ref().expect("checked").exec(command, timeout).await.map_err(|e| e.to_string()),
                Via::Serial => {
                    let (shell, console) = self.serial_shell().map_err(|e| e.to_string())?;
                    shell.exec(console, command, timeout).await.map_err(|e| e.to_string())
                }
            }
        };
        let cut = tokio::select! {
            // A fired trigger has frozen the guest: its command cannot end after that.
            biased;
            got = tokio::time::timeout(timeout, fired.wait_for(|f| f.is_some())) => match got {
                Ok(Ok(end)) => Ok(end.expect("fired")),
                _ => Err(format!("{what}: not within {}", humantime::format_duration(timeout))),
            },
            out = exec => Err(format!(
                "`{command}` ended ({}) before {what}",
                out.map(|o| format!("exit {}", o.status)).unwrap_or_else(|e| e)
            )),
        };
        let end = cut.map_err(|e| self.failure(e))?;
        self.machine()?.power_cut().await?;
        self.forget_sessions();
        // A console trigger's line is the last the timeline keeps.
        self.drain((end != usize::MAX).then_some(end));
        self.record(Event::PowerCut);
        Ok(())
    }

    /// The power cut of [`Run::exec_until_power_cut`] when the command's
    /// own output says the moment has come: QEMU is killed as soon as the
    /// output read so far matches (milliseconds after the guest printed it;
    /// the guest runs on meanwhile, so this is for moments that last, such
    /// as an update tool writing a slot).
    async fn exec_until_output_cut(&mut self, command: &str, timeout: Duration, re: Regex, via: Via) -> Result<()> {
        let what = format!("its output matched `{}`", re.as_str());
        let waited = humantime::format_duration(timeout);
        let matched = match via {
            Via::Ssh => {
                let ssh = self.ssh.as_ref().expect("checked");
                match tokio::time::timeout(timeout, ssh.exec_until_output(command, re, timeout)).await {
                    Ok(Ok(m)) => m.is_some(),
                    Ok(Err(e)) => return Err(self.failure(format!("`{command}`: {e}"))),
                    Err(_) => return Err(self.failure(format!("`{command}`: not {what} within {waited}"))),
                }
            }
            Via::Serial => {
                let (shell, console) = self.serial_shell()?;
                match shell.exec_until(console, command, timeout, Some(&re)).await {
                    Ok(e) => matches!(e, crate::serial_shell::Ended::Matched),
                    Err(e) => return Err(self.serial_failure(e)),
                }
            }
        };
        if !matched {
            return Err(self.failure(format!("`{command}` ended before {what}")));
        }
        self.machine()?.power_cut().await?;
        self.forget_sessions();
        self.drain(None);
        self.record(Event::PowerCut);
        Ok(())
    }

    /// [`freeze_on`] the running machine (a request trigger needs the
    /// update server).
    pub(crate) fn arm_freeze(
        &mut self,
        on: FreezeOn,
    ) -> Result<(tokio::sync::watch::Receiver<Option<usize>>, Option<AbortOnDrop>)> {
        let server = self.server_for(&on)?;
        Ok(freeze_on(self.machine()?, on, server))
    }

    /// The update server, when a trigger watches it.
    pub(crate) fn server_for(&self, on: &FreezeOn) -> Result<Option<ServerHandle>> {
        match on {
            FreezeOn::Request(_) | FreezeOn::Downloaded(_) => Ok(Some(self.server.clone().ok_or_else(|| {
                self.failure("a fault on a request needs the update server (serve something first)".into())
            })?)),
            _ => Ok(None),
        }
    }

    /// Start the update server on first use.
    /// The changes the update server made to a fleet's rollouts by itself
    /// since the last look (a wave opened, a halt), as `rollout` events:
    /// the operator's own are their steps' events, and check-in answers
    /// (one per poll, as many as the timing makes) stay in `http.log`.
    /// Looked at before each lab step and after the last step, so they
    /// land between the same steps every run.
    pub(crate) fn record_rollout_changes(&mut self) {
        let Some(server) = self.server.clone() else { return };
        let seen = self.rollout_seen;
        let (changes, total) = server.fleet(|f, _| (f.own_changes(seen), f.decisions.len()));
        self.rollout_seen = total;
        for d in changes {
            self.record(Event::Rollout { channel: d.channel, detail: format!("{}: {}", d.what, d.detail) });
        }
    }

    pub(crate) async fn start_server(&mut self) -> Result<()> {
        if self.server.is_none() {
            let log = self.lab_dir.join("http.log");
            let server = match &self.board.external {
                Some(ext) => {
                    crate::update_server::UpdateServer::start_on(ext.bind, &ext.server_address, log).await.map_err(
                        |e| Error::infra(format!("starting the update server on the lab address {}: {e}", ext.bind)),
                    )?
                }
                None => crate::update_server::UpdateServer::start(log)
                    .await
                    .map_err(|e| Error::infra(format!("starting the update server: {e}")))?,
            };
            self.server = Some(std::sync::Arc::new(server));
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let r = self.machine()?.console.send(bytes).await;
        r.map_err(|e| self.console_failure(e))
    }

    /// A console barrier: write a sync line to the guest's console over SSH
    /// and wait for it on the serial port, then drain the timeline up to it.
    /// Everything the guest printed before (same tty, in order) is then in
    /// the timeline, whatever the race between SSH and the UART.
    pub(crate) async fn console_barrier(&mut self) -> Result<()> {
        self.syncs += 1;
        let tag = format!("devlab-sync {}", self.syncs);
        let out = self.ssh()?.exec(&format!("echo '{tag}' > /dev/console"), Duration::from_secs(30)).await;
        out.map_err(|e| self.failure(format!("console barrier: {e}")))?;
        let re = BytesRegex::new(&regex::escape(&tag)).expect("literal");
        let m = self.machine()?;
        let got = m.console.expect(&[re], Duration::from_secs(30)).await;
        let got = got.map_err(|e| self.console_failure(e))?;
        self.drain(Some(got.end));
        Ok(())
    }

    /// Run `command` over SSH with the NIC's link down for part of it:
    /// from `start` (the server has sent 1 MiB more of a release, or starts
    /// answering a matching request) until `end` (a console line, e.g. the
    /// agent reporting; or the outage's own length, which is the fault
    /// itself, not a wait for something). The link changes go into the
    /// timeline among the console lines by time; the command runs to its end.
    pub(crate) async fn exec_with_link_outage(
        &mut self,
        command: &str,
        timeout: Duration,
        start: OutageStart,
        end: OutageEnd,
    ) -> Result<crate::ssh::Output> {
        self.ssh()?;
        self.machine()?;
        if self.server.is_none() {
            return Err(self.failure("a link drop mid-transfer needs the update server (serve something first)".into()));
        }
        let (out, console_end, t_down, t_up) = {
            let server = self.server.clone().expect("checked");
            let bytes = server.downloaded();
            let ssh = self.ssh.as_ref().expect("checked");
            let machine = self.machine.as_ref().expect("checked");
            let exec = ssh.exec(command, timeout);
            tokio::pin!(exec);
            let (what, on) = match &start {
                OutageStart::Downloaded => {
                    ("1 MiB was downloaded".to_string(), FreezeOn::Downloaded(bytes + (1 << 20)))
                }
                OutageStart::Request(re) => {
                    (format!("a request for `{}` reached the server", re.as_str()), FreezeOn::Request(re.clone()))
                }
            };
            // The outage is an armed fault bound to this command: a
            // link_down on the trigger, a link_up on its end.
            let set_link = |up: bool| FireAction::Qmp("set_link", Some(json!({"name": "net0", "up": up})));
            let arm = |on: FreezeOn, action: FireAction, server: Option<ServerHandle>| {
                let (fired, watcher) = freeze_on(machine, on, server);
                let (done, completion) = complete_on_fire(machine, action, fired.clone());
                (fired, done, (watcher, completion))
            };
            let (mut fired, mut done, _tasks) = arm(on, set_link(false), Some(server));
            let early = tokio::select! {
                out = &mut exec => Some(out),
                _ = fired.wait_for(|f| f.is_some()) => None,
            };
            if let Some(out) = early {
                let detail = out.map(|o| format!("exit {}", o.status)).unwrap_or_else(|e| e.to_string());
                return Err(self.failure(format!("`{command}` ended ({detail}) before {what}")));
            }
            completed(&mut done, "set_link").await?;
            let t_down = machine.now();
            let end_on = match &end {
                OutageEnd::Console(re) => FreezeOn::Console(re.clone()),
                OutageEnd::After(d) => FreezeOn::After(*d),
            };
            let (mut fired, mut done, _tasks) = arm(end_on, set_link(true), None);
            let console_end = match tokio::time::timeout(timeout, fired.wait_for(|f| f.is_some())).await {
                Ok(Ok(end)) => end.filter(|e| *e != usize::MAX),
                _ => {
                    let OutageEnd::Console(re) = &end else { unreachable!("a time trigger fires") };
                    let waited = humantime::format_duration(timeout);
                    return Err(self
                        .failure(format!("`{}` did not appear within {waited} of the link going down", re.as_str())));
                }
            };
            completed(&mut done, "set_link").await?;
            let t_up = machine.now();
            (exec.await, console_end, t_down, t_up)
        };
        let mark = self.timeline.entries.len();
        if console_end.is_some() {
            self.drain(console_end);
        }
        let offset = self.machine_offset();
        self.timeline.push(offset + t_down, Origin::Step, Event::Link { up: false });
        self.timeline.push(offset + t_up, Origin::Step, Event::Link { up: true });
        // Put the link changes among the console lines by time (stable: a
        // marker seen before the link came up stays first).
        self.timeline.entries[mark..].sort_by(|a, b| a.t.total_cmp(&b.t));
        out.map_err(|e| self.failure(e.to_string()))
    }

    pub(crate) fn overlay(&self) -> Result<PathBuf> {
        if let Some(ext) = &self.board.external {
            // Never the flashed image: the board's own disk, as the host
            // sees it (refused when checked if the profile names none).
            return ext.host_disk.clone().ok_or_else(|| {
                self.failure(format!("board {} is external and its profile names no host_disk", self.board.name))
            });
        }
        self.machine
            .as_ref()
            .map(|m| m.overlay.clone())
            .ok_or_else(|| self.failure("no disk yet (the machine was never powered on)".into()))
    }

    /// After QEMU exited on its own: wait until the QMP reader has its
    /// SHUTDOWN event or has read the socket to its end (the pidfd can fire
    /// first), so the timeline never depends on that race. At most 5 s.
    pub(crate) async fn qmp_read_to_end(&mut self) {
        let from = self.qmp_cursor;
        if let Some(m) = self.machine.as_ref() {
            if let Some(qmp) = &m.qmp {
                let _ = qmp.wait_event(&["SHUTDOWN"], from, Duration::from_secs(5)).await;
            }
        }
    }

    /// This board's node UUID (its SMBIOS UUID).
    pub(crate) fn node_uuid(&self) -> Result<String> {
        match &self.board.smbios {
            Some(s) => Ok(s.uuid.clone()),
            None => Err(self.failure(format!("board {} has no [smbios] uuid (the node's identity)", self.board.name))),
        }
    }

    pub(crate) fn lab(&self) -> Result<&crate::provision::Lab> {
        self.lab.as_ref().ok_or_else(|| self.failure("the provisioning service is not running".into()))
    }

    /// Blocking work on the lab network (dnsmasq stop/start) on the
    /// blocking pool, so the machines' console readers on this thread go
    /// on; the network moves there and back.
    pub(crate) async fn with_net(
        &mut self,
        f: impl FnOnce(&mut crate::labnet::LabNet) -> std::result::Result<(), crate::labnet::LabNetError> + Send + 'static,
        doing: &str,
    ) -> Result<()> {
        let Some(mut net) = self.net.take() else {
            return Err(self.failure(format!("{doing}: there is no lab network")));
        };
        let (net, res) = tokio::task::spawn_blocking(move || {
            let res = f(&mut net);
            (net, res)
        })
        .await
        .map_err(|e| Error::infra(format!("{doing}: {e}")))?;
        self.net = Some(net);
        res.map_err(|e| Error::infra(format!("{doing}: {e}")))
    }

    /// The provisioning service (every machine's handle on it).
    pub(crate) fn service(&self) -> Result<devlab_provision::Service> {
        self.service.clone().ok_or_else(|| self.failure("the provisioning service is not running".into()))
    }

    /// The name the service knows profile `name` by (`<name>-<arch>` on a
    /// lab network, whose service serves several arches).
    pub(crate) fn profile_name(&self, name: &str) -> String {
        crate::provision::profile_name(name, self.board.arch, self.per_arch_profiles)
    }

    /// Start the provisioning lab if the scenario has one and it is not up
    /// (on a lab network it is started with the network, for all).
    pub(crate) async fn ensure_lab(&mut self) -> Result<()> {
        if let (None, Some(spec)) = (&self.service, &self.scenario.provision) {
            let lab = crate::provision::Lab::start(&self.run_dir, self.scenario, spec, self.board.arch).await?;
            self.service = Some(lab.service.clone());
            self.lab = Some(lab);
        }
        // A device's own netboot kernel, on a PXE board of the user network.
        let netboot = self.scenario.device.as_ref().filter(|d| d.netboot.is_some());
        if let (None, None, Some(pxe), Some(device)) = (&self.lab, &self.netboot_tftp, self.board.pxe, netboot) {
            self.start_server().await?;
            let server = self.server.clone().expect("started");
            let (run_dir, arch) = (self.run_dir.clone(), self.board.arch);
            let device = device.clone();
            let tftp = blocking(move || crate::netboot::prepare(&run_dir, &device, arch, pxe, &server)).await?;
            self.netboot_tftp = Some(tftp);
        }
        Ok(())
    }

    /// The disk the first power-on starts from: the image's, or a blank one
    /// (sparse, in the run directory) at least twice the image's size.
    fn base_disk(&self) -> Result<PathBuf> {
        if self.disk != crate::scenario::DiskStart::Blank {
            return Ok(self.image.disk.clone());
        }
        let path = self.run_dir.join("blank.raw");
        if !path.exists() {
            let size = (self.image.manifest.disk_size * 2).max(1 << 30);
            let f = std::fs::File::create(&path).map_err(|e| Error::infra(format!("{}: {e}", path.display())))?;
            f.set_len(size).map_err(|e| Error::infra(format!("{}: {e}", path.display())))?;
        }
        Ok(path)
    }

    pub(crate) async fn power_on(&mut self) -> Result<()> {
        self.start_machine(None).await?;
        let t = self.machine_offset();
        self.timeline.push(t, Origin::Step, Event::PowerOn);
        Ok(())
    }

    /// Start QEMU: on a new overlay, on the previous machine's (power on
    /// again), or on `restore`'s overlay with `-loadvm` (a checkpoint).
    async fn start_machine(&mut self, restore: Option<PathBuf>) -> Result<()> {
        if self.machine_running() {
            return Err(self.failure("the machine is already on".into()));
        }
        let loadvm = restore.as_ref().map(|_| crate::checkpoint::TAG);
        self.ensure_lab().await?;
        let base_disk = self.base_disk()?;
        // On the user network QEMU's own TFTP serves the lab's files; on a
        // lab network, dnsmasq does.
        let tftp = match &self.lab {
            Some(l) => Some(l.tftp.clone()),
            None => self.netboot_tftp.clone(),
        };
        let tftp = tftp.filter(|_| self.board.pxe.is_some() && self.netns.is_none());
        let spec = MachineSpec {
            board: self.board,
            accel: self.accel.accel,
            base_disk: &base_disk,
            run_dir: &self.run_dir,
            epoch: self.t_first,
            disk_errors: &self.disk_errors,
            loadvm,
            tftp: tftp.as_deref(),
            detect_zeroes: self.disk == crate::scenario::DiskStart::Blank,
            lab_net: self.netns.as_ref().map(|(h, tap)| (h, tap.as_str())),
            disk_armable: self.disk_armable,
            link: self.link.as_ref(),
        };
        let machine = match (restore, self.machine.take()) {
            // An external board's disk is its own: flashed before the run's
            // first power-on, then left as the board wrote it.
            _ if self.board.is_external() => {
                let flash = !self.flashed;
                self.flashed = true;
                Machine::start_external(spec, &base_disk, flash).await?
            }
            (Some(overlay), _) => Machine::start_on(spec, overlay).await?,
            // Powering on again boots the same disk.
            (None, Some(old)) => {
                let overlay = old.overlay.clone();
                drop(old);
                Machine::start_on(spec, overlay).await?
            }
            (None, None) => Machine::start(spec).await?,
        };
        if self.t_first.is_none() {
            self.t_first = Some(machine.t0);
        }
        // An external board's console starts with what it buffered before
        // this power-on: markers are read from after it.
        self.marker_offset = machine.console.origin();
        self.machine = Some(machine);
        self.marker_taken_line = None;
        self.qmp_cursor = 0;
        let bad: Vec<(String, BytesRegex)> = self
            .scenario
            .header
            .bad_patterns
            .iter()
            .map(|p| (self.pattern_source(p), self.console_pattern(p)))
            .collect();
        let m = self.machine.as_mut().expect("just started");
        for (label, re) in bad {
            m.console.arm_bad(&label, re);
        }
        for refusal in self.refusals.iter_mut() {
            m.console.arm_bad(&refusal.label, refusal.pattern.clone());
            refusal.seen.push(m.console.arm_trigger(refusal.pattern.clone(), Box::new(|| ())));
        }
        // Faults armed before this power-on, or armed on an earlier console
        // that went before they fired, watch this console from the start.
        // A request or time trigger watched the machine that went: it is
        // disarmed (its `wait_fault` says so).
        let pending = |a: &&mut Armed| a.fired.as_ref().is_none_or(|rx| rx.borrow().is_none());
        for armed in self.armed.iter_mut().filter(pending) {
            match armed.pattern.clone() {
                Some(p) => armed.install(m, FreezeOn::Console(p), None),
                None => armed.disarm(),
            }
        }
        Ok(())
    }

    /// The checkpoint key for the steps up to and including step `i`.
    fn checkpoint_key(&self, i: usize) -> Result<String> {
        let binary = which::which(self.board.arch.qemu_binary())
            .map_err(|_| Error::infra(format!("{} not found (cargo xtask setup)", self.board.arch.qemu_binary())))?;
        let steps: Vec<String> = self.scenario.steps[..=i].iter().map(|p| p.canonical.clone()).collect();
        let version = crate::checkpoint::qemu_version(&binary);
        let identity = match self.name.as_str() {
            "" => String::new(),
            _ => format!(
                "{} {:?} {:?}{}",
                self.board.nic.mac,
                self.board.smbios,
                self.disk_errors,
                self.link.as_ref().map(|l| format!(" link {}", l.mac)).unwrap_or_default()
            ),
        };
        // The file the overlay is backed by (a blank disk is the run's own,
        // so a checkpoint over one is never found again).
        let base = self.base_disk()?;
        let disk = crate::checkpoint::disk_identity(&base)
            .map_err(|e| Error::infra(format!("checkpoint key: {}: {e}", base.display())))?;
        crate::checkpoint::key(&crate::checkpoint::KeyInputs {
            image_key: &self.image.manifest.key,
            disk: &disk,
            board_profile: &self.board.path,
            firmware: &self.board.firmware.path,
            qemu_version: &version,
            accel: self.accel.accel.as_str(),
            steps: &steps,
            identity: &identity,
        })
        .map_err(|e| Error::infra(format!("checkpoint key: {e}")))
    }

    /// Start from a stored checkpoint instead of running the steps before it:
    /// its overlay copied into the run, `-loadvm`, its timeline replayed, SSH
    /// reconnected if it was up.
    async fn restore(&mut self, found: crate::checkpoint::Found) -> Result<()> {
        let overlay = self.run_dir.join("disk.qcow2");
        let (from, to) = (found.disk.clone(), overlay.clone());
        blocking(move || {
            std::fs::copy(&from, &to).map_err(|e| Error::infra(format!("copying checkpoint {}: {e}", from.display())))
        })
        .await?;
        // Times continue from where the saved run stopped.
        let last = found.timeline.last().map_or(0.0, |e| e.t);
        let now = Instant::now();
        self.t_first = Some(now.checked_sub(Duration::from_secs_f64(last)).unwrap_or(now));
        self.start_machine(Some(overlay)).await?;
        self.timeline.entries = found.timeline;
        if found.meta.ssh_up {
            let t0 = self.machine()?.t0;
            let port = self.machine()?.ssh_port().await?;
            let ssh = self.new_ssh(port, t0);
            ssh.wait_up(Duration::from_secs(60)).await.map_err(|e| self.failure(format!("after restore: {e}")))?;
            self.ssh = Some(ssh);
        }
        let _ = std::fs::write(
            self.run_dir.join("checkpoint.txt"),
            format!("restored {} {}\n", found.meta.name, found.meta.key),
        );
        Ok(())
    }

    /// The `checkpoint` step on a cold run: save the machine and go on.
    pub(crate) async fn save_checkpoint(&mut self, name: &str, index: usize) -> Result<()> {
        self.drain(None);
        self.record(Event::Checkpoint { name: name.to_string() });
        let key = self.checkpoint_key(index)?;
        let ssh_up = self.ssh.is_some();
        let overlay = self.overlay()?;
        let m = self.machine()?;
        let qmp_err = |e: crate::qmp::QmpError| Error::infra(format!("checkpoint {name}: {e}"));
        let qmp = m.qmp()?.clone();
        qmp.execute_timeout("stop", None, Duration::from_secs(10)).await.map_err(qmp_err)?;
        let saved = qmp.hmp(&format!("savevm {}", crate::checkpoint::TAG)).await.map_err(qmp_err)?;
        if !saved.trim().is_empty() {
            return Err(Error::infra(format!("checkpoint {name}: savevm said: {}", saved.trim())));
        }
        let meta = crate::checkpoint::Meta { name: name.to_string(), key: key.clone(), ssh_up, step: index };
        let entries = self.timeline.entries.clone();
        let stored = tokio::task::spawn_blocking(move || {
            crate::checkpoint::store(&crate::checkpoint::root(), &overlay, &entries, &meta)
        })
        .await
        .map_err(|e| Error::infra(e.to_string()))?
        .map_err(|e| Error::infra(format!("storing checkpoint {name}: {e}")))?;
        let from = self.qmp_cursor;
        qmp.execute_timeout("cont", None, Duration::from_secs(10)).await.map_err(qmp_err)?;
        // The STOP/RESUME pair is the harness's own doing, and a restored
        // run never sees it: keep it out of the timeline.
        let (resumed, _) = qmp.wait_event(&["RESUME"], from, Duration::from_secs(10)).await.map_err(qmp_err)?;
        self.qmp_cursor = resumed + 1;
        let _ = std::fs::write(
            self.run_dir.join("checkpoint.txt"),
            format!("saved {name} {key} in {}\n", stored.display()),
        );
        Ok(())
    }

    /// Leave the failed machine running for a person to inspect, registered
    /// for `devlab ps/attach/ssh/stop`, until Ctrl-C (or `devlab stop`, which
    /// sends SIGINT); then the run ends with its failure as usual (teardown,
    /// reports), and the registry entry goes.
    async fn keep(&mut self) {
        let Some(m) = self.machine.as_ref() else { return };
        let attach = m.socket("attach.sock");
        let server = match m.console.serve_attach(&attach) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot serve the console for attach: {e}");
                return;
            }
        };
        let kept = crate::kept::Kept {
            run_id: self.lab_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            scenario: self.scenario.name().to_string(),
            board: self.board.name.clone(),
            run_dir: self.run_dir.clone(),
            keeper_pid: std::process::id(),
            qemu_pid: m.pid(),
            attach_sock: attach,
            monitor_sock: m.socket("monitor.sock"),
            ssh_port: self.ssh.as_ref().map(|s| s.port()),
            ssh_key: self.image.ssh_key.clone(),
            failed_step: self.current.clone(),
        };
        /// Counts this run in `kept::HOLDING` while it holds the machine.
        struct Holding;
        impl Drop for Holding {
            fn drop(&mut self) {
                crate::kept::HOLDING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _relay = AbortOnDrop(server);
        // Listen (and count as holding) before anyone can learn how to stop
        // it: a `devlab stop` right away must reach this listener.
        let mut sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot listen for Ctrl-C: {e}");
                return;
            }
        };
        crate::kept::HOLDING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _holding = Holding;
        let _registration = match crate::kept::register(&crate::kept::registry_dir(), &kept) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("cannot register the kept machine in {}: {e}", crate::kept::registry_dir().display());
                None
            }
        };
        self.on_step.tell("kept: waiting for Ctrl-C or devlab stop");
        eprintln!("\n{}", crate::kept::how_to_reach(&kept));
        sigint.recv().await;
        // Counted before `_holding` drops, so the run loop sees one or the other.
        crate::kept::RELEASED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        eprintln!("releasing the kept machine {}", kept.run_id);
    }

    async fn teardown(&mut self) {
        if let Some(m) = self.machine.as_mut() {
            m.shutdown().await;
        }
        if let Some(lab) = self.lab.as_mut() {
            lab.stop().await;
        }
        if let Some(net) = self.net.as_mut() {
            if let Err(e) = net.teardown() {
                eprintln!("devlab: lab network teardown: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_host_disk_is_told_from_an_injected_enospc() {
        let ev = |action: &str, nospace: bool| crate::qmp::QmpEvent {
            name: "BLOCK_IO_ERROR".into(),
            data: json!({"device": "", "node-name": "disk0", "operation": "write", "action": action, "nospace": nospace}),
            at: 1.0,
        };
        assert_eq!(host_disk_full(&[ev("report", true)]), None, "disk_errors' ENOSPC is reported, not stopped");
        assert_eq!(host_disk_full(&[ev("stop", false)]), None);
        assert_eq!(host_disk_full(&[ev("report", true), ev("stop", true)]).as_deref(), Some("disk0"));
    }
}
