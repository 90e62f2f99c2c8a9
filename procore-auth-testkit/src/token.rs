//! Random, realistic-looking secrets.

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(BASE64URL[sextet as usize]));
        }
    }
    out
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    // The OS random source failing is an environment problem, not something a client can cause.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes
}

/// An opaque secret like Doorkeeper's refresh tokens and codes: 32 random bytes, 43 url-safe
/// characters.
pub(crate) fn opaque_secret() -> String {
    base64url(&random_bytes(32))
}

/// An access token shaped like Procore's (an ES512 JWT, several hundred characters). It is not
/// signed: clients must treat it as opaque.
pub(crate) fn access_token(
    subject: Option<u64>,
    client_id: &str,
    issued_at: i64,
    expires_at: i64,
) -> String {
    let header = base64url(br#"{"alg":"ES512","typ":"JWT","kid":"procore-auth-testkit"}"#);
    let claims = serde_json::json!({
        "iss": "procore-auth-testkit",
        "sub": subject,
        "aud": client_id,
        "iat": issued_at,
        "exp": expires_at,
        "jti": opaque_secret(),
    });
    let payload = base64url(claims.to_string().as_bytes());
    // An ES512 signature is 132 bytes.
    let signature = base64url(&random_bytes(132));
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        // RFC 4648 §10, without padding, plus the url-safe characters.
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn secrets_are_long_url_safe_and_distinct() {
        let a = opaque_secret();
        let b = opaque_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn access_tokens_look_like_jwts() {
        let token = access_token(Some(7), "client", 100, 5500);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(token.starts_with("eyJ"));
        assert!(token.len() > 300, "{}", token.len());
        assert_ne!(token, access_token(Some(7), "client", 100, 5500));
    }
}
