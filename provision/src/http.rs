//! The HTTP/JSON API (axum). Node-facing: `POST /api/register`,
//! `GET /ipxe/{uuid}` (text/plain iPXE script), `GET /profile/{uuid}`,
//! `GET /profile/{uuid}?format=sh` (the same as shell assignments, for a
//! busybox agent), `GET /profile/{uuid}/install.sh`, `POST /detail/{uuid}`,
//! `POST /installed/{uuid}`, `GET /files/{profile}/kernel|initrd` (the files
//! a profile names) and `GET /boot/...` (the boot folder, when the service
//! serves one: management OS, images).
//! Operator: `GET /api/nodes`, `GET /api/nodes/{uuid}` (with history),
//! `PUT /api/nodes/{uuid}/profile`. Bodies are JSON; every error is
//! `{"error": "..."}` with the status [`ProvisionError::status`] gives
//! (bodies are parsed here, not by an extractor, so a bad body is a JSON 400
//! too). Unknown fields in bodies are refused.
//!
//! URLs handed to the node (`devlab.api=`, profile kernel/initrd) are built
//! from the request's `Host` header, i.e. this service as the node reached
//! it (`10.0.2.2:PORT` from a QEMU guest), else the listening address.
//!
//! Every request is recorded (method, path with query, status, fault) when
//! its answer is ready; a request whose client went away first (a hang that
//! outlived the client's timeout) is recorded with status 499.

use crate::error::ProvisionError;
use crate::fault::{Endpoint, Fault};
use crate::node::Registration;
use crate::service::{RequestRecord, Service};
use crate::state::NodeState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
struct App {
    service: Service,
    local: SocketAddr,
    /// Turns true when the server shuts down (ends hangs).
    stop: watch::Receiver<bool>,
}

/// Status recorded for a request whose client closed the connection first.
pub const CLIENT_GONE: u16 = 499;

pub(crate) fn router(service: Service, local: SocketAddr, stop: watch::Receiver<bool>) -> Router {
    let app = App { service, local, stop };
    let gate = |ep: Endpoint| middleware::from_fn_with_state((app.clone(), ep), fault_gate);
    Router::new()
        .route("/api/register", post(register).route_layer(gate(Endpoint::Register)))
        .route("/ipxe/:uuid", get(ipxe).route_layer(gate(Endpoint::Ipxe)))
        .route("/profile/:uuid", get(profile).route_layer(gate(Endpoint::Profile)))
        .route("/profile/:uuid/install.sh", get(install_script).route_layer(gate(Endpoint::Profile)))
        .route("/boot/*path", get(boot_file))
        .route("/detail/:uuid", post(detail).route_layer(gate(Endpoint::Detail)))
        .route("/installed/:uuid", post(installed).route_layer(gate(Endpoint::Installed)))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/:uuid", get(node))
        .route("/api/nodes/:uuid/profile", put(assign))
        .route("/files/:profile/:which", get(file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), record_requests))
        .with_state(app)
}

/// An error answered as `{"error": "..."}`.
struct ApiError(ProvisionError);

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.0.status(), &self.0.to_string())
    }
}

fn json(status: u16, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("plain data serialises");
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError(ProvisionError::BadRequest(format!("invalid request body: {e}"))))
}

/// This service as the client reached it: `http://<Host>`, or the
/// listening address when the header is missing or odd.
fn api_base(headers: &HeaderMap, local: SocketAddr) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)));
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{local}"),
    }
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
}

async fn register(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let reg: Registration = parse_body(&body)?;
    let (node, what) = app.service.register(reg)?;
    let status = if what == crate::store::Registered::Created { 201 } else { 200 };
    Ok(json(status, &node))
}

async fn ipxe(
    State(app): State<App>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let arch = query_param(&uri, "arch");
    Ok(text(app.service.ipxe_script(&uuid, arch.as_deref(), &api_base(&headers, app.local))?))
}

async fn profile(
    State(app): State<App>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let p = app.service.profile_of(&uuid)?;
    let api = api_base(&headers, app.local);
    let doc = p.document(&api, &app.service.boot_base_for(&api));
    match query_param(&uri, "format").as_deref() {
        None | Some("json") => Ok(json(200, &doc)),
        Some("sh") => Ok(text(doc.to_shell())),
        Some(other) => Err(ApiError(ProvisionError::BadRequest(format!("unknown format `{other}` (json or sh)")))),
    }
}

async fn install_script(State(app): State<App>, Path(uuid): Path<String>) -> Result<Response, ApiError> {
    Ok(text(app.service.profile_of(&uuid)?.install_script))
}

fn text(body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// A file of the boot folder (the management OS, images).
async fn boot_file(State(app): State<App>, Path(rel): Path<String>) -> Result<Response, ApiError> {
    let Some(path) = app.service.boot_file(&rel) else {
        return Ok(error_response(404, &format!("no such boot file: /boot/{rel}")));
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            Ok(r)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(error_response(404, &format!("no such boot file: /boot/{rel}")))
        }
        Err(e) => Err(ApiError(ProvisionError::io(&path)(e))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailBody {
    state: NodeState,
    #[serde(default)]
    message: String,
}

async fn detail(State(app): State<App>, Path(uuid): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let b: DetailBody = parse_body(&body)?;
    Ok(json(200, &app.service.detail(&uuid, b.state, &b.message)?))
}

/// The body, if any, is read and ignored.
async fn installed(State(app): State<App>, Path(uuid): Path<String>, _body: Bytes) -> Result<Response, ApiError> {
    Ok(json(200, &app.service.installed(&uuid)?))
}

async fn nodes(State(app): State<App>) -> Result<Response, ApiError> {
    Ok(json(200, &app.service.nodes()?))
}

async fn node(State(app): State<App>, Path(uuid): Path<String>) -> Result<Response, ApiError> {
    Ok(json(200, &app.service.node(&uuid)?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    profile: String,
}

async fn assign(State(app): State<App>, Path(uuid): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let b: AssignBody = parse_body(&body)?;
    Ok(json(200, &app.service.assign(&uuid, &b.profile)?))
}

async fn file(State(app): State<App>, Path((name, which)): Path<(String, String)>) -> Result<Response, ApiError> {
    let profiles = app.service.profiles();
    let p = profiles
        .get(&name)
        .ok_or_else(|| ProvisionError::UnknownProfile { name: name.clone(), known: profiles.names() })?;
    let path = match which.as_str() {
        "kernel" => &p.kernel,
        "initrd" => &p.initrd,
        _ => return Err(ApiError(ProvisionError::BadRequest(format!("no file `{which}` (kernel or initrd)")))),
    };
    let bytes = tokio::fs::read(path).await.map_err(ProvisionError::io(path))?;
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(r)
}

// Bodies are read even when unused: a connection with an unread body is
// not reused by hyper, and a client that pooled it would see it closed.
async fn not_found(method: Method, uri: Uri, _body: Bytes) -> Response {
    error_response(404, &format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri, _body: Bytes) -> Response {
    error_response(405, &format!("method {method} not allowed on {}", uri.path()))
}

/// Where the fault gate tells the recorder which fault answered.
#[derive(Clone, Default)]
struct FaultSlot(Arc<Mutex<Option<String>>>);

async fn fault_gate(State((app, ep)): State<(App, Endpoint)>, req: Request, next: Next) -> Response {
    let Some(fault) = app.service.take_fault(ep) else { return next.run(req).await };
    if let Some(slot) = req.extensions().get::<FaultSlot>() {
        *slot.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault.name());
    }
    // Read the body the client sent, so the connection stays reusable.
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    match fault {
        Fault::Error500 { .. } => error_response(500, &format!("fault injected: HTTP 500 on {ep}")),
        Fault::Hang { seconds, .. } => {
            // The fault itself (its length, not a wait for something): hold
            // the answer back for `seconds`, or until shutdown.
            let mut stop = app.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            error_response(503, &format!("fault injected: {ep} hung for {seconds} s; request not processed"))
        }
    }
}

/// Records the request when dropped: with the answer's status, or 499 if
/// the request was dropped before it had one (the client went away).
struct Recorder {
    service: Service,
    method: String,
    path: String,
    status: Option<u16>,
    fault: FaultSlot,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let fault = self.fault.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.service.record(RequestRecord {
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: self.status.unwrap_or(CLIENT_GONE),
            fault,
        });
    }
}

async fn record_requests(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let slot = FaultSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut rec = Recorder {
        service: app.service.clone(),
        method: req.method().to_string(),
        path: req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string()),
        status: None,
        fault: slot,
    };
    let resp = next.run(req).await;
    rec.status = Some(resp.status().as_u16());
    resp
}
