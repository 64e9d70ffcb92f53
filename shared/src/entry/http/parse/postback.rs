//! The body of `POST /postbacks` and `PUT /postbacks/{id}` into a [`PostbackSpec`], and
//! the body of `POST /postbacks/{id}/preview` and `/test` into their sample [`Event`].
//!
//! This reads each field's JSON shape and hands the value to its rule in
//! `crate::domain::rules::postback`, field by field in the order of the spec's Postback
//! table: the first error is the first field in that order that is wrong, whatever the
//! order of the keys sent.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{json_kind, not_one_of, present, unknown_field};
use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::condition::{Condition, MAX_CONDITIONS};
use crate::domain::delivery::SuccessRule;
use crate::domain::event::{Event, EventType};
use crate::domain::library::{self, TemplateRef};
use crate::domain::macros::MacroSet;
use crate::domain::postback::{
    FireOn, HttpMethod, Postback, PostbackSpec, Reversal, Scope, SecretInput, TemplateInput,
};
use crate::domain::redact::REDACTED;
use crate::domain::rules::postback::{
    self as rules, DEFAULT_CONTENT_TYPE, MAX_EVENT_NAME_CHARS, MAX_REJECTION_REASON_CHARS,
};
use crate::domain::signing::{Signing, SigningSecret};
use crate::domain::ValidationError;
use crate::service::config_api::Sample;

/// The fields a postback body may set, in the order they are checked.
pub const FIELDS: &[&str] = &[
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
    "signing",
    "signing_secret",
    "conditions",
    "success_rule",
    "alerts",
    "rate_limit_per_second",
    "reversal",
    "template",
];
/// Server-assigned; accepted and ignored so a client can PUT back what it GOT.
pub const READ_ONLY_FIELDS: &[&str] =
    &["id", "created_at", "updated_at", "version", "health", "changed_by", "owner", "approval", "pending_revision"];

/// `owner` is server-set and otherwise ignored, but a partner naming another publisher
/// in it is told so (400 naming `owner`) rather than silently ignored.
pub fn owner_is_callers(value: &Value, caller: &crate::domain::access::Caller) -> Result<(), ValidationError> {
    let Some(own) =
        caller.actor.publisher_id.as_deref().filter(|_| caller.actor.role == crate::domain::access::Role::Partner)
    else {
        return Ok(());
    };
    match value.get("owner") {
        None | Some(Value::Null) => Ok(()),
        Some(owner) if owner.get("publisher_id").and_then(Value::as_str) == Some(own) => Ok(()),
        Some(_) => Err(ValidationError::new(
            "not_available_to_partners",
            "owner",
            format!("a partner's postbacks are owned by its own publisher ({own}); owner is set by the server"),
        )),
    }
}

/// Validate a create/replace request body. Every rule of the spec; errors name the field
/// (and, for templates, the macro). Unknown fields are refused. Read-only fields (`id`,
/// `created_at`, `updated_at`, `version`, `health`, `changed_by`, `owner`) are ignored so a client can PUT back what it GOT.
///
/// Decisions beyond the spec's table: `null` counts as absent; `name` and `url` are
/// trimmed; `method` is case-insensitive (stored upper case); scope lists accept integer
/// ids and drop duplicates; `fire_on` is accepted but ignored for impression and click
/// postbacks; an empty `rejection_reasons` / `event_names` list is stored as none;
/// `Content-Type` and connection-managed headers cannot be set in `headers`. Alert
/// postbacks: `alerts` defaults to all three kinds (stored explicitly), a kind listed
/// twice counts once; the fields about tracker events (`offers`, `publishers`, `fire_on`,
/// `rejection_reasons`, `event_names`, `delay_seconds`, `conditions`) are refused with a
/// value other than their default (the defaults are accepted, so a GET can be PUT back).
pub fn spec_from_json(value: &Value) -> Result<PostbackSpec, ValidationError> {
    let object = value.as_object().ok_or_else(|| ValidationError::invalid("", "a postback must be a JSON object"))?;
    if let Some(unknown) =
        object.keys().find(|k| !FIELDS.contains(&k.as_str()) && !READ_ONLY_FIELDS.contains(&k.as_str()))
    {
        return Err(unknown_field(unknown, FIELDS, ""));
    }
    // A template fills the request fields the request does not give; then every field is
    // read and checked as if the client had sent it.
    let (template, filled) = template(object)?;
    let merged;
    let object = match filled {
        Some(fields) => {
            let mut with_fields = object.clone();
            for (key, value) in fields {
                if present(object, &key).is_none() {
                    with_fields.insert(key, value);
                }
            }
            merged = with_fields;
            &merged
        }
        None => object,
    };

    let name = required_string(object, "name")?.trim();
    rules::name(name)?;

    let kind_text = required_string(object, "type")?;
    let kind = EventType::parse(kind_text).ok_or_else(|| not_one_of("type", EventType::NAMES))?;
    let alert = kind == EventType::Alert;

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
    if alert && offers != Scope::All {
        return Err(rules::not_for_alerts("offers"));
    }
    let publishers = scope(object, "publishers")?;
    if alert && publishers != Scope::All {
        return Err(rules::not_for_alerts("publishers"));
    }

    // Ignored for impression and click postbacks, which always fire.
    let fire_on = match optional_string(object, "fire_on")? {
        None => FireOn::Approved,
        Some(text) => FireOn::parse(text).ok_or_else(|| not_one_of("fire_on", FireOn::NAMES))?,
    };
    if alert && fire_on != FireOn::Approved {
        return Err(rules::not_for_alerts("fire_on"));
    }

    let rejection_reasons = string_list(object, "rejection_reasons", MAX_REJECTION_REASON_CHARS)?;
    if rejection_reasons.is_some() {
        rules::rejection_reasons_apply(kind, fire_on)?;
    }
    let event_names = string_list(object, "event_names", MAX_EVENT_NAME_CHARS)?;
    if event_names.is_some() {
        rules::event_names_apply(kind)?;
    }

    let delay_seconds = match present(object, "delay_seconds") {
        None => 0,
        Some(Value::Number(n)) => rules::delay_seconds(n.as_u64())?,
        Some(_) => rules::delay_seconds(None)?,
    };
    if alert && delay_seconds != 0 {
        return Err(rules::not_for_alerts("delay_seconds"));
    }

    // Case-insensitive for convenience; stored upper case.
    let method = method_of(object)?;

    let url_source = required_string(object, "url")?.trim();
    let url_template = rules::url(kind, url_source)?;

    let headers = header_templates(object, kind)?;

    let content_type = content_type_of(object)?;

    let body_source = optional_string(object, "body")?.filter(|b| !b.is_empty());
    let body_template = body_source.map(|b| rules::body(kind, method, b)).transpose()?;

    rules::check_rendering(kind, name, &url_template, &headers, body_template.as_ref(), content_type)?;

    let signing = match optional_string(object, "signing")? {
        None => Signing::None,
        Some(text) => Signing::parse(text).ok_or_else(|| not_one_of("signing", Signing::NAMES))?,
    };
    // `[REDACTED]` (what a GET shows) keeps the stored secret, as for header secrets.
    let signing_secret = match optional_string(object, "signing_secret")? {
        None => SecretInput::Absent,
        Some(REDACTED) => SecretInput::Keep,
        Some(text) => SecretInput::Given(SigningSecret::parse(text)?),
    };
    rules::signing(signing, &signing_secret, &url_template, &headers, body_template.as_ref())?;
    let conditions = conditions(object)?;
    if alert && !conditions.is_empty() {
        return Err(rules::not_for_alerts("conditions"));
    }
    let success_rule = success_rule(object)?;
    let alerts = alerts(object, kind)?;
    // Whole numbers only: `10.0` or `"10"` is refused like `0`.
    let rate_limit_per_second = match present(object, "rate_limit_per_second") {
        None => None,
        Some(Value::Number(n)) => Some(rules::rate_limit_per_second(n.as_u64())?),
        Some(_) => Some(rules::rate_limit_per_second(None)?),
    };
    let reversal = reversal(object, kind, name, signing)?;

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
        signing,
        signing_secret,
        conditions,
        success_rule,
        alerts,
        rate_limit_per_second,
        reversal,
        template,
    })
}

/// `headers` (of the postback, or of its `reversal` when `object` is that): header
/// templates with the macros of `set`.
fn header_templates(
    object: &Map<String, Value>,
    set: impl Into<MacroSet>,
) -> Result<std::collections::BTreeMap<String, rules::HeaderTemplate>, ValidationError> {
    match present(object, "headers") {
        None => Ok(Default::default()),
        Some(Value::Object(map)) => rules::headers(
            set,
            map.iter().map(|(name, value)| {
                let source = match value {
                    Value::String(source) => Ok(source.as_str()),
                    other => Err(ValidationError::invalid(
                        format!("headers.{name}"),
                        format!("a header value must be a string, not {}", json_kind(other)),
                    )),
                };
                (name.as_str(), source)
            }),
        ),
        Some(other) => Err(ValidationError::invalid(
            "headers",
            format!("headers must be an object of header names to values, not {}", json_kind(other)),
        )),
    }
}

/// `content_type` (trimmed; absent or empty: the default).
fn content_type_of(object: &Map<String, Value>) -> Result<&str, ValidationError> {
    match optional_string(object, "content_type")?.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(DEFAULT_CONTENT_TYPE),
        Some(c) => {
            rules::content_type(c)?;
            Ok(c)
        }
    }
}

/// `method` (case-insensitive; absent: GET).
fn method_of(object: &Map<String, Value>) -> Result<HttpMethod, ValidationError> {
    match optional_string(object, "method")? {
        None => Ok(HttpMethod::Get),
        Some(m) => HttpMethod::parse(&m.to_ascii_uppercase()).ok_or_else(|| not_one_of("method", HttpMethod::NAMES)),
    }
}

/// `reversal`: an optional `{"method", "url", "headers", "body", "content_type"}` object,
/// conversion and event postbacks only, checked like the postback's own request with the
/// reversal macros besides; errors name `reversal.<key>`.
fn reversal(
    object: &Map<String, Value>,
    kind: EventType,
    name: &str,
    signing: Signing,
) -> Result<Option<Reversal>, ValidationError> {
    const KEYS: &[&str] = &["method", "url", "headers", "body", "content_type"];
    let request = match present(object, "reversal") {
        None => return Ok(None),
        Some(Value::Object(request)) => request,
        Some(other) => {
            return Err(ValidationError::invalid(
                "reversal",
                format!(
                "reversal must be an object {{\"method\", \"url\", \"headers\", \"body\", \"content_type\"}}, not {}",
                json_kind(other)
            ),
            ))
        }
    };
    rules::reversal_applies(kind)?;
    if let Some(unknown) = request.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(unknown_field(unknown, KEYS, "").within("reversal."));
    }
    let inside = |e: ValidationError| e.within("reversal.");
    let method = method_of(request).map_err(inside)?;
    let url_source = required_string(request, "url").map_err(inside)?.trim();
    let url = rules::url(MacroSet::Reversal, url_source).map_err(inside)?;
    let headers = header_templates(request, MacroSet::Reversal).map_err(inside)?;
    let content_type = content_type_of(request).map_err(inside)?;
    let body_source = optional_string(request, "body").map_err(inside)?.filter(|b| !b.is_empty());
    let body = body_source.map(|b| rules::body(MacroSet::Reversal, method, b)).transpose().map_err(inside)?;
    rules::check_rendering(kind, name, &url, &headers, body.as_ref(), content_type).map_err(inside)?;
    if !signing.is_on() && url.uses_signature() {
        return Err(ValidationError::invalid(
            "reversal.url",
            "{signature} needs signing on (signing: standard-webhooks)",
        ));
    }
    if headers.values().any(|h| h.template.uses_signature()) || body.as_ref().is_some_and(|b| b.uses_signature()) {
        return Err(ValidationError::invalid(
            "reversal.url",
            "{signature} signs the URL and may only be used in reversal.url",
        ));
    }
    Ok(Some(Reversal {
        method,
        url: url_source.to_string(),
        headers: headers.into_values().map(|header| (header.name, header.source)).collect(),
        body: body_source.map(str::to_string),
        content_type: content_type.to_string(),
    }))
}

/// `template`: `{"id", "inputs"}` fills the request fields from the library (returned
/// for the caller to merge); `{"id", "version"}` without inputs (what a GET shows) keeps
/// the stored reference. Errors name `template`, `template.id` or `template.inputs.NAME`.
/// The `template` of a request, and the request fields it filled (none when kept).
type TemplateField = (Option<TemplateInput>, Option<Map<String, Value>>);

fn template(object: &Map<String, Value>) -> Result<TemplateField, ValidationError> {
    const KEYS: &[&str] = &["id", "inputs", "version"];
    let fields = match present(object, "template") {
        None => return Ok((None, None)),
        Some(Value::Object(fields)) => fields,
        Some(other) => {
            return Err(ValidationError::invalid(
                "template",
                format!("template must be an object {{\"id\", \"inputs\"}}, not {}", json_kind(other)),
            ))
        }
    };
    if let Some(unknown) = fields.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(unknown_field(unknown, KEYS, "").within("template."));
    }
    let id = optional_string(fields, "id")
        .map_err(|e| e.within("template."))?
        .ok_or_else(|| ValidationError::required("template.id"))?;
    let entry = library::find(id.trim()).ok_or_else(|| library::unknown(id))?;
    match (present(fields, "inputs"), present(fields, "version")) {
        (None, Some(version)) => {
            let version = version.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| {
                ValidationError::invalid("template.version", "template.version must be a whole number")
            })?;
            Ok((Some(TemplateInput::Kept(TemplateRef { id: entry.template.id.clone(), version })), None))
        }
        (inputs, _) => {
            let empty = Map::new();
            let inputs = match inputs {
                None => &empty,
                Some(Value::Object(inputs)) => inputs,
                Some(other) => {
                    return Err(ValidationError::invalid(
                        "template.inputs",
                        format!("template.inputs must be an object of input names to values, not {}", json_kind(other)),
                    ))
                }
            };
            let filled = entry.fill(inputs)?;
            if let Some(kind) = object.get("type").and_then(Value::as_str).and_then(EventType::parse) {
                if !entry.template.types.contains(&kind) {
                    let types: Vec<&str> = entry.template.types.iter().map(|t| t.as_str()).collect();
                    return Err(ValidationError::invalid(
                        "template.id",
                        format!(
                            "the {} template is for {} postbacks, not {}",
                            entry.template.id,
                            types.join(" and "),
                            kind.as_str()
                        ),
                    ));
                }
            }
            Ok((
                Some(TemplateInput::Filled { reference: filled.reference, secrets: filled.secrets }),
                Some(filled.fields),
            ))
        }
    }
}

/// `alerts`: alert postbacks only; absent: all three kinds (stored explicitly, so the
/// postback shows what it fires on).
fn alerts(object: &Map<String, Value>, kind: EventType) -> Result<Vec<AlertKind>, ValidationError> {
    let Some(value) = present(object, "alerts") else {
        return Ok(if kind == EventType::Alert { AlertKind::ALL.to_vec() } else { Vec::new() });
    };
    rules::alerts_apply(kind)?;
    let Value::Array(items) = value else {
        return Err(ValidationError::invalid(
            "alerts",
            format!("alerts must be a list of breaker_opened, breaker_closed, firing_failed, not {}", json_kind(value)),
        ));
    };
    rules::alerts(items.iter().enumerate().map(|(i, item)| match item {
        Value::String(s) => Ok(s.trim().to_string()),
        other => Err(ValidationError::invalid(
            format!("alerts[{i}]"),
            format!("an alert must be a string, not {}", json_kind(other)),
        )),
    }))
}

/// `conditions`: an optional list of `{"field", "op", "value"}` objects; errors name
/// `conditions[i].<part>`. An empty list is the same as none.
fn conditions(object: &Map<String, Value>) -> Result<Vec<Condition>, ValidationError> {
    const PARTS: &[&str] = &["field", "op", "value"];
    let items = match present(object, "conditions") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ValidationError::invalid(
                "conditions",
                format!(
                    "conditions must be a list of {{\"field\", \"op\", \"value\"}} objects, not {}",
                    json_kind(other)
                ),
            ))
        }
    };
    if items.len() > MAX_CONDITIONS {
        return Err(ValidationError::new(
            "too_long",
            "conditions",
            format!("conditions may list at most {MAX_CONDITIONS} conditions"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("conditions[{i}]");
            let Value::Object(parts) = item else {
                return Err(ValidationError::invalid(
                    &at,
                    format!("a condition must be an object {{\"field\", \"op\", \"value\"}}, not {}", json_kind(item)),
                ));
            };
            if let Some(unknown) = parts.keys().find(|k| !PARTS.contains(&k.as_str())) {
                return Err(unknown_field(unknown, PARTS, "").within(&format!("{at}.")));
            }
            let part = |name: &str| optional_string(parts, name).map(Option::unwrap_or_default);
            let field = part("field").map_err(|e| e.within(&format!("{at}.")))?;
            let op = part("op").map_err(|e| e.within(&format!("{at}.")))?;
            Condition::new(field.trim(), op.trim(), present(parts, "value")).map_err(|e| e.within(&format!("{at}.")))
        })
        .collect()
}

/// `success_rule`: an optional `{"body_contains", "body_not_contains", "retry"}` object,
/// at least one text; errors name `success_rule.<key>`. Texts are kept as sent (not
/// trimmed): they are matched as exact substrings.
fn success_rule(object: &Map<String, Value>) -> Result<Option<SuccessRule>, ValidationError> {
    const KEYS: &[&str] = &["body_contains", "body_not_contains", "retry"];
    let rule = match present(object, "success_rule") {
        None => return Ok(None),
        Some(Value::Object(rule)) => rule,
        Some(other) => {
            return Err(ValidationError::invalid(
                "success_rule",
                format!("success_rule must be an object, not {}", json_kind(other)),
            ))
        }
    };
    if let Some(unknown) = rule.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(unknown_field(unknown, KEYS, "").within("success_rule."));
    }
    let text = |key: &str| -> Result<Option<String>, ValidationError> {
        let Some(text) = optional_string(rule, key).map_err(|e| e.within("success_rule."))? else { return Ok(None) };
        rules::success_rule_text(&format!("success_rule.{key}"), text)?;
        Ok(Some(text.to_string()))
    };
    let body_contains = text("body_contains")?;
    let body_not_contains = text("body_not_contains")?;
    let retry = match present(rule, "retry") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ValidationError::invalid(
                "success_rule.retry",
                format!("success_rule.retry must be true or false, not {}", json_kind(other)),
            ))
        }
    };
    if body_contains.is_none() && body_not_contains.is_none() {
        return Err(ValidationError::new(
            "required",
            "success_rule",
            "success_rule needs body_contains, body_not_contains or both",
        ));
    }
    Ok(Some(SuccessRule { body_contains, body_not_contains, retry }))
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
/// and kept as text; ids are trimmed.
fn scope(object: &Map<String, Value>, field: &str) -> Result<Scope, ValidationError> {
    let items = match present(object, field) {
        None => return Ok(Scope::All),
        Some(Value::String(s)) if s == "all" => return Ok(Scope::All),
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => {
            return Err(ValidationError::invalid(field, format!("{field} must be \"all\" or a non-empty list of ids")))
        }
    };
    rules::scope(
        field,
        items.iter().enumerate().map(|(i, item)| match item {
            Value::String(s) => Ok(s.trim().to_string()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            other => Err(ValidationError::invalid(
                format!("{field}[{i}]"),
                format!("an id must be a string, not {}", json_kind(other)),
            )),
        }),
    )
}

/// An optional list of strings, each trimmed.
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
    rules::entries(
        field,
        items.iter().enumerate().map(|(i, item)| match item {
            Value::String(s) => Ok(s.trim().to_string()),
            other => Err(ValidationError::invalid(
                format!("{field}[{i}]"),
                format!("an entry must be a string, not {}", json_kind(other)),
            )),
        }),
        max_chars,
    )
}

/// What preview/test render: for an alert postback a sample alert (see [`sample_alert`]),
/// for any other the [`sample_event`].
pub fn sample(
    postback: &Postback,
    overrides: Option<&Value>,
    received_at: DateTime<Utc>,
) -> Result<Sample, ValidationError> {
    if postback.kind == EventType::Alert {
        let alert = sample_alert(postback, overrides)?;
        return Ok(Sample { event: alert.event(received_at), alert: Some(alert) });
    }
    sample_event(postback, overrides, received_at).map(Sample::from)
}

/// The sample alert of an alert postback's preview/test: nothing (or `{}`) for the kind
/// of [`AlertKind::sample_for`], or `{"alert": "<kind>"}` for another. An alert has no
/// tracker event, so no event field may be given (400 naming it).
pub fn sample_alert(postback: &Postback, overrides: Option<&Value>) -> Result<AlertContext, ValidationError> {
    let fields = match overrides {
        None | Some(Value::Null) => return Ok(AlertContext::sample(AlertKind::sample_for(&postback.alerts))),
        Some(Value::Object(fields)) => fields,
        Some(other) => {
            return Err(ValidationError::invalid(
                "",
                format!("the preview/test body of an alert postback must be an object such as {{\"alert\": \"firing_failed\"}}, not {}", json_kind(other)),
            ))
        }
    };
    if let Some(unknown) = fields.keys().find(|k| k.as_str() != "alert") {
        return Err(ValidationError::invalid(
            unknown,
            format!(
                "an alert postback is previewed and tested with a sample alert, not an event: \
                 only \"alert\" (breaker_opened, breaker_closed or firing_failed) may be given, not {unknown}"
            ),
        ));
    }
    let kind = match optional_string(fields, "alert")? {
        None => AlertKind::sample_for(&postback.alerts),
        Some(text) => AlertKind::parse(text).ok_or_else(|| {
            ValidationError::invalid("alert", "alert must be one of breaker_opened, breaker_closed, firing_failed")
        })?,
    };
    Ok(AlertContext::sample(kind))
}

/// The sample event for preview/test: defaults suited to the postback, overridden by any
/// fields the admin sent (as the event's fields, or as `{"event": {...}}`), then
/// validated like an ingested event; errors name `event.<field>`.
pub fn sample_event(
    postback: &Postback,
    overrides: Option<&Value>,
    received_at: DateTime<Utc>,
) -> Result<Event, ValidationError> {
    let first = |scope: &Scope, fallback: &str| match scope {
        Scope::Only(ids) => ids.first().cloned().unwrap_or_else(|| fallback.to_string()),
        Scope::All => fallback.to_string(),
    };
    let mut sample = serde_json::json!({
        "type": postback.kind.as_str(),
        "transaction_id": format!("test-{}", uuid::Uuid::new_v4().simple()),
        "offer_id": first(&postback.offers, "test-offer"),
        "publisher_id": first(&postback.publishers, "test-publisher"),
        "external_transaction_id": "test-click-id",
        "payout": "1.00",
        "revenue": "2.00",
        "currency": "USD",
        "sub1": "test-sub1",
        "ip": "203.0.113.7",
        "country": "US",
        "user_agent": "postback-manager-test",
    });
    if let Some(obj) = sample.as_object_mut() {
        if postback.kind.has_status() {
            obj.insert("status".into(), "approved".into());
        }
        if postback.kind == EventType::Event {
            let name = postback.event_names.as_ref().and_then(|n| n.first().cloned()).unwrap_or_else(|| "test".into());
            obj.insert("event_name".into(), name.into());
        }
        // Accept `{"event": {...}}` as well as the event's fields at the top level.
        let overrides = match overrides {
            Some(Value::Object(o)) if o.len() == 1 && o.contains_key("event") => o.get("event"),
            other => other,
        };
        match overrides {
            None | Some(Value::Null) => {}
            Some(Value::Object(fields)) => {
                for (k, v) in fields {
                    obj.insert(k.clone(), v.clone());
                }
            }
            Some(_) => return Err(ValidationError::invalid("event", "the sample event must be a JSON object")),
        }
    }
    super::event::from_json(&sample, received_at).map_err(|e| e.within("event."))
}

#[cfg(test)]
mod alert_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    fn alert_postback() -> Value {
        json!({"name": "Ops chat", "type": "alert", "method": "POST", "url": "https://chat.example/hook",
               "body": "{\"text\": \"{alert_message}\"}"})
    }

    fn with(mut body: Value, field: &str, value: Value) -> Value {
        body[field] = value;
        body
    }

    fn conversion() -> Value {
        json!({"name": "CRM", "type": "conversion", "method": "POST", "url": "https://crm.example/pb"})
    }

    fn refused(body: &Value) -> ValidationError {
        spec_from_json(body).expect_err("should be refused")
    }

    #[test]
    fn an_alert_postback_fires_on_every_alert_unless_told() {
        let spec = spec_from_json(&alert_postback()).unwrap();
        assert_eq!(spec.kind, EventType::Alert);
        assert_eq!(spec.alerts, AlertKind::ALL, "the default is stored explicitly");
        let spec = spec_from_json(&with(
            alert_postback(),
            "alerts",
            json!(["firing_failed", " breaker_opened", "firing_failed"]),
        ))
        .unwrap();
        assert_eq!(spec.alerts, [AlertKind::FiringFailed, AlertKind::BreakerOpened], "trimmed, a repeat counts once");
        assert!(spec_from_json(&conversion()).unwrap().alerts.is_empty());
    }

    #[test]
    fn the_alerts_field_names_what_is_wrong() {
        #[rustfmt::skip]
        let cases: Vec<(Value, &str, &str)> = vec![
            (with(alert_postback(), "alerts", json!([])), "alerts", "at least one"),
            (with(alert_postback(), "alerts", json!("firing_failed")), "alerts", "must be a list"),
            (with(alert_postback(), "alerts", json!(["breaker_opened", "breaker_open"])), "alerts[1]", "unknown alert"),
            (with(alert_postback(), "alerts", json!(["firing_failed", 3])), "alerts[1]", "must be a string"),
            (with(conversion(), "alerts", json!(["firing_failed"])), "alerts", "only applies to postbacks of type alert"),
            (with(conversion(), "alerts", json!([])), "alerts", "only applies"),
        ];
        for (body, field, message) in cases {
            let err = refused(&body);
            assert_eq!(err.field, field, "{body}: {}", err.message);
            assert!(err.message.contains(message), "{body}: {}", err.message);
        }
    }

    #[test]
    fn fields_about_tracker_events_are_refused_on_alert_postbacks_but_their_defaults_pass() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Value, Value)> = vec![
            ("offers", json!(["o1"]), json!("all")),
            ("publishers", json!(["p1"]), json!("all")),
            ("fire_on", json!("rejected"), json!("approved")),
            ("rejection_reasons", json!(["fraud"]), json!([])),
            ("event_names", json!(["deposit"]), json!([])),
            ("delay_seconds", json!(60), json!(0)),
            ("conditions", json!([{"field": "transaction_id", "op": "exists"}]), json!([])),
        ];
        for (field, value, default) in cases {
            let err = refused(&with(alert_postback(), field, value));
            assert_eq!((err.code, err.field.as_str()), ("invalid", field), "{}", err.message);
            assert!(
                spec_from_json(&with(alert_postback(), field, default)).is_ok(),
                "{field}: the default is accepted"
            );
        }
    }

    #[test]
    fn a_postback_put_back_as_a_get_showed_it_is_accepted() {
        let spec = spec_from_json(&alert_postback()).unwrap();
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let shown = serde_json::to_value(spec.into_postback("pb_1".into(), at, at)).unwrap();
        assert_eq!(shown["type"], "alert");
        assert_eq!(shown["alerts"], json!(["breaker_opened", "breaker_closed", "firing_failed", "approval_requested"]));
        assert!(spec_from_json(&shown).is_ok(), "{shown}");
    }

    #[test]
    fn macros_are_checked_against_the_postbacks_type() {
        #[rustfmt::skip]
        let cases: Vec<(Value, &str, &str, &str)> = vec![
            // (body, field, macro, words in the message)
            (with(conversion(), "body", json!("{\"text\": \"{alert_message}\"}")), "body", "alert_message", "only for postbacks of type alert"),
            (with(conversion(), "url", json!("https://crm.example/pb?s={status_code}")), "url", "status_code", "alert macro"),
            (with(conversion(), "headers", json!({"X-Error": "{error}"})), "headers.X-Error", "error", "alert macro"),
            (with(alert_postback(), "url", json!("https://chat.example/hook?p={payout}")), "url", "payout", "no tracker event"),
            (with(alert_postback(), "body", json!("{\"s\": \"{sub1}\"}")), "body", "sub1", "no tracker event"),
            (with(alert_postback(), "headers", json!({"X-Goal": "{params.goal}"})), "headers.X-Goal", "params.goal", "no tracker event"),
            // Near misses are suggested from the type's own macros.
            (with(alert_postback(), "body", json!("{\"t\": \"{alert_mesage}\"}")), "body", "alert_mesage", "did you mean {alert_message}?"),
            (with(alert_postback(), "body", json!("{\"t\": \"{Alert}\"}")), "body", "Alert", "did you mean {alert}?"),
            (with(conversion(), "url", json!("https://crm.example/pb?c={Sub5}")), "url", "Sub5", "did you mean {sub5}?"),
            (with(conversion(), "url", json!("https://crm.example/pb?c={alert_mesage}")), "url", "alert_mesage", "unknown macro {alert_mesage}"),
        ];
        for (body, field, name, words) in cases {
            let err = refused(&body);
            assert_eq!((err.code, err.field.as_str()), ("unknown_macro", field), "{body}: {}", err.message);
            assert!(err.message.contains(&format!("{{{name}}}")), "names the macro: {}", err.message);
            assert!(err.message.contains(words), "{body}: {}", err.message);
        }
        // A conversion postback is never told to use an alert macro.
        let err = refused(&with(conversion(), "url", json!("https://crm.example/pb?c={alert_mesage}")));
        assert!(!err.message.contains("did you mean"), "{}", err.message);
    }

    #[test]
    fn every_alert_macro_is_accepted_in_alert_postbacks() {
        let body = crate::domain::macros::ALERT_MACROS
            .iter()
            .filter(|m| **m != "signature")
            .map(|m| format!("\"{m}\": \"{{{m}}}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let spec = spec_from_json(&with(alert_postback(), "body", json!(format!("{{{body}}}")))).unwrap();
        assert!(spec.body.unwrap().contains("{alert_url}"));
    }

    #[test]
    fn ingest_refuses_alert_events() {
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let err = super::super::event::from_json(&json!({"type": "alert", "transaction_id": "T1"}), at).unwrap_err();
        assert_eq!(err.field, "type");
        assert!(err.message.contains("raised by the postback manager"), "{}", err.message);
    }
}
