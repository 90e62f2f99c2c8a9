//! Newtypes for values that must never be printed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Defines a string newtype whose `Debug` output is redacted and which has no
/// `Display` impl, so a secret can only be read through an explicit `secret()` call.
macro_rules! secret_string {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// Returns the secret itself.
            ///
            /// # Security
            ///
            /// The returned string is the raw credential: do not log, print or
            /// persist it anywhere that is not meant to hold credentials.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(***)"))
            }
        }
    };
}

secret_string!(
    /// An OAuth access token (a Procore bearer token). Opaque; may be long.
    AccessToken
);
secret_string!(
    /// An OAuth refresh token. Procore's are single use: every refresh rotates it.
    RefreshToken
);
secret_string!(
    /// An OAuth client secret, as issued with the client id in Procore's Developer Portal.
    ClientSecret
);
secret_string!(
    /// A single-use authorization code returned to the redirect URI after the user approves.
    AuthorizationCode
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = "s3cr3t-value-that-must-not-print";
        for printed in [
            format!("{:?}", AccessToken::new(secret)),
            format!("{:?}", RefreshToken::new(secret)),
            format!("{:#?}", ClientSecret::new(secret)),
            format!("{:?}", AuthorizationCode::new(secret)),
        ] {
            assert!(!printed.contains(secret), "{printed}");
            assert!(printed.ends_with("(***)"), "{printed}");
        }
    }

    #[test]
    fn secret_round_trips_through_serde() {
        let token = RefreshToken::new("abc");
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, "\"abc\"");
        assert_eq!(serde_json::from_str::<RefreshToken>(&json).unwrap(), token);
    }
}
