//! Errors of the provisioning service. Each variant knows the HTTP status it
//! answers with (`status`), so the HTTP layer never guesses: bad input is 400,
//! an unknown node or profile 404, a refused registration or transition 409.
//! Profile file errors carry file, line, column and field (`ProfileError`).
//! This module only describes errors; it performs no I/O.

use crate::state::NodeState;
use std::path::PathBuf;
use std::time::Duration;

/// A fault in a profile file: where it is (`file:line:column`) and which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {}{message}", file.display(), field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct ProfileError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The top-level field concerned, when one is.
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("database {}: {source}", path.display())]
    Db { path: PathBuf, source: rusqlite::Error },

    #[error("database {}: schema version {found} is newer than this build knows ({supported})", path.display())]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },

    #[error(transparent)]
    Profile(#[from] ProfileError),

    /// A request body or path that does not make sense (HTTP 400).
    #[error("{0}")]
    BadRequest(String),

    #[error("unknown node {0}")]
    UnknownNode(String),

    #[error("unknown profile `{name}` (profiles: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownProfile { name: String, known: Vec<String> },

    /// The agent asked for its profile and there is none to give.
    #[error("profile missing for node {uuid}: {detail}")]
    ProfileMissing { uuid: String, detail: String },

    #[error("illegal transition {from} -> {to} for node {uuid}")]
    IllegalTransition { uuid: String, from: NodeState, to: NodeState },

    /// A registration that contradicts what is known (HTTP 409).
    #[error("registration of node {uuid} refused: {reason}")]
    RegistrationConflict { uuid: String, reason: String },

    #[error("timed out after {timeout:?} waiting for node {uuid} to reach {want} (it is {})", now.map_or("not registered".to_string(), |s| s.to_string()))]
    Timeout { uuid: String, want: NodeState, now: Option<NodeState>, timeout: Duration },

    #[error("node {uuid} went to UNRECOVERABLE_ERROR while waiting for {want}: {message}")]
    NodeFailed { uuid: String, want: NodeState, message: String },
}

impl ProvisionError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            ProvisionError::BadRequest(_) => 400,
            ProvisionError::UnknownNode(_)
            | ProvisionError::UnknownProfile { .. }
            | ProvisionError::ProfileMissing { .. } => 404,
            ProvisionError::IllegalTransition { .. } | ProvisionError::RegistrationConflict { .. } => 409,
            ProvisionError::Timeout { .. } | ProvisionError::NodeFailed { .. } => 409,
            ProvisionError::Io { .. }
            | ProvisionError::Db { .. }
            | ProvisionError::SchemaTooNew { .. }
            | ProvisionError::Profile(_) => 500,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ProvisionError {
        let path = path.into();
        move |source| ProvisionError::Io { path, source }
    }
}
