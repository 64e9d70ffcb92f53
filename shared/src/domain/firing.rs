//! A firing: one postback to deliver for one event. This is the queue message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::alert::{AlertContext, AlertKind};
use super::event::Event;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// One id per firing, the same on every retry (the `{delivery_id}` macro). For
    /// firings created by ingest it is derived from the event's idempotency key and the
    /// postback id, so enqueueing the same firing twice is harmless.
    pub delivery_id: String,
    pub postback_id: String,
    /// The enriched event as it was when accepted.
    pub event: Event,
    /// The attempt this message will make, starting at 1.
    pub attempt: u32,
    /// When it should fire.
    pub due_at: DateTime<Utc>,
    /// When the event was accepted (for lag metrics).
    pub queued_at: DateTime<Utc>,
    /// `false` for admin resends: the admin's decision overrides a status re-check.
    #[serde(default = "yes")]
    pub check_status: bool,
    /// The log entry this firing re-sends, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<String>,
    /// An alert postback's firing: the alert (the alert macros' values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertContext>,
    /// The failed log entry this firing replays (`POST /logs/replay`), if any; carried to
    /// every attempt's entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// Rate-limited postbacks: the UTC second (unix seconds) whose request slot this
    /// message already took; it was put back on the queue until then, and sends in that
    /// second without taking another slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_second: Option<i64>,
    /// Where the request goes (`domain::destination`), as computed when it was queued:
    /// the local queue hands out no more firings for a destination that already has
    /// `DESTINATION_CONCURRENCY` in flight. A hint only: the dispatcher recomputes it from
    /// the postback as it is when the firing comes due, and `None` (not computed, or a
    /// message from before this field) is never held back by the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The version of its postback the firing was queued for (ingest: the version that
    /// matched). A dispatcher whose cached postback is older reads the postback from the
    /// store instead (`service::Catalog::for_firing`): a firing is never judged by a view
    /// older than the one that made it. `None`: a message from before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_version: Option<u32>,
    /// A reversal firing (see docs/DESIGN.md *Reversals*): the delivered firing it
    /// reverses. It sends the postback's `reversal` request, and every attempt's entry
    /// carries `reversal_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_of: Option<ReversalOf>,
    /// How many times an open breaker's hold released this firing back to the queue:
    /// the generation of its hold, so a release forgets only the hold it read and never
    /// one written since (`ControlStore::unhold`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub releases: u32,
}

/// The delivery a reversal firing reverses: its delivered log entry, delivery id and
/// time (the `{original_delivery_id}` and `{original_fired_at}` macros).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversalOf {
    /// The delivered entry's id (the entries' `reversal_of`).
    pub entry_id: String,
    pub delivery_id: String,
    pub fired_at: DateTime<Utc>,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Firing {
    /// The first attempt of `postback_id` for `event`, due at `due_at`, accepted at
    /// `queued_at`: its status re-checked when it fires; no resend, alert, replay or
    /// reversal; not yet bound to its postback (no destination or version: `bound_to`).
    pub fn first(
        delivery_id: String,
        postback_id: String,
        event: Event,
        due_at: DateTime<Utc>,
        queued_at: DateTime<Utc>,
    ) -> Firing {
        Firing {
            delivery_id,
            postback_id,
            event,
            attempt: 1,
            due_at,
            queued_at,
            check_status: true,
            resend_of: None,
            alert: None,
            replay_of: None,
            slot_second: None,
            destination: None,
            postback_version: None,
            reversal_of: None,
            releases: 0,
        }
    }

    /// Deterministic delivery id for an ingested event's firing.
    pub fn delivery_id_for(dedupe_key: &str, postback_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(dedupe_key.as_bytes());
        h.update([0u8]);
        h.update(postback_id.as_bytes());
        let digest = h.finalize();
        // 128 bits is plenty for uniqueness and keeps ids short.
        format!("d_{}", hex::encode(&digest[..16]))
    }

    /// Deterministic delivery id of the reversal of the delivery `original_delivery_id`
    /// of `postback_id`: the same delivery reversed twice (a rejection reported again, a
    /// redelivered message, a crash before the markers) is one firing, so the queue and
    /// the delivered markers send it once. Distinct from every other firing's id.
    pub fn reversal_delivery_id(original_delivery_id: &str, postback_id: &str) -> String {
        Self::delivery_id_for(&format!("reversal|{original_delivery_id}"), postback_id)
    }

    /// The reversal firing of the delivered `entry` (its firing in `entry.firing`), for the
    /// conversion's `rejection` (its status now), queued at `now`: the original event with
    /// the status now `rejected` (and the rejection's reason and time). `None` when the entry has no firing or is no delivery to reverse
    /// (a test, a reversal, an alert, an event that was itself a rejection).
    pub fn reversal_for(
        entry: &super::log::LogEntry,
        rejection: &super::event::CurrentStatus,
        now: DateTime<Utc>,
    ) -> Option<Firing> {
        let original = entry.firing.as_ref()?;
        if entry.test
            || entry.outcome != super::log::Outcome::Delivered
            || original.reversal_of.is_some()
            || original.alert.is_some()
            || !original.event.kind.has_status()
            || original.event.status == Some(super::event::Status::Rejected)
        {
            return None;
        }
        let mut event = original.event.clone();
        event.status = Some(super::event::Status::Rejected);
        event.rejection_reason.clone_from(&rejection.rejection_reason);
        event.timestamp = rejection.updated_at;
        Some(Firing {
            reversal_of: Some(ReversalOf {
                entry_id: entry.id.clone(),
                delivery_id: entry.delivery_id.clone(),
                fired_at: entry.fired_at,
            }),
            ..Firing::first(
                Self::reversal_delivery_id(&entry.delivery_id, &entry.postback_id),
                entry.postback_id.clone(),
                event,
                now,
                now,
            )
        })
    }

    /// Deterministic delivery id for an alert postback's firing of one alert: the same
    /// `key` (one outage, one failed firing) gives the same id, so raising it twice queues
    /// it once. Distinct from every ingested firing's id (the kind is part of the input).
    pub fn alert_delivery_id(key: &str, alert_postback_id: &str, kind: AlertKind) -> String {
        Self::delivery_id_for(&format!("alert|{}|{key}", kind.as_str()), alert_postback_id)
    }

    /// The macro values of this firing's request to `postback` (its event, ids, attempt,
    /// and the alert for an alert postback's firing).
    pub fn macro_context<'a>(&'a self, postback: &'a super::postback::Postback) -> super::macros::MacroContext<'a> {
        super::macros::MacroContext::new(&self.event, &postback.id, &postback.name, &self.delivery_id, self.attempt)
            .alert(self.alert.as_ref())
            .reversal(self.reversal_of.as_ref())
    }

    /// This firing bound to `postback` as it is now: the destination its request goes
    /// to (the fair-queue key: `FiringQueue::receive_fair` locally, the SQS message group
    /// on AWS) and the postback's version it was judged by.
    pub fn bound_to(mut self, postback: &super::postback::CompiledPostback) -> Firing {
        // A reversal goes where the postback's reversal request goes.
        let request = postback.request_for(&self);
        let destination = request.destination(&self.macro_context(&postback.postback));
        self.destination = destination;
        self.postback_version = Some(postback.postback.version);
        self
    }

    /// The next attempt's message.
    pub fn next_attempt(&self, due_at: DateTime<Utc>) -> Firing {
        Firing { attempt: self.attempt + 1, due_at, slot_second: None, ..self.clone() }
    }
}
