//! `LogStore`: entries as JSON plus the columns the `GET /logs` filters need; delivery
//! markers in `delivered`.

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::{decode, encode, millis, nanos, EmbeddedStore};
use crate::domain::firing::Firing;
use crate::domain::log::{Cursor, LogEntry, LogFilter, LogPage, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT};
use crate::ports::{LogStore, StoreResult};

/// A log entry encoded for its row.
struct LogRow {
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
    fn new(entry: &LogEntry) -> StoreResult<Self> {
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
    fn insert(&self, conn: &Connection) -> StoreResult<()> {
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
        let now = Utc::now();
        let (now_ms, cutoff) = (millis(now), millis(self.cutoff(now)));
        self.write(move |conn| {
            // An expired marker no longer counts (reads ignore it too).
            conn.prepare_cached("DELETE FROM delivered WHERE delivery_id = ?1 AND created_at < ?2")?
                .execute((&delivery_id, cutoff))?;
            let marked = conn
                .prepare_cached("INSERT OR IGNORE INTO delivered (delivery_id, created_at) VALUES (?1, ?2)")?
                .execute((&delivery_id, now_ms))?;
            if marked == 0 {
                return Ok(false);
            }
            row.insert(conn)?;
            Ok(true)
        })
        .await
    }

    async fn is_delivered(&self, delivery_id: &str) -> StoreResult<bool> {
        let delivery_id = delivery_id.to_string();
        let cutoff = millis(self.cutoff(Utc::now()));
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?2")?
                .exists((&delivery_id, cutoff))?)
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LogEntry>> {
        let id = id.to_string();
        let cutoff = nanos(self.cutoff(Utc::now()));
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
        let (sql, params) = query_sql(filter, nanos(self.cutoff(Utc::now())), limit);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows: Vec<(String, String, Option<String>)> = stmt
                .query_map(rusqlite::params_from_iter(params), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<Result<_, _>>()?;
            // One row more than the page tells whether another page follows.
            let has_more = rows.len() > limit;
            let mut items = Vec::with_capacity(limit.min(rows.len()));
            let mut last_id = None;
            for (id, body, firing) in rows.into_iter().take(limit) {
                items.push(read_entry(&body, firing.as_deref())?);
                last_id = Some(id);
            }
            let next_cursor = last_id.filter(|_| has_more).map(|last_id| Cursor { last_id }.encode());
            Ok(LogPage { items, next_cursor })
        })
        .await
    }
}

/// The newest-first query for a filter; every set filter becomes a `WHERE` term.
fn query_sql(filter: &LogFilter, cutoff_ns: i64, limit: usize) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT id, body, firing FROM logs WHERE fired_at_ns >= ?");
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
    if let Some(v) = filter.from {
        term("fired_at_ns >= ?", Value::Integer(nanos(v)));
    }
    if let Some(v) = filter.to {
        term("fired_at_ns <= ?", Value::Integer(nanos(v)));
    }
    if let Some(cursor) = &filter.cursor {
        term("id < ?", Value::Text(cursor.last_id.clone()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    params.push(Value::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    (sql, params)
}
