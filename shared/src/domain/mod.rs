//! Pure domain logic: models, validation, templates, matching, delivery policy.
//! Nothing here touches AWS, HTTP frameworks, the clock of a store, or the network.

pub mod delivery;
pub mod enrich;
pub mod error;
pub mod event;
pub mod firing;
pub mod guard;
pub mod log;
pub mod macros;
pub mod matching;
pub mod postback;
pub mod redact;
pub mod render;
pub mod template;
mod validate;

pub use error::ValidationError;
