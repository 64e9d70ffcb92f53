//! Postback conditions (`conditions`): `{"field", "op", "value"}` tests on the values of
//! the event, all of which must hold for a postback to match.
//!
//! A [`Condition`] is checked and pre-parsed when it is built ([`Condition::new`], at save
//! time and when a stored postback is read): the field is resolved to the event value it
//! reads, decimals are split into normalized digit strings, so matching parses nothing on
//! the postback side. Decimal comparisons are exact, on digit strings, no float anywhere.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::json_kind;
use super::event::{Event, Field, UNIX_TIMESTAMP};
use super::macros;
use super::rules::check_max_chars;
use super::rules::event::{is_plain_decimal, MAX_MONEY_CHARS};
use super::ValidationError;

/// Most conditions on one postback.
pub const MAX_CONDITIONS: usize = 50;
/// Most strings in an `in` / `not_in` list.
pub const MAX_VALUES: usize = 100;
/// Longest text value (as long as the longest event value, a param).
pub const MAX_VALUE_CHARS: usize = 1024;

super::named_enum! {
    /// A condition's `op`.
    #[strum(serialize_all = "snake_case")]
    pub enum Op {
        Eq,
        Ne,
        In,
        NotIn,
        Contains,
        Gt,
        Gte,
        Lt,
        Lte,
        Exists,
        NotExists,
    }
}

pub const OPS: &[&str] = Op::NAMES;

/// Macros that are not values of the event (they belong to one postback or one firing),
/// so a condition cannot test them.
const NOT_EVENT_VALUES: &[&str] = macros::FIRING_MACROS;

/// One condition, validated and pre-parsed. Serializes as `{"field", "op", "value"}` with
/// the value as text (a decimal as the text it was given or the JSON number's text).
#[derive(Debug, Clone)]
pub struct Condition {
    field: String,
    source: Source,
    op: Op,
    test: Test,
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        // `source` follows from `field`, `op` from `test`.
        self.field == other.field && self.test == other.test
    }
}

/// Where the tested value comes from, resolved once from the field name.
#[derive(Debug, Clone)]
enum Source {
    Field(Field),
    Param(String),
    UnixTimestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Contains(String),
    Compare(Cmp, Decimal),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A plain decimal (`-`? digits (`.` digits)?) kept as given and as its normalized parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    source: String,
    negative: bool,
    /// Integer digits without leading zeros.
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
}

/// Split a plain decimal into its normalized parts; `None` if it is not one. Zero is
/// never negative, so `-0.0` equals `0`.
fn parts(text: &str) -> Option<Parts<'_>> {
    if !is_plain_decimal(text) {
        return None;
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    Some(Parts { negative: negative && !(int.is_empty() && frac.is_empty()), int, frac })
}

/// Exact order of two normalized decimals.
fn compare(a: Parts<'_>, b: Parts<'_>) -> Ordering {
    if a.negative != b.negative {
        return if a.negative { Ordering::Less } else { Ordering::Greater };
    }
    // Without leading zeros, more integer digits is larger; then digit by digit. Fraction
    // digits compare left to right, a shorter one as if padded with zeros, which is what
    // byte order on digit strings does once trailing zeros are gone.
    let magnitude = a.int.len().cmp(&b.int.len()).then_with(|| a.int.cmp(b.int)).then_with(|| a.frac.cmp(b.frac));
    if a.negative {
        magnitude.reverse()
    } else {
        magnitude
    }
}

impl Decimal {
    pub fn parse(text: &str) -> Option<Decimal> {
        let p = parts(text)?;
        Some(Decimal {
            source: text.to_string(),
            negative: p.negative,
            int: p.int.to_string(),
            frac: p.frac.to_string(),
        })
    }

    fn parts(&self) -> Parts<'_> {
        Parts { negative: self.negative, int: &self.int, frac: &self.frac }
    }

    /// How a decimal text compares to this one; `None` when the text is not a decimal.
    pub fn compare_text(&self, text: &str) -> Option<Ordering> {
        parts(text).map(|p| compare(p, self.parts()))
    }
}

impl Condition {
    /// Build a condition from its three parts as sent; errors name `field`, `op` or
    /// `value` (the caller prefixes `conditions[i].`). `value` is `None` when absent (or
    /// `null`). Text values for `country` and `currency` are upper-cased, as events store
    /// those codes. Text operators take numbers as their JSON text, like events do.
    pub fn new(field: &str, op: &str, value: Option<&Value>) -> Result<Condition, ValidationError> {
        let source = resolve(field)?;
        let upper = matches!(field, "country" | "currency");
        let text = |value: &Value, what: &str| -> Result<String, ValidationError> {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(ValidationError::invalid(
                        what,
                        format!("{op} takes a string, not {}", json_kind(other)),
                    ))
                }
            };
            if text.is_empty() {
                return Err(ValidationError::invalid(
                    what,
                    "an empty value never matches (events have no empty values); use not_exists",
                ));
            }
            check_max_chars(what, &text, MAX_VALUE_CHARS)?;
            Ok(if upper { text.to_ascii_uppercase() } else { text })
        };
        let required = || ValidationError::new("required", "value", format!("{op} needs a value"));
        let kind = match op {
            "" => return Err(ValidationError::required("op")),
            _ => Op::parse(op)
                .ok_or_else(|| ValidationError::invalid("op", format!("op must be one of {}", OPS.join(", "))))?,
        };
        let test = match kind {
            Op::Eq | Op::Ne | Op::Contains => {
                let v = text(value.ok_or_else(required)?, "value")?;
                match kind {
                    Op::Eq => Test::Eq(v),
                    Op::Ne => Test::Ne(v),
                    _ => Test::Contains(v),
                }
            }
            Op::In | Op::NotIn => {
                let items = match value.ok_or_else(required)? {
                    Value::Array(items) if !items.is_empty() => items,
                    _ => {
                        return Err(ValidationError::invalid(
                            "value",
                            format!("{op} takes a non-empty list of strings"),
                        ))
                    }
                };
                if items.len() > MAX_VALUES {
                    return Err(ValidationError::new(
                        "too_long",
                        "value",
                        format!("{op} may list at most {MAX_VALUES} values"),
                    ));
                }
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let v = text(item, &format!("value[{i}]"))?;
                    if !list.contains(&v) {
                        list.push(v);
                    }
                }
                if kind == Op::In {
                    Test::In(list)
                } else {
                    Test::NotIn(list)
                }
            }
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                let number = match value.ok_or_else(required)? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let decimal = Decimal::parse(&number).filter(|_| number.len() <= MAX_MONEY_CHARS).ok_or_else(|| {
                    ValidationError::invalid(
                        "value",
                        format!(
                            "{op} takes a decimal number, as a JSON number or a string such as \"12.50\" \
                             (digits, an optional - and . ; at most {MAX_MONEY_CHARS} characters)"
                        ),
                    )
                })?;
                let cmp = match kind {
                    Op::Gt => Cmp::Gt,
                    Op::Gte => Cmp::Gte,
                    Op::Lt => Cmp::Lt,
                    _ => Cmp::Lte,
                };
                Test::Compare(cmp, decimal)
            }
            Op::Exists | Op::NotExists => {
                if value.is_some() {
                    return Err(ValidationError::invalid("value", format!("{op} takes no value")));
                }
                if kind == Op::Exists {
                    Test::Exists
                } else {
                    Test::NotExists
                }
            }
        };
        Ok(Condition { field: field.to_string(), source, op: kind, test })
    }

    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn op(&self) -> &'static str {
        self.op.as_str()
    }

    /// The value as stored and shown: text, a list of texts, or none.
    pub fn value(&self) -> Option<Value> {
        match &self.test {
            Test::Eq(v) | Test::Ne(v) | Test::Contains(v) => Some(Value::String(v.clone())),
            Test::In(list) | Test::NotIn(list) => Some(list.iter().cloned().map(Value::String).collect()),
            Test::Compare(_, d) => Some(Value::String(d.source.clone())),
            Test::Exists | Test::NotExists => None,
        }
    }

    /// Does the event satisfy this condition? A missing value satisfies only `ne`,
    /// `not_in` and `not_exists`; a comparison needs a decimal value.
    pub fn holds(&self, event: &Event) -> bool {
        let value = self.source.read(event);
        let value = value.as_deref();
        match &self.test {
            Test::Eq(v) => value == Some(v.as_str()),
            Test::Ne(v) => value != Some(v.as_str()),
            Test::In(list) => value.is_some_and(|x| list.iter().any(|v| v == x)),
            Test::NotIn(list) => !value.is_some_and(|x| list.iter().any(|v| v == x)),
            Test::Contains(v) => value.is_some_and(|x| x.contains(v.as_str())),
            Test::Compare(cmp, d) => value.and_then(|x| d.compare_text(x)).is_some_and(|o| match cmp {
                Cmp::Gt => o == Ordering::Greater,
                Cmp::Gte => o != Ordering::Less,
                Cmp::Lt => o == Ordering::Less,
                Cmp::Lte => o != Ordering::Greater,
            }),
            Test::Exists => value.is_some(),
            Test::NotExists => value.is_none(),
        }
    }
}

/// Do all conditions hold (none given: yes)?
pub fn all_hold(conditions: &[Condition], event: &Event) -> bool {
    conditions.iter().all(|c| c.holds(event))
}

impl Source {
    fn read<'e>(&self, event: &'e Event) -> Option<Cow<'e, str>> {
        match self {
            Source::Field(field) => field.text(event),
            Source::Param(key) => event.params.get(key).map(|v| Cow::Borrowed(v.as_str())),
            Source::UnixTimestamp => Some(Cow::Owned(event.unix_timestamp())),
        }
    }
}

/// The event value a macro name reads, or the error for a name that is none.
fn resolve(field: &str) -> Result<Source, ValidationError> {
    if field.is_empty() {
        return Err(ValidationError::required("field"));
    }
    if let Some(key) = field.strip_prefix("params.").filter(|k| !k.is_empty()) {
        return Ok(Source::Param(key.to_string()));
    }
    if let Some(known) = Field::named(field) {
        return Ok(Source::Field(known));
    }
    if field == UNIX_TIMESTAMP {
        return Ok(Source::UnixTimestamp);
    }
    if NOT_EVENT_VALUES.contains(&field) {
        return Err(ValidationError::invalid(
            "field",
            format!("{field} is not a value of the event; conditions test the event's values"),
        ));
    }
    Err(unknown_field(field))
}

fn unknown_field(field: &str) -> ValidationError {
    let hint = if field == "params" || field == "params." {
        " (extra parameters are params.<key>, e.g. params.goal)".to_string()
    } else if let Some(key) = super::template::misspelt_params_key(field) {
        format!("; did you mean `params.{key}`?")
    } else if let Some(known) = macros::suggest(field).filter(|k| !NOT_EVENT_VALUES.contains(k)) {
        format!("; did you mean `{known}`? (field names are case-sensitive)")
    } else {
        String::new()
    };
    ValidationError::new("unknown_macro", "field", format!("unknown field `{field}`{hint}; a field is a macro name"))
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let value = self.value();
        let mut map = s.serialize_map(Some(if value.is_some() { 3 } else { 2 }))?;
        map.serialize_entry("field", &self.field)?;
        map.serialize_entry("op", self.op())?;
        if let Some(value) = &value {
            map.serialize_entry("value", value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            field: String,
            op: String,
            #[serde(default)]
            value: Option<Value>,
        }
        let raw = Raw::deserialize(d)?;
        Condition::new(&raw.field, &raw.op, raw.value.as_ref().filter(|v| !v.is_null()))
            .map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventType;
    use crate::domain::macros::sample_event;
    use serde_json::json;

    fn cond(field: &str, op: &str, value: Value) -> Condition {
        Condition::new(field, op, Some(&value).filter(|v| !v.is_null())).unwrap()
    }

    #[test]
    fn decimals_compare_exactly() {
        let cmp = |a: &str, b: &str| Decimal::parse(b).unwrap().compare_text(a).unwrap();
        for (a, b) in [("12.50", "12.5"), ("012.5", "12.50"), ("-0", "0"), ("-0.00", "0.0"), ("0", "000")] {
            assert_eq!(cmp(a, b), Ordering::Equal, "{a} = {b}");
        }
        for (a, b) in [
            ("12.5", "12.49999999999999999999"),
            ("100", "99.999"),
            ("0.5", "0.05"),
            ("0.51", "0.5"),
            ("-1", "-2"),
            ("0", "-0.0001"),
            ("1", "-1"),
            ("10000000000000000000000001", "10000000000000000000000000"),
            ("0.30000000000000000001", "0.3"),
        ] {
            assert_eq!(cmp(a, b), Ordering::Greater, "{a} > {b}");
            assert_eq!(cmp(b, a), Ordering::Less, "{b} < {a}");
        }
        assert_eq!(Decimal::parse("1").unwrap().compare_text("abc"), None);
        assert_eq!(Decimal::parse("1").unwrap().compare_text("1e3"), None);
        assert!(Decimal::parse("1.").is_none());
    }

    #[test]
    fn each_op_on_present_and_missing_values() {
        let mut e = sample_event(EventType::Conversion, ["goal"]);
        e.payout = Some("12.50".into());
        e.subs[2] = None;
        let holds = |field: &str, op: &str, value: Value| cond(field, op, value).holds(&e);
        assert!(holds("payout", "gte", json!(12.5)));
        assert!(holds("payout", "lte", json!("12.5")));
        assert!(!holds("payout", "gt", json!("12.50")));
        assert!(holds("payout", "gt", json!("12.499")));
        assert!(!holds("payout", "lt", json!(-3)));
        assert!(!holds("sub3", "gt", json!(0)), "missing never compares");
        assert!(!holds("country", "gt", json!(0)), "non-numeric never compares");
        assert!(holds("country", "eq", json!("us")), "country values are upper-cased like events'");
        assert!(holds("country", "in", json!(["DE", "US"])));
        assert!(!holds("country", "not_in", json!(["DE", "US"])));
        assert!(holds("sub3", "not_in", json!(["x"])));
        assert!(holds("sub3", "ne", json!("x")));
        assert!(!holds("sub3", "eq", json!("x")));
        assert!(!holds("sub3", "contains", json!("x")));
        assert!(holds("user_agent", "contains", json!("Linux")));
        assert!(holds("params.goal", "eq", json!("goal_value")));
        assert!(holds("sub3", "not_exists", Value::Null));
        assert!(!holds("sub1", "not_exists", Value::Null));
        assert!(holds("sub1", "exists", Value::Null));
        assert!(holds("unix_timestamp", "gt", json!(1_714_564_799)));
        assert!(holds("offer_id", "eq", json!(101)), "numbers are taken as text for eq");
    }

    #[test]
    fn errors_name_the_part() {
        let err = |field: &str, op: &str, value: Option<Value>| Condition::new(field, op, value.as_ref()).unwrap_err();
        let e = err("Sub5", "eq", Some(json!("x")));
        assert_eq!((e.field.as_str(), e.code), ("field", "unknown_macro"));
        assert!(e.message.contains("did you mean `sub5`"), "{}", e.message);
        assert!(err("param.goal", "eq", Some(json!("x"))).message.contains("params.goal"));
        assert_eq!(err("attempt", "eq", Some(json!("1"))).field, "field");
        assert_eq!(err("", "eq", Some(json!("1"))).code, "required");
        assert_eq!(err("payout", "equals", Some(json!("1"))).field, "op");
        assert_eq!(err("payout", "", Some(json!("1"))).code, "required");
        for (op, value) in [
            ("eq", None),
            ("eq", Some(json!(["a"]))),
            ("eq", Some(json!(""))),
            ("in", Some(json!([]))),
            ("in", Some(json!("a"))),
            ("gt", Some(json!("12,5"))),
            ("gt", Some(json!("1e3"))),
            ("gt", Some(json!(1e300))),
            ("gt", Some(json!(true))),
            ("gt", None),
            ("exists", Some(json!("x"))),
        ] {
            assert_eq!(err("payout", op, value.clone()).field, "value", "{op} {value:?}");
        }
        assert_eq!(err("payout", "in", Some(json!(["a", 1, {}]))).field, "value[2]");
        let long = "x".repeat(MAX_VALUE_CHARS + 1);
        assert_eq!(err("sub1", "eq", Some(json!(long))).code, "too_long");
    }

    #[test]
    fn serde_round_trip() {
        for c in [
            cond("payout", "gt", json!(12.5)),
            cond("payout", "lte", json!("012.50")),
            cond("country", "in", json!(["de", "us", "DE"])),
            cond("sub3", "not_exists", Value::Null),
            cond("params.goal", "contains", json!("ftd")),
        ] {
            let json = serde_json::to_value(&c).unwrap();
            let back: Condition = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, c, "{json}");
        }
        assert_eq!(
            serde_json::to_value(cond("payout", "gt", json!(12.5))).unwrap(),
            json!({"field": "payout", "op": "gt", "value": "12.5"})
        );
        assert_eq!(serde_json::to_value(cond("country", "in", json!(["de", "DE"]))).unwrap()["value"], json!(["DE"]));
        assert_eq!(
            serde_json::to_value(cond("sub3", "exists", Value::Null)).unwrap(),
            json!({"field": "sub3", "op": "exists"})
        );
    }
}
