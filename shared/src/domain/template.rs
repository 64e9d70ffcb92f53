//! The macro template engine. `{name}` (letters, digits, `_`, `.`) is a macro; every
//! other brace is literal text, so JSON bodies need no escaping. `{name|fn|fn:arg}`
//! passes the value through functions (`super::functions`). Templates are parsed and
//! checked once, when a postback is saved, into segments (a function chain into typed
//! functions), so rendering never reads template text again.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::event::{EventType, Field};
use super::functions::Chain;
use super::macros::{MacroContext, MacroSet};
use super::ValidationError;

/// Everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded, so a
/// value can never add a query parameter, a fragment or a path segment.
pub(crate) const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Room reserved per macro when sizing the output; most values are short ids.
const TYPICAL_VALUE_LEN: usize = 24;

/// How a macro value is escaped where it lands. Literal template text is never encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encoded as a URL component (RFC 3986 unreserved kept).
    Url,
    /// Escaped as the inside of a JSON string.
    Json,
    /// application/x-www-form-urlencoded value.
    Form,
    /// A header value: inserted as is, but CR, LF, NUL and the other control characters
    /// (tab excepted) are refused.
    Header,
    /// Inserted as is (text/plain bodies).
    Raw,
}

impl Encoding {
    /// The encoding of a body sent with this `Content-Type`: JSON for `application/json`
    /// and any `+json` type, form encoding for `application/x-www-form-urlencoded`, and
    /// raw for everything else.
    pub fn for_content_type(content_type: &str) -> Encoding {
        if is_json_content_type(content_type) {
            Encoding::Json
        } else if essence(content_type).eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Encoding::Form
        } else {
            Encoding::Raw
        }
    }

    /// Append `value`, encoded, to `out`. Fails only for [`Encoding::Header`], whose
    /// values may not contain control characters (CR, LF, NUL and the other C0 controls
    /// and DEL; a horizontal tab is allowed) because they could split or end a header.
    pub fn push_encoded(self, out: &mut String, value: &str) -> Result<(), EncodeError> {
        match self {
            Encoding::Url => out.extend(percent_encoding::utf8_percent_encode(value, URL_COMPONENT)),
            Encoding::Form => out.extend(url::form_urlencoded::byte_serialize(value.as_bytes())),
            Encoding::Json => push_json_escaped(out, value),
            Encoding::Header => {
                if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    return Err(EncodeError::ControlCharInHeader);
                }
                out.push_str(value);
            }
            Encoding::Raw => out.push_str(value),
        }
        Ok(())
    }
}

/// A value that cannot be placed with the chosen encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a header value cannot contain CR, LF, NUL or other control characters")]
    ControlCharInHeader,
}

/// `application/json`, or a structured `+json` type such as `application/vnd.api+json`
/// (parameters like `; charset=utf-8` are ignored, case-insensitive).
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case("application/json")
        || essence.len() > 5 && essence.get(essence.len() - 5..).is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
}

/// The media type without parameters: `application/json; charset=utf-8` → `application/json`.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// The inside of a JSON string, byte for byte what `serde_json` writes between the
/// quotes (checked by a property test), without allocating per value.
fn push_json_escaped(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut clean_from = 0;
    for (i, byte) in value.bytes().enumerate() {
        let short: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `byte` is ASCII, so `i` and `i + 1` are char boundaries.
        out.push_str(&value[clean_from..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(short);
        }
        clean_from = i + 1;
    }
    out.push_str(&value[clean_from..]);
}

/// Macro name characters: ASCII letters, digits, `_` and `.`.
fn is_macro_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.'
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Macro(MacroName),
    /// `{name|fn|...}`: a macro whose value goes through a function chain.
    Piped {
        name: MacroName,
        chain: Chain,
    },
}

/// A macro's name as written, with the event field it names looked up once, when the
/// template is parsed, rather than at every render.
#[derive(Debug, Clone)]
pub struct MacroName {
    name: String,
    field: Option<Field>,
}

impl MacroName {
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The value of this macro in `ctx` (as `MacroContext::value` of the name).
    pub fn value<'a>(&self, ctx: &MacroContext<'a>) -> Option<Cow<'a, str>> {
        match self.field {
            Some(field) => field.text(ctx.event),
            None => ctx.value(&self.name),
        }
    }
}

impl From<&str> for MacroName {
    fn from(name: &str) -> Self {
        MacroName { name: name.to_string(), field: Field::named(name) }
    }
}

impl std::ops::Deref for MacroName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl PartialEq for MacroName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for MacroName {}

impl PartialEq<str> for MacroName {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
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
    /// Parse and check with the macros of event postbacks: an unknown macro is an error
    /// naming it with the closest known name suggested; an unclosed `{name` at the end of
    /// the text is an error.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        Self::parse_in(source, MacroSet::Event)
    }

    /// As [`Template::parse`], with the macros of a postback of type `kind` (alert
    /// postbacks have their own).
    pub fn parse_for(source: &str, kind: EventType) -> Result<Template, TemplateError> {
        Self::parse_in(source, MacroSet::for_type(kind))
    }

    pub fn parse_in(source: &str, set: MacroSet) -> Result<Template, TemplateError> {
        let bytes = source.as_bytes();
        let mut segments = Vec::new();
        let mut literal_from = 0;
        let mut search_from = 0;
        while let Some(offset) = source.get(search_from..).and_then(|rest| rest.find('{')) {
            let open = search_from + offset;
            let name_from = open + 1;
            let name_len = bytes.get(name_from..).unwrap_or_default().iter().take_while(|b| is_macro_byte(**b)).count();
            let name_to = name_from + name_len;
            // Every byte scanned so far is ASCII, so these are char boundaries.
            search_from = name_to;
            if name_len == 0 {
                continue; // a brace not followed by a name is literal text
            }
            let name = &source[name_from..name_to];
            let close = match bytes.get(name_to) {
                Some(b'}') => name_to,
                // A `|` right after the name starts a function chain that runs to the
                // closing brace.
                Some(b'|') => match source.get(name_to..).and_then(|rest| rest.find('}')) {
                    Some(offset) => name_to + offset,
                    None => {
                        return Err(TemplateError {
                            code: "unclosed_macro",
                            message: format!("macro {{{name}|... is not closed: add }} after its functions"),
                            macro_name: Some(name.to_string()),
                        })
                    }
                },
                Some(_) => continue, // `{not a macro}` is literal text
                None => {
                    return Err(TemplateError {
                        code: "unclosed_macro",
                        message: format!("macro {{{name} is not closed: add }} after the name"),
                        macro_name: Some(name.to_string()),
                    });
                }
            };
            if !set.contains(name) {
                return Err(unknown_macro(name, set));
            }
            let segment =
                if close == name_to { Segment::Macro(name.into()) } else { piped(name, &source[name_to..close])? };
            if literal_from < open {
                segments.push(Segment::Literal(source[literal_from..open].to_string()));
            }
            segments.push(segment);
            literal_from = close + 1;
            search_from = literal_from;
        }
        if literal_from < source.len() {
            segments.push(Segment::Literal(source[literal_from..].to_string()));
        }
        Ok(Template { segments })
    }

    /// The template as text again: `parse(t.source()) == t`.
    pub fn source(&self) -> String {
        let mut out =
            String::with_capacity(self.literal_len() + self.macros().map(|m| m.len() + 2).sum::<usize>() + 16);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Macro(name) => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
                Segment::Piped { name, chain } => {
                    out.push('{');
                    out.push_str(name);
                    out.push_str(&chain.source);
                    out.push('}');
                }
            }
        }
        out
    }

    /// The literal text before the first macro (all of it when there is no macro).
    pub fn literal_prefix(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Literal(text)) => text,
            _ => "",
        }
    }

    fn literal_len(&self) -> usize {
        self.segments.iter().map(|s| if let Segment::Literal(text) = s { text.len() } else { 0 }).sum()
    }

    /// Does the template use `{signature}`?
    pub fn uses_signature(&self) -> bool {
        self.macros().any(|m| m == super::signing::SIGNATURE_MACRO)
    }

    /// The macro names used, in order, those passed through functions included.
    pub fn macros(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Macro(m) | Segment::Piped { name: m, .. } => Some(m.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Render with one event's values, each encoded for where it lands. A macro with no
    /// value renders empty.
    pub fn render(&self, ctx: &MacroContext<'_>, encoding: Encoding) -> Result<String, RenderError> {
        self.render_with_signature(ctx, encoding, None)
    }

    /// As [`Template::render`], with `{signature}` rendering `signature` (inserted as is:
    /// it is hex, or a redaction mark) instead of empty.
    pub fn render_with_signature(
        &self,
        ctx: &MacroContext<'_>,
        encoding: Encoding,
        signature: Option<&str>,
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.literal_len() + self.macros().count() * TYPICAL_VALUE_LEN);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Macro(name) if name.as_str() == super::signing::SIGNATURE_MACRO => {
                    out.push_str(signature.unwrap_or_default());
                }
                Segment::Macro(name) => {
                    if let Some(value) = name.value(ctx) {
                        encoding.push_encoded(&mut out, &value).map_err(|reason| RenderError {
                            macro_name: name.to_string(),
                            reason: reason.to_string(),
                        })?;
                    }
                }
                Segment::Piped { name, chain } => {
                    // A macro with no value enters the chain as the empty text.
                    let value = chain.apply(name.value(ctx).unwrap_or(Cow::Borrowed("")));
                    encoding
                        .push_encoded(&mut out, &value)
                        .map_err(|reason| RenderError { macro_name: name.to_string(), reason: reason.to_string() })?;
                }
            }
        }
        Ok(out)
    }
}

/// Every macro the templates use (those passed through functions included), e.g. for
/// the check of which macros a partner's postback may use.
pub fn macros_used<'t>(templates: impl IntoIterator<Item = &'t Template>) -> BTreeSet<&'t str> {
    templates.into_iter().flat_map(Template::macros).collect()
}

/// The segment of `{name|chain}`: `chain` is the text from the `|` to the closing brace.
fn piped(name: &str, chain: &str) -> Result<Segment, TemplateError> {
    if name == super::signing::SIGNATURE_MACRO {
        return Err(TemplateError {
            code: "invalid_argument",
            message: "{signature} takes no functions: it is the signature of the request as sent".to_string(),
            macro_name: Some(name.to_string()),
        });
    }
    let chain = Chain::parse(chain, name).map_err(|e| TemplateError {
        code: e.code,
        message: format!("{} (in {{{name}{chain}}})", e.message),
        macro_name: Some(name.to_string()),
    })?;
    Ok(Segment::Piped { name: name.into(), chain })
}

fn unknown_macro(name: &str, set: MacroSet) -> TemplateError {
    let hint = if let Some(why) = set.why_not(name) {
        format!(": {why}")
    } else if set == MacroSet::Event && (name == "params." || name == "params") {
        " (extra parameters are {params.<key>}, e.g. {params.source})".to_string()
    } else if let Some(key) = misspelt_params_key(name).filter(|_| set == MacroSet::Event) {
        format!("; did you mean {{params.{key}}}?")
    } else if let Some(known) = set.suggest(name) {
        format!("; did you mean {{{known}}}? (macro names are case-sensitive)")
    } else {
        String::new()
    };
    TemplateError {
        code: "unknown_macro",
        message: format!("unknown macro {{{name}}}{hint}"),
        macro_name: Some(name.to_string()),
    }
}

/// `{param.source}`, `{params_source}`, `{Params.source}` → `source`.
pub(crate) fn misspelt_params_key(name: &str) -> Option<&str> {
    let lower_prefix = |prefix: &str| {
        name.get(..prefix.len()).filter(|head| head.eq_ignore_ascii_case(prefix)).and_then(|_| name.get(prefix.len()..))
    };
    ["params.", "params_", "param.", "param_"].into_iter().find_map(lower_prefix).filter(|key| !key.is_empty())
}
