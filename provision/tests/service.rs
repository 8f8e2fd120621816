//! The in-process API the harness uses: registration rules, persistence
//! across a reopen, profile errors at open, `wait_state`, `state_table`.

mod common;

use common::*;
use devlab_provision::{NodeState, ProvisionError, Registered, Service};
use std::time::{Duration, Instant};

fn open(f: &Fixture) -> Service {
    Service::open(&f.db(), &f.profiles(), "http://10.0.2.2:9000/boot/".into()).unwrap()
}

#[test]
fn repeated_registration_is_idempotent_and_refreshes_details() {
    let f = Fixture::new();
    let s = open(&f);
    let (n, what) = s.register(registration(U1, "S1", &["52:54:00:00:00:01", "52:54:00:00:00:02"])).unwrap();
    assert_eq!((what, n.state), (Registered::Created, NodeState::Registered));

    // Same serial, same MAC set (other order, other spelling): refreshed.
    let mut again = registration(&U1.to_uppercase(), "S1", &["52-54-00-00-00-02", "52:54:00:00:00:01"]);
    again.firmware.insert("bios".into(), "1.17.0".into());
    let (n, what) = s.register(again.clone()).unwrap();
    assert_eq!((what, n.state), (Registered::Refreshed, NodeState::Registered));
    assert_eq!(n.firmware["bios"], "1.17.0");
    assert_eq!(s.node(U1).unwrap().history.len(), 1, "a refresh is not a transition");

    // Mid-deploy, a repeated registration keeps the state.
    s.assign(U1, "debian").unwrap();
    let (n, what) = s.register(again).unwrap();
    assert_eq!((what, n.state, n.profile.as_deref()), (Registered::Refreshed, NodeState::DeployStart, Some("debian")));
}

#[test]
fn conflicting_registrations_are_refused() {
    let f = Fixture::new();
    let s = open(&f);
    s.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();

    let e = s.register(registration(U1, "S9", &["52:54:00:00:00:01"])).unwrap_err();
    assert_eq!(e.status(), 409);
    assert_eq!(
        e.to_string(),
        format!(
            "registration of node {U1} refused: it is registered with serial `S1`, this registration has serial `S9`"
        )
    );

    let e = s.register(registration(U1, "S1", &["52:54:00:00:00:01", "52:54:00:00:00:03"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "registration of node {U1} refused: it is registered with MACs [52:54:00:00:00:01], this registration \
             has [52:54:00:00:00:01, 52:54:00:00:00:03]"
        )
    );

    let e = s.register(registration(U2, "S2", &["52:54:00:00:00:09", "52:54:00:00:00:01"])).unwrap_err();
    assert_eq!(e.to_string(), format!("registration of node {U2} refused: MAC 52:54:00:00:00:01 belongs to node {U1}"));
    assert!(matches!(s.node(U2), Err(ProvisionError::UnknownNode(_))), "nothing of the refused node was written");
    assert_eq!(s.nodes().unwrap().len(), 1);
    let e = s.register(registration(U2, "S2", &[])).unwrap_err();
    assert_eq!(e.status(), 400);
}

#[test]
fn a_reopened_service_has_every_node_and_its_history() {
    let f = Fixture::new();
    let before = {
        let s = open(&f);
        s.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
        s.register(registration(U2, "S2", &["52:54:00:00:00:02"])).unwrap();
        s.assign(U1, "debian").unwrap();
        s.detail(U1, NodeState::Deploying, "writing image").unwrap();
        (s.node(U1).unwrap(), s.nodes().unwrap())
    };
    let s = open(&f);
    let (detail, nodes) = (s.node(U1).unwrap(), s.nodes().unwrap());
    assert_eq!((&detail, &nodes), (&before.0, &before.1));
    assert_eq!((detail.node.state, detail.node.profile.as_deref()), (NodeState::Deploying, Some("debian")));
    let steps: Vec<_> = detail.history.iter().map(|t| (t.from, t.to, t.message.as_str())).collect();
    assert_eq!(
        steps,
        [
            (None, NodeState::Registered, "registered: serial S1, MACs 52:54:00:00:00:01"),
            (Some(NodeState::Registered), NodeState::DeployStart, "profile debian assigned"),
            (Some(NodeState::DeployStart), NodeState::Deploying, "writing image"),
        ]
    );
    // The reopened service goes on from there.
    s.installed(U1).unwrap();
    assert_eq!(s.node(U1).unwrap().history.len(), 4);
}

#[test]
fn transitions_are_checked_whoever_asks() {
    let f = Fixture::new();
    let s = open(&f);
    s.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
    let e = s.installed(U1).unwrap_err();
    assert_eq!(e.to_string(), format!("illegal transition REGISTERED -> INSTALLED for node {U1}"));
    let e = s.assign(U1, "ubuntu").unwrap_err();
    assert_eq!((e.status(), e.to_string()), (404, "unknown profile `ubuntu` (profiles: debian)".to_string()));
    s.assign(U1, "debian").unwrap();
    let e = s.assign(U1, "debian").unwrap_err();
    assert_eq!(e.to_string(), format!("illegal transition DEPLOY_START -> DEPLOY_START for node {U1}"));
    s.detail(U1, NodeState::UnrecoverableError, "no disk").unwrap();
    // Re-provision after an error.
    assert_eq!(s.assign(U1, "debian").unwrap().state, NodeState::DeployStart);
    assert!(matches!(s.assign(U3, "debian"), Err(ProvisionError::UnknownNode(_))));
}

#[test]
fn profile_missing_is_a_clear_error() {
    let f = Fixture::new();
    {
        let s = open(&f);
        s.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
        let e = s.profile_of(U1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("profile missing for node {U1}: no profile is assigned (node is REGISTERED)")
        );
        s.assign(U1, "debian").unwrap();
        assert_eq!(s.profile_of(U1).unwrap().name, "debian");
    }
    // Reopened with a profile directory that no longer has it.
    std::fs::remove_file(f.profiles().join("debian.toml")).unwrap();
    let s = open(&f);
    let e = s.profile_of(U1).unwrap_err();
    assert_eq!(e.status(), 404);
    assert_eq!(
        e.to_string(),
        format!(
            "profile missing for node {U1}: it is assigned profile `debian`, which is not in {}",
            f.profiles().display()
        )
    );
}

#[test]
fn a_broken_profile_stops_the_service_from_opening() {
    let f = Fixture::new();
    std::fs::write(
        f.profiles().join("broken.toml"),
        format!(
            "kernel = \"debian/vmlinuz\"\ninitrd = \"debian/initrd-missing.img\"\ncmdline = \"\"\nimage = \"x\"\n\
             image_sha256 = \"{SHA}\"\ninstall_script = \"true\"\n"
        ),
    )
    .unwrap();
    let e = Service::open(&f.db(), &f.profiles(), "http://b".into()).err().unwrap();
    let ProvisionError::Profile(p) = &e else { panic!("{e}") };
    assert_eq!((p.line, p.column, p.field.as_deref()), (2, 10, Some("initrd")));
    assert!(
        e.to_string().starts_with(&format!(
            "{}:2:10: field `initrd`: initrd file `debian/initrd-missing.img` does not exist",
            f.profiles().join("broken.toml").display()
        )),
        "{e}"
    );
}

#[test]
fn state_table_is_stable_and_sorted() {
    let f = Fixture::new();
    let s = open(&f);
    assert_eq!(s.state_table(), "UUID  SERIAL  STATE  PROFILE  MACS\n");
    s.register(registration(U3, "SER-3", &["52:54:00:00:00:03"])).unwrap();
    s.register(registration(U1, "S1", &["52:54:00:00:00:1b", "52:54:00:00:00:1a"])).unwrap();
    s.register(registration(U2, "", &["52:54:00:00:00:02"])).unwrap();
    s.assign(U3, "debian").unwrap();
    s.detail(U3, NodeState::Deploying, "").unwrap();
    insta::assert_snapshot!(s.state_table(), @r"
    UUID                                  SERIAL  STATE       PROFILE  MACS
    1b4e28ba-2fa1-11d2-883f-0016d3cca427  -       REGISTERED  -        52:54:00:00:00:02
    4c4c4544-0042-3010-8052-b4c04f4e3732  S1      REGISTERED  -        52:54:00:00:00:1a,52:54:00:00:00:1b
    6ba7b810-9dad-11d1-80b4-00c04fd430c8  SER-3   DEPLOYING   debian   52:54:00:00:00:03
    ");
    assert_eq!(s.state_table(), open(&f).state_table(), "the same after a reopen");
}

#[tokio::test]
async fn wait_state_returns_when_the_state_is_reached() {
    let f = Fixture::new();
    let s = open(&f);
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.wait_state(U1, NodeState::Installed, Duration::from_secs(20)).await }
    });
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        s2.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
        s2.assign(U1, "debian").unwrap();
        s2.detail(U1, NodeState::Deploying, "10%").unwrap();
        s2.installed(U1).unwrap();
    })
    .await
    .unwrap();
    let t = Instant::now();
    let node = waiter.await.unwrap().unwrap();
    assert_eq!(node.state, NodeState::Installed);
    assert!(t.elapsed() < Duration::from_secs(5), "woken by the change, not a timeout");
    // Already there: at once.
    assert_eq!(s.wait_state(U1, NodeState::Installed, Duration::ZERO).await.unwrap().uuid, U1);
}

#[tokio::test]
async fn wait_state_times_out_with_the_state_it_saw() {
    let f = Fixture::new();
    let s = open(&f);
    s.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
    let t = Instant::now();
    let e = s.wait_state(U1, NodeState::Installed, Duration::from_millis(200)).await.unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        e.to_string(),
        format!("timed out after 200ms waiting for node {U1} to reach INSTALLED (it is REGISTERED)")
    );
    let e = s.wait_state(U2, NodeState::Registered, Duration::from_millis(50)).await.unwrap_err();
    assert!(e.to_string().ends_with("(it is not registered)"), "{e}");
}

#[tokio::test]
async fn wait_state_fails_early_when_the_node_fails() {
    let f = Fixture::new();
    let s = open(&f);
    s.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
    s.assign(U1, "debian").unwrap();
    let s2 = s.clone();
    // join! polls the wait first: it has subscribed before the failure lands.
    let (res, ()) = tokio::join!(s.wait_state(U1, NodeState::Installed, Duration::from_secs(20)), async move {
        tokio::task::spawn_blocking(move || s2.detail(U1, NodeState::UnrecoverableError, "sha256 mismatch").unwrap())
            .await
            .unwrap();
    });
    let e = res.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("node {U1} went to UNRECOVERABLE_ERROR while waiting for INSTALLED: sha256 mismatch")
    );
    // Waiting for the error itself succeeds.
    let n = s.wait_state(U1, NodeState::UnrecoverableError, Duration::ZERO).await.unwrap();
    assert_eq!(n.state, NodeState::UnrecoverableError);
}

/// U-Boot nodes: the TFTP folder follows every change, and a reopened
/// service writes the same files (they come from the database).
#[test]
fn pxelinux_files_follow_the_node_states() {
    let f = Fixture::new();
    let tftp = f.path().join("tftp");
    let s = open(&f);
    s.serve_pxelinux(&tftp, "http://10.0.2.2:9000/").unwrap();
    let script = std::fs::read(tftp.join("boot.scr.uimg")).unwrap();
    assert_eq!(&script[..4], &[0x27, 0x05, 0x19, 0x56], "a U-Boot legacy image");
    let default = std::fs::read_to_string(tftp.join("pxelinux.cfg/default-arm")).unwrap();
    assert!(default.contains("devlab.mode=register devlab.api=http://10.0.2.2:9000\n"), "{default}");

    let mut reg = registration(U1, "S1", &["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    reg.arch = Some(devlab_provision::Arch::Aarch64);
    s.register(reg).unwrap();
    let read = |mac: &str| std::fs::read_to_string(tftp.join(format!("pxelinux.cfg/01-{mac}"))).unwrap();
    for mac in ["52-54-00-00-00-01", "52-54-00-00-00-02"] {
        assert!(read(mac).contains(&format!("devlab.mode=register devlab.api=http://10.0.2.2:9000 devlab.uuid={U1}\n")));
    }
    s.assign(U1, "debian").unwrap();
    assert!(read("52-54-00-00-00-01").contains(" devlab.mode=install "), "{}", read("52-54-00-00-00-01"));
    s.detail(U1, NodeState::UnrecoverableError, "disk write failed").unwrap();
    let failed = read("52-54-00-00-00-02");
    assert!(failed.contains("UNRECOVERABLE_ERROR: disk write failed\n") && !failed.contains("kernel"), "{failed}");

    // Another process (or a restart) renders the same files from the database.
    drop(s);
    std::fs::remove_dir_all(&tftp).unwrap();
    open(&f).serve_pxelinux(&tftp, "http://10.0.2.2:9000").unwrap();
    assert_eq!(read("52-54-00-00-00-02"), failed);
    let leftovers: Vec<_> = std::fs::read_dir(tftp.join("pxelinux.cfg"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
}

#[test]
fn a_reopened_service_keeps_the_request_logs_clock() {
    let f = Fixture::new();
    let log = f.path().join("requests.log");
    // The lab started 100 s ago; the service is reopened now (a restart).
    let t0 = Instant::now().checked_sub(Duration::from_secs(100)).unwrap();
    for _ in 0..2 {
        let s = open(&f);
        s.set_request_log(&log, t0).unwrap();
        s.fault(devlab_provision::Endpoint::Profile, devlab_provision::Fault::Error500 { count: 1 });
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let times: Vec<f64> = text.lines().map(|l| l[1..l.find(']').unwrap()].trim().parse().unwrap()).collect::<Vec<_>>();
    assert_eq!(times.len(), 2, "{text}");
    assert!(times.iter().all(|t| (100.0..200.0).contains(t)), "{text}");
    assert!(times[0] <= times[1], "{text}");
}
