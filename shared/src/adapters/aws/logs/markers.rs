//! The delivered markers (`record_delivered`, `is_delivered`) and the replay markers
//! (`replay_states`, `mark_replayed`) kept in the logs table beside the entries.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::keys::{cursor_at, delivered_entry_id, fired_key};
use super::{DynamoLogStore, ID, LISTED_UNTIL};
use crate::adapters::aws::error::{build_error, unavailable};
use crate::adapters::aws::item::{batch_get, batch_put, expires_at, get_s, is_expired, n, s, Item, EXPIRES_AT};
use crate::domain::log::LogEntry;
use crate::ports::{ReplayState, StoreResult};

/// A bare delivered marker's pointer to its entry (entries not given
/// `delivered_entry_id`).
const LOG_ID: &str = "log_id";

/// Replay markers (`replayed#<delivery id>`): the `fired_key` of the newest entry of the
/// delivery id a bulk replay queued again, in `replayed_key` (not `fired_key`: no
/// index may list them).
pub(super) const REPLAYED_PREFIX: &str = "replayed#";
const REPLAYED_KEY: &str = "replayed_key";
/// Marker reads and writes in flight at once during a replay selection.
const MARKER_CONCURRENCY: usize = 16;
/// A delivered marker outlives any redelivery of the message that delivered: SQS keeps
/// messages 14 days (and a DLQ redrive can bring one back within that time).
pub(super) const MIN_MARKER_TTL: chrono::Duration = chrono::Duration::days(15);

impl DynamoLogStore {
    /// `LogStore::record_delivered`: the entry as its own marker, or a bare marker with it.
    pub(super) async fn put_delivered(&self, entry: &LogEntry) -> StoreResult<bool> {
        let now = self.clock.now();
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

    /// `BatchGetItem` of the ids' delivered and replay markers, 100 keys a call, several
    /// calls at once.
    pub(super) async fn read_replay_markers(
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
        let now = self.clock.now();
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
    pub(super) async fn put_replay_markers(&self, entries: &[LogEntry]) -> StoreResult<()> {
        use futures::{StreamExt, TryStreamExt};
        let mut newest: BTreeMap<&str, String> = BTreeMap::new();
        for entry in entries {
            let key = fired_key(entry.fired_at, &entry.id);
            let slot = newest.entry(entry.delivery_id.as_str()).or_default();
            if key > *slot {
                *slot = key;
            }
        }
        let now = self.clock.now();
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
}
