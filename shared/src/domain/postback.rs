//! Postback configuration: the model and its compiled (parsed) form. The rules a
//! postback's values keep are in `super::rules::postback`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::AlertKind;
use super::condition::Condition;
use super::delivery::SuccessRule;
use super::event::{EventType, Status};
use super::library::TemplateRef;
use super::macros::MacroSet;
use super::signing::{PreviousSecret, Signing, SigningKeys, SigningSecret};
use super::template::Template;
use super::ValidationError;

/// Longest allowed delay: 30 days.
pub const MAX_DELAY_SECONDS: u32 = 30 * 24 * 3600;

/// Highest `rate_limit_per_second`.
pub const MAX_RATE_LIMIT_PER_SECOND: u32 = 10_000;

super::named_enum! {
    #[strum(serialize_all = "lowercase")]
    pub enum FireOn {
        Approved,
        Pending,
        Rejected,
        All,
    }
}

super::named_enum! {
    #[strum(serialize_all = "UPPERCASE")]
    pub enum HttpMethod {
        Get,
        Post,
        Put,
    }
}

/// Which offers / publishers a postback applies to: `"all"` or a non-empty list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    All,
    Only(Vec<String>),
}

impl Scope {
    pub fn contains(&self, id: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(ids) => id.is_some_and(|id| ids.iter().any(|x| x == id)),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scope::All => s.serialize_str("all"),
            Scope::Only(ids) => ids.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(Scope::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!("expected \"all\" or a list, got {w:?}"))),
            Raw::List(ids) => Ok(Scope::Only(ids)),
        }
    }
}

/// A stored postback, as the API returns it (before header redaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Postback {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub enabled: bool,
    pub offers: Scope,
    pub publishers: Scope,
    /// Only meaningful for conversion and event postbacks.
    pub fire_on: FireOn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reasons: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_names: Option<Vec<String>>,
    pub delay_seconds: u32,
    pub method: HttpMethod,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub content_type: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    // Signing (see `super::signing`): the secret is shown only where the spec says.
    #[serde(default)]
    pub signing: Signing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SigningSecret>,
    /// The secret before the last rotation while it still signs; stored, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_signing_secret: Option<PreviousSecret>,
    /// Server-set: 1 on create, +1 on every replace. Rows stored before versions existed
    /// read as version 1.
    #[serde(default = "first_version")]
    pub version: u32,
    // Delivery control: conditions, success rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rule: Option<SuccessRule>,
    /// Alert postbacks only: the alerts they fire on (never empty for them, always empty
    /// for the other types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertKind>,
    /// At most this many requests start within one UTC second (1..=10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<u32>,
    /// The partner that owns it (`owner.publisher_id`); `None`: the network's own.
    /// Server-set, kept across replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Who saved this version (create, replace, rotation); `None` on versions saved
    /// before the audit trail existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<super::access::Actor>,
    /// Conversion and event postbacks: the request sent when a conversion this postback
    /// delivered is later rejected (see docs/DESIGN.md *Reversals*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal: Option<Reversal>,
    /// The library template the request fields were filled from (see `super::library`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    /// The values of the template's secret inputs, kept so that they are redacted
    /// wherever the postback or its requests are shown; stored, never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_secrets: Vec<String>,
    /// Review state (see `super::partner`); rows stored before review read as approved.
    #[serde(default)]
    pub approval: super::partner::Approval,
    /// A partner's proposed change to an approved postback, waiting for review: the
    /// whole postback as it would be (its `approval`, `owner`, `version` are not used).
    #[serde(default)]
    pub pending_revision: Option<Box<Postback>>,
}

/// The partner a postback belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub publisher_id: String,
}

/// A postback's `reversal` request: templates like the postback's own, with the
/// reversal macros (`{original_delivery_id}`, `{original_fired_at}`) besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reversal {
    pub method: HttpMethod,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub content_type: String,
}

/// How a template secret is shown: `[REDACTED]`, or for a secret that is a whole URL (a
/// chat's webhook) its scheme and host followed by `/[REDACTED]`, so that the postback's
/// `url` still reads as a URL where it is shown (and can be PUT back as shown).
fn redacted_secret(secret: &str) -> String {
    let after_scheme = ["https://", "http://"].iter().find_map(|scheme| {
        secret.get(..scheme.len()).filter(|head| head.eq_ignore_ascii_case(scheme)).map(|_| scheme.len())
    });
    match after_scheme {
        Some(start) => {
            let host_end = secret[start..].find(['/', '?', '#']).map_or(secret.len(), |i| start + i);
            format!("{}/{}", &secret[..host_end], super::redact::REDACTED)
        }
        None => super::redact::REDACTED.to_string(),
    }
}

/// The version of a new postback (and of one stored before versions existed).
pub const FIRST_VERSION: u32 = 1;

fn first_version() -> u32 {
    FIRST_VERSION
}

/// The validated content of a create/replace request (everything but id and timestamps),
/// as `crate::entry::http::parse::postback::spec_from_json` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PostbackSpec {
    pub name: String,
    pub kind: EventType,
    pub enabled: bool,
    pub offers: Scope,
    pub publishers: Scope,
    pub fire_on: FireOn,
    pub rejection_reasons: Option<Vec<String>>,
    pub event_names: Option<Vec<String>>,
    pub delay_seconds: u32,
    pub method: HttpMethod,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub content_type: String,
    pub signing: Signing,
    pub signing_secret: SecretInput,
    pub conditions: Vec<Condition>,
    pub success_rule: Option<SuccessRule>,
    pub alerts: Vec<AlertKind>,
    pub rate_limit_per_second: Option<u32>,
    pub reversal: Option<Reversal>,
    /// `template` of the request (see [`TemplateInput`]).
    pub template: Option<TemplateInput>,
}

/// What a create/replace said about `template`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateInput {
    /// `{"id", "inputs"}`: the request fields were filled from the template; the values
    /// of its secret inputs are to be kept (and redacted where shown).
    Filled { reference: TemplateRef, secrets: Vec<String> },
    /// `{"id", "version"}` (what a GET shows, PUT back): keep the stored reference and
    /// secrets.
    Kept(TemplateRef),
}

/// What a create/replace said about `signing_secret`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretInput {
    /// Absent: generated when signing is on (create), kept (replace).
    #[default]
    Absent,
    /// `"[REDACTED]"`: keep the stored secret.
    Keep,
    Given(SigningSecret),
}

impl PostbackSpec {
    pub fn into_postback(self, id: String, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Postback {
        Postback {
            id,
            name: self.name,
            kind: self.kind,
            enabled: self.enabled,
            offers: self.offers,
            publishers: self.publishers,
            fire_on: self.fire_on,
            rejection_reasons: self.rejection_reasons,
            event_names: self.event_names,
            delay_seconds: self.delay_seconds,
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: self.body,
            content_type: self.content_type,
            created_at,
            updated_at,
            signing: self.signing,
            // The service resolves `Absent`/`Keep` (generate or keep) before saving.
            signing_secret: match self.signing_secret {
                SecretInput::Given(secret) if self.signing.is_on() => Some(secret),
                _ => None,
            },
            previous_signing_secret: None,
            version: FIRST_VERSION,
            conditions: self.conditions,
            success_rule: self.success_rule,
            alerts: self.alerts,
            rate_limit_per_second: self.rate_limit_per_second,
            owner: None,
            changed_by: None,
            reversal: self.reversal,
            // The service resolves a kept reference against the stored postback.
            template: match &self.template {
                Some(TemplateInput::Filled { reference, .. } | TemplateInput::Kept(reference)) => {
                    Some(reference.clone())
                }
                None => None,
            },
            template_secrets: match self.template {
                Some(TemplateInput::Filled { secrets, .. }) => secrets,
                _ => Vec::new(),
            },
            approval: Default::default(),
            pending_revision: None,
        }
    }
}

impl Postback {
    /// Does a conversion/event status (with its rejection reason) satisfy `fire_on` and
    /// `rejection_reasons`? Impression and click postbacks always fire.
    pub fn fires_for_status(&self, status: Status, rejection_reason: Option<&str>) -> bool {
        if matches!(self.kind, EventType::Impression | EventType::Click | EventType::Alert) {
            return true;
        }
        let status_ok = match self.fire_on {
            FireOn::All => true,
            FireOn::Approved => status == Status::Approved,
            FireOn::Pending => status == Status::Pending,
            FireOn::Rejected => status == Status::Rejected,
        };
        if !status_ok {
            return false;
        }
        if status == Status::Rejected {
            if let Some(reasons) = self.rejection_reasons.as_ref().filter(|r| !r.is_empty()) {
                return rejection_reason.is_some_and(|r| reasons.iter().any(|x| x == r));
            }
        }
        true
    }

    /// `text` with every template secret (see [`Postback::template_secrets`]) replaced
    /// by `[REDACTED]`.
    pub fn redact_template_secrets<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for secret in self.template_secrets.iter().filter(|s| !s.is_empty()) {
            if out.contains(secret.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(secret.as_str(), &redacted_secret(secret)));
            }
        }
        out
    }

    /// The request fields with the template secrets redacted, the secrets themselves left
    /// out: the postback as far as template secrets go, as it may be shown.
    pub fn without_template_secrets(mut self) -> Postback {
        if !self.template_secrets.is_empty() {
            let redacted = |p: &Postback, text: &str| p.redact_template_secrets(text).into_owned();
            self.url = redacted(&self, &self.url);
            self.body = self.body.as_deref().map(|b| redacted(&self, b));
            self.headers = self.headers.iter().map(|(k, v)| (k.clone(), redacted(&self, v))).collect();
            self.template_secrets = Vec::new();
        }
        self
    }

    /// Parse the stored templates. Stored postbacks were validated on save, so this only
    /// fails if the store was edited by hand.
    pub fn compile(&self) -> Result<CompiledPostback, ValidationError> {
        CompiledPostback::new(self.clone())
    }
}

/// A postback with its templates parsed once, ready to render many times.
#[derive(Debug, Clone)]
pub struct CompiledPostback {
    pub postback: Postback,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<Template>,
    /// With signing on: the keys to sign with.
    pub signing: Option<SigningKeys>,
    /// The `reversal` request compiled as a postback of its own: this postback with the
    /// reversal's method, URL, headers, body and content type (and no reversal).
    pub reversal: Option<Box<CompiledPostback>>,
}

impl CompiledPostback {
    pub fn new(postback: Postback) -> Result<Self, ValidationError> {
        let reversal = match &postback.reversal {
            Some(r) => {
                let request = Postback {
                    method: r.method,
                    url: r.url.clone(),
                    headers: r.headers.clone(),
                    body: r.body.clone(),
                    content_type: r.content_type.clone(),
                    reversal: None,
                    ..postback.clone()
                };
                let compiled = Self::compile_in(request, MacroSet::Reversal).map_err(|e| e.within("reversal."))?;
                Some(Box::new(compiled))
            }
            None => None,
        };
        let set = MacroSet::for_type(postback.kind);
        let mut compiled = Self::compile_in(postback, set)?;
        compiled.reversal = reversal;
        Ok(compiled)
    }

    /// What a firing sends: the reversal request for a reversal firing (when the
    /// postback still has one), else the postback's own.
    pub fn request_for(&self, firing: &super::firing::Firing) -> &CompiledPostback {
        match (&firing.reversal_of, &self.reversal) {
            (Some(_), Some(reversal)) => reversal,
            _ => self,
        }
    }

    fn compile_in(postback: Postback, set: MacroSet) -> Result<Self, ValidationError> {
        let url = Template::parse_in(&postback.url, set).map_err(|e| e.for_field("url"))?;
        let headers = postback
            .headers
            .iter()
            .map(|(k, v)| {
                Template::parse_in(v, set).map(|t| (k.clone(), t)).map_err(|e| e.for_field(&format!("headers.{k}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = match &postback.body {
            Some(b) => Some(Template::parse_in(b, set).map_err(|e| e.for_field("body"))?),
            None => None,
        };
        let signing = match (&postback.signing, &postback.signing_secret) {
            (Signing::None, _) => None,
            (_, None) => return Err(ValidationError::required("signing_secret")),
            (_, Some(secret)) => Some(SigningKeys {
                current: secret.key()?,
                previous: match &postback.previous_signing_secret {
                    Some(p) => Some((p.secret.key()?, p.expires_at)),
                    None => None,
                },
            }),
        };
        Ok(Self { postback, url, headers, body, signing, reversal: None })
    }
}
