//! The shipped scenario files live beside this crate (`scenarios/*.toml`);
//! its tests (`tests/scenarios.rs`) boot each on every board it names and
//! check the normalised timeline against `snapshots/`. No code here.
