use procore_auth_core::Tokens;
use tower_layer::Layer;

use crate::replay::{CloneRequest, NoReplay};
use crate::ProcoreAuth;

/// Applies [`ProcoreAuth`] to a service.
///
/// Holds only configuration: where tokens come from (shared, cheap to clone) and the
/// [`ReplayPolicy`](crate::ReplayPolicy).
#[derive(Clone, Debug)]
pub struct ProcoreAuthLayer<P = CloneRequest> {
    tokens: Tokens,
    replay: P,
}

impl ProcoreAuthLayer {
    /// Authorizes requests with tokens from `tokens`, replaying `Clone` requests once
    /// after a 401. `tokens` is a `TokenManager` (one token for every request) or a
    /// `TokenRegistry` (each request's tenant is the key in its extensions; see
    /// `TokenRegistry::keyed_by` for a function instead).
    pub fn new(tokens: impl Into<Tokens>) -> Self {
        Self {
            tokens: tokens.into(),
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
            tokens: self.tokens,
            replay: policy,
        }
    }
}

impl<S, P: Clone> Layer<S> for ProcoreAuthLayer<P> {
    type Service = ProcoreAuth<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ProcoreAuth::new(inner, self.tokens.clone()).replay_with(self.replay.clone())
    }
}
