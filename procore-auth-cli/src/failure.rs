//! Why a command failed, and the exit status scripts act on.

use std::fmt;
use std::process::ExitCode;

use procore_auth_core::{CallbackError, Error, StoreError};

/// Exit status: the command failed (a refused request, a file that cannot be written…).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit status: usage or configuration error (clap uses 2 for usage errors too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status: the user must sign in again (`procore-auth login`).
pub(crate) const EXIT_SIGN_IN_AGAIN: u8 = 3;
/// Exit status: a temporary failure (network, 5xx, 429, back-off): try again later.
pub(crate) const EXIT_TRANSIENT: u8 = 4;

/// The kinds of failure, one per exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// [`EXIT_FAILED`].
    Failed,
    /// [`EXIT_USAGE`].
    Usage,
    /// [`EXIT_SIGN_IN_AGAIN`].
    SignInAgain,
    /// [`EXIT_TRANSIENT`].
    Transient,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Failed => EXIT_FAILED,
            Self::Usage => EXIT_USAGE,
            Self::SignInAgain => EXIT_SIGN_IN_AGAIN,
            Self::Transient => EXIT_TRANSIENT,
        }
    }
}

/// A failed command: what to tell the user (never a secret) and how to exit.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: Kind,
    message: String,
}

impl Failure {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    pub(crate) fn sign_in_again(message: impl Into<String>) -> Self {
        Self::new(Kind::SignInAgain, message)
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self::new(Kind::Transient, message)
    }

    /// `error` from core, said in context (`what` failed).
    pub(crate) fn from_core(what: &str, error: &Error) -> Self {
        Self::new(kind_of(error), format!("{what}: {}", chain(error)))
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.code())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if self.kind == Kind::SignInAgain {
            f.write_str("\nrun `procore-auth login` to sign in")?;
        }
        Ok(())
    }
}

/// Which exit status a core error calls for.
pub(crate) fn kind_of(error: &Error) -> Kind {
    match error {
        Error::ReauthorizationRequired { .. } => Kind::SignInAgain,
        // A token file that cannot be read as a token: signing in again replaces it.
        Error::Store(StoreError::Corrupt { .. }) => Kind::SignInAgain,
        Error::Config(_) => Kind::Usage,
        Error::Callback(CallbackError::StateMismatch) => Kind::Failed,
        error if error.is_transient() => Kind::Transient,
        _ => Kind::Failed,
    }
}

/// An error and its sources, `: `-separated (core's `Display` leaves the source out).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use procore_auth_core::ReauthorizationReason;

    use super::*;

    #[test]
    fn core_errors_map_to_the_exit_codes_scripts_act_on() {
        let reauth = Error::ReauthorizationRequired {
            reason: ReauthorizationReason::Revoked,
            tenant: None,
        };
        assert_eq!(kind_of(&reauth), Kind::SignInAgain);
        let corrupt = Error::Store(StoreError::Corrupt { reason: "x".into() });
        assert_eq!(kind_of(&corrupt), Kind::SignInAgain);
        let unavailable = Error::TokenEndpoint {
            status: http_status(503),
            error: None,
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(kind_of(&unavailable), Kind::Transient);
        let refused = Error::TokenEndpoint {
            status: http_status(401),
            error: None,
            retry_after: None,
        };
        assert_eq!(kind_of(&refused), Kind::Failed);
        assert_eq!(kind_of(&Error::Config("x".into())), Kind::Usage);
        assert_eq!(
            Failure::from_core("refresh", &reauth).exit_code(),
            ExitCode::from(EXIT_SIGN_IN_AGAIN)
        );
    }

    #[test]
    fn sign_in_again_says_how() {
        let text = Failure::sign_in_again("not signed in").to_string();
        assert!(text.contains("procore-auth login"), "{text}");
    }

    fn http_status(code: u16) -> axum::http::StatusCode {
        axum::http::StatusCode::from_u16(code).unwrap()
    }
}
