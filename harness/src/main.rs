//! The `devlab` command: `run` scenarios on boards, `check` scenario files
//! without booting, list `boards`. Exit codes: 0 passed, 1 a scenario
//! failed, 2 bad input, 69 infrastructure failure, 130 interrupted.

use clap::{Parser, Subcommand};
use harness::board::{self, Board};
use harness::error::{Error, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_PASSED};
use harness::runner::{self, RunOptions, SnapshotMode};
use harness::scenario::Scenario;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "devlab", about = "A virtual device lab: real firmware, real boots, forced failures.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenario files (or every *.toml in a folder) on their boards.
    Run {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only these boards (default: the boards each scenario names).
        #[arg(long = "board")]
        boards: Vec<String>,
        /// On failure, keep the machine running and print how to reach it.
        #[arg(long)]
        keep: bool,
        /// Write the timeline snapshots instead of checking them.
        #[arg(long)]
        update_snapshots: bool,
        /// Do not compare timelines with their snapshots.
        #[arg(long, conflicts_with = "update_snapshots")]
        no_snapshots: bool,
    },
    /// Validate scenario files without booting anything.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List board profiles and whether their firmware is present.
    Boards,
}

fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| harness::error::InputError::new(p, format!("cannot list: {e}")))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| harness::scenario::is_scenario_file(f))
                .collect();
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

fn load_all(paths: &[PathBuf], only: &[String]) -> Result<Vec<(Scenario, Vec<Board>)>, Error> {
    for name in only {
        board::find(name)?;
    }
    let mut out = Vec::new();
    for f in scenario_files(paths)? {
        let s = Scenario::load(&f)?;
        let mut boards = s.resolve_boards()?;
        if !only.is_empty() {
            boards.retain(|b| only.contains(&b.name));
        }
        out.push((s, boards));
    }
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Boards => boards(),
        Cmd::Check { paths } => match load_all(&paths, &[]) {
            Ok(all) => {
                for (s, boards) in &all {
                    let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
                    match s.recipe_path(&harness::rundir::workspace_root()) {
                        Ok(_) => println!(
                            "ok   {} ({} steps; boards: {})",
                            s.path.display(),
                            s.steps.len(),
                            names.join(", ")
                        ),
                        Err(e) => {
                            eprintln!("error: {e}");
                            std::process::exit(EXIT_BAD_INPUT);
                        }
                    }
                }
                EXIT_PASSED
            }
            Err(e) => report_error(&e),
        },
        Cmd::Run { paths, boards, keep, update_snapshots, no_snapshots } => {
            let snapshots = if update_snapshots {
                SnapshotMode::Update
            } else if no_snapshots {
                SnapshotMode::Skip
            } else {
                SnapshotMode::Check
            };
            let opts = RunOptions { keep_on_failure: keep, snapshots, ..RunOptions::default() };
            // A current-thread runtime: QEMU is spawned from the main thread,
            // which PR_SET_PDEATHSIG ties it to.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async {
                tokio::select! {
                    code = run(&paths, &boards, &opts) => code,
                    _ = tokio::signal::ctrl_c() => {
                        // Dropping the run future tears every machine down.
                        eprintln!("\ninterrupted: stopping machines");
                        EXIT_INTERRUPTED
                    }
                }
            })
        }
    };
    std::process::exit(code);
}

fn report_error(e: &Error) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

async fn run(paths: &[PathBuf], only: &[String], opts: &RunOptions) -> i32 {
    let all = match load_all(paths, only) {
        Ok(a) => a,
        Err(e) => return report_error(&e),
    };
    let mut worst = EXIT_PASSED;
    let mut summary = Vec::new();
    for (scenario, boards) in &all {
        for board in boards {
            eprintln!("RUN  {} on {}", scenario.name(), board.name);
            let out = runner::run(scenario, board, opts).await;
            let dir = out.run_dir.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default();
            match &out.result {
                Ok(()) => {
                    eprintln!("PASS {} on {} in {:.1}s ({dir})", out.scenario, out.board, out.duration.as_secs_f64());
                }
                Err(e) => {
                    let code = e.exit_code();
                    let word = if code == EXIT_FAILED { "FAIL" } else { "ERROR" };
                    eprintln!("{word} {} on {} after {:.1}s\n{e}", out.scenario, out.board, out.duration.as_secs_f64());
                    if !dir.is_empty() && !matches!(e, Error::Failed(_)) {
                        eprintln!("run directory: {dir}");
                    }
                    worst = worse(worst, code);
                }
            }
            summary.push((out.scenario.clone(), out.board.clone(), out.result.is_ok()));
        }
    }
    let passed = summary.iter().filter(|s| s.2).count();
    eprintln!("{passed} passed, {} failed", summary.len() - passed);
    worst
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
    code
}
