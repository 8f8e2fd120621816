//! SQLite persistence (rusqlite, SQLite bundled). Three tables: `nodes`,
//! `macs` (one row per MAC, its primary key, so no MAC can belong to two
//! nodes even if the checks above it were wrong) and `transitions` (the
//! history: time, from, to, message). Every registration and every state
//! change is one `BEGIN IMMEDIATE` transaction that reads, checks and
//! writes, so a check can never act on a state another writer has changed.
//! The schema is versioned with `PRAGMA user_version`; migrations run in
//! order, each in its own transaction, and a database from a newer build is
//! refused rather than guessed at. WAL with `synchronous=NORMAL`: a committed
//! change survives the process being killed.

use crate::error::ProvisionError;
use crate::node::{Disk, Node, Registration, Transition};
use crate::state::{check_transition, NodeState};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE nodes (
    uuid TEXT PRIMARY KEY NOT NULL,
    serial TEXT NOT NULL,
    vendor TEXT NOT NULL,
    model TEXT NOT NULL,
    arch TEXT,
    hardware TEXT NOT NULL,          -- JSON: disks, firmware, neighbours
    state TEXT NOT NULL,
    profile TEXT,
    registered_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE macs (
    mac TEXT PRIMARY KEY NOT NULL,
    uuid TEXT NOT NULL REFERENCES nodes(uuid)
);
CREATE INDEX macs_by_node ON macs(uuid);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL REFERENCES nodes(uuid),
    at TEXT NOT NULL,
    from_state TEXT,                 -- NULL: the registration that created the node
    to_state TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX transitions_by_node ON transitions(uuid, id);
"];

#[derive(serde::Serialize, serde::Deserialize)]
struct Hardware {
    disks: Vec<Disk>,
    firmware: BTreeMap<String, String>,
    neighbours: Vec<BTreeMap<String, String>>,
}

pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new node, in `REGISTERED`.
    Created,
    /// A known node came back with the same serial and MACs: hardware
    /// details refreshed, state unchanged.
    Refreshed,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

const NODE_COLUMNS: &str = "uuid, serial, vendor, model, arch, hardware, state, profile, registered_at, updated_at";

fn parse_state(s: String) -> rusqlite::Result<NodeState> {
    s.parse().map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

fn node_from_row(row: &rusqlite::Row) -> rusqlite::Result<Node> {
    let hw: String = row.get(5)?;
    let hw: Hardware = serde_json::from_str(&hw)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into()))?;
    let arch: Option<String> = row.get(4)?;
    Ok(Node {
        uuid: row.get(0)?,
        serial: row.get(1)?,
        vendor: row.get(2)?,
        model: row.get(3)?,
        arch: arch.as_deref().and_then(crate::node::Arch::parse),
        macs: Vec::new(),
        disks: hw.disks,
        firmware: hw.firmware,
        neighbours: hw.neighbours,
        state: parse_state(row.get(6)?)?,
        profile: row.get(7)?,
        registered_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

fn macs_of(conn: &Connection, uuid: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT mac FROM macs WHERE uuid = ?1 ORDER BY mac")?;
    let macs = st.query_map([uuid], |r| r.get(0))?.collect();
    macs
}

fn load_node(conn: &Connection, uuid: &str) -> rusqlite::Result<Option<Node>> {
    let node = conn
        .query_row(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE uuid = ?1"), [uuid], node_from_row)
        .optional()?;
    match node {
        Some(mut n) => {
            n.macs = macs_of(conn, uuid)?;
            Ok(Some(n))
        }
        None => Ok(None),
    }
}

fn hardware_json(reg: &Registration) -> String {
    serde_json::to_string(&Hardware {
        disks: reg.disks.clone(),
        firmware: reg.firmware.clone(),
        neighbours: reg.neighbours.clone(),
    })
    .expect("plain data serialises")
}

/// An error from a transaction body: a refusal, or the database failing.
enum TxError {
    Refused(ProvisionError),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Db(e)
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, ProvisionError> {
        let db = |source| ProvisionError::Db { path: path.to_path_buf(), source };
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(db)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
        if found > SCHEMA_VERSION {
            return Err(ProvisionError::SchemaTooNew { path: path.to_path_buf(), found, supported: SCHEMA_VERSION });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", from as i64 + 1).map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(Store { conn, path: path.to_path_buf() })
    }

    fn db(&self, source: rusqlite::Error) -> ProvisionError {
        ProvisionError::Db { path: self.path.clone(), source }
    }

    /// Run `body` in one immediate transaction; commit only if it succeeds.
    fn write<T>(
        &mut self,
        body: impl FnOnce(&rusqlite::Transaction) -> Result<T, TxError>,
    ) -> Result<T, ProvisionError> {
        let path = self.path.clone();
        let db = move |source| ProvisionError::Db { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&db)?;
        match body(&tx) {
            // Dropping `tx` rolls back.
            Err(TxError::Refused(e)) => Err(e),
            Err(TxError::Db(e)) => Err(db(e)),
            Ok(v) => tx.commit().map(|()| v).map_err(db),
        }
    }

    /// Register (or re-register) a validated registration.
    pub fn register(&mut self, reg: &Registration) -> Result<(Node, Registered), ProvisionError> {
        self.write(|tx| {
            let refuse = |reason: String| {
                TxError::Refused(ProvisionError::RegistrationConflict { uuid: reg.uuid.clone(), reason })
            };
            let existing = load_node(tx, &reg.uuid)?;
            if let Some(n) = &existing {
                if n.serial != reg.serial {
                    return Err(refuse(format!(
                        "it is registered with serial `{}`, this registration has serial `{}`",
                        n.serial, reg.serial
                    )));
                }
                if n.macs != reg.macs {
                    return Err(refuse(format!(
                        "it is registered with MACs [{}], this registration has [{}]",
                        n.macs.join(", "),
                        reg.macs.join(", ")
                    )));
                }
            }
            for mac in &reg.macs {
                let owner: Option<String> =
                    tx.query_row("SELECT uuid FROM macs WHERE mac = ?1", [mac], |r| r.get(0)).optional()?;
                if let Some(owner) = owner.filter(|o| *o != reg.uuid) {
                    return Err(refuse(format!("MAC {mac} belongs to node {owner}")));
                }
            }
            let t = now();
            let arch = reg.arch.map(|a| a.as_str());
            let what = if existing.is_some() {
                tx.execute(
                    "UPDATE nodes SET vendor = ?2, model = ?3, arch = COALESCE(?4, arch), hardware = ?5, \
                     updated_at = ?6 WHERE uuid = ?1",
                    params![reg.uuid, reg.vendor, reg.model, arch, hardware_json(reg), t],
                )?;
                Registered::Refreshed
            } else {
                tx.execute(
                    &format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?8)"),
                    params![
                        reg.uuid,
                        reg.serial,
                        reg.vendor,
                        reg.model,
                        arch,
                        hardware_json(reg),
                        NodeState::Registered.as_str(),
                        t
                    ],
                )?;
                for mac in &reg.macs {
                    tx.execute("INSERT INTO macs (mac, uuid) VALUES (?1, ?2)", params![mac, reg.uuid])?;
                }
                tx.execute(
                    "INSERT INTO transitions (uuid, at, from_state, to_state, message) VALUES (?1, ?2, NULL, ?3, ?4)",
                    params![
                        reg.uuid,
                        t,
                        NodeState::Registered.as_str(),
                        format!("registered: serial {}, MACs {}", reg.serial, reg.macs.join(" "))
                    ],
                )?;
                Registered::Created
            };
            let node = load_node(tx, &reg.uuid)?.expect("written in this transaction");
            Ok((node, what))
        })
    }

    /// Move node `uuid` to `to` (checked against the transition table),
    /// recording `message`; `profile` (when given) is assigned in the same
    /// transaction.
    pub fn transition(
        &mut self,
        uuid: &str,
        to: NodeState,
        message: &str,
        profile: Option<&str>,
    ) -> Result<Node, ProvisionError> {
        self.write(|tx| {
            let from: Option<String> =
                tx.query_row("SELECT state FROM nodes WHERE uuid = ?1", [uuid], |r| r.get(0)).optional()?;
            let Some(from) = from else { return Err(TxError::Refused(ProvisionError::UnknownNode(uuid.to_string()))) };
            let from = parse_state(from)?;
            check_transition(uuid, from, to).map_err(TxError::Refused)?;
            let t = now();
            tx.execute(
                "UPDATE nodes SET state = ?2, profile = COALESCE(?3, profile), updated_at = ?4 WHERE uuid = ?1",
                params![uuid, to.as_str(), profile, t],
            )?;
            tx.execute(
                "INSERT INTO transitions (uuid, at, from_state, to_state, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uuid, t, from.as_str(), to.as_str(), message],
            )?;
            Ok(load_node(tx, uuid)?.expect("exists in this transaction"))
        })
    }

    pub fn node(&self, uuid: &str) -> Result<Option<Node>, ProvisionError> {
        load_node(&self.conn, uuid).map_err(|e| self.db(e))
    }

    /// All nodes, sorted by UUID.
    pub fn nodes(&self) -> Result<Vec<Node>, ProvisionError> {
        let run = || -> rusqlite::Result<Vec<Node>> {
            let mut macs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut st = self.conn.prepare_cached("SELECT uuid, mac FROM macs ORDER BY mac")?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                let (uuid, mac) = row?;
                macs.entry(uuid).or_default().push(mac);
            }
            let mut st = self.conn.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY uuid"))?;
            let nodes = st.query_map([], node_from_row)?.collect::<rusqlite::Result<Vec<Node>>>()?;
            Ok(nodes
                .into_iter()
                .map(|mut n| {
                    n.macs = macs.remove(&n.uuid).unwrap_or_default();
                    n
                })
                .collect())
        };
        run().map_err(|e| self.db(e))
    }

    /// State, number of history entries and the last entry's message: what
    /// a waiter needs, in one query.
    pub fn progress(&self, uuid: &str) -> Result<Option<(NodeState, i64, String)>, ProvisionError> {
        self.conn
            .query_row(
                "SELECT n.state, (SELECT COUNT(*) FROM transitions t WHERE t.uuid = n.uuid), \
                 (SELECT message FROM transitions t WHERE t.uuid = n.uuid ORDER BY id DESC LIMIT 1) \
                 FROM nodes n WHERE n.uuid = ?1",
                [uuid],
                |r| Ok((parse_state(r.get(0)?)?, r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default())),
            )
            .optional()
            .map_err(|e| self.db(e))
    }

    /// The node's history, oldest first.
    pub fn history(&self, uuid: &str) -> Result<Vec<Transition>, ProvisionError> {
        let run = || -> rusqlite::Result<Vec<Transition>> {
            let mut st = self.conn.prepare_cached(
                "SELECT at, from_state, to_state, message FROM transitions WHERE uuid = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([uuid], |r| {
                let from: Option<String> = r.get(1)?;
                Ok(Transition {
                    at: r.get(0)?,
                    from: from.map(parse_state).transpose()?,
                    to: parse_state(r.get(2)?)?,
                    message: r.get(3)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uuid: &str, serial: &str, macs: &[&str]) -> Registration {
        Registration {
            uuid: uuid.into(),
            serial: serial.into(),
            vendor: "QEMU".into(),
            model: "Standard PC (Q35 + ICH9, 2009)".into(),
            macs: macs.iter().map(|m| m.to_string()).collect(),
            disks: vec![Disk { name: "vda".into(), size_bytes: 8 << 30 }],
            firmware: [("bios".to_string(), "1.16.2".to_string())].into(),
            neighbours: vec![],
            arch: None,
        }
        .validated()
        .unwrap()
    }

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    #[test]
    fn schema_version_is_set_and_a_newer_one_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", 7).unwrap();
        drop(conn);
        let e = Store::open(&path).err().unwrap();
        assert!(e.to_string().ends_with("schema version 7 is newer than this build knows (1)"), "{e}");
        drop(Store::open(&path).err());
    }

    #[test]
    fn a_refused_change_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("p.db")).unwrap();
        s.register(&reg(A, "S1", &["52:54:00:00:00:01"])).unwrap();
        let e = s.transition(A, NodeState::Installed, "skip ahead", Some("p")).unwrap_err();
        assert!(matches!(e, ProvisionError::IllegalTransition { .. }));
        let n = s.node(A).unwrap().unwrap();
        assert_eq!((n.state, n.profile), (NodeState::Registered, None));
        assert_eq!(s.history(A).unwrap().len(), 1);
        // A conflicting registration leaves the other node untouched.
        let e = s.register(&reg(B, "S2", &["52:54:00:00:00:01"])).unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(s.node(B).unwrap().is_none());
        assert!(matches!(s.transition(B, NodeState::DeployStart, "", None), Err(ProvisionError::UnknownNode(_))));
    }
}
