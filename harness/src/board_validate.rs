//! `devlab board validate NAME`: what a hardware team hands in for a new
//! board. For an external board, a preflight first, on the board itself
//! and under its lock: the console line opens; a power cycle is observed
//! (switched off, the console falls silent; switched on, the firmware's
//! banner comes again); U-Boot's prompt answers; and the board's identity
//! is read from its console (U-Boot's version, the CPU/SoC and model lines
//! it prints, its `serial#`). Then (the CLI's part) the board-validation
//! suite and N power cycles (`scenarios/power-cycle.toml`, repeated, so a
//! flaky board shows as a rate), all in one report headed with the
//! identity. Each preflight check is a report record of its own.
//!
//! This module opens the console and switches the power through
//! [`crate::external`] only; it never starts QEMU.

use crate::board::Board;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::report::{Heading, Record, Status};
use regex::bytes::Regex;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the console must stay quiet after the switch turned the board
/// off for the cut to count as seen.
const QUIET: Duration = Duration::from_secs(2);
/// How long a switched-off board may keep talking (a console still busy
/// after this is not this board's, or the switch is not its).
const QUIET_WITHIN: Duration = Duration::from_secs(20);
/// How long the firmware may take from power-on to its autoboot prompt.
const BANNER_WITHIN: Duration = Duration::from_secs(60);

/// One preflight check's outcome, as a report record.
fn record(board: &Board, check: &str, started: Instant, res: &std::result::Result<String, String>) -> Record {
    let id = format!("preflight:{check}@{}", board.name);
    let mut r = Record::not_run(&id, &format!("preflight:{check}"), &board.name, None);
    r.attempts = 1;
    r.duration_s = started.elapsed().as_secs_f64();
    match res {
        Ok(detail) => {
            r.status = Status::Passed;
            r.message = Some(detail.clone());
        }
        Err(e) => {
            r.status = Status::Failed;
            r.message = Some(e.clone());
        }
    }
    r
}

/// The identity a QEMU board's profile gives (no preflight: devlab runs it).
pub fn profile_heading(board: &Board) -> Heading {
    let mut facts = vec![
        ("board".to_string(), board.name.clone()),
        ("arch".to_string(), board.arch.to_string()),
        ("machine".to_string(), format!("QEMU {} ({})", board.machine, board.cpu)),
        ("firmware".to_string(), board.firmware.path.display().to_string()),
    ];
    if let Some(s) = &board.smbios {
        facts.push(("serial".to_string(), s.serial.clone()));
    }
    Heading { title: format!("devlab board validation: {}", board.name), facts }
}

/// The preflight of an external board: its records and its identity.
/// Holds the board's lock while it runs (released before the suite, whose
/// runs take it themselves).
pub async fn preflight(board: &Board, run_dir: &Path, wait: Duration) -> Result<(Vec<Record>, Heading)> {
    let ext = board.external.clone().ok_or_else(|| Error::infra(format!("board {} is not external", board.name)))?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::infra(format!("{}: {e}", run_dir.display())))?;
    let _lock = crate::runner::take_board(&board.name, run_dir, wait, crate::runner::StepHook::default()).await?;
    let mut heading = Heading { title: format!("devlab board validation: {}", board.name), facts: Vec::new() };
    heading.facts.push(("board".into(), board.name.clone()));
    heading.facts.push(("arch".into(), board.arch.to_string()));
    heading.facts.push(("console".into(), ext.console_label()));
    heading.facts.push(("power".into(), ext.power_label()));
    let mut records = Vec::new();
    let t = Instant::now();
    let console = match ext.open_console().await {
        Ok((read, write, child)) => {
            let c = Console::start_on(read, write, run_dir.join("serial.log"), Instant::now())
                .map_err(|e| Error::infra(format!("serial.log: {e}")))?;
            records.push(record(board, "console", t, &Ok(format!("opened {}", ext.console_label()))));
            Some((c, child))
        }
        Err(e) => {
            records.push(record(board, "console", t, &Err(e.to_string())));
            None
        }
    };
    if let Some((mut console, _child)) = console {
        let facts = cycle_and_prompt(board, &ext, &mut console, &mut records).await;
        heading.facts.extend(facts);
        let _ = ext.power(false).await;
    }
    Ok((records, heading))
}

/// Switch off and see the console fall silent; switch on and see the
/// banner; stop autoboot and read the identity at U-Boot's prompt.
async fn cycle_and_prompt(
    board: &Board,
    ext: &crate::external::External,
    console: &mut Console,
    records: &mut Vec<Record>,
) -> Vec<(String, String)> {
    let t = Instant::now();
    let off = match ext.power(false).await {
        Ok(()) => quiet(console).await,
        Err(e) => Err(e.to_string()),
    };
    records.push(record(board, "power-off", t, &off));
    let t = Instant::now();
    console.forget_past();
    let from = console.origin();
    let prompts = board.uboot().cloned();
    let autoboot = prompts.as_ref().map_or_else(|| board.firmware_marker(), |p| p.autoboot_prompt.clone());
    let banner = Regex::new(&regex::escape(&autoboot)).expect("escaped");
    let on = match ext.power(true).await {
        Ok(()) => match console.seen_after(&Regex::new("(?s).").expect("valid"), from, ext.console_timeout).await {
            Ok(_) => {
                let first = t.elapsed().as_secs_f64();
                match console.expect(std::slice::from_ref(&banner), BANNER_WITHIN).await {
                    Ok(m) => Ok(format!("first byte {first:.2} s, `{autoboot}` {:.2} s after power on", m.at)),
                    Err(e) => Err(format!("no `{autoboot}` after power on: {e}")),
                }
            }
            Err(e) => Err(format!("console silent after power on: {e}")),
        },
        Err(e) => Err(e.to_string()),
    };
    let booted = on.is_ok();
    records.push(record(board, "power-on", t, &on));
    let mut facts = banner_facts(&String::from_utf8_lossy(&console.bytes_from(from)));
    let (Some(p), true) = (prompts, booted) else { return facts };
    let t = Instant::now();
    let prompt = Regex::new(&regex::escape(&p.prompt)).expect("escaped");
    let at_prompt = async {
        console.send(b" ").await.map_err(|e| e.to_string())?;
        console.expect(std::slice::from_ref(&prompt), Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
        let start = console.len();
        console.send(b"printenv serial#\r").await.map_err(|e| e.to_string())?;
        console.expect(std::slice::from_ref(&prompt), Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&console.bytes_from(start)).into_owned())
    };
    let res = at_prompt.await;
    if let Ok(text) = &res {
        let serial = text.lines().find_map(|l| l.trim().strip_prefix("serial#=")).map(str::to_string);
        facts.push(("serial".into(), serial.unwrap_or_else(|| "not set (no serial# in U-Boot's environment)".into())));
    }
    let res = res.map(|_| format!("`{}` answered", p.prompt.trim()));
    records.push(record(board, "firmware-prompt", t, &res));
    facts
}

/// Wait until the console has said nothing for [`QUIET`], at most
/// [`QUIET_WITHIN`].
async fn quiet(console: &Console) -> std::result::Result<String, String> {
    let started = Instant::now();
    let anything = Regex::new("(?s).").expect("valid");
    while started.elapsed() < QUIET_WITHIN {
        let from = console.len();
        if console.seen_after(&anything, from, QUIET).await.is_err() {
            return Ok(format!("console silent for {} s after the switch", QUIET.as_secs()));
        }
    }
    Err(format!(
        "the console kept talking {} s after power off: is the switch wired to this board?",
        QUIET_WITHIN.as_secs()
    ))
}

/// What U-Boot's banner says about the board: its version, and the
/// `CPU:`, `Model:`, `SoC:`, `DRAM:` lines it prints on the way up.
pub fn banner_facts(text: &str) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    for line in text.lines().map(|l| l.trim_matches(['\r', ' '])) {
        if let Some(v) = line.strip_prefix("U-Boot ").filter(|v| v.starts_with(|c: char| c.is_ascii_digit())) {
            if !facts.iter().any(|(k, _): &(String, String)| k == "U-Boot") {
                facts.push(("U-Boot".to_string(), v.to_string()));
            }
        }
        for key in ["CPU", "Model", "SoC", "DRAM", "Board"] {
            if let Some(v) = line.strip_prefix(&format!("{key}:")) {
                if !facts.iter().any(|(k, _)| k == key) {
                    facts.push((key.to_string(), v.trim().to_string()));
                }
            }
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_gives_version_cpu_model_and_memory() {
        let text = "\r\nU-Boot 2023.01+dfsg-2+deb12u1 (Jun 10 2024 - 12:00:00 +0000)\r\n\r\n\
                    CPU:   QEMU Virtual CPU version 2.5+\r\nDRAM:  512 MiB\r\nModel: linux,dummy-virt\r\n\
                    U-Boot 2099 printed again\r\nHit any key to stop autoboot:  2";
        let facts = banner_facts(text);
        assert_eq!(
            facts,
            vec![
                ("U-Boot".to_string(), "2023.01+dfsg-2+deb12u1 (Jun 10 2024 - 12:00:00 +0000)".to_string()),
                ("CPU".to_string(), "QEMU Virtual CPU version 2.5+".to_string()),
                ("DRAM".to_string(), "512 MiB".to_string()),
                ("Model".to_string(), "linux,dummy-virt".to_string()),
            ]
        );
        assert!(banner_facts("U-Boot SPL is not a version\r\n").is_empty());
    }
}
