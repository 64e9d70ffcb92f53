//! `LogStore` on DynamoDB. Entries are keyed by `id` and listed newest first by
//! `fired_at` (ties by id, descending) through one of three indexes, all sorted by
//! `fired_key` = `fired_at` as fixed-width RFC 3339 UTC with nanoseconds + `#` + id:
//! `by_transaction`, `by_postback`, or — with neither filter — `newest`, whose
//! partition key spreads entries over `LOG_SHARDS` shards (`all#0`..) that a query
//! merges. `from`/`to` become key conditions on `fired_key`; the other filters are a
//! FilterExpression. The cursor is the last entry's `fired_at` and id, i.e. its
//! `fired_key`: every index resumes below it.
//!
//! Delivered markers (`delivered#<delivery id>`) share the table; they carry no index
//! attributes, so no listing sees them.

use std::collections::{BTreeMap, VecDeque};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::try_join_all;

use super::error::{build_error, unavailable};
use super::item::{
    batch_get, batch_put, doc, expires_at, get_consistent, get_i64, get_s, is_expired, n, s, to_json, Item, DOC,
    EXPIRES_AT,
};
use super::resources::{LOGS_BY_POSTBACK, LOGS_BY_TRANSACTION, LOGS_NEWEST, LOGS_SORT_KEY};
use crate::domain::firing::Firing;
use crate::domain::log::{
    Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPage, LogPredicate, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT,
};
use crate::domain::stats::{hour_of, HourCounts};
use crate::ports::{LogStore, ReplayState, StoreError, StoreResult};

/// Shards of the `newest` index: each index partition takes ~1000 writes/s, so four
/// carry ~4000 log entries a second; a listing without a postback or transaction filter
/// queries all four and merges them.
pub const LOG_SHARDS: u32 = 4;

const ID: &str = "id";
const FIRING: &str = "firing";
const POSTBACK_ID: &str = "postback_id";
const TRANSACTION_ID: &str = "transaction_id";
const SHARD: &str = "log_shard";
const TYPE: &str = "type";
const OFFER_ID: &str = "offer_id";
const PUBLISHER_ID: &str = "publisher_id";
const STATUS_CODE: &str = "status_code";
const OUTCOME: &str = "outcome";
const TEST: &str = "test";
/// The indexes' sort key (`fired_key`).
const FIRED_KEY: &str = LOGS_SORT_KEY;

const DELIVERED_PREFIX: &str = "delivered#";
/// Replay markers (`replayed#<delivery id>`): the `fired_key` of the newest entry of the
/// delivery id a bulk replay queued again, in `replayed_key` (not `fired_key`: no
/// index may list them).
const REPLAYED_PREFIX: &str = "replayed#";
const REPLAYED_KEY: &str = "replayed_key";
/// Marker reads and writes in flight at once during a replay selection.
const MARKER_CONCURRENCY: usize = 16;
/// Ids of the per-postback hourly counter items.
const STATS_PREFIX: &str = "stats#";
/// A delivered marker outlives any redelivery of the message that delivered: SQS keeps
/// messages 14 days (and a DLQ redrive can bring one back within that time).
const MIN_MARKER_TTL: chrono::Duration = chrono::Duration::days(15);
/// Items evaluated per Query page when filters may discard many of them (a page also
/// stops at 1 MB read).
const FILTERED_PAGE: i32 = 1000;
/// Query pages one listing reads at most (over all its sources): with filters that
/// match little, a request reads at most this many pages (≤ 1 MB each), then answers
/// what it found with a cursor where it stopped, even if the page is short or empty.
const MAX_QUERY_PAGES: usize = 8;

/// How much one listing may read: pages, and items evaluated per filtered page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBound {
    pub pages: usize,
    pub page_items: i32,
}

impl Default for ReadBound {
    fn default() -> Self {
        ReadBound { pages: MAX_QUERY_PAGES, page_items: FILTERED_PAGE }
    }
}

#[derive(Debug, Clone)]
pub struct DynamoLogStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: chrono::Duration,
    bound: ReadBound,
}

fn shard_of(id: &str) -> u32 {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash % LOG_SHARDS
}

/// `t` clamped to the years 0000-9999, whose RFC 3339 form has the fixed width that
/// makes text order time order.
fn key_time(t: DateTime<Utc>) -> DateTime<Utc> {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z.
    let min = DateTime::from_timestamp(-62_167_219_200, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let max = DateTime::from_timestamp(253_402_300_799, 999_999_999).unwrap_or(DateTime::<Utc>::MAX_UTC);
    t.clamp(min, max)
}

/// `fired_at` as the fixed-width text that sorts like the time:
/// `2026-01-02T03:04:05.123456789Z`.
pub(crate) fn time_key(t: DateTime<Utc>) -> String {
    key_time(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The indexes' sort key of an entry (or of a cursor's position): its `fired_at` key,
/// `#`, its id. Ordered as the listing is: by `fired_at`, then by id.
fn fired_key(fired_at: DateTime<Utc>, id: &str) -> String {
    format!("{}#{id}", time_key(fired_at))
}

/// The sort-key range a listing reads: keys at or above `low` (from `from`), below
/// `high` (the smaller of: the cursor's key, the first key after `to`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRange {
    low: Option<String>,
    high: Option<String>,
}

impl KeyRange {
    fn for_filter(filter: &LogFilter) -> KeyRange {
        // A bare time key sorts before every `time#id` of that time and after every
        // earlier one, so it bounds inclusively from below and exclusively from above.
        let low = filter.from.map(time_key);
        let to_high = filter.to.and_then(|t| t.checked_add_signed(chrono::Duration::nanoseconds(1))).map(time_key);
        let cursor_high = filter.cursor.as_ref().map(|c| fired_key(c.fired_at, &c.last_id));
        let high = match (to_high, cursor_high) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        KeyRange { low, high }
    }

    fn is_empty(&self) -> bool {
        matches!((&self.low, &self.high), (Some(l), Some(h)) if l >= h)
    }

    fn admits(&self, key: &str) -> bool {
        self.low.as_deref().is_none_or(|l| key >= l) && self.high.as_deref().is_none_or(|h| key < h)
    }

    /// The sort-key part of a KeyConditionExpression, with its values.
    fn condition(&self) -> (Option<&'static str>, Vec<(&'static str, String)>) {
        match (&self.low, &self.high) {
            (None, None) => (None, vec![]),
            (Some(l), None) => (Some("#fk >= :lo"), vec![(":lo", l.clone())]),
            (None, Some(h)) => (Some("#fk < :hi"), vec![(":hi", h.clone())]),
            // BETWEEN is inclusive; the exclusive upper bound is then dropped by `admits`.
            (Some(l), Some(h)) => (Some("#fk BETWEEN :lo AND :hi"), vec![(":lo", l.clone()), (":hi", h.clone())]),
        }
    }
}

/// One index partition read newest first, a page at a time.
struct Source {
    index: &'static str,
    hash_attribute: &'static str,
    hash_value: String,
    /// Entries read and not merged yet, with their sort keys.
    buffer: VecDeque<(String, LogEntry)>,
    start_key: Option<Item>,
    /// The sort key of the last item evaluated (matching or not): everything of this
    /// source at or above it has been seen.
    read_down_to: Option<String>,
    done: bool,
}

/// The Query parts every source of one listing shares.
struct Plan<'a> {
    filter: &'a LogFilter,
    range: KeyRange,
    filter_expression: String,
    names: BTreeMap<String, String>,
    values: BTreeMap<String, AttributeValue>,
    page: i32,
}

impl<'a> Plan<'a> {
    fn new(filter: &'a LogFilter, index: &str, want: usize, page_items: i32, now: DateTime<Utc>) -> Plan<'a> {
        let mut conditions = vec!["#exp > :now".to_string()];
        let mut names = BTreeMap::from([("#exp".to_string(), EXPIRES_AT.to_string())]);
        let mut values = BTreeMap::from([(":now".to_string(), n(now.timestamp()))]);
        let mut add = |attribute: &str, op: &str, value: AttributeValue| {
            let i = names.len();
            names.insert(format!("#f{i}"), attribute.to_string());
            values.insert(format!(":f{i}"), value);
            conditions.push(format!("#f{i} {op} :f{i}"));
        };
        if let (Some(pb), false) = (&filter.postback_id, index == LOGS_BY_POSTBACK) {
            add(POSTBACK_ID, "=", s(pb));
        }
        if let (Some(tx), false) = (&filter.transaction_id, index == LOGS_BY_TRANSACTION) {
            add(TRANSACTION_ID, "=", s(tx));
        }
        if let Some(kind) = filter.kind {
            add(TYPE, "=", s(kind.as_str()));
        }
        if let Some(offer) = &filter.offer_id {
            add(OFFER_ID, "=", s(offer));
        }
        if let Some(publisher) = &filter.publisher_id {
            add(PUBLISHER_ID, "=", s(publisher));
        }
        if let Some(code) = filter.status_code {
            add(STATUS_CODE, "=", n(code));
        }
        if let Some(outcome) = filter.outcome {
            add(OUTCOME, "=", s(outcome.as_str()));
        }
        // Only projected columns can be compared in the index; the text columns are
        // compared in memory on the entries read from the table (`read_page`).
        let mut in_memory = false;
        for p in &filter.predicates {
            let Some(attribute) = predicate_attribute(p.column()) else {
                in_memory = true;
                continue;
            };
            let i = names.len();
            names.insert(format!("#f{i}"), attribute.to_string());
            values.insert(format!(":f{i}"), predicate_value(p));
            conditions.push(match p.op() {
                LogOp::Is => format!("#f{i} = :f{i}"),
                // `<>` is false where the attribute is missing; *is not* keeps those.
                LogOp::IsNot => format!("(attribute_not_exists(#f{i}) OR #f{i} <> :f{i})"),
                LogOp::Contains => format!("contains(#f{i}, :f{i})"),
            });
        }
        let filtered = conditions.len() > 1 || in_memory;
        let want = i32::try_from(want).unwrap_or(page_items);
        Plan {
            filter,
            range: KeyRange::for_filter(filter),
            filter_expression: conditions.join(" AND "),
            names,
            values,
            page: if filtered { page_items.max(want) } else { want },
        }
    }
}

impl DynamoLogStore {
    /// `retention` is how long entries live (`LOG_RETENTION_DAYS`).
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, retention: chrono::Duration) -> Self {
        Self { client, table: table.to_string(), retention, bound: ReadBound::default() }
    }

    /// Another read bound (tests use a tiny one to see listings stop and resume).
    pub fn with_read_bound(mut self, bound: ReadBound) -> Self {
        self.bound = bound;
        self
    }

    fn entry_item(&self, entry: &LogEntry, now: DateTime<Utc>) -> StoreResult<Item> {
        let mut item = Item::from([
            (ID.to_string(), s(&entry.id)),
            (DOC.to_string(), s(to_json(entry, "log entry")?)),
            (SHARD.to_string(), s(format!("all#{}", shard_of(&entry.id)))),
            (TYPE.to_string(), s(entry.kind.as_str())),
            (OUTCOME.to_string(), s(entry.outcome.as_str())),
            (FIRED_KEY.to_string(), s(fired_key(entry.fired_at, &entry.id))),
            (EXPIRES_AT.to_string(), expires_at(now, self.retention)),
        ]);
        // Index key attributes may not be empty strings; an entry without one is simply
        // absent from that index.
        for (name, value) in [(POSTBACK_ID, &entry.postback_id), (TRANSACTION_ID, &entry.transaction_id)] {
            if !value.is_empty() {
                item.insert(name.to_string(), s(value));
            }
        }
        for (name, value) in [(OFFER_ID, &entry.offer_id), (PUBLISHER_ID, &entry.publisher_id)] {
            if let Some(v) = value {
                item.insert(name.to_string(), s(v));
            }
        }
        if let Some(code) = entry.status_code {
            item.insert(STATUS_CODE.to_string(), n(code));
        }
        // The text columns (url, error, response body, ...) are only in `doc`: listings
        // compare them in memory, so they are not stored twice.
        item.insert(TEST.to_string(), AttributeValue::Bool(entry.test));
        // The entry's serialized form leaves the firing out (it is not API output).
        if let Some(firing) = &entry.firing {
            item.insert(FIRING.to_string(), s(to_json(firing, "log entry firing")?));
        }
        Ok(item)
    }

    fn parse_entry(item: &Item) -> StoreResult<LogEntry> {
        let mut entry: LogEntry = doc(item, "log entry")?;
        if let Some(text) = get_s(item, FIRING) {
            let firing: Firing =
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("log entry firing: {e}")))?;
            entry.firing = Some(firing);
        }
        Ok(entry)
    }

    /// The counter item of one postback and hour (`GET /postbacks/{id}/stats`). It has
    /// no index attributes, so no listing sees it.
    fn stats_id(postback_id: &str, hour: DateTime<Utc>) -> String {
        format!("{STATS_PREFIX}{postback_id}#{}", hour.format("%Y-%m-%dT%H"))
    }

    /// `ADD` the counts to the hour's counter item (created by the first add) and renew
    /// its expiry: the update expression, its names and its values.
    fn stats_update(&self, c: &HourCounts, now: DateTime<Utc>) -> (String, Vec<(String, String)>, Item) {
        let fields = [
            ("delivered", c.delivered),
            ("failed", c.failed),
            ("retrying", c.retrying),
            ("skipped", c.skipped),
            ("duration_ms_sum", c.duration_ms_sum),
            ("attempts", c.attempts),
        ];
        let adds: Vec<String> = (0..fields.len()).map(|i| format!("#c{i} :c{i}")).collect();
        let mut names: Vec<(String, String)> =
            fields.iter().enumerate().map(|(i, (name, _))| (format!("#c{i}"), name.to_string())).collect();
        names.push(("#exp".into(), EXPIRES_AT.into()));
        let mut values: Item = fields.iter().enumerate().map(|(i, (_, v))| (format!(":c{i}"), n(v))).collect();
        values.insert(":exp".into(), expires_at(now, self.retention));
        (format!("SET #exp = :exp ADD {}", adds.join(", ")), names, values)
    }

    fn stats_key(postback_id: &str, hour: DateTime<Utc>) -> Item {
        Item::from([(ID.to_string(), s(Self::stats_id(postback_id, hour)))])
    }

    /// One `UpdateItem` per (postback, hour) among these entries (test entries and
    /// entries without a postback are not counted).
    async fn count(&self, entries: &[LogEntry], now: DateTime<Utc>) -> StoreResult<()> {
        let mut groups: BTreeMap<(String, DateTime<Utc>), HourCounts> = BTreeMap::new();
        for entry in entries.iter().filter(|e| !e.postback_id.is_empty()) {
            if let Some(c) = HourCounts::of(entry) {
                groups.entry((entry.postback_id.clone(), hour_of(entry.fired_at))).or_default().add(&c);
            }
        }
        try_join_all(groups.iter().map(|((postback_id, hour), c)| async move {
            let (expression, names, values) = self.stats_update(c, now);
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::stats_key(postback_id, *hour)))
                .update_expression(expression)
                .set_expression_attribute_names(Some(names.into_iter().collect()))
                .set_expression_attribute_values(Some(values))
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB UpdateItem stats", e))
        }))
        .await?;
        Ok(())
    }

    fn marker_id(delivery_id: &str) -> String {
        format!("{DELIVERED_PREFIX}{delivery_id}")
    }

    async fn get_item(&self, id: &str) -> StoreResult<Option<Item>> {
        let item =
            get_consistent(&self.client, &self.table, Item::from([(ID.to_string(), s(id))]), "DynamoDB GetItem log")
                .await?;
        Ok(item.filter(|item| !is_expired(item, Utc::now())))
    }

    /// Read the next page of `source` (one Query call).
    async fn read_page(&self, source: &mut Source, plan: &Plan<'_>) -> StoreResult<()> {
        {
            let (range_condition, range_values) = plan.range.condition();
            let key_condition = match range_condition {
                Some(c) => format!("#hk = :hk AND {c}"),
                None => "#hk = :hk".to_string(),
            };
            // DynamoDB rejects names and values the expressions do not use.
            let key_name = range_condition.map(|_| FIRED_KEY.to_string());
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(source.index)
                .key_condition_expression(key_condition)
                .filter_expression(&plan.filter_expression)
                .expression_attribute_names("#hk", source.hash_attribute)
                .expression_attribute_values(":hk", s(&source.hash_value))
                .scan_index_forward(false)
                .limit(plan.page)
                .set_exclusive_start_key(source.start_key.take());
            for (k, v) in &plan.names {
                query = query.expression_attribute_names(k, v);
            }
            for (k, v) in &plan.values {
                query = query.expression_attribute_values(k, v.clone());
            }
            if let Some(name) = key_name {
                query = query.expression_attribute_names("#fk", name);
            }
            for (k, v) in range_values {
                query = query.expression_attribute_values(k, s(v));
            }
            let page = query.send().await.map_err(|e| unavailable("DynamoDB Query logs", e))?;
            // The index holds keys and filter attributes only: read the entries it kept
            // from the table (strongly consistent, 100 keys a call), in index order.
            let kept: Vec<(String, String)> = page
                .items()
                .iter()
                .filter_map(|item| Some((get_s(item, FIRED_KEY)?.to_string(), get_s(item, ID)?.to_string())))
                .filter(|(key, _)| plan.range.admits(key))
                .collect();
            let keys: Vec<Item> = kept.iter().map(|(_, id)| Item::from([(ID.to_string(), s(id))])).collect();
            let mut found: std::collections::HashMap<String, Item> = batch_get(&self.client, &self.table, keys)
                .await?
                .into_iter()
                .filter_map(|item| Some((get_s(&item, ID)?.to_string(), item)))
                .collect();
            for (key, id) in kept {
                // Gone since the index was read (expired): not listed.
                let Some(item) = found.remove(&id) else { continue };
                let entry = Self::parse_entry(&item)?;
                if plan.filter.matches(&entry) {
                    source.buffer.push_back((key, entry));
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => {
                    source.read_down_to = get_s(&key, FIRED_KEY).map(str::to_string);
                    source.start_key = Some(key);
                }
                _ => source.done = true,
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LogStore for DynamoLogStore {
    async fn append(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let now = Utc::now();
        // A batch may not repeat a key: the last entry with an id wins.
        let mut by_id = BTreeMap::new();
        for entry in entries {
            by_id.insert(entry.id.clone(), self.entry_item(entry, now)?);
        }
        batch_put(&self.client, &self.table, by_id.into_values().collect()).await?;
        self.count(entries, now).await
    }

    async fn record_delivered(&self, entry: &LogEntry) -> StoreResult<bool> {
        let now = Utc::now();
        let marker = Item::from([
            (ID.to_string(), s(Self::marker_id(&entry.delivery_id))),
            ("log_id".to_string(), s(&entry.id)),
            (EXPIRES_AT.to_string(), expires_at(now, self.retention.max(MIN_MARKER_TTL))),
        ]);
        let marker_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            // A marker past its TTL that DynamoDB has not deleted yet no longer counts.
            .condition_expression("attribute_not_exists(#id) OR #exp <= :now")
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":now", n(now.timestamp()))
            .build()
            .map_err(|e| build_error("Put", e))?;
        let entry_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.entry_item(entry, now)?))
            .build()
            .map_err(|e| build_error("Put", e))?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(marker_put).build())
            .transact_items(TransactWriteItem::builder().put(entry_put).build());
        // The hour's counters in the same transaction: counted exactly once, with the
        // marker.
        if let (Some(c), false) = (HourCounts::of(entry), entry.postback_id.is_empty()) {
            let (expression, names, values) = self.stats_update(&c, now);
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::stats_key(&entry.postback_id, hour_of(entry.fired_at))))
                .update_expression(expression)
                .set_expression_attribute_names(Some(names.into_iter().collect()))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(|e| build_error("Update", e))?;
            transaction = transaction.transact_items(TransactWriteItem::builder().update(update).build());
        }
        let result = transaction.send().await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let already_delivered = e
                    .as_service_error()
                    .and_then(|s| match s {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                        _ => None,
                    })
                    .and_then(|c| c.cancellation_reasons().first().and_then(|r| r.code()))
                    == Some("ConditionalCheckFailed");
                if already_delivered {
                    Ok(false)
                } else {
                    Err(unavailable("DynamoDB TransactWriteItems delivered log", e))
                }
            }
        }
    }

    async fn is_delivered(&self, delivery_id: &str) -> StoreResult<bool> {
        Ok(self.get_item(&Self::marker_id(delivery_id)).await?.is_some())
    }

    /// One `BatchGetItem` of the asked hours' counter items (≤ 100 keys a call).
    async fn hourly_stats(
        &self,
        postback_id: &str,
        hours: &[DateTime<Utc>],
    ) -> StoreResult<std::collections::HashMap<DateTime<Utc>, HourCounts>> {
        let keys: BTreeMap<String, DateTime<Utc>> =
            hours.iter().map(|hour| (Self::stats_id(postback_id, *hour), *hour)).collect();
        let items =
            batch_get(&self.client, &self.table, keys.keys().map(|id| Item::from([(ID.to_string(), s(id))])).collect())
                .await?;
        let now = Utc::now();
        let number =
            |item: &Item, name: &str| get_i64(item, name).and_then(|v| u64::try_from(v).ok()).unwrap_or_default();
        Ok(items
            .iter()
            .filter(|item| !is_expired(item, now))
            .filter_map(|item| {
                let hour = keys.get(get_s(item, ID)?)?;
                let counts = HourCounts {
                    delivered: number(item, "delivered"),
                    failed: number(item, "failed"),
                    retrying: number(item, "retrying"),
                    skipped: number(item, "skipped"),
                    duration_ms_sum: number(item, "duration_ms_sum"),
                    attempts: number(item, "attempts"),
                };
                Some((*hour, counts))
            })
            .collect())
    }

    /// `BatchGetItem` of the ids' delivered and replay markers, 100 keys a call, several
    /// calls at once.
    async fn replay_states(
        &self,
        delivery_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ReplayState>> {
        use futures::{StreamExt, TryStreamExt};
        let keys: Vec<Item> = delivery_ids
            .iter()
            .flat_map(|d| [Self::marker_id(d), format!("{REPLAYED_PREFIX}{d}")])
            .map(|id| Item::from([(ID.to_string(), s(id))]))
            .collect();
        let chunks: Vec<Vec<Item>> = keys.chunks(100).map(<[Item]>::to_vec).collect();
        let found: Vec<Vec<Item>> = futures::stream::iter(chunks)
            .map(|chunk| batch_get(&self.client, &self.table, chunk))
            .buffer_unordered(MARKER_CONCURRENCY)
            .try_collect()
            .await?;
        let now = Utc::now();
        let mut states: std::collections::HashMap<String, ReplayState> = std::collections::HashMap::new();
        for item in found.iter().flatten().filter(|item| !is_expired(item, now)) {
            let Some(id) = get_s(item, ID) else { continue };
            if let Some(delivery_id) = id.strip_prefix(DELIVERED_PREFIX) {
                states.entry(delivery_id.to_string()).or_default().delivered = true;
            } else if let Some(delivery_id) = id.strip_prefix(REPLAYED_PREFIX) {
                let mark = get_s(item, REPLAYED_KEY).and_then(cursor_at);
                states.entry(delivery_id.to_string()).or_default().replayed = mark;
            }
        }
        Ok(states)
    }

    /// `BatchWriteItem` puts of the markers (unconditional: the newest of these entries
    /// per delivery id; a replay only ever selects entries newer than the stored mark).
    async fn mark_replayed(&self, entries: &[LogEntry]) -> StoreResult<()> {
        use futures::{StreamExt, TryStreamExt};
        let mut newest: BTreeMap<&str, String> = BTreeMap::new();
        for entry in entries {
            let key = fired_key(entry.fired_at, &entry.id);
            let slot = newest.entry(entry.delivery_id.as_str()).or_default();
            if key > *slot {
                *slot = key;
            }
        }
        let now = Utc::now();
        let items: Vec<Item> = newest
            .into_iter()
            .map(|(delivery_id, key)| {
                Item::from([
                    (ID.to_string(), s(format!("{REPLAYED_PREFIX}{delivery_id}"))),
                    (REPLAYED_KEY.to_string(), s(key)),
                    (EXPIRES_AT.to_string(), expires_at(now, self.retention)),
                ])
            })
            .collect();
        let chunks: Vec<Vec<Item>> = items.chunks(25).map(<[Item]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|chunk| batch_put(&self.client, &self.table, chunk))
            .buffer_unordered(MARKER_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LogEntry>> {
        if id.starts_with(DELIVERED_PREFIX) || id.starts_with(STATS_PREFIX) || id.starts_with(REPLAYED_PREFIX) {
            return Ok(None);
        }
        self.get_item(id).await?.map(|item| Self::parse_entry(&item)).transpose()
    }

    async fn query(&self, filter: &LogFilter) -> StoreResult<LogPage> {
        let limit = match filter.limit {
            0 => DEFAULT_LOG_LIMIT,
            l => l.min(MAX_LOG_LIMIT),
        };
        // One more than a page tells whether there is a next page.
        let want = limit + 1;
        let (index, hash_attribute, hash_values) = match (&filter.transaction_id, &filter.postback_id) {
            (Some(tx), _) => (LOGS_BY_TRANSACTION, TRANSACTION_ID, vec![tx.clone()]),
            (None, Some(pb)) => (LOGS_BY_POSTBACK, POSTBACK_ID, vec![pb.clone()]),
            (None, None) => (LOGS_NEWEST, SHARD, (0..LOG_SHARDS).map(|i| format!("all#{i}")).collect()),
        };
        let plan = Plan::new(filter, index, want, self.bound.page_items, Utc::now());
        let inverted = matches!((filter.from, filter.to), (Some(from), Some(to)) if from > to);
        if inverted || plan.range.is_empty() {
            return Ok(LogPage { items: vec![], next_cursor: None });
        }
        let mut sources: Vec<Source> = hash_values
            .into_iter()
            .map(|hash_value| Source {
                index,
                hash_attribute,
                hash_value,
                buffer: VecDeque::new(),
                start_key: None,
                read_down_to: None,
                done: false,
            })
            .collect();
        let mut items = Vec::with_capacity(want);
        let mut pages = 0;
        // The first round reads every source once, whatever the bound.
        let max_pages = self.bound.pages.max(sources.len());
        // Where the listing stopped for the read bound, if it did: the highest key an
        // unfinished source has been read down to. Every source has been read at and
        // above it, so everything there was seen.
        let mut stopped_at: Option<String> = None;
        while items.len() < want {
            // A head can be merged only when every unfinished source has one.
            let empty: Vec<&mut Source> = sources.iter_mut().filter(|s| s.buffer.is_empty() && !s.done).collect();
            if !empty.is_empty() {
                if pages + empty.len() > max_pages {
                    stopped_at = sources.iter().filter(|s| !s.done).filter_map(|s| s.read_down_to.clone()).max();
                    break;
                }
                pages += empty.len();
                try_join_all(empty.into_iter().map(|s| self.read_page(s, &plan))).await?;
                continue;
            }
            match pop_newest(&mut sources, None) {
                Some(entry) => items.push(entry),
                None => break,
            }
        }
        if let Some(bound) = &stopped_at {
            // Heads the other sources still hold at or above the stop are complete too.
            while items.len() < want {
                match pop_newest(&mut sources, Some(bound)) {
                    Some(entry) => items.push(entry),
                    None => break,
                }
            }
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| Cursor::after(e).encode())
        } else {
            // Stopped short: resume strictly below the stop (that item was evaluated).
            stopped_at.as_deref().and_then(cursor_at).map(|c| c.encode())
        };
        Ok(LogPage { items, next_cursor })
    }
}

/// Take the newest buffered entry of all sources (the merge step), if its key is at or
/// above `floor`.
fn pop_newest(sources: &mut [Source], floor: Option<&String>) -> Option<LogEntry> {
    let newest = sources
        .iter_mut()
        .filter(|s| s.buffer.front().is_some_and(|(k, _)| floor.is_none_or(|f| k >= f)))
        .max_by(|a, b| a.buffer.front().map(|(k, _)| k).cmp(&b.buffer.front().map(|(k, _)| k)))?;
    newest.buffer.pop_front().map(|(_, entry)| entry)
}

/// The cursor at a sort key (`fired_at#id`), i.e. just after that position.
fn cursor_at(key: &str) -> Option<Cursor> {
    let (time, id) = key.split_once('#')?;
    let fired_at = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    Some(Cursor { fired_at, last_id: id.to_string() })
}

/// The index attribute a predicate compares, if the log indexes project it
/// (`resources::LOGS_PROJECTED_*`); `None` for the text columns, compared in memory.
fn predicate_attribute(column: LogColumn) -> Option<&'static str> {
    match column {
        LogColumn::PostbackId => Some(POSTBACK_ID),
        LogColumn::TransactionId => Some(TRANSACTION_ID),
        LogColumn::Type => Some(TYPE),
        LogColumn::OfferId => Some(OFFER_ID),
        LogColumn::PublisherId => Some(PUBLISHER_ID),
        LogColumn::StatusCode => Some(STATUS_CODE),
        LogColumn::Outcome => Some(OUTCOME),
        LogColumn::Test => Some(TEST),
        LogColumn::PostbackName | LogColumn::EventId | LogColumn::Url | LogColumn::Error | LogColumn::ResponseBody => {
            None
        }
    }
}

/// The predicate's value as the attribute holds it: a number, a boolean or a string.
fn predicate_value(p: &LogPredicate) -> AttributeValue {
    match p.column() {
        LogColumn::StatusCode => n(p.value()),
        LogColumn::Test => AttributeValue::Bool(p.value() == "true"),
        _ => s(p.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, nanos).unwrap()
    }

    #[test]
    fn fired_keys_sort_by_fired_at_then_id() {
        let ids = ["0190a0a0-0000-7000-8000-00000000000b", "0190a0a0-0000-7000-8000-00000000000a"];
        // (fired_at, id) pairs in the listing's order, ascending; ids deliberately
        // opposite to time.
        let ordered = [
            (at(1_767_225_599, 999_999_999), ids[0]),
            (at(1_767_225_600, 0), ids[1]),
            (at(1_767_225_600, 0), ids[0]),
            (at(1_767_225_600, 1), ids[1]),
            (at(1_767_225_600, 100_000_000), ids[1]),
            (at(1_767_225_609, 0), ids[1]),
            (at(1_767_225_610, 0), ids[0]),
        ];
        let keys: Vec<String> = ordered.iter().map(|(t, id)| fired_key(*t, id)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys[1], "2026-01-01T00:00:00.000000000Z#0190a0a0-0000-7000-8000-00000000000a");
        assert!(keys.iter().all(|k| k.len() == keys[0].len()), "fixed width");
    }

    #[test]
    fn time_bounds_and_the_cursor_bound_the_key_range() {
        let t = at(1_767_225_600, 500);
        let key = |secs_offset: i64, nanos: i64, id: &str| {
            fired_key(t + chrono::Duration::seconds(secs_offset) + chrono::Duration::nanoseconds(nanos), id)
        };
        let mut filter = LogFilter { from: Some(t), to: Some(t), ..LogFilter::default() };
        let range = KeyRange::for_filter(&filter);
        assert!(range.admits(&key(0, 0, "a")) && range.admits(&key(0, 0, "zzzz")), "from and to are inclusive");
        assert!(!range.admits(&key(0, -1, "zzzz")) && !range.admits(&key(0, 1, "0")), "and exact to the nanosecond");
        assert!(!range.is_empty());

        // The cursor is an exclusive upper bound on (fired_at, id).
        filter = LogFilter { cursor: Some(Cursor { fired_at: t, last_id: "m".into() }), ..LogFilter::default() };
        let range = KeyRange::for_filter(&filter);
        assert_eq!(range.high.as_deref(), Some(key(0, 0, "m").as_str()));
        assert!(range.admits(&key(0, 0, "l")) && !range.admits(&key(0, 0, "m")) && !range.admits(&key(0, 0, "n")));
        assert!(range.admits(&key(-1, 0, "z")));
        // With `to` as well, the lower of the two bounds counts.
        filter.to = Some(t - chrono::Duration::seconds(1));
        assert!(!KeyRange::for_filter(&filter).admits(&key(0, 0, "l")));
        assert!(KeyRange::for_filter(&filter).admits(&key(-1, 0, "z")));
        filter.to = Some(t + chrono::Duration::seconds(1));
        assert_eq!(KeyRange::for_filter(&filter).high.as_deref(), Some(key(0, 0, "m").as_str()));
        // A cursor older than `from`: nothing left.
        filter.from = Some(t + chrono::Duration::nanoseconds(1));
        assert!(KeyRange::for_filter(&filter).is_empty());
    }

    #[test]
    fn times_outside_years_0000_to_9999_are_clamped() {
        // `from` in an offset that moves it past 9999 in UTC, `to` at the very end.
        let late = DateTime::parse_from_rfc3339("9999-12-31T23:00:00-02:00").unwrap().with_timezone(&Utc);
        let range = KeyRange::for_filter(&LogFilter { from: Some(late), ..LogFilter::default() });
        assert!(!range.admits(&fired_key(Utc::now(), "x")), "a bound past 9999 admits nothing of today");
        let end = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z").unwrap().with_timezone(&Utc);
        let range = KeyRange::for_filter(&LogFilter { to: Some(end), ..LogFilter::default() });
        assert!(range.admits(&fired_key(Utc::now(), "x")));
        let early = DateTime::parse_from_rfc3339("0000-01-01T00:00:00+01:00").unwrap().with_timezone(&Utc);
        let range = KeyRange::for_filter(&LogFilter { from: Some(early), ..LogFilter::default() });
        assert!(range.admits(&fired_key(Utc::now(), "x")));
        assert!(time_key(early).starts_with("0000-01-01T00:00:00"));
    }

    #[test]
    fn shards_spread_ids() {
        let mut counts = [0u32; LOG_SHARDS as usize];
        for _ in 0..400 {
            counts[shard_of(&uuid::Uuid::now_v7().to_string()) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }
}
