//! Every scenario both adapters must pass, written once: each `scenario!` below is one
//! test per adapter (`<module>::<scenario>::tower` and `…::reqwest`), against the
//! emulator over loopback HTTP. Assertions are on what the caller sees and on the
//! emulator's counters. No scenario sleeps for time to pass: where back-off or
//! `Retry-After` must pass, the manager's clock is moved past it; the only waits are
//! polls for an event, bounded by `wait_until`.

mod attach;
mod cancellation;
mod rejection;
mod store;
mod token_endpoint;
