use procore_auth_core::Error as AuthError;

/// The error of a [`ProcoreAuth`](crate::ProcoreAuth) service: either the wrapped
/// service failed, or no token could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// No valid token could be obtained: match on the core error, for example
    /// [`procore_auth_core::Error::ReauthorizationRequired`]. Displays as that error
    /// (as the reqwest middleware's errors do).
    #[error(transparent)]
    Auth(AuthError),
    /// The wrapped service failed.
    #[error("inner service failed")]
    Service(#[source] E),
}

impl<E> Error<E> {
    /// The authorization error, if this is one.
    pub fn auth(&self) -> Option<&AuthError> {
        match self {
            Self::Auth(error) => Some(error),
            Self::Service(_) => None,
        }
    }
}
