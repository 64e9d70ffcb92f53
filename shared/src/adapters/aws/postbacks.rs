//! `PostbackStore` on DynamoDB: items keyed by `id`, listed per type through the
//! `by_type` index (all types: one query per type, merged by id).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use futures::future::try_join_all;

use super::error::unavailable;
use super::item::{doc, get_s, s, to_json, Item, DOC};
use super::resources::POSTBACKS_BY_TYPE;
use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackStore, StoreError, StoreResult};

const ID: &str = "id";
const TYPE: &str = "type";

#[derive(Debug, Clone)]
pub struct DynamoPostbackStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoPostbackStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        Self { client, table: table.to_string() }
    }

    fn item(postback: &Postback) -> StoreResult<Item> {
        Ok(Item::from([
            (ID.to_string(), s(&postback.id)),
            (TYPE.to_string(), s(postback.kind.as_str())),
            (DOC.to_string(), s(to_json(postback, "postback")?)),
        ]))
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
    async fn create(&self, postback: &Postback) -> StoreResult<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(postback)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict(format!("postback {} already exists", postback.id)))
            }
            Err(e) => Err(unavailable("DynamoDB PutItem postback", e)),
        }
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ID, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB GetItem postback", e))?;
        out.item.as_ref().map(Self::parse).transpose()
    }

    async fn replace(&self, postback: &Postback) -> StoreResult<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(postback)?))
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", ID)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable("DynamoDB PutItem postback", e)),
        }
    }

    async fn delete(&self, id: &str) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(ID, AttributeValue::S(id.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB DeleteItem postback", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
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
