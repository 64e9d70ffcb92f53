//! Which postbacks an event fires: an index by type and offer so the cost of matching
//! does not grow with postbacks that cannot match.

use std::sync::Arc;

use super::event::Event;
use super::postback::{CompiledPostback, Postback};

#[derive(Debug, Default)]
pub struct PostbackIndex {
    all: Vec<Arc<CompiledPostback>>,
}

impl PostbackIndex {
    /// Build from all stored postbacks (disabled ones are kept out of matching but still
    /// reachable by `get`). Postbacks whose templates fail to compile are skipped with a
    /// warning (only possible if the store was edited by hand).
    pub fn build(postbacks: Vec<Postback>) -> Self {
        let _ = postbacks;
        todo!("build")
    }

    /// The enabled postbacks this event fires, in a stable order (by id): type, offer
    /// and publisher scope, `fire_on` + `rejection_reasons` for conversions and events,
    /// `event_names` for events.
    pub fn matching(&self, event: &Event) -> Vec<Arc<CompiledPostback>> {
        todo!("matching")
    }

    pub fn get(&self, id: &str) -> Option<Arc<CompiledPostback>> {
        todo!("get")
    }

    pub fn len(&self) -> usize {
        todo!("len")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
