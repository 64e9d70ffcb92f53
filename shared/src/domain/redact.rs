//! Secret redaction for logs and API responses.

use std::collections::BTreeMap;

/// What a redacted value is replaced with. A `PUT /postbacks/{id}` that sends this
/// exact value for a header keeps the stored secret.
pub const REDACTED: &str = "[REDACTED]";

/// Header names whose values are secrets: authorization, proxy-authorization, cookie,
/// set-cookie, and any name containing `key`, `token`, `secret`, `auth`, `password`,
/// `signature`, `session` (case-insensitive).
pub fn is_secret_header(name: &str) -> bool {
    todo!("is_secret_header")
}

pub fn redact_headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), if is_secret_header(k) { REDACTED.to_string() } else { v.clone() }))
        .collect()
}

/// Redact secret-looking query values (same name rule as headers, plus `sig`, `pass`,
/// `pwd`) and any userinfo password in a URL, keeping the rest byte for byte.
pub fn redact_url(url: &str) -> String {
    todo!("redact_url")
}
