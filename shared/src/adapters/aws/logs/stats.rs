//! `LogStore::hourly_stats`: counted from the `by_postback` index when read, with the
//! settled part of each hour kept in a roll-up item.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::keys::time_key;
use super::query::visible_condition;
use super::{DynamoLogStore, DURATION_MS, FIRED_KEY, ID, OUTCOME, POSTBACK_ID, TEST};
use crate::adapters::aws::error::unavailable;
use crate::adapters::aws::item::{batch_get, expires_at, get_i64, get_s, is_expired, n, s, Item, EXPIRES_AT};
use crate::adapters::aws::resources::LOGS_BY_POSTBACK;
use crate::domain::log::Outcome;
use crate::domain::stats::HourCounts;
use crate::ports::{StoreError, StoreResult};

/// Ids of the per-postback hourly roll-up items.
pub(super) const STATS_PREFIX: &str = "stats#";
/// A roll-up's position: every entry of its hour with `fired_key` below this time key
/// is in its counts.
const UPTO: &str = "upto";
/// How long after `fired_at` an entry can still be written: above the longest function
/// timeout (dispatch 60 s, config-api 29 s; `tests/it/template_yaml.rs` asserts it) and the index's
/// propagation. Entries older than this are final and go into the roll-ups.
pub const STATS_SETTLE: chrono::Duration = chrono::Duration::minutes(5);
/// Hours counted from the index at once.
const STATS_CONCURRENCY: usize = 8;

impl DynamoLogStore {
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

    /// One `BatchGetItem` of the asked hours' roll-ups, then per hour one Query of the
    /// entries after its roll-up's position (see `hour_counts`).
    pub(super) async fn counts_by_hour(
        &self,
        postback_id: &str,
        hours: &[DateTime<Utc>],
    ) -> StoreResult<std::collections::HashMap<DateTime<Utc>, HourCounts>> {
        use futures::{StreamExt, TryStreamExt};
        let now = self.clock.now();
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
