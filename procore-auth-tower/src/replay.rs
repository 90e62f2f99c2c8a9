use http::Request;

/// Decides whether a request can be replayed after a 401, by copying it before it is
/// sent.
///
/// Implement it to replay requests whose body type is not `Clone` but whose content
/// you can reproduce.
pub trait ReplayPolicy<B> {
    /// A copy of `request` to send again if the first attempt gets a 401, or `None`
    /// if it cannot be replayed (its 401 is then returned to the caller).
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>>;
}

/// Replays any request whose body is `Clone` (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<B: Clone> ReplayPolicy<B> for CloneRequest {
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// Never replays: a 401 is returned to the caller (the token is still refreshed).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    fn clone_request(&self, _: &Request<B>) -> Option<Request<B>> {
        None
    }
}
