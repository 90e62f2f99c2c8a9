//! Every scenario both adapters must pass, written once: each `scenario!` below is one
//! test per adapter (`<module>::<scenario>::tower` and `…::reqwest`), against the
//! emulator over loopback HTTP. Assertions are on what the caller sees and on the
//! emulator's counters. Where back-off or `Retry-After` must pass, the manager's clock
//! is moved past it instead of sleeping, and waits for an event are polls bounded by
//! `wait_until`. Only scenarios about real time sleep or run for a while (a token call's
//! own timeout in `cancellation`, natural expiry in `expiry`), and they assert on
//! counts, never on durations.

mod adversarial_rate_limits;
mod adversarial_tenants;
mod attach;
mod cancellation;
mod expiry;
mod rate_limits;
mod redirects;
mod rejection;
mod store;
mod tenants;
mod token_endpoint;
