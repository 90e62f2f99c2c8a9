//! Where a refresh runs once nobody waits for it any more.

use std::fmt;

use crate::BoxFuture;

/// Runs a refresh to completion in the background.
///
/// A refresh that may have reached the token endpoint must finish even if every
/// request that waited for it was dropped (a timeout around the request, a
/// `select!`, an aborted task): Procore has already rotated the refresh token, and
/// only the response carries the new one. The manager therefore hands each refresh to
/// a spawner as well as to its waiters.
///
/// The default, [`AmbientTokio`], spawns on the Tokio runtime the first waiter runs
/// on. Implement this trait to use another executor.
///
/// Without a runtime (or with a spawner that declines), a refresh is driven only by
/// the requests waiting for it: if they are all dropped, it pauses until the next
/// request for a token resumes it, and a response that arrives meanwhile may be lost
/// to the transport's timeout. The next attempt then re-reads the store before it
/// presents the refresh token again.
pub trait Spawn: Send + Sync + fmt::Debug {
    /// Runs `task` to completion in the background, or hands it back if it cannot.
    ///
    /// # Errors
    ///
    /// Returns `task` unchanged when there is nowhere to run it.
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>>;
}

/// Spawns on the Tokio runtime of the calling thread, if there is one.
#[derive(Clone, Copy, Debug, Default)]
pub struct AmbientTokio;

impl Spawn for AmbientTokio {
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn(task));
                Ok(())
            }
            Err(_) => Err(task),
        }
    }
}

/// Never spawns: refreshes are driven only by the requests that wait for them (see
/// [`Spawn`] for what that risks).
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitersOnly;

impl Spawn for WaitersOnly {
    fn spawn(&self, task: BoxFuture<'static, ()>) -> Result<(), BoxFuture<'static, ()>> {
        Err(task)
    }
}
