//! The macro set and the values an event provides for it.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};

use super::alert::AlertContext;
use super::event::{Event, EventType, Field, Status, UNIX_TIMESTAMP};
use super::firing::ReversalOf;

/// The macros of one firing rather than of its event (so conditions cannot test them).
pub const FIRING_MACROS: &[&str] = &["postback_id", "postback_name", "attempt", "delivery_id"];

/// Filled in by the renderer of a signing postback's URL (`super::signing`);
/// [`MacroContext::value`] has none for it.
const SIGNATURE: &str = "signature";

/// Every fixed macro name of event postbacks (`params.<key>` is accepted in addition):
/// the event's fields and `unix_timestamp`, the firing's values, `signature`.
pub const KNOWN_MACROS: &[&str] = &KNOWN;
const KNOWN: [&str; Field::COUNT + FIRING_MACROS.len() + 2] =
    super::concat(&[Field::NAMES, &[UNIX_TIMESTAMP], FIRING_MACROS, &[SIGNATURE]]);

/// The macros only alert postbacks have (`super::alert::AlertContext`'s values).
pub const ALERT_ONLY_MACROS: &[&str] =
    &["alert", "alert_message", "alert_postback_id", "alert_postback_name", "alert_url", "status_code", "error"];

/// Every macro of alert postbacks: the alert's, and those of the firing itself. An alert
/// has no tracker event, so the event's values (offer, payout, subs, params, ...) are not
/// among them but `transaction_id` (the failed firing's, `firing_failed`), `type` and the time.
pub const ALERT_MACROS: &[&str] = &ALERT;
const ALERT: [&str; ALERT_ONLY_MACROS.len() + FIRING_MACROS.len() + 5] = super::concat(&[
    ALERT_ONLY_MACROS,
    &["transaction_id", "type", "timestamp", UNIX_TIMESTAMP],
    FIRING_MACROS,
    &[SIGNATURE],
]);

/// The macros only a postback's `reversal` request has (`super::firing::ReversalOf`).
pub const REVERSAL_ONLY_MACROS: &[&str] = &["original_delivery_id", "original_fired_at"];

/// Which macros a template may use: those of its postback's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroSet {
    /// Impression, click, conversion and event postbacks: [`KNOWN_MACROS`] and `params.<key>`.
    Event,
    /// Alert postbacks: [`ALERT_MACROS`].
    Alert,
    /// A postback's `reversal` request: the event macros and [`REVERSAL_ONLY_MACROS`].
    Reversal,
}

impl From<EventType> for MacroSet {
    fn from(kind: EventType) -> MacroSet {
        MacroSet::for_type(kind)
    }
}

impl MacroSet {
    pub fn for_type(kind: EventType) -> MacroSet {
        if kind == EventType::Alert {
            MacroSet::Alert
        } else {
            MacroSet::Event
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            MacroSet::Event | MacroSet::Reversal => KNOWN_MACROS,
            MacroSet::Alert => ALERT_MACROS,
        }
    }

    /// Is `name` one of this set's macros (case-sensitive)?
    pub fn contains(self, name: &str) -> bool {
        match (self, name.strip_prefix("params.")) {
            (MacroSet::Event | MacroSet::Reversal, Some(key)) => !key.is_empty(),
            (MacroSet::Alert, Some(_)) => false,
            (MacroSet::Reversal, None) if REVERSAL_ONLY_MACROS.contains(&name) => true,
            (set, None) => set.names().contains(&name),
        }
    }

    /// The closest name of this set for a near miss (see [`suggest`]).
    pub fn suggest(self, name: &str) -> Option<&'static str> {
        suggest_in(self.names(), name)
    }

    /// Why a known macro of the other set is not one of this one, for the error.
    pub fn why_not(self, name: &str) -> Option<&'static str> {
        match self {
            MacroSet::Event | MacroSet::Reversal if ALERT_ONLY_MACROS.contains(&name) => {
                Some("it is an alert macro, only for postbacks of type alert")
            }
            MacroSet::Event if REVERSAL_ONLY_MACROS.contains(&name) => Some(
                "it is a reversal macro, only for the reversal request (reversal.url, reversal.headers, reversal.body)",
            ),
            MacroSet::Alert if MacroSet::Event.contains(name) => Some(
                "an alert postback has no tracker event, so the event's values are not macros of it; \
                 its macros are alert, alert_message, alert_postback_id, alert_postback_name, alert_url, \
                 transaction_id, status_code, error, type, timestamp, unix_timestamp, postback_id, \
                 postback_name, attempt, delivery_id",
            ),
            _ => None,
        }
    }
}

/// Is `name` a macro of event postbacks (case-sensitive)? `params.<key>` with a
/// non-empty key is always known.
pub fn is_known(name: &str) -> bool {
    MacroSet::Event.contains(name)
}

/// The closest event-postback macro for a near miss (`Sub5` → `sub5`, `transactionid` →
/// `transaction_id`), if any is close enough to be a plausible typo.
pub fn suggest(name: &str) -> Option<&'static str> {
    suggest_in(KNOWN_MACROS, name)
}

fn suggest_in(names: &'static [&'static str], name: &str) -> Option<&'static str> {
    // A different case or a dropped/extra separator is the commonest slip and is never
    // ambiguous, so it wins over edit distance.
    if let Some(exact) = names.iter().find(|known| known.eq_ignore_ascii_case(name)) {
        return Some(exact);
    }
    let folded = fold(name);
    if folded.is_empty() {
        return None;
    }
    if let Some(same) = names.iter().find(|known| fold(known) == folded) {
        return Some(same);
    }
    // Edit distance on the lower-cased name; at most 2 edits, and fewer than the
    // shorter name's length so that `{x}` does not "mean" `{ip}`.
    let lowered = name.to_ascii_lowercase();
    names
        .iter()
        .map(|known| (strsim::damerau_levenshtein(&lowered, known), *known))
        .filter(|(distance, known)| *distance <= 2 && *distance < lowered.len().min(known.len()))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Lower case without separators: `Transaction-ID` and `transactionid` both fold to
/// `transactionid`.
fn fold(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '_' | '.' | '-')).map(|c| c.to_ascii_lowercase()).collect()
}

/// The values one firing renders with.
#[derive(Debug, Clone, Copy)]
pub struct MacroContext<'a> {
    pub event: &'a Event,
    pub postback_id: &'a str,
    pub postback_name: &'a str,
    pub delivery_id: &'a str,
    pub attempt: u32,
    /// The alert of an alert postback's firing (`None` for every other firing).
    pub alert: Option<&'a AlertContext>,
    /// The delivery a reversal firing reverses (`None` for every other firing).
    pub reversal: Option<&'a ReversalOf>,
}

impl<'a> MacroContext<'a> {
    /// The values of a firing of `event` to the postback `postback_id` (`postback_name`):
    /// its delivery id and attempt number; no alert, no reversal (see [`Self::alert`],
    /// [`Self::reversal`]).
    pub fn new(
        event: &'a Event,
        postback_id: &'a str,
        postback_name: &'a str,
        delivery_id: &'a str,
        attempt: u32,
    ) -> MacroContext<'a> {
        MacroContext { event, postback_id, postback_name, delivery_id, attempt, alert: None, reversal: None }
    }

    /// The same values for the firing of an alert (`None`: not an alert postback's).
    pub fn alert(self, alert: Option<&'a AlertContext>) -> MacroContext<'a> {
        MacroContext { alert, ..self }
    }

    /// The same values for the firing of a reversal (`None`: not a reversal).
    pub fn reversal(self, reversal: Option<&'a ReversalOf>) -> MacroContext<'a> {
        MacroContext { reversal, ..self }
    }

    /// The value of a macro, or `None` when the event has none (renders empty). The
    /// event's fields read as [`Field::text`] says.
    pub fn value(&self, name: &str) -> Option<Cow<'a, str>> {
        let event = self.event;
        if let Some(key) = name.strip_prefix("params.") {
            return event.params.get(key).map(|v| Cow::Borrowed(v.as_str()));
        }
        match name {
            UNIX_TIMESTAMP => Some(Cow::Owned(event.unix_timestamp())),
            "postback_id" => Some(Cow::Borrowed(self.postback_id)),
            "postback_name" => Some(Cow::Borrowed(self.postback_name)),
            "attempt" => Some(Cow::Owned(self.attempt.to_string())),
            "delivery_id" => Some(Cow::Borrowed(self.delivery_id)),
            "original_delivery_id" => self.reversal.map(|r| Cow::Borrowed(r.delivery_id.as_str())),
            "original_fired_at" => {
                self.reversal.map(|r| Cow::Owned(r.fired_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
            }
            _ => match Field::named(name) {
                Some(field) => field.text(event),
                None => self.alert.and_then(|alert| alert_value(alert, name)),
            },
        }
    }
}

/// The value of an alert macro (`None` for any other name, or a `firing_failed`
/// value of another kind of alert).
fn alert_value<'a>(alert: &'a AlertContext, name: &str) -> Option<Cow<'a, str>> {
    match name {
        "alert" => Some(Cow::Borrowed(alert.kind.as_str())),
        "alert_message" => Some(Cow::Borrowed(alert.message.as_str())),
        "alert_postback_id" => Some(Cow::Borrowed(alert.postback_id.as_str())),
        "alert_postback_name" => Some(Cow::Borrowed(alert.postback_name.as_str())),
        "alert_url" => Some(Cow::Borrowed(alert.url.as_str())),
        "status_code" => alert.status_code.map(|code| Cow::Owned(code.to_string())),
        "error" => alert.error.as_deref().map(Cow::Borrowed),
        _ => None,
    }
}

/// A plausible event of the given type with a value for every macro, for checking
/// templates at save time and for previews. `params.<key>` gets a value for each key
/// given. Fixed values (and a fixed time) so checks are deterministic.
pub fn sample_event<'k>(kind: EventType, param_keys: impl IntoIterator<Item = &'k str>) -> Event {
    let text = |s: &str| Some(s.to_string());
    let has_status = kind.has_status();
    Event {
        kind,
        transaction_id: "tx_5f2b9c1e7a".to_string(),
        event_id: text("evt_42"),
        offer_id: text("101"),
        publisher_id: text("202"),
        external_transaction_id: text("aff_click_9d8e7f"),
        status: has_status.then_some(Status::Approved),
        rejection_reason: has_status.then(|| "fraud".to_string()),
        event_name: (kind == EventType::Event).then(|| "deposit".to_string()),
        payout: text("1.50"),
        revenue: text("2.75"),
        currency: text("USD"),
        subs: std::array::from_fn(|i| Some(format!("sub{}_value", i + 1))),
        ip: text("203.0.113.7"),
        user_agent: text("Mozilla/5.0 (X11; Linux x86_64)"),
        country: text("US"),
        timestamp: sample_time(),
        params: param_keys.into_iter().map(|k| (k.to_string(), format!("{k}_value"))).collect(),
    }
}

/// The fixed time of samples: 2024-05-01T12:00:00Z.
pub fn sample_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_714_564_800, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::alert::AlertKind;
    use crate::domain::template::{Encoding, Template};

    fn ctx<'a>(event: &'a Event, alert: Option<&'a AlertContext>) -> MacroContext<'a> {
        MacroContext::new(event, "pb_chat", "Chat", "d_1", 2).alert(alert)
    }

    #[test]
    fn alert_macros_take_the_alerts_values() {
        let failed = AlertContext::sample(AlertKind::FiringFailed);
        let event = failed.event(sample_time());
        let c = ctx(&event, Some(&failed));
        #[rustfmt::skip]
        let cases = [
            ("alert", Some("firing_failed")),
            ("alert_message", Some(failed.message.as_str())),
            ("alert_postback_id", Some("pb_sample_crm")),
            ("alert_postback_name", Some("CRM \"Acme\" conversions")),
            ("alert_url", Some(failed.url.as_str())),
            ("transaction_id", Some("tx_5f2b9c1e7a")),
            ("status_code", Some("400")),
            ("error", Some("HTTP 400: client error, not retried")),
            ("type", Some("alert")),
            ("postback_id", Some("pb_chat")),
            ("payout", None),
        ];
        for (name, want) in cases {
            assert_eq!(c.value(name).as_deref(), want, "{name}");
        }
        let opened = AlertContext::sample(AlertKind::BreakerOpened);
        let event = opened.event(sample_time());
        let c = ctx(&event, Some(&opened));
        for name in ["status_code", "error"] {
            assert_eq!(c.value(name), None, "{name} is firing_failed's");
        }
        assert_eq!(c.value("transaction_id").as_deref(), Some(""));
        // Not an alert firing: alert macros render empty.
        let conversion = sample_event(EventType::Conversion, []);
        assert_eq!(ctx(&conversion, None).value("alert_message"), None);
    }

    #[test]
    fn hostile_alert_values_are_escaped_where_they_land() {
        let mut alert = AlertContext::sample(AlertKind::FiringFailed);
        alert.message = "a \"quote\",\nnew line, <script>x</script> \\ & é".into();
        let event = alert.event(sample_time());
        let c = ctx(&event, Some(&alert));
        let body = Template::parse_for("{\"text\": \"{alert_message}\"}", EventType::Alert).unwrap();
        let rendered = body.render(&c, Encoding::Json).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(parsed["text"], alert.message.as_str());
        let url = Template::parse_for("https://chat.example/?m={alert_message}", EventType::Alert).unwrap();
        let rendered = url.render(&c, Encoding::Url).unwrap();
        assert_eq!(
            rendered,
            "https://chat.example/?m=a%20%22quote%22%2C%0Anew%20line%2C%20%3Cscript%3Ex%3C%2Fscript%3E%20%5C%20%26%20%C3%A9"
        );
        let header = Template::parse_for("{alert_message}", EventType::Alert).unwrap();
        assert!(header.render(&c, Encoding::Header).is_err(), "a newline cannot go into a header");
    }

    #[test]
    fn the_alert_set_error_lists_the_alert_macros() {
        let why = MacroSet::Alert.why_not("payout").unwrap();
        let listed: std::collections::BTreeSet<&str> =
            why.rsplit_once("its macros are ").unwrap().1.split(", ").collect();
        let want = ALERT_MACROS.iter().copied().filter(|m| *m != SIGNATURE).collect();
        assert_eq!(listed, want, "{why}");
    }

    #[test]
    fn each_type_has_its_macro_set() {
        assert!(MacroSet::Event.contains("payout") && MacroSet::Event.contains("params.goal"));
        assert!(!MacroSet::Event.contains("alert_message") && !MacroSet::Event.contains("error"));
        assert!(MacroSet::Alert.contains("alert_message") && MacroSet::Alert.contains("transaction_id"));
        assert!(!MacroSet::Alert.contains("payout") && !MacroSet::Alert.contains("params.goal"));
        assert_eq!(MacroSet::for_type(EventType::Alert), MacroSet::Alert);
        assert_eq!(MacroSet::for_type(EventType::Event), MacroSet::Event);
        assert!(ALERT_ONLY_MACROS.iter().all(|m| ALERT_MACROS.contains(m) && !KNOWN_MACROS.contains(m)));
    }
}
