//! Request parameters of the OAuth endpoints: form-encoded or JSON bodies, and query strings.

use std::collections::HashMap;

/// Parameters by name. RFC 6749 §3.1: a parameter sent twice is an invalid request.
#[derive(Debug, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// A parameter's value; an empty value counts as missing (as Doorkeeper treats blanks).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn insert(&mut self, name: String, value: String) -> Result<(), String> {
        if self.0.contains_key(&name) {
            return Err(format!("the {name} parameter is repeated"));
        }
        self.0.insert(name, value);
        Ok(())
    }

    /// Parses `application/x-www-form-urlencoded` text (a body or a query string).
    pub(crate) fn from_urlencoded(text: &[u8]) -> Result<Self, String> {
        if std::str::from_utf8(text).is_err() {
            return Err("the parameters are not UTF-8".to_owned());
        }
        let mut params = Self::default();
        for (name, value) in form_urlencoded::parse(text) {
            if !name.is_empty() {
                params.insert(name.into_owned(), value.into_owned())?;
            }
        }
        Ok(params)
    }

    /// Parses a request body: JSON if the content type says so, else form-encoded (Procore's
    /// documented encoding, also assumed when no content type is sent).
    pub(crate) fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Self, String> {
        let mime = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        match mime.as_deref() {
            None | Some("application/x-www-form-urlencoded") => Self::from_urlencoded(body),
            Some("application/json") => Self::from_json(body),
            Some(other) => Err(format!("unsupported content type {other}")),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, String> {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(body).map_err(|_| "the body is not a JSON object".to_owned())?;
        let mut params = Self::default();
        for (name, value) in object {
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                _ => return Err(format!("the {name} parameter is not a string")),
            };
            params.insert(name, value)?;
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_are_decoded() {
        let p = Params::from_body(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"grant_type=refresh_token&refresh_token=a%2Bb&empty=",
        )
        .unwrap();
        assert_eq!(p.get("grant_type"), Some("refresh_token"));
        assert_eq!(p.get("refresh_token"), Some("a+b"));
        assert_eq!(p.get("empty"), None);
        assert_eq!(p.get("absent"), None);
    }

    #[test]
    fn json_bodies_are_decoded() {
        let p = Params::from_body(
            Some("Application/JSON"),
            br#"{"grant_type":"client_credentials","client_id":42}"#,
        )
        .unwrap();
        assert_eq!(p.get("grant_type"), Some("client_credentials"));
        assert_eq!(p.get("client_id"), Some("42"));
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        assert!(Params::from_body(None, b"a=1&a=2").is_err());
        assert!(Params::from_body(None, b"a=\xff").is_err());
        assert!(Params::from_body(Some("application/json"), b"{\"a\":").is_err());
        assert!(Params::from_body(Some("application/json"), b"[1]").is_err());
        assert!(Params::from_body(Some("application/json"), br#"{"a":{"b":1}}"#).is_err());
        assert!(Params::from_body(Some("multipart/form-data"), b"").is_err());
    }
}
