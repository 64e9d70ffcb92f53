//! `LogStore` on DynamoDB. Entries are keyed by `id` and listed newest first by
//! `fired_at` (ties by id, descending) through one of three indexes, all sorted by
//! `fired_key` = `fired_at` as fixed-width RFC 3339 UTC with nanoseconds + `#` + id:
//! `by_transaction`, `by_postback`, or — with neither filter — `newest`, whose
//! partition key spreads entries over `LOG_SHARDS` shards (`all#0`..) that a query
//! merges. `from`/`to` become key conditions on `fired_key`; the other filters are a
//! FilterExpression. The cursor is the last entry's `fired_at` and id, i.e. its
//! `fired_key`: every index resumes below it.
//!
//! An entry is one item: its JSON (with the firing) deflated in `body`, plus the key,
//! index and filter attributes; under 1 KB for ordinary entries, so one write unit.
//!
//! The delivered attempt's entry is its own delivered marker: its id is derived from the
//! delivery id (`delivered_entry_id`), and one conditional `PutItem` writes it only if no
//! live item has that id, so `is_delivered` is a `GetItem` of that id. An entry given
//! another id gets a bare marker item at the delivered id instead, in a transaction with
//! the entry. Stats are counted from the `by_postback` index when
//! read, and the settled part of each hour is kept in a roll-up item (`hourly_stats`).

use std::collections::{BTreeMap, VecDeque};

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{build_error, unavailable};
use super::item::{
    batch_get, batch_put, expires_at, get_consistent, get_i64, get_s, is_expired, n, s, Item, EXPIRES_AT,
};
use super::resources::{LOGS_BY_POSTBACK, LOGS_BY_TRANSACTION, LOGS_NEWEST, LOGS_SORT_KEY};
use crate::domain::firing::Firing;
use crate::domain::log::{
    Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPage, LogPredicate, Outcome, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT,
};
use crate::domain::stats::HourCounts;
use crate::ports::{LogStore, ReplayState, StoreError, StoreResult};

/// Shards of the `newest` index: each index partition takes ~1000 writes/s, so four
/// carry ~4000 log entries a second; a listing without a postback or transaction filter
/// queries all four and merges them.
pub const LOG_SHARDS: u32 = 4;

const ID: &str = "id";
/// The entry and its firing as deflated JSON (`Stored`), a binary attribute.
const BODY: &str = "body";
const POSTBACK_ID: &str = "postback_id";
const TRANSACTION_ID: &str = "transaction_id";
const SHARD: &str = "log_shard";
const TYPE: &str = "type";
const OFFER_ID: &str = "offer_id";
const PUBLISHER_ID: &str = "publisher_id";
const STATUS_CODE: &str = "status_code";
const OUTCOME: &str = "outcome";
const TEST: &str = "test";
/// Projected into `by_postback` only, for the stats.
const DURATION_MS: &str = "duration_ms";
/// A delivered entry kept past `LOG_RETENTION_DAYS` as a marker (retention under
/// `MIN_MARKER_TTL`) is listed and shown only until then.
const LISTED_UNTIL: &str = "listed_until";
/// A bare delivered marker's pointer to its entry (entries not given
/// `delivered_entry_id`).
const LOG_ID: &str = "log_id";
/// The indexes' sort key (`fired_key`).
const FIRED_KEY: &str = LOGS_SORT_KEY;

/// Replay markers (`replayed#<delivery id>`): the `fired_key` of the newest entry of the
/// delivery id a bulk replay queued again, in `replayed_key` (not `fired_key`: no
/// index may list them).
const REPLAYED_PREFIX: &str = "replayed#";
const REPLAYED_KEY: &str = "replayed_key";
/// Marker reads and writes in flight at once during a replay selection.
const MARKER_CONCURRENCY: usize = 16;
/// Ids of the per-postback hourly roll-up items.
const STATS_PREFIX: &str = "stats#";
/// A roll-up's position: every entry of its hour with `fired_key` below this time key
/// is in its counts.
const UPTO: &str = "upto";
/// How long after `fired_at` an entry can still be written: above the longest function
/// timeout (dispatch 60 s, config-api 29 s; `template_check` asserts it) and the index's
/// propagation. Entries older than this are final and go into the roll-ups.
pub const STATS_SETTLE: chrono::Duration = chrono::Duration::minutes(5);
/// Hours counted from the index at once.
const STATS_CONCURRENCY: usize = 8;
/// A stored body inflates to at most this (an entry keeps ≤ 4 KB of response body).
const MAX_BODY_BYTES: usize = 1 << 20;
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

/// The id of a delivery's delivered entry, which is also its delivered marker's key: a
/// UUIDv8 of SHA-256(`delivered|` + delivery id). Distinct from every UUIDv7 the service
/// mints (version 8), and a delivery id has one delivered attempt.
pub fn delivered_entry_id(delivery_id: &str) -> String {
    let digest = Sha256::new().chain_update(b"delivered|").chain_update(delivery_id.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// What `body` holds: the entry (whose own serialized form leaves the firing out: it is
/// not API output) and its firing.
#[derive(Serialize)]
struct StoredRef<'a> {
    entry: &'a LogEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    firing: Option<&'a Firing>,
}

#[derive(Deserialize)]
struct Stored {
    entry: LogEntry,
    #[serde(default)]
    firing: Option<Firing>,
}

/// `body`'s first byte: how the rest is encoded. 1 = raw deflate with `DICTIONARY_V1`.
/// The dictionary is part of the stored format: changing it needs a new version (and
/// reading the old one kept).
const BODY_V1: u8 = 1;
/// A preset deflate dictionary for `body`: the keys and the common values of an entry and
/// its firing (an item is compressed alone, so without it the first occurrence of every
/// key is paid in full). Commonest last: deflate reaches the end of it most cheaply.
const DICTIONARY_V1: &[u8] = br#"status changed from approved to rejected (reason: ); postback fires on "rejection_reason":"","event_name":"","pending","rejected","next_attempt_at":"","retrying","failed","skipped","resend_of":"","replay_of":"","alert":{"kind":"breaker_opened","Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1","Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","click","event","sub1","sub2","EUR","USD","slot_second":,"destination":"http://{"entry":{"id":"","delivery_id":"d_","postback_id":"pb_","postback_name":"","transaction_id":"","type":"conversion","offer_id":"","publisher_id":"","fired_at":"2026-01-01T00:00:00.000000000Z","attempt":1,"method":"GET","url":"https://","request_headers":{"Content-Type":"application/json","Authorization":"[REDACTED]"},"request_body":null,"status_code":200,"response_body":"OK","error":null,"duration_ms":0,"outcome":"delivered","test":false,"postback_version":1},"firing":{"delivery_id":"d_","postback_id":"pb_","event":{"type":"conversion","transaction_id":"","offer_id":"","publisher_id":"","external_transaction_id":"","status":"approved","payout":"","revenue":"","currency":"","subs":[null,null,null,null,null,null,null,null,null,null],"ip":"","user_agent":"Mozilla/5.0 ","country":"","timestamp":"2026-01-01T00:00:00.000Z","params":{}},"attempt":1,"due_at":"2026-01-01T00:00:00.000000000Z","queued_at":"2026-01-01T00:00:00.000000000Z","check_status":true,"destination":"https://"}}"#;

/// The entry and its firing as JSON, raw-deflated with `DICTIONARY_V1`: 1.3–2 KB of JSON
/// become ≈ 300–550 bytes, so the item stays under 1 KB (one write unit).
fn pack(entry: &LogEntry) -> StoreResult<Vec<u8>> {
    let failed = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("log entry cannot be compressed: {e}"));
    let json = serde_json::to_vec(&StoredRef { entry, firing: entry.firing.as_ref() }).map_err(|e| failed(&e))?;
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    compress.set_dictionary(DICTIONARY_V1).map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(json.len() + 64);
    out.push(BODY_V1);
    loop {
        let consumed = usize::try_from(compress.total_in()).unwrap_or(usize::MAX);
        let rest = json.get(consumed..).unwrap_or_default();
        out.reserve(rest.len() / 2 + 64);
        match compress.compress_vec(rest, &mut out, flate2::FlushCompress::Finish).map_err(|e| failed(&e))? {
            flate2::Status::StreamEnd => return Ok(out),
            flate2::Status::Ok | flate2::Status::BufError => {}
        }
    }
}

fn unpack(body: &[u8]) -> StoreResult<LogEntry> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("log entry body: {e}"));
    let Some((&BODY_V1, deflated)) = body.split_first() else {
        return Err(corrupt(&"unknown encoding"));
    };
    let mut decompress = flate2::Decompress::new(false);
    decompress.set_dictionary(DICTIONARY_V1).map_err(|e| corrupt(&e))?;
    let mut json = Vec::with_capacity(deflated.len() * 4);
    loop {
        let consumed = usize::try_from(decompress.total_in()).unwrap_or(usize::MAX);
        let rest = deflated.get(consumed..).unwrap_or_default();
        if json.len() >= MAX_BODY_BYTES {
            return Err(corrupt(&"larger than any entry"));
        }
        json.reserve(deflated.len() * 2 + 256);
        let before = (decompress.total_in(), decompress.total_out());
        match decompress.decompress_vec(rest, &mut json, flate2::FlushDecompress::Finish).map_err(|e| corrupt(&e))? {
            flate2::Status::StreamEnd => break,
            // No progress with all input given: the stream is cut short.
            _ if (decompress.total_in(), decompress.total_out()) == before => return Err(corrupt(&"truncated")),
            _ => {}
        }
    }
    let stored: Stored = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("log entry: {e}")))?;
    let mut entry = stored.entry;
    entry.firing = stored.firing;
    Ok(entry)
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
    now: DateTime<Utc>,
}

/// The FilterExpression term (with its names; `:now` is the caller's) that keeps live
/// entries only: not past `expires_at`, and, when delivered entries may outlive the
/// retention as markers (`listed_until`), not past `listed_until` either.
fn visible_condition(listed_until: bool) -> (&'static str, BTreeMap<String, String>) {
    let mut names = BTreeMap::from([("#exp".to_string(), EXPIRES_AT.to_string())]);
    if listed_until {
        names.insert("#lu".to_string(), LISTED_UNTIL.to_string());
        ("#exp > :now AND (attribute_not_exists(#lu) OR #lu > :now)", names)
    } else {
        ("#exp > :now", names)
    }
}

impl<'a> Plan<'a> {
    fn new(
        filter: &'a LogFilter,
        index: &str,
        want: usize,
        page_items: i32,
        now: DateTime<Utc>,
        listed_until: bool,
    ) -> Plan<'a> {
        let (visible, mut names) = visible_condition(listed_until);
        let mut conditions = vec![visible.to_string()];
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
            now,
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

    /// Whether delivered entries can outlive the retention as markers, and so carry
    /// `listed_until` that reads must respect.
    fn markers_outlive_entries(&self) -> bool {
        self.retention < MIN_MARKER_TTL
    }

    /// The item of an entry, living until `expires` (the TTL attribute).
    fn entry_item(&self, entry: &LogEntry, expires: DateTime<Utc>) -> StoreResult<Item> {
        let mut item = Item::from([
            (ID.to_string(), s(&entry.id)),
            (BODY.to_string(), AttributeValue::B(Blob::new(pack(entry)?))),
            (SHARD.to_string(), s(format!("all#{}", shard_of(&entry.id)))),
            (TYPE.to_string(), s(entry.kind.as_str())),
            (OUTCOME.to_string(), s(entry.outcome.as_str())),
            (FIRED_KEY.to_string(), s(fired_key(entry.fired_at, &entry.id))),
            (DURATION_MS.to_string(), n(entry.duration_ms)),
            (EXPIRES_AT.to_string(), n(expires.timestamp())),
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
        // The text columns (url, error, response body, ...) are only in `body`: listings
        // compare them in memory, so they are not stored twice.
        item.insert(TEST.to_string(), AttributeValue::Bool(entry.test));
        Ok(item)
    }

    /// The entry an item holds; `None` for the other items of the table (bare delivered
    /// markers, replay markers, stats roll-ups) and for a delivered entry kept past its
    /// retention only as a marker.
    fn parse_entry(item: &Item, now: DateTime<Utc>) -> StoreResult<Option<LogEntry>> {
        let Some(body) = item.get(BODY) else { return Ok(None) };
        if get_i64(item, LISTED_UNTIL).is_some_and(|t| t <= now.timestamp()) {
            return Ok(None);
        }
        let body = body.as_b().map_err(|_| StoreError::Corrupt("log entry: body is not binary".into()))?;
        unpack(body.as_ref()).map(Some)
    }

    /// The roll-up item of one postback and hour (`GET /postbacks/{id}/stats`). It has
    /// no index attributes, so no listing sees it.
    fn stats_id(postback_id: &str, hour: DateTime<Utc>) -> String {
        format!("{STATS_PREFIX}{postback_id}#{}", hour.format("%Y-%m-%dT%H"))
    }

    /// One hour's counts: the roll-up's, plus the entries the `by_postback` index holds
    /// from the roll-up's position to the end of the hour (one Query, paged). The part
    /// older than `STATS_SETTLE` is final and becomes the new roll-up (a conditional put
    /// on the old position, so concurrent readers never add an entry twice).
    async fn hour_counts(
        &self,
        postback_id: &str,
        hour: DateTime<Utc>,
        rollup: Option<Rollup>,
        now: DateTime<Utc>,
    ) -> StoreResult<HourCounts> {
        let end = hour + chrono::Duration::hours(1);
        let (start_key, end_key) = (time_key(hour), time_key(end));
        let from_key = rollup.as_ref().map(|r| r.upto.clone()).filter(|u| *u > start_key).unwrap_or(start_key);
        let mut total = rollup.as_ref().map(|r| r.counts).unwrap_or_default();
        if from_key >= end_key {
            return Ok(total);
        }
        let seal_key = time_key(end.min(now - STATS_SETTLE));
        let mut sealed = total;
        let (visible, names) = visible_condition(self.markers_outlive_entries());
        let mut start = None;
        loop {
            // `BETWEEN` is inclusive, and a bare time key sorts below every `time#id` of
            // that time: this is exactly [from, end).
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(LOGS_BY_POSTBACK)
                .key_condition_expression("#pb = :pb AND #fk BETWEEN :lo AND :hi")
                .filter_expression(visible)
                .projection_expression("#fk, #oc, #t, #d")
                .expression_attribute_names("#pb", POSTBACK_ID)
                .expression_attribute_names("#fk", FIRED_KEY)
                .expression_attribute_names("#oc", OUTCOME)
                .expression_attribute_names("#t", TEST)
                .expression_attribute_names("#d", DURATION_MS)
                .expression_attribute_values(":pb", s(postback_id))
                .expression_attribute_values(":lo", s(&from_key))
                .expression_attribute_values(":hi", s(&end_key))
                .expression_attribute_values(":now", n(now.timestamp()))
                .set_exclusive_start_key(start.take());
            for (k, v) in &names {
                query = query.expression_attribute_names(k, v);
            }
            let page = query.send().await.map_err(|e| unavailable("DynamoDB Query stats", e))?;
            for item in page.items() {
                let test = item.get(TEST).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
                let Some(outcome) = get_s(item, OUTCOME).and_then(Outcome::parse) else { continue };
                let duration = get_i64(item, DURATION_MS).and_then(|d| u64::try_from(d).ok()).unwrap_or_default();
                let Some(c) = HourCounts::of_outcome(outcome, duration, test) else { continue };
                total.add(&c);
                if get_s(item, FIRED_KEY).is_some_and(|k| k < seal_key.as_str()) {
                    sealed.add(&c);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        // Written when entries settled since the roll-up, or once when the hour is over
        // (so a past hour is read from the index once, even when empty); else the next
        // read finds the same few entries again, which costs no more than the write.
        let before = rollup.as_ref().map(|r| r.counts).unwrap_or_default();
        if seal_key > from_key && (sealed != before || seal_key == end_key) {
            self.put_rollup(postback_id, hour, &sealed, &seal_key, rollup.as_ref().map(|r| r.upto.as_str())).await;
        }
        Ok(total)
    }

    /// Store an hour's roll-up if its position is still `previous` (none: no roll-up
    /// yet). A lost race or a failed write only means the next read counts more from
    /// the index: the answer already computed stands, so neither is an error.
    async fn put_rollup(
        &self,
        postback_id: &str,
        hour: DateTime<Utc>,
        c: &HourCounts,
        upto: &str,
        previous: Option<&str>,
    ) {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(ID, s(Self::stats_id(postback_id, hour)))
            .item(UPTO, s(upto))
            .item("delivered", n(c.delivered))
            .item("failed", n(c.failed))
            .item("retrying", n(c.retrying))
            .item("skipped", n(c.skipped))
            .item("duration_ms_sum", n(c.duration_ms_sum))
            .item("attempts", n(c.attempts))
            .item(EXPIRES_AT, expires_at(hour + chrono::Duration::hours(1), self.retention))
            .expression_attribute_names("#upto", UPTO);
        put = match previous {
            Some(previous) => {
                put.condition_expression("#upto = :previous").expression_attribute_values(":previous", s(previous))
            }
            None => put.condition_expression("attribute_not_exists(#upto)"),
        };
        match put.send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
            Err(e) => {
                tracing::warn!(postback_id, %hour, error = %unavailable("DynamoDB PutItem stats roll-up", e), "stats roll-up not stored")
            }
        }
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
                let Some(entry) = Self::parse_entry(&item, plan.now)? else { continue };
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

/// An hour's roll-up as stored: the counts of its entries below `upto`.
#[derive(Debug, Clone)]
struct Rollup {
    counts: HourCounts,
    upto: String,
}

impl Rollup {
    /// `None` for an item without a position (not a roll-up).
    fn of(item: &Item) -> Option<Rollup> {
        let number = |name: &str| get_i64(item, name).and_then(|v| u64::try_from(v).ok()).unwrap_or_default();
        Some(Rollup {
            upto: get_s(item, UPTO)?.to_string(),
            counts: HourCounts {
                delivered: number("delivered"),
                failed: number("failed"),
                retrying: number("retrying"),
                skipped: number("skipped"),
                duration_ms_sum: number("duration_ms_sum"),
                attempts: number("attempts"),
            },
        })
    }
}

#[async_trait]
impl LogStore for DynamoLogStore {
    async fn append(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let expires = Utc::now() + self.retention;
        // A batch may not repeat a key: the last entry with an id wins.
        let mut by_id = BTreeMap::new();
        for entry in entries {
            by_id.insert(entry.id.clone(), self.entry_item(entry, expires)?);
        }
        batch_put(&self.client, &self.table, by_id.into_values().collect()).await
    }

    fn delivered_entry_id(&self, delivery_id: &str) -> Option<String> {
        Some(delivered_entry_id(delivery_id))
    }

    async fn record_delivered(&self, entry: &LogEntry) -> StoreResult<bool> {
        let now = Utc::now();
        let marker_id = delivered_entry_id(&entry.delivery_id);
        // A marker past its TTL that DynamoDB has not deleted yet no longer counts.
        let condition = "attribute_not_exists(#id) OR #exp <= :now";
        let marker_expires = now + self.retention.max(MIN_MARKER_TTL);
        if entry.id == marker_id {
            // The entry is the marker: one conditional put, atomic on its own.
            let mut item = self.entry_item(entry, marker_expires)?;
            if self.markers_outlive_entries() {
                item.insert(LISTED_UNTIL.to_string(), n((now + self.retention).timestamp()));
            }
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .expression_attribute_names("#id", ID)
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_values(":now", n(now.timestamp()));
            return match put.send().await {
                Ok(_) => Ok(true),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
                Err(e) => Err(unavailable("DynamoDB PutItem delivered log entry", e)),
            };
        }
        // An entry with an id of its own: a bare marker at the delivered id, in one
        // transaction with the entry.
        let marker = Item::from([
            (ID.to_string(), s(&marker_id)),
            (LOG_ID.to_string(), s(&entry.id)),
            (EXPIRES_AT.to_string(), n(marker_expires.timestamp())),
        ]);
        let marker_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression(condition)
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":now", n(now.timestamp()))
            .build()
            .map_err(|e| build_error("Put", e))?;
        let entry_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.entry_item(entry, now + self.retention)?))
            .build()
            .map_err(|e| build_error("Put", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(marker_put).build())
            .transact_items(TransactWriteItem::builder().put(entry_put).build())
            .send()
            .await;
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
        Ok(self.get_item(&delivered_entry_id(delivery_id)).await?.is_some())
    }

    /// One `BatchGetItem` of the asked hours' roll-ups, then per hour one Query of the
    /// entries after its roll-up's position (see `hour_counts`).
    async fn hourly_stats(
        &self,
        postback_id: &str,
        hours: &[DateTime<Utc>],
    ) -> StoreResult<std::collections::HashMap<DateTime<Utc>, HourCounts>> {
        use futures::{StreamExt, TryStreamExt};
        let now = Utc::now();
        // Hours that have not begun have no entries.
        let keys: BTreeMap<String, DateTime<Utc>> =
            hours.iter().filter(|hour| **hour <= now).map(|hour| (Self::stats_id(postback_id, *hour), *hour)).collect();
        let items =
            batch_get(&self.client, &self.table, keys.keys().map(|id| Item::from([(ID.to_string(), s(id))])).collect())
                .await?;
        let mut rollups: std::collections::HashMap<DateTime<Utc>, Rollup> = items
            .iter()
            .filter(|item| !is_expired(item, now))
            .filter_map(|item| Some((*keys.get(get_s(item, ID)?)?, Rollup::of(item)?)))
            .collect();
        let work: Vec<(DateTime<Utc>, Option<Rollup>)> =
            keys.values().map(|hour| (*hour, rollups.remove(hour))).collect();
        let counted: Vec<(DateTime<Utc>, HourCounts)> = futures::stream::iter(work)
            .map(|(hour, rollup)| async move {
                Ok::<_, StoreError>((hour, self.hour_counts(postback_id, hour, rollup, now).await?))
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(counted.into_iter().filter(|(_, c)| *c != HourCounts::default()).collect())
    }

    /// `BatchGetItem` of the ids' delivered and replay markers, 100 keys a call, several
    /// calls at once.
    async fn replay_states(
        &self,
        delivery_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ReplayState>> {
        use futures::{StreamExt, TryStreamExt};
        // Item id → (delivery id, whether it is the delivered marker).
        let mut wanted: std::collections::HashMap<String, (&str, bool)> = std::collections::HashMap::new();
        for d in delivery_ids {
            wanted.insert(delivered_entry_id(d), (d.as_str(), true));
            wanted.insert(format!("{REPLAYED_PREFIX}{d}"), (d.as_str(), false));
        }
        let keys: Vec<Item> = wanted.keys().map(|id| Item::from([(ID.to_string(), s(id))])).collect();
        let chunks: Vec<Vec<Item>> = keys.chunks(100).map(<[Item]>::to_vec).collect();
        let found: Vec<Vec<Item>> = futures::stream::iter(chunks)
            .map(|chunk| batch_get(&self.client, &self.table, chunk))
            .buffer_unordered(MARKER_CONCURRENCY)
            .try_collect()
            .await?;
        let now = Utc::now();
        let mut states: std::collections::HashMap<String, ReplayState> = std::collections::HashMap::new();
        for item in found.iter().flatten().filter(|item| !is_expired(item, now)) {
            let Some(&(delivery_id, delivered)) = get_s(item, ID).and_then(|id| wanted.get(id)) else { continue };
            let state = states.entry(delivery_id.to_string()).or_default();
            if delivered {
                state.delivered = true;
            } else {
                state.replayed = get_s(item, REPLAYED_KEY).and_then(cursor_at);
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
        // Not an entry's id: no read.
        if id.starts_with(STATS_PREFIX) || id.starts_with(REPLAYED_PREFIX) {
            return Ok(None);
        }
        match self.get_item(id).await? {
            Some(item) => Self::parse_entry(&item, Utc::now()),
            None => Ok(None),
        }
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
        let plan = Plan::new(filter, index, want, self.bound.page_items, Utc::now(), self.markers_outlive_entries());
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
    fn delivered_ids_are_per_delivery_uuids_unlike_minted_ones() {
        let a = delivered_entry_id("d_0123");
        assert_eq!(a, delivered_entry_id("d_0123"), "the same for every attempt and process");
        assert_ne!(a, delivered_entry_id("d_0124"));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 8, "never equal to a UUIDv7 the service mints");
        assert_eq!(parsed.hyphenated().to_string(), a, "the usual text form");
    }

    #[test]
    fn bodies_round_trip_with_the_firing_and_shrink() {
        let firing = crate::testing::fixtures::firing("d_pack", Utc::now());
        let mut entry = crate::testing::fixtures::log_entry(&firing, Outcome::Delivered);
        entry.response_body = Some("ok".into());
        let body = pack(&entry).unwrap();
        assert_eq!(unpack(&body).unwrap(), entry, "the firing comes back too");
        let json = serde_json::to_vec(&entry).unwrap().len() + serde_json::to_vec(&firing).unwrap().len();
        // The dictionary holds the keys: about a third of the JSON is left.
        assert!(body.len() * 3 < json, "{} bytes deflated from {json}", body.len());
        let mut without = entry.clone();
        without.firing = None;
        assert_eq!(unpack(&pack(&without).unwrap()).unwrap(), without);
        assert!(matches!(unpack(b"not deflate"), Err(StoreError::Corrupt(_))), "an unknown encoding");
        assert!(matches!(unpack(&body[..body.len() / 2]), Err(StoreError::Corrupt(_))), "a cut stream");
        assert!(matches!(unpack(&[]), Err(StoreError::Corrupt(_))));
        // Raw deflate has no checksum (DynamoDB keeps items intact): a damaged byte is an
        // error, or, where the damage still inflates to JSON of an entry, another entry,
        // never a panic and never the original.
        for at in [1, body.len() / 3, body.len() / 2, body.len() - 2] {
            let mut flipped = body.clone();
            flipped[at] ^= 0xff;
            match unpack(&flipped) {
                Err(e) => assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}"),
                Ok(other) => assert_ne!(other, entry, "a damaged byte at {at} changed nothing"),
            }
        }
    }

    /// The headroom `docs/aws-cost.md` states: the item of a real-looking conversion's
    /// entry (a long user agent, ten subs, params, a signed URL, a short JSON answer,
    /// ids of real length) stays under the 1 KB of one write unit.
    #[test]
    fn a_full_entry_still_fits_one_write_unit() {
        let mut firing = crate::testing::fixtures::firing("d_6b0f1c2e9a7d4e5f8a1b2c3d4e5f6a7b", Utc::now());
        firing.postback_id = "pb_0194f3a2b1c07d3e8f9a0b1c2d3e4f5a".into();
        let event = &mut firing.event;
        event.transaction_id = "c7a1e2f3-94b5-4d6c-8e7f-a0b1c2d3e4f5".into();
        event.user_agent = Some(
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/124.0.6367.113 Mobile Safari/537.36"
                .into(),
        );
        event.subs = std::array::from_fn(|i| Some(format!("sub{i}-campaign-{}", 1000 + i * 37)));
        event.params = (0..3).map(|i| (format!("param{i}"), format!("value-{i}-{}", i * 7919))).collect();
        let mut entry = crate::testing::fixtures::log_entry(&firing, Outcome::Delivered);
        entry.url = format!(
            "https://track.affiliate-network.example/postback?clickid={}&payout=12.50&currency=EUR&sig=3f9a0c7d1e2b4a5f",
            firing.event.transaction_id
        );
        entry.response_body = Some(r#"{"status":"ok","conversion_id":"88412973","duplicate":false}"#.into());
        entry.offer_id = Some("offer-20931".into());
        entry.publisher_id = Some("pub-77120".into());
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        let store =
            DynamoLogStore::new(aws_sdk_dynamodb::Client::from_conf(config), "logs", chrono::Duration::days(30));
        entry.id = delivered_entry_id(&entry.delivery_id);
        let item = store.entry_item(&entry, Utc::now()).unwrap();
        // DynamoDB's size: names + values (numbers: about a byte per two digits, + 1).
        let size: usize = item
            .iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        AttributeValue::S(v) => v.len(),
                        AttributeValue::B(v) => v.as_ref().len(),
                        AttributeValue::N(v) => v.len().div_ceil(2) + 1,
                        _ => 1,
                    }
            })
            .sum();
        let body = item[BODY].as_b().unwrap().as_ref().len();
        println!("full entry: {size} bytes, {body} of them the body");
        assert!(size < 1024, "{size} bytes ({body} of body)");
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
