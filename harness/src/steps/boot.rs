//! `boot`: Stop U-Boot's autoboot at its prompt, run `commands` at the `=> ` prompt, then the board's boot command (or `boot_command`).

use super::prelude::*;

/// Stop U-Boot's autoboot at its prompt, run `commands` at the `=> `
/// prompt, then the board's boot command (or `boot_command`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub boot_command: Option<String>,
    #[serde(default = "default_boot_timeout")]
    pub timeout: Dur,
}

impl StepKind for Boot {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_on()?;
        // Stopping U-Boot means a fresh boot: no SSH session after it.
        cx.power = Power::On;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let b = self;
        let Some(prompts) = r.board.uboot().cloned() else {
            // `check_board` refuses this board at plan time.
            return Err(r.failure(format!("board {} has no U-Boot to stop", r.board.name)));
        };
        let timeout = b.timeout.0;
        let autoboot = BytesRegex::new(&regex::escape(&prompts.autoboot_prompt)).unwrap();
        let prompt = BytesRegex::new(&regex::escape(&prompts.prompt)).unwrap();
        let m = r.machine()?;
        m.console.expect(&[autoboot], timeout).await.map_err(|e| r.console_failure(e))?;
        // Any key stops autoboot; U-Boot then shows its prompt.
        r.send(b" ").await?;
        let m = r.machine()?;
        let got = m.console.expect(std::slice::from_ref(&prompt), timeout).await;
        let got = got.map_err(|e| r.console_failure(e))?;
        r.drain(Some(got.end));
        r.record(Event::AutobootInterrupted);
        let boot = b.boot_command.clone().unwrap_or(prompts.boot_command);
        for cmd in &b.commands {
            r.send(format!("{cmd}\r").as_bytes()).await?;
            let m = r.machine()?;
            let got = m.console.expect(std::slice::from_ref(&prompt), timeout).await;
            let got = got.map_err(|e| r.console_failure(e))?;
            r.drain(Some(got.end));
            r.record(Event::UbootCommand { command: cmd.clone() });
        }
        r.send(format!("{boot}\r").as_bytes()).await?;
        r.record(Event::UbootCommand { command: boot });
        Ok(())
    }
}
