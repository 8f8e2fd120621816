//! devlab-provision: the provisioning service of a bare-metal lab.
//!
//! A node with an empty disk PXE-boots iPXE, which chains `/ipxe/${uuid}`
//! from this service; the management OS it boots registers the node
//! (`POST /api/register`) and powers off. An operator assigns a profile
//! (`PUT /api/nodes/{uuid}/profile`); the next boot chains the same URL,
//! now answered with install mode; the agent fetches `/profile/{uuid}`,
//! reports progress (`/detail/{uuid}`), writes the image, reports
//! `/installed/{uuid}` and reboots; iPXE then exits to the disk.
//!
//! States: `REGISTERED -> DEPLOY_START -> DEPLOYING -> INSTALLED`, or
//! `UNRECOVERABLE_ERROR` ([`state`] holds the one transition table).
//!
//! | module | what it is for |
//! |---|---|
//! | [`error`] | `ProvisionError` (each variant knows its HTTP status), `ProfileError` (file:line:column, field) |
//! | [`state`] | node states and the transition table |
//! | [`node`] | registration, validation (UUID, MACs), the stored node and its history |
//! | [`profile`] | TOML install profiles, checked when loaded |
//! | `store` | SQLite (bundled): nodes, MACs, transitions; one transaction per change; `user_version` schema |
//! | [`ipxe`] | the iPXE script for each state |
//! | [`pxelinux`] | U-Boot's PXELINUX files for each state, and its network-boot script image (aarch64 nodes) |
//! | [`fault`] | fault switches (HTTP 500, hang) for the next N requests of an endpoint |
//! | [`service`] | the in-process API: `Service`, `ServerHandle`, `wait_state`, `state_table`, request log |
//! | `http` | the axum router |

pub mod error;
pub mod fault;
mod http;
pub mod ipxe;
pub mod node;
pub mod profile;
pub mod pxelinux;
pub mod service;
pub mod state;
mod store;

pub use error::{ProfileError, ProvisionError};
pub use fault::{Endpoint, Fault};
pub use http::CLIENT_GONE;
pub use node::{Arch, Disk, Node, NodeDetail, Registration, Transition};
pub use profile::{Profile, ProfileDocument, Profiles};
pub use service::{RequestRecord, ServerHandle, Service};
pub use state::NodeState;
pub use store::{Registered, SCHEMA_VERSION};
