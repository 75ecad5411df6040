//! engine: compares desired with live objects and syncs them — diff, health, plan (phases, waves, hooks), apply and prune.

pub mod cluster;
pub mod diff;
pub mod health;
pub mod jq;
pub mod lua;
pub mod plan;
pub mod sync;
