use std::error::Error as StdError;

/// Errors of this crate's constructors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HTTP client for token calls could not be built (for example, the TLS
    /// backend failed to initialise).
    #[error("could not build the HTTP client for token requests")]
    HttpClient(#[source] Box<dyn StdError + Send + Sync>),
}

/// The [`procore_auth_core::Error`] behind a request failure, if that is what it was.
pub fn auth_error(error: &reqwest_middleware::Error) -> Option<&procore_auth_core::Error> {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref(),
        _ => None,
    }
}
