//! The lab network for real (root needed; each test skips with a message
//! when the process may not create namespaces): a namespace with a bridge
//! and taps, nothing routing out, TCP inside it, children spawned into it,
//! dnsmasq answering DHCP (fixed and pool leases, iPXE boot file), TFTP and
//! router advertisements to clients on the segment, the DHCP fault, teardown,
//! Drop on panic, and removal of namespaces left by a dead harness.
//!
//! A tap without a reader carries no traffic, so a client here is a veth
//! pair: one end on the bridge, the other in a namespace of its own (a node
//! stand-in) where busybox's udhcpc and tftp run.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::labnet::{LabNet, LabNetConfig, LabNetError};

fn privileged() -> bool {
    match LabNet::check_privileges() {
        Ok(()) => true,
        Err(e @ (LabNetError::NotPrivileged(_) | LabNetError::MissingTool(_))) => {
            eprintln!("SKIPPED (lab network unavailable): {e}");
            false
        }
        Err(e) => panic!("check_privileges: {e}"),
    }
}

fn cmd(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).stdin(Stdio::null()).output().unwrap()
}

/// `ip ARGS`, which must succeed; its stdout.
fn ip(args: &[&str]) -> String {
    let out = cmd("ip", args);
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn netns_list() -> String {
    ip(&["netns", "list"])
}

fn listed(name: &str) -> bool {
    netns_list().lines().any(|l| l.split_whitespace().next() == Some(name))
}

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

const HELLO: &str = "hello over tftp\n";
const MAC_A: &str = "52:54:00:de:71:0a";
const MAC_B: &str = "52:54:00:de:71:0b";

/// A lab network over a TFTP root holding `hello.txt`; run files in `dir/labnet`.
fn lab(dir: &Path) -> LabNet {
    let tftp = dir.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(tftp.join("hello.txt"), HELLO).unwrap();
    let mut cfg = LabNetConfig::new(dir.join("labnet"), &tftp, "pxe.scr");
    cfg.ipxe_boot = Some("boot.ipxe".into());
    cfg.hosts = vec![(MAC_A.into(), Ipv4Addr::new(10, 77, 0, 42))];
    LabNet::create(cfg).unwrap()
}

static CLIENTS: AtomicU32 = AtomicU32::new(0);

/// A node stand-in: its own namespace, `eth0` a veth whose peer is on the bridge.
struct Client {
    ns: String,
    dir: PathBuf,
}

impl Client {
    fn attach(lab: &LabNet, mac: &str, dir: &Path) -> Client {
        let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
        let ns = format!("labnet-test-{}-{n}", std::process::id());
        ip(&["netns", "add", &ns]);
        let c = Client { ns, dir: dir.to_path_buf() };
        // No DAD: its link-local address (and router solicitation) at once.
        c.exec_ok(&["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"]);
        let peer = format!("vc{n}");
        ip(&[
            "-n",
            lab.name(),
            "link",
            "add",
            &peer,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            mac,
            "netns",
            &c.ns,
        ]);
        ip(&["-n", lab.name(), "link", "set", "dev", &peer, "master", "br0", "up"]);
        ip(&["-n", &c.ns, "link", "set", "dev", "lo", "up"]);
        ip(&["-n", &c.ns, "link", "set", "dev", "eth0", "up"]);
        std::fs::write(c.script(), "#!/bin/sh\n[ \"$1\" = bound ] && env > \"$0.env\"\nexit 0\n").unwrap();
        cmd("chmod", &["+x", c.script().to_str().unwrap()]);
        c
    }

    fn script(&self) -> PathBuf {
        self.dir.join(format!("{}.sh", self.ns))
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.ns];
        full.extend_from_slice(args);
        cmd("ip", &full)
    }

    fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(out.status.success(), "{args:?} in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One bounded DHCP exchange (2 tries, 1 s apart); the `bound` env on success.
    fn udhcpc(&self, extra: &[&str]) -> Option<String> {
        let _ = std::fs::remove_file(format!("{}.env", self.script().display()));
        let script = self.script();
        let mut args = vec!["busybox", "udhcpc", "-f", "-q", "-n", "-t", "2", "-T", "1", "-i", "eth0"];
        args.extend_from_slice(&["-s", script.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let out = self.exec(&args);
        let env = std::fs::read_to_string(format!("{}.env", script.display())).ok();
        assert_eq!(out.status.success(), env.is_some(), "udhcpc: {}", String::from_utf8_lossy(&out.stderr));
        env
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = cmd("ip", &["netns", "del", &self.ns]);
    }
}

fn env_var<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A TFTP read request for `hello.txt` sent from inside the lab namespace:
/// the opcode of the first reply (from the server's transfer port), within 2 s.
fn tftp_reply(lab: &LabNet) -> std::io::Result<u16> {
    let server = SocketAddrV4::new(lab.bridge_addr(), 69);
    lab.in_netns(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"\x00\x01hello.txt\x00octet\x00", server)?;
        let mut buf = [0u8; 600];
        let (n, _) = s.recv_from(&mut buf)?;
        assert!(n >= 4);
        Ok(u16::from_be_bytes([buf[0], buf[1]]))
    })
    .unwrap()
}

/// Whether the TFTP port is closed: a connected socket learns it from the
/// ICMP port-unreachable at once (ECONNREFUSED).
fn tftp_refused(lab: &LabNet) -> bool {
    let server = SocketAddrV4::new(lab.bridge_addr(), 69);
    let r = lab
        .in_netns(|| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(server)?;
            // The port-unreachable comes back at once (all local).
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            s.send(b"\x00\x01hello.txt\x00octet\x00")?;
            s.recv(&mut [0u8; 600])
        })
        .unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn taps_join_the_bridge_and_nothing_routes_out() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = lab(dir.path());
    assert!(lab.name().starts_with(&format!("devlab-{}-", std::process::id())), "{}", lab.name());
    assert!(listed(lab.name()));
    let a = lab.add_tap("node-a").unwrap();
    let b = lab.add_tap("aarch64-node-with-a-long-name").unwrap();
    assert_ne!(a, b);
    assert_eq!(lab.taps(), [a.clone(), b.clone()]);
    for tap in [&a, &b] {
        assert!(tap.len() <= 15, "{tap}");
        let j: serde_json::Value =
            serde_json::from_str(&ip(&["-j", "-n", lab.name(), "-d", "link", "show", "dev", tap])).unwrap();
        let link = &j[0];
        assert_eq!(link["master"], "br0", "{link}");
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
        assert_eq!(link["linkinfo"]["info_kind"], "tun", "{link}");
        // Not in the host's namespace.
        assert!(!cmd("ip", &["link", "show", "dev", tap]).status.success());
    }
    let br = ip(&["-n", lab.name(), "addr", "show", "dev", "br0"]);
    assert!(br.contains("inet 10.77.0.1/24") && br.contains("inet6 fd00:de71::1/64"), "{br}");
    assert_eq!(lab.bridge_addr(), Ipv4Addr::new(10, 77, 0, 1));

    // No route out: no default route, only the segment; no forwarding.
    assert_eq!(ip(&["-n", lab.name(), "-4", "route", "show", "default"]), "");
    assert_eq!(ip(&["-n", lab.name(), "-6", "route", "show", "default"]), "");
    let routes = ip(&["-n", lab.name(), "-4", "route"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.starts_with("10.77.0.0/24 dev br0"), "{routes}");
    let links = ip(&["-n", lab.name(), "-o", "link"]);
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo", "br0", a.as_str(), b.as_str()], "{links}");
    let sysctl = |key: &str| {
        let out = cmd("ip", &["netns", "exec", lab.name(), "cat", &format!("/proc/sys/net/{key}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(sysctl("ipv4/ip_forward"), "0");
    assert_eq!(sysctl("ipv6/conf/all/forwarding"), "0");
    // Written by the module from a thread inside the namespace before br0
    // existed: br0 inheriting them shows they landed in the lab's namespace.
    assert_eq!(sysctl("ipv6/conf/br0/accept_ra"), "0");
    assert_eq!(sysctl("ipv6/conf/br0/accept_dad"), "0");
}

#[test]
fn tcp_inside_the_namespace_and_children_entering_it() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = lab(dir.path());
    let listener = lab.bind_tcp(0).unwrap();
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    assert_eq!(*addr.ip(), Ipv4Addr::new(10, 77, 0, 1));
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf.to_ascii_uppercase()).unwrap();
        peer
    });
    let mut c = lab.connect_tcp(addr, Duration::from_secs(2)).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"PING");
    assert_eq!(server.join().unwrap().ip(), std::net::IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)));

    // A child process started inside the namespace (std and tokio).
    let mut std_cmd = Command::new("ip");
    std_cmd.args(["-o", "-4", "addr", "show", "dev", "br0"]);
    lab.enter_in_child(&mut std_cmd).unwrap();
    let out = std_cmd.output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.77.0.1/24"), "{out:?}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut tokio_cmd = tokio::process::Command::new("ip");
    tokio_cmd.args(["-o", "-4", "addr", "show", "dev", "br0"]);
    lab.enter_in_child_tokio(&mut tokio_cmd).unwrap();
    let out = rt.block_on(async { tokio_cmd.output().await }).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.77.0.1/24"), "{out:?}");
    // The hook owns its fd: a command prepared now may spawn after teardown.
    let mut late = Command::new("ip");
    late.args(["-o", "link", "show", "dev", "br0"]);
    lab.enter_in_child(&mut late).unwrap();
    let name = lab.name().to_string();
    lab.teardown().unwrap();
    assert!(!listed(&name));
    assert!(late.output().unwrap().status.success());
    assert!(matches!(lab.bind_tcp(0), Err(LabNetError::TornDown(_))));
    assert!(matches!(lab.enter_in_child(&mut Command::new("true")), Err(LabNetError::TornDown(_))));
}

#[test]
fn dnsmasq_serves_dhcp_tftp_and_router_advertisements_until_stopped() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = lab(dir.path());
    let a = Client::attach(&lab, MAC_A, dir.path());
    let b = Client::attach(&lab, MAC_B, dir.path());

    // A: the fixed lease and the plain boot file; the server is the bridge.
    let env = a.udhcpc(&[]).expect("A gets a lease");
    assert_eq!(env_var(&env, "ip"), Some("10.77.0.42"), "{env}");
    assert_eq!(env_var(&env, "siaddr"), Some("10.77.0.1"), "{env}");
    assert_eq!(env_var(&env, "boot_file"), Some("pxe.scr"), "{env}");
    // B says it is iPXE (option 175): a pool address and the iPXE boot file.
    let env = b.udhcpc(&["-x", "0xaf:01"]).expect("B gets a lease");
    assert_eq!(env_var(&env, "boot_file"), Some("boot.ipxe"), "{env}");
    let b_ip: Ipv4Addr = env_var(&env, "ip").unwrap().parse().unwrap();
    assert!((100..=199).contains(&b_ip.octets()[3]) && b_ip.octets()[..3] == [10, 77, 0], "{b_ip}");
    let leases = lab.leases().unwrap();
    assert!(leases.contains(&(MAC_A.to_string(), Ipv4Addr::new(10, 77, 0, 42))), "{leases:?}");
    assert!(leases.contains(&(MAC_B.to_string(), b_ip)), "{leases:?}");

    // TFTP across the bridge, from A's leased address.
    ip(&["-n", &a.ns, "addr", "add", "10.77.0.42/24", "dev", "eth0"]);
    let got = dir.path().join("got.txt");
    a.exec_ok(&["busybox", "tftp", "-g", "-r", "hello.txt", "-l", got.to_str().unwrap(), "10.77.0.1"]);
    assert_eq!(std::fs::read_to_string(&got).unwrap(), HELLO);
    assert_eq!(tftp_reply(&lab).unwrap(), 3, "a DATA packet");
    assert!(!tftp_refused(&lab));

    // Router advertisements: A autoconfigures an address in the prefix.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v6 = ip(&["-n", &a.ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
        if v6.contains("inet6 fd00:de71:") {
            break;
        }
        assert!(Instant::now() < deadline, "no router advertisement within 10 s: {v6}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The fault: DHCP and TFTP vanish...
    let pid = lab.dnsmasq_pid().unwrap();
    lab.stop_dhcp().unwrap();
    assert_eq!(lab.dnsmasq_pid(), None);
    assert!(!pid_exists(pid), "dnsmasq {pid} reaped");
    assert!(b.udhcpc(&[]).is_none(), "no DHCP while dnsmasq is stopped");
    assert!(tftp_refused(&lab), "no TFTP while dnsmasq is stopped");
    lab.stop_dhcp().unwrap();
    // ...and come back, leases kept.
    lab.start_dhcp().unwrap();
    assert_ne!(lab.dnsmasq_pid(), None);
    let env = b.udhcpc(&[]).expect("B gets a lease again");
    assert_eq!(env_var(&env, "ip").unwrap().parse::<Ipv4Addr>().unwrap(), b_ip, "{env}");
    assert_eq!(tftp_reply(&lab).unwrap(), 3);
    assert!(lab.leases().unwrap().contains(&(MAC_A.to_string(), Ipv4Addr::new(10, 77, 0, 42))));
    let log = std::fs::read_to_string(lab.dnsmasq_log()).unwrap();
    assert_eq!(log.matches("started, version").count(), 2, "{log}");
    assert!(log.contains("exiting on receipt of SIGTERM"), "{log}");
}

#[test]
fn teardown_is_idempotent_and_drop_cleans_up_on_panic() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = lab(&dir.path().join("one"));
    net.add_tap("n").unwrap();
    let (name, pid) = (net.name().to_string(), net.dnsmasq_pid().unwrap());
    net.teardown().unwrap();
    assert!(!listed(&name), "{name} deleted");
    assert!(!pid_exists(pid), "dnsmasq {pid} reaped");
    net.teardown().unwrap();
    assert!(matches!(net.add_tap("m"), Err(LabNetError::TornDown(_))));
    assert!(matches!(net.start_dhcp(), Err(LabNetError::TornDown(_))));
    drop(net);

    let seen = Mutex::new(None);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut net = lab(&dir.path().join("two"));
        net.add_tap("n").unwrap();
        *seen.lock().unwrap() = Some((net.name().to_string(), net.dnsmasq_pid().unwrap()));
        panic!("a step failed while the lab network was up");
    }));
    assert!(unwound.is_err());
    let (name, pid) = seen.lock().unwrap().take().unwrap();
    assert!(!listed(&name), "{name} deleted by Drop");
    assert!(!pid_exists(pid), "dnsmasq {pid} reaped by Drop");
}

#[test]
fn a_dead_harness_namespace_and_its_dnsmasq_are_removed() {
    if !privileged() {
        return;
    }
    // A pid that is surely gone: a reaped child's.
    let dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let _ = { dead }.wait();
    let stale = format!("devlab-{dead_pid}-0");
    ip(&["netns", "add", &stale]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = cmd("ip", &["netns", "del", &self.0]);
        }
    }
    let _guard = Del(stale.clone());
    let mut orphan = Command::new("ip")
        .args(["netns", "exec", &stale, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .args(["--pid-file=", "--log-facility=-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{}/comm", orphan.id())).unwrap_or_default().trim() != "dnsmasq" {
        assert!(Instant::now() < deadline, "the orphan dnsmasq did not start");
        std::thread::sleep(Duration::from_millis(5));
    }

    let dir = tempfile::tempdir().unwrap();
    let net = lab(dir.path());
    assert!(!listed(&stale), "{stale} removed (this create or a concurrent one did)");
    assert!(listed(net.name()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = orphan.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the orphan dnsmasq was not killed");
        std::thread::sleep(Duration::from_millis(5));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
}

#[test]
fn bad_configuration_fails_before_anything_is_made() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("labnet");
    let mut cfg = LabNetConfig::new(&run, dir.path(), "boot.ipxe");
    cfg.hosts = vec![("52:54:00:zz:00:01".into(), Ipv4Addr::new(10, 77, 0, 9))];
    let e = LabNet::create(cfg).unwrap_err();
    assert!(matches!(e, LabNetError::Config(_)), "{e}");
    assert_eq!(e.exit_code(), 2);
    let e = LabNet::create(LabNetConfig::new(&run, dir.path().join("missing"), "boot.ipxe")).unwrap_err();
    assert!(e.to_string().contains("tftp_root"), "{e}");
    assert!(!run.exists(), "nothing made");
}

#[test]
fn a_failure_half_way_through_create_leaves_nothing() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LabNetConfig::new(dir.path().join("labnet"), dir.path(), "boot.ipxe");
    cfg.extra_dnsmasq_args.push("--no-such-option".into());
    let e = LabNet::create(cfg).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LabNetError::Dnsmasq(_)), "{msg}");
    assert!(msg.contains("exited at start") && msg.contains("bad command line options"), "{msg}");
    // The namespace made before dnsmasq failed is gone again.
    let name = msg.split_whitespace().find(|w| w.starts_with("devlab-")).unwrap().trim_end_matches(':');
    assert!(name.starts_with(&format!("devlab-{}-", std::process::id())), "{msg}");
    assert!(!listed(name), "{name} left behind");
}
