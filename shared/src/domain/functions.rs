//! Macro functions: `{name|fn|fn:arg|fn:arg1,arg2}` passes a macro's value through
//! functions, left to right (spec: *Macro functions*). A chain is parsed once, when the
//! template is parsed (at save, and when a stored postback is compiled), into a typed
//! [`Chain`]: rendering runs the functions and never reads their text again.
//!
//! Values are text. Arithmetic is exact decimal arithmetic (`rust_decimal`, no binary
//! floating point); `date` reads RFC 3339 and writes in UTC or an IANA zone (`chrono-tz`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, Datelike, FixedOffset, Offset, TimeZone, Timelike, Utc};
use md5::Md5;
use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};

use super::template::URL_COMPONENT;

/// Every function name, in the order the spec lists them.
pub const FUNCTIONS: &[&str] = &[
    "default",
    "lower",
    "upper",
    "trim",
    "sha256",
    "md5",
    "map",
    "date",
    "mul",
    "round",
    "truncate",
    "urlencode",
    "base64",
];

/// `round:N`: N from 0 to this.
pub const MAX_ROUND_PLACES: u32 = 8;
/// `truncate:N`: N from 1 to this.
pub const MAX_TRUNCATE_CHARS: usize = 10_000;

/// One function of a chain, with its arguments already read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Function {
    /// `default:TEXT`: TEXT when the value is empty.
    Default(String),
    Lower,
    Upper,
    Trim,
    /// Lowercase hex SHA-256 of the UTF-8 bytes; empty stays empty.
    Sha256,
    /// Lowercase hex MD5 of the UTF-8 bytes; empty stays empty.
    Md5,
    /// `map:k1=v1,k2=v2,*=v`: the first equal key's value, else the fallback, else the
    /// value unchanged.
    Map {
        pairs: Vec<(String, String)>,
        fallback: Option<String>,
    },
    /// `date:FORMAT[,ZONE]`: an RFC 3339 value written in the format, in the zone.
    Date {
        format: Vec<DatePart>,
        zone: Zone,
    },
    /// `mul:DECIMAL`: exact product; a value that is not a number renders empty.
    Mul(Decimal),
    /// `round:N`: half away from zero to N places (written with exactly N places).
    Round(u32),
    /// `truncate:N`: at most N characters.
    Truncate(usize),
    /// Percent-encoding of everything but RFC 3986 unreserved characters.
    UrlEncode,
    /// Standard base64 with padding of the UTF-8 bytes.
    Base64,
}

/// A piece of a `date` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatePart {
    Literal(String),
    /// `%Y`: the year, at least 4 digits.
    Year,
    /// `%m`: 01–12.
    Month,
    /// `%d`: 01–31.
    Day,
    /// `%H`: 00–23.
    Hour,
    /// `%M`: 00–59.
    Minute,
    /// `%S`: 00–60.
    Second,
    /// `%z`: the zone's offset, `+0300`.
    Offset,
    /// `%s`: unix seconds.
    Unix,
    /// `%f`: microseconds within the second, 6 digits (`%s%f` is unix microseconds).
    Micros,
}

/// Where a `date` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    Named(chrono_tz::Tz),
}

/// A parsed chain: the functions, and the text it was parsed from (after the macro
/// name, the leading `|` included) so a template can be written back as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub functions: Vec<Function>,
    pub source: String,
}

/// Why a chain was refused. The message names the function (and suggests the closest
/// known one for an unknown name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChainError {
    /// `unknown_function` or `invalid_argument`.
    pub code: &'static str,
    pub message: String,
}

fn bad_argument(function: &str, message: impl std::fmt::Display) -> ChainError {
    ChainError { code: "invalid_argument", message: format!("function {function}: {message}") }
}

impl Chain {
    /// Parse the text between the macro name and the closing brace: `|fn|fn:arg,...`.
    /// `macro_name` only words the errors.
    pub fn parse(source: &str, macro_name: &str) -> Result<Chain, ChainError> {
        let Some(body) = source.strip_prefix('|') else {
            return Err(ChainError {
                code: "invalid_argument",
                message: format!("a function chain of {{{macro_name}}} starts with |"),
            });
        };
        if body.contains(['{', '}']) {
            return Err(ChainError {
                code: "invalid_argument",
                message: format!(
                    "the functions of {{{macro_name}|...}} may not contain {{ or }} (a function's arguments are literal text)"
                ),
            });
        }
        let functions = body.split('|').map(|spec| parse_function(spec, macro_name)).collect::<Result<Vec<_>, _>>()?;
        Ok(Chain { functions, source: source.to_string() })
    }

    /// Run the functions on `value`, left to right.
    pub fn apply<'a>(&self, value: Cow<'a, str>) -> Cow<'a, str> {
        self.functions.iter().fold(value, |value, function| function.apply(value))
    }
}

fn parse_function(spec: &str, macro_name: &str) -> Result<Function, ChainError> {
    let (name, args) = match spec.split_once(':') {
        Some((name, args)) => (name, Some(args)),
        None => (spec, None),
    };
    if name.is_empty() {
        return Err(ChainError {
            code: "unknown_function",
            message: format!(
                "an empty function in {{{macro_name}|...}}: write fn or fn:args between the | signs; functions are {}",
                FUNCTIONS.join(", ")
            ),
        });
    }
    let no_argument = |function: Function| match args {
        None => Ok(function),
        Some(_) => Err(bad_argument(name, "takes no argument")),
    };
    let one_argument = || -> Result<&str, ChainError> {
        match args {
            None | Some("") => Err(bad_argument(name, format!("needs an argument: {name}:{}", usage(name)))),
            Some(text) if text.contains(',') => {
                Err(bad_argument(name, format!("takes one argument ({name}:{}), not a list", usage(name))))
            }
            Some(text) => Ok(text),
        }
    };
    match name {
        "default" => Ok(Function::Default(one_argument()?.to_string())),
        "lower" => no_argument(Function::Lower),
        "upper" => no_argument(Function::Upper),
        "trim" => no_argument(Function::Trim),
        "sha256" => no_argument(Function::Sha256),
        "md5" => no_argument(Function::Md5),
        "urlencode" => no_argument(Function::UrlEncode),
        "base64" => no_argument(Function::Base64),
        "map" => parse_map(args.unwrap_or_default()),
        "date" => parse_date(args.unwrap_or_default()),
        "mul" => {
            let text = one_argument()?;
            parse_decimal(text)
                .map(Function::Mul)
                .ok_or_else(|| bad_argument(name, format!("{text:?} is not a decimal number such as 0.8 or -2.5")))
        }
        "round" => {
            let text = one_argument()?;
            text.parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_ROUND_PLACES && text.bytes().all(|b| b.is_ascii_digit()))
                .map(Function::Round)
                .ok_or_else(|| {
                    bad_argument(name, format!("{text:?} is not a number of places from 0 to {MAX_ROUND_PLACES}"))
                })
        }
        "truncate" => {
            let text = one_argument()?;
            text.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_TRUNCATE_CHARS).contains(n) && text.bytes().all(|b| b.is_ascii_digit()))
                .map(Function::Truncate)
                .ok_or_else(|| {
                    bad_argument(name, format!("{text:?} is not a number of characters from 1 to {MAX_TRUNCATE_CHARS}"))
                })
        }
        unknown => Err(unknown_function(unknown)),
    }
}

/// How a function's arguments are written, for the errors and the console's help.
pub fn usage(function: &str) -> &'static str {
    match function {
        "default" => "TEXT",
        "map" => "k1=v1,k2=v2,*=fallback",
        "date" => "FORMAT or date:FORMAT,ZONE (e.g. date:%Y-%m-%d %H:%M:%S,Europe/Kyiv)",
        "mul" => "DECIMAL (e.g. mul:0.8)",
        "round" => "N (0 to 8 places)",
        "truncate" => "N (1 to 10000 characters)",
        _ => "",
    }
}

fn unknown_function(name: &str) -> ChainError {
    let hint = match suggest_function(name) {
        Some(known) => format!("; did you mean {known}?"),
        None => String::new(),
    };
    ChainError {
        code: "unknown_function",
        message: format!("unknown function {name}{hint} (functions are {})", FUNCTIONS.join(", ")),
    }
}

/// The closest function name for a near miss: the same name in another case, or at most
/// two edits away (fewer than the shorter name's length).
pub fn suggest_function(name: &str) -> Option<&'static str> {
    if let Some(same) = FUNCTIONS.iter().find(|f| f.eq_ignore_ascii_case(name)) {
        return Some(same);
    }
    let lowered = name.to_ascii_lowercase();
    FUNCTIONS
        .iter()
        .map(|known| (strsim::damerau_levenshtein(&lowered, known), *known))
        .filter(|(distance, known)| *distance <= 2 && *distance < lowered.len().min(known.len()))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

fn parse_map(args: &str) -> Result<Function, ChainError> {
    if args.is_empty() {
        return Err(bad_argument("map", format!("needs pairs: map:{}", usage("map"))));
    }
    let mut pairs = Vec::new();
    let mut fallback = None;
    for pair in args.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad_argument("map", format!("{pair:?} is not a pair key=value (map:{})", usage("map"))));
        };
        if key == "*" {
            if fallback.is_some() {
                return Err(bad_argument("map", "has two fallbacks (*=...)"));
            }
            fallback = Some(value.to_string());
        } else {
            pairs.push((key.to_string(), value.to_string()));
        }
    }
    Ok(Function::Map { pairs, fallback })
}

fn parse_date(args: &str) -> Result<Function, ChainError> {
    let mut parts = args.split(',');
    let format = parts.next().unwrap_or_default();
    let zone = parts.next();
    if parts.next().is_some() {
        return Err(bad_argument("date", format!("takes a format and a zone at most: date:{}", usage("date"))));
    }
    if format.is_empty() {
        return Err(bad_argument("date", format!("needs a format: date:{}", usage("date"))));
    }
    let zone = match zone {
        None => Zone::Utc,
        Some(name) => chrono_tz::Tz::from_str(name).map(Zone::Named).map_err(|_| {
            bad_argument("date", format!("unknown zone {name:?}: use UTC or an IANA zone such as Europe/Kyiv"))
        })?,
    };
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let part = match chars.next() {
            Some('Y') => DatePart::Year,
            Some('m') => DatePart::Month,
            Some('d') => DatePart::Day,
            Some('H') => DatePart::Hour,
            Some('M') => DatePart::Minute,
            Some('S') => DatePart::Second,
            Some('z') => DatePart::Offset,
            Some('s') => DatePart::Unix,
            Some('f') => DatePart::Micros,
            other => {
                let letter = other.map(|c| format!("%{c}")).unwrap_or_else(|| "a lone % at the end".to_string());
                return Err(bad_argument(
                    "date",
                    format!("unknown format {letter}: the format letters are %Y %m %d %H %M %S %z %s %f"),
                ));
            }
        };
        if !literal.is_empty() {
            pieces.push(DatePart::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(part);
    }
    if !literal.is_empty() {
        pieces.push(DatePart::Literal(literal));
    }
    Ok(Function::Date { format: pieces, zone })
}

/// A plain decimal: an optional sign, digits, and optionally `.` and digits (no
/// exponent, no separators), within `rust_decimal`'s 28 digits.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    let exact = Decimal::from_str_exact(unsigned).ok()?;
    Some(if text.starts_with('-') { -exact } else { exact })
}

/// A decimal as text, never `-0`.
fn decimal_text(mut value: Decimal) -> String {
    if value.is_zero() {
        value.set_sign_positive(true);
    }
    value.to_string()
}

const EMPTY: Cow<'static, str> = Cow::Borrowed("");

impl Function {
    /// This function on one value.
    pub fn apply<'a>(&self, value: Cow<'a, str>) -> Cow<'a, str> {
        match self {
            Function::Default(text) if value.is_empty() => Cow::Owned(text.clone()),
            Function::Default(_) => value,
            Function::Lower => Cow::Owned(value.to_lowercase()),
            Function::Upper => Cow::Owned(value.to_uppercase()),
            Function::Trim => match value {
                Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
                Cow::Owned(text) => Cow::Owned(text.trim().to_string()),
            },
            Function::Sha256 if value.is_empty() => value,
            Function::Sha256 => Cow::Owned(hex::encode(Sha256::digest(value.as_bytes()))),
            Function::Md5 if value.is_empty() => value,
            Function::Md5 => Cow::Owned(hex::encode(Md5::digest(value.as_bytes()))),
            Function::Map { pairs, fallback } => match pairs.iter().find(|(key, _)| *key == *value) {
                Some((_, mapped)) => Cow::Owned(mapped.clone()),
                None => match fallback {
                    Some(fallback) => Cow::Owned(fallback.clone()),
                    None => value,
                },
            },
            Function::Date { format, zone } => match DateTime::parse_from_rfc3339(&value) {
                Ok(time) => Cow::Owned(match zone {
                    Zone::Utc => write_date(format, &time.with_timezone(&Utc)),
                    Zone::Named(tz) => write_date(format, &time.with_timezone(tz)),
                }),
                Err(_) => EMPTY,
            },
            Function::Mul(factor) => match parse_decimal(&value).and_then(|v| v.checked_mul(*factor)) {
                Some(product) => Cow::Owned(decimal_text(product)),
                None => EMPTY,
            },
            Function::Round(places) => match parse_decimal(&value) {
                Some(v) => {
                    let mut rounded = v.round_dp_with_strategy(*places, RoundingStrategy::MidpointAwayFromZero);
                    // Written with exactly N places (`1.5|round:2` is `1.50`), as money is.
                    rounded.rescale(*places);
                    Cow::Owned(decimal_text(rounded))
                }
                None => EMPTY,
            },
            Function::Truncate(max) => match value.char_indices().nth(*max) {
                None => value,
                Some((end, _)) => match value {
                    Cow::Borrowed(text) => Cow::Borrowed(&text[..end]),
                    Cow::Owned(mut text) => {
                        text.truncate(end);
                        Cow::Owned(text)
                    }
                },
            },
            Function::UrlEncode => {
                let encoded = percent_encoding::utf8_percent_encode(&value, URL_COMPONENT).to_string();
                // Every byte that is encoded grows to three: the same length means nothing was.
                if encoded.len() == value.len() {
                    value
                } else {
                    Cow::Owned(encoded)
                }
            }
            Function::Base64 => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(value.as_bytes())),
        }
    }
}

fn write_date<Tz: TimeZone>(format: &[DatePart], time: &DateTime<Tz>) -> String {
    let mut out = String::with_capacity(32);
    for part in format {
        // Writing to a String cannot fail.
        let _ = match part {
            DatePart::Literal(text) => {
                out.push_str(text);
                Ok(())
            }
            DatePart::Year => write!(out, "{:04}", time.year()),
            DatePart::Month => write!(out, "{:02}", time.month()),
            DatePart::Day => write!(out, "{:02}", time.day()),
            DatePart::Hour => write!(out, "{:02}", time.hour()),
            DatePart::Minute => write!(out, "{:02}", time.minute()),
            DatePart::Second => write!(out, "{:02}", time.second()),
            DatePart::Offset => {
                let offset: FixedOffset = time.offset().fix();
                let seconds = offset.local_minus_utc();
                let sign = if seconds < 0 { '-' } else { '+' };
                let minutes = seconds.unsigned_abs() / 60;
                write!(out, "{sign}{:02}{:02}", minutes / 60, minutes % 60)
            }
            DatePart::Unix => write!(out, "{}", time.timestamp()),
            // A leap second's fraction runs past 999,999 µs; it is written as the last one.
            DatePart::Micros => write!(out, "{:06}", time.timestamp_subsec_micros().min(999_999)),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn run(chain: &str, value: &str) -> String {
        Chain::parse(chain, "x").unwrap().apply(Cow::Borrowed(value)).into_owned()
    }

    fn refused(chain: &str) -> ChainError {
        Chain::parse(chain, "x").unwrap_err()
    }

    /// Known answers for every function.
    #[test]
    fn every_function_gives_its_known_answers() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // default
            ("|default:none", "", "none"),
            ("|default:none", "x", "x"),
            ("|default:0", " ", " "),
            // lower, upper, trim
            ("|lower", "Ana.Lopez@Example.COM", "ana.lopez@example.com"),
            ("|upper", "usd", "USD"),
            ("|lower", "ÉCOLE", "école"),
            ("|trim", "  a b \t\n", "a b"),
            ("|trim|lower", "  MiXed@Example.com ", "mixed@example.com"),
            // sha256, md5
            ("|sha256", "", ""),
            ("|sha256", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("|md5", "", ""),
            ("|md5", "abc", "900150983cd24fb0d6963f7d28e17f72"),
            // map: first equal key, fallback, no match
            ("|map:approved=1,pending=2,rejected=3", "pending", "2"),
            ("|map:approved=1,pending=2,rejected=3", "declined", "declined"),
            ("|map:approved=1,*=0", "declined", "0"),
            ("|map:a=1,a=2", "a", "1"),
            ("|map:=empty,*=full", "", "empty"),
            ("|map:x=", "x", ""),
            // date
            ("|date:%Y-%m-%d %H:%M:%S", "2024-05-01T12:00:00Z", "2024-05-01 12:00:00"),
            ("|date:%s", "2024-05-01T12:00:00Z", "1714564800"),
            ("|date:%s%f", "2024-05-01T12:00:00.123456789Z", "1714564800123456"),
            ("|date:%f", "2024-05-01T12:00:00Z", "000000"),
            ("|date:%z", "2024-05-01T12:00:00+02:00", "+0000"),
            ("|date:%H:%M%z,Asia/Kolkata", "2024-05-01T12:00:00Z", "17:30+0530"),
            ("|date:%Y-%m-%dT%H:%M:%S%z,America/St_Johns", "2024-01-01T00:00:00Z", "2023-12-31T20:30:00-0330"),
            // Kyiv across the end of daylight-saving time (27 October 2024, 01:00 UTC).
            ("|date:%Y-%m-%d %H:%M:%S %z,Europe/Kyiv", "2024-10-27T00:59:59Z", "2024-10-27 03:59:59 +0300"),
            ("|date:%Y-%m-%d %H:%M:%S %z,Europe/Kyiv", "2024-10-27T01:00:00Z", "2024-10-27 03:00:00 +0200"),
            ("|date:%Y-%m-%d", "not a time", ""),
            ("|date:%Y-%m-%d", "", ""),
            ("|date:%Y-%m-%d", "2024-05-01", ""),
            // mul, round: exact decimals, half away from zero
            ("|mul:0.8", "1.50", "1.200"),
            ("|mul:100", "10.005", "1000.500"),
            ("|mul:3", "0.1", "0.3"),
            ("|mul:-1", "0", "0"),
            ("|mul:0.5", "-3", "-1.5"),
            ("|mul:2", "abc", ""),
            ("|mul:2", "", ""),
            ("|mul:2", "1e3", ""),
            ("|mul:2", " 1", ""),
            ("|round:2", "10.005", "10.01"),
            ("|round:2", "-10.005", "-10.01"),
            ("|round:0", "2.5", "3"),
            ("|round:0", "-2.5", "-3"),
            ("|round:0", "-0.4", "0"),
            ("|round:2", "1.5", "1.50"),
            ("|round:8", "0.123456785", "0.12345679"),
            ("|round:2", "n/a", ""),
            ("|mul:0.8|round:2", "10.005", "8.00"),
            ("|mul:0.5|round:2", "10.01", "5.01"),
            // truncate counts characters
            ("|truncate:3", "abcdef", "abc"),
            ("|truncate:3", "ab", "ab"),
            ("|truncate:2", "éèê", "éè"),
            // urlencode, base64
            ("|urlencode", "a b&c=d/é", "a%20b%26c%3Dd%2F%C3%A9"),
            ("|urlencode", "plain-._~", "plain-._~"),
            ("|base64", "user:pass", "dXNlcjpwYXNz"),
            ("|base64", "", ""),
        ];
        for (chain, value, want) in cases {
            assert_eq!(run(chain, value), *want, "{{x{chain}}} on {value:?}");
        }
    }

    #[test]
    fn sha256_of_a_normalised_email_is_the_digest_of_its_bytes() {
        let want = hex::encode(Sha256::digest(b"ana@example.com"));
        assert_eq!(run("|trim|lower|sha256", " Ana@Example.com "), want);
    }

    #[test]
    fn bad_chains_are_refused_naming_the_function() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("|lowr", "unknown_function", "unknown function lowr; did you mean lower?"),
            ("|LOWER", "unknown_function", "did you mean lower?"),
            ("|sha265", "unknown_function", "did you mean sha256?"),
            ("|frobnicate", "unknown_function", "unknown function frobnicate (functions are default"),
            ("|", "unknown_function", "an empty function"),
            ("|lower||upper", "unknown_function", "an empty function"),
            ("|lower:x", "invalid_argument", "function lower: takes no argument"),
            ("|mul:abc", "invalid_argument", "function mul: \"abc\" is not a decimal"),
            ("|mul:1e3", "invalid_argument", "function mul"),
            ("|mul", "invalid_argument", "function mul: needs an argument"),
            ("|mul:1,2", "invalid_argument", "takes one argument"),
            ("|round:9", "invalid_argument", "function round: \"9\" is not a number of places from 0 to 8"),
            ("|round:-1", "invalid_argument", "function round"),
            ("|round:+2", "invalid_argument", "function round"),
            ("|truncate:0", "invalid_argument", "function truncate"),
            ("|truncate:10001", "invalid_argument", "function truncate"),
            ("|date:%Y-%q", "invalid_argument", "function date: unknown format %q"),
            ("|date:%Y%", "invalid_argument", "a lone % at the end"),
            ("|date:%Y,Mars/Olympus", "invalid_argument", "function date: unknown zone \"Mars/Olympus\""),
            ("|date", "invalid_argument", "function date: needs a format"),
            ("|date:%Y,UTC,x", "invalid_argument", "function date"),
            ("|map:approved", "invalid_argument", "function map: \"approved\" is not a pair"),
            ("|map", "invalid_argument", "function map: needs pairs"),
            ("|map:*=1,*=2", "invalid_argument", "two fallbacks"),
            ("|default", "invalid_argument", "function default: needs an argument"),
            ("|default:a{b", "invalid_argument", "may not contain { or }"),
        ];
        for (chain, code, words) in cases {
            let err = refused(chain);
            assert_eq!(err.code, *code, "{chain}: {}", err.message);
            assert!(err.message.contains(words), "{chain}: {}", err.message);
        }
    }

    #[test]
    fn zones_parse_utc_and_iana_names() {
        assert_eq!(run("|date:%H,UTC", "2024-05-01T12:00:00Z"), "12");
        assert_eq!(run("|date:%H,America/New_York", "2024-05-01T12:00:00Z"), "08");
        assert_eq!(run("|date:%H,America/New_York", "2024-01-01T12:00:00Z"), "07");
    }
}
