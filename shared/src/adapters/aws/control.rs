//! `ControlStore` on DynamoDB: one table (`ControlTable`, keys `pk`/`sk`), shared by
//! every dispatch invocation (and config-api), so all of them see one breaker, one slot
//! cursor and one set of held firings per postback. Items (see `docs/aws.md`):
//!
//! - breaker: `pk = breaker#<postback id>`, `sk = breaker`; `version` (N) and `doc` (the
//!   `Breaker` as JSON). Writes are conditional on `version` (`attribute_not_exists` for
//!   the first), so concurrent writers cannot overwrite each other.
//! - held firing: `pk = held#<postback id>`, `sk = <queued_at, fixed-width RFC 3339 with
//!   nanoseconds>#<delivery id>` (text order = release order), `doc` = the firing,
//!   `releases` = its hold's generation (the one hold `unhold` may delete),
//!   `claimed_until` = the end of a release's claim (unix ms; `claim`).
//! - slot cursor: `pk = slot#<postback id>`, `sk = cursor`; `second`, `taken` and the TTL
//!   attribute `expires_at`. Taken with conditional UpdateItems that implement
//!   `domain::slot::next_slot` atomically (see `take_slot`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure, Select};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::error::unavailable;
use super::item::{
    batch_delete, batch_get, batch_put, doc, get_consistent, get_i64, get_s, n, s, to_json, Item, DOC, EXPIRES_AT,
};
use super::logs::time_key;
use crate::domain::breaker::Breaker;
use crate::domain::firing::Firing;
use crate::ports::{ControlStore, StoreError, StoreResult, StoredBreaker};

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
const VERSION: &str = "version";
const SECOND: &str = "second";
const TAKEN: &str = "taken";
/// A held firing's `releases`: `unhold` deletes only the hold of the generation it read.
const RELEASES: &str = "releases";

/// A held firing's release claim: until when (unix milliseconds) one release has it.
const CLAIMED_UNTIL: &str = "claimed_until";

/// Conditional writes of one `claim` or `unhold` in flight at once.
const UNHOLD_CONCURRENCY: usize = 16;

const BREAKER_PREFIX: &str = "breaker#";
const HELD_PREFIX: &str = "held#";
const SLOT_PREFIX: &str = "slot#";
const BREAKER_SK: &str = "breaker";
const CURSOR_SK: &str = "cursor";

/// A slot cursor lives this long past its second (DynamoDB deletes it some time after):
/// a cursor in the past only says "nothing taken since", as an absent one does.
const SLOT_TTL_S: i64 = 3_600;

/// Conditional updates one `take_slot` may try. Each failed one means another taker
/// moved the cursor meanwhile (progress), so this only runs out under extreme
/// contention; then the caller gets `Unavailable` and the firing is retried later.
const MAX_SLOT_ATTEMPTS: u32 = 64;

#[derive(Debug)]
pub struct DynamoControlStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The slot cursor's second as this process last saw it, per postback: the first
    /// update guesses from it (one write per slot while a second fills), and a wrong
    /// guess only costs one failed conditional write.
    cursor_hint: Mutex<HashMap<String, i64>>,
}

/// The three conditional updates of a slot cursor; which one applies follows from the
/// cursor's state as `next_slot` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotUpdate {
    /// No cursor, or one before `from`: the cursor becomes (`from`, 1).
    Jump,
    /// The cursor is at this second (at or after `from`) with room: one more taken.
    Add(i64),
    /// The cursor is at this second and it is full: the cursor becomes (second + 1, 1).
    Next(i64),
}

/// The cursor's (second, taken), or `None` if there is none.
type Cursor = Option<(i64, u32)>;

fn key(pk: String, sk: impl Into<String>) -> Item {
    Item::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

fn breaker_key(postback_id: &str) -> Item {
    key(format!("{BREAKER_PREFIX}{postback_id}"), BREAKER_SK)
}

fn slot_key(postback_id: &str) -> Item {
    key(format!("{SLOT_PREFIX}{postback_id}"), CURSOR_SK)
}

fn held_pk(postback_id: &str) -> String {
    format!("{HELD_PREFIX}{postback_id}")
}

/// A held firing's key: the port's "same firing" is (postback, queued_at, delivery id).
fn held_key(firing: &Firing) -> Item {
    key(held_pk(&firing.postback_id), format!("{}#{}", time_key(firing.queued_at), firing.delivery_id))
}

/// One firing per held key (the last given wins): DynamoDB refuses a batch that names a
/// key twice, and one conditional write per key is enough.
fn distinct_held(firings: &[Firing]) -> Vec<&Firing> {
    let mut by_key: BTreeMap<(String, String), &Firing> = BTreeMap::new();
    for firing in firings {
        let key = held_key(firing);
        let id = (get_s(&key, PK).unwrap_or_default().to_string(), get_s(&key, SK).unwrap_or_default().to_string());
        by_key.insert(id, firing);
    }
    by_key.into_values().collect()
}

fn parse_breaker(item: &Item) -> StoreResult<StoredBreaker> {
    let version = get_i64(item, VERSION)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("breaker item {:?} has no valid {VERSION}", get_s(item, PK))))?;
    Ok(StoredBreaker { breaker: doc(item, "breaker")?, version })
}

fn parse_cursor(item: &Item) -> Cursor {
    let second = get_i64(item, SECOND)?;
    let taken = get_i64(item, TAKEN).and_then(|t| u32::try_from(t).ok())?;
    Some((second, taken))
}

impl DynamoControlStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        Self { client, table: table.to_string(), cursor_hint: Mutex::default() }
    }

    fn hint(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.cursor_hint.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A strongly consistent Query of the items under one partition key.
    fn query_partition(&self, pk: &str) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true)
    }

    /// Every key under `pk` (a Query per page of keys only).
    async fn keys_under(&self, pk: &str) -> StoreResult<Vec<Item>> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .query_partition(pk)
                .expression_attribute_names("#sk", SK)
                .projection_expression("#pk, #sk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query control keys", e))?;
            keys.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(keys),
            }
        }
    }

    /// Read the slot cursor (consistently), when a failed update did not return it.
    async fn read_cursor(&self, postback_id: &str) -> StoreResult<Cursor> {
        let item =
            get_consistent(&self.client, &self.table, slot_key(postback_id), "DynamoDB GetItem slot cursor").await?;
        Ok(item.as_ref().and_then(parse_cursor))
    }

    /// Try one conditional update. `Ok(Ok(second))`: the slot taken; `Ok(Err(cursor))`:
    /// the condition failed, with the cursor as it is now.
    async fn try_slot(
        &self,
        postback_id: &str,
        update: SlotUpdate,
        from: i64,
        limit: u32,
    ) -> StoreResult<Result<i64, Cursor>> {
        let (expression, condition, taken_in, values): (&str, &str, i64, Vec<(&str, AttributeValue)>) = match update {
            SlotUpdate::Jump => (
                "SET #sec = :second, #taken = :one, #exp = :exp",
                "attribute_not_exists(#sec) OR #sec < :second",
                from,
                vec![],
            ),
            SlotUpdate::Add(at) => (
                "SET #taken = #taken + :one, #exp = :exp",
                "#sec = :second AND #taken < :limit",
                at,
                vec![(":limit", n(limit))],
            ),
            SlotUpdate::Next(at) => (
                "SET #sec = :next, #taken = :one, #exp = :exp",
                "#sec = :second AND #taken >= :limit",
                at.saturating_add(1),
                vec![(":limit", n(limit)), (":next", n(at.saturating_add(1)))],
            ),
        };
        // `:second` is the cursor's second the condition compares with (for `Next` the
        // one that is full), `taken_in` the one the slot is taken in.
        let compared = match update {
            SlotUpdate::Jump => from,
            SlotUpdate::Add(at) | SlotUpdate::Next(at) => at,
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(slot_key(postback_id)))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#sec", SECOND)
            .expression_attribute_names("#taken", TAKEN)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":second", n(compared))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", n(taken_in.saturating_add(SLOT_TTL_S)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(Ok(taken_in)),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                    failed,
                )) => match failed.item() {
                    // The cursor as it is now, returned with the failure (no extra read).
                    Some(item) if !item.is_empty() => Ok(Err(parse_cursor(item))),
                    // No cursor (or an emulator that does not return it): read it.
                    _ => Ok(Err(self.read_cursor(postback_id).await?)),
                },
                _ => Err(unavailable("DynamoDB UpdateItem slot cursor", e)),
            },
        }
    }
}

/// The update that takes the next slot, given the cursor (`next_slot`'s three cases).
fn slot_update(cursor: Cursor, from: i64, limit: u32) -> SlotUpdate {
    match cursor {
        Some((second, taken)) if second >= from => {
            if taken < limit {
                SlotUpdate::Add(second)
            } else {
                SlotUpdate::Next(second)
            }
        }
        _ => SlotUpdate::Jump,
    }
}

#[async_trait]
impl ControlStore for DynamoControlStore {
    async fn breaker(&self, postback_id: &str) -> StoreResult<Option<StoredBreaker>> {
        let item =
            get_consistent(&self.client, &self.table, breaker_key(postback_id), "DynamoDB GetItem breaker").await?;
        item.as_ref().map(parse_breaker).transpose()
    }

    async fn breakers(&self, postback_ids: &[String]) -> StoreResult<HashMap<String, StoredBreaker>> {
        // BatchGetItem refuses repeated keys.
        let ids: BTreeSet<&String> = postback_ids.iter().collect();
        let keys = ids.iter().map(|id| breaker_key(id)).collect();
        let mut found = HashMap::new();
        for item in batch_get(&self.client, &self.table, keys).await? {
            let id = get_s(&item, PK)
                .and_then(|pk| pk.strip_prefix(BREAKER_PREFIX))
                .ok_or_else(|| StoreError::Corrupt(format!("breaker item with key {:?}", get_s(&item, PK))))?
                .to_string();
            found.insert(id, parse_breaker(&item)?);
        }
        Ok(found)
    }

    async fn put_breaker(&self, postback_id: &str, breaker: &Breaker, expected: Option<u64>) -> StoreResult<bool> {
        let version = expected.map_or(1, |v| v.saturating_add(1));
        let mut item = breaker_key(postback_id);
        item.insert(VERSION.to_string(), n(version));
        item.insert(DOC.to_string(), s(to_json(breaker, "breaker")?));
        let request = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let request = match expected {
            None => request.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", PK),
            Some(v) => request
                .condition_expression("#v = :expected")
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(":expected", n(v)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable("DynamoDB PutItem breaker", e)),
        }
    }

    async fn hold(&self, firings: &[Firing]) -> StoreResult<()> {
        let mut items = Vec::with_capacity(firings.len());
        for firing in distinct_held(firings) {
            let mut item = held_key(firing);
            item.insert(DOC.to_string(), s(to_json(firing, "held firing")?));
            item.insert(RELEASES.to_string(), n(firing.releases));
            items.push(item);
        }
        batch_put(&self.client, &self.table, items).await
    }

    async fn held(&self, postback_id: &str, max: usize) -> StoreResult<Vec<Firing>> {
        let mut firings = Vec::new();
        let mut start: Option<Item> = None;
        while firings.len() < max {
            let want = i32::try_from(max - firings.len()).unwrap_or(i32::MAX);
            let page = self
                .query_partition(&held_pk(postback_id))
                .scan_index_forward(true)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query held firings", e))?;
            for item in page.items() {
                firings.push(doc(item, "held firing")?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        firings.truncate(max);
        Ok(firings)
    }

    async fn unhold(&self, firings: &[Firing]) -> StoreResult<()> {
        // One conditional DeleteItem per firing (BatchWriteItem takes no condition): a
        // hold written since by a released copy (more `releases`) stays. Items from
        // before `releases` was written have none and go as before.
        let keys: Vec<(Item, u32)> = distinct_held(firings).into_iter().map(|f| (held_key(f), f.releases)).collect();
        let deletes = keys.into_iter().map(|(key, releases)| async move {
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression("attribute_not_exists(#r) OR #r = :r")
                .expression_attribute_names("#r", RELEASES)
                .expression_attribute_values(":r", n(releases))
                .send()
                .await;
            match deleted {
                Ok(_) => Ok(()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
                Err(e) => Err(unavailable("DynamoDB DeleteItem held firing", e)),
            }
        });
        futures::stream::iter(deletes).buffer_unordered(UNHOLD_CONCURRENCY).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    async fn claim(&self, firings: &[Firing], now: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<Firing>> {
        // One conditional UpdateItem per firing: held (the item exists) with this
        // generation, and no claim running past now. A hold written since replaced the
        // item, claim included.
        let unique: Vec<Firing> = distinct_held(firings).into_iter().cloned().collect();
        let (now_ms, until_ms) = (now.timestamp_millis(), until.timestamp_millis());
        let claims = unique.into_iter().map(|firing| async move {
            let claimed = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(held_key(&firing)))
                .update_expression("SET #c = :until")
                .condition_expression(
                    "attribute_exists(#pk) AND (attribute_not_exists(#r) OR #r = :r) \
                     AND (attribute_not_exists(#c) OR #c <= :now)",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#r", RELEASES)
                .expression_attribute_names("#c", CLAIMED_UNTIL)
                .expression_attribute_values(":r", n(firing.releases))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":until", n(until_ms))
                .send()
                .await;
            match claimed {
                Ok(_) => Ok(Some(firing)),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
                Err(e) => Err(unavailable("DynamoDB UpdateItem held firing claim", e)),
            }
        });
        let claimed: Vec<Option<Firing>> =
            futures::stream::iter(claims).buffered(UNHOLD_CONCURRENCY).try_collect().await?;
        Ok(claimed.into_iter().flatten().collect())
    }

    async fn held_count(&self, postback_id: &str) -> StoreResult<u64> {
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .query_partition(&held_pk(postback_id))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query held count", e))?;
            count += u64::try_from(page.count).unwrap_or(0);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
    }

    /// Atomic across invocations without a lock: each attempt is one conditional
    /// UpdateItem that applies only if the cursor is as the attempt assumed; when it is
    /// not, DynamoDB returns the cursor as it is (`ALL_OLD` on the failed check) and the
    /// next attempt follows from that. No update is ever lost: a write lands only on
    /// the state it was computed from.
    async fn take_slot(&self, postback_id: &str, from_second: i64, limit: u32) -> StoreResult<i64> {
        let limit = limit.max(1);
        // First guess: the cursor where this process last saw it (at most one wrong try).
        let hinted = self.hint().get(postback_id).copied();
        let mut update = match hinted {
            Some(second) if second >= from_second => SlotUpdate::Add(second),
            _ => SlotUpdate::Jump,
        };
        for _ in 0..MAX_SLOT_ATTEMPTS {
            match self.try_slot(postback_id, update, from_second, limit).await? {
                Ok(second) => {
                    self.hint().insert(postback_id.to_string(), second);
                    return Ok(second);
                }
                Err(cursor) => update = slot_update(cursor, from_second, limit),
            }
        }
        Err(StoreError::Unavailable(format!(
            "rate-limit slot of {postback_id}: no slot after {MAX_SLOT_ATTEMPTS} contended attempts"
        )))
    }

    async fn forget(&self, postback_id: &str) -> StoreResult<()> {
        let held = self.keys_under(&held_pk(postback_id)).await?;
        batch_delete(&self.client, &self.table, held).await?;
        batch_delete(&self.client, &self.table, vec![breaker_key(postback_id), slot_key(postback_id)]).await?;
        self.hint().remove(postback_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_update_follows_next_slot() {
        use crate::domain::slot::next_slot;
        // (cursor, from, limit): the update chosen must land where next_slot says.
        let cases: [(Cursor, i64, u32); 6] = [
            (None, 100, 3),
            (Some((90, 3)), 100, 3),
            (Some((100, 1)), 100, 3),
            (Some((100, 3)), 100, 3),
            (Some((104, 0)), 100, 3),
            (Some((104, 3)), 100, 3),
        ];
        for (cursor, from, limit) in cases {
            let expected = next_slot(cursor.unwrap_or((i64::MIN, 0)), from, limit).0;
            let landed = match slot_update(cursor, from, limit) {
                SlotUpdate::Jump => from,
                SlotUpdate::Add(second) => second,
                SlotUpdate::Next(second) => second + 1,
            };
            assert_eq!(landed, expected, "{cursor:?} from {from} limit {limit}");
        }
    }

    #[test]
    fn held_keys_sort_by_queued_at_then_delivery_id() {
        let t = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let firing = |id: &str, at: chrono::DateTime<chrono::Utc>| {
            let mut f = crate::testing::fixtures::firing(id, at);
            f.queued_at = at;
            f
        };
        let ordered = [
            firing("d_b", t),
            firing("d_c", t),
            firing("d_a", t + chrono::Duration::nanoseconds(1)),
            firing("d_0", t + chrono::Duration::seconds(10)),
        ];
        let keys: Vec<String> =
            ordered.iter().map(|f| get_s(&held_key(f), SK).unwrap_or_default().to_string()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
