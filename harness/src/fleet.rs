//! Fleet runs: several bare nodes (mixed boards and arches) network-boot on
//! one lab network ([`crate::labnet`]: a namespace the run owns, a bridge, a
//! tap per node, real dnsmasq for DHCP and TFTP) and are provisioned at the
//! same time by the run's provisioning service ([`crate::provision`]), which
//! listens on the bridge. iPXE nodes chain `/ipxe/${uuid}`; U-Boot nodes
//! read the service's PXELINUX files from dnsmasq's TFTP.
//!
//! A fleet file (`scenarios/fleet/*.toml`, `devlab fleet FILE`):
//!
//! ```toml
//! [fleet]
//! name = "pxe-fleet"
//! timeout = "12m"
//! [provision]
//! profiles = [{ name = "ab", image = "base" }]
//! [[node]]
//! name = "x86-1"
//! board = "qemu-x86_64-pxe"          # a board with `pxe` and `[smbios]`
//! mac = "52:54:00:de:10:01"
//! uuid = "6b1e4c2a-0d3f-4a51-9f0e-000000001001"
//! serial = "DEVLAB-FLEET-01"
//! disk_errors = [{ offset_mib = 64 }] # optional: writes there fail (EIO)
//! [[step]]
//! action = "power_on"                 # `nodes = [...]`: default all
//! ```
//!
//! Steps: `power_on`, `provision_wait {state, timeout}`, `wait_poweroff
//! {timeout}`, `provision_assign {profile}` (the node's arch picks the
//! profile's image: the service knows `<profile>-<arch>`), `expect {pattern,
//! label, timeout}`, `power_cycle` (pull the plug, power on; the disk
//! stays), `provision_table`, and the lab network's `dhcp_stop` and
//! `dhcp_start {after}`. The node steps take `nodes`; a wait over several
//! nodes has one deadline for all of them.
//!
//! The snapshot is made of each node's console events (from its own
//! `serial.log`, in node-name order, so the interleaving of concurrent nodes
//! does not matter) and the service's state table as each `provision_table`
//! step saw it (the final table when there is no such step).
//!
//! Invariants: the input (nodes sharing a MAC or UUID, unknown boards,
//! nodes, profiles, states) is checked before anything starts, and errors
//! name file, line and field; without the privileges a lab network needs the
//! run stops before anything is made (exit 2) and names the single-node
//! boards; every QEMU is stopped, dnsmasq stopped and the namespace deleted
//! whatever happens; the run directory is kept on failure.

use crate::board::{Board, DiskError, Errno, IoType};
use crate::error::{Error, Failure, InputError, Result};
use crate::labnet::{LabNet, LabNetConfig, LabNetError};
use crate::machine::{Machine, MachineSpec};
use crate::provision::{profile_name, Lab, LabSetup};
use crate::scenario::{Dur, Pattern, ProvisionSpec};
use crate::timeline::{console_marker, Event, Redactor};
use devlab_provision::NodeState;
use regex::bytes::Regex as BytesRegex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    fleet: FleetHeader,
    provision: ProvisionSpec,
    node: Vec<NodeSpec>,
    #[serde(default)]
    step: Vec<Spanned<FleetStep>>,
}

/// `[fleet]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetHeader {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_fleet_timeout")]
    pub timeout: Dur,
}

fn default_fleet_timeout() -> Dur {
    Dur(Duration::from_secs(900))
}

/// One `[[node]]`: a board profile with this node's own identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: Spanned<String>,
    pub board: Spanned<String>,
    pub mac: Spanned<String>,
    pub uuid: Spanned<String>,
    pub serial: Spanned<String>,
    #[serde(default)]
    pub disk_errors: Vec<NodeDiskError>,
}

/// A bad spot on a node's disk: writes at `offset_mib` fail with EIO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDiskError {
    pub offset_mib: u64,
}

/// One fleet step.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum FleetStep {
    PowerOn {
        #[serde(default)]
        nodes: Vec<String>,
    },
    ProvisionWait {
        state: NodeState,
        #[serde(default)]
        nodes: Vec<String>,
        #[serde(default = "default_wait")]
        timeout: Dur,
    },
    WaitPoweroff {
        #[serde(default)]
        nodes: Vec<String>,
        #[serde(default = "default_wait")]
        timeout: Dur,
    },
    ProvisionAssign {
        profile: String,
        #[serde(default)]
        nodes: Vec<String>,
    },
    Expect {
        pattern: Pattern,
        #[serde(default)]
        nodes: Vec<String>,
        #[serde(default)]
        label: Option<String>,
        #[serde(default = "default_wait")]
        timeout: Dur,
    },
    ProvisionTable {},
    /// Pull the plug and power on again (an operator's or a BMC's power
    /// cycle); a node that is off is just powered on. The disk stays.
    PowerCycle {
        #[serde(default)]
        nodes: Vec<String>,
    },
    /// Stop the lab network's DHCP/TFTP server (dnsmasq): an outage begins.
    DhcpStop {},
    /// End the outage: `after` from now (the rest of its length, a fault
    /// length and the only wait that is not for an event), start dnsmasq
    /// again; the step ends once it serves.
    DhcpStart {
        #[serde(default = "no_wait")]
        after: Dur,
    },
}

fn default_wait() -> Dur {
    Dur(Duration::from_secs(300))
}

fn no_wait() -> Dur {
    Dur(Duration::ZERO)
}

impl FleetStep {
    pub fn action(&self) -> &'static str {
        match self {
            FleetStep::PowerOn { .. } => "power_on",
            FleetStep::ProvisionWait { .. } => "provision_wait",
            FleetStep::WaitPoweroff { .. } => "wait_poweroff",
            FleetStep::ProvisionAssign { .. } => "provision_assign",
            FleetStep::Expect { .. } => "expect",
            FleetStep::ProvisionTable {} => "provision_table",
            FleetStep::PowerCycle { .. } => "power_cycle",
            FleetStep::DhcpStop {} => "dhcp_stop",
            FleetStep::DhcpStart { .. } => "dhcp_start",
        }
    }

    fn nodes(&self) -> Option<&[String]> {
        match self {
            FleetStep::PowerOn { nodes }
            | FleetStep::PowerCycle { nodes }
            | FleetStep::ProvisionWait { nodes, .. }
            | FleetStep::WaitPoweroff { nodes, .. }
            | FleetStep::ProvisionAssign { nodes, .. }
            | FleetStep::Expect { nodes, .. } => Some(nodes),
            FleetStep::ProvisionTable {} | FleetStep::DhcpStop {} | FleetStep::DhcpStart { .. } => None,
        }
    }
}

/// A checked fleet file.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub path: PathBuf,
    pub header: FleetHeader,
    pub provision: ProvisionSpec,
    pub nodes: Vec<NodeSpec>,
    /// Each node's board, with the node's MAC, UUID and serial.
    pub boards: Vec<Board>,
    /// Steps and their line numbers.
    pub steps: Vec<(FleetStep, usize)>,
    text: String,
}

/// Records that node `name` owns `value` (a MAC or a UUID); the message says
/// which node already owns it when two nodes claim the same one.
fn claim(
    owners: &mut BTreeMap<String, String>,
    value: &str,
    name: &str,
    what: &str,
    why: &str,
) -> std::result::Result<(), String> {
    match owners.insert(value.to_string(), name.to_string()) {
        Some(other) => Err(format!("node `{name}` has {what} {value}, like node `{other}`: {why}")),
        None => Ok(()),
    }
}

/// Does `path` hold a fleet (a `[fleet]` table) rather than a scenario?
pub fn is_fleet_file(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l.trim() == "[fleet]"))
}

impl Fleet {
    pub fn load(path: &Path) -> Result<Fleet> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, format!("cannot read the fleet file: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Fleet> {
        let file: FleetFile = toml::from_str(text).map_err(|e| InputError::from_toml(path, text, 0, &e))?;
        let at = |offset: usize, field: &str, msg: String| -> Error {
            InputError::new(path, msg).at(text, offset).field(field).into()
        };
        if file.node.is_empty() {
            return Err(InputError::new(path, "a fleet needs at least one [[node]]").into());
        }
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut macs: BTreeMap<String, String> = BTreeMap::new();
        let mut uuids: BTreeMap<String, String> = BTreeMap::new();
        let mut boards = Vec::new();
        for (i, n) in file.node.iter().enumerate() {
            let name = n.name.get_ref().clone();
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !plain || name.len() > 10 {
                return Err(at(
                    n.name.span().start,
                    "node.name",
                    format!("node name `{name}`: 1 to 10 letters, digits or `-` (it names the node's tap)"),
                ));
            }
            if names.insert(name.clone(), i).is_some() {
                return Err(at(n.name.span().start, "node.name", format!("two nodes are called `{name}`")));
            }
            let mac = devlab_provision::node::canonical_mac(n.mac.get_ref())
                .map_err(|e| at(n.mac.span().start, "node.mac", format!("node `{name}`: {e}")))?;
            claim(&mut macs, &mac, &name, "MAC", "two nodes cannot share a MAC on one lab network")
                .map_err(|m| at(n.mac.span().start, "node.mac", m))?;
            let uuid = devlab_provision::node::canonical_uuid(n.uuid.get_ref())
                .map_err(|e| at(n.uuid.span().start, "node.uuid", format!("node `{name}`: {e}")))?;
            claim(&mut uuids, &uuid, &name, "UUID", "the provisioning service tells nodes apart by UUID")
                .map_err(|m| at(n.uuid.span().start, "node.uuid", m))?;
            let mut board = crate::board::find(n.board.get_ref()).map_err(|e| match e {
                Error::Input(ie) => at(n.board.span().start, "node.board", ie.message),
                other => other,
            })?;
            if board.pxe.is_none() {
                return Err(at(
                    n.board.span().start,
                    "node.board",
                    format!("board `{}` does not boot from the network (no `pxe`)", board.name),
                ));
            }
            let Some(smbios) = board.smbios.as_mut() else {
                return Err(at(n.board.span().start, "node.board", format!("board `{}` has no [smbios]", board.name)));
            };
            smbios.uuid = uuid;
            smbios.serial = n.serial.get_ref().clone();
            board.nic.mac = mac;
            boards.push(board);
        }
        let profiles: Vec<&str> = file.provision.profiles.iter().map(|p| p.name.get_ref().as_str()).collect();
        let mut steps = Vec::new();
        for spanned in &file.step {
            let offset = spanned.span().start;
            let step = spanned.get_ref();
            let line = text[..offset].matches('\n').count() + 1;
            let field_at = |key: &str| offset + crate::board::find_key(&text[spanned.span()], key).unwrap_or(0);
            for n in step.nodes().unwrap_or(&[]) {
                if !names.contains_key(n) {
                    let known: Vec<&str> = names.keys().map(String::as_str).collect();
                    return Err(at(field_at("nodes"), "nodes", format!("no node `{n}` (nodes: {})", known.join(", "))));
                }
            }
            match step {
                FleetStep::ProvisionAssign { profile, .. } if !profiles.contains(&profile.as_str()) => {
                    return Err(at(
                        field_at("profile"),
                        "profile",
                        format!("no profile `{profile}` in [provision] (profiles: {})", profiles.join(", ")),
                    ));
                }
                FleetStep::Expect { pattern, .. } => {
                    BytesRegex::new(&pattern.0)
                        .map_err(|e| at(field_at("pattern"), "pattern", format!("not a valid regex: {e}")))?;
                }
                _ => {}
            }
            steps.push((step.clone(), line));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &file.provision.profiles {
            if !seen.insert(p.name.get_ref().clone()) {
                return Err(at(
                    p.name.span().start,
                    "provision.profiles.name",
                    format!("profile `{}` twice", p.name.get_ref()),
                ));
            }
            crate::scenario::recipe_for(path, text, &crate::rundir::workspace_root(), &p.image)?;
        }
        Ok(Fleet {
            path: path.to_path_buf(),
            header: file.fleet,
            provision: file.provision,
            nodes: file.node,
            boards,
            steps,
            text: text.to_string(),
        })
    }

    /// `<name>@fleet`: the snapshot's name.
    pub fn snapshot_name(&self) -> String {
        format!("{}@fleet", self.header.name)
    }
}

/// The result of a fleet run.
pub struct FleetOutcome {
    pub name: String,
    pub run_dir: Option<PathBuf>,
    /// The snapshot: every node's console events, then the final table.
    pub normalised: Vec<Event>,
    pub duration: Duration,
    pub result: Result<()>,
}

/// One node during the run.
struct NodeRun {
    name: String,
    uuid: String,
    board: Board,
    dir: PathBuf,
    tap: String,
    disk_errors: Vec<DiskError>,
    /// KVM or TCG, probed per board (a foreign arch is always TCG).
    accel: crate::board::Accel,
    machine: Option<Machine>,
}

struct FleetRun<'a> {
    fleet: &'a Fleet,
    run_dir: PathBuf,
    blank: PathBuf,
    nodes: Vec<NodeRun>,
    net: Option<LabNet>,
    lab: Option<Lab>,
    epoch: Instant,
    current: String,
    log: Vec<String>,
    /// The state tables `provision_table` steps took, in order (snapshotted).
    tables: Vec<Vec<String>>,
}

/// Run `fleet`. Everything it started is stopped before this returns.
pub async fn run(fleet: &Fleet, runs_root: &Path) -> FleetOutcome {
    let started = Instant::now();
    let mut out = FleetOutcome {
        name: fleet.header.name.clone(),
        run_dir: None,
        normalised: Vec::new(),
        duration: Duration::ZERO,
        result: Ok(()),
    };
    if let Err(e) = LabNet::check_privileges() {
        out.result = Err(InputError::new(&fleet.path, e.to_string()).into());
        return out;
    }
    let run_dir = match crate::rundir::create(runs_root, &fleet.header.name, "fleet") {
        Ok(d) => d,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };
    out.run_dir = Some(run_dir.clone());
    let mut r = FleetRun {
        fleet,
        run_dir: run_dir.clone(),
        blank: run_dir.join("blank.raw"),
        nodes: Vec::new(),
        net: None,
        lab: None,
        epoch: Instant::now(),
        current: "setup".into(),
        log: Vec::new(),
        tables: Vec::new(),
    };
    let bound = fleet.header.timeout.0;
    let res = match tokio::time::timeout(bound, r.run()).await {
        Ok(res) => res,
        Err(_) => Err(r.failure(format!("the fleet did not finish within {bound:?}"), None)),
    };
    r.teardown().await;
    if res.is_ok() {
        // A passed fleet keeps its logs, not its disks (as `devlab run`).
        for n in &r.nodes {
            let _ = std::fs::remove_file(n.dir.join("disk.qcow2"));
        }
        let _ = std::fs::remove_file(&r.blank);
    }
    let redactor = Redactor::new(&[(run_dir.to_string_lossy().as_ref(), "[run]")]);
    out.normalised = r.snapshot(&redactor);
    let _ = std::fs::write(run_dir.join("fleet.log"), r.log.join("\n") + "\n");
    if let Err(e) = &res {
        let _ = std::fs::write(run_dir.join("failure.txt"), e.to_string());
    }
    out.result = res;
    out.duration = started.elapsed();
    out
}

impl FleetRun<'_> {
    async fn run(&mut self) -> Result<()> {
        self.setup().await?;
        let fleet = self.fleet;
        for (i, (step, line)) in fleet.steps.iter().enumerate() {
            self.current = format!("step {} ({}, {}:{line})", i + 1, step.action(), fleet.path.display());
            let current = self.current.clone();
            self.note(&current);
            self.step(step).await?;
        }
        Ok(())
    }

    fn note(&mut self, s: &str) {
        self.log.push(format!("[{:10.3}] {s}", self.epoch.elapsed().as_secs_f64()));
    }

    /// A product failure of the current step; `node`'s last console lines.
    fn failure(&self, message: String, node: Option<&NodeRun>) -> Error {
        let last_lines = node
            .map(|n| {
                let text = std::fs::read_to_string(n.dir.join("serial.log")).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(15);
                lines[from..].iter().map(|l| format!("{}: {l}", n.name)).collect()
            })
            .unwrap_or_default();
        Error::Failed(Box::new(Failure {
            step: self.current.clone(),
            message,
            run_dir: self.run_dir.clone(),
            last_lines,
        }))
    }

    async fn setup(&mut self) -> Result<()> {
        let fleet = self.fleet;
        // Blank disks: one sparse base shared read-only, an overlay per node.
        let root = crate::rundir::workspace_root();
        let mut size: u64 = 1 << 30;
        let mut arches: Vec<devlab_images::Arch> = fleet.boards.iter().map(|b| b.arch).collect();
        arches.sort_by_key(|a| a.uname());
        arches.dedup();
        for p in &fleet.provision.profiles {
            for &arch in &arches {
                let img = crate::scenario::locate_image(&fleet.path, &fleet.text, &root, &p.image, arch)?;
                size = size.max(img.manifest.disk_size * 2);
            }
        }
        let f =
            std::fs::File::create(&self.blank).map_err(|e| Error::infra(format!("{}: {e}", self.blank.display())))?;
        f.set_len(size).map_err(|e| Error::infra(format!("{}: {e}", self.blank.display())))?;
        // The lab network: fixed addresses per node, iPXE gets `boot.ipxe`,
        // everything else (U-Boot) `boot.scr.uimg`.
        let tftp = self.run_dir.join("provision").join("tftp");
        std::fs::create_dir_all(&tftp).map_err(|e| Error::infra(format!("{}: {e}", tftp.display())))?;
        let mut cfg =
            LabNetConfig::new(self.run_dir.join("labnet"), &tftp, devlab_provision::pxelinux::BOOT_SCRIPT_NAME);
        cfg.ipxe_boot = Some(crate::board::Pxe::Ipxe.bootfile().to_string());
        cfg.hosts = fleet
            .boards
            .iter()
            .enumerate()
            .map(|(i, b)| (b.nic.mac.clone(), Ipv4Addr::new(10, 77, 0, 11 + i as u8)))
            .collect();
        let mut net = tokio::task::spawn_blocking(move || LabNet::create(cfg))
            .await
            .map_err(|e| Error::infra(format!("lab network: {e}")))?
            .map_err(labnet_error(&fleet.path))?;
        for (spec, board) in fleet.nodes.iter().zip(&fleet.boards) {
            let name = spec.name.get_ref().clone();
            let tap = net.add_tap(&name).map_err(labnet_error(&fleet.path))?;
            let dir = self.run_dir.join("nodes").join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::infra(format!("{}: {e}", dir.display())))?;
            let disk_errors = spec
                .disk_errors
                .iter()
                .map(|d| DiskError { offset: d.offset_mib << 20, iotype: IoType::Write, errno: Errno::EIO })
                .collect();
            let uuid = board.smbios.as_ref().map(|s| s.uuid.clone()).unwrap_or_default();
            let accel = crate::accel::choose_async(board).await.accel;
            self.nodes.push(NodeRun { name, uuid, board: board.clone(), dir, tap, disk_errors, accel, machine: None });
        }
        let listener = net.bind_tcp(0).map_err(labnet_error(&fleet.path))?;
        listener.set_nonblocking(true).map_err(|e| Error::infra(format!("lab network listener: {e}")))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| Error::infra(format!("lab network listener: {e}")))?;
        let host = net.bridge_addr().to_string();
        self.note(&format!("lab network {} (bridge {host}), dnsmasq log {}", net.name(), net.dnsmasq_log().display()));
        self.net = Some(net);
        let setup = LabSetup {
            run_dir: &self.run_dir,
            file: &fleet.path,
            text: &fleet.text,
            profiles: &fleet.provision.profiles,
            arches: &arches,
            per_arch_profiles: true,
            node_host: &host,
        };
        self.lab = Some(Lab::start_with(&setup, listener).await?);
        Ok(())
    }

    /// Indexes of the nodes a step names (all when it names none).
    fn targets(&self, names: &[String]) -> Vec<usize> {
        if names.is_empty() {
            return (0..self.nodes.len()).collect();
        }
        names.iter().filter_map(|n| self.nodes.iter().position(|x| &x.name == n)).collect()
    }

    /// Node `i`'s machine; a step failure if it was never powered on.
    fn machine(&mut self, i: usize) -> Result<&mut Machine> {
        if self.nodes[i].machine.is_none() {
            return Err(self.failure(format!("node {} is not powered on", self.nodes[i].name), None));
        }
        Ok(self.nodes[i].machine.as_mut().expect("checked above"))
    }

    /// Run blocking work on the lab network (dnsmasq stop/start) on the
    /// blocking pool, so the nodes' console readers on this thread go on;
    /// the network moves there and back (dropped there, it tears down).
    async fn with_net(
        &mut self,
        f: impl FnOnce(&mut LabNet) -> std::result::Result<(), LabNetError> + Send + 'static,
        doing: &str,
    ) -> Result<()> {
        let mut net = self.net.take().expect("set up");
        let (net, res) = tokio::task::spawn_blocking(move || {
            let res = f(&mut net);
            (net, res)
        })
        .await
        .map_err(|e| Error::infra(format!("{doing}: {e}")))?;
        self.net = Some(net);
        res.map_err(|e| Error::infra(format!("{doing}: {e}")))
    }

    fn service(&self) -> &devlab_provision::Service {
        &self.lab.as_ref().expect("the lab starts in setup").service
    }

    async fn step(&mut self, step: &FleetStep) -> Result<()> {
        match step {
            FleetStep::PowerOn { nodes } => {
                for i in self.targets(nodes) {
                    self.power_on(i).await?;
                }
                Ok(())
            }
            FleetStep::ProvisionWait { state, nodes, timeout } => {
                let want = *state;
                let deadline = tokio::time::Instant::now() + timeout.0;
                for i in self.targets(nodes) {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let uuid = self.nodes[i].uuid.clone();
                    if let Err(e) = self.service().wait_state(&uuid, want, left).await {
                        return Err(self.failure(format!("node {}: {e}", self.nodes[i].name), Some(&self.nodes[i])));
                    }
                    let line = format!("{}: {want}", self.nodes[i].name);
                    self.note(&line);
                }
                Ok(())
            }
            FleetStep::WaitPoweroff { nodes, timeout } => {
                let deadline = tokio::time::Instant::now() + timeout.0;
                for i in self.targets(nodes) {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let name = self.nodes[i].name.clone();
                    if self.machine(i)?.wait_exit(left).await.is_none() {
                        return Err(self.failure(
                            format!("node {name} did not power off within {:?}", timeout.0),
                            Some(&self.nodes[i]),
                        ));
                    }
                    self.note(&format!("{name}: powered off"));
                }
                Ok(())
            }
            FleetStep::ProvisionAssign { profile, nodes } => {
                for i in self.targets(nodes) {
                    let n = &self.nodes[i];
                    let name = profile_name(profile, n.board.arch, true);
                    if let Err(e) = self.service().assign(&n.uuid, &name) {
                        return Err(self.failure(format!("node {}: assigning {name}: {e}", n.name), None));
                    }
                    let line = format!("{}: assigned {name}", n.name);
                    self.note(&line);
                }
                Ok(())
            }
            FleetStep::Expect { pattern, nodes, label, timeout } => {
                let re = BytesRegex::new(&pattern.0).expect("checked at load");
                let deadline = tokio::time::Instant::now() + timeout.0;
                for i in self.targets(nodes) {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let name = self.nodes[i].name.clone();
                    if let Err(e) = self.machine(i)?.console.expect(std::slice::from_ref(&re), left).await {
                        return Err(self.failure(format!("node {name}: {e}"), Some(&self.nodes[i])));
                    }
                    let what = label.clone().unwrap_or_else(|| pattern.0.clone());
                    self.note(&format!("{name}: {what}"));
                }
                Ok(())
            }
            FleetStep::PowerCycle { nodes } => {
                for i in self.targets(nodes) {
                    let on = self.nodes[i].machine.as_mut().is_some_and(|m| m.exited().is_none());
                    if let Some(m) = self.nodes[i].machine.as_mut().filter(|_| on) {
                        m.power_cut().await?;
                        let line = format!("{}: power cut", self.nodes[i].name);
                        self.note(&line);
                    }
                    self.power_on(i).await?;
                }
                Ok(())
            }
            FleetStep::ProvisionTable {} => {
                let table = self.service().state_table();
                self.note(&format!("state table:\n{table}"));
                self.tables.push(table.lines().map(|l| l.trim_end().to_string()).collect());
                Ok(())
            }
            FleetStep::DhcpStop {} => {
                self.with_net(|net| net.stop_dhcp(), "stopping the lab's DHCP/TFTP server").await?;
                self.note("dhcp: stopped (outage)");
                Ok(())
            }
            FleetStep::DhcpStart { after } => {
                // The outage's remaining length: a fault length, not a wait
                // for something to happen.
                tokio::time::sleep(after.0).await;
                // Waits until dnsmasq has bound its sockets (an inotify
                // wait, not a poll), on the blocking pool.
                self.with_net(|net| net.start_dhcp(), "starting the lab's DHCP/TFTP server").await?;
                self.note("dhcp: serving again");
                Ok(())
            }
        }
    }

    async fn power_on(&mut self, i: usize) -> Result<()> {
        let net = self.net.as_ref().expect("set up");
        let n = &mut self.nodes[i];
        if n.machine.as_mut().is_some_and(|m| m.exited().is_none()) {
            return Err(Error::infra(format!("node {} is already on", n.name)));
        }
        let spec = MachineSpec {
            board: &n.board,
            accel: n.accel,
            base_disk: &self.blank,
            run_dir: &n.dir,
            epoch: Some(self.epoch),
            disk_errors: &n.disk_errors,
            loadvm: None,
            tftp: None,
            detect_zeroes: true,
            lab_net: Some((net, &n.tap)),
        };
        let machine = match n.machine.take() {
            Some(old) => {
                let overlay = old.overlay.clone();
                drop(old);
                Machine::start_on(spec, overlay).await?
            }
            None => Machine::start(spec).await?,
        };
        n.machine = Some(machine);
        let name = n.name.clone();
        self.note(&format!("{name}: power on"));
        Ok(())
    }

    async fn teardown(&mut self) {
        for n in &mut self.nodes {
            if let Some(m) = n.machine.as_mut() {
                m.shutdown().await;
            }
        }
        if let Some(lab) = self.lab.as_mut() {
            lab.stop().await;
        }
        if let Some(net) = self.net.as_mut() {
            if let Err(e) = net.teardown() {
                self.log.push(format!("lab network teardown: {e}"));
            }
        }
    }

    /// Each node's console events (node-name order), then the state table of
    /// every `provision_table` step in order (the final table if none).
    fn snapshot(&self, redactor: &Redactor) -> Vec<Event> {
        static PREFIX: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(|| regex::Regex::new(r"^\[\s*[0-9.]+\] ").unwrap());
        let mut order: Vec<&NodeRun> = self.nodes.iter().collect();
        order.sort_by(|a, b| a.name.cmp(&b.name));
        let mut events = Vec::new();
        for n in order {
            events.push(Event::Node { name: n.name.clone(), board: n.board.name.clone() });
            let text = std::fs::read_to_string(n.dir.join("serial.log")).unwrap_or_default();
            for line in text.lines() {
                let line = prefix.replace(line, "");
                if let Some(e) = console_marker(line.trim_end_matches('\r')) {
                    events.push(redactor.event(&e));
                }
            }
        }
        for rows in &self.tables {
            events.push(Event::ProvisionTable { rows: rows.clone() });
        }
        if self.tables.is_empty() {
            if let Some(lab) = &self.lab {
                let rows = lab.service.state_table().lines().map(|l| l.trim_end().to_string()).collect();
                events.push(Event::ProvisionTable { rows });
            }
        }
        events
    }
}

fn labnet_error(path: &Path) -> impl Fn(LabNetError) -> Error + '_ {
    move |e| match e.exit_code() {
        2 => InputError::new(path, e.to_string()).into(),
        _ => Error::infra(format!("lab network: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[fleet]\nname = \"f\"\n\n[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";

    fn node(name: &str, mac: &str, uuid: &str) -> String {
        format!(
            "[[node]]\nname = \"{name}\"\nboard = \"qemu-x86_64-pxe\"\nmac = \"{mac}\"\nuuid = \"{uuid}\"\nserial = \"S-{name}\"\n\n"
        )
    }

    const U1: &str = "6b1e4c2a-0d3f-4a51-9f0e-000000001001";
    const U2: &str = "6b1e4c2a-0d3f-4a51-9f0e-000000001002";

    fn parse(text: &str) -> Result<Fleet> {
        Fleet::parse(Path::new("f.toml"), text)
    }

    #[test]
    fn nodes_get_their_own_identity() {
        let text = format!(
            "{HEAD}{}{}[[step]]\naction = \"power_on\"\nnodes = [\"b\"]\n",
            node("a", "52:54:00:de:10:01", U1),
            node("b", "52:54:00:DE:10:02", U2)
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.boards[1].nic.mac, "52:54:00:de:10:02");
        assert_eq!(f.boards[1].smbios.as_ref().unwrap().uuid, U2);
        assert_eq!(f.boards[1].smbios.as_ref().unwrap().serial, "S-b");
        assert_eq!(f.steps[0].1, text.lines().position(|l| l == "[[step]]").unwrap() + 1);
    }

    #[test]
    fn shared_mac_or_uuid_is_refused_with_line_and_field() {
        let text = format!("{HEAD}{}{}", node("a", "52:54:00:de:10:01", U1), node("b", "52:54:00:de:10:01", U2));
        let err = parse(&text).unwrap_err().to_string();
        let line = text.lines().enumerate().filter(|(_, l)| l.starts_with("mac")).nth(1).unwrap().0 + 1;
        assert!(err.starts_with(&format!("f.toml:{line}:")), "{err}");
        assert!(err.contains("field `node.mac`") && err.contains("like node `a`"), "{err}");

        let text = format!("{HEAD}{}{}", node("a", "52:54:00:de:10:01", U1), node("b", "52:54:00:de:10:02", U1));
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("field `node.uuid`") && err.contains("like node `a`"), "{err}");
    }

    #[test]
    fn unknown_nodes_profiles_states_and_boards_are_refused() {
        let a = node("a", "52:54:00:de:10:01", U1);
        let err = parse(&format!("{HEAD}{a}[[step]]\naction = \"power_on\"\nnodes = [\"zz\"]\n")).unwrap_err();
        assert!(err.to_string().contains("field `nodes`: no node `zz` (nodes: a)"), "{err}");
        let err = parse(&format!("{HEAD}{a}[[step]]\naction = \"provision_assign\"\nprofile = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("field `profile`: no profile `x`"), "{err}");
        let err = parse(&format!("{HEAD}{a}[[step]]\naction = \"provision_wait\"\nstate = \"DONE\"\n")).unwrap_err();
        assert!(err.to_string().contains("unknown variant `DONE`"), "{err}");
        let err = parse(&format!("{HEAD}{}", a.replace("qemu-x86_64-pxe", "qemu-x86_64"))).unwrap_err();
        assert!(err.to_string().contains("field `node.board`") && err.to_string().contains("no `pxe`"), "{err}");
        let err = parse(&format!("{HEAD}{a}[[step]]\naction = \"power_on\"\nnode = \"a\"\n")).unwrap_err();
        assert!(err.to_string().contains("unknown field `node`"), "{err}");
    }
}
