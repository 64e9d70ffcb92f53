//! DynamoDB item helpers shared by the stores: attribute access, TTL, and batch calls
//! that finish what DynamoDB left unprocessed.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, WriteRequest};
use chrono::{DateTime, Utc};

use super::error::{build_error, corrupt, unavailable};
use crate::ports::{StoreError, StoreResult};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The TTL attribute of the touches and logs tables (epoch seconds).
pub(crate) const EXPIRES_AT: &str = "expires_at";
/// The JSON document of a stored value; other attributes exist only for keys, indexes
/// and filters.
pub(crate) const DOC: &str = "doc";

/// BatchWriteItem takes at most 25 requests, BatchGetItem at most 100 keys.
const BATCH_WRITE_MAX: usize = 25;
const BATCH_GET_MAX: usize = 100;
/// Rounds of re-sending what DynamoDB returned unprocessed (it does so when throttled)
/// before the batch is reported unavailable.
const UNPROCESSED_ROUNDS: u32 = 6;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(crate) fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// Parse the item's JSON document.
pub(crate) fn doc<T: serde::de::DeserializeOwned>(item: &Item, what: &str) -> StoreResult<T> {
    let text = get_s(item, DOC).ok_or_else(|| StoreError::Corrupt(format!("{what}: no {DOC} attribute")))?;
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T, what: &str) -> StoreResult<String> {
    // Serializing our own plain structs cannot fail; map it anyway instead of panicking.
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("{what} cannot be serialized: {e}")))
}

/// The TTL value for an item written now that must live `retention`.
pub(crate) fn expires_at(now: DateTime<Utc>, retention: chrono::Duration) -> AttributeValue {
    n((now + retention).timestamp())
}

/// DynamoDB deletes expired items only eventually (up to days later), so reads treat an
/// item past its TTL as absent.
pub(crate) fn is_expired(item: &Item, now: DateTime<Utc>) -> bool {
    get_i64(item, EXPIRES_AT).is_some_and(|t| t <= now.timestamp())
}

fn backoff(round: u32) -> Duration {
    Duration::from_millis(25u64 << round.min(6))
}

/// Run one batch call per chunk and re-send what DynamoDB left unprocessed (it does so
/// under throttling), with backoff, for at most `UNPROCESSED_ROUNDS` rounds. `call`
/// returns the items it produced and the requests left unprocessed.
async fn until_processed<R, T, F, Fut>(table: &str, operation: &str, chunk: Vec<R>, mut call: F) -> StoreResult<Vec<T>>
where
    F: FnMut(Vec<R>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<(Vec<T>, Vec<R>)>>,
{
    let mut produced = Vec::new();
    let mut pending = chunk;
    let mut round = 0;
    while !pending.is_empty() {
        if round > 0 {
            tokio::time::sleep(backoff(round)).await;
        }
        if round >= UNPROCESSED_ROUNDS {
            return Err(StoreError::Unavailable(format!(
                "DynamoDB {operation} on {table}: {} requests still unprocessed (throttled)",
                pending.len()
            )));
        }
        let (items, unprocessed) = call(pending).await?;
        produced.extend(items);
        pending = unprocessed;
        round += 1;
    }
    Ok(produced)
}

/// Put all items (no conditions), in chunks of 25, re-sending unprocessed ones.
/// Callers pass items with distinct keys (a batch with a repeated key is rejected).
/// One item by key, strongly consistent (a read that must see the latest write). `what`
/// names the call in the error.
pub(crate) async fn get_consistent(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Item,
    what: &str,
) -> StoreResult<Option<Item>> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| unavailable(what, e))?;
    Ok(out.item)
}

pub(crate) async fn batch_put(client: &aws_sdk_dynamodb::Client, table: &str, items: Vec<Item>) -> StoreResult<()> {
    let mut requests = Vec::with_capacity(items.len());
    for item in items {
        let put = PutRequest::builder().set_item(Some(item)).build().map_err(|e| build_error("PutRequest", e))?;
        requests.push(WriteRequest::builder().put_request(put).build());
    }
    batch_write(client, table, requests).await
}

/// Delete items by key (no conditions), in chunks of 25, re-sending unprocessed ones.
/// Keys must be distinct.
pub(crate) async fn batch_delete(client: &aws_sdk_dynamodb::Client, table: &str, keys: Vec<Item>) -> StoreResult<()> {
    let mut requests = Vec::with_capacity(keys.len());
    for key in keys {
        let delete =
            DeleteRequest::builder().set_key(Some(key)).build().map_err(|e| build_error("DeleteRequest", e))?;
        requests.push(WriteRequest::builder().delete_request(delete).build());
    }
    batch_write(client, table, requests).await
}

/// Send write requests in chunks of 25, re-sending unprocessed ones.
async fn batch_write(client: &aws_sdk_dynamodb::Client, table: &str, requests: Vec<WriteRequest>) -> StoreResult<()> {
    for chunk in requests.chunks(BATCH_WRITE_MAX) {
        until_processed(table, "BatchWriteItem", chunk.to_vec(), |pending| async move {
            let out = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB BatchWriteItem", e))?;
            let unprocessed = out.unprocessed_items.and_then(|mut m| m.remove(table)).unwrap_or_default();
            Ok((Vec::<()>::new(), unprocessed))
        })
        .await?;
    }
    Ok(())
}

/// Get items by key (strongly consistent), in chunks of 100, re-requesting unprocessed
/// keys. Keys must be distinct. Returns the items found, in no particular order.
pub(crate) async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<Item>,
) -> StoreResult<Vec<Item>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(BATCH_GET_MAX) {
        let items = until_processed(table, "BatchGetItem", chunk.to_vec(), |pending| async move {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .map_err(|e| build_error("KeysAndAttributes", e))?;
            let out = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB BatchGetItem", e))?;
            let items = out.responses.and_then(|mut m| m.remove(table)).unwrap_or_default();
            let unprocessed =
                out.unprocessed_keys.and_then(|mut m| m.remove(table)).map(|k| k.keys).unwrap_or_default();
            Ok((items, unprocessed))
        })
        .await?;
        found.extend(items);
    }
    Ok(found)
}
