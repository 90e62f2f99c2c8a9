use procore_auth_core::TokenManager;
use tower_layer::Layer;

use crate::replay::{CloneRequest, NoReplay};
use crate::ProcoreAuth;

/// Applies [`ProcoreAuth`] to a service.
///
/// Holds only configuration: the [`TokenManager`] (shared, cheap to clone) and the
/// [`ReplayPolicy`](crate::ReplayPolicy).
#[derive(Clone, Debug)]
pub struct ProcoreAuthLayer<P = CloneRequest> {
    manager: TokenManager,
    replay: P,
}

impl ProcoreAuthLayer {
    /// Authorizes requests with tokens from `manager`, replaying `Clone` requests once
    /// after a 401.
    pub fn new(manager: TokenManager) -> Self {
        Self {
            manager,
            replay: CloneRequest,
        }
    }
}

impl<P> ProcoreAuthLayer<P> {
    /// Never replays after a 401 (for streaming bodies): the 401 is returned and the
    /// token is refreshed for the next request.
    pub fn without_replay(self) -> ProcoreAuthLayer<NoReplay> {
        self.replay_with(NoReplay)
    }

    /// Decides what can be replayed with `policy`.
    pub fn replay_with<Q>(self, policy: Q) -> ProcoreAuthLayer<Q> {
        ProcoreAuthLayer {
            manager: self.manager,
            replay: policy,
        }
    }
}

impl<S, P: Clone> Layer<S> for ProcoreAuthLayer<P> {
    type Service = ProcoreAuth<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ProcoreAuth::new(inner, self.manager.clone()).replay_with(self.replay.clone())
    }
}
