//! Request signing (spec: *Delivery control* → *Signatures*): Standard Webhooks headers
//! and the `{signature}` URL macro. Pure: keys, ids, times and bodies come in; nothing
//! here draws randomness or reads a clock (the service makes secrets and passes the time).

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ValidationError;

/// Every signing secret starts with this (the Standard Webhooks convention).
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes a secret may carry.
pub const MIN_SECRET_BYTES: usize = 24;
/// Most key bytes a secret may carry (a bound on input, far above any real key).
pub const MAX_SECRET_BYTES: usize = 256;
/// How many random bytes a generated secret carries.
pub const GENERATED_SECRET_BYTES: usize = 32;
/// How long the previous secret keeps signing beside the new one after a rotation.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
/// The macro that renders the URL signature.
pub const SIGNATURE_MACRO: &str = "signature";

/// Header names the signer sets (lower case, as the Standard Webhooks spec spells them).
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Standard base64; padding may be given or left off (both are common for these secrets).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

super::named_enum! {
    /// A postback's `signing`.
    #[derive(Default)]
    #[strum(serialize_all = "kebab-case")]
    pub enum Signing {
        #[default]
        None,
        StandardWebhooks,
    }
}

impl Signing {
    pub fn is_on(self) -> bool {
        self != Signing::None
    }
}

/// A signing secret as stored (`whsec_...`). Its `Debug` never shows the value, so a
/// postback printed into a trace line cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([REDACTED])")
    }
}

impl SigningSecret {
    /// Check a secret a client sent: `whsec_` + standard base64 of 24 to 256 bytes.
    pub fn parse(text: &str) -> Result<SigningSecret, ValidationError> {
        decode_key(text)?;
        Ok(SigningSecret(text.to_string()))
    }

    /// The secret of these (random) key bytes.
    pub fn from_key_bytes(key: &[u8]) -> SigningSecret {
        SigningSecret(format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(key)))
    }

    /// What the API shows instead of a secret.
    pub fn redacted() -> SigningSecret {
        SigningSecret(super::redact::REDACTED.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    pub fn key(&self) -> Result<Key, ValidationError> {
        decode_key(&self.0).map(Key)
    }
}

fn decode_key(text: &str) -> Result<Vec<u8>, ValidationError> {
    let field = "signing_secret";
    let encoded = text.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
        ValidationError::invalid(field, format!("signing_secret must start with {SECRET_PREFIX} followed by base64"))
    })?;
    if encoded.len() > MAX_SECRET_BYTES * 2 {
        return Err(ValidationError::new(
            "too_long",
            field,
            format!("signing_secret may carry at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    let key = BASE64.decode(encoded).map_err(|_| {
        ValidationError::invalid(field, "the part of signing_secret after whsec_ must be standard base64")
    })?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(ValidationError::invalid(
            field,
            format!("signing_secret must carry at least {MIN_SECRET_BYTES} bytes of key (it has {})", key.len()),
        ));
    }
    if key.len() > MAX_SECRET_BYTES {
        return Err(ValidationError::new(
            "too_long",
            field,
            format!("signing_secret may carry at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(key)
}

/// The secret before the last rotation and when it stops signing. Stored with the
/// postback, never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: SigningSecret,
    pub expires_at: DateTime<Utc>,
}

impl PreviousSecret {
    /// The previous secret after rotating away from `secret` at `now`.
    pub fn rotated_at(secret: SigningSecret, now: DateTime<Utc>) -> PreviousSecret {
        PreviousSecret { secret, expires_at: now + Duration::hours(ROTATION_OVERLAP_HOURS) }
    }
}

/// HMAC key bytes. `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

impl Key {
    pub fn new(bytes: Vec<u8>) -> Key {
        Key(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; this cannot fail.
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }
}

/// The keys a compiled postback signs with: the current one, and the previous one while
/// its rotation overlap lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeys {
    pub current: Key,
    pub previous: Option<(Key, DateTime<Utc>)>,
}

impl SigningKeys {
    /// `v1,<base64>` for each key in force at `now`, new first, space-separated.
    pub fn signature_header(&self, id: &str, timestamp: i64, body: &str, now: DateTime<Utc>) -> String {
        let mut header = sign(&self.current, id, timestamp, body);
        if let Some((previous, expires_at)) = &self.previous {
            if now < *expires_at {
                header.push(' ');
                header.push_str(&sign(previous, id, timestamp, body));
            }
        }
        header
    }
}

/// One Standard Webhooks signature: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn sign(key: &Key, id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `{signature}` value: lowercase hex HMAC-SHA256 of the URL as sent with the
/// signature's own value(s) left empty.
pub fn url_signature(key: &Key, url_with_signature_empty: &str) -> String {
    let mut mac = key.mac();
    mac.update(url_with_signature_empty.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_example_key() -> Key {
        match SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").and_then(|s| s.key()) {
            Ok(key) => key,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn standard_webhooks_known_answer() {
        let signature =
            sign(&spec_example_key(), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn empty_body_is_signed_as_empty() {
        // HMAC-SHA256(key, "msg_1.1614265330.") computed independently with Python's hmac.
        let signature = sign(&spec_example_key(), "msg_1", 1614265330, "");
        assert_ne!(signature, sign(&spec_example_key(), "msg_1", 1614265330, " "));
        assert_eq!(signature, "v1,/n9JD+QvCBymh/dplZctdnJL3Jc/7vU4siQ5cz50QYY=");
    }

    #[test]
    fn rotation_puts_both_signatures_new_first_until_expiry() {
        let new = Key::new(vec![7; 32]);
        let old = spec_example_key();
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let keys = SigningKeys { current: new.clone(), previous: Some((old.clone(), t0 + Duration::hours(24))) };
        let header = keys.signature_header("d1", 1_700_000_000, "b", t0);
        assert_eq!(
            header,
            format!("{} {}", sign(&new, "d1", 1_700_000_000, "b"), sign(&old, "d1", 1_700_000_000, "b"))
        );
        let just_before = keys.signature_header("d1", 1, "b", t0 + Duration::hours(24) - Duration::seconds(1));
        assert_eq!(just_before.split(' ').count(), 2);
        let after = keys.signature_header("d1", 1, "b", t0 + Duration::hours(24));
        assert_eq!(after, sign(&new, "d1", 1, "b"));
    }

    #[test]
    fn secret_format() {
        assert!(SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        let generated = SigningSecret::from_key_bytes(&[1; 32]);
        assert!(generated.expose().starts_with("whsec_"));
        assert_eq!(generated.key().ok(), Some(Key::new(vec![1; 32])));
        // Padding may be left off.
        let unpadded = generated.expose().trim_end_matches('=').to_string();
        assert!(SigningSecret::parse(&unpadded).is_ok());
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",        // no prefix
            "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  // prefix is case-sensitive
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La",      // 20 bytes
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",  // not base64
            "whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // space
            "whsec_",
            "[REDACTED]",
        ] {
            let err = SigningSecret::parse(bad).err();
            assert_eq!(err.map(|e| e.field), Some("signing_secret".to_string()), "{bad}");
        }
        let long = SigningSecret::from_key_bytes(&[1; MAX_SECRET_BYTES + 1]);
        assert!(SigningSecret::parse(long.expose()).is_err());
        assert!(SigningSecret::parse(SigningSecret::from_key_bytes(&[1; MAX_SECRET_BYTES]).expose()).is_ok());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let secret = SigningSecret::from_key_bytes(&[9; 32]);
        let previous = PreviousSecret::rotated_at(secret.clone(), DateTime::from_timestamp(1_900_000_000, 0).unwrap());
        let text = format!("{secret:?} {previous:?} {:?}", secret.key());
        assert!(!text.contains(secret.expose()) && !text.contains("CQkJ"), "{text}");
    }

    /// The numbers of docs/DESIGN.md, *Signatures* (computed there with Python's hmac).
    #[test]
    fn design_doc_worked_example() {
        let key = spec_example_key();
        assert_eq!(
            url_signature(&key, "https://aff.example/pb?clickid=abc%201&sig="),
            "8ffdb45469e10ecc89e2f9d87f09e021789f8558b69829139ba61b0fb155cda8"
        );
        assert_eq!(
            sign(&key, "d_7f3a", 1714564800, r#"{"lead": "T1"}"#),
            "v1,gEvWHTmRTLvxtFesIhxdD5fIGd8yrg1Yvk8dcwmJycw="
        );
    }

    #[test]
    fn url_signature_is_lowercase_hex_hmac() {
        let key = Key::new(b"key".to_vec());
        // RFC 4231-style check against a well-known value: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            url_signature(&key, "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
