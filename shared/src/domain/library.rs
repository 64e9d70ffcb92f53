//! The destination template library (spec: *Templates*): one JSON file per template in
//! `templates/`, built into the binary. A template fills a new postback's request fields
//! (`method`, `url`, `headers`, `body`, `content_type`, `success_rule`, `alerts`) with
//! its `{input.NAME}` placeholders replaced by the inputs the manager gives; what is
//! left is an ordinary postback, checked like any other.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::json_kind;
use super::event::EventType;
use super::ValidationError;

/// Every template file, by id, in the order `GET /templates` lists them.
const SOURCES: &[(&str, &str)] = &[
    ("meta-capi", include_str!("templates/meta-capi.json")),
    ("tiktok-events", include_str!("templates/tiktok-events.json")),
    ("ga4-mp", include_str!("templates/ga4-mp.json")),
    ("voluum", include_str!("templates/voluum.json")),
    ("redtrack", include_str!("templates/redtrack.json")),
    ("keitaro", include_str!("templates/keitaro.json")),
    ("binom", include_str!("templates/binom.json")),
    ("everflow", include_str!("templates/everflow.json")),
    ("tune", include_str!("templates/tune.json")),
    ("cake", include_str!("templates/cake.json")),
    ("affise", include_str!("templates/affise.json")),
    ("slack", include_str!("templates/slack.json")),
    ("teams", include_str!("templates/teams.json")),
    ("discord", include_str!("templates/discord.json")),
    ("telegram", include_str!("templates/telegram.json")),
];

/// Longest input value accepted.
pub const MAX_INPUT_CHARS: usize = 2048;

super::named_enum! {
    #[strum(serialize_all = "snake_case")]
    pub enum Category {
        AdPlatform,
        Tracker,
        Crm,
        Chat,
    }
}

/// One value the manager types when creating a postback from the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub name: String,
    pub label: String,
    /// Redacted wherever secrets are (`[REDACTED]`), sent whole to the receiver.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub required: bool,
    /// What a value must match, whole (a regular expression, also usable as an HTML
    /// `pattern`).
    pub pattern: String,
    /// The value of an optional input that is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// The postback fields a template fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rule: Option<Value>,
    /// Alert postbacks (chat templates): the alerts they fire on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<String>>,
}

/// A template of the library, as `GET /templates` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryTemplate {
    pub id: String,
    pub name: String,
    pub category: Category,
    /// The public description of the format the template follows.
    pub docs_url: String,
    pub version: u32,
    /// The postback types it is made for.
    pub types: Vec<EventType>,
    /// One line: what the receiver gets.
    pub summary: String,
    pub inputs: Vec<Input>,
    pub fields: Fields,
}

/// What a postback made from a template keeps of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub id: String,
    pub version: u32,
}

/// A template with its input patterns compiled.
#[derive(Debug)]
pub struct Entry {
    pub template: LibraryTemplate,
    patterns: Vec<Regex>,
}

/// The request fields a template filled for a create or replace.
#[derive(Debug, Clone, PartialEq)]
pub struct Filled {
    pub reference: TemplateRef,
    /// `method`, `url`, ... as a create request would give them.
    pub fields: Map<String, Value>,
    /// The values of the secret inputs given (non-empty), to be redacted where shown.
    pub secrets: Vec<String>,
}

static LIBRARY: LazyLock<Vec<Entry>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .filter_map(|(id, text)| match load(id, text) {
            Ok(entry) => Some(entry),
            Err(e) => {
                // Never expected: `every_template_file_loads` checks each file.
                tracing::error!(template = id, error = %e, "a library template does not load; left out");
                None
            }
        })
        .collect()
});

/// Read one template file: JSON of a [`LibraryTemplate`] whose id is the file's, with
/// inputs of distinct names and patterns that compile.
pub fn load(id: &str, text: &str) -> Result<Entry, String> {
    let template: LibraryTemplate = serde_json::from_str(text).map_err(|e| format!("{id}: {e}"))?;
    if template.id != id {
        return Err(format!("{id}: the file's id is {}", template.id));
    }
    let mut patterns = Vec::with_capacity(template.inputs.len());
    for (i, input) in template.inputs.iter().enumerate() {
        if template.inputs[..i].iter().any(|other| other.name == input.name) {
            return Err(format!("{id}: input {} is declared twice", input.name));
        }
        let anchored = format!("^(?:{})$", input.pattern);
        patterns.push(Regex::new(&anchored).map_err(|e| format!("{id}: input {}: {e}", input.name))?);
    }
    Ok(Entry { template, patterns })
}

/// Every template, in the library's order.
pub fn all() -> impl Iterator<Item = &'static LibraryTemplate> {
    LIBRARY.iter().map(|entry| &entry.template)
}

/// The template with this id.
pub fn find(id: &str) -> Option<&'static Entry> {
    LIBRARY.iter().find(|entry| entry.template.id == id)
}

/// The ids of the library, for errors.
pub fn ids() -> Vec<&'static str> {
    LIBRARY.iter().map(|entry| entry.template.id.as_str()).collect()
}

/// The 400 for an unknown template id.
pub fn unknown(id: &str) -> ValidationError {
    let known = ids();
    let hint = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&id.to_ascii_lowercase(), k), *k))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| format!("; did you mean {k}?"))
        .unwrap_or_default();
    ValidationError::invalid("template.id", format!("unknown template {id:?}{hint} (templates: {})", known.join(", ")))
}

impl Entry {
    /// Fill the request fields with `inputs` (`template.inputs` of the request). Errors
    /// name `template.inputs.NAME`: an input the template does not have, a required one
    /// missing or empty, a value that is not text, that breaks its pattern, or that holds
    /// a brace or a control character.
    pub fn fill(&self, inputs: &Map<String, Value>) -> Result<Filled, ValidationError> {
        let template = &self.template;
        let field = |name: &str| format!("template.inputs.{name}");
        if let Some(unknown) = inputs.keys().find(|k| !template.inputs.iter().any(|input| input.name == **k)) {
            let names: Vec<&str> = template.inputs.iter().map(|input| input.name.as_str()).collect();
            return Err(ValidationError::invalid(
                field(unknown),
                format!("{} has no input {unknown}; its inputs are {}", template.id, names.join(", ")),
            ));
        }
        let mut values = Vec::with_capacity(template.inputs.len());
        let mut secrets = Vec::new();
        for (input, pattern) in template.inputs.iter().zip(&self.patterns) {
            let given = match inputs.get(&input.name) {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.trim().to_string()),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                Some(other) => {
                    return Err(ValidationError::invalid(
                        field(&input.name),
                        format!("{} must be a string, not {}", input.label, json_kind(other)),
                    ))
                }
            };
            let value = match given.filter(|v| !v.is_empty()) {
                Some(value) => value,
                None if input.required => {
                    return Err(ValidationError::new(
                        "required",
                        field(&input.name),
                        format!("{} ({}) is required by the {} template", input.name, input.label, template.id),
                    ))
                }
                None => input.default.clone().unwrap_or_default(),
            };
            if !value.is_empty() {
                super::rules::check_max_chars(&field(&input.name), &value, MAX_INPUT_CHARS)?;
                if value.chars().any(|c| c.is_control() || c == '{' || c == '}') {
                    return Err(ValidationError::invalid(
                        field(&input.name),
                        format!("{} must not contain braces or control characters", input.label),
                    ));
                }
                if !pattern.is_match(&value) {
                    return Err(ValidationError::invalid(
                        field(&input.name),
                        format!("{} does not have the expected form (pattern {})", input.label, input.pattern),
                    ));
                }
                if input.secret {
                    secrets.push(value.clone());
                }
            }
            values.push((input.name.as_str(), value));
        }
        let fields = &template.fields;
        let json_body = fields.content_type.as_deref().is_none_or(super::template::is_json_content_type);
        let put = |text: &str, json: bool| -> Result<String, ValidationError> { substitute(text, &values, json) };
        let mut filled = Map::new();
        filled.insert("method".into(), Value::String(fields.method.clone()));
        filled.insert("url".into(), Value::String(put(&fields.url, false)?));
        if !fields.headers.is_empty() {
            let mut headers = Map::new();
            for (name, value) in &fields.headers {
                headers.insert(name.clone(), Value::String(put(value, false)?));
            }
            filled.insert("headers".into(), Value::Object(headers));
        }
        if let Some(body) = &fields.body {
            filled.insert("body".into(), Value::String(put(body, json_body)?));
        }
        if let Some(content_type) = &fields.content_type {
            filled.insert("content_type".into(), Value::String(content_type.clone()));
        }
        if let Some(rule) = &fields.success_rule {
            filled.insert("success_rule".into(), rule.clone());
        }
        if let Some(alerts) = &fields.alerts {
            filled.insert("alerts".into(), Value::Array(alerts.iter().cloned().map(Value::String).collect()));
        }
        Ok(Filled {
            reference: TemplateRef { id: template.id.clone(), version: template.version },
            fields: filled,
            secrets,
        })
    }
}

/// `text` with every `{input.NAME}` replaced by its value, JSON-escaped inside a JSON
/// body. A placeholder of an input the template does not declare is the template's bug.
fn substitute(text: &str, values: &[(&str, String)], json: bool) -> Result<String, ValidationError> {
    const OPEN: &str = "{input.";
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else {
            break;
        };
        let name = &after[..end];
        let Some((_, value)) = values.iter().find(|(n, _)| *n == name) else {
            return Err(ValidationError::invalid(
                "template.id",
                format!("this template uses an input it does not declare: {name}"),
            ));
        };
        if json {
            let quoted = serde_json::to_string(value).unwrap_or_default();
            out.push_str(quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default());
        } else {
            out.push_str(value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn every_template_file_loads() {
        for (id, text) in SOURCES {
            let entry = load(id, text).unwrap_or_else(|e| panic!("{e}"));
            let t = &entry.template;
            assert!(t.docs_url.starts_with("https://"), "{id}");
            assert!(!t.types.is_empty(), "{id}");
            assert!(
                t.inputs.iter().all(|i| i.required || i.default.is_some()),
                "{id}: an optional input has a default"
            );
            assert_eq!(t.fields.alerts.is_some(), t.category == Category::Chat, "{id}: alerts are for chat templates");
            // A pattern that reads as an absolute URL with `[` in its host makes URL
            // parsers of API clients (Schemathesis's link inference) raise on the
            // GET /templates body; such a pattern starts with `^` instead.
            for input in &t.inputs {
                assert!(
                    !input.pattern.starts_with("http://") && !input.pattern.starts_with("https://"),
                    "{id}: input {} pattern reads as a URL",
                    input.name
                );
            }
        }
        assert_eq!(all().count(), SOURCES.len(), "every template is in the library");
        assert_eq!(
            ids(),
            [
                "meta-capi",
                "tiktok-events",
                "ga4-mp",
                "voluum",
                "redtrack",
                "keitaro",
                "binom",
                "everflow",
                "tune",
                "cake",
                "affise",
                "slack",
                "teams",
                "discord",
                "telegram"
            ]
        );
    }

    #[test]
    fn inputs_are_checked_and_named() {
        let meta = find("meta-capi").unwrap();
        let ok = json!({"pixel_id": "123456789012345", "access_token": "EAAB-token_1"});
        let filled = meta.fill(ok.as_object().unwrap()).unwrap();
        assert_eq!(filled.secrets, ["EAAB-token_1"]);
        assert_eq!(filled.reference, TemplateRef { id: "meta-capi".into(), version: meta.template.version });
        #[rustfmt::skip]
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"access_token": "EAAB"}), "template.inputs.pixel_id", "required"),
            (json!({"pixel_id": "", "access_token": "EAAB"}), "template.inputs.pixel_id", "required"),
            (json!({"pixel_id": "12a", "access_token": "EAAB"}), "template.inputs.pixel_id", "expected form"),
            (json!({"pixel_id": "123", "access_token": "EAAB", "pixel": "1"}), "template.inputs.pixel", "has no input pixel"),
            (json!({"pixel_id": ["123"], "access_token": "EAAB"}), "template.inputs.pixel_id", "must be a string"),
            (json!({"pixel_id": "123", "access_token": "EA{payout}"}), "template.inputs.access_token", "braces"),
        ];
        for (inputs, field, words) in cases {
            let err = meta.fill(inputs.as_object().unwrap()).unwrap_err();
            assert_eq!(err.field, field, "{inputs}: {}", err.message);
            assert!(err.message.contains(words), "{inputs}: {}", err.message);
        }
        // A numeric id may be sent as a number.
        let filled = meta.fill(json!({"pixel_id": 123, "access_token": "t"}).as_object().unwrap()).unwrap();
        assert!(filled.fields["url"].as_str().unwrap().contains("/123/events"));
    }

    #[test]
    fn unknown_ids_suggest_the_closest() {
        let err = unknown("meta-cap");
        assert_eq!(err.field, "template.id");
        assert!(err.message.contains("did you mean meta-capi?"), "{}", err.message);
    }

    #[test]
    fn placeholders_are_json_escaped_in_json_bodies_only() {
        let values = [("a", "x\"y".to_string())];
        assert_eq!(substitute("{\"k\": \"{input.a}\"}", &values, true).unwrap(), "{\"k\": \"x\\\"y\"}");
        assert_eq!(substitute("https://h/{input.a}", &values, false).unwrap(), "https://h/x\"y");
        assert_eq!(substitute("{input.b}", &values, false).unwrap_err().field, "template.id");
        assert_eq!(substitute("no placeholder {payout}", &values, false).unwrap(), "no placeholder {payout}");
    }
}
