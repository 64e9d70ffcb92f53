//! Pure domain logic: models, the rules their values keep, templates, matching, delivery
//! policy. Nothing here touches AWS, HTTP frameworks, the clock of a store, or the network;
//! nor does it read requests: `crate::entry::http::parse` turns those into the typed values
//! used here.

pub mod access;
pub mod alert;
pub mod breaker;
pub mod condition;
pub mod delivery;
pub mod destination;
pub mod enrich;
pub mod error;
pub mod event;
pub mod firing;
pub mod functions;
pub mod guard;
pub mod library;
pub mod log;
pub mod macros;
pub mod matching;
pub mod partner;
pub mod postback;
pub mod redact;
pub mod render;
pub mod rules;
pub mod signing;
pub mod slot;
pub mod stats;
pub mod template;

pub use error::ValidationError;
