//! `provision_fault`: Arm a fault on one node-facing endpoint of the provisioning service for its next `count` requests: `error500`, or `hang` for `seconds`.

use super::prelude::*;

/// Arm a fault on one node-facing endpoint of the provisioning service for
/// its next `count` requests: `error500`, or `hang` for `seconds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionFault {
    pub endpoint: devlab_provision::Endpoint,
    pub fault: ProvisionFaultKind,
    #[serde(default = "one")]
    pub count: u32,
    /// How long a `hang` holds each answer back (the fault's length).
    #[serde(default)]
    pub seconds: u64,
}

/// What a faulty endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionFaultKind {
    /// Answer `500 Internal Server Error`.
    Error500,
    /// Hold each answer back for `seconds`.
    Hang,
}

impl ProvisionFaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionFaultKind::Error500 => "error500",
            ProvisionFaultKind::Hang => "hang",
        }
    }
}

impl StepKind for ProvisionFault {
    fn lab(&self) -> bool {
        true
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        self.check_args(cx)
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        r.ensure_lab().await?;
        r.lab()?.service.fault(self.endpoint, self.service_fault());
        r.record(self.event());
        Ok(())
    }
}

impl ProvisionFault {
    /// The arguments' check (the step's, and an armed fault's).
    pub(crate) fn check_args(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        cx.need_provision()?;
        match self.fault {
            ProvisionFaultKind::Hang if self.seconds == 0 => {
                return Err(cx.at("seconds", "a hang needs `seconds` (its length)"));
            }
            ProvisionFaultKind::Hang => cx.seconds("seconds", self.seconds)?,
            ProvisionFaultKind::Error500 if self.seconds != 0 => {
                return Err(cx.at("seconds", "`seconds` is the length of a hang; an error500 has none"));
            }
            ProvisionFaultKind::Error500 => {}
        }
        cx.count("count", self.count, 1000)
    }

    /// The fault as the service takes it.
    pub(crate) fn service_fault(&self) -> devlab_provision::Fault {
        match self.fault {
            ProvisionFaultKind::Hang => devlab_provision::Fault::Hang { count: self.count, seconds: self.seconds },
            ProvisionFaultKind::Error500 => devlab_provision::Fault::Error500 { count: self.count },
        }
    }

    /// What the timeline records.
    pub(crate) fn event(&self) -> Event {
        Event::Fault {
            kind: format!("provision {} x{}", self.fault.as_str(), self.count),
            target: self.endpoint.as_str().to_string(),
        }
    }
}
