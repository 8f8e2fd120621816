//! Fault switches for the lab's fault scenarios: a fault armed on an
//! endpoint applies to the next `count` requests of that endpoint, then the
//! service behaves normally again. Faults armed on one endpoint queue up in
//! the order they were armed. A faulted request is never processed: it
//! changes no node.
//!
//! - `Error500`: answer `500` with a JSON error at once.
//! - `Hang`: send nothing for `seconds` (the client's timeout fires), then
//!   answer `503`, unless the server is shut down first (the hang ends then).
//!
//! The operator API (`/api/nodes...`) and `/files/...` take no faults.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

/// The node-facing endpoints faults can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /api/register`
    Register,
    /// `GET /ipxe/{uuid}`
    Ipxe,
    /// `GET /profile/{uuid}`
    Profile,
    /// `POST /detail/{uuid}`
    Detail,
    /// `POST /installed/{uuid}`
    Installed,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] =
        [Endpoint::Register, Endpoint::Ipxe, Endpoint::Profile, Endpoint::Detail, Endpoint::Installed];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Register => "register",
            Endpoint::Ipxe => "ipxe",
            Endpoint::Profile => "profile",
            Endpoint::Detail => "detail",
            Endpoint::Installed => "installed",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| {
            format!("unknown endpoint `{s}` (expected one of register, ipxe, profile, detail, installed)")
        })
    }
}

/// A fault and how many requests it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer `500 Internal Server Error`.
    Error500 { count: u32 },
    /// Answer nothing for `seconds`, then `503`.
    Hang { count: u32, seconds: u64 },
}

impl Fault {
    pub fn count(&self) -> u32 {
        match self {
            Fault::Error500 { count } | Fault::Hang { count, .. } => *count,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> String {
        match self {
            Fault::Error500 { .. } => "HTTP 500".into(),
            Fault::Hang { seconds, .. } => format!("hang {seconds} s"),
        }
    }
}

/// The armed faults, per endpoint, each with the requests it has left.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: BTreeMap<Endpoint, VecDeque<(Fault, u32)>>,
}

impl Faults {
    /// Arm `fault` for its `count` next requests (a count of 0 arms nothing).
    pub fn arm(&mut self, endpoint: Endpoint, fault: Fault) {
        if fault.count() > 0 {
            self.armed.entry(endpoint).or_default().push_back((fault, fault.count()));
        }
    }

    /// Use one request of the first fault armed on `endpoint`.
    pub fn take(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let queue = self.armed.get_mut(&endpoint)?;
        let (fault, left) = queue.front_mut()?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        Some(fault)
    }

    /// Requests still to be faulted on `endpoint`.
    pub fn pending(&self, endpoint: Endpoint) -> u32 {
        self.armed.get(&endpoint).map_or(0, |q| q.iter().map(|(_, n)| n).sum())
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_to_the_next_count_requests_in_order() {
        let mut f = Faults::default();
        f.arm(Endpoint::Ipxe, Fault::Error500 { count: 2 });
        f.arm(Endpoint::Ipxe, Fault::Hang { count: 1, seconds: 3 });
        f.arm(Endpoint::Detail, Fault::Error500 { count: 0 });
        assert_eq!(f.pending(Endpoint::Ipxe), 3);
        assert_eq!(f.pending(Endpoint::Detail), 0);
        assert_eq!(f.take(Endpoint::Register), None);
        assert_eq!(f.take(Endpoint::Ipxe), Some(Fault::Error500 { count: 2 }));
        assert_eq!(f.take(Endpoint::Ipxe), Some(Fault::Error500 { count: 2 }));
        assert_eq!(f.take(Endpoint::Ipxe), Some(Fault::Hang { count: 1, seconds: 3 }));
        assert_eq!(f.take(Endpoint::Ipxe), None);
        f.arm(Endpoint::Profile, Fault::Error500 { count: 5 });
        f.clear();
        assert_eq!(f.take(Endpoint::Profile), None);
    }

    #[test]
    fn names_parse() {
        for e in Endpoint::ALL {
            assert_eq!(e.as_str().parse::<Endpoint>(), Ok(e));
        }
        assert!("api".parse::<Endpoint>().is_err());
        let f: Fault = serde_json::from_str(r#"{"kind":"hang","count":1,"seconds":5}"#).unwrap();
        assert_eq!(f, Fault::Hang { count: 1, seconds: 5 });
    }
}
