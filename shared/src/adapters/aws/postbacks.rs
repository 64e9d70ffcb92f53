//! `PostbackStore` on DynamoDB: items keyed by `id`, listed per type through the
//! `by_type` index (all types: one query per type, merged by id).
//!
//! Versions: the live item carries its `version` (items from before read as 1). A
//! replace is one TransactWriteItems: the new live item, conditioned on the stored
//! version (optimistic concurrency), and the superseded one copied to `<id>#v<N>`.
//! Saved versions carry no `type`, so the `by_type` index never lists them; ids with `#`
//! are never a postback's. `versions` reads the live item, then the saved keys
//! `<id>#v1..v<N-1>` by BatchGetItem (consistent; no index, no scan).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use futures::future::try_join_all;

use super::access::{audit_put, lost_condition};
use super::error::{build_error, unavailable};
use super::item::{batch_delete, batch_get, doc, get_consistent, get_i64, get_s, n, s, to_json, Item, DOC};
use super::resources::POSTBACKS_BY_TYPE;
use crate::domain::access::AuditRecord;
use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackStore, StoreError, StoreResult};

const ID: &str = "id";
const TYPE: &str = "type";
const VERSION: &str = "version";
/// Separates a postback's id from a saved version's number in the saved item's id.
const VERSION_MARK: &str = "#v";

#[derive(Debug, Clone)]
pub struct DynamoPostbackStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// How long the audit records written with the postbacks live (TTL).
    audit_retention: chrono::Duration,
}

impl DynamoPostbackStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, audit_retention: chrono::Duration) -> Self {
        Self { client, table: table.to_string(), audit_retention }
    }

    fn item(postback: &Postback) -> StoreResult<Item> {
        Ok(Item::from([
            (ID.to_string(), s(&postback.id)),
            (TYPE.to_string(), s(postback.kind.as_str())),
            (DOC.to_string(), s(to_json(postback, "postback")?)),
            (VERSION.to_string(), n(postback.version)),
        ]))
    }

    fn saved_id(id: &str, version: u32) -> String {
        format!("{id}{VERSION_MARK}{version}")
    }

    /// The live item's version: its `version` attribute, 1 on items from before.
    fn stored_version(item: &Item) -> u32 {
        get_i64(item, VERSION).and_then(|v| u32::try_from(v).ok()).unwrap_or(crate::domain::postback::FIRST_VERSION)
    }

    /// A saved version's item: the superseded live item's document, no `type`.
    fn saved_item(live: &Item, id: &str, version: u32) -> StoreResult<Item> {
        let doc = live.get(DOC).cloned().ok_or_else(|| StoreError::Corrupt(format!("postback {id}: no {DOC}")))?;
        Ok(Item::from([(ID.to_string(), s(Self::saved_id(id, version))), (DOC.to_string(), doc)]))
    }

    async fn get_live(&self, id: &str) -> StoreResult<Option<Item>> {
        // Saved versions (`<id>#v<N>`) and anything else with `#` are never a postback.
        if id.contains('#') {
            return Ok(None);
        }
        get_consistent(&self.client, &self.table, Item::from([(ID.to_string(), s(id))]), "DynamoDB GetItem postback")
            .await
    }

    fn parse(item: &Item) -> StoreResult<Postback> {
        let postback: Postback = doc(item, "postback")?;
        if get_s(item, ID) != Some(postback.id.as_str()) {
            return Err(StoreError::Corrupt(format!("postback item {:?} holds id {}", get_s(item, ID), postback.id)));
        }
        Ok(postback)
    }

    async fn list_type(&self, kind: EventType) -> StoreResult<Vec<Postback>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(POSTBACKS_BY_TYPE)
                .key_condition_expression("#t = :t")
                .expression_attribute_names("#t", TYPE)
                .expression_attribute_values(":t", s(kind.as_str()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB Query postbacks by type", e))?;
            for item in page.items() {
                out.push(Self::parse(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl PostbackStore for DynamoPostbackStore {
    async fn create(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<()> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::item(postback)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .build()
            .map_err(|e| build_error("Put", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(audit_put(&self.table, audit, self.audit_retention)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if lost_condition(&e) => {
                Err(StoreError::Conflict(format!("postback {} already exists", postback.id)))
            }
            Err(e) => Err(unavailable("DynamoDB TransactWriteItems create postback", e)),
        }
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        self.get_live(id).await?.as_ref().map(Self::parse).transpose()
    }

    async fn replace(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<bool> {
        let id = postback.id.as_str();
        let Some(live) = self.get_live(id).await? else { return Ok(false) };
        let stored = Self::stored_version(&live);
        if stored.checked_add(1) != Some(postback.version) {
            return Err(StoreError::Conflict(format!(
                "postback {id} is at version {stored}, not {}",
                postback.version.saturating_sub(1)
            )));
        }
        // Items from before versions have no `version` attribute: they are version 1.
        let condition = if stored == crate::domain::postback::FIRST_VERSION {
            "attribute_exists(#id) AND (#v = :prev OR attribute_not_exists(#v))"
        } else {
            "attribute_exists(#id) AND #v = :prev"
        };
        let live_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::item(postback)?))
            .condition_expression(condition)
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":prev", n(stored))
            .build()
            .map_err(|e| build_error("Put", e))?;
        let saved_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::saved_item(&live, id, stored)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .build()
            .map_err(|e| build_error("Put", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(live_put).build())
            .transact_items(TransactWriteItem::builder().put(saved_put).build())
            .transact_items(audit_put(&self.table, audit, self.audit_retention)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                if !lost_condition(&e) {
                    return Err(unavailable("DynamoDB TransactWriteItems postback", e));
                }
                // Deleted meanwhile (→ not found), or replaced meanwhile (→ conflict).
                match self.get_live(id).await? {
                    None => Ok(false),
                    Some(_) => Err(StoreError::Conflict(format!("postback {id} was replaced concurrently"))),
                }
            }
        }
    }

    async fn delete(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let Some(live) = self.get_live(id).await? else { return Ok(false) };
        let stored = Self::stored_version(&live);
        // The live item (as read: a replace in between makes this lose) and the record,
        // in one transaction.
        let condition = if stored == crate::domain::postback::FIRST_VERSION {
            "attribute_exists(#id) AND (#v = :v OR attribute_not_exists(#v))"
        } else {
            "attribute_exists(#id) AND #v = :v"
        };
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(ID, s(id))
            .condition_expression(condition)
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":v", n(stored))
            .build()
            .map_err(|e| build_error("Delete", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(audit_put(&self.table, audit, self.audit_retention)?)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if lost_condition(&e) => {
                return match self.get_live(id).await? {
                    None => Ok(false),
                    Some(_) => Err(StoreError::Conflict(format!("postback {id} was replaced concurrently"))),
                }
            }
            Err(e) => return Err(unavailable("DynamoDB TransactWriteItems delete postback", e)),
        }
        // The saved versions go after the live item: if this fails, they are left
        // unreachable (`versions` needs the live item), never a postback without history.
        let keys = (1..stored).map(|v| Item::from([(ID.to_string(), s(Self::saved_id(id, v)))]));
        batch_delete(&self.client, &self.table, keys.collect()).await?;
        Ok(true)
    }

    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>> {
        let Some(live) = self.get_live(id).await? else { return Ok(None) };
        let current = Self::parse(&live)?;
        let keys = (1..Self::stored_version(&live)).map(|v| Item::from([(ID.to_string(), s(Self::saved_id(id, v)))]));
        let mut saved = Vec::new();
        for item in batch_get(&self.client, &self.table, keys.collect()).await? {
            let postback: Postback = doc(&item, "saved postback version")?;
            if postback.id != id {
                return Err(StoreError::Corrupt(format!("saved version of {id} holds id {}", postback.id)));
            }
            saved.push(postback);
        }
        saved.sort_by_key(|p| std::cmp::Reverse(p.version));
        Ok(Some(std::iter::once(current).chain(saved).collect()))
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        let kinds: Vec<EventType> = match kind {
            Some(k) => vec![k],
            None => EventType::ALL.to_vec(),
        };
        let mut all: Vec<Postback> =
            try_join_all(kinds.into_iter().map(|k| self.list_type(k))).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }
}
