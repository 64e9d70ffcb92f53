//! `LogStore`: entries as JSON plus the columns the `GET /logs` filters need; delivery
//! markers in `delivered`.

use async_trait::async_trait;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::{decode, encode, millis, nanos, EmbeddedStore};
use crate::domain::firing::Firing;
use crate::domain::log::{Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPage, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT};
use crate::domain::stats::HourCounts;
use crate::ports::{LogStore, ReplayState, StoreResult};

/// A log entry encoded for its row.
pub(super) struct LogRow {
    id: String,
    postback_id: String,
    transaction_id: String,
    kind: &'static str,
    offer_id: Option<String>,
    publisher_id: Option<String>,
    status_code: Option<u16>,
    outcome: &'static str,
    fired_at_ns: i64,
    body: String,
    firing: Option<String>,
}

impl LogRow {
    pub(super) fn new(entry: &LogEntry) -> StoreResult<Self> {
        Ok(Self {
            id: entry.id.clone(),
            postback_id: entry.postback_id.clone(),
            transaction_id: entry.transaction_id.clone(),
            kind: entry.kind.as_str(),
            offer_id: entry.offer_id.clone(),
            publisher_id: entry.publisher_id.clone(),
            status_code: entry.status_code,
            outcome: entry.outcome.as_str(),
            fired_at_ns: nanos(entry.fired_at),
            body: encode(entry, "log entry")?,
            firing: entry.firing.as_ref().map(|f| encode(f, "firing")).transpose()?,
        })
    }

    /// Insert unless an entry with this id exists (appending the same entry twice is
    /// harmless).
    pub(super) fn insert(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO logs (id, postback_id, transaction_id, kind, offer_id, publisher_id, status_code, \
             outcome, fired_at_ns, body, firing) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(rusqlite::params![
            self.id,
            self.postback_id,
            self.transaction_id,
            self.kind,
            self.offer_id,
            self.publisher_id,
            self.status_code,
            self.outcome,
            self.fired_at_ns,
            self.body,
            self.firing,
        ])?;
        Ok(())
    }
}

/// Mark the delivery id delivered and log its entry, unless it was delivered already
/// (then nothing is written and the answer is `false`).
pub(super) fn mark_delivered_and_log(
    conn: &Connection,
    row: &LogRow,
    delivery_id: &str,
    now_ms: i64,
    cutoff: i64,
) -> StoreResult<bool> {
    // One statement: a new marker, or an expired one (reads ignore it too) renewed; a
    // live one changes nothing.
    let marked = conn
        .prepare_cached(
            "INSERT INTO delivered (delivery_id, created_at) VALUES (?1, ?2) ON CONFLICT (delivery_id) \
             DO UPDATE SET created_at = excluded.created_at WHERE delivered.created_at < ?3",
        )?
        .execute((delivery_id, now_ms, cutoff))?;
    if marked == 0 {
        return Ok(false);
    }
    row.insert(conn)?;
    Ok(true)
}

fn read_entry(body: &str, firing: Option<&str>) -> StoreResult<LogEntry> {
    let mut entry: LogEntry = decode(body, "log entry")?;
    entry.firing = firing.map(|f| decode::<Firing>(f, "firing")).transpose()?;
    Ok(entry)
}

#[async_trait]
impl LogStore for EmbeddedStore {
    async fn append(&self, entries: &[LogEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let rows = entries.iter().map(LogRow::new).collect::<StoreResult<Vec<_>>>()?;
        self.write(move |conn| rows.iter().try_for_each(|row| row.insert(conn))).await
    }

    async fn record_delivered(&self, entry: &LogEntry) -> StoreResult<bool> {
        let row = LogRow::new(entry)?;
        let delivery_id = entry.delivery_id.clone();
        let now = self.now();
        let (now_ms, cutoff) = (millis(now), millis(self.cutoff(now)));
        // A marker written apart from its queue row's settle: that row (if queued) must
        // get the lease-time delivered check, which a payload kept in memory would skip.
        self.index().forget_payloads();
        self.write(move |conn| mark_delivered_and_log(conn, &row, &delivery_id, now_ms, cutoff)).await
    }

    async fn is_delivered(&self, delivery_id: &str) -> StoreResult<bool> {
        let delivery_id = delivery_id.to_string();
        let cutoff = millis(self.cutoff(self.now()));
        self.read_point(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?2")?
                .exists((&delivery_id, cutoff))?)
        })
        .await
    }

    /// One range read of `logs_by_postback` (postback_id, fired_at_ns), grouped by hour
    /// and outcome.
    async fn hourly_stats(
        &self,
        postback_id: &str,
        hours: &[DateTime<Utc>],
    ) -> StoreResult<HashMap<DateTime<Utc>, HourCounts>> {
        let (Some(first), Some(last)) = (hours.iter().min(), hours.iter().max()) else {
            return Ok(HashMap::new());
        };
        let from_ns = nanos(*first).max(nanos(self.cutoff(self.now())));
        let to_ns = nanos(*last + chrono::TimeDelta::hours(1));
        let wanted: Vec<DateTime<Utc>> = hours.to_vec();
        let postback_id = postback_id.to_string();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT fired_at_ns / 3600000000000, outcome, count(*),                  coalesce(sum(json_extract(body, '$.duration_ms')), 0) FROM logs                  WHERE postback_id = ?1 AND fired_at_ns >= ?2 AND fired_at_ns < ?3                  AND json_extract(body, '$.test') = 0 GROUP BY 1, 2",
            )?;
            let rows = statement.query_map(rusqlite::params![postback_id, from_ns, to_ns], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?))
            })?;
            let mut counts: HashMap<DateTime<Utc>, HourCounts> = HashMap::new();
            for row in rows {
                let (hour, outcome, n, duration) = row?;
                let Some(hour) = DateTime::from_timestamp(hour * 3600, 0).filter(|h| wanted.contains(h)) else {
                    continue;
                };
                let (n, duration) = (u64::try_from(n).unwrap_or_default(), u64::try_from(duration).unwrap_or_default());
                let c = counts.entry(hour).or_default();
                match outcome.as_str() {
                    "delivered" => c.delivered += n,
                    "failed" => c.failed += n,
                    "retrying" => c.retrying += n,
                    _ => c.skipped += n,
                }
                if outcome != "skipped" {
                    c.attempts += n;
                    c.duration_ms_sum += duration;
                }
            }
            Ok(counts)
        })
        .await
    }

    /// Point reads of `delivered` and `replayed` by their keys, in one read.
    async fn replay_states(&self, delivery_ids: &[String]) -> StoreResult<HashMap<String, ReplayState>> {
        let ids = delivery_ids.to_vec();
        let cutoff = millis(self.cutoff(self.now()));
        self.read(move |conn| {
            let mut delivered =
                conn.prepare_cached("SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?2")?;
            let mut replayed =
                conn.prepare_cached("SELECT fired_at_ns, entry_id FROM replayed WHERE delivery_id = ?1")?;
            let mut states = HashMap::new();
            for id in ids {
                let state = ReplayState {
                    delivered: delivered.exists((&id, cutoff))?,
                    replayed: replayed
                        .query_row([&id], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
                        .optional()?
                        .map(|(ns, last_id)| Cursor { fired_at: DateTime::from_timestamp_nanos(ns), last_id }),
                };
                if state != ReplayState::default() {
                    states.insert(id, state);
                }
            }
            Ok(states)
        })
        .await
    }

    /// Upsert that keeps the newest position per delivery id.
    async fn mark_replayed(&self, entries: &[LogEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, i64, String)> =
            entries.iter().map(|e| (e.delivery_id.clone(), nanos(e.fired_at), e.id.clone())).collect();
        let now = millis(self.now());
        self.write(move |conn| {
            let mut upsert = conn.prepare_cached(
                "INSERT INTO replayed (delivery_id, fired_at_ns, entry_id, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (delivery_id) DO UPDATE SET fired_at_ns = excluded.fired_at_ns, \
                 entry_id = excluded.entry_id, created_at = excluded.created_at \
                 WHERE (excluded.fired_at_ns, excluded.entry_id) > (replayed.fired_at_ns, replayed.entry_id)",
            )?;
            for (delivery_id, fired_at_ns, entry_id) in &rows {
                upsert.execute(rusqlite::params![delivery_id, fired_at_ns, entry_id, now])?;
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LogEntry>> {
        let id = id.to_string();
        let cutoff = nanos(self.cutoff(self.now()));
        self.read(move |conn| {
            let row: Option<(String, Option<String>)> = conn
                .prepare_cached("SELECT body, firing FROM logs WHERE id = ?1 AND fired_at_ns >= ?2")?
                .query_row((&id, cutoff), |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            row.map(|(body, firing)| read_entry(&body, firing.as_deref())).transpose()
        })
        .await
    }

    async fn query(&self, filter: &LogFilter) -> StoreResult<LogPage> {
        let limit = match filter.limit {
            0 => DEFAULT_LOG_LIMIT,
            n => n.min(MAX_LOG_LIMIT),
        };
        let (sql, params) = query_sql(filter, nanos(self.cutoff(self.now())), limit);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows: Vec<(String, Option<String>)> = stmt
                .query_map(rusqlite::params_from_iter(params), |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            // One row more than the page tells whether another page follows.
            let has_more = rows.len() > limit;
            let mut items = Vec::with_capacity(limit.min(rows.len()));
            for (body, firing) in rows.into_iter().take(limit) {
                items.push(read_entry(&body, firing.as_deref())?);
            }
            let next_cursor = items.last().filter(|_| has_more).map(|last| Cursor::after(last).encode());
            Ok(LogPage { items, next_cursor })
        })
        .await
    }
}

/// The listing's query for a filter: newest first by `fired_at`, ties by id (both
/// descending, as the indexes `logs_by_*` on `(…, fired_at_ns, id)` read backwards);
/// every set filter becomes a `WHERE` term, the cursor a row-value bound.
fn query_sql(filter: &LogFilter, cutoff_ns: i64, limit: usize) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT body, firing FROM logs WHERE fired_at_ns >= ?");
    let mut params = vec![Value::Integer(cutoff_ns)];
    let mut term = |sql_term: &str, value: Value| {
        sql.push_str(" AND ");
        sql.push_str(sql_term);
        params.push(value);
    };
    if let Some(v) = &filter.postback_id {
        term("postback_id = ?", Value::Text(v.clone()));
    }
    if let Some(v) = &filter.transaction_id {
        term("transaction_id = ?", Value::Text(v.clone()));
    }
    if let Some(v) = filter.kind {
        term("kind = ?", Value::Text(v.as_str().into()));
    }
    if let Some(v) = &filter.offer_id {
        term("offer_id = ?", Value::Text(v.clone()));
    }
    if let Some(v) = &filter.publisher_id {
        term("publisher_id = ?", Value::Text(v.clone()));
    }
    if let Some(v) = filter.status_code {
        term("status_code = ?", Value::Integer(i64::from(v)));
    }
    if let Some(v) = filter.outcome {
        term("outcome = ?", Value::Text(v.as_str().into()));
    }
    for p in &filter.predicates {
        let value = match p.column() {
            LogColumn::StatusCode => Value::Integer(p.value().parse().unwrap_or(0)),
            LogColumn::Test => Value::Integer(i64::from(p.value() == "true")),
            _ => Value::Text(p.value().to_string()),
        };
        let column = predicate_column(p.column());
        // `IS NOT` (unlike `<>`) is true where the column is NULL: *is not* keeps entries
        // without a value. instr() takes the needle literally (no LIKE wildcards).
        let sql_term = match p.op() {
            LogOp::Is => format!("{column} = ?"),
            LogOp::IsNot => format!("{column} IS NOT ?"),
            LogOp::Contains => format!("instr({column}, ?) > 0"),
        };
        term(&sql_term, value);
    }
    if let Some(v) = filter.from {
        term("fired_at_ns >= ?", Value::Integer(nanos(v)));
    }
    if let Some(v) = filter.to {
        term("fired_at_ns <= ?", Value::Integer(nanos(v)));
    }
    if let Some(cursor) = &filter.cursor {
        sql.push_str(" AND (fired_at_ns, id) < (?, ?)");
        params.push(Value::Integer(nanos(cursor.fired_at)));
        params.push(Value::Text(cursor.last_id.clone()));
    }
    sql.push_str(" ORDER BY fired_at_ns DESC, id DESC LIMIT ?");
    params.push(Value::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    (sql, params)
}

/// A predicate's column: the row's own column where there is one, else the field of the
/// entry's JSON (`test` reads as 1/0). These filters are not index-served: they narrow
/// whichever index the listing reads.
fn predicate_column(column: LogColumn) -> &'static str {
    match column {
        LogColumn::PostbackId => "postback_id",
        LogColumn::TransactionId => "transaction_id",
        LogColumn::Type => "kind",
        LogColumn::OfferId => "offer_id",
        LogColumn::PublisherId => "publisher_id",
        LogColumn::StatusCode => "status_code",
        LogColumn::Outcome => "outcome",
        LogColumn::PostbackName => "json_extract(body, '$.postback_name')",
        LogColumn::DeliveryId => "json_extract(body, '$.delivery_id')",
        LogColumn::EventId => "json_extract(body, '$.event_id')",
        LogColumn::Url => "json_extract(body, '$.url')",
        LogColumn::Error => "json_extract(body, '$.error')",
        LogColumn::ResponseBody => "json_extract(body, '$.response_body')",
        LogColumn::Test => "json_extract(body, '$.test')",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::embedded::schema::open_writer;
    use crate::domain::event::EventType;
    use crate::domain::log::LogPredicate;

    /// Every listing reads an index in its order: no table scan, no sort of the matches.
    #[test]
    fn listings_read_an_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("db.sqlite"), "NORMAL").unwrap();
        let t = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let cursor = Some(Cursor { fired_at: t, last_id: "0190a0a0-0000-7000-8000-000000000000".into() });
        let cases = [
            ("everything", LogFilter::default(), "logs_by_fired_at"),
            ("postback", LogFilter { postback_id: Some("pb".into()), ..LogFilter::default() }, "logs_by_postback"),
            (
                "transaction",
                LogFilter { transaction_id: Some("T".into()), ..LogFilter::default() },
                "logs_by_transaction",
            ),
            ("cursor", LogFilter { cursor: cursor.clone(), ..LogFilter::default() }, "logs_by_fired_at"),
            (
                "postback, range and cursor",
                LogFilter {
                    postback_id: Some("pb".into()),
                    from: Some(t),
                    to: Some(t),
                    cursor,
                    ..LogFilter::default()
                },
                "logs_by_postback",
            ),
            ("type", LogFilter { kind: Some(EventType::Click), ..LogFilter::default() }, "logs_by_fired_at"),
            (
                "postback and predicates",
                LogFilter {
                    postback_id: Some("pb".into()),
                    predicates: vec![
                        LogPredicate::new(LogColumn::Url, LogOp::Contains, "aff").unwrap(),
                        LogPredicate::new(LogColumn::StatusCode, LogOp::IsNot, "200").unwrap(),
                    ],
                    ..LogFilter::default()
                },
                "logs_by_postback",
            ),
            (
                "predicates only",
                LogFilter {
                    predicates: vec![LogPredicate::new(LogColumn::TransactionId, LogOp::IsNot, "T").unwrap()],
                    ..LogFilter::default()
                },
                "logs_by_fired_at",
            ),
        ];
        for (name, filter, index) in cases {
            let (sql, params) = query_sql(&filter, 0, 10);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(plan.iter().any(|step| step.contains(index)), "{name}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{name} sorts: {plan:?}");
        }
    }
}
