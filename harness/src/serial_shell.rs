//! A shell over the serial console, for a device without SSH or a step
//! whose network is what breaks: log in at the device's login prompt (its
//! profile's prompts), turn echo off and set a unique prompt, then run each
//! command wrapped in markers that the typed text cannot contain
//! (`echo DL''B-7` prints `DLB-7`), so its output and exit status are read
//! back exactly, as the bytes arrive (no sleeps, no polling). Small files
//! travel as base64 lines.
//!
//! The console is the machine's one console: its log keeps everything the
//! device printed, and console markers still reach the timeline. What is
//! typed is never logged, so a password stays out of every file. Must not:
//! wait for a fixed time, or type a command before the shell's prompt.

use crate::console::{Console, ConsoleError};
use crate::device::SerialLogin;
use crate::ssh::Output;
use regex::bytes::Regex;
use std::time::Duration;

/// The prompt set after login: seen only when the shell is ready again.
const PROMPT: &str = "DLSH-READY# ";
/// How long a login waits for a prompt before it presses Enter again.
const WAKE_EVERY: Duration = Duration::from_secs(3);
/// Bytes per base64 line typed for an upload (well under a tty's 4096-byte
/// canonical line).
const B64_LINE: usize = 768;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("serial login: {0}")]
    Login(String),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// How [`SerialShell::exec_until`] came back.
#[derive(Debug)]
pub enum Ended {
    /// The command ended.
    Exited(Output),
    /// Its output matched while it ran.
    Matched,
}

/// A logged-in shell on a machine's serial console.
#[derive(Debug, Default)]
pub struct SerialShell {
    /// Commands run so far: each gets its own markers.
    count: u64,
}

fn re(s: &str) -> Regex {
    Regex::new(s).expect("a regex built from escaped parts")
}

impl SerialShell {
    /// Log in: wake the console, answer the login (and password) prompt,
    /// or take a shell prompt already there; then a quiet, known prompt.
    pub async fn login(
        console: &mut Console,
        login: &SerialLogin,
        timeout: Duration,
    ) -> Result<SerialShell, ShellError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let login_prompt = Regex::new(login.login_prompt.as_str()).map_err(|e| ShellError::Login(e.to_string()))?;
        let password_prompt =
            Regex::new(login.password_prompt.as_str()).map_err(|e| ShellError::Login(e.to_string()))?;
        let shell_prompt = Regex::new(login.shell_prompt.as_str()).map_err(|e| ShellError::Login(e.to_string()))?;
        // A getty prints its prompt again for an empty line; a shell too. A
        // prompt already on the console may be from before a reboot: only
        // what comes after the wake-up counts.
        console.skip_to_end();
        let got = Self::wake(console, &[login_prompt, shell_prompt.clone()], deadline).await?;
        if got.index == 0 {
            console.send(format!("{}\r", login.user).as_bytes()).await?;
            if let Some(p) = &login.password {
                console.expect(&[password_prompt], left()).await?;
                console.send(format!("{p}\r").as_bytes()).await?;
            }
            let incorrect = re("(?i)login incorrect");
            let got = console.expect(&[shell_prompt, incorrect], left()).await?;
            if got.index == 1 {
                return Err(ShellError::Login(format!(
                    "the device said `Login incorrect` for user `{}`: see [login.serial] user/password",
                    login.user
                )));
            }
        }
        // Echo off, a prompt nothing else prints, no bracketed paste.
        let setup = format!(
            "stty -echo; bind 'set enable-bracketed-paste off' 2>/dev/null; PROMPT_COMMAND=; PS1='{}'\r",
            PROMPT.replace('#', "'#'")
        );
        console.send(setup.as_bytes()).await?;
        console.expect(&[re(&regex::escape(PROMPT))], left()).await?;
        Ok(SerialShell::default())
    }

    /// Press Enter until one of `prompts` answers. A getty or shell that
    /// is still starting drops what arrives before it reads the tty, so
    /// one Enter can be lost: it is pressed again after [`WAKE_EVERY`]
    /// without a prompt (as a person at the console would; labgrid's shell
    /// driver does the same), until `deadline`.
    async fn wake(
        console: &mut Console,
        prompts: &[Regex],
        deadline: tokio::time::Instant,
    ) -> Result<crate::console::Match, ShellError> {
        loop {
            console.send(b"\r").await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match console.expect(prompts, left.min(WAKE_EVERY)).await {
                Err(ConsoleError::Timeout { .. }) if left > WAKE_EVERY => continue,
                got => return Ok(got?),
            }
        }
    }

    /// Run `command` (stdin from /dev/null, stderr into its output) and
    /// read its output and exit status.
    pub async fn exec(
        &mut self,
        console: &mut Console,
        command: &str,
        timeout: Duration,
    ) -> Result<Output, ShellError> {
        match self.exec_until(console, command, timeout, None).await? {
            Ended::Exited(out) => Ok(out),
            Ended::Matched => unreachable!("nothing to match"),
        }
    }

    /// [`SerialShell::exec`], returning as soon as the command's output so
    /// far matches `stop` (a text regex; `$` also matches before the
    /// console's `\r\n`). The command then still runs: the caller ends it
    /// (a power cut), and this shell is not to be used again.
    pub async fn exec_until(
        &mut self,
        console: &mut Console,
        command: &str,
        timeout: Duration,
        stop: Option<&regex::Regex>,
    ) -> Result<Ended, ShellError> {
        self.count += 1;
        let n = self.count;
        // The markers as typed (`DL''B-n`) are not the markers as printed (`DLB-n`).
        // `eval` takes any command text (a trailing `&` or `;`, a comment);
        // in a subshell, as over SSH, so `exit` or `cd` leave the login be.
        let quoted = crate::machine::shell_quote(command);
        let line = format!("echo DL''B-{n}; (eval {quoted}) </dev/null 2>&1; printf '\\nDL''E-{n}-%d\\n' $?\r");
        console.send(line.as_bytes()).await?;
        let mut patterns = vec![re(&format!(r"(?s)DLB-{n}\r?\n(?<out>.*?)\r?\nDLE-{n}-(?<status>\d+)\r?\n"))];
        if let Some(stop) = stop {
            // What the command printed: after its begin marker (its end
            // marker, had it come first, would have ended the wait).
            let within = format!(r"(?s)DLB-{n}\r?\n.*?(?R:{})", stop.as_str());
            patterns.push(Regex::new(&within).map_err(|e| ShellError::Login(format!("output pattern: {e}")))?);
        }
        let got = console.expect(&patterns, timeout).await?;
        if got.index == 1 {
            return Ok(Ended::Matched);
        }
        let field =
            |name: &str| got.captures.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let stdout = field("out").replace("\r\n", "\n");
        let status = field("status").parse().unwrap_or(-1);
        // Back at the prompt before the next command is typed.
        console.expect(&[re(&regex::escape(PROMPT))], timeout).await?;
        Ok(Ended::Exited(Output { status, stdout, stderr: String::new() }))
    }

    /// Type `command` and do not wait for it to end (`reboot`: the shell
    /// goes away with the machine).
    pub async fn send_only(&mut self, console: &mut Console, command: &str) -> Result<(), ShellError> {
        console.send(format!("{command}\r").as_bytes()).await?;
        Ok(())
    }

    /// Write `data` to `remote` (mode `mode`) as base64 lines.
    pub async fn upload(
        &mut self,
        console: &mut Console,
        data: &[u8],
        remote: &str,
        mode: u32,
        timeout: Duration,
    ) -> Result<Output, ShellError> {
        let quoted = crate::machine::shell_quote(remote);
        let tmp = format!("{quoted}.dlsh");
        let out = self.exec(console, &format!(": > {tmp}"), timeout).await?;
        if out.status != 0 {
            return Ok(out);
        }
        let b64 = base64_encode(data);
        for chunk in b64.as_bytes().chunks(B64_LINE) {
            let chunk = std::str::from_utf8(chunk).expect("base64 is ASCII");
            let out = self.exec(console, &format!("echo {chunk} >> {tmp}"), timeout).await?;
            if out.status != 0 {
                return Ok(out);
            }
        }
        self.exec(console, &format!("base64 -d {tmp} > {quoted} && rm -f {tmp} && chmod {mode:o} {quoted}"), timeout)
            .await
    }

    /// Read `remote` back (base64 through the console).
    pub async fn download(
        &mut self,
        console: &mut Console,
        remote: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, ShellError> {
        let out = self.exec(console, &format!("base64 -w 0 {}", crate::machine::shell_quote(remote)), timeout).await?;
        if out.status != 0 {
            return Err(ShellError::Login(format!("base64 {remote} exited {}: {}", out.status, out.stdout.trim())));
        }
        base64_decode(out.stdout.trim())
            .ok_or_else(|| ShellError::Login(format!("{remote}: garbled base64 on the console")))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for ch in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        if ch == b'=' {
            break;
        }
        let v = B64.iter().position(|x| *x == ch)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"\x00\xff\x10binary\n"] {
            let e = base64_encode(data);
            assert_eq!(base64_decode(&e).unwrap(), data, "{e}");
        }
        assert_eq!(base64_encode(b"devlab"), "ZGV2bGFi");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn typed_markers_are_not_printed_markers() {
        // Echo may be on for the command line itself (before `stty -echo`
        // took effect, or a shell that ignores it): the typed line must not
        // match the output pattern.
        let typed = "echo DL''B-3; (eval true) </dev/null 2>&1; printf '\\nDL''E-3-%d\\n' $?";
        let pattern = re(r"(?s)DLB-3\r?\n(?<out>.*?)\r?\nDLE-3-(?<status>\d+)\r?\n");
        assert!(!pattern.is_match(typed.as_bytes()));
        assert!(pattern.is_match(b"DLB-3\r\nhello\r\n\r\nDLE-3-0\r\n"));
    }
}
