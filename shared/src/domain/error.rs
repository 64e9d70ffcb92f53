use serde::Serialize;

/// A client-caused problem, always mapped to a 4xx naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Machine-readable code, e.g. `invalid`, `required`, `unknown_macro`, `too_long`.
    pub code: &'static str,
    /// The field path, e.g. `url`, `headers.Authorization`, `events[3].transaction_id`.
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, field: field.into(), message: message.into() }
    }
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        Self { code: "required", message: format!("{field} is required"), field }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("invalid", field, message)
    }
    /// Prefix the field path, e.g. for batch items: `events[3].` + field.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.trim_end_matches('.').to_string()
        } else {
            format!("{prefix}{}", self.field)
        };
        self
    }
}

/// How an error message names the kind of a JSON value a client sent ("not a list").
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
