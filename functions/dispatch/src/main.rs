//! `dispatch` Lambda: consumes the firing queue (SQS event source, batches of 10,
//! `ReportBatchItemFailures`) and delivers each firing; see `postback::entry::lambda`.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use postback::entry::lambda::{dispatch_batch, LambdaApp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    postback::entry::telemetry::init();
    // Built once per execution environment, before the first batch.
    let app = LambdaApp::from_env().await.inspect_err(|e| tracing::error!(error = %e, "init failed"))?;
    let batch = app.batch_dispatcher();
    let batch = &batch;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // Never an error as a whole: failed messages are reported individually. The
        // invocation's deadline decides which messages may still start.
        let deadline = event.context.deadline();
        Ok::<SqsBatchResponse, std::convert::Infallible>(dispatch_batch(batch, event.payload, deadline).await)
    }))
    .await
}
