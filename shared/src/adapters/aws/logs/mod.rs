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
//!
//! The jobs, one file each: `keys` (the key scheme), `codec` (the `body` format),
//! `query` (listings over the three indexes), `markers` (delivered and replay markers),
//! `stats` (the hourly counts and their roll-ups); this file holds the item schema and
//! wires them into `LogStore`.

mod codec;
mod keys;
mod markers;
mod query;
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use self::codec::{pack, unpack};
use self::keys::{fired_key, shard_of};
use self::markers::{MIN_MARKER_TTL, REPLAYED_PREFIX};
use self::stats::STATS_PREFIX;
use super::item::{batch_put, get_consistent, get_i64, is_expired, n, s, Item, EXPIRES_AT};
use super::resources::LOGS_SORT_KEY;
use crate::domain::log::{LogEntry, LogFilter, LogPage};
use crate::domain::stats::HourCounts;
use crate::ports::{Clock, LogStore, ReplayState, StoreError, StoreResult};

pub(crate) use self::keys::time_key;
pub use self::keys::{delivered_entry_id, LOG_SHARDS};
pub use self::query::ReadBound;
pub use self::stats::STATS_SETTLE;

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
/// The indexes' sort key (`fired_key`).
const FIRED_KEY: &str = LOGS_SORT_KEY;

#[derive(Clone)]
pub struct DynamoLogStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: chrono::Duration,
    bound: ReadBound,
    /// Every "now" of the store: expiry, TTLs, the visible-entries filter, the stats'
    /// settled part.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoLogStore")
            .field("table", &self.table)
            .field("retention", &self.retention)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl DynamoLogStore {
    /// Entries live `retention` (`LOG_RETENTION_DAYS`); every "now" of the store is
    /// `clock`'s.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: &str,
        retention: chrono::Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { client, table: table.to_string(), retention, bound: ReadBound::default(), clock }
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

    async fn get_item(&self, id: &str) -> StoreResult<Option<Item>> {
        let item =
            get_consistent(&self.client, &self.table, Item::from([(ID.to_string(), s(id))]), "DynamoDB GetItem log")
                .await?;
        Ok(item.filter(|item| !is_expired(item, self.clock.now())))
    }
}

#[async_trait]
impl LogStore for DynamoLogStore {
    async fn append(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let expires = self.clock.now() + self.retention;
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
        self.put_delivered(entry).await
    }

    async fn is_delivered(&self, delivery_id: &str) -> StoreResult<bool> {
        Ok(self.get_item(&delivered_entry_id(delivery_id)).await?.is_some())
    }

    async fn hourly_stats(
        &self,
        postback_id: &str,
        hours: &[DateTime<Utc>],
    ) -> StoreResult<std::collections::HashMap<DateTime<Utc>, HourCounts>> {
        self.counts_by_hour(postback_id, hours).await
    }

    async fn replay_states(
        &self,
        delivery_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ReplayState>> {
        self.read_replay_markers(delivery_ids).await
    }

    async fn mark_replayed(&self, entries: &[LogEntry]) -> StoreResult<()> {
        self.put_replay_markers(entries).await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LogEntry>> {
        // Not an entry's id: no read.
        if id.starts_with(STATS_PREFIX) || id.starts_with(REPLAYED_PREFIX) {
            return Ok(None);
        }
        match self.get_item(id).await? {
            Some(item) => Self::parse_entry(&item, self.clock.now()),
            None => Ok(None),
        }
    }

    async fn query(&self, filter: &LogFilter) -> StoreResult<LogPage> {
        self.list_entries(filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::log::Outcome;

    /// The headroom `docs/aws-cost.md` states: the item of a real-looking conversion's
    /// entry (a long user agent, ten subs, params, a signed URL, a short JSON answer,
    /// ids of real length) stays under the 1 KB of one write unit.
    #[test]
    fn a_full_entry_still_fits_one_write_unit() {
        let mut firing =
            crate::testing::fixtures::firing("d_6b0f1c2e9a7d4e5f8a1b2c3d4e5f6a7b", crate::testing::fixtures::now());
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
        let store = DynamoLogStore::new(
            aws_sdk_dynamodb::Client::from_conf(config),
            "logs",
            chrono::Duration::days(30),
            Arc::new(crate::adapters::system::SystemClock),
        );
        entry.id = delivered_entry_id(&entry.delivery_id);
        let item = store.entry_item(&entry, crate::testing::fixtures::now()).unwrap();
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
}
