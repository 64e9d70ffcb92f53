//! The matching rule as the spec states it, one plain predicate over one postback. The
//! property test checks the index against it and the bench uses it as its linear-scan
//! baseline, so the baseline is the very oracle the index was proven equal to.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use postback::domain::event::{Event, EventType, Status};
use postback::domain::macros::MacroContext;
use postback::domain::postback::{FireOn, HttpMethod, Postback, Scope};
use serde_json::Value;

pub fn matches(p: &Postback, e: &Event) -> bool {
    p.enabled
        // Only approved postbacks fire (a partner's pending or rejected one: nothing).
        && p.approval.state == postback::domain::partner::ApprovalState::Approved
        // Alert postbacks are fired by the manager itself, never by matching.
        && p.kind != EventType::Alert
        && p.kind == e.kind
        && p.offers.contains(e.offer_id.as_deref())
        && p.publishers.contains(e.publisher_id.as_deref())
        && (!e.kind.has_status()
            || p.fires_for_status(e.status.unwrap_or(Status::Approved), e.rejection_reason.as_deref()))
        && (e.kind != EventType::Event
            || match &p.event_names {
                Some(names) if !names.is_empty() => e.event_name.as_ref().is_some_and(|n| names.contains(n)),
                _ => true,
            })
        && p.conditions.iter().all(|c| condition_holds(&serde_json::to_value(c).unwrap(), e))
}

/// A condition as stored (`{"field", "op", "value"}`), on the event's macro value.
fn condition_holds(condition: &Value, e: &Event) -> bool {
    let ctx = MacroContext::new(e, "", "", "", 1);
    let value = ctx.value(condition["field"].as_str().unwrap());
    let value = value.as_deref();
    let target = &condition["value"];
    let text = target.as_str().unwrap_or_default();
    let list: Vec<&str> =
        target.as_array().map(|l| l.iter().map(|v| v.as_str().unwrap()).collect()).unwrap_or_default();
    let order = || value.and_then(|v| decimal_order(v, text));
    match condition["op"].as_str().unwrap() {
        "eq" => value == Some(text),
        "ne" => value != Some(text),
        "in" => value.is_some_and(|v| list.contains(&v)),
        "not_in" => !value.is_some_and(|v| list.contains(&v)),
        "contains" => value.is_some_and(|v| v.contains(text)),
        "gt" => order() == Some(Ordering::Greater),
        "gte" => matches!(order(), Some(Ordering::Greater | Ordering::Equal)),
        "lt" => order() == Some(Ordering::Less),
        "lte" => matches!(order(), Some(Ordering::Less | Ordering::Equal)),
        "exists" => value.is_some(),
        "not_exists" => value.is_none(),
        op => panic!("unknown op {op}"),
    }
}

/// `a` against `b` as decimals, by padding both to the same digit positions; `None` when
/// either is not a plain decimal (`-`? digits (`.` digits)?).
fn decimal_order(a: &str, b: &str) -> Option<Ordering> {
    fn split(text: &str) -> Option<(bool, String, String)> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = match rest.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (rest, None),
        };
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if !digits(int) || !frac.is_none_or(digits) {
            return None;
        }
        Some((negative, int.to_string(), frac.unwrap_or("").to_string()))
    }
    let (an, ai, af) = split(a)?;
    let (bn, bi, bf) = split(b)?;
    let width = ai.len().max(bi.len());
    let places = af.len().max(bf.len());
    let digits = |i: &str, f: &str| format!("{i:0>width$}{f:0<places$}");
    let (ad, bd) = (digits(&ai, &af), digits(&bi, &bf));
    let zero = |d: &str| d.chars().all(|c| c == '0');
    // A signed magnitude; zero has no sign.
    let signed = |negative: bool, d: &str| {
        if zero(d) {
            0
        } else if negative {
            -1
        } else {
            1
        }
    };
    let (asg, bsg) = (signed(an, &ad), signed(bn, &bd));
    if asg != bsg {
        return Some(asg.cmp(&bsg));
    }
    Some(if asg < 0 { bd.cmp(&ad) } else { ad.cmp(&bd) })
}

/// A postback of `kind` that fires on everything of it (scope all, approved, no
/// conditions): the base the property test and the bench vary, so a new field is added
/// in one place.
pub fn plain_postback(id: &str, kind: EventType) -> Postback {
    let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    Postback {
        id: id.to_string(),
        name: format!("postback {id}"),
        kind,
        enabled: true,
        offers: Scope::All,
        publishers: Scope::All,
        fire_on: FireOn::Approved,
        rejection_reasons: None,
        event_names: None,
        delay_seconds: 0,
        method: HttpMethod::Get,
        url: format!("https://receiver.example/{id}"),
        headers: BTreeMap::new(),
        body: None,
        content_type: "application/json".into(),
        created_at: at,
        updated_at: at,
        signing: Default::default(),
        signing_secret: None,
        previous_signing_secret: None,
        version: 1,
        conditions: Vec::new(),
        success_rule: None,
        alerts: Vec::new(),
        rate_limit_per_second: None,
        owner: None,
        changed_by: None,
        reversal: None,
        template: None,
        template_secrets: Vec::new(),
        approval: Default::default(),
        pending_revision: None,
    }
}
