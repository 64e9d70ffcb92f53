//! `AccessStore` on DynamoDB, in the postbacks table (the configuration table), so a
//! postback write and its audit record are one `TransactWriteItems` on one table.
//!
//! - A key is two items: `key#<id>` (`type` = `key`, so the `by_type` index lists the
//!   keys in id order, which is creation order) and `keyhash#<sha-256 hex>`, read by a
//!   consistent GetItem to authenticate. Both are written, and removed, in one
//!   transaction with the key's audit record. Neither is ever a postback: postback ids
//!   have no `#`, and postback listings query only the event types.
//! - An audit record is `audit#<id>` with `audit_p` = `audit` and `audit_sk` (`at` +
//!   `#` + id, fixed width) for the `audit_newest` index, and `actor_key_id`, `action`,
//!   `target_id` for `audit_by_actor`, `audit_by_action`, `audit_by_target` (each sorted
//!   by `audit_sk`): every `GET /audit` is a Query of one index, newest first, the time
//!   range in the key condition; filters beyond the index's own are applied to the
//!   records read. `expires_at` (TTL) is `at` + `AUDIT_RETENTION_DAYS`.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::error::{build_error, unavailable};
use super::item::{doc, get_consistent, s, to_json, Item, DOC, EXPIRES_AT};
use super::postbacks::list_by_type;
use super::resources::{AUDIT_BY_ACTION, AUDIT_BY_ACTOR, AUDIT_BY_TARGET, AUDIT_NEWEST};
use crate::domain::access::{AuditCursor, AuditFilter, AuditPage, AuditRecord, ManagedKey};
use crate::ports::{AccessStore, StoreError, StoreResult};

const ID: &str = "id";
const TYPE: &str = "type";
const KEY_TYPE: &str = "key";
const AUDIT_P: &str = "audit_p";
const AUDIT_SK: &str = "audit_sk";
/// Records read per Query page, and pages one listing reads at most before it answers
/// with what it has and a cursor.
const AUDIT_PAGE: i32 = 200;
const AUDIT_READ_PAGES: usize = 10;

/// The default `AUDIT_RETENTION_DAYS`.
pub const DEFAULT_AUDIT_RETENTION_DAYS: i64 = 365;

fn key_item_id(id: &str) -> String {
    format!("key#{id}")
}

fn hash_item_id(hash: &str) -> String {
    format!("keyhash#{hash}")
}

/// The item of an audit record.
pub(crate) fn audit_item(record: &AuditRecord, retention: chrono::Duration) -> StoreResult<Item> {
    let mut item = Item::from([
        (ID.to_string(), s(format!("audit#{}", record.id))),
        (AUDIT_P.to_string(), s("audit")),
        (AUDIT_SK.to_string(), s(record.sort_key())),
        ("actor_key_id".to_string(), s(&record.actor.key_id)),
        ("action".to_string(), s(record.action.as_str())),
        (DOC.to_string(), s(to_json(record, "audit record")?)),
        (EXPIRES_AT.to_string(), AttributeValue::N((record.at + retention).timestamp().to_string())),
    ]);
    if let Some(target) = &record.target.id {
        item.insert("target_id".to_string(), s(target));
    }
    Ok(item)
}

/// The audit record's Put, for a transaction (never overwrites).
pub(crate) fn audit_put(
    table: &str,
    record: &AuditRecord,
    retention: chrono::Duration,
) -> StoreResult<TransactWriteItem> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(audit_item(record, retention)?))
        .condition_expression("attribute_not_exists(#id)")
        .expression_attribute_names("#id", ID)
        .build()
        .map_err(|e| build_error("Put", e))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// Whether a transaction failed on one of its conditions (not on the service).
pub(crate) fn lost_condition<R>(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>) -> bool {
    matches!(
        e.as_service_error(),
        Some(TransactWriteItemsError::TransactionCanceledException(c))
            if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
    )
}

#[derive(Debug, Clone)]
pub struct DynamoAccessStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: chrono::Duration,
}

impl DynamoAccessStore {
    /// `table` is the postbacks table; `retention` is `AUDIT_RETENTION_DAYS`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, retention: chrono::Duration) -> Self {
        Self { client, table: table.to_string(), retention }
    }

    fn key_items(key: &ManagedKey) -> StoreResult<(Item, Item)> {
        let body = s(to_json(key, "key")?);
        let listed = Item::from([
            (ID.to_string(), s(key_item_id(&key.id))),
            (TYPE.to_string(), s(KEY_TYPE)),
            (DOC.to_string(), body.clone()),
        ]);
        let by_hash = Item::from([(ID.to_string(), s(hash_item_id(&key.hash))), (DOC.to_string(), body)]);
        Ok((listed, by_hash))
    }

    async fn get_key(&self, id: &str) -> StoreResult<Option<ManagedKey>> {
        self.read_key(key_item_id(id), "DynamoDB GetItem key").await
    }

    /// The key in the item `item_id` (either of its two), read consistently; `what`
    /// names the call in the error.
    async fn read_key(&self, item_id: String, what: &str) -> StoreResult<Option<ManagedKey>> {
        let key = Item::from([(ID.to_string(), s(item_id))]);
        let item = get_consistent(&self.client, &self.table, key, what).await?;
        item.as_ref().map(|i| doc(i, "key")).transpose()
    }

    fn put_new(&self, item: Item) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .build()
            .map_err(|e| build_error("Put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete_existing(&self, id: String) -> StoreResult<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(ID, s(id))
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", ID)
            .build()
            .map_err(|e| build_error("Delete", e))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Which index serves `filter` and its partition value (the most selective first).
    fn index_of(filter: &AuditFilter) -> (&'static str, &'static str, String) {
        if let Some(t) = &filter.target_id {
            (AUDIT_BY_TARGET, "target_id", t.clone())
        } else if let Some(a) = &filter.actor_key_id {
            (AUDIT_BY_ACTOR, "actor_key_id", a.clone())
        } else if let Some(a) = filter.action {
            (AUDIT_BY_ACTION, "action", a.as_str().to_string())
        } else {
            (AUDIT_NEWEST, AUDIT_P, "audit".to_string())
        }
    }
}

#[async_trait]
impl AccessStore for DynamoAccessStore {
    async fn create_key(&self, key: &ManagedKey, audit: &AuditRecord) -> StoreResult<()> {
        let (listed, by_hash) = Self::key_items(key)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.put_new(listed)?)
            .transact_items(self.put_new(by_hash)?)
            .transact_items(audit_put(&self.table, audit, self.retention)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if lost_condition(&e) => Err(StoreError::Conflict(format!("key {} already exists", key.id))),
            Err(e) => Err(unavailable("DynamoDB TransactWriteItems key", e)),
        }
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ManagedKey>> {
        let key = self.read_key(hash_item_id(hash), "DynamoDB GetItem key hash").await?;
        // `last_used_at` is kept on the listed item only.
        Ok(key.map(|key| ManagedKey { last_used_at: None, ..key }))
    }

    async fn list_keys(&self) -> StoreResult<Vec<ManagedKey>> {
        let mut out = list_by_type(&self.client, &self.table, KEY_TYPE, "DynamoDB Query keys", |item| {
            doc::<ManagedKey>(item, "key")
        })
        .await?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn revoke_key(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        if id.contains('#') {
            return Ok(false);
        }
        let Some(key) = self.get_key(id).await? else { return Ok(false) };
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.delete_existing(key_item_id(id))?)
            .transact_items(self.delete_existing(hash_item_id(&key.hash))?)
            .transact_items(audit_put(&self.table, audit, self.retention)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Revoked meanwhile by another call: nothing written here.
            Err(e) if lost_condition(&e) => Ok(false),
            Err(e) => Err(unavailable("DynamoDB TransactWriteItems revoke key", e)),
        }
    }

    async fn touch_key(&self, id: &str, minute: DateTime<Utc>) -> StoreResult<()> {
        if id.contains('#') {
            return Ok(());
        }
        let Some(mut key) = self.get_key(id).await? else { return Ok(()) };
        if key.last_used_at.is_some_and(|t| t >= minute) {
            return Ok(());
        }
        key.last_used_at = Some(minute);
        // Only if the key still exists: a touch must not bring a revoked key back.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(ID, s(key_item_id(id)))
            .update_expression("SET #d = :d")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#d", DOC)
            .expression_attribute_names("#id", ID)
            .expression_attribute_values(":d", s(to_json(&key, "key")?))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(unavailable("DynamoDB UpdateItem key last use", e)),
        }
    }

    async fn append_audit(&self, record: &AuditRecord) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(record, self.retention)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB PutItem audit record", e))?;
        Ok(())
    }

    async fn query_audit(&self, filter: &AuditFilter) -> StoreResult<AuditPage> {
        let (index, attribute, value) = Self::index_of(filter);
        // The range in the key condition: from (inclusive) … min(to, cursor) (exclusive;
        // a sort key is `at#id`, so `<= to` as text excludes records at `to`, and the
        // cursor's own record is dropped below).
        let lower = filter.from.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        let to = filter.to.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        let upper = match (to, filter.cursor.as_ref().map(|AuditCursor(c)| c.clone())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut condition = "#p = :p".to_string();
        match (&lower, &upper) {
            (Some(_), Some(_)) => condition.push_str(" AND #sk BETWEEN :lo AND :hi"),
            (Some(_), None) => condition.push_str(" AND #sk >= :lo"),
            (None, Some(_)) => condition.push_str(" AND #sk <= :hi"),
            (None, None) => {}
        }
        let mut matched: Vec<AuditRecord> = Vec::new();
        let mut start: Option<Item> = None;
        let mut last_read: Option<String> = None;
        for _ in 0..AUDIT_READ_PAGES {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&condition)
                .expression_attribute_names("#p", attribute)
                .expression_attribute_values(":p", s(&value))
                .scan_index_forward(false)
                .limit(AUDIT_PAGE)
                .set_exclusive_start_key(start.take());
            if lower.is_some() || upper.is_some() {
                query = query.expression_attribute_names("#sk", AUDIT_SK);
            }
            if let Some(lo) = &lower {
                query = query.expression_attribute_values(":lo", s(lo));
            }
            if let Some(hi) = &upper {
                query = query.expression_attribute_values(":hi", s(hi));
            }
            let page = query.send().await.map_err(|e| unavailable("DynamoDB Query audit", e))?;
            for item in page.items() {
                let record: AuditRecord = doc(item, "audit record")?;
                last_read = Some(record.sort_key());
                if filter.matches(&record) {
                    matched.push(record);
                }
            }
            if matched.len() > filter.limit {
                break;
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(crate::domain::access::page_of(matched, filter)),
            }
        }
        if matched.len() > filter.limit {
            return Ok(crate::domain::access::page_of(matched, filter));
        }
        // Read bound reached: answer what matched, and resume after the last record read.
        let next_cursor = last_read.map(|k| AuditCursor(k).encode());
        Ok(AuditPage { items: matched, next_cursor })
    }
}
