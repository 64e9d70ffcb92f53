//! Partners (see the spec, *Access → Partners*): what a partner may put in a postback,
//! the review state of a postback (`approval`), and the `PARTNER_POSTBACKS` mode.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::access::Actor;
use super::event::EventType;
use super::macros::ALERT_ONLY_MACROS;
use super::postback::{Postback, PostbackSpec, Scope};
use super::template::Template;
use super::ValidationError;

super::named_enum! {
    /// `PARTNER_POSTBACKS`: what partner writes do.
    #[derive(Default)]
    #[strum(serialize_all = "lowercase")]
    pub enum PartnerMode {
        /// Every partner write is refused (403).
        Off,
        /// Partner writes wait for an admin's decision.
        #[default]
        Review,
        /// Partner writes are approved at once.
        Auto,
    }
}

/// The partner settings the services need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartnerPolicy {
    pub mode: PartnerMode,
    /// `PARTNER_PRIVATE_TARGETS`: partners' requests may reach private addresses.
    pub private_targets: bool,
}

super::named_enum! {
    #[derive(Default)]
    #[strum(serialize_all = "lowercase")]
    pub enum ApprovalState {
        /// Postbacks stored before review existed, and every admin-written one.
        #[default]
        Approved,
        Pending,
        Rejected,
    }
}

/// A postback's review state; only an approved postback fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Approval {
    pub state: ApprovalState,
    /// The rejection's reason (shown to the partner).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub decided_by: Option<Actor>,
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
}

impl Approval {
    pub fn pending() -> Approval {
        Approval { state: ApprovalState::Pending, ..Approval::default() }
    }

    pub fn decided(state: ApprovalState, by: &Actor, at: DateTime<Utc>, reason: Option<String>) -> Approval {
        Approval { state, reason, decided_by: Some(by.clone()), decided_at: Some(at) }
    }
}

/// Longest rejection reason.
pub const MAX_REASON_CHARS: usize = 500;

/// A rejection reason: 1 to 500 characters, not blank.
pub fn reason(value: Option<&str>) -> Result<String, ValidationError> {
    let value = value.ok_or_else(|| ValidationError::required("reason"))?;
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > MAX_REASON_CHARS {
        return Err(ValidationError::invalid("reason", format!("reason must be 1 to {MAX_REASON_CHARS} characters")));
    }
    Ok(value.to_string())
}

/// Whether `postback` may fire (and be matched): approved. A pending revision never
/// fires; the approved fields beside it do.
pub fn fires(postback: &Postback) -> bool {
    postback.approval.state == ApprovalState::Approved
}

/// The network's own macros, which a partner's templates may not use (beside
/// `params.*` and the alert macros).
pub const NETWORK_MACROS: &[&str] = &["revenue", "rejection_reason", "ip", "user_agent"];

/// Is `name` a macro a partner may not use?
pub fn network_macro(name: &str) -> bool {
    NETWORK_MACROS.contains(&name) || name.starts_with("params.") || ALERT_ONLY_MACROS.contains(&name)
}

/// Every rule a partner's postback keeps, over the validated spec; the error names the
/// field (and the macro).
pub fn check_spec(spec: &PostbackSpec, publisher_id: &str) -> Result<(), ValidationError> {
    if !matches!(spec.kind, EventType::Conversion | EventType::Event) {
        return Err(ValidationError::new(
            "not_available_to_partners",
            "type",
            format!("type {} is not available to partners (conversion or event)", spec.kind.as_str()),
        ));
    }
    match &spec.publishers {
        Scope::Only(ids) if ids.len() == 1 && ids[0] == publisher_id => {}
        _ => {
            return Err(ValidationError::new(
                "not_available_to_partners",
                "publishers",
                format!(
                    "a partner's postback applies to its own publisher only: publishers must be [\"{publisher_id}\"]"
                ),
            ))
        }
    }
    let refused = [
        ("delay_seconds", spec.delay_seconds != 0),
        ("rate_limit_per_second", spec.rate_limit_per_second.is_some()),
        ("rejection_reasons", spec.rejection_reasons.is_some()),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(ValidationError::new(
            "not_available_to_partners",
            *field,
            format!("{field} is not available to partners"),
        ));
    }
    let mut templates: Vec<(String, &str)> = vec![("url".into(), spec.url.as_str())];
    templates.extend(spec.headers.iter().map(|(k, v)| (format!("headers.{k}"), v.as_str())));
    if let Some(body) = &spec.body {
        templates.push(("body".into(), body.as_str()));
    }
    for (field, source) in templates {
        // The spec was validated, so the template parses; its macro names are what it
        // uses, function chains included.
        let template = Template::parse_for(source, spec.kind).map_err(|e| e.for_field(&field))?;
        let refused = template
            .macros()
            .find(|m| network_macro(m))
            .map(str::to_string)
            .or_else(|| chained_names(source).find(|m| network_macro(m)).map(str::to_string));
        if let Some(name) = refused {
            return Err(ValidationError::new(
                "not_available_to_partners",
                field,
                format!("macro {{{name}}} is not available to partners"),
            ));
        }
    }
    Ok(())
}

/// The names that start a function chain (`{name|...`) in a template's text, read from
/// the text itself as well as from the parsed template, so a network macro inside a
/// chain is refused however the chain parses.
fn chained_names(source: &str) -> impl Iterator<Item = &str> {
    source.split('{').skip(1).filter_map(|rest| {
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))?;
        (end > 0 && rest[end..].starts_with('|')).then(|| &rest[..end])
    })
}

/// The host of a URL template's literal start, when it is a private or loopback address
/// (or `localhost`): partners' postbacks are refused at save (the sender's guard
/// refuses them at send too).
pub fn private_target(url_template: &str) -> Option<String> {
    let template = Template::parse(url_template).ok()?;
    let prefix = template.literal_prefix();
    let url = url::Url::parse(prefix).ok()?;
    let host = url.host()?;
    let private = match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => !super::guard::is_public_ip(ip.into()),
        url::Host::Ipv6(ip) => !super::guard::is_public_ip(ip.into()),
    };
    private.then(|| host.to_string())
}

/// A partner's `url`: its host written out before any macro (so the host cannot come
/// from an event's values) and not a private or loopback address.
pub fn check_target(url_template: &str) -> Result<(), ValidationError> {
    if let Some(host) = private_target(url_template) {
        return Err(ValidationError::new(
            "private_target",
            "url",
            format!("{host} is a private or loopback address; partners' postbacks must reach public addresses"),
        ));
    }
    let literal_host = Template::parse(url_template).is_ok_and(|t| {
        let prefix = t.literal_prefix();
        let whole = prefix.len() == url_template.len();
        prefix.split_once("://").is_some_and(|(_, rest)| whole || rest.contains(['/', '?', '#']))
    });
    if !literal_host {
        return Err(ValidationError::invalid("url", "a partner's url must name its host before any macro"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_macros_are_named() {
        assert!(network_macro("revenue"));
        assert!(network_macro("params.x"));
        assert!(network_macro("alert_message"));
        assert!(!network_macro("payout"));
        assert!(!network_macro("external_transaction_id"));
    }

    #[test]
    fn private_targets_are_seen_in_the_literal_start() {
        assert_eq!(private_target("http://127.0.0.1:9/x?c={transaction_id}").as_deref(), Some("127.0.0.1"));
        assert_eq!(private_target("http://localhost/x").as_deref(), Some("localhost"));
        assert_eq!(private_target("https://10.1.2.3/").as_deref(), Some("10.1.2.3"));
        assert_eq!(private_target("https://aff.example.com/?c={transaction_id}"), None);
        assert_eq!(private_target("https://8.8.8.8/"), None);
    }

    #[test]
    fn partner_hosts_are_written_out() {
        assert!(check_target("https://aff.example/?c={transaction_id}").is_ok());
        assert!(check_target("https://aff.example").is_ok());
        assert_eq!(check_target("https://{sub1}/x").unwrap_err().field, "url");
        assert_eq!(check_target("http://127.0.0.1/x").unwrap_err().code, "private_target");
    }

    #[test]
    fn reasons_are_1_to_500_chars() {
        assert_eq!(reason(None).unwrap_err().field, "reason");
        assert!(reason(Some("  ")).is_err());
        assert!(reason(Some(&"x".repeat(501))).is_err());
        assert_eq!(reason(Some("dup")).unwrap(), "dup");
    }
}
