//! Runs the host tools the builder relies on (apt, dpkg-deb, sgdisk, mke2fs,
//! mtools, mkimage, ...) and maps a missing binary to the Debian package that
//! provides it. Must not run anything through a shell and must not need root.
use crate::ImageError;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Debian package that ships a host tool, for "install X" hints.
pub fn package_for(tool: &str) -> &'static str {
    match tool {
        "sgdisk" => "gdisk",
        "mkfs.vfat" => "dosfstools",
        "mcopy" | "mmd" => "mtools",
        "mkimage" => "u-boot-tools",
        "mke2fs" => "e2fsprogs",
        "dpkg-deb" | "dpkg" => "dpkg",
        "apt-get" | "apt-cache" => "apt",
        "depmod" | "modprobe" => "kmod",
        "dropbearkey" => "dropbear-bin",
        "ssh-keygen" => "openssh-client",
        "xz" => "xz-utils",
        "lz4" => "lz4",
        "make" => "make",
        "awk" => "mawk",
        "gzip" => "gzip",
        "dd" | "truncate" => "coreutils",
        "syslinux" => "syslinux",
        _ => "the package providing it",
    }
}

/// Finds `tool` on PATH, falling back to the sbin directories root's PATH has.
pub fn find(tool: &str) -> Result<PathBuf, ImageError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(PathBuf::from),
    );
    for dir in dirs {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(ImageError::MissingTool { tool: tool.to_string(), package: package_for(tool).to_string() })
}

/// A command line being prepared; `run` captures output and turns a failure
/// into an error that quotes the command and its stderr.
pub struct Tool {
    name: String,
    cmd: Command,
    shown: String,
}

impl Tool {
    pub fn new(name: &str) -> Result<Tool, ImageError> {
        let exe = find(name)?;
        let mut cmd = Command::new(exe);
        cmd.env("LC_ALL", "C").stdin(Stdio::null());
        Ok(Tool { name: name.to_string(), cmd, shown: name.to_string() })
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tool {
        self.shown.push(' ');
        self.shown.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Tool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Tool {
        self.cmd.current_dir(dir);
        self
    }

    /// Runs to completion; stdout is returned, non-zero exit is an error.
    pub fn run(mut self) -> Result<Vec<u8>, ImageError> {
        let out = self.cmd.output().map_err(|e| self.spawn_error(e))?;
        check(&self.shown, out)
    }

    /// Spawns with stdout piped, for streaming consumers (dpkg-deb --fsys-tarfile).
    pub fn spawn_piped(mut self) -> Result<(std::process::Child, String), ImageError> {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = self.cmd.spawn().map_err(|e| self.spawn_error(e))?;
        Ok((child, self.shown))
    }

    fn spawn_error(&self, e: std::io::Error) -> ImageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::MissingTool { tool: self.name.clone(), package: package_for(&self.name).to_string() }
        } else {
            ImageError::Command { command: self.shown.clone(), status: "could not start".into(), stderr: e.to_string() }
        }
    }
}

fn check(shown: &str, out: Output) -> Result<Vec<u8>, ImageError> {
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ImageError::Command {
            command: shown.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Waits for a child started with `spawn_piped` whose stdout was consumed.
pub fn wait_piped(child: std::process::Child, shown: &str) -> Result<(), ImageError> {
    let out = child.wait_with_output().map_err(|e| ImageError::Command {
        command: shown.to_string(),
        status: "wait failed".into(),
        stderr: e.to_string(),
    })?;
    check(shown, out).map(|_| ())
}
