//! devlab's harness: boots virtual boards (QEMU) through real firmware,
//! drives them over the serial console, QMP and SSH, and records a timeline
//! of each run. See ARCHITECTURE.md for the modules and their invariants.

pub mod accel;
pub mod board;
pub mod board_check;
pub mod board_lock;
pub mod board_validate;
pub mod checkpoint;
pub mod console;
pub mod device;
pub mod device_image;
pub mod device_suite;
pub mod disk;
pub mod error;
pub mod etcd;
pub mod external;
pub mod firmware;
pub mod fleet;
pub mod fleetlock;
pub mod html;
pub mod kept;
pub mod labnet;
pub mod machine;
pub mod markers;
pub mod netboot;
pub mod ostree;
pub mod plan;
pub mod prebuild;
pub mod product;
pub mod provision;
pub mod qmp;
pub mod rauc;
pub mod report;
pub mod rollout;
pub mod rundir;
pub mod runner;
pub mod scenario;
pub mod serial_shell;
pub mod snapshot;
pub mod ssh;
pub mod steps;
pub mod timeline;
pub mod update_server;

pub use error::{Error, Result};
