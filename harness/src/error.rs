//! Error classes and exit codes. A user error (bad scenario/board file: exit 2)
//! is never confused with a product failure (the device misbehaved: exit 1) or an
//! infrastructure failure (QEMU could not start, a host tool is missing: exit 69).
//! This module only describes errors; it performs no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

/// Exit code: every step passed.
pub const EXIT_PASSED: i32 = 0;
/// Exit code: the device under test failed a step.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the input (scenario, board, command line) is wrong.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code: the harness or host could not do its part (sysexits EX_UNAVAILABLE).
pub const EXIT_INFRA: i32 = 69;
/// Exit code: interrupted by the user (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// A location in a user's file: `file:line:column`, and the field concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl InputError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        InputError { file: file.to_path_buf(), line: None, column: None, field: None, message: message.into() }
    }

    /// Locate the error at byte `offset` of `text` (the file's contents).
    pub fn at(mut self, text: &str, offset: usize) -> Self {
        let (line, column) = line_col(text, offset);
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Turn a `toml` error (whose span is relative to `base` within `text`) into
    /// an input error naming the file, line, column and, where serde says, field.
    pub fn from_toml(file: &Path, text: &str, base: usize, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_string();
        let mut field = field_from_message(&message);
        let mut e = InputError::new(file, message);
        if let Some(span) = err.span() {
            e = e.at(text, base + span.start);
            // A wrong value: the key written before it names the field.
            field = field.or_else(|| key_before(text, base + span.start));
        }
        if let Some(f) = field {
            e = e.field(f);
        }
        e
    }
}

/// serde names the offending field in a few message shapes; pick it out.
fn field_from_message(msg: &str) -> Option<String> {
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

/// The key of the `key = value` whose value starts at `offset` (on the
/// same line, the nearest `key =` before it: plain or in an inline table).
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    let eq = before.rfind('=')?;
    let key = before[..eq].trim_end();
    let start =
        key.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')).map_or(0, |i| i + 1);
    let key = &key[start..];
    (!key.is_empty()).then(|| key.to_string())
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A failed step of a scenario: what the device did wrong, with the evidence.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `step 3 (expect)` or similar.
    pub step: String,
    pub message: String,
    pub run_dir: PathBuf,
    pub last_lines: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} failed: {}", self.step, self.message)?;
        writeln!(f, "run directory: {}", self.run_dir.display())?;
        if !self.last_lines.is_empty() {
            writeln!(f, "last {} console lines:", self.last_lines.len())?;
            for l in &self.last_lines {
                writeln!(f, "  | {l}")?;
            }
        }
        Ok(())
    }
}

/// Every error the harness reports, by class.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(InputError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    #[error("{0}")]
    Failed(Box<Failure>),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn infra(msg: impl Into<String>) -> Self {
        Error::Infra(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => EXIT_BAD_INPUT,
            Error::Infra(_) => EXIT_INFRA,
            Error::Failed(_) => EXIT_FAILED,
            Error::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

impl From<InputError> for Error {
    fn from(e: InputError) -> Self {
        Error::Input(e)
    }
}

impl From<devlab_images::ImageError> for Error {
    fn from(e: devlab_images::ImageError) -> Self {
        Error::Infra(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn display_names_file_line_column_and_field() {
        let e = InputError::new(Path::new("s.toml"), "unknown field `patern`, expected `pattern`")
            .at("x\ny = 1", 2)
            .field("patern");
        assert_eq!(e.to_string(), "s.toml:2:1: field `patern`: unknown field `patern`, expected `pattern`");
    }

    #[test]
    fn field_is_picked_from_serde_messages() {
        assert_eq!(field_from_message("unknown field `x`, expected `y`").as_deref(), Some("x"));
        assert_eq!(field_from_message("missing field `pattern`").as_deref(), Some("pattern"));
        assert_eq!(field_from_message("invalid type: integer"), None);
    }
}
