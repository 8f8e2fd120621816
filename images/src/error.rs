//! The error type of the image builder: every message names the file, recipe
//! field or host tool involved. Must not print, log or exit: callers decide.
use std::path::PathBuf;

/// Everything that can go wrong while resolving, building or locating an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Recipe { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{tool} not found: install {package} (cargo xtask setup)")]
    MissingTool { tool: String, package: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("package resolution failed for {arch}: {message}")]
    Resolve { arch: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("image {image} is not built ({path} missing): a run builds it, or `cargo xtask images`")]
    NotBuilt { image: String, path: PathBuf },
    #[error("{path}: {message}")]
    Lock { path: PathBuf, message: String },
    /// `cause` is part of the message (not a `source`, which would print it twice).
    #[error("building image {image}: {cause}")]
    Build { image: String, cause: Box<ImageError> },
    #[error("image {image} is stale ({reason}): a run rebuilds it, or `cargo xtask images`")]
    Stale { image: String, reason: String },
}

impl ImageError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> ImageError {
        ImageError::Invalid { path: path.into(), message: message.into() }
    }
}
