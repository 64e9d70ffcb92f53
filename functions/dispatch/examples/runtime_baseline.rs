//! The benchmark baseline (`scripts/lambda-bench.sh`): a `lambda_runtime` bootstrap that
//! echoes its event and builds nothing at init, so the functions' init and invocation
//! times can be read against what the runtime alone costs on the same machine.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        Ok::<serde_json::Value, Error>(event.payload)
    }))
    .await
}
