//! Entry points: where requests and events come in. The one HTTP router (served by the
//! local server and by the `config-api` and `ingest` Lambdas), the Lambda glue of the
//! three functions, settings read from the environment, and logging set-up.

pub mod config;
pub mod http;
pub mod telemetry;

#[cfg(feature = "aws")]
pub mod lambda;
