//! Structured logs via `tracing`: JSON on Lambda (or `LOG_FORMAT=json`), human-readable
//! text locally. Level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let json = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        || std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // `try_init`: a second call (tests) is harmless.
    let _ = if json {
        builder.json().with_current_span(false).flatten_event(true).without_time().try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
