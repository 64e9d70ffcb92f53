//! Adapters only the Lambda functions use: the HTTP sender built on first use
//! (`LazySender`) and the firing queue as the SQS event source hands it to the dispatch
//! function (`EventSourceQueue`). Wired by `crate::entry::lambda`.

mod event_source_queue;
mod lazy_sender;

pub use event_source_queue::EventSourceQueue;
pub use lazy_sender::LazySender;
