//! The `devlab` command: `run` scenarios (or a named `suite`) on boards,
//! in parallel, sharded, repeated (`--repeat N`), with retries that mark
//! flakes, writing JUnit/JSON/Markdown reports; `check` scenario files
//! without booting; list `boards`; `ps`/`attach`/`ssh`/`stop` machines kept
//! after a failure. A selection of nothing is bad input, never a pass.
//! Exit codes: 0 passed, 1 a scenario failed, 2 bad input, 69
//! infrastructure failure, 130 interrupted.

use clap::{Parser, Subcommand};
use harness::board::{self, Board};
use harness::error::{Error, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_PASSED};
use harness::plan::{self, Job, Shard};
use harness::report::{self, Record, ShardTimes, Status};
use harness::runner::{self, RunOptions, SnapshotMode};
use harness::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(name = "devlab", about = "A virtual device lab: real firmware, real boots, forced failures.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenario files (or every scenario in a folder) on their boards
    /// (`--board` picks among them; an external board, named by its
    /// profile's path, runs them all).
    Run {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        opts: Common,
    },
    /// Run a named suite (`scenarios/suites/<name>.toml`: smoke, release,
    /// board-validation). Here `--board` replaces the scenarios' boards, so
    /// a new board can run the standard suite. `devlab suite device --device
    /// NAME` runs the standard suite for a device profile (flows generated
    /// from it; the ones it cannot run are reported skipped, with why).
    Suite {
        name: String,
        /// For `suite device`: the profile (`devices/NAME.toml`, or a path).
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        opts: Common,
    },
    /// Validate scenario files without booting anything.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Check against this board instead of the scenarios' own (a name
        /// or a profile's path; repeatable): an external board refuses the
        /// steps that need QEMU.
        #[arg(long = "board")]
        boards: Vec<String>,
    },
    /// List board profiles and whether their firmware is present.
    Boards,
    /// Add or validate a board profile (for hardware teams).
    Board {
        #[command(subcommand)]
        cmd: BoardCmd,
    },
    /// Work with run reports.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
    },
    /// List machines kept running after a failure (--keep-on-failure).
    Ps,
    /// Interactive serial console on a kept machine (Ctrl-] detaches).
    Attach {
        /// Its run id (or a unique prefix), as `devlab ps` shows it.
        id: String,
    },
    /// A shell (or one command) on a kept machine over SSH.
    Ssh {
        id: String,
        /// Run this instead of a login shell.
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// End a kept machine (its `devlab run` tears it down and exits).
    Stop { id: String },
    /// Serve the FleetLock reboot-lock protocol (`/v1/pre-reboot`,
    /// `/v1/steady-state`) backed by a real etcd it starts, until Ctrl-C:
    /// point your own devices' Zincati (or any FleetLock client) at it.
    Fleetlock {
        /// Reboot slots per group.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Address to serve on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Where etcd's and the service's logs go.
        #[arg(long, default_value = ".")]
        log_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BoardCmd {
    /// Write `harness/boards/<name>.toml` from an existing profile.
    New {
        name: String,
        /// The profile to start from.
        #[arg(long, default_value = "qemu-aarch64")]
        from: String,
    },
    /// Check a profile against this machine's QEMU (firmware, machine, CPU, devices).
    Check { name: String },
    /// Validate a board for hand-in: for a board on a bench, a preflight
    /// (console reachable, a power cycle seen on it, U-Boot's prompt, its
    /// identity read from its console), then the board-validation suite and
    /// N power cycles, in one report (HTML, JUnit, JSON, Markdown) headed
    /// with the board's identity.
    Validate {
        /// A profile's name, or its path (a board on a bench).
        name: String,
        /// Power cycles in a row (`scenarios/power-cycle.toml`, repeated):
        /// a flaky board shows as a failure rate and a timing spread.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=plan::MAX_REPEAT as i64))]
        cycles: u32,
        /// Only the preflight (is the board wired right?), with its report.
        #[arg(long)]
        preflight_only: bool,
        #[command(flatten)]
        opts: Common,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Merge the reports of several shards (folders with summary.json) into one.
    Merge {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct Common {
    /// Only these boards (for `run`: of those each scenario names).
    #[arg(long = "board")]
    boards: Vec<String>,
    /// Machines at once (default: one per core, bounded by memory).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only the K-th of N disjoint parts (for N CI machines).
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// With --shard: balance the shards by the run times in an earlier
    /// summary.json (or a report folder holding one), longest first onto the
    /// least-loaded shard; runs it has no time for are dealt as without it.
    #[arg(long, value_name = "FILE", requires = "shard")]
    durations: Option<PathBuf>,
    /// Retry a failed run up to N times; a later pass is reported as flaky.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Run every selected scenario × board N times, each its own run (retries
    /// apply to each); the reports add failure rates and min/median/max times.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=plan::MAX_REPEAT as i64))]
    repeat: u32,
    /// Print the runs that would be made, and make none.
    #[arg(long)]
    list: bool,
    /// Build the guest images the selected runs need (a run builds the
    /// missing ones anyway), and run nothing.
    #[arg(long, conflicts_with = "list")]
    build_only: bool,
    /// Never build images: a missing or stale one is bad input at the field
    /// that names it (for machines that must use prebuilt images).
    #[arg(long, conflicts_with = "build_only")]
    no_build: bool,
    /// Where junit.xml, summary.json and summary.md go.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// On failure, keep the machine running and print how to reach it
    /// (`devlab attach/ssh/stop <run-id>`); implies --jobs 1.
    #[arg(long = "keep-on-failure", visible_alias = "keep")]
    keep: bool,
    /// Compare each timeline with its snapshot; a change fails the run
    /// (the default, stated).
    #[arg(long, conflicts_with_all = ["update_snapshots", "no_snapshots"])]
    check: bool,
    /// Write the timeline snapshots instead of checking them.
    #[arg(long, visible_alias = "update")]
    update_snapshots: bool,
    /// Keep the disk overlay of passed runs too (failed runs always keep it).
    #[arg(long)]
    keep_disks: bool,
    /// How long a run waits in the queue of an external board another run
    /// holds (`devlab boards` shows who); then it fails (exit 69).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    board_wait: std::time::Duration,
    /// Neither save nor restore checkpoints (every run boots cold).
    #[arg(long)]
    no_checkpoints: bool,
    /// Do not compare timelines with their snapshots.
    #[arg(long, conflicts_with = "update_snapshots")]
    no_snapshots: bool,
}

fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| harness::error::InputError::new(p, format!("cannot list: {e}")))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| harness::scenario::is_scenario_file(f) && !harness::device::is_profile_file(f))
                .collect();
            if found.is_empty() {
                return Err(harness::error::InputError::new(p, "no scenario files (*.toml) in this folder").into());
            }
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(harness::error::InputError::new(p, "no such scenario file or folder").into());
        }
    }
    Ok(files)
}

/// Load scenarios and their boards. `only` filters the boards each scenario
/// names; `replace` runs every scenario on exactly these boards instead.
/// A selection with no run in it is bad input naming `asked` (the paths,
/// or the suite file): a run of nothing must not pass.
fn load_all(
    paths: &[PathBuf],
    only: &[String],
    replace: bool,
    asked: &Path,
) -> Result<Vec<(Scenario, Vec<Board>)>, Error> {
    let chosen: Vec<Board> = only.iter().map(|n| board::find(n)).collect::<Result<_, _>>()?;
    // External boards run any scenario they are given (the files name QEMU
    // boards): `--board` then replaces, as a suite's does.
    let replace = replace || (!chosen.is_empty() && chosen.iter().all(Board::is_external));
    // `--board` may be a profile's path: compare by the profiles' names.
    let only: Vec<String> = chosen.iter().map(|b| b.name.clone()).collect();
    let only = &only[..];
    let mut out = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for f in scenario_files(paths)? {
        for s in Scenario::load_variants(&f)? {
            let mut boards = s.resolve_boards()?;
            if s.own_boards() {
                // Machines that bring their own boards run once, when one of
                // them is chosen (`--board` never replaces their boards).
                let own: Vec<String> =
                    s.machines.iter().filter_map(|m| m.board.as_ref().map(|b| b.get_ref().clone())).collect();
                named.extend(own.iter().cloned());
                if !only.is_empty() && !own.iter().any(|b| only.contains(b)) {
                    boards.clear();
                }
                out.push((s, boards));
                continue;
            }
            named.extend(boards.iter().map(|b| b.name.clone()));
            if replace && !chosen.is_empty() {
                boards = chosen.clone();
            } else if !only.is_empty() {
                boards.retain(|b| only.contains(&b.name));
            }
            // A board from `--board` meets the steps here, before anything
            // boots (an external board refuses what needs QEMU).
            for b in &boards {
                s.machines_for(b)?;
            }
            out.push((s, boards));
        }
    }
    if out.iter().all(|(_, boards)| boards.is_empty()) {
        let named: Vec<String> = named.into_iter().collect();
        let msg = if out.is_empty() {
            "no scenario selected: nothing to run".to_string()
        } else {
            format!(
                "no scenario here runs on board {} (its {} scenario(s) name: {}): nothing to run",
                only.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", "),
                out.len(),
                named.join(", ")
            )
        };
        return Err(harness::error::InputError::new(asked, msg).into());
    }
    Ok(out)
}

/// How the paths of a `devlab run` are named in a message.
fn asked_paths(paths: &[PathBuf]) -> PathBuf {
    PathBuf::from(paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "))
}

/// `devlab fleetlock`: etcd and the lock service until Ctrl-C or SIGTERM.
fn fleetlock(slots: u32, listen: &str, log_dir: &Path) -> i32 {
    if slots == 0 {
        eprintln!("error: --slots: a lock with 0 slots lets nobody reboot");
        return EXIT_BAD_INPUT;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let etcd = match harness::etcd::Etcd::start(&log_dir.join("etcd.log")).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INFRA;
            }
        };
        println!("etcd: pid {}, data {}", etcd.pid().unwrap_or_default(), etcd.data_dir().display());
        let lock =
            match harness::fleetlock::FleetLock::start(listen, slots, etcd.client(), &log_dir.join("fleetlock.log"))
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: serving on {listen}: {e}");
                    return EXIT_INFRA;
                }
            };
        println!(
            "fleetlock: serving {} ({slots} slot(s) per group), decisions in {}",
            lock.url(),
            log_dir.join("fleetlock.log").display()
        );
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(lock);
        drop(etcd);
        EXIT_PASSED
    })
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Boards => boards(),
        Cmd::Board { cmd: BoardCmd::New { name, from } } => match board::find(&from) {
            Ok(base) => match harness::board_check::new_profile(&board::boards_dir(), &name, &base) {
                Ok(path) => {
                    println!("wrote {}: edit it, then run `devlab board check {name}`", path.display());
                    EXIT_PASSED
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_BAD_INPUT
                }
            },
            Err(e) => report_error(&e),
        },
        Cmd::Board { cmd: BoardCmd::Validate { name, cycles, preflight_only, opts } } => {
            board_validate(&name, if preflight_only { 0 } else { cycles }, &opts)
        }
        Cmd::Board { cmd: BoardCmd::Check { name } } => match board::find(&name) {
            Ok(b) => {
                let checks = harness::board_check::check(&b);
                for c in &checks {
                    println!("{} {:<40} {}", if c.ok { "ok  " } else { "FAIL" }, c.what, c.detail);
                }
                if checks.iter().all(|c| c.ok) {
                    println!("board {name} looks usable: run `devlab suite board-validation --board {name}`");
                    EXIT_PASSED
                } else {
                    EXIT_BAD_INPUT
                }
            }
            Err(e) => report_error(&e),
        },
        Cmd::Report { cmd: ReportCmd::Merge { dirs, out } } => match report::merge(&dirs, &out) {
            Ok(merged) => {
                println!("merged {} runs from {} reports into {}", merged.runs, dirs.len(), out.display());
                for s in &merged.shards {
                    let predicted = s.predicted_s.map_or(String::new(), |p| format!(", predicted {p:.0} s"));
                    println!("  shard {}/{}: {} runs in {:.0} s{predicted}", s.k, s.n, s.runs, s.actual_s);
                }
                EXIT_PASSED
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_BAD_INPUT
            }
        },
        Cmd::Check { paths, boards } => check(&paths, &boards),
        Cmd::Ps => {
            let all = harness::kept::list(&harness::kept::registry_dir());
            if all.is_empty() {
                println!("no kept machines (devlab run --keep-on-failure keeps a failed one)");
            } else {
                println!("{:<56} {:>7} {:>7} {:>6}  FAILED AT", "RUN ID", "KEEPER", "QEMU", "SSH");
                for k in &all {
                    let ssh = k.ssh_port.map_or("-".to_string(), |p| p.to_string());
                    println!("{:<56} {:>7} {:>7} {:>6}  {}", k.run_id, k.keeper_pid, k.qemu_pid, ssh, k.failed_step);
                }
            }
            EXIT_PASSED
        }
        Cmd::Attach { id } => kept_do(&id, harness::kept::attach),
        Cmd::Ssh { id, command } => kept_do(&id, |k| {
            let mut argv = harness::kept::ssh_command(k)?;
            argv.extend(command.iter().cloned());
            let bin = which::which(&argv[0]).map_err(|_| "ssh not found: install Debian package openssh-client")?;
            use std::os::unix::process::CommandExt;
            Err(format!("cannot run ssh: {}", std::process::Command::new(bin).args(&argv[1..]).exec()))
        }),
        Cmd::Stop { id } => kept_do(&id, |k| {
            harness::kept::stop(k, std::time::Duration::from_secs(30))?;
            println!("stopped {}", k.run_id);
            Ok(())
        }),
        Cmd::Fleetlock { slots, listen, log_dir } => fleetlock(slots, &listen, &log_dir),
        Cmd::Run { paths, opts } => {
            run_jobs(load_all(&paths, &opts.boards, false, &asked_paths(&paths)), &opts, Vec::new())
        }
        Cmd::Suite { name, device: Some(device), opts } if name == "device" => device_suite(&device, &opts),
        Cmd::Suite { name, device: None, .. } if name == "device" => {
            eprintln!("error: `devlab suite device` needs --device NAME (devices/NAME.toml) or --device PATH");
            EXIT_BAD_INPUT
        }
        Cmd::Suite { device: Some(_), .. } => {
            eprintln!("error: --device is for `devlab suite device`");
            EXIT_BAD_INPUT
        }
        Cmd::Suite { name, device: None, opts } => {
            let loaded = plan::load_suite(&name).and_then(|(files, suite_boards)| {
                let boards = if opts.boards.is_empty() { suite_boards } else { opts.boards.clone() };
                let asked = plan::suites_dir().join(format!("{name}.toml"));
                load_all(&files, &boards, !opts.boards.is_empty(), &asked)
            });
            run_jobs(loaded, &opts, Vec::new())
        }
    };
    std::process::exit(code);
}

/// `devlab check`: every scenario file (each matrix variant, on each of
/// its boards) and every fleet file, parsed and checked; nothing boots.
fn check(paths: &[PathBuf], boards: &[String]) -> i32 {
    // A device profile named on its own: checked with its image for each arch.
    let (profiles, paths): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.iter().cloned().partition(|p| p.is_file() && harness::device::is_profile_file(p));
    for p in &profiles {
        match harness::device::Device::load(p).and_then(|d| check_device(&d)) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => return report_error(&e),
        }
    }
    if paths.is_empty() {
        return EXIT_PASSED;
    }
    let paths = &paths[..];
    let files = match scenario_files(paths) {
        Ok(f) => f,
        Err(e) => return report_error(&e),
    };
    let scenarios = files;
    match load_all(&scenarios, boards, !boards.is_empty(), &asked_paths(paths)) {
        Ok(all) => {
            for (s, boards) in &all {
                let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
                if let Err(e) = s.recipe_path(&harness::rundir::workspace_root()) {
                    return report_error(&e);
                }
                let (file, name, n) = (s.path.display(), s.name(), s.steps.len());
                let machines: Vec<String> = s
                    .machines
                    .iter()
                    .map(|m| match &m.board {
                        Some(b) => format!("{} on {}", m.name.get_ref(), b.get_ref()),
                        None => m.name.get_ref().clone(),
                    })
                    .collect();
                if s.own_boards() {
                    println!("ok   {file} ({name}: {n} steps; machines: {})", machines.join(", "));
                } else if machines.is_empty() {
                    println!("ok   {file} ({name}: {n} steps; boards: {})", names.join(", "));
                } else {
                    println!(
                        "ok   {file} ({name}: {n} steps; boards: {}; machines: {})",
                        names.join(", "),
                        machines.join(", ")
                    );
                }
            }
            EXIT_PASSED
        }
        Err(e) => report_error(&e),
    }
}

/// A device profile's files for each of its arches, and its image read
/// (unpacked once if compressed): one line per arch.
fn check_device(d: &harness::device::Device) -> Result<Vec<String>, Error> {
    let mut lines = Vec::new();
    for &arch in &d.arches {
        let (_, p) = harness::device_image::built_image(d, arch)?;
        let labels: Vec<&str> = p.partitions.iter().map(|p| p.label.as_str()).collect();
        lines.push(format!(
            "ok   {} (device {} on {arch}: {} {} image, {} partitions: {}; sha256 {})",
            d.path.display(),
            d.name,
            p.format.name(),
            p.table,
            labels.len(),
            labels.join(", "),
            &p.sha256[..12]
        ));
    }
    Ok(lines)
}

/// `devlab suite device --device NAME`: the flows [`harness::device_suite`]
/// generates from the profile, run like any suite; the flows it skips are
/// printed and reported (not run, with the reason). The profile's image,
/// firmware and artifacts must be the same files, unchanged, afterwards.
fn device_suite(name: &str, opts: &Common) -> i32 {
    let path = harness::device::profile_path(name, Path::new(""));
    if !path.is_file() {
        eprintln!("error: no device profile {} (--device NAME is devices/NAME.toml; or give a path)", path.display());
        return EXIT_BAD_INPUT;
    }
    let device = match harness::device::Device::load(&path) {
        Ok(d) => d,
        Err(e) => return report_error(&e),
    };
    let dir = harness::device_suite::scenarios_dir(&harness::rundir::runs_root(), &device.name);
    let (scenarios, skipped) = match harness::device_suite::generate(&device, &dir) {
        Ok(x) => x,
        Err(e) => return report_error(&e),
    };
    println!(
        "device suite for {} ({}): {} flow(s), scenarios in {}",
        device.name,
        path.display(),
        scenarios.len(),
        dir.display()
    );
    for s in &skipped {
        println!("  skipped {:<24} {}", s.flow, s.why);
    }
    let chosen: Vec<Board> = match opts.boards.iter().map(|n| board::find(n)).collect::<Result<_, _>>() {
        Ok(b) => b,
        Err(e) => return report_error(&e),
    };
    let mut loaded = Vec::new();
    for s in scenarios {
        let boards = match s.resolve_boards() {
            Ok(b) => b,
            Err(e) => return report_error(&e),
        };
        let boards: Vec<Board> =
            boards.into_iter().filter(|b| chosen.is_empty() || chosen.iter().any(|c| c.name == b.name)).collect();
        loaded.push((s, boards));
    }
    if loaded.iter().all(|(_, b)| b.is_empty()) {
        eprintln!(
            "error: device {} runs on none of the boards asked for (its arches: {:?})",
            device.name, device.arches
        );
        return EXIT_BAD_INPUT;
    }
    let files = harness::device_image::identities(&device);
    let records = skipped
        .iter()
        .map(|s| {
            let mut r = Record::not_run(&format!("{}-suite-{}", device.name, s.flow), s.flow, "-", None);
            r.message = Some(format!("skipped: {}", s.why));
            r
        })
        .collect();
    let code = run_jobs(Ok(loaded), opts, if opts.list { Vec::new() } else { records });
    let after = harness::device_image::identities(&device);
    if after == files {
        return code;
    }
    for ((p, a), (_, b)) in files.iter().zip(&after).filter(|((_, a), (_, b))| a != b) {
        eprintln!("error: {} changed during the suite ({a} → {b}): devlab never writes a device's files", p.display());
    }
    worse(code, EXIT_FAILED)
}

fn run_jobs(loaded: Result<Vec<(Scenario, Vec<Board>)>, Error>, c: &Common, skipped: Vec<Record>) -> i32 {
    let planned = match loaded {
        Ok(all) => plan::repeat(plan::expand(all), c.repeat),
        Err(e) => return report_error(&e),
    };
    if c.repeat > 1 && c.update_snapshots {
        eprintln!(
            "error: --repeat {} with --update-snapshots would write each snapshot {} times: update once, then repeat",
            c.repeat, c.repeat
        );
        return EXIT_BAD_INPUT;
    }
    run_planned(planned, c, skipped, None)
}

/// Run planned jobs (sharded, built, executed, reported: `heading` at the
/// head of the reports).
fn run_planned(planned: Vec<Job>, c: &Common, skipped: Vec<Record>, heading: Option<report::Heading>) -> i32 {
    let durations = match c.durations.as_deref().map(plan::load_durations).transpose() {
        Ok(d) => d,
        Err(e) => return report_error(&e),
    };
    let selected = planned.len();
    let part = plan::shard(planned, c.shard, durations.as_ref());
    let mut parallel = if c.keep { 1 } else { c.jobs.unwrap_or_else(plan::default_jobs).max(1) };
    // Runs on one external board take turns (its lock): no more at once
    // than there are such boards, when every run is on one.
    let external: std::collections::BTreeSet<&str> =
        part.jobs.iter().filter(|j| j.board.is_external()).map(|j| j.board.name.as_str()).collect();
    if !external.is_empty() && part.jobs.iter().all(|j| j.board.is_external()) {
        parallel = parallel.min(external.len());
    }
    let times = shard_times(c, &part, parallel);
    let jobs = part.jobs;
    let report_dir =
        c.report_dir.clone().unwrap_or_else(|| harness::rundir::workspace_root().join("target/devlab-report"));
    if jobs.is_empty() {
        // Only a shard can be empty here (load_all refuses an empty
        // selection): the other shards have the runs, which is fine.
        return empty_shard(c, selected, &report_dir, times.as_ref());
    }
    if c.list {
        for j in &jobs {
            // With --durations, each run's known time (`-`: none).
            match &durations {
                Some(d) => println!("{}\t{}", j.id, d.get(&j.id).map_or("-".to_string(), |s| format!("{s:.1}"))),
                None => println!("{}", j.id),
            }
        }
        return EXIT_PASSED;
    }
    // The images these runs boot or serve, built if missing, before any run.
    if !c.no_build {
        match harness::prebuild::build_missing(&jobs) {
            Ok(n) if c.build_only => {
                eprintln!("{n} image(s) ready for {} run(s)", jobs.len());
                return EXIT_PASSED;
            }
            Ok(_) => {}
            Err(e) => return report_error(&e),
        }
    }
    let snapshots = if c.update_snapshots {
        SnapshotMode::Update
    } else if c.no_snapshots {
        SnapshotMode::Skip
    } else {
        SnapshotMode::Check
    };
    let opts = RunOptions {
        keep_on_failure: c.keep,
        snapshots,
        checkpoints: !c.no_checkpoints,
        keep_disks: c.keep_disks,
        board_wait: c.board_wait,
        ..RunOptions::default()
    };
    // A current-thread runtime: QEMU is spawned from the main thread, which
    // PR_SET_PDEATHSIG ties it to.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    // Runs share this thread (a LocalSet), so spawning stays on it.
    let local = tokio::task::LocalSet::new();
    let report = Reporting { dir: report_dir, skipped, shard: times, heading };
    rt.block_on(local.run_until(execute(jobs, opts, parallel, c.retries, report)))
}

/// With `--shard`: the shard's figures for its summary.json, its predicted
/// wall time (with `--durations`) said on stderr, one line that scripts
/// read (`cargo xtask bench shards`): `shard K/N predicted: wall_s=… load_s=…
/// longest_s=… jobs=… runs=… unknown_runs=…`.
fn shard_times(c: &Common, part: &plan::ShardPlan, parallel: usize) -> Option<ShardTimes> {
    let s = c.shard?;
    let predicted_s = part.predicted_wall_s(parallel);
    if let (Some(wall), Some(load)) = (predicted_s, part.load_s) {
        eprintln!(
            "shard {}/{} predicted: wall_s={wall:.1} load_s={load:.1} longest_s={:.1} jobs={parallel} runs={} unknown_runs={}",
            s.k,
            s.n,
            part.longest_s,
            part.jobs.len(),
            part.unknown
        );
    }
    Some(ShardTimes {
        k: s.k,
        n: s.n,
        runs: part.jobs.len(),
        predicted_s,
        unknown_runs: c.durations.as_ref().map(|_| part.unknown),
        actual_s: 0.0,
    })
}

/// Where and what `execute` reports: the report folder, the records of
/// flows a device suite cannot run, and the shard's figures.
struct Reporting {
    heading: Option<report::Heading>,
    dir: PathBuf,
    skipped: Vec<Record>,
    shard: Option<ShardTimes>,
}

/// A shard that got none of the `selected` runs: say so, and (unless
/// `--list`) write empty reports so `devlab report merge` finds every shard's.
fn empty_shard(c: &Common, selected: usize, report_dir: &Path, times: Option<&ShardTimes>) -> i32 {
    let shard = c.shard.map_or("?".to_string(), |s| format!("{}/{}", s.k, s.n));
    eprintln!("shard {shard} is empty: all {selected} selected run(s) went to the other shards");
    if c.list {
        return EXIT_PASSED;
    }
    match report::write_shard(report_dir, &[], 0.0, times) {
        Ok(()) => {
            eprintln!("reports (empty): {}", report_dir.display());
            EXIT_PASSED
        }
        Err(e) => {
            eprintln!("error: cannot write reports to {}: {e}", report_dir.display());
            EXIT_INFRA
        }
    }
}

/// Where run lines go: above a live view of the running machines (one
/// spinner each: run id, elapsed, current step) on a terminal, or plain
/// lines on stderr otherwise (CI logs).
#[derive(Clone)]
struct Out {
    live: Option<indicatif::MultiProgress>,
}

impl Out {
    fn new() -> Out {
        use std::io::IsTerminal;
        let live = std::io::stderr().is_terminal().then(indicatif::MultiProgress::new);
        Out { live }
    }

    fn line(&self, s: &str) {
        match &self.live {
            Some(m) => {
                let _ = m.println(s);
            }
            None => eprintln!("{s}"),
        }
    }

    /// A spinner for a run that has started (none without a terminal).
    fn running(&self, id: &str) -> Option<indicatif::ProgressBar> {
        let m = self.live.as_ref()?;
        let bar = m.add(indicatif::ProgressBar::new_spinner());
        let style = indicatif::ProgressStyle::with_template("{spinner} {prefix:<48} {elapsed:>4} {wide_msg}")
            .expect("static template");
        bar.set_style(style);
        bar.set_prefix(id.to_string());
        bar.set_message("starting");
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        Some(bar)
    }
}

/// Run the jobs; `report.skipped` (flows a device suite cannot run) join
/// the reports as not run.
async fn execute(jobs: Vec<Job>, opts: RunOptions, parallel: usize, retries: u32, report: Reporting) -> i32 {
    let Reporting { dir: report_dir, skipped, shard, heading } = report;
    let report_dir = report_dir.as_path();
    let started = Instant::now();
    let n = jobs.len();
    let out = Out::new();
    out.line(&format!("{n} run(s), {parallel} at a time"));
    let mut records: Vec<Option<Record>> = vec![None; n];
    let mut worst = EXIT_PASSED;
    let sem = Arc::new(Semaphore::new(parallel));
    let mut set = JoinSet::new();
    // The longest (by the scenario's own bound) start first, so with few
    // machines at once the long runs do not straggle at the end; the
    // reports keep the planned order.
    let mut order: Vec<(usize, Job)> = jobs.iter().cloned().enumerate().collect();
    order.sort_by_key(|(i, j)| (std::cmp::Reverse(j.scenario.header.timeout.0), *i));
    for (i, job) in order {
        let sem = sem.clone();
        let mut opts = opts.clone();
        let out = out.clone();
        set.spawn_local(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let bar = out.running(&job.id);
            if let Some(b) = bar.clone() {
                opts.on_step = harness::runner::StepHook::new(move |what| b.set_message(what.to_string()));
            }
            let r = run_with_retries(job, &opts, retries, &out).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            (i, r)
        });
    }
    let mut released_seen = harness::kept::RELEASED.load(std::sync::atomic::Ordering::SeqCst);
    let interrupted = loop {
        tokio::select! {
            next = set.join_next() => match next {
                Some(Ok((i, (record, code)))) => {
                    worst = worse(worst, code);
                    records[i] = Some(record);
                }
                Some(Err(e)) => eprintln!("a run task ended abnormally: {e}"),
                None => break false,
            },
            _ = tokio::signal::ctrl_c() => {
                // A kept machine takes this Ctrl-C (it releases the machine
                // and its run ends as failed); otherwise stop everything.
                use std::sync::atomic::Ordering::SeqCst;
                let released = harness::kept::RELEASED.load(SeqCst);
                let held = harness::kept::HOLDING.load(SeqCst) > 0;
                if !held && released == released_seen {
                    break true;
                }
                released_seen = released;
            }
        }
    };
    if interrupted {
        eprintln!("\ninterrupted: stopping machines (Ctrl-C again to quit at once)");
        tokio::task::spawn_local(async {
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(EXIT_INTERRUPTED);
        });
        // Dropping the runs tears their machines down (teardown ladder).
        set.abort_all();
        while set.join_next().await.is_some() {}
        worst = EXIT_INTERRUPTED;
    }
    let records: Vec<Record> = records
        .into_iter()
        .zip(&jobs)
        .map(|(r, j)| {
            r.unwrap_or_else(|| {
                Record::not_run(&j.id, j.scenario.name(), &j.scenario.run_label(&j.board), j.repetition)
            })
        })
        .chain(skipped)
        .collect();
    let duration = started.elapsed().as_secs_f64();
    let shard = shard.map(|s| ShardTimes { actual_s: duration, ..s });
    if let Some(s) = &shard {
        let predicted = s.predicted_s.map_or(String::new(), |p| format!(" (predicted {p:.0} s)"));
        eprintln!("shard {}/{} took {duration:.0} s{predicted}", s.k, s.n);
    }
    match report::write_headed(report_dir, &records, duration, shard.as_ref(), heading.as_ref()) {
        Ok(()) => eprintln!("reports: {}/{{junit.xml,summary.json,summary.md,report.html}}", report_dir.display()),
        Err(e) => {
            eprintln!("error: cannot write reports to {}: {e}", report_dir.display());
            worst = worse(worst, EXIT_INFRA);
        }
    }
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let failed = count(Status::Failed) + count(Status::Error);
    eprintln!(
        "{} passed, {failed} failed ({} flaky, {} not run) in {duration:.1}s",
        count(Status::Passed) + count(Status::Flaky),
        count(Status::Flaky),
        count(Status::NotRun)
    );
    for g in report::stats(&records).iter().filter(|g| g.runs > 1) {
        eprintln!(
            "  {}@{}: {} of {} runs failed ({}), {} flaky; {} / {} / {} min/median/max",
            g.scenario,
            g.board,
            g.failures,
            g.runs,
            report::percent(g.failure_rate),
            g.flaky,
            report::secs(g.min_s),
            report::secs(g.median_s),
            report::secs(g.max_s)
        );
    }
    worst
}

/// Run one job, retrying a failure up to `retries` times.
async fn run_with_retries(job: Job, opts: &RunOptions, retries: u32, out: &Out) -> (Record, i32) {
    let started = Instant::now();
    let mut attempt = 0;
    let mut steps = Vec::new();
    loop {
        attempt += 1;
        out.line(&format!(
            "RUN  {}{}",
            job.id,
            if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() }
        ));
        let outcome = runner::run(&job.scenario, &job.board, opts).await;
        steps.extend(outcome.steps.iter().map(|s| report::StepRecord::new(attempt, s)));
        let dir = outcome.run_dir.clone();
        let shown = dir.as_deref().map(|d| d.display().to_string()).unwrap_or_default();
        let (status, code, message) = match &outcome.result {
            Ok(()) => {
                let status = if attempt > 1 { Status::Flaky } else { Status::Passed };
                out.line(&format!("{} {} in {:.1}s ({shown})", status.word(), job.id, outcome.duration.as_secs_f64()));
                (status, EXIT_PASSED, None)
            }
            Err(e) => {
                let code = e.exit_code();
                let status = if code == EXIT_FAILED { Status::Failed } else { Status::Error };
                out.line(&format!("{} {} after {:.1}s\n{e}", status.word(), job.id, outcome.duration.as_secs_f64()));
                if !shown.is_empty() && !matches!(e, Error::Failed(_)) {
                    out.line(&format!("run directory: {shown}"));
                }
                (status, code, Some(e.to_string()))
            }
        };
        // Only a product failure is worth a retry: bad input stays bad.
        let retry = status == Status::Failed && attempt <= retries;
        if !retry {
            let record = Record {
                id: job.id.clone(),
                scenario: job.scenario.name().to_string(),
                board: job.scenario.run_label(&job.board),
                status,
                attempts: attempt,
                duration_s: started.elapsed().as_secs_f64(),
                message,
                run_dir: dir,
                repetition: job.repetition,
                steps,
            };
            return (record, code);
        }
    }
}

/// Find a kept machine by id and act on it; a missing one is bad input.
fn kept_do(id: &str, act: impl FnOnce(&harness::kept::Kept) -> Result<(), String>) -> i32 {
    match harness::kept::find(&harness::kept::registry_dir(), id).and_then(|k| act(&k)) {
        Ok(()) => EXIT_PASSED,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
    }
}

fn report_error(e: &Error) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Infrastructure beats input beats failure when several runs end badly.
fn worse(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        EXIT_INFRA => 4,
        EXIT_INTERRUPTED => 3,
        EXIT_BAD_INPUT => 2,
        EXIT_FAILED => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn boards() -> i32 {
    let dir = board::boards_dir();
    let mut code = EXIT_PASSED;
    println!("{:<16} {:<8} {:<6} {:<9} FIRMWARE", "BOARD", "ARCH", "MACHINE", "FIRMWARE?");
    for name in board::list_names(&dir) {
        match Board::load(&dir.join(format!("{name}.toml"))) {
            Ok(b) => {
                let present = if b.firmware_present() { "present" } else { "MISSING" };
                println!(
                    "{:<16} {:<8} {:<6} {:<9} {} (package {})",
                    b.name,
                    b.arch,
                    b.machine,
                    present,
                    b.firmware.path.display(),
                    b.firmware.package
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                code = EXIT_BAD_INPUT;
            }
        }
    }
    board_locks();
    code
}

/// `devlab board validate`: the preflight (an external board), then the
/// board-validation suite and `cycles` power cycles, one report (`cycles`
/// 0: the preflight only).
fn board_validate(name: &str, cycles: u32, c: &Common) -> i32 {
    let board = match board::find(name) {
        Ok(b) => b,
        Err(e) => return report_error(&e),
    };
    if c.update_snapshots && cycles > 1 {
        eprintln!("error: --update-snapshots with {cycles} power cycles would write each snapshot {cycles} times: use --cycles 1");
        return EXIT_BAD_INPUT;
    }
    let root = harness::rundir::workspace_root();
    let suite = plan::load_suite("board-validation").map(|(files, _)| files);
    let cycle = [root.join("scenarios/power-cycle.toml")];
    let asked = plan::suites_dir().join("board-validation.toml");
    let loaded = suite.and_then(|files| {
        let names = [name.to_string()];
        Ok((load_all(&files, &names, true, &asked)?, load_all(&cycle, &names, true, &cycle[0])?))
    });
    let (suite, cycle) = match loaded {
        Ok(l) => l,
        Err(e) => return report_error(&e),
    };
    let mut planned = plan::expand(suite);
    planned.extend(plan::repeat(plan::expand(cycle), cycles.max(1)));
    if cycles == 0 {
        planned.clear();
    }
    let (preflight, heading) = if board.is_external() {
        let dir = match harness::rundir::create(&harness::rundir::runs_root(), "preflight", &board.name) {
            Ok(d) => d,
            Err(e) => return report_error(&e),
        };
        eprintln!("preflight of board {} (console, power cycle, firmware prompt): {}", board.name, dir.display());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        match rt.block_on(harness::board_validate::preflight(&board, &dir, c.board_wait)) {
            Ok(p) => p,
            Err(e) => return report_error(&e),
        }
    } else {
        (Vec::new(), harness::board_validate::profile_heading(&board))
    };
    for r in &preflight {
        let word = if r.status == Status::Passed { "PASS" } else { "FAIL" };
        eprintln!("{word} {} {}", r.id, r.message.as_deref().unwrap_or(""));
    }
    for (what, value) in &heading.facts {
        eprintln!("  {what:<10} {value}");
    }
    let failed = preflight.iter().any(|r| r.status != Status::Passed);
    if failed || planned.is_empty() {
        // The board cannot be driven (the suite would only fail the same
        // way), or only the preflight was asked for.
        let report_dir = c.report_dir.clone().unwrap_or_else(|| root.join("target/devlab-report"));
        let not_run = planned
            .iter()
            .map(|j| Record::not_run(&j.id, j.scenario.name(), &j.scenario.run_label(&j.board), j.repetition));
        let records: Vec<Record> = preflight.into_iter().chain(not_run).collect();
        if let Err(e) = report::write_headed(&report_dir, &records, 0.0, None, Some(&heading)) {
            eprintln!("error: cannot write reports to {}: {e}", report_dir.display());
        }
        if !failed {
            eprintln!("preflight passed; reports: {}", report_dir.display());
            return EXIT_PASSED;
        }
        eprintln!("preflight failed: the suite did not run; reports: {}", report_dir.display());
        return EXIT_INFRA;
    }
    run_planned(planned, c, preflight, Some(heading))
}

/// Who holds and who waits for the external boards (see
/// `harness::board_lock`): the lock folder shared by every run.
fn board_locks() {
    let dir = harness::board_lock::default_dir();
    let held = harness::board_lock::list(&dir);
    println!("\nexternal boards in use ({}): {}", dir.display(), if held.is_empty() { "none" } else { "" });
    for l in held {
        match (&l.holder, &l.stale) {
            (Some(h), None) => println!("  {:<20} held by {}", l.board, h.describe()),
            (Some(h), Some(why)) => {
                println!("  {:<20} STALE: {} ({why}; the next run takes it over)", l.board, h.describe())
            }
            (None, _) => println!("  {:<20} free", l.board),
        }
        for (i, w) in l.waiting.iter().enumerate() {
            let waited = humantime::format_duration(w.age());
            println!("  {:<20}   {}. waiting for {waited}: {} on {} (pid {})", "", i + 1, w.owner, w.host, w.pid);
        }
    }
}
