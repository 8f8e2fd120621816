//! Boots every shipped scenario with real QEMU, U-Boot and Linux and asserts
//! the normalised timeline with insta (`snapshots/<scenario>@<arch>.snap`).
//!
//! One test per real run, `scenario::<variant>@<board>`: each matrix variant
//! of each `*.toml` beside this crate (and in `examples/*/scenarios/`, the
//! example products') on each board it names (or once,
//! `@machines`, when its machines bring their own boards), so the number
//! of passed tests is the number of runs (a libtest-mimic harness; the
//! output, `--list`, filters and `--test-threads` are libtest's). The
//! longest runs are handed out first: with two test threads the stragglers
//! decide the wall time. A scenario on a lab network (`network = "lab"`)
//! needs root (a network namespace, a bridge, taps): without it the run
//! fails saying so, unless DEVLAB_SKIP_LAB_NETWORK=1 says the machine
//! cannot, which marks those tests ignored (never passed).
//!
//! The board-validation suite also runs on the stand-in boards of
//! `examples/standin-board` (external boards: QEMU behind pdudaemon and
//! ser2net, not controlled by devlab), `<scenario>@standin-<arch>`, with
//! snapshots of their own; the stand-in lab is brought up by the first of
//! those runs and down when the binary ends.
//!
//! The runs that ran are also reported as a `devlab run` reports them, in
//! `target/scenario-report/` (junit.xml, summary.json, summary.md,
//! report.html): each run's time and steps, so CI keeps a report and its
//! `summary.json` is a `--durations` file of measured times.

use harness::report::{Record, Status, StepRecord};
use harness::runner::{self, RunOptions, SnapshotMode};
use harness::scenario::Scenario;
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};

fn main() {
    let args = Arguments::from_args();
    let started = std::time::Instant::now();
    let conclusion = libtest_mimic::run(&args, trials());
    let records = std::mem::take(&mut *RECORDS.lock().unwrap_or_else(|e| e.into_inner()));
    if !records.is_empty() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("target/scenario-report");
        match harness::report::write(&dir, &records, started.elapsed().as_secs_f64()) {
            Ok(()) => eprintln!("scenario report: {}", dir.display()),
            Err(e) => eprintln!("scenario report: cannot write {}: {e}", dir.display()),
        }
    }
    if STANDIN_UP.get().is_some() {
        standin_lab("down");
    }
    conclusion.exit();
}

/// Set once the stand-in lab is up (by the first run on a stand-in board).
static STANDIN_UP: std::sync::OnceLock<()> = std::sync::OnceLock::new();

fn standin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("examples/standin-board")
}

fn standin_lab(cmd: &str) {
    let out = std::process::Command::new(standin_dir().join("lab.sh")).arg(cmd).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("stand-in lab.sh {cmd}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("stand-in lab.sh {cmd}: {e}"),
    }
}

/// The board-validation suite on each stand-in board.
fn standin_runs() -> harness::error::Result<Vec<Run>> {
    let (files, _) = harness::plan::load_suite("board-validation")?;
    let mut runs = Vec::new();
    for arch in ["x86_64", "aarch64"] {
        let board = harness::board::Board::load(&standin_dir().join(format!("boards/standin-{arch}.toml")))?;
        for f in &files {
            for scenario in Scenario::load_variants(f)? {
                scenario.machines_for(&board)?;
                runs.push(Run { scenario, board: board.clone() });
            }
        }
    }
    Ok(runs)
}

/// What each run that ran did, for the report.
static RECORDS: std::sync::Mutex<Vec<Record>> = std::sync::Mutex::new(Vec::new());

/// The shipped scenario files (`scenarios/*.toml`, not `Cargo.toml`, and
/// the example products' `examples/*/scenarios/*.toml`), sorted.
fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = toml_files(dir);
    let examples = dir.parent().expect("the workspace").join("examples");
    if let Ok(rd) = std::fs::read_dir(&examples) {
        for e in rd.flatten() {
            let d = e.path().join("scenarios");
            if d.is_dir() {
                files.extend(toml_files(&d));
            }
        }
    }
    files.sort();
    files
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.file_name().is_some_and(|n| n != "Cargo.toml"))
        .collect()
}

/// One run: a scenario variant on one of its boards.
struct Run {
    scenario: Scenario,
    board: harness::board::Board,
}

impl Run {
    fn test_name(&self) -> String {
        format!("scenario::{}@{}", self.scenario.name(), self.scenario.run_label(&self.board))
    }

    /// Longest first (a guess from the file, nothing is timed): network
    /// installs, then OSTree images, then by the scenario's own bound and
    /// its number of steps; the name breaks ties so the order is stable.
    fn order_key(&self) -> (u8, std::cmp::Reverse<std::time::Duration>, std::cmp::Reverse<usize>, String) {
        let h = &self.scenario.header;
        // A team's systemd image boots in 20-35 s under TCG: among the longest.
        let device = self.scenario.device.is_some();
        let class = if device || self.board.name.contains("pxe") || self.scenario.machines.len() > 1 {
            0
        } else if h.image.get_ref().starts_with("ostree") {
            1
        } else if self.board.is_external() {
            // One run at a time per stand-in board: last, and alternating
            // boards (see `trials`), so two test threads rarely queue.
            3
        } else {
            2
        };
        (class, std::cmp::Reverse(h.timeout.0), std::cmp::Reverse(self.scenario.steps.len()), self.test_name())
    }

    fn execute(self) -> Result<(), Failed> {
        if self.board.is_external() {
            STANDIN_UP.get_or_init(|| standin_lab("up"));
        }
        // QEMU is spawned from this thread (PR_SET_PDEATHSIG follows it).
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let opts = RunOptions { snapshots: SnapshotMode::Skip, ..RunOptions::default() };
        let out = rt.block_on(runner::run(&self.scenario, &self.board, &opts));
        let record = |status, message: Option<String>| {
            let id = format!("{}@{}", self.scenario.name(), self.scenario.run_label(&self.board));
            let rec = Record {
                id,
                scenario: self.scenario.name().to_string(),
                board: self.scenario.run_label(&self.board),
                status,
                attempts: 1,
                duration_s: out.duration.as_secs_f64(),
                message,
                run_dir: out.run_dir.clone(),
                repetition: None,
                steps: out.steps.iter().map(|s| StepRecord::new(1, s)).collect(),
            };
            RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        };
        if let Err(e) = &out.result {
            record(Status::Failed, Some(e.to_string()));
            panic!("{} on {} failed:\n{e}", out.scenario, out.board);
        }
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            harness::snapshot::assert(&self.scenario.snapshot_dir(), &out.snapshot_name(), &out.normalised)
        }));
        match checked {
            Ok(()) => record(Status::Passed, None),
            Err(panic) => {
                record(Status::Failed, Some(format!("the timeline differs from snapshot {}", out.snapshot_name())));
                std::panic::resume_unwind(panic);
            }
        }
        Ok(())
    }
}

/// Every run, longest first. A file that does not load, or names a board
/// that does not resolve, is one failing test named after the file, so it
/// is counted and reported rather than silently running nothing.
fn trials() -> Vec<Trial> {
    let mut runs = Vec::new();
    let mut broken = Vec::new();
    for path in scenario_files() {
        let loaded = Scenario::load_variants(&path).and_then(|variants| {
            variants
                .into_iter()
                .map(|s| s.resolve_boards().map(|boards| (s, boards)))
                .collect::<harness::error::Result<Vec<_>>>()
        });
        match loaded {
            Ok(variants) => {
                for (scenario, boards) in variants {
                    runs.extend(boards.into_iter().map(|board| Run { scenario: scenario.clone(), board }));
                }
            }
            Err(e) => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let msg = e.to_string();
                broken.push(Trial::test(format!("scenario::{stem}"), move || Err(msg.into())));
            }
        }
    }
    match standin_runs() {
        Ok(standin) => runs.extend(standin),
        Err(e) => {
            let msg = e.to_string();
            broken.push(Trial::test("scenario::standin-board", move || Err(msg.into())));
        }
    }
    runs.sort_by_cached_key(Run::order_key);
    // Stand-in runs alternate between the two boards.
    let first_standin = runs.iter().position(|r| r.board.is_external()).unwrap_or(runs.len());
    let (x86, arm): (Vec<Run>, Vec<Run>) =
        runs.split_off(first_standin).into_iter().partition(|r| r.board.arch == devlab_images::Arch::X86_64);
    let mut arm = arm.into_iter();
    for r in x86 {
        runs.push(r);
        runs.extend(arm.next());
    }
    runs.extend(arm);
    let cannot_lab =
        std::env::var_os("DEVLAB_SKIP_LAB_NETWORK").is_some() && harness::labnet::LabNet::check_privileges().is_err();
    broken
        .into_iter()
        .chain(runs.into_iter().map(|r| {
            let skip = cannot_lab && r.scenario.header.network == harness::scenario::Network::Lab;
            Trial::test(r.test_name(), move || r.execute()).with_ignored_flag(skip)
        }))
        .collect()
}
