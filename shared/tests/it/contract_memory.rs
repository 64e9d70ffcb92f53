//! The port contract suite on the in-memory fakes (`postback::adapters::memory`), so
//! they cannot drift from the real adapters. Their time is a manual clock that the
//! checks' pauses move on: the whole suite takes no real time.
//!
//! Run: `cargo test -p postback --features testing --test it contract_memory`.
#![cfg(feature = "testing")]

use postback::testing::MemoryFactory;

postback::contract_tests!(factory = MemoryFactory, enqueue_dedupe);
