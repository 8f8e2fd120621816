//! Node states and the one table of legal transitions. Every state change
//! (operator assignment, agent progress, install report) goes through
//! [`check_transition`], so no endpoint can move a node along an edge this
//! table does not list.
//!
//! ```text
//! REGISTERED ──assign──► DEPLOY_START ──► DEPLOYING ──► INSTALLED
//!                          │    ▲           │  ▲ │          │
//!                          │    │           └──┘ │          │ (re-provision)
//!                          ▼    │                ▼          │
//!                    UNRECOVERABLE_ERROR ◄───────┘          │
//!                          └────────────► DEPLOY_START ◄────┘
//! ```
//! `DEPLOYING -> DEPLOYING` is legal (progress details). Registration itself
//! is not a transition: it creates a node in `REGISTERED`, and a repeated
//! registration never changes the state.

use crate::error::ProvisionError;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Registered,
    DeployStart,
    Deploying,
    Installed,
    UnrecoverableError,
}

impl NodeState {
    pub const ALL: [NodeState; 5] = [
        NodeState::Registered,
        NodeState::DeployStart,
        NodeState::Deploying,
        NodeState::Installed,
        NodeState::UnrecoverableError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Registered => "REGISTERED",
            NodeState::DeployStart => "DEPLOY_START",
            NodeState::Deploying => "DEPLOYING",
            NodeState::Installed => "INSTALLED",
            NodeState::UnrecoverableError => "UNRECOVERABLE_ERROR",
        }
    }

    /// Whether `self -> to` is an edge of the transition table.
    pub fn can_go_to(self, to: NodeState) -> bool {
        use NodeState::*;
        matches!(
            (self, to),
            (Registered, DeployStart)
                | (DeployStart, Deploying)
                | (Deploying, Deploying)
                | (Deploying, Installed)
                | (DeployStart | Deploying, UnrecoverableError)
                | (Installed | UnrecoverableError, DeployStart)
        )
    }
}

/// Check one transition of node `uuid`; the error names node, from and to.
pub fn check_transition(uuid: &str, from: NodeState, to: NodeState) -> Result<(), ProvisionError> {
    if from.can_go_to(to) {
        Ok(())
    } else {
        Err(ProvisionError::IllegalTransition { uuid: uuid.to_string(), from, to })
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = NodeState::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown state `{s}` (expected one of {})", all.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    /// The table, written out edge by edge: exactly these pairs are legal,
    /// every other of the 25 pairs is refused.
    #[test]
    fn transition_table_is_exactly_the_documented_edges() {
        let legal = [
            (Registered, DeployStart),
            (DeployStart, Deploying),
            (Deploying, Deploying),
            (Deploying, Installed),
            (DeployStart, UnrecoverableError),
            (Deploying, UnrecoverableError),
            (Installed, DeployStart),
            (UnrecoverableError, DeployStart),
        ];
        let mut refused = 0;
        for from in NodeState::ALL {
            for to in NodeState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_go_to(to), expected, "{from} -> {to}");
                assert_eq!(check_transition("n", from, to).is_ok(), expected, "{from} -> {to}");
                refused += usize::from(!expected);
            }
        }
        assert_eq!(refused, 25 - legal.len());
    }

    #[test]
    fn illegal_transitions_name_node_from_and_to() {
        let cases = [
            (Installed, Deploying),
            (Registered, Deploying),
            (Registered, Installed),
            (Registered, Registered),
            (DeployStart, Installed),
            (DeployStart, DeployStart),
            (Deploying, DeployStart),
            (Installed, Installed),
            (UnrecoverableError, Deploying),
            (UnrecoverableError, Installed),
            (UnrecoverableError, UnrecoverableError),
            (Installed, Registered),
        ];
        for (from, to) in cases {
            let e = check_transition("4c4c4544-0042-3010-8052-b4c04f4e3732", from, to).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("illegal transition {from} -> {to} for node 4c4c4544-0042-3010-8052-b4c04f4e3732")
            );
            assert_eq!(e.status(), 409);
        }
    }

    #[test]
    fn names_round_trip_through_text_and_json() {
        for st in NodeState::ALL {
            assert_eq!(st.as_str().parse::<NodeState>(), Ok(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("deploying".parse::<NodeState>().unwrap_err().contains("unknown state `deploying`"));
    }
}
