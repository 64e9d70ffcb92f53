//! AWS adapters: DynamoDB (postbacks, touches, logs, delivery control), SQS + EventBridge Scheduler (the
//! firing queue). The design (every access pattern and its key or index, why no Scan,
//! how delays longer than SQS allows are scheduled) is in `docs/aws.md`.
//!
//! Build the SDK clients once per process with [`AwsClients::from_env`] (it honours
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`, so the same code runs against a
//! local emulator), read the resource names with [`ResourceNames::from_env`], and make
//! the adapters with [`AwsAdapters::new`].

mod access;
mod control;
mod error;
mod item;
mod logs;
mod postbacks;
mod queue;
pub mod resources;
mod touches;

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub use access::{DynamoAccessStore, DEFAULT_AUDIT_RETENTION_DAYS};
pub use control::DynamoControlStore;
pub use logs::{delivered_entry_id, DynamoLogStore, ReadBound, LOG_SHARDS, STATS_SETTLE};
pub use postbacks::DynamoPostbackStore;
pub use queue::{
    at_expression, lambda_message, leased_from_lambda_message, leased_from_sqs_message, message_group, schedule_name,
    QueueSettings, SqsFiringQueue, EARLY_TOLERANCE, MAX_SQS_DELAY, SCHEDULE_LEAD,
};
pub use resources::{ensure_resources, ResourcePlan, LOGS_TABLE};
pub use touches::DynamoTouchStore;

use crate::ports::Clock;

/// How long one SDK call may take, retries included. DynamoDB and SQS answer in
/// milliseconds; a call still pending after this is better reported as unavailable
/// (503, or a batch item failure the queue retries) than left to hit the Lambda timeout.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt of one call.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Establishing a connection (an unreachable endpoint fails fast instead of hanging).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per call (the first included) for throttling and transient errors.
pub const MAX_SDK_ATTEMPTS: u32 = 3;

/// The three SDK clients, built once per process (they hold connection pools and
/// credentials caches; clones are cheap and share them).
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub scheduler: aws_sdk_scheduler::Client,
}

impl AwsClients {
    /// Load the standard configuration chain (environment, profile, Lambda role) with
    /// this crate's timeouts and retry policy.
    pub async fn from_env() -> Self {
        Self::from_sdk_config(&config_loader().load().await)
    }

    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            scheduler: aws_sdk_scheduler::Client::new(config),
        }
    }
}

/// The standard configuration chain with this crate's timeouts and retry policy; add
/// overrides (e.g. `.endpoint_url(..)`) before `.load()`.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(default_timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_SDK_ATTEMPTS))
}

pub fn default_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Environment variable names of the resources (set by `template.yaml`; see
/// `docs/aws.md`).
pub mod env {
    pub const POSTBACKS_TABLE: &str = "POSTBACKS_TABLE";
    pub const TOUCHES_TABLE: &str = "TOUCHES_TABLE";
    pub const LOGS_TABLE: &str = "LOGS_TABLE";
    pub const CONTROL_TABLE: &str = "CONTROL_TABLE";
    pub const QUEUE_URL: &str = "QUEUE_URL";
    pub const QUEUE_ARN: &str = "QUEUE_ARN";
    pub const DEAD_LETTER_QUEUE_ARN: &str = "DEAD_LETTER_QUEUE_ARN";
    pub const SCHEDULE_GROUP: &str = "SCHEDULE_GROUP";
    pub const SCHEDULER_ROLE_ARN: &str = "SCHEDULER_ROLE_ARN";
}

/// A resource name the environment does not give (unset or blank). Its own error (not
/// `entry::config::SettingsError`: adapters do not reach up into `entry`), worded as a
/// setting's; `entry::lambda::InitError` carries it.
#[derive(Debug, thiserror::Error)]
#[error("setting {name}: is required")]
pub struct MissingResourceName {
    pub name: &'static str,
}

/// Where the adapters' resources live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub postbacks_table: String,
    pub touches_table: String,
    pub logs_table: String,
    /// Breakers, held firings and rate-limit slot cursors.
    pub control_table: String,
    pub queue_url: String,
    /// The target of the scheduler's one-time schedules.
    pub queue_arn: String,
    /// Where the scheduler puts a firing it could not deliver to the queue. Optional:
    /// without it the scheduler retries for 24 h and then drops the firing.
    pub dead_letter_queue_arn: Option<String>,
    pub schedule_group: String,
    /// The role the scheduler assumes to send to the queue.
    pub scheduler_role_arn: String,
}

impl ResourceNames {
    pub fn from_env() -> Result<Self, MissingResourceName> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, MissingResourceName> {
        let required = |name: &'static str| {
            get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or(MissingResourceName { name })
        };
        Ok(Self {
            postbacks_table: required(env::POSTBACKS_TABLE)?,
            touches_table: required(env::TOUCHES_TABLE)?,
            logs_table: required(env::LOGS_TABLE)?,
            control_table: required(env::CONTROL_TABLE)?,
            queue_url: required(env::QUEUE_URL)?,
            queue_arn: required(env::QUEUE_ARN)?,
            dead_letter_queue_arn: get(env::DEAD_LETTER_QUEUE_ARN)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            schedule_group: required(env::SCHEDULE_GROUP)?,
            scheduler_role_arn: required(env::SCHEDULER_ROLE_ARN)?,
        })
    }
}

/// The five port implementations over one set of clients and resources.
#[derive(Clone)]
pub struct AwsAdapters {
    pub postbacks: Arc<DynamoPostbackStore>,
    pub touches: Arc<DynamoTouchStore>,
    pub logs: Arc<DynamoLogStore>,
    pub queue: Arc<SqsFiringQueue>,
    pub control: Arc<DynamoControlStore>,
    /// Keys and the audit trail (in the postbacks table).
    pub access: Arc<DynamoAccessStore>,
    /// The clock the adapters were made with (for `with_audit_retention`).
    clock: Arc<dyn Clock>,
}

impl AwsAdapters {
    /// `retention` is `LOG_RETENTION_DAYS`: the TTL of stored touches and log entries.
    /// Audit records live `DEFAULT_AUDIT_RETENTION_DAYS` (see `with_audit_retention`).
    /// Every "now" of the adapters is `clock`'s (`SystemClock` in the functions).
    pub fn new(
        clients: &AwsClients,
        names: &ResourceNames,
        retention: chrono::Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let audit = chrono::Duration::days(DEFAULT_AUDIT_RETENTION_DAYS);
        let dynamodb = || clients.dynamodb.clone();
        Self {
            postbacks: Arc::new(DynamoPostbackStore::new(dynamodb(), &names.postbacks_table, audit, clock.clone())),
            access: Arc::new(DynamoAccessStore::new(dynamodb(), &names.postbacks_table, audit)),
            touches: Arc::new(DynamoTouchStore::new(dynamodb(), &names.touches_table, retention, clock.clone())),
            logs: Arc::new(DynamoLogStore::new(dynamodb(), &names.logs_table, retention, clock.clone())),
            queue: Arc::new(SqsFiringQueue::new(clients, QueueSettings::from_names(names), clock.clone())),
            control: Arc::new(DynamoControlStore::new(dynamodb(), &names.control_table)),
            clock,
        }
    }

    /// The same adapters with audit records living `retention` (`AUDIT_RETENTION_DAYS`).
    pub fn with_audit_retention(
        mut self,
        clients: &AwsClients,
        names: &ResourceNames,
        retention: chrono::Duration,
    ) -> Self {
        let table = &names.postbacks_table;
        self.postbacks =
            Arc::new(DynamoPostbackStore::new(clients.dynamodb.clone(), table, retention, self.clock.clone()));
        self.access = Arc::new(DynamoAccessStore::new(clients.dynamodb.clone(), table, retention));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn resource_names_require_every_name_but_the_dead_letter_queue() {
        let mut vars: HashMap<&str, &str> = [
            (env::POSTBACKS_TABLE, "p"),
            (env::TOUCHES_TABLE, "t"),
            (env::LOGS_TABLE, "l"),
            (env::CONTROL_TABLE, "c"),
            (env::QUEUE_URL, "http://q"),
            (env::QUEUE_ARN, "arn:q"),
            (env::SCHEDULE_GROUP, "g"),
            (env::SCHEDULER_ROLE_ARN, "arn:role"),
        ]
        .into();
        let names = ResourceNames::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(names.logs_table, "l");
        assert_eq!(names.control_table, "c");
        assert_eq!(names.dead_letter_queue_arn, None);
        vars.insert(env::QUEUE_ARN, "  ");
        let err = ResourceNames::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err.name, env::QUEUE_ARN);
    }
}
