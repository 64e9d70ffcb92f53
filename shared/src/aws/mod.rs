//! AWS adapters: DynamoDB, SQS, EventBridge Scheduler.
