//! The behaviour both adapters promise, written once and run through each.
//!
//! `procore-auth-tower` and `procore-auth-reqwest` drive the same per-request protocol
//! from `procore-auth-core`, so everything a caller can observe (which requests carry
//! the token, what a 401 costs, what a failed refresh looks like) must be the same
//! through either. This package holds that scenario table: [`Client`] puts the two
//! adapters behind one interface, and [`scenario!`] turns one scenario into one test
//! per adapter, so a failure names the adapter (`…::tower`, `…::reqwest`). The
//! scenarios themselves are the `conformance` integration test; each adapter's own
//! test folder keeps only what is specific to it.
//!
//! ```
//! use procore_auth_conformance::{authorized_manager, me, scenario, Client};
//! use procore_auth_testkit::Emulator;
//!
//! scenario! {
//!     /// A fresh token gets a 200 without a refresh.
//!     #[tokio::test]
//!     async fn a_fresh_token_is_used_as_is(adapter) {
//!         let emulator = Emulator::start().await;
//!         let manager = authorized_manager(&emulator, |builder| builder).await;
//!         let client = Client::new(adapter, &manager);
//!         assert_eq!(client.get(&me(&emulator)).await.unwrap(), http::StatusCode::OK);
//!         assert_eq!(emulator.stats().refresh_token_grants, 0);
//!     }
//! }
//! # fn main() {}
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod following;
mod origin;
mod setup;

pub use client::{get, post, post_streaming, Adapter, Client, Reply};
pub use following::FollowingClient;
pub use origin::{Origin, Seen};
pub use setup::{
    adapter_token_transport, authorized_manager, authorized_manager_with_timeout, frozen_clock, me,
    oauth, tenant_registry, token_transport, user_tokens, wait_until, BACKOFF_BASE, BACKOFF_MAX,
    TOKEN_CALL_TIMEOUT, WAIT_LIMIT, WAIT_POLL,
};

/// Turns one scenario into one test per adapter.
///
/// Write an `async fn` whose only parameter is the adapter's name (an [`Adapter`]),
/// preceded by its doc comment and its test attribute (`#[tokio::test]`, or with a
/// multi-threaded flavour). The macro makes a module named after the scenario holding
/// the test functions `tower` and `reqwest`, each carrying those attributes and
/// running the scenario through its adapter. The module sees everything its parent
/// module imports.
#[macro_export]
macro_rules! scenario {
    (
        $(#[$attribute:meta])*
        async fn $name:ident($adapter:ident) $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attribute])*
            async fn tower() {
                run($crate::Adapter::Tower).await;
            }

            $(#[$attribute])*
            async fn reqwest() {
                run($crate::Adapter::Reqwest).await;
            }

            async fn run($adapter: $crate::Adapter) $body
        }
    };
}
