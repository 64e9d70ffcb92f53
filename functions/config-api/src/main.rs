//! `config-api` Lambda: the admin routes (postbacks, previews, tests, logs, resends) and
//! `/health` of the shared router, behind API Gateway (HTTP API, payload v2).

use postback::entry::http::RouteSet;
use postback::entry::lambda::LambdaApp;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    postback::entry::telemetry::init();
    // Built once per execution environment, before the first request.
    let app = LambdaApp::from_env().await.inspect_err(|e| tracing::error!(error = %e, "init failed"))?;
    lambda_http::run(app.router(RouteSet::Admin)).await
}
