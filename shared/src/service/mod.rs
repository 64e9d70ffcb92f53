//! Use cases: ingest, postback configuration, dispatch.
