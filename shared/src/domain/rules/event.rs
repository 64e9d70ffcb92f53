//! What a valid event value is: length limits, the money and ISO code formats, and the
//! shape of param names. The edge (`crate::entry::http::parse::event`) reads a JSON body
//! or a query string into text per field and applies these; macros render the stored
//! values into URLs, headers and bodies, so they must hold for every stored event.

use super::{check_max_chars, ValidationError};

pub const MAX_ID_CHARS: usize = 256;
pub const MAX_SCOPE_ID_CHARS: usize = 128;
pub const MAX_REASON_CHARS: usize = 256;
pub const MAX_EVENT_NAME_CHARS: usize = 128;
pub const MAX_MONEY_CHARS: usize = 32;
pub const MAX_SUB_CHARS: usize = 512;
pub const MAX_USER_AGENT_CHARS: usize = 1024;
pub const MAX_PARAMS: usize = 50;
pub const MAX_PARAM_KEY_CHARS: usize = 64;
pub const MAX_PARAM_VALUE_CHARS: usize = 1024;

/// A plain decimal, kept as sent: optional `-`, digits, optional `.` and digits. No
/// exponent, no `+`, no NaN or infinity, at most 32 characters.
pub fn money(field: &str, text: String) -> Result<String, ValidationError> {
    check_max_chars(field, &text, MAX_MONEY_CHARS)?;
    if !is_plain_decimal(&text) {
        return Err(ValidationError::invalid(field, format!("{field} must be a decimal number such as 12.34")));
    }
    Ok(text)
}

pub fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// Exactly `len` ASCII letters (an ISO currency or country code), stored upper case.
/// `what` completes the message: "`field` must be `what`".
pub fn letter_code(field: &str, text: String, len: usize, what: &str) -> Result<String, ValidationError> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ValidationError::invalid(field, format!("{field} must be {what}")));
    }
    Ok(text.to_ascii_uppercase())
}

/// 1 to 64 letters, digits, `_`, `-` or `.`: a name usable as `{params.<name>}`.
pub fn is_param_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_PARAM_KEY_CHARS
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// [`is_param_key`], as an error naming `field` (the name as the client sent it).
pub fn check_param_key(field: &str, key: &str) -> Result<(), ValidationError> {
    if !is_param_key(key) {
        return Err(ValidationError::invalid(
            field,
            format!("a param name must be 1 to {MAX_PARAM_KEY_CHARS} letters, digits, _, - or ."),
        ));
    }
    Ok(())
}

pub fn check_param_value(field: &str, value: &str) -> Result<(), ValidationError> {
    check_max_chars(field, value, MAX_PARAM_VALUE_CHARS)
}

pub fn too_many_params() -> ValidationError {
    ValidationError::new("too_long", "params", format!("at most {MAX_PARAMS} params are allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals() {
        for ok in ["0", "12", "12.50", "-0.001", "007"] {
            assert!(is_plain_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "1.", ".5", "+1", "1e3", "1_000", "NaN", "inf", "1.2.3", "--1", " 1"] {
            assert!(!is_plain_decimal(bad), "{bad}");
        }
    }
}
