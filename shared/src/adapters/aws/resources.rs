//! The DynamoDB tables, SQS queues and schedule group, defined once: `ensure_resources`
//! creates exactly these (tests, local runs against an emulator), and a test checks that
//! `template.yaml` declares the same keys, indexes, TTL and queue settings.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::error::{build_error, unavailable};
use super::{AwsClients, ResourceNames};
use crate::ports::{StoreError, StoreResult};

/// A table's or index's key; every key attribute is a string (`S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDef {
    pub hash: &'static str,
    pub range: Option<&'static str>,
}

/// A global secondary index: `include: None` projects every attribute (`ALL`);
/// `Some(names)` projects the keys and these attributes only (`INCLUDE`), so an index
/// entry stays far under one write unit and a query reads the rest of an item from the
/// table (`BatchGetItem`) only for the entries it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDef {
    pub name: &'static str,
    pub key: KeyDef,
    pub include: Option<&'static [&'static str]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// The resource's logical id in `template.yaml`.
    pub logical_id: &'static str,
    pub key: KeyDef,
    pub indexes: &'static [IndexDef],
    pub ttl_attribute: Option<&'static str>,
}

impl TableDef {
    /// Every attribute used in the table's or an index's key (what CloudFormation's
    /// `AttributeDefinitions` must list, no more).
    pub fn key_attributes(&self) -> BTreeSet<&'static str> {
        std::iter::once(self.key)
            .chain(self.indexes.iter().map(|i| i.key))
            .flat_map(|k| std::iter::once(k.hash).chain(k.range))
            .collect()
    }
}

pub(crate) const POSTBACKS_BY_TYPE: &str = "by_type";
/// The audit trail's indexes on the postbacks table (`access.rs`), each sorted by
/// `audit_sk` (`at` + `#` + id).
pub(crate) const AUDIT_NEWEST: &str = "audit_newest";
pub(crate) const AUDIT_BY_ACTOR: &str = "audit_by_actor";
pub(crate) const AUDIT_BY_ACTION: &str = "audit_by_action";
pub(crate) const AUDIT_BY_TARGET: &str = "audit_by_target";
pub(crate) const LOGS_BY_POSTBACK: &str = "by_postback";
pub(crate) const LOGS_BY_TRANSACTION: &str = "by_transaction";
pub(crate) const LOGS_NEWEST: &str = "newest";
/// The log indexes' sort key: `fired_at` (fixed-width RFC 3339, UTC, nanoseconds) + `#`
/// + id, so every index lists newest first by `fired_at`, ties by id (`logs.rs`).
pub(crate) const LOGS_SORT_KEY: &str = "fired_key";

/// What the log indexes project besides their keys: the attributes a listing's
/// FilterExpression compares (`logs.rs`), so only matching entries are read from the
/// table, and `expires_at` / `listed_until` (which entries are live). The text columns
/// (`url`, `error`, `response_body`, `postback_name`, `event_id`) are compared in memory
/// on the entries read. `by_postback` also has `duration_ms`: the stats are counted
/// from it. (An index's own key attributes are projected anyway and may not be listed.)
///
/// `logs_projected!([first..], [last..])`: those common attributes between an index's own.
macro_rules! logs_projected {
    ([$($first:literal),*], [$($last:literal),*]) => {
        &[
            $($first,)*
            "type", "outcome", "offer_id", "publisher_id", "status_code", "test", "expires_at", "listed_until",
            $($last,)*
        ]
    };
}
const LOGS_PROJECTED_BY_POSTBACK: &[&str] = logs_projected!(["transaction_id"], ["duration_ms"]);
const LOGS_PROJECTED_BY_TRANSACTION: &[&str] = logs_projected!(["postback_id"], []);
const LOGS_PROJECTED_NEWEST: &[&str] = logs_projected!(["postback_id", "transaction_id"], []);

/// Postbacks: by id; by type for matching and for listing (see `docs/aws.md`). Also
/// the managed keys (listed through `by_type` as type `key`) and the audit trail (its
/// four indexes; records expire by TTL), so a postback write and its record are one
/// transaction on one table (`access.rs`); and the change stamp and change records
/// (`postbacks.rs`), which expire by TTL.
pub const POSTBACKS_TABLE: TableDef = TableDef {
    logical_id: "PostbacksTable",
    key: KeyDef { hash: "id", range: None },
    indexes: &[
        IndexDef { name: POSTBACKS_BY_TYPE, key: KeyDef { hash: "type", range: Some("id") }, include: None },
        IndexDef { name: AUDIT_NEWEST, key: KeyDef { hash: "audit_p", range: Some("audit_sk") }, include: None },
        IndexDef { name: AUDIT_BY_ACTOR, key: KeyDef { hash: "actor_key_id", range: Some("audit_sk") }, include: None },
        IndexDef { name: AUDIT_BY_ACTION, key: KeyDef { hash: "action", range: Some("audit_sk") }, include: None },
        IndexDef { name: AUDIT_BY_TARGET, key: KeyDef { hash: "target_id", range: Some("audit_sk") }, include: None },
    ],
    ttl_attribute: Some("expires_at"),
};

/// Clicks, impressions, conversion/event statuses and seen markers of a transaction.
pub const TOUCHES_TABLE: TableDef = TableDef {
    logical_id: "TouchesTable",
    key: KeyDef { hash: "transaction_id", range: Some("kind") },
    indexes: &[],
    ttl_attribute: Some("expires_at"),
};

/// Log entries (a delivered entry is its own delivered marker), bare delivered and
/// replay markers and stats roll-ups (which carry no index attributes).
pub const LOGS_TABLE: TableDef = TableDef {
    logical_id: "LogsTable",
    key: KeyDef { hash: "id", range: None },
    indexes: &[
        IndexDef {
            name: LOGS_BY_POSTBACK,
            key: KeyDef { hash: "postback_id", range: Some(LOGS_SORT_KEY) },
            include: Some(LOGS_PROJECTED_BY_POSTBACK),
        },
        IndexDef {
            name: LOGS_BY_TRANSACTION,
            key: KeyDef { hash: "transaction_id", range: Some(LOGS_SORT_KEY) },
            include: Some(LOGS_PROJECTED_BY_TRANSACTION),
        },
        IndexDef {
            name: LOGS_NEWEST,
            key: KeyDef { hash: "log_shard", range: Some(LOGS_SORT_KEY) },
            include: Some(LOGS_PROJECTED_NEWEST),
        },
    ],
    ttl_attribute: Some("expires_at"),
};

/// Delivery control: breakers, held firings and rate-limit slot cursors, each postback's
/// under `breaker#` / `held#` / `slot#` + its id (`control.rs`); slot cursors expire.
pub const CONTROL_TABLE: TableDef = TableDef {
    logical_id: "ControlTable",
    key: KeyDef { hash: "pk", range: Some("sk") },
    indexes: &[],
    ttl_attribute: Some("expires_at"),
};

pub const TABLES: [TableDef; 4] = [POSTBACKS_TABLE, TOUCHES_TABLE, LOGS_TABLE, CONTROL_TABLE];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDef {
    pub logical_id: &'static str,
    pub dead_letter_logical_id: &'static str,
    /// 6 × the dispatch function's timeout, as AWS advises for a Lambda event source.
    pub visibility_timeout_s: u32,
    /// The most SQS allows, on both queues.
    pub retention_s: u32,
    /// Receives of one message before it moves to the dead-letter queue. Retries are new
    /// messages (see `queue.rs`), so this counts only crashed or timed-out dispatches and
    /// throttled deliveries of the same attempt.
    pub max_receive_count: u32,
}

pub const FIRING_QUEUE: QueueDef = QueueDef {
    logical_id: "FiringQueue",
    dead_letter_logical_id: "FiringDeadLetterQueue",
    visibility_timeout_s: 360,
    retention_s: 1_209_600,
    max_receive_count: 5,
};

pub const SCHEDULE_GROUP_LOGICAL_ID: &str = "FiringScheduleGroup";
pub const SCHEDULER_ROLE_LOGICAL_ID: &str = "SchedulerRole";

/// Names for `ensure_resources` to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePlan {
    pub postbacks_table: String,
    pub touches_table: String,
    pub logs_table: String,
    pub control_table: String,
    pub queue_name: String,
    pub dead_letter_queue_name: String,
    pub schedule_group: String,
    /// No emulator enforces IAM; on AWS the template creates the role.
    pub scheduler_role_arn: String,
    /// The queue's visibility timeout (the lease); `FIRING_QUEUE`'s in production,
    /// short in tests.
    pub visibility_timeout: Duration,
    /// Off only in tests that check reads ignore expired items (DynamoDB Local would
    /// otherwise delete them within a second).
    pub ttl_enabled: bool,
}

impl ResourcePlan {
    /// Every name prefixed, e.g. by a unique test-run id.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            postbacks_table: format!("{prefix}-postbacks"),
            touches_table: format!("{prefix}-touches"),
            logs_table: format!("{prefix}-logs"),
            control_table: format!("{prefix}-control"),
            queue_name: format!("{prefix}-firings"),
            dead_letter_queue_name: format!("{prefix}-firings-dlq"),
            schedule_group: format!("{prefix}-firings"),
            scheduler_role_arn: format!("arn:aws:iam::000000000000:role/{prefix}-scheduler"),
            visibility_timeout: Duration::from_secs(u64::from(FIRING_QUEUE.visibility_timeout_s)),
            ttl_enabled: true,
        }
    }
}

/// How long to wait for a new table to become active (instant on emulators).
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Create what is missing (idempotent) and return the names the adapters need.
pub async fn ensure_resources(clients: &AwsClients, plan: &ResourcePlan) -> StoreResult<ResourceNames> {
    let tables = [
        (&POSTBACKS_TABLE, &plan.postbacks_table),
        (&TOUCHES_TABLE, &plan.touches_table),
        (&LOGS_TABLE, &plan.logs_table),
        (&CONTROL_TABLE, &plan.control_table),
    ];
    for (def, name) in tables {
        ensure_table(&clients.dynamodb, def, name, plan.ttl_enabled).await?;
    }
    let (_, dead_letter_arn) = ensure_queue(&clients.sqs, &plan.dead_letter_queue_name, &[]).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": FIRING_QUEUE.max_receive_count,
    })
    .to_string();
    let (queue_url, queue_arn) = ensure_queue(
        &clients.sqs,
        &plan.queue_name,
        &[
            (QueueAttributeName::VisibilityTimeout, plan.visibility_timeout.as_secs().to_string()),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await?;
    ensure_schedule_group(&clients.scheduler, &plan.schedule_group).await?;
    Ok(ResourceNames {
        postbacks_table: plan.postbacks_table.clone(),
        touches_table: plan.touches_table.clone(),
        logs_table: plan.logs_table.clone(),
        control_table: plan.control_table.clone(),
        queue_url,
        queue_arn,
        dead_letter_queue_arn: Some(dead_letter_arn),
        schedule_group: plan.schedule_group.clone(),
        scheduler_role_arn: plan.scheduler_role_arn.clone(),
    })
}

fn key_schema(key: KeyDef) -> StoreResult<Vec<KeySchemaElement>> {
    std::iter::once((key.hash, KeyType::Hash))
        .chain(key.range.map(|r| (r, KeyType::Range)))
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| build_error("KeySchemaElement", e))
        })
        .collect()
}

async fn ensure_table(client: &aws_sdk_dynamodb::Client, def: &TableDef, name: &str, ttl: bool) -> StoreResult<()> {
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(def.key)?));
    for attribute in def.key_attributes() {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| build_error("AttributeDefinition", e))?,
        );
    }
    for index in def.indexes {
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_schema(index.key)?))
                .projection(match index.include {
                    None => Projection::builder().projection_type(ProjectionType::All).build(),
                    Some(names) => Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(names.iter().map(|n| n.to_string()).collect()))
                        .build(),
                })
                .build()
                .map_err(|e| build_error("GlobalSecondaryIndex", e))?,
        );
    }
    match create.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(unavailable("DynamoDB CreateTable", e)),
    }
    wait_active(client, name).await?;
    if let (Some(attribute), true) = (def.ttl_attribute, ttl) {
        let current = client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .map_err(|e| unavailable("DynamoDB DescribeTimeToLive", e))?;
        let status = current.time_to_live_description.and_then(|d| d.time_to_live_status);
        if !matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
            let spec = TimeToLiveSpecification::builder()
                .attribute_name(attribute)
                .enabled(true)
                .build()
                .map_err(|e| build_error("TimeToLiveSpecification", e))?;
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(spec)
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB UpdateTimeToLive", e))?;
        }
    }
    Ok(())
}

async fn wait_active(client: &aws_sdk_dynamodb::Client, name: &str) -> StoreResult<()> {
    let poll = async {
        loop {
            let out = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(|e| unavailable("DynamoDB DescribeTable", e))?;
            let table = out.table.as_ref();
            let table_active = table.and_then(|t| t.table_status.as_ref()) == Some(&TableStatus::Active);
            let indexes_active = table
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
                .iter()
                .all(|i| i.index_status.as_ref().is_none_or(|s| s.as_str() == "ACTIVE"));
            if table_active && indexes_active {
                return Ok(());
            }
            // DynamoDB is creating the table on its side: ask again shortly.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(TABLE_ACTIVE_TIMEOUT, poll).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!("table {name} not active after {TABLE_ACTIVE_TIMEOUT:?}")))
    })
}

/// Create the queue (idempotent for identical attributes) and return its URL and ARN.
async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> StoreResult<(String, String)> {
    let mut create = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, FIRING_QUEUE.retention_s.to_string());
    for (attribute, value) in attributes {
        create = create.attributes(attribute.clone(), value);
    }
    let out = create.send().await.map_err(|e| unavailable("SQS CreateQueue", e))?;
    let url = out.queue_url.ok_or_else(|| StoreError::Unavailable(format!("SQS CreateQueue {name}: no URL")))?;
    let attributes = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| unavailable("SQS GetQueueAttributes", e))?;
    let arn = attributes
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| StoreError::Unavailable(format!("SQS GetQueueAttributes {name}: no QueueArn")))?;
    Ok((url, arn))
}

async fn ensure_schedule_group(client: &aws_sdk_scheduler::Client, name: &str) -> StoreResult<()> {
    match client.create_schedule_group().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => Ok(()),
        Err(e) => Err(unavailable("Scheduler CreateScheduleGroup", e)),
    }
}
