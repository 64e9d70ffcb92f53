//! `PostbackSpec::from_json`: every rule of the spec's Postback table, checked at save
//! time so nothing is discovered at fire time.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::{check_max_chars, check_no_control_chars, json_kind, present, unknown_field};
use crate::domain::event::EventType;
use crate::domain::macros::{sample_event, MacroContext};
use crate::domain::postback::{FireOn, HttpMethod, PostbackSpec, Scope, MAX_DELAY_SECONDS};
use crate::domain::template::{is_json_content_type, Encoding, Template};
use crate::domain::ValidationError;

const FIELDS: &[&str] = &[
    "name",
    "type",
    "enabled",
    "offers",
    "publishers",
    "fire_on",
    "rejection_reasons",
    "event_names",
    "delay_seconds",
    "method",
    "url",
    "headers",
    "body",
    "content_type",
];
/// Server-assigned; accepted and ignored so a client can PUT back what it GOT.
const READ_ONLY_FIELDS: &[&str] = &["id", "created_at", "updated_at"];

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SCOPE_IDS: usize = 1000;
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_LIST_ENTRIES: usize = 100;
pub const MAX_REJECTION_REASON_CHARS: usize = 256;
pub const MAX_EVENT_NAME_CHARS: usize = 128;
pub const MAX_URL_CHARS: usize = 4096;
pub const MAX_HEADERS: usize = 50;
pub const MAX_HEADER_NAME_CHARS: usize = 256;
pub const MAX_HEADER_VALUE_CHARS: usize = 8192;
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_CONTENT_TYPE_CHARS: usize = 200;
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Headers the HTTP client manages itself (framing, connection handling, the target
/// host) or that `content_type` sets; a template may not override them.
const MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "content-type",
];

pub(crate) fn postback_spec(value: &Value) -> Result<PostbackSpec, ValidationError> {
    let object = value.as_object().ok_or_else(|| ValidationError::invalid("", "a postback must be a JSON object"))?;
    if let Some(unknown) =
        object.keys().find(|k| !FIELDS.contains(&k.as_str()) && !READ_ONLY_FIELDS.contains(&k.as_str()))
    {
        return Err(unknown_field(unknown, FIELDS, ""));
    }

    let name = required_string(object, "name")?.trim();
    if name.is_empty() {
        return Err(ValidationError::required("name"));
    }
    check_max_chars("name", name, MAX_NAME_CHARS)?;
    // The name is the `{postback_name}` macro, which may land in a header.
    check_no_control_chars("name", name)?;

    let kind_text = required_string(object, "type")?;
    let kind = EventType::parse(kind_text)
        .ok_or_else(|| ValidationError::invalid("type", "type must be one of impression, click, conversion, event"))?;

    let enabled = match present(object, "enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ValidationError::invalid(
                "enabled",
                format!("enabled must be true or false, not {}", json_kind(other)),
            ))
        }
    };

    let offers = scope(object, "offers")?;
    let publishers = scope(object, "publishers")?;

    // Ignored for impression and click postbacks, which always fire.
    let fire_on = match optional_string(object, "fire_on")? {
        None => FireOn::Approved,
        Some("approved") => FireOn::Approved,
        Some("pending") => FireOn::Pending,
        Some("rejected") => FireOn::Rejected,
        Some("all") => FireOn::All,
        Some(_) => {
            return Err(ValidationError::invalid("fire_on", "fire_on must be one of approved, pending, rejected, all"))
        }
    };

    let rejection_reasons = string_list(object, "rejection_reasons", MAX_REJECTION_REASON_CHARS)?;
    if rejection_reasons.is_some() && !(kind.has_status() && matches!(fire_on, FireOn::Rejected | FireOn::All)) {
        return Err(ValidationError::invalid(
            "rejection_reasons",
            "rejection_reasons only applies to conversion and event postbacks with fire_on rejected or all",
        ));
    }
    let event_names = string_list(object, "event_names", MAX_EVENT_NAME_CHARS)?;
    if event_names.is_some() && kind != EventType::Event {
        return Err(ValidationError::invalid("event_names", "event_names only applies to event postbacks"));
    }

    let delay_seconds = delay_seconds(object)?;

    // Case-insensitive for convenience; stored upper case.
    let method = match optional_string(object, "method")? {
        None => HttpMethod::Get,
        Some(m) if m.eq_ignore_ascii_case("GET") => HttpMethod::Get,
        Some(m) if m.eq_ignore_ascii_case("POST") => HttpMethod::Post,
        Some(m) if m.eq_ignore_ascii_case("PUT") => HttpMethod::Put,
        Some(_) => return Err(ValidationError::invalid("method", "method must be one of GET, POST, PUT")),
    };

    let url_source = required_string(object, "url")?.trim();
    if url_source.is_empty() {
        return Err(ValidationError::required("url"));
    }
    check_max_chars("url", url_source, MAX_URL_CHARS)?;
    check_no_control_chars("url", url_source)?;
    let url_template = Template::parse(url_source).map_err(|e| e.for_field("url"))?;

    let headers = headers(object)?;

    let content_type = match optional_string(object, "content_type")?.map(str::trim).filter(|c| !c.is_empty()) {
        None => DEFAULT_CONTENT_TYPE,
        Some(c) => {
            check_max_chars("content_type", c, MAX_CONTENT_TYPE_CHARS)?;
            check_no_control_chars("content_type", c)?;
            check_media_type(c)?;
            c
        }
    };

    let body_source = optional_string(object, "body")?.filter(|b| !b.is_empty());
    let body_template = match body_source {
        None => None,
        Some(_) if method == HttpMethod::Get => {
            return Err(ValidationError::invalid("body", "a GET postback cannot have a body; use POST or PUT"));
        }
        Some(b) => {
            if b.len() > MAX_BODY_BYTES {
                return Err(ValidationError::new(
                    "too_long",
                    "body",
                    format!("body must be at most {MAX_BODY_BYTES} bytes"),
                ));
            }
            Some(Template::parse(b).map_err(|e| e.for_field("body"))?)
        }
    };

    // Render with a value for every macro: the URL must come out absolute with a literal
    // host, and a JSON body must come out as JSON (catches broken quoting at save time).
    let param_keys = std::iter::once(&url_template)
        .chain(headers.values().map(|header| &header.template))
        .chain(body_template.as_ref())
        .flat_map(Template::macros)
        .filter_map(|m| m.strip_prefix("params."));
    let sample = sample_event(kind, param_keys);
    let ctx = MacroContext {
        event: &sample,
        postback_id: "pb_sample",
        postback_name: name,
        delivery_id: "d_sample",
        attempt: 1,
    };
    check_url(&url_template, &ctx)?;
    if let Some(body) = &body_template {
        if is_json_content_type(content_type) {
            let rendered =
                body.render(&ctx, Encoding::Json).map_err(|e| ValidationError::invalid("body", e.to_string()))?;
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&rendered) {
                return Err(ValidationError::invalid(
                    "body",
                    format!("body must be JSON for content_type {content_type}, but with sample values it renders invalid JSON: {e}"),
                ));
            }
        }
    }

    Ok(PostbackSpec {
        name: name.to_string(),
        kind,
        enabled,
        offers,
        publishers,
        fire_on,
        rejection_reasons,
        event_names,
        delay_seconds,
        method,
        url: url_source.to_string(),
        headers: headers.into_values().map(|header| (header.name, header.source)).collect(),
        body: body_source.map(str::to_string),
        content_type: content_type.to_string(),
    })
}

fn required_string<'v>(object: &'v Map<String, Value>, field: &str) -> Result<&'v str, ValidationError> {
    optional_string(object, field)?.ok_or_else(|| ValidationError::required(field))
}

fn optional_string<'v>(object: &'v Map<String, Value>, field: &str) -> Result<Option<&'v str>, ValidationError> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => {
            Err(ValidationError::invalid(field, format!("{field} must be a string, not {}", json_kind(other))))
        }
    }
}

/// `"all"` (the default) or a non-empty list of ids; numeric ids are accepted as numbers
/// and kept as text; duplicates are dropped, order kept.
fn scope(object: &Map<String, Value>, field: &str) -> Result<Scope, ValidationError> {
    let shape = || ValidationError::invalid(field, format!("{field} must be \"all\" or a non-empty list of ids"));
    let items = match present(object, field) {
        None => return Ok(Scope::All),
        Some(Value::String(s)) if s == "all" => return Ok(Scope::All),
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => return Err(shape()),
    };
    if items.len() > MAX_SCOPE_IDS {
        return Err(ValidationError::new("too_long", field, format!("{field} may list at most {MAX_SCOPE_IDS} ids")));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let id = match item {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            other => {
                return Err(ValidationError::invalid(
                    &item_field,
                    format!("an id must be a string, not {}", json_kind(other)),
                ))
            }
        };
        if id.is_empty() {
            return Err(ValidationError::invalid(&item_field, "an id must not be empty"));
        }
        check_max_chars(&item_field, &id, MAX_ID_CHARS)?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(Scope::Only(ids))
}

/// An optional list of non-empty strings, deduplicated; an empty list is the same as
/// none.
fn string_list(
    object: &Map<String, Value>,
    field: &str,
    max_chars: usize,
) -> Result<Option<Vec<String>>, ValidationError> {
    let items = match present(object, field) {
        None => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ValidationError::invalid(
                field,
                format!("{field} must be a list of strings, not {}", json_kind(other)),
            ))
        }
    };
    if items.len() > MAX_LIST_ENTRIES {
        return Err(ValidationError::new(
            "too_long",
            field,
            format!("{field} may list at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    let mut list: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        let text = match item {
            Value::String(s) => s.trim(),
            other => {
                return Err(ValidationError::invalid(
                    &item_field,
                    format!("an entry must be a string, not {}", json_kind(other)),
                ))
            }
        };
        if text.is_empty() {
            return Err(ValidationError::invalid(&item_field, "an entry must not be empty"));
        }
        check_max_chars(&item_field, text, max_chars)?;
        if !list.iter().any(|x| x == text) {
            list.push(text.to_string());
        }
    }
    Ok(if list.is_empty() { None } else { Some(list) })
}

fn delay_seconds(object: &Map<String, Value>) -> Result<u32, ValidationError> {
    let range = || {
        ValidationError::invalid(
            "delay_seconds",
            format!("delay_seconds must be a whole number of seconds from 0 to {MAX_DELAY_SECONDS} (30 days)"),
        )
    };
    match present(object, "delay_seconds") {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|s| *s <= u64::from(MAX_DELAY_SECONDS))
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(range),
        Some(_) => Err(range()),
    }
}

/// The scheme and host must be literal text: a macro anywhere before the end of the
/// authority could point the postback at a host of the tracker's choosing. Then the URL
/// rendered with sample values must be an absolute http(s) URL with a host and no
/// userinfo.
fn check_url(template: &Template, ctx: &MacroContext<'_>) -> Result<(), ValidationError> {
    let prefix = template.literal_prefix();
    let after_scheme =
        strip_prefix_ignore_case(prefix, "https://").or_else(|| strip_prefix_ignore_case(prefix, "http://"));
    let Some(after_scheme) = after_scheme else {
        let message = if prefix.is_empty() && template.macros().next().is_some() {
            "url must start with literal http:// or https:// and a host, not a macro"
        } else {
            "url must be an absolute URL starting with http:// or https://"
        };
        return Err(ValidationError::invalid("url", message));
    };
    let authority_end = after_scheme.find(['/', '?', '#', '\\']);
    if authority_end == Some(0) || after_scheme.is_empty() {
        return Err(ValidationError::invalid("url", "url must name a host after the scheme"));
    }
    if authority_end.is_none() && template.macros().next().is_some() {
        return Err(ValidationError::invalid(
            "url",
            "the scheme and host of url must be literal text; a macro may only follow the host, \
             e.g. https://example.com/postback?clickid={external_transaction_id}",
        ));
    }
    let rendered = template.render(ctx, Encoding::Url).map_err(|e| ValidationError::invalid("url", e.to_string()))?;
    let url = url::Url::parse(&rendered)
        .map_err(|e| ValidationError::invalid("url", format!("url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::invalid("url", "url must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::invalid("url", "url must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValidationError::invalid(
            "url",
            "url must not carry a user name or password; send credentials in headers (e.g. Authorization)",
        ));
    }
    Ok(())
}

fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    text.get(..prefix.len()).filter(|head| head.eq_ignore_ascii_case(prefix)).and_then(|_| text.get(prefix.len()..))
}

struct HeaderTemplate {
    /// As the client spelled it.
    name: String,
    source: String,
    template: Template,
}

/// Header templates keyed by lower-cased name, to catch case-insensitive duplicates.
fn headers(object: &Map<String, Value>) -> Result<BTreeMap<String, HeaderTemplate>, ValidationError> {
    let map = match present(object, "headers") {
        None => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(ValidationError::invalid(
                "headers",
                format!("headers must be an object of header names to values, not {}", json_kind(other)),
            ))
        }
    };
    if map.len() > MAX_HEADERS {
        return Err(ValidationError::new("too_long", "headers", format!("at most {MAX_HEADERS} headers are allowed")));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in map {
        let field = format!("headers.{name}");
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ValidationError::invalid(
                &field,
                "a header name must be letters, digits and !#$%&'*+-.^_`|~ (no spaces or colons)",
            ));
        }
        check_max_chars(&field, name, MAX_HEADER_NAME_CHARS)?;
        let lower = name.to_ascii_lowercase();
        if lower == "content-type" {
            return Err(ValidationError::invalid(&field, "set the body's type with content_type, not a header"));
        }
        if MANAGED_HEADERS.contains(&lower.as_str()) {
            return Err(ValidationError::invalid(
                &field,
                format!("{name} is set by the HTTP client and cannot be configured"),
            ));
        }
        let Value::String(source) = value else {
            return Err(ValidationError::invalid(
                &field,
                format!("a header value must be a string, not {}", json_kind(value)),
            ));
        };
        check_max_chars(&field, source, MAX_HEADER_VALUE_CHARS)?;
        // Tab is legal inside a header value; every other control character is not.
        if source.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ValidationError::invalid(
                &field,
                "a header value must not contain CR, LF or other control characters",
            ));
        }
        let template = Template::parse(source).map_err(|e| e.for_field(&field))?;
        let header = HeaderTemplate { name: name.clone(), source: source.clone(), template };
        if headers.insert(lower, header).is_some() {
            return Err(ValidationError::invalid(
                &field,
                format!("header {name} is given more than once (names are case-insensitive)"),
            ));
        }
    }
    Ok(headers)
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `type/subtype` made of token characters, parameters after `;` not inspected.
fn check_media_type(content_type: &str) -> Result<(), ValidationError> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let valid = essence
        .split_once('/')
        .is_some_and(|(kind, sub)| [kind, sub].iter().all(|part| !part.is_empty() && part.bytes().all(is_token_byte)));
    if !valid {
        return Err(ValidationError::invalid(
            "content_type",
            "content_type must be a media type such as application/json",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for ok in ["application/json", "text/plain; charset=utf-8", "application/vnd.api+json"] {
            assert!(check_media_type(ok).is_ok(), "{ok}");
        }
        for bad in ["json", "/json", "application/", "text/ plain", "a/b/c", "text/pl@in"] {
            assert!(check_media_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_bytes() {
        assert!(b"X-Api-Key_1.v2~!".iter().all(|b| is_token_byte(*b)));
        assert!(!b" :()/\\\"".iter().any(|b| is_token_byte(*b)));
    }
}
