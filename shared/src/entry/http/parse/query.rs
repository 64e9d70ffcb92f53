//! The filters of `GET /postbacks` and `GET /logs`, from query pairs. Hand-written: a
//! repeated parameter is refused rather than one of them winning, an empty value means
//! "not set", and every error names the parameter.

use chrono::{DateTime, Utc};

use crate::domain::event::EventType;
use crate::domain::log::{
    Cursor, LogColumn, LogFilter, LogOp, LogPredicate, Outcome, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT,
};
use crate::domain::ValidationError;
use crate::service::config_api::PostbackFilter;

/// The parameters of `GET /logs` other than the column filters.
const LOG_PAGING_PARAMS: &[&str] = &["from", "to", "limit", "cursor"];

/// Longest id accepted as a filter value; longer ones cannot match anything stored.
const MAX_FILTER_ID_LEN: usize = 512;

/// `GET /postbacks?type=&offer_id=&publisher_id=&enabled=`.
pub fn postback_filter(pairs: &[(String, String)]) -> Result<PostbackFilter, ValidationError> {
    let mut filter = PostbackFilter::default();
    for (name, value) in pairs {
        match name.as_str() {
            "type" => {
                filter.kind = Some(EventType::parse(value).ok_or_else(|| {
                    ValidationError::invalid("type", "type must be impression, click, conversion, event or alert")
                })?)
            }
            "offer_id" => filter.offer_id = Some(value.clone()),
            "publisher_id" => filter.publisher_id = Some(value.clone()),
            "approval" => {
                filter.approval = Some(crate::domain::partner::ApprovalState::parse(value).ok_or_else(|| {
                    ValidationError::invalid("approval", "approval must be approved, pending or rejected")
                })?)
            }
            "enabled" => {
                filter.enabled = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ValidationError::invalid("enabled", "enabled must be true or false")),
                })
            }
            other => {
                return Err(ValidationError::new(
                    "unknown_field",
                    other,
                    format!("unknown filter {other:?}; use type, offer_id, publisher_id, enabled or approval"),
                ))
            }
        }
    }
    Ok(filter)
}

/// `GET /postbacks/{id}/stats?hours=N`: 1..=168, default 24.
pub fn stats_hours(pairs: &[(String, String)]) -> Result<u32, ValidationError> {
    use crate::domain::stats::{DEFAULT_HOURS, MAX_HOURS};
    let mut hours = DEFAULT_HOURS;
    for (name, value) in pairs {
        if name != "hours" {
            return Err(ValidationError::new(
                "unknown_field",
                name.as_str(),
                format!("unknown parameter {name:?}; use hours"),
            ));
        }
        hours = value.parse::<u32>().ok().filter(|h| (1..=MAX_HOURS).contains(h)).ok_or_else(|| {
            ValidationError::invalid("hours", format!("hours must be a whole number from 1 to {MAX_HOURS}"))
        })?;
    }
    Ok(hours)
}

/// `GET /logs` query pairs; a bad value is a 400 naming the parameter.
///
/// Every column filter is `col=v` (*is*), `col.not=v` (*is not*) or `col.contains=v`
/// (*contains*, text columns only); all given filters must match (AND), so
/// `url.contains=aff&url.not=https://aff.example/x` narrows twice. An unknown parameter
/// is refused (`unknown_field`) rather than ignored, so a typo such as `status=500`
/// cannot silently widen the result; the very same parameter twice is refused
/// (`duplicate`) rather than guessing which one counts. An empty value means "not set",
/// as HTML forms send unset fields (but `.contains` on a non-text column is refused
/// whatever its value).
pub fn log_filter(pairs: &[(String, String)]) -> Result<LogFilter, ValidationError> {
    let mut filter = LogFilter { limit: DEFAULT_LOG_LIMIT, ..LogFilter::default() };
    let mut seen: Vec<&str> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let name = name.as_str();
        let column = if LOG_PAGING_PARAMS.contains(&name) { None } else { Some(log_column(name)?) };
        if seen.contains(&name) {
            return Err(ValidationError::new("duplicate", name, format!("{name} is given more than once")));
        }
        seen.push(name);
        if let Some((column, op)) = column {
            if value.is_empty() && (op != LogOp::Contains || column.is_text()) {
                continue;
            }
            log_column_filter(&mut filter, column, op, name, value)?;
            continue;
        }
        if value.is_empty() {
            continue;
        }
        match name {
            "from" => filter.from = Some(time_value(name, value)?),
            "to" => filter.to = Some(time_value(name, value)?),
            "limit" => {
                filter.limit =
                    value.parse::<usize>().ok().filter(|n| (1..=MAX_LOG_LIMIT).contains(n)).ok_or_else(|| {
                        ValidationError::invalid(name, format!("limit must be a number 1-{MAX_LOG_LIMIT}"))
                    })?
            }
            "cursor" => filter.cursor = Some(Cursor::decode(value)?),
            _ => {} // LOG_PAGING_PARAMS and this match list the same names.
        }
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from > to {
            return Err(ValidationError::invalid("from", "from must not be after to"));
        }
    }
    Ok(filter)
}

/// A column filter's parameter name: `col`, `col.not` or `col.contains`.
fn log_column(name: &str) -> Result<(LogColumn, LogOp), ValidationError> {
    let (base, op) = match name.rsplit_once('.') {
        Some((base, "not")) => (base, LogOp::IsNot),
        Some((base, "contains")) => (base, LogOp::Contains),
        Some(_) => ("", LogOp::Is), // no such suffix: unknown below
        None => (name, LogOp::Is),
    };
    LogColumn::parse(base).map(|column| (column, op)).ok_or_else(|| {
        ValidationError::new(
            "unknown_field",
            name,
            format!(
                "unknown parameter {name:?}; filters are COLUMN, COLUMN.not or COLUMN.contains with COLUMN one of {}, \
                 and {}",
                LogColumn::NAMES.join(", "),
                LOG_PAGING_PARAMS.join(", ")
            ),
        )
    })
}

/// *is* on a typed field (the ones indexes may serve) sets it; anything else is a
/// predicate.
fn log_column_filter(
    filter: &mut LogFilter,
    column: LogColumn,
    op: LogOp,
    name: &str,
    value: &str,
) -> Result<(), ValidationError> {
    if op == LogOp::Is {
        match column {
            LogColumn::PostbackId => filter.postback_id = Some(id_value(name, value)?),
            LogColumn::TransactionId => filter.transaction_id = Some(id_value(name, value)?),
            LogColumn::OfferId => filter.offer_id = Some(id_value(name, value)?),
            LogColumn::PublisherId => filter.publisher_id = Some(id_value(name, value)?),
            LogColumn::Type => {
                filter.kind = Some(EventType::parse(value).ok_or_else(|| {
                    ValidationError::invalid(name, "type must be impression, click, conversion, event or alert")
                })?)
            }
            LogColumn::StatusCode => {
                filter.status_code = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|code| (100..=599).contains(code))
                        .ok_or_else(|| ValidationError::invalid(name, "status_code must be a number 100-599"))?,
                )
            }
            LogColumn::Outcome => {
                filter.outcome = Some(Outcome::parse(value).ok_or_else(|| {
                    ValidationError::invalid(name, "outcome must be delivered, failed, retrying or skipped")
                })?)
            }
            _ => {
                filter.predicates.push(LogPredicate::new(column, op, value)?);
            }
        }
        return Ok(());
    }
    filter.predicates.push(LogPredicate::new(column, op, value)?);
    Ok(())
}

fn id_value(name: &str, value: &str) -> Result<String, ValidationError> {
    if value.len() > MAX_FILTER_ID_LEN {
        return Err(ValidationError::new(
            "too_long",
            name,
            format!("{name} must be at most {MAX_FILTER_ID_LEN} bytes"),
        ));
    }
    Ok(value.to_string())
}

fn time_value(name: &str, value: &str) -> Result<DateTime<Utc>, ValidationError> {
    DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        ValidationError::invalid(name, format!("{name} must be an RFC 3339 time, e.g. 2024-05-01T12:00:00Z"))
    })
}
