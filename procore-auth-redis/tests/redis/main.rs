//! `RedisStore` against a real `redis-server` that each test starts on a free port.
//!
//! The acceptance tests of issue 13 (`fleet`, `takeover`, `outage`, `durability`,
//! `fencing`) run real OS processes: this binary re-executes itself as replicas of a
//! service sharing one Procore user (see `processes`).

mod contract;
mod durability;
mod fencing;
mod fleet;
mod lease;
mod outage;
mod processes;
mod takeover;
