//! The macro template engine. `{name}` (letters, digits, `_`, `.`) is a macro; every
//! other brace is literal text, so JSON bodies need no escaping. Templates are parsed
//! and checked once, when a postback is saved.

use super::macros::MacroContext;
use super::ValidationError;

/// How a macro value is escaped where it lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encoded as a URL component (RFC 3986 unreserved kept).
    Url,
    /// Escaped as the inside of a JSON string.
    Json,
    /// application/x-www-form-urlencoded value.
    Form,
    /// A header value: inserted as is, but CR, LF and NUL are refused.
    Header,
    /// Inserted as is (text/plain bodies).
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Macro(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

/// Why a template was refused; becomes a `ValidationError` once the field is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub code: &'static str,
    pub message: String,
    /// The offending macro, if any.
    pub macro_name: Option<String>,
}

impl TemplateError {
    pub fn for_field(self, field: &str) -> ValidationError {
        ValidationError::new(self.code, field, self.message)
    }
}

/// A rendered value could not be placed (a header value with CR/LF).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("macro {macro_name} renders a value that cannot be used here: {reason}")]
pub struct RenderError {
    pub macro_name: String,
    pub reason: String,
}

impl Template {
    /// Parse and check: an unknown macro is an error naming it with the closest known
    /// name suggested; an unclosed `{name` at the end of the text is an error.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        todo!("parse")
    }

    /// The macro names used, in order.
    pub fn macros(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Macro(m) => Some(m.as_str()),
            Segment::Literal(_) => None,
        })
    }

    pub fn render(&self, ctx: &MacroContext<'_>, encoding: Encoding) -> Result<String, RenderError> {
        todo!("render")
    }
}
