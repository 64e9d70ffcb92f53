//! `PostbackStore` on DynamoDB: items keyed by `id`, listed per type through the
//! `by_type` index (all types: one query per type, merged by id).
//!
//! Versions: the live item carries its `version` (items from before read as 1). A
//! replace is one TransactWriteItems: the new live item, conditioned on the stored
//! version (optimistic concurrency), and the superseded one copied to `<id>#v<N>`.
//! Saved versions carry no `type`, so the `by_type` index never lists them; ids with `#`
//! are never a postback's. `versions` reads the live item, then the saved keys
//! `<id>#v1..v<N-1>` by BatchGetItem (consistent; no index, no scan).
//!
//! The change stamp (`changes_since`, `snapshot`): the item `#catalog` holds `stamp`,
//! and every create, replace and delete is one TransactWriteItems that also sets the
//! stamp to the next number (conditioned on the number read, so concurrent writers
//! take turns: the loser re-reads and tries again) and puts the change record
//! `#change#<stamp>` naming the postback (TTL one day). Neither carries `type`, so the
//! `by_type` index never lists them. A function's check is one strongly consistent
//! GetItem of `#catalog`; when the stamp moved, the change records in between and then
//! the changed postbacks are read with consistent reads (never through the index, which
//! may lag). A full `snapshot` reads the stamp, lists through the index, and reads the
//! postbacks of the writes of the last `INDEX_SETTLE` with consistent reads, patching
//! them in: what the index has not caught up with yet.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};
use futures::future::try_join_all;

use super::access::audit_put;
use super::error::{build_error, unavailable};
use super::item::{batch_delete, batch_get, doc, get_consistent, get_i64, get_s, n, s, to_json, Item, DOC, EXPIRES_AT};
use super::resources::POSTBACKS_BY_TYPE;
use crate::domain::access::AuditRecord;
use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{Clock, PostbackChanges, PostbackSnapshot, PostbackStore, StoreError, StoreResult};

const ID: &str = "id";
const TYPE: &str = "type";
const VERSION: &str = "version";
/// Separates a postback's id from a saved version's number in the saved item's id.
const VERSION_MARK: &str = "#v";
/// The item holding the change stamp, and its attribute.
const CATALOG_ID: &str = "#catalog";
const STAMP: &str = "stamp";
/// A change record's id is this + its stamp; it names the postback written
/// (`CHANGED`) and when (`AT`, epoch milliseconds).
const CHANGE_MARK: &str = "#change#";
const CHANGED: &str = "postback_id";
const AT: &str = "at";
/// How long change records are kept (their TTL). A function whose index is older than
/// that finds a record missing and reloads whole.
const CHANGE_RETENTION: chrono::Duration = chrono::Duration::days(1);
/// Most change records one `changes_since` reads (one BatchGetItem); more: reload whole.
const MAX_CHANGES_READ: u64 = 100;
/// How long after a write the `by_type` index may still not show it (DynamoDB's global
/// secondary indexes are eventually consistent, typically well under a second):
/// `snapshot` reads the postbacks of the writes this recent with consistent reads.
pub const INDEX_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Most change records `snapshot` reads looking for writes within `INDEX_SETTLE`...
const MAX_SETTLE_READ: u64 = 1_000;
/// ...this many a call, newest first (one call when writes are rare, as they are: every
/// key read costs a read unit, found or not).
const SETTLE_CHUNK: u64 = 10;
/// Tries of a write whose stamp another write kept taking first.
const STAMP_TRIES: u32 = 12;

/// The cancellation reason codes of a TransactWriteItems, one per item ("" for none).
fn cancellation_codes(error: &TransactWriteItemsError) -> Option<Vec<String>> {
    match error {
        TransactWriteItemsError::TransactionCanceledException(c) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code().unwrap_or_default().to_string()).collect())
        }
        _ => None,
    }
}

fn failed_condition(code: &str) -> bool {
    code == "ConditionalCheckFailed"
}

#[derive(Debug, Clone)]
pub struct DynamoPostbackStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// How long the audit records written with the postbacks live (TTL).
    audit_retention: chrono::Duration,
    /// The time of change records and of the `INDEX_SETTLE` window.
    clock: Arc<dyn Clock>,
}

impl DynamoPostbackStore {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: &str,
        audit_retention: chrono::Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { client, table: table.to_string(), audit_retention, clock }
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

    /// The condition that the live item exists at version `stored` (`:v`, with `#id` and
    /// `#v` named): items from before versions have no `version` attribute (version 1).
    fn at_version(stored: u32) -> &'static str {
        if stored == crate::domain::postback::FIRST_VERSION {
            "attribute_exists(#id) AND (#v = :v OR attribute_not_exists(#v))"
        } else {
            "attribute_exists(#id) AND #v = :v"
        }
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

    fn key(id: &str) -> Item {
        Item::from([(ID.to_string(), s(id))])
    }

    fn change_id(stamp: u64) -> String {
        format!("{CHANGE_MARK}{stamp}")
    }

    /// The current change stamp (0: no write yet), strongly consistent.
    async fn read_stamp(&self) -> StoreResult<u64> {
        let item =
            get_consistent(&self.client, &self.table, Self::key(CATALOG_ID), "DynamoDB GetItem postback stamp").await?;
        let stamp = item.as_ref().and_then(|i| get_i64(i, STAMP)).unwrap_or(0);
        u64::try_from(stamp).map_err(|_| StoreError::Corrupt(format!("postback stamp {stamp}")))
    }

    /// Make `items` (a postback's own writes, with their conditions) together with the
    /// next stamp and its change record naming `id`, as one TransactWriteItems; when
    /// another write took the stamp first, re-read it and try again. `Ok(Err(codes))`:
    /// the transaction was cancelled by a condition of `items` (one code per item).
    async fn write_stamped(&self, id: &str, items: Vec<TransactWriteItem>) -> StoreResult<Result<(), Vec<String>>> {
        let own = items.len();
        for round in 0..STAMP_TRIES {
            if round > 0 {
                // Back off a little, more each round, jittered: concurrent writers spread out.
                let ms = (5u64 << round.min(6)) + u64::from(rand::random::<u8>() % 16);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let stamp = self.read_stamp().await?;
            let next = stamp + 1;
            let condition = if stamp == 0 { "attribute_not_exists(#s)" } else { "#s = :stamp" };
            let mut bump = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(CATALOG_ID)))
                .update_expression("SET #s = :next")
                .condition_expression(condition)
                .expression_attribute_names("#s", STAMP)
                .expression_attribute_values(":next", n(next));
            if stamp != 0 {
                bump = bump.expression_attribute_values(":stamp", n(stamp));
            }
            let bump = bump.build().map_err(|e| build_error("Update", e))?;
            let now = self.clock.now();
            let record = Item::from([
                (ID.to_string(), s(Self::change_id(next))),
                (CHANGED.to_string(), s(id)),
                (AT.to_string(), n(now.timestamp_millis())),
                (EXPIRES_AT.to_string(), n((now + CHANGE_RETENTION).timestamp())),
            ]);
            let record = Put::builder()
                .table_name(&self.table)
                .set_item(Some(record))
                .build()
                .map_err(|e| build_error("Put", e))?;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .transact_items(TransactWriteItem::builder().update(bump).build())
                .transact_items(TransactWriteItem::builder().put(record).build())
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Ok(())),
                Err(e) => e,
            };
            let Some(codes) = error.as_service_error().and_then(cancellation_codes) else {
                return Err(unavailable("DynamoDB TransactWriteItems postback", error));
            };
            if codes.iter().take(own).any(|c| failed_condition(c)) {
                return Ok(Err(codes.into_iter().take(own).collect()));
            }
            let stamp_taken = codes.get(own).is_some_and(|c| failed_condition(c));
            let conflict = codes.iter().any(|c| c == "TransactionConflict");
            if !(stamp_taken || conflict) {
                return Err(unavailable("DynamoDB TransactWriteItems postback", error));
            }
        }
        Err(StoreError::Unavailable(format!("postback {id}: other writes kept taking the change stamp; try again")))
    }

    /// The ids named by the change records `from..=to` that exist (expired ones do not).
    async fn change_records(&self, from: u64, to: u64) -> StoreResult<Vec<(u64, String, i64)>> {
        if from > to {
            return Ok(Vec::new());
        }
        let keys = (from..=to).map(|stamp| Self::key(&Self::change_id(stamp))).collect();
        let mut records = Vec::new();
        for item in batch_get(&self.client, &self.table, keys).await? {
            let stamp = get_s(&item, ID).and_then(|i| i.strip_prefix(CHANGE_MARK)).and_then(|n| n.parse().ok());
            match (stamp, get_s(&item, CHANGED), get_i64(&item, AT)) {
                (Some(stamp), Some(id), Some(at)) => records.push((stamp, id.to_string(), at)),
                _ => return Err(StoreError::Corrupt(format!("postback change record {:?}", get_s(&item, ID)))),
            }
        }
        records.sort_unstable();
        Ok(records)
    }

    /// The ids of the postbacks written up to `stamp` within the last `INDEX_SETTLE`
    /// (by the change records, newest first, until one is older or missing).
    async fn recent_changes(&self, stamp: u64) -> StoreResult<std::collections::BTreeSet<String>> {
        let settle = chrono::Duration::from_std(INDEX_SETTLE).unwrap_or_default();
        let cutoff = (self.clock.now() - settle).timestamp_millis();
        let mut ids = std::collections::BTreeSet::new();
        let mut to = stamp;
        while to > 0 && stamp - to < MAX_SETTLE_READ {
            let from = to.saturating_sub(SETTLE_CHUNK - 1).max(1);
            let records = self.change_records(from, to).await?;
            let whole = records.len() as u64 == to - from + 1;
            let mut older = false;
            for (_, id, at) in records {
                if at >= cutoff {
                    ids.insert(id);
                } else {
                    older = true;
                }
            }
            if older || !whole {
                break;
            }
            to = from - 1;
        }
        Ok(ids)
    }

    fn parse(item: &Item) -> StoreResult<Postback> {
        let postback: Postback = doc(item, "postback")?;
        if get_s(item, ID) != Some(postback.id.as_str()) {
            return Err(StoreError::Corrupt(format!("postback item {:?} holds id {}", get_s(item, ID), postback.id)));
        }
        Ok(postback)
    }

    async fn list_type(&self, kind: EventType) -> StoreResult<Vec<Postback>> {
        list_by_type(&self.client, &self.table, kind.as_str(), "DynamoDB Query postbacks by type", Self::parse).await
    }
}

/// Every item whose `type` is `kind`, through the `by_type` index (a Query per page),
/// each read by `parse`: a type's postbacks, or the managed keys (`access.rs`). `what`
/// names the call in the error.
pub(super) async fn list_by_type<T>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    kind: &str,
    what: &str,
    parse: impl Fn(&Item) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .index_name(POSTBACKS_BY_TYPE)
            .key_condition_expression("#t = :t")
            .expression_attribute_names("#t", TYPE)
            .expression_attribute_values(":t", s(kind))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| unavailable(what, e))?;
        for item in page.items() {
            out.push(parse(item)?);
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(out),
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
        let items =
            vec![TransactWriteItem::builder().put(put).build(), audit_put(&self.table, audit, self.audit_retention)?];
        match self.write_stamped(&postback.id, items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::Conflict(format!("postback {} already exists", postback.id))),
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
        let live_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::item(postback)?))
            .condition_expression(Self::at_version(stored))
            .expression_attribute_names("#id", ID)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":v", n(stored))
            .build()
            .map_err(|e| build_error("Put", e))?;
        let saved_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::saved_item(&live, id, stored)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .build()
            .map_err(|e| build_error("Put", e))?;
        let items = vec![
            TransactWriteItem::builder().put(live_put).build(),
            TransactWriteItem::builder().put(saved_put).build(),
            audit_put(&self.table, audit, self.audit_retention)?,
        ];
        match self.write_stamped(id, items).await? {
            Ok(()) => Ok(true),
            // Deleted meanwhile (→ not found), or replaced meanwhile (→ conflict).
            Err(_) => match self.get_live(id).await? {
                None => Ok(false),
                Some(_) => Err(StoreError::Conflict(format!("postback {id} was replaced concurrently"))),
            },
        }
    }

    async fn delete(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        // The live item is deleted on the version read (a replace in between: read again),
        // so the saved versions deleted after it are all of them.
        for _ in 0..STAMP_TRIES {
            let Some(live) = self.get_live(id).await? else { return Ok(false) };
            let stored = Self::stored_version(&live);
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(id)))
                .condition_expression(Self::at_version(stored))
                .expression_attribute_names("#id", ID)
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(":v", n(stored))
                .build()
                .map_err(|e| build_error("Delete", e))?;
            let items = vec![
                TransactWriteItem::builder().delete(delete).build(),
                audit_put(&self.table, audit, self.audit_retention)?,
            ];
            if self.write_stamped(id, items).await?.is_err() {
                continue;
            }
            // The saved versions go after the live item: if this fails, they are left
            // unreachable (`versions` needs the live item), never a postback without history.
            let keys = (1..stored).map(|v| Self::key(&Self::saved_id(id, v)));
            batch_delete(&self.client, &self.table, keys.collect()).await?;
            return Ok(true);
        }
        Err(StoreError::Conflict(format!("postback {id} kept changing while being deleted; try again")))
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

    async fn changes_since(&self, stamp: u64) -> StoreResult<PostbackChanges> {
        let current = self.read_stamp().await?;
        if stamp > current || current - stamp > MAX_CHANGES_READ {
            return Ok(PostbackChanges { stamp: current, ids: None });
        }
        let records = self.change_records(stamp + 1, current).await?;
        // A record missing (expired): the list is not whole.
        let whole = records.len() as u64 == current - stamp;
        let ids = whole.then(|| records.into_iter().map(|(_, id, _)| id).collect());
        Ok(PostbackChanges { stamp: current, ids })
    }

    async fn snapshot(&self) -> StoreResult<PostbackSnapshot> {
        // The stamp first: every write up to it is then either in the listing or recent
        // enough to be read below.
        let stamp = self.read_stamp().await?;
        let listed = self.list(None).await?;
        let recent = self.recent_changes(stamp).await?;
        let mut by_id: std::collections::BTreeMap<String, Postback> =
            listed.into_iter().map(|p| (p.id.clone(), p)).collect();
        for id in recent {
            match self.get(&id).await? {
                Some(postback) => by_id.insert(id, postback),
                None => by_id.remove(&id),
            };
        }
        Ok(PostbackSnapshot { stamp, postbacks: by_id.into_values().collect() })
    }
}
