//! `devlab-provision serve`: run the provisioning service by hand.
//! Exit codes follow the harness: 2 for bad input (a broken profile, an
//! address that cannot be parsed), 69 when the service cannot run (the
//! database cannot be opened, the address cannot be bound).

use clap::{Parser, Subcommand};
use devlab_provision::{ProvisionError, Service};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "devlab-provision", version, about = "The provisioning service of a bare-metal lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until Ctrl-C.
    Serve {
        /// SQLite database (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Directory of `<name>.toml` install profiles.
        #[arg(long)]
        profiles: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Base URL of `mgmt/<arch>/vmlinuz|initrd.img` and of relative profile images.
        #[arg(long, conflicts_with = "boot_dir", required_unless_present = "boot_dir")]
        boot_base_url: Option<String>,
        /// Serve this folder at `/boot/` (management OS, images) and use it
        /// as the boot base.
        #[arg(long)]
        boot_dir: Option<PathBuf>,
        /// Append every request to this file.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Keep this TFTP folder ready for U-Boot nodes (`boot.scr.uimg`,
        /// `pxelinux.cfg/01-<mac>` per node, rewritten on every change).
        #[arg(long, requires = "node_url")]
        pxelinux_dir: Option<PathBuf>,
        /// This service as the nodes reach it (e.g. `http://10.77.0.1:8080`),
        /// written into the PXELINUX files.
        #[arg(long)]
        node_url: Option<String>,
    },
}

const EXIT_BAD_INPUT: u8 = 2;
const EXIT_INFRA: u8 = 69;

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Serve { db, profiles, listen, boot_base_url, boot_dir, log, pxelinux_dir, node_url } =
        Cli::parse().command;
    let opened = match (boot_dir, boot_base_url) {
        (Some(dir), _) => Service::open_serving(&db, &profiles, &dir),
        (None, Some(url)) => Service::open(&db, &profiles, url),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let service = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("devlab-provision: {e}");
            let input = matches!(e, ProvisionError::Profile(_));
            return ExitCode::from(if input { EXIT_BAD_INPUT } else { EXIT_INFRA });
        }
    };
    if let Some(log) = &log {
        if let Err(e) = service.set_request_log(log, std::time::Instant::now()) {
            eprintln!("devlab-provision: {e}");
            return ExitCode::from(EXIT_INFRA);
        }
    }
    if let (Some(dir), Some(url)) = (&pxelinux_dir, &node_url) {
        if let Err(e) = service.serve_pxelinux(dir, url) {
            eprintln!("devlab-provision: {e}");
            return ExitCode::from(EXIT_INFRA);
        }
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("devlab-provision: cannot listen on {listen}: {e}");
            return ExitCode::from(EXIT_INFRA);
        }
    };
    let server = service.serve(listener);
    let names = service.profiles().names();
    eprintln!(
        "devlab-provision: serving {} (profiles: {}); Ctrl-C stops",
        server.url(),
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    );
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("devlab-provision: stopping");
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devlab-provision: {e}");
            ExitCode::from(EXIT_INFRA)
        }
    }
}
