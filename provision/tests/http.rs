//! The HTTP API, spoken to over 127.0.0.1 by a blocking client (ureq) the
//! way the agent and iPXE would: a whole deploy, error bodies, repeated
//! registrations, faults (HTTP 500, hang), the request log, and
//! `wait_state` woken by HTTP changes.

mod common;

use common::*;
use devlab_provision::{Endpoint, Fault, NodeState, ProfileDocument, ServerHandle, Service};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Lab {
    server: Option<ServerHandle>,
    service: Service,
    url: String,
    agent: ureq::Agent,
    rt: tokio::runtime::Runtime,
    fixture: Fixture,
}

impl Lab {
    fn start() -> Lab {
        let fixture = Fixture::new();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let service = Service::open(&fixture.db(), &fixture.profiles(), "http://10.0.2.2:9000/boot".into()).unwrap();
        service.set_request_log(&fixture.path().join("http.log"), std::time::Instant::now()).unwrap();
        let server = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            service.serve(l)
        });
        let url = server.url();
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        Lab { server: Some(server), service, url, agent, rt, fixture }
    }

    /// Method, path, optional JSON body → status, content type, body text.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String, String) {
        try_call(&self.agent, method, &format!("{}{path}", self.url), body).unwrap()
    }

    fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, ctype, text) = self.call(method, path, body);
        assert_eq!(ctype, "application/json", "{method} {path}: {text}");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}")))
    }
}

fn try_call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, String, String), Box<ureq::Error>> {
    let req = agent.request(method, url);
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(Box::new(e)),
    };
    let status = resp.status();
    let ctype = resp.header("content-type").unwrap_or("").to_string();
    Ok((status, ctype, resp.into_string().unwrap()))
}

fn register_body(uuid: &str, serial: &str, macs: &[&str]) -> Value {
    serde_json::to_value(registration(uuid, serial, macs)).unwrap()
}

#[test]
fn a_node_goes_from_pxe_to_installed() {
    let lab = Lab::start();
    let port = lab.server.as_ref().unwrap().local_addr().port();

    // An unknown node boots the management OS in register mode, for the arch iPXE names.
    let (status, ctype, script) = lab.call("GET", &format!("/ipxe/{U1}?arch=arm64"), None);
    assert_eq!((status, ctype.as_str()), (200, "text/plain; charset=utf-8"));
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "kernel http://10.0.2.2:9000/boot/mgmt/aarch64/vmlinuz initrd=initrd.img console=ttyAMA0 quiet devlab.mode=register \
             devlab.api=http://127.0.0.1:{port} devlab.uuid={U1}"
        )),
        "{script}"
    );

    let mut body = register_body(&U1.to_uppercase(), "S1", &["52:54:00:00:00:01"]);
    body["arch"] = json!("x86_64");
    body["neighbours"] = json!([{"interface": "eth0", "chassis_id": "sw1", "port_id": "ge-0/0/1"}]);
    let (status, node) = lab.json("POST", "/api/register", Some(body));
    assert_eq!(status, 201, "{node}");
    assert_eq!((node["uuid"].as_str(), node["state"].as_str()), (Some(U1), Some("REGISTERED")));
    assert_eq!(node["neighbours"][0]["port_id"], "ge-0/0/1");

    let (status, err) = lab.json("GET", &format!("/profile/{U1}"), None);
    assert_eq!(status, 404);
    assert_eq!(err["error"], format!("profile missing for node {U1}: no profile is assigned (node is REGISTERED)"));

    let (status, err) = lab.json("PUT", &format!("/api/nodes/{U1}/profile"), Some(json!({"profile": "ubuntu"})));
    assert_eq!((status, err["error"].as_str()), (404, Some("unknown profile `ubuntu` (profiles: debian)")));
    let (status, node) = lab.json("PUT", &format!("/api/nodes/{U1}/profile"), Some(json!({"profile": "debian"})));
    assert_eq!((status, node["state"].as_str(), node["profile"].as_str()), (200, Some("DEPLOY_START"), Some("debian")));

    // Now install mode, for the registered arch whatever the query says.
    let (_, _, script) = lab.call("GET", &format!("/ipxe/{U1}?arch=arm64"), None);
    assert!(
        script.contains(
            "/mgmt/x86_64/vmlinuz initrd=initrd.img console=ttyS0,115200 quiet devlab.mode=install devlab.api="
        ),
        "{script}"
    );

    let (status, doc) = lab.json("GET", &format!("/profile/{U1}"), None);
    assert_eq!(status, 200);
    let doc: ProfileDocument = serde_json::from_value(doc).unwrap();
    assert_eq!(doc.kernel, format!("http://127.0.0.1:{port}/files/debian/kernel"));
    assert_eq!(doc.image, "http://10.0.2.2:9000/boot/images/debian-12.raw");
    assert_eq!((doc.image_sha256.as_str(), doc.cmdline.as_str()), (SHA, "console=ttyS0 root=/dev/vda2"));
    assert!(doc.install_script.contains("dd if=\"$IMAGE\" of=/dev/vda"), "{}", doc.install_script);
    let kernel = lab.agent.get(&doc.kernel).call().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut kernel.into_reader(), &mut bytes).unwrap();
    assert_eq!(bytes, b"kernel bytes \x00\x01\x02");

    for msg in ["writing image", "50%"] {
        let (status, node) =
            lab.json("POST", &format!("/detail/{U1}"), Some(json!({"state": "DEPLOYING", "message": msg})));
        assert_eq!((status, node["state"].as_str()), (200, Some("DEPLOYING")));
    }
    let (status, node) = lab.json("POST", &format!("/installed/{U1}"), None);
    assert_eq!((status, node["state"].as_str()), (200, Some("INSTALLED")));

    let (_, _, script) = lab.call("GET", &format!("/ipxe/{U1}"), None);
    assert!(script.starts_with("#!ipxe\n# devlab-provision: node") && script.ends_with("\nexit\n"), "{script}");

    let (status, err) = lab.json("POST", &format!("/detail/{U1}"), Some(json!({"state": "DEPLOYING"})));
    assert_eq!(status, 409);
    assert_eq!(err, json!({"error": format!("illegal transition INSTALLED -> DEPLOYING for node {U1}")}));

    let (status, detail) = lab.json("GET", &format!("/api/nodes/{U1}"), None);
    assert_eq!(status, 200);
    let steps: Vec<(Value, Value, Value)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].clone(), t["to"].clone(), t["message"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (json!(null), json!("REGISTERED"), json!("registered: serial S1, MACs 52:54:00:00:00:01")),
            (json!("REGISTERED"), json!("DEPLOY_START"), json!("profile debian assigned")),
            (json!("DEPLOY_START"), json!("DEPLOYING"), json!("writing image")),
            (json!("DEPLOYING"), json!("DEPLOYING"), json!("50%")),
            (json!("DEPLOYING"), json!("INSTALLED"), json!("installed")),
        ]
    );
    let (status, all) = lab.json("GET", "/api/nodes", None);
    assert_eq!((status, all.as_array().unwrap().len()), (200, 1));
    assert!(all[0].get("history").is_none(), "the list has no history");

    // Every request is in the log, in memory and on disk.
    let reqs = lab.service.requests();
    assert_eq!(reqs.len(), 15, "{reqs:#?}");
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str(), reqs[0].status),
        ("GET", format!("/ipxe/{U1}?arch=arm64").as_str(), 200)
    );
    assert_eq!((reqs[1].path.as_str(), reqs[1].status), ("/api/register", 201));
    let log = std::fs::read_to_string(lab.fixture.path().join("http.log")).unwrap();
    assert!(log.contains(&format!("] PUT /api/nodes/{U1}/profile -> 404\n")), "{log}");
    assert!(log.contains(&format!("] POST /detail/{U1} -> 409\n")), "{log}");
    assert_eq!(log.lines().count(), 15, "{log}");
}

#[test]
fn bad_requests_answer_json_errors() {
    let lab = Lab::start();
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/api/register".into(),
            Some(register_body("4c4c4544", "S", &["52:54:00:00:00:01"])),
            400,
            "is not a canonical UUID",
        ),
        ("POST", "/api/register".into(), Some(register_body(U1, "S", &[])), 400, "no MAC address given"),
        (
            "POST",
            "/api/register".into(),
            Some(register_body(U1, "S", &["52:54:00:00:01"])),
            400,
            "is not a valid MAC address",
        ),
        ("POST", "/api/register".into(), Some(json!({"uuid": U1})), 400, "missing field `serial`"),
        (
            "POST",
            "/api/register".into(),
            Some(
                json!({"uuid": U1, "serial": "s", "vendor": "v", "model": "m", "macs": ["52:54:00:00:00:01"], "color": "red"}),
            ),
            400,
            "unknown field `color`",
        ),
        ("GET", "/ipxe/not-a-uuid".into(), None, 400, "`not-a-uuid` is not a canonical UUID"),
        ("GET", format!("/ipxe/{U1}?arch=riscv64"), None, 400, "unknown arch `riscv64`"),
        ("POST", format!("/detail/{U1}"), Some(json!({"state": "INSTALLED"})), 400, "not INSTALLED"),
        ("POST", format!("/detail/{U1}"), Some(json!({"state": "deploying"})), 400, "unknown variant `deploying`"),
        ("POST", format!("/detail/{U1}"), Some(json!({"state": "DEPLOYING"})), 404, "unknown node"),
        ("POST", format!("/installed/{U1}"), None, 404, "unknown node"),
        ("GET", format!("/api/nodes/{U1}"), None, 404, "unknown node"),
        ("GET", "/files/debian/rootfs".into(), None, 400, "no file `rootfs`"),
        ("GET", "/nothing/here".into(), None, 404, "no such endpoint: GET /nothing/here"),
        ("GET", "/api/register".into(), None, 405, "method GET not allowed on /api/register"),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, err) = lab.json(method, &path, body);
        assert_eq!(got, status, "{method} {path}: {err}");
        let text = err["error"].as_str().unwrap_or_else(|| panic!("{method} {path}: {err}"));
        assert!(text.contains(needle), "{method} {path}: {text}");
    }
    // Malformed JSON.
    let resp = lab.agent.post(&format!("{}/api/register", lab.url)).send_string("{not json");
    let Err(ureq::Error::Status(400, r)) = resp else { panic!("expected 400") };
    assert!(r.into_string().unwrap().starts_with("{\"error\":\"invalid request body: "));
}

#[test]
fn repeated_registrations_over_http() {
    let lab = Lab::start();
    let body = register_body(U1, "S1", &["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    assert_eq!(lab.json("POST", "/api/register", Some(body.clone())).0, 201);
    lab.json("PUT", &format!("/api/nodes/{U1}/profile"), Some(json!({"profile": "debian"})));
    let (status, node) = lab.json("POST", "/api/register", Some(body));
    assert_eq!((status, node["state"].as_str()), (200, Some("DEPLOY_START")), "idempotent, state kept");

    let (status, err) = lab.json("POST", "/api/register", Some(register_body(U1, "S2", &["52:54:00:00:00:01"])));
    assert_eq!(status, 409);
    assert!(err["error"].as_str().unwrap().contains("registered with serial `S1`"), "{err}");
    let (status, err) = lab.json("POST", "/api/register", Some(register_body(U2, "S2", &["52:54:00:00:00:02"])));
    assert_eq!(status, 409);
    assert_eq!(err["error"], format!("registration of node {U2} refused: MAC 52:54:00:00:00:02 belongs to node {U1}"));
}

#[test]
fn error500_fault_answers_500_for_count_requests_then_normally() {
    let lab = Lab::start();
    lab.service.fault(Endpoint::Register, Fault::Error500 { count: 1 });
    lab.service.fault(Endpoint::Ipxe, Fault::Error500 { count: 2 });
    assert_eq!(lab.service.faults_pending(Endpoint::Ipxe), 2);

    let body = register_body(U1, "S1", &["52:54:00:00:00:01"]);
    let (status, err) = lab.json("POST", "/api/register", Some(body.clone()));
    assert_eq!((status, err["error"].as_str()), (500, Some("fault injected: HTTP 500 on register")));
    assert!(lab.service.nodes().unwrap().is_empty(), "a faulted request is not processed");
    assert_eq!(lab.json("POST", "/api/register", Some(body)).0, 201);

    for _ in 0..2 {
        assert_eq!(lab.call("GET", &format!("/ipxe/{U1}"), None).0, 500);
    }
    // Other endpoints were never affected; the faults are used up.
    assert_eq!(lab.json("GET", "/api/nodes", None).0, 200);
    let (status, _, script) = lab.call("GET", &format!("/ipxe/{U1}"), None);
    assert_eq!(status, 200);
    assert!(script.starts_with("#!ipxe"));
    assert_eq!(lab.service.faults_pending(Endpoint::Ipxe), 0);

    let faulted: Vec<(u16, Option<String>)> =
        lab.service.requests().into_iter().filter(|r| r.fault.is_some()).map(|r| (r.status, r.fault)).collect();
    assert_eq!(faulted, vec![(500, Some("HTTP 500".to_string())); 3]);
    let log = std::fs::read_to_string(lab.fixture.path().join("http.log")).unwrap();
    assert!(log.contains("fault armed on ipxe: HTTP 500 (next 2 request(s))"), "{log}");
    assert!(log.contains(&format!("GET /ipxe/{U1} -> 500 [fault: HTTP 500]")), "{log}");
}

#[test]
fn hang_fault_makes_the_client_time_out_then_the_service_answers() {
    let mut lab = Lab::start();
    lab.service.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
    lab.service.assign(U1, "debian").unwrap();
    lab.service.fault(Endpoint::Profile, Fault::Hang { count: 1, seconds: 600 });

    let impatient = ureq::AgentBuilder::new().timeout(Duration::from_millis(300)).build();
    let t = Instant::now();
    let err = try_call(&impatient, "GET", &format!("{}/profile/{U1}", lab.url), None).unwrap_err();
    assert!(matches!(*err, ureq::Error::Transport(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("timed out"), "{err}");
    assert!(t.elapsed() >= Duration::from_millis(300));

    // The next request is served normally, while the first still hangs or was dropped.
    let (status, doc) = lab.json("GET", &format!("/profile/{U1}"), None);
    assert_eq!((status, doc["name"].as_str()), (200, Some("debian")));

    // Shutting down ends the hang at once, and the hung request is recorded.
    let t = Instant::now();
    let server = lab.server.take().unwrap();
    lab.rt.block_on(server.shutdown()).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let hung: Vec<_> = lab.service.requests().into_iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert_eq!(hung[0].fault.as_deref(), Some("hang 600 s"));
    assert!([499, 503].contains(&hung[0].status), "{hung:?}");
    assert!(try_call(&lab.agent, "GET", &format!("{}/api/nodes", lab.url), None).is_err(), "server stopped");
}

#[test]
fn a_short_hang_answers_503_late_and_processes_nothing() {
    let lab = Lab::start();
    lab.service.fault(Endpoint::Register, Fault::Hang { count: 1, seconds: 1 });
    let t = Instant::now();
    let (status, err) = lab.json("POST", "/api/register", Some(register_body(U1, "S1", &["52:54:00:00:00:01"])));
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("fault injected: register hung for 1 s; request not processed"))
    );
    assert!(lab.service.nodes().unwrap().is_empty());
    assert_eq!(lab.json("POST", "/api/register", Some(register_body(U1, "S1", &["52:54:00:00:00:01"]))).0, 201);
}

#[test]
fn wait_state_wakes_on_http_changes() {
    let lab = Lab::start();
    let service = lab.service.clone();
    let waiter =
        lab.rt.spawn(async move { service.wait_state(U1, NodeState::Installed, Duration::from_secs(30)).await });
    lab.json("POST", "/api/register", Some(register_body(U1, "S1", &["52:54:00:00:00:01"])));
    lab.json("PUT", &format!("/api/nodes/{U1}/profile"), Some(json!({"profile": "debian"})));
    lab.json("POST", &format!("/detail/{U1}"), Some(json!({"state": "DEPLOYING", "message": "dd"})));
    assert!(!waiter.is_finished(), "not installed yet");
    lab.json("POST", &format!("/installed/{U1}"), None);
    let t = Instant::now();
    let node = lab.rt.block_on(waiter).unwrap().unwrap();
    assert_eq!(node.state, NodeState::Installed);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_failed_node_is_not_booted_and_asks_again() {
    let lab = Lab::start();
    lab.json("POST", "/api/register", Some(register_body(U1, "S1", &["52:54:00:00:00:01"])));
    lab.json("PUT", &format!("/api/nodes/{U1}/profile"), Some(json!({"profile": "debian"})));
    let (status, node) = lab.json(
        "POST",
        &format!("/detail/{U1}"),
        Some(json!({"state": "UNRECOVERABLE_ERROR", "message": "sha256 mismatch"})),
    );
    assert_eq!((status, node["state"].as_str()), (200, Some("UNRECOVERABLE_ERROR")));
    let (_, _, script) = lab.call("GET", &format!("/ipxe/{U1}"), None);
    assert!(script.contains("UNRECOVERABLE_ERROR: sha256 mismatch\n"), "{script}");
    assert!(!script.contains("\nkernel") && !script.contains("\nexit"), "{script}");
    assert!(
        script.contains(&format!("chain --replace --autofree {}/ipxe/{U1}?arch=${{buildarch}}", lab.url)),
        "{script}"
    );
    // Re-provisioned: the same URL now answers install mode.
    lab.json("PUT", &format!("/api/nodes/{U1}/profile"), Some(json!({"profile": "debian"})));
    let (_, _, script) = lab.call("GET", &format!("/ipxe/{U1}"), None);
    assert!(script.contains("devlab.mode=install"), "{script}");
}

#[test]
fn a_busybox_agent_gets_the_profile_as_shell_and_files_from_the_boot_folder() {
    let fixture = Fixture::new();
    let boot = fixture.path().join("boot");
    std::fs::create_dir_all(boot.join("mgmt/x86_64")).unwrap();
    std::fs::write(boot.join("mgmt/x86_64/vmlinuz"), b"mgmt kernel").unwrap();
    std::fs::write(fixture.path().join("secret"), b"outside").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let service = Service::open_serving(&fixture.db(), &fixture.profiles(), &boot).unwrap();
    let server = rt.block_on(async { service.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()) });
    let url = server.url();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let get = |path: &str| try_call(&agent, "GET", &format!("{url}{path}"), None).unwrap();

    service.register(registration(U1, "S1", &["52:54:00:00:00:01"])).unwrap();
    service.assign(U1, "debian").unwrap();
    // The boot base is this service, as the node reached it.
    let (status, _, script) = get(&format!("/ipxe/{U1}"));
    assert_eq!(status, 200);
    assert!(script.contains(&format!("kernel {url}/boot/mgmt/x86_64/vmlinuz ")), "{script}");

    let (status, ctype, sh) = get(&format!("/profile/{U1}?format=sh"));
    assert_eq!((status, ctype.as_str()), (200, "text/plain; charset=utf-8"), "{sh}");
    assert!(sh.contains(&format!("PROFILE_IMAGE='{url}/boot/images/debian-12.raw'\n")), "{sh}");
    assert!(sh.contains(&format!("PROFILE_IMAGE_SHA256='{SHA}'\n")), "{sh}");
    assert!(sh.contains("PROFILE_NAME='debian'\n"), "{sh}");
    let (status, _, body) = get(&format!("/profile/{U1}?format=yaml"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown format `yaml`"), "{body}");

    let (status, _, install) = get(&format!("/profile/{U1}/install.sh"));
    assert_eq!(status, 200);
    assert_eq!(install, "#!/bin/sh\ndd if=\"$IMAGE\" of=/dev/vda bs=4M\n");

    let (status, _, kernel) = get("/boot/mgmt/x86_64/vmlinuz");
    assert_eq!((status, kernel.as_str()), (200, "mgmt kernel"));
    for bad in ["/boot/../secret", "/boot/mgmt/../../secret", "/boot/missing"] {
        let (status, _, body) = get(bad);
        assert_eq!(status, 404, "{bad}: {body}");
        assert!(!body.contains("outside"), "{bad}: {body}");
    }
    rt.block_on(server.shutdown()).unwrap();
}

#[test]
fn shell_profile_values_cannot_expand_when_sourced() {
    let doc = ProfileDocument {
        name: "p".into(),
        kernel: "k".into(),
        initrd: "i".into(),
        cmdline: "a='b' $(reboot) `x`".into(),
        image: "http://h/i".into(),
        image_sha256: SHA.into(),
        install_script: String::new(),
    };
    let sh = doc.to_shell();
    assert!(sh.contains("PROFILE_CMDLINE='a='\\''b'\\'' $(reboot) `x`'\n"), "{sh}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{sh}\nprintf %s \"$PROFILE_CMDLINE\""))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a='b' $(reboot) `x`");
}
