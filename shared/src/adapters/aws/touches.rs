//! `TouchStore` on DynamoDB: one partition per transaction (`transaction_id`), one item
//! per kind of touch (`kind`): `click`, `impression`, `status#conversion`,
//! `status#event:<name>`, and `seen#<sha256 of the dedupe key>`. Every item has a TTL;
//! reads ignore items past it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::error::unavailable;
use super::item::{batch_get, batch_put, doc, expires_at, get_s, is_expired, s, to_json, Item, DOC, EXPIRES_AT};
use crate::domain::event::{CurrentStatus, Event, EventType, StatusKey};
use crate::ports::{Clock, StoreResult, TouchRecord, TouchStore};

const TRANSACTION_ID: &str = "transaction_id";
const KIND: &str = "kind";
const CLICK: &str = "click";
const IMPRESSION: &str = "impression";
/// Seen markers of dedupe keys that do not name a transaction share this partition.
const SEEN_FALLBACK_PARTITION: &str = "#seen";

#[derive(Debug, Clone)]
pub struct DynamoTouchStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: chrono::Duration,
    /// The "now" of TTLs written and of reads' expiry check (DynamoDB's own TTL deletion
    /// runs on its own schedule, often days late: reads never rely on it).
    clock: Arc<dyn Clock>,
}

fn status_kind(key: &StatusKey) -> String {
    format!("status#{}", key.as_key())
}

/// Where the seen marker of a dedupe key lives: in its transaction's partition (the
/// second `|` field of `Event::dedupe_key`, unescaped), sorted under a hash of the whole
/// key so any key length fits.
fn seen_key(dedupe_key: &str) -> (String, String) {
    let transaction = dedupe_key
        .split('|')
        .nth(1)
        .filter(|t| !t.is_empty())
        .map(|t| t.replace("%7C", "|").replace("%25", "%"))
        .unwrap_or_else(|| SEEN_FALLBACK_PARTITION.to_string());
    let digest = Sha256::digest(dedupe_key.as_bytes());
    (transaction, format!("seen#{}", hex::encode(digest)))
}

impl DynamoTouchStore {
    /// `retention` is how long touches live (`LOG_RETENTION_DAYS`).
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: &str,
        retention: chrono::Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { client, table: table.to_string(), retention, clock }
    }

    fn key(transaction_id: &str, kind: &str) -> Item {
        Item::from([(TRANSACTION_ID.to_string(), s(transaction_id)), (KIND.to_string(), s(kind))])
    }

    async fn get_live(&self, transaction_id: &str, kind: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(transaction_id, kind)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB GetItem touch", e))?;
        Ok(out.item.filter(|item| !is_expired(item, self.clock.now())))
    }

    fn touch_item(&self, event: &Event, now: DateTime<Utc>) -> StoreResult<Item> {
        let (kind, document) = match event.kind {
            EventType::Click => (CLICK.to_string(), to_json(event, "click")?),
            EventType::Impression => (IMPRESSION.to_string(), to_json(event, "impression")?),
            // Not reached: ingest refuses `alert` events and alerts are not recorded.
            EventType::Alert => (EventType::Alert.as_str().to_string(), to_json(event, "alert")?),
            EventType::Conversion | EventType::Event => {
                let key = event.status_key().unwrap_or(StatusKey::Conversion);
                let status = CurrentStatus {
                    status: event.status.unwrap_or(crate::domain::event::Status::Approved),
                    rejection_reason: event.rejection_reason.clone(),
                    updated_at: event.timestamp,
                };
                (status_kind(&key), to_json(&status, "status")?)
            }
        };
        let mut item = Self::key(&event.transaction_id, &kind);
        item.insert(DOC.to_string(), s(document));
        item.insert(EXPIRES_AT.to_string(), expires_at(now, self.retention));
        Ok(item)
    }
}

#[async_trait]
impl TouchStore for DynamoTouchStore {
    async fn get_click(&self, transaction_id: &str) -> StoreResult<Option<Event>> {
        self.get_live(transaction_id, CLICK).await?.map(|item| doc(&item, "stored click")).transpose()
    }

    /// One `BatchGetItem` per 100 transactions instead of a `GetItem` each: a batch of
    /// 500 conversions costs 5 calls, not 500 sequential ones.
    async fn get_clicks(&self, transaction_ids: &[String]) -> StoreResult<HashMap<String, Event>> {
        let unique: HashSet<&String> = transaction_ids.iter().collect();
        let keys = unique.into_iter().map(|t| Self::key(t, CLICK)).collect();
        let now = self.clock.now();
        let mut clicks = HashMap::new();
        for item in batch_get(&self.client, &self.table, keys).await? {
            if is_expired(&item, now) {
                continue;
            }
            let click: Event = doc(&item, "stored click")?;
            clicks.insert(get_s(&item, TRANSACTION_ID).unwrap_or_default().to_string(), click);
        }
        Ok(clicks)
    }

    async fn get_status(&self, transaction_id: &str, key: &StatusKey) -> StoreResult<Option<CurrentStatus>> {
        self.get_live(transaction_id, &status_kind(key)).await?.map(|item| doc(&item, "stored status")).transpose()
    }

    async fn record(&self, touches: &[TouchRecord]) -> StoreResult<()> {
        let now = self.clock.now();
        // One write per key, the last record winning (a batch may not repeat a key).
        let mut latest: BTreeMap<(String, String), Item> = BTreeMap::new();
        for touch in touches {
            let item = self.touch_item(&touch.event, now)?;
            let key = (
                get_s(&item, TRANSACTION_ID).unwrap_or_default().to_string(),
                get_s(&item, KIND).unwrap_or_default().to_string(),
            );
            latest.insert(key, item);
        }
        batch_put(&self.client, &self.table, latest.into_values().collect()).await
    }

    async fn seen(&self, dedupe_keys: &[String]) -> StoreResult<HashSet<String>> {
        let mut by_key: HashMap<(String, String), Vec<&String>> = HashMap::new();
        for key in dedupe_keys {
            by_key.entry(seen_key(key)).or_default().push(key);
        }
        let keys = by_key.keys().map(|(t, k)| Self::key(t, k)).collect();
        let found = batch_get(&self.client, &self.table, keys).await?;
        let now = self.clock.now();
        let mut seen = HashSet::new();
        for item in found.iter().filter(|item| !is_expired(item, now)) {
            let key = (
                get_s(item, TRANSACTION_ID).unwrap_or_default().to_string(),
                get_s(item, KIND).unwrap_or_default().to_string(),
            );
            if let Some(originals) = by_key.get(&key) {
                seen.extend(originals.iter().map(|k| (*k).clone()));
            }
        }
        Ok(seen)
    }

    async fn mark_seen(&self, dedupe_keys: &[String]) -> StoreResult<()> {
        // A plain put is idempotent: marking again only renews the TTL.
        let now = self.clock.now();
        let unique: HashSet<(String, String)> = dedupe_keys.iter().map(|k| seen_key(k)).collect();
        let items = unique
            .into_iter()
            .map(|(transaction, kind)| {
                let mut item = Self::key(&transaction, &kind);
                item.insert(EXPIRES_AT.to_string(), expires_at(now, self.retention));
                item
            })
            .collect();
        batch_put(&self.client, &self.table, items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_markers_live_in_the_transaction_partition() {
        let (partition, kind) = seen_key("conversion|T%7C1%25|id:e1|approved");
        assert_eq!(partition, "T|1%");
        assert!(kind.starts_with("seen#") && kind.len() == 5 + 64);
        assert_eq!(seen_key("odd").0, SEEN_FALLBACK_PARTITION);
        assert_ne!(seen_key("a|T|x|approved").1, seen_key("a|T|x|rejected").1);
    }
}
