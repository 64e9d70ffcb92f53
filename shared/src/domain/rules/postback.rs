//! Every rule of the spec's Postback table that is about the values, checked at save time
//! so nothing is discovered at fire time. The edge (`crate::entry::http::parse::postback`)
//! reads each field of the request and calls the rule for it, in the order of the table,
//! so the first problem reported is always the same one.
//!
//! Lists arrive as iterators of already-read items (`Result`s, so a wrongly typed item is
//! reported in its place among the others): the rule checks the count first, then each
//! item in order.

use std::collections::{BTreeMap, HashSet};

use super::{check_max_chars, check_no_control_chars, ValidationError};
use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::event::EventType;
use crate::domain::macros::{sample_event, sample_time, MacroContext, MacroSet};
use crate::domain::postback::{FireOn, HttpMethod, Scope, SecretInput, MAX_DELAY_SECONDS, MAX_RATE_LIMIT_PER_SECOND};
use crate::domain::signing::Signing;
use crate::domain::template::{is_json_content_type, Encoding, Template};

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
pub const MAX_SUCCESS_RULE_CHARS: usize = 200;

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

/// The (trimmed) name: required, bounded, and free of control characters, since it is
/// the `{postback_name}` macro, which may land in a header.
pub fn name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::required("name"));
    }
    check_max_chars("name", name, MAX_NAME_CHARS)?;
    check_no_control_chars("name", name)
}

/// A scope list (`offers`, `publishers`) given as ids: at most 1000, none empty, each at
/// most 128 characters; duplicates are dropped, order kept. `"all"` and the list's shape
/// are the edge's to read.
pub fn scope(
    field: &str,
    ids: impl ExactSizeIterator<Item = Result<String, ValidationError>>,
) -> Result<Scope, ValidationError> {
    if ids.len() > MAX_SCOPE_IDS {
        return Err(ValidationError::new("too_long", field, format!("{field} may list at most {MAX_SCOPE_IDS} ids")));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut unique = Vec::with_capacity(ids.len());
    for (i, id) in ids.enumerate() {
        let id = id?;
        let item_field = format!("{field}[{i}]");
        if id.is_empty() {
            return Err(ValidationError::invalid(&item_field, "an id must not be empty"));
        }
        check_max_chars(&item_field, &id, MAX_ID_CHARS)?;
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(Scope::Only(unique))
}

/// An optional list of non-empty texts (`rejection_reasons`, `event_names`): at most 100,
/// each at most `max_chars`, deduplicated; an empty list is the same as none.
pub fn entries(
    field: &str,
    items: impl ExactSizeIterator<Item = Result<String, ValidationError>>,
    max_chars: usize,
) -> Result<Option<Vec<String>>, ValidationError> {
    if items.len() > MAX_LIST_ENTRIES {
        return Err(ValidationError::new(
            "too_long",
            field,
            format!("{field} may list at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    let mut list: Vec<String> = Vec::with_capacity(items.len());
    for (i, text) in items.enumerate() {
        let text = text?;
        let item_field = format!("{field}[{i}]");
        if text.is_empty() {
            return Err(ValidationError::invalid(&item_field, "an entry must not be empty"));
        }
        check_max_chars(&item_field, &text, max_chars)?;
        if !list.contains(&text) {
            list.push(text);
        }
    }
    Ok(if list.is_empty() { None } else { Some(list) })
}

/// `rejection_reasons` (when given) needs a status that can be `rejected`.
pub fn rejection_reasons_apply(kind: EventType, fire_on: FireOn) -> Result<(), ValidationError> {
    if !(kind.has_status() && matches!(fire_on, FireOn::Rejected | FireOn::All)) {
        return Err(ValidationError::invalid(
            "rejection_reasons",
            "rejection_reasons only applies to conversion and event postbacks with fire_on rejected or all",
        ));
    }
    Ok(())
}

/// `event_names` (when given) only filters event postbacks.
pub fn event_names_apply(kind: EventType) -> Result<(), ValidationError> {
    if kind != EventType::Event {
        return Err(ValidationError::invalid("event_names", "event_names only applies to event postbacks"));
    }
    Ok(())
}

/// 0 to 30 days. `None`: what was sent is not a whole, non-negative number of seconds.
pub fn delay_seconds(seconds: Option<u64>) -> Result<u32, ValidationError> {
    seconds.filter(|s| *s <= u64::from(MAX_DELAY_SECONDS)).and_then(|s| u32::try_from(s).ok()).ok_or_else(|| {
        ValidationError::invalid(
            "delay_seconds",
            format!("delay_seconds must be a whole number of seconds from 0 to {MAX_DELAY_SECONDS} (30 days)"),
        )
    })
}

/// `rate_limit_per_second`: a whole number from 1 to 10,000. `None`: what was sent is
/// not a whole number.
pub fn rate_limit_per_second(value: Option<u64>) -> Result<u32, ValidationError> {
    value
        .filter(|n| (1..=u64::from(MAX_RATE_LIMIT_PER_SECOND)).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            ValidationError::invalid(
                "rate_limit_per_second",
                format!("rate_limit_per_second must be a whole number from 1 to {MAX_RATE_LIMIT_PER_SECOND}"),
            )
        })
}

/// The (trimmed) URL template: required, bounded, no control characters, and parsed with
/// the macros of a `kind` postback. Where it may point is checked by [`check_rendering`],
/// once every template is known.
pub fn url(kind: impl Into<MacroSet>, source: &str) -> Result<Template, ValidationError> {
    if source.is_empty() {
        return Err(ValidationError::required("url"));
    }
    check_max_chars("url", source, MAX_URL_CHARS)?;
    check_no_control_chars("url", source)?;
    Template::parse_in(source, kind.into()).map_err(|e| e.for_field("url"))
}

/// A header template that passed [`headers`].
pub struct HeaderTemplate {
    /// As the client spelled it.
    pub name: String,
    pub source: String,
    pub template: Template,
}

/// Header templates (with the macros of a `kind` postback), given as `(name, value)` with
/// the value already read as text, keyed by lower-cased name to catch case-insensitive
/// duplicates.
pub fn headers<'a>(
    kind: impl Into<MacroSet>,
    entries: impl ExactSizeIterator<Item = (&'a str, Result<&'a str, ValidationError>)>,
) -> Result<BTreeMap<String, HeaderTemplate>, ValidationError> {
    if entries.len() > MAX_HEADERS {
        return Err(ValidationError::new("too_long", "headers", format!("at most {MAX_HEADERS} headers are allowed")));
    }
    let set = kind.into();
    let mut headers = BTreeMap::new();
    for (name, source) in entries {
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
        let source = source?;
        check_max_chars(&field, source, MAX_HEADER_VALUE_CHARS)?;
        // Tab is legal inside a header value; every other control character is not.
        if source.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ValidationError::invalid(
                &field,
                "a header value must not contain CR, LF or other control characters",
            ));
        }
        let template = Template::parse_in(source, set).map_err(|e| e.for_field(&field))?;
        let header = HeaderTemplate { name: name.to_string(), source: source.to_string(), template };
        if headers.insert(lower, header).is_some() {
            return Err(ValidationError::invalid(
                &field,
                format!("header {name} is given more than once (names are case-insensitive)"),
            ));
        }
    }
    Ok(headers)
}

/// A (trimmed, non-empty) `content_type`: bounded, no control characters, a media type.
pub fn content_type(content_type: &str) -> Result<(), ValidationError> {
    check_max_chars("content_type", content_type, MAX_CONTENT_TYPE_CHARS)?;
    check_no_control_chars("content_type", content_type)?;
    check_media_type(content_type)
}

/// A (non-empty) body template: not for GET, at most 64 KiB, and parsed with the macros
/// of a `kind` postback.
pub fn body(kind: impl Into<MacroSet>, method: HttpMethod, source: &str) -> Result<Template, ValidationError> {
    if method == HttpMethod::Get {
        return Err(ValidationError::invalid("body", "a GET postback cannot have a body; use POST or PUT"));
    }
    if source.len() > MAX_BODY_BYTES {
        return Err(ValidationError::new("too_long", "body", format!("body must be at most {MAX_BODY_BYTES} bytes")));
    }
    Template::parse_in(source, kind.into()).map_err(|e| e.for_field("body"))
}

/// `reversal` (the request sent when a delivered conversion is later rejected) is for
/// conversion and event postbacks only: no other type has a status to become rejected.
pub fn reversal_applies(kind: EventType) -> Result<(), ValidationError> {
    if !kind.has_status() {
        return Err(ValidationError::invalid(
            "reversal",
            "reversal only applies to conversion and event postbacks (a status that can become rejected)",
        ));
    }
    Ok(())
}

/// Signing: a secret is only given with signing on (`[REDACTED]`, what a GET of a
/// postback with signing on shows, is accepted either way), and `{signature}` is a URL
/// macro of signing postbacks only.
pub fn signing(
    signing: Signing,
    secret: &SecretInput,
    url: &Template,
    headers: &BTreeMap<String, HeaderTemplate>,
    body: Option<&Template>,
) -> Result<(), ValidationError> {
    if !signing.is_on() && matches!(secret, SecretInput::Given(_)) {
        return Err(ValidationError::invalid(
            "signing_secret",
            "signing_secret needs signing standard-webhooks (signing is none)",
        ));
    }
    if !signing.is_on() && url.uses_signature() {
        return Err(ValidationError::invalid(
            "url",
            "the {signature} macro needs signing standard-webhooks (signing is none)",
        ));
    }
    if let Some(header) = headers.values().find(|h| h.template.uses_signature()) {
        return Err(ValidationError::invalid(
            format!("headers.{}", header.name),
            "{signature} signs the URL and may only be used in url; signing standard-webhooks \
             already sends the webhook-signature header",
        ));
    }
    if body.is_some_and(Template::uses_signature) {
        return Err(ValidationError::invalid(
            "body",
            "{signature} signs the URL and may only be used in url; the body is signed by the webhook-signature header",
        ));
    }
    Ok(())
}

/// `alerts` of an alert postback: a non-empty list of alert kinds; a kind listed twice
/// counts once (order kept), as ids in a scope do.
pub fn alerts(
    items: impl ExactSizeIterator<Item = Result<String, ValidationError>>,
) -> Result<Vec<AlertKind>, ValidationError> {
    if items.len() == 0 {
        return Err(ValidationError::invalid(
            "alerts",
            "alerts must list at least one of breaker_opened, breaker_closed, firing_failed (leave it out for all three)",
        ));
    }
    let mut kinds = Vec::with_capacity(AlertKind::ALL.len());
    for (i, item) in items.enumerate() {
        let item = item?;
        let kind = AlertKind::parse(&item).ok_or_else(|| {
            ValidationError::invalid(
                format!("alerts[{i}]"),
                format!("unknown alert {item:?}: an alert is one of breaker_opened, breaker_closed, firing_failed"),
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// `alerts` (when given) is for alert postbacks only.
pub fn alerts_apply(kind: EventType) -> Result<(), ValidationError> {
    if kind != EventType::Alert {
        return Err(ValidationError::invalid(
            "alerts",
            format!("alerts only applies to postbacks of type alert, not {}", kind.as_str()),
        ));
    }
    Ok(())
}

/// A field about tracker events (scope, status, event names, delay, conditions) given a
/// value on an alert postback, which fires on the manager's own alerts, at once. The
/// edge calls this only for a value other than the field's default, so a client can PUT
/// back what it GOT (a GET shows the defaults).
pub fn not_for_alerts(field: &str) -> ValidationError {
    ValidationError::invalid(
        field,
        format!(
            "{field} does not apply to alert postbacks: they fire on the manager's own alerts \
             (about every postback but alert postbacks), at once; choose which with alerts"
        ),
    )
}

/// A `success_rule` text (`body_contains`, `body_not_contains`): 1 to 200 characters,
/// matched as sent.
pub fn success_rule_text(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::invalid(
            field,
            format!("{field} must be 1 to {MAX_SUCCESS_RULE_CHARS} characters; leave it out to not check it"),
        ));
    }
    check_max_chars(field, text, MAX_SUCCESS_RULE_CHARS)
}

/// Render with a value for every macro: the URL must come out absolute with a literal
/// host, and a JSON body must come out as JSON (catches broken quoting at save time).
pub fn check_rendering(
    kind: EventType,
    name: &str,
    url: &Template,
    headers: &BTreeMap<String, HeaderTemplate>,
    body: Option<&Template>,
    content_type: &str,
) -> Result<(), ValidationError> {
    let param_keys = std::iter::once(url)
        .chain(headers.values().map(|header| &header.template))
        .chain(body)
        .flat_map(Template::macros)
        .filter_map(|m| m.strip_prefix("params."));
    // Alert postbacks render an alert (the kind that sets every alert macro), not an event.
    let alert = (kind == EventType::Alert).then(|| AlertContext::sample(AlertKind::FiringFailed));
    let sample = match &alert {
        Some(alert) => alert.event(sample_time()),
        None => sample_event(kind, param_keys),
    };
    let ctx = MacroContext::new(&sample, "pb_sample", name, "d_sample", 1).alert(alert.as_ref());
    check_url(url, &ctx)?;
    if let Some(body) = body {
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
    Ok(())
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
