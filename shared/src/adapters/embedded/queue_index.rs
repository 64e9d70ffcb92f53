//! The queue's index and leases, in memory. The `firings` table holds what must survive
//! a crash (each queued firing, its due time, its payload); which rows are visible,
//! leased or being settled lives here. The local server is the file's only process and
//! a restart releases every lease anyway, so a lease is not worth a row rewrite, an index
//! move and a commit: receiving takes no write at all.
//!
//! Every change that follows a row change is applied only after the commit that made it
//! durable (the writer's after-commit hook), so a row visible here always exists in the
//! file. Times are the queue's milliseconds; the caller passes `now`, so the rules are
//! tested with a manual clock.

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

/// A `firings` row's rowid.
pub(super) type RowId = i64;

/// A firing's destination (`None`: not bounded, rows from before fair sending).
type Destination = Option<Arc<str>>;

#[derive(Debug)]
struct Entry {
    due_at: i64,
    destination: Destination,
    state: State,
    /// The row's payload as committed by this process, kept (within `PAYLOAD_CACHE_BYTES`)
    /// until it is leased, so a firing queued and sent soon after is never read back.
    payload: Option<Box<str>>,
}

/// Most payload bytes kept in memory for rows not leased yet: a few seconds of a busy
/// server's firings; a backlog beyond it is read back from the file when leased.
pub(super) const PAYLOAD_CACHE_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Visible from `visible` on.
    Ready { visible: i64 },
    /// Handed out until `until` under `token`; `settling` while an ack or retry of this
    /// lease is being committed (then it can neither expire nor be taken over).
    Leased { token: u64, until: i64, settling: bool },
}

/// What a committed settle did to the row.
#[derive(Debug, Clone)]
pub(super) enum Settled {
    /// Deleted (acked, or replaced by a row of another identity).
    Removed,
    /// Updated in place: visible again at `due_at`, under `destination`, with this
    /// payload (kept if there is room).
    Rescheduled { due_at: i64, destination: Option<String>, payload: Option<Box<str>> },
}

#[derive(Debug, Default)]
pub(super) struct QueueIndex {
    entries: HashMap<RowId, Entry>,
    /// Per destination, its visible-or-waiting rows by `(visible, rowid)`.
    ready: HashMap<Destination, BTreeSet<(i64, RowId)>>,
    /// Each destination's earliest ready row: the fair receive walks destinations in
    /// this order, so a full destination's backlog costs one step, not one per row.
    heads: BTreeSet<(i64, Destination)>,
    /// Leases by their end.
    leases: BTreeSet<(i64, RowId)>,
    next_token: u64,
    /// Bytes of the payloads kept in `Entry::payload`.
    cached_bytes: usize,
    /// Every destination seen, so rows share one name each (a few hundred hosts, not
    /// one per firing).
    names: HashSet<Arc<str>>,
}

/// A leased row: its rowid, its lease token, and its payload if it was kept in memory.
pub(super) type Lease = (RowId, u64, Option<Box<str>>);

impl QueueIndex {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A committed new row, visible at its due time; its payload is kept if given and
    /// there is room.
    pub fn insert(&mut self, rowid: RowId, due_at: i64, destination: Option<&str>, payload: Option<Box<str>>) {
        let destination = self.intern(destination);
        let payload = self.keep(payload);
        let entry = Entry { due_at, destination, state: State::Ready { visible: due_at }, payload };
        if let Some(old) = self.entries.insert(rowid, entry) {
            self.release_payload(old.payload.as_deref());
        }
        self.add_ready(rowid, due_at);
    }

    /// Forget every kept payload: each row is read back from the file (with its
    /// delivered check) when leased. Called when a delivery id may have been marked
    /// delivered while its row stays queued (a settle under a lease taken over).
    pub fn forget_payloads(&mut self) {
        for entry in self.entries.values_mut() {
            entry.payload = None;
        }
        self.cached_bytes = 0;
    }

    fn keep(&mut self, payload: Option<Box<str>>) -> Option<Box<str>> {
        let payload = payload?;
        if self.cached_bytes + payload.len() > PAYLOAD_CACHE_BYTES {
            return None;
        }
        self.cached_bytes += payload.len();
        Some(payload)
    }

    fn release_payload(&mut self, payload: Option<&str>) {
        self.cached_bytes -= payload.map_or(0, str::len);
    }

    /// A committed delete of a row not being settled (quarantined, or dropped because
    /// delivered, while leased by the receive that found it).
    pub fn remove(&mut self, rowid: RowId) {
        let Some(entry) = self.entries.remove(&rowid) else { return };
        self.release_payload(entry.payload.as_deref());
        match entry.state {
            State::Ready { visible } => self.take_ready(&entry.destination, rowid, visible),
            State::Leased { until, .. } => {
                self.leases.remove(&(until, rowid));
            }
        }
    }

    /// Lease up to `max` visible rows, earliest visible first, taking from each
    /// destination no more than `room` allows; each lease ends at `until`.
    pub fn lease(&mut self, now: i64, until: i64, max: usize, room: impl Fn(&str) -> usize) -> Vec<Lease> {
        self.expire(now);
        if max == 0 {
            return Vec::new();
        }
        // The `max` earliest candidates, as a max-heap so the latest is dropped first.
        let mut chosen: BinaryHeap<(i64, RowId)> = BinaryHeap::new();
        for (head, destination) in self.heads.range(..(now.saturating_add(1), None)) {
            if chosen.len() == max && chosen.peek().is_some_and(|latest| (*head, RowId::MIN) > *latest) {
                break; // every later destination's rows come after all chosen ones
            }
            let take = destination.as_deref().map_or(usize::MAX, &room).min(max);
            let Some(rows) = self.ready.get(destination) else { continue };
            for &(visible, rowid) in rows.iter().take(take) {
                if visible > now {
                    break;
                }
                if chosen.len() == max {
                    if chosen.peek().is_some_and(|latest| (visible, rowid) > *latest) {
                        break;
                    }
                    chosen.pop();
                }
                chosen.push((visible, rowid));
            }
        }
        let mut chosen = chosen.into_sorted_vec();
        chosen.dedup();
        chosen
            .into_iter()
            .filter_map(|(_, rowid)| {
                let (token, payload) = self.take_lease(rowid, until)?;
                Some((rowid, token, payload))
            })
            .collect()
    }

    /// Start settling the lease `token` of `rowid`: true if it is still that lease's
    /// (even past its end, while nobody took it over), and then it stays put until
    /// `finish_settle`.
    pub fn begin_settle(&mut self, rowid: RowId, token: u64) -> bool {
        match self.entries.get_mut(&rowid).map(|e| &mut e.state) {
            Some(State::Leased { token: held, settling, .. }) if *held == token && !*settling => {
                *settling = true;
                true
            }
            _ => false,
        }
    }

    /// The settle begun by `begin_settle` was committed (`Some`) or not (`None`: the
    /// lease stands again, and runs out as it would have).
    pub fn finish_settle(&mut self, rowid: RowId, outcome: Option<Settled>) {
        let Some(entry) = self.entries.get_mut(&rowid) else { return };
        let State::Leased { until, settling: true, .. } = entry.state else { return };
        match outcome {
            None => {
                if let State::Leased { settling, .. } = &mut entry.state {
                    *settling = false;
                }
            }
            Some(Settled::Removed) => {
                self.leases.remove(&(until, rowid));
                self.entries.remove(&rowid);
            }
            Some(Settled::Rescheduled { due_at, destination, payload }) => {
                self.leases.remove(&(until, rowid));
                let destination = self.intern(destination.as_deref());
                let payload = self.keep(payload);
                if let Some(entry) = self.entries.get_mut(&rowid) {
                    entry.due_at = due_at;
                    entry.destination = destination;
                    entry.state = State::Ready { visible: due_at };
                    entry.payload = payload;
                }
                self.add_ready(rowid, due_at);
            }
        }
    }

    /// Give up the lease `token` of `rowid` without settling it (its payload could not be
    /// read): visible again at once.
    pub fn unlease(&mut self, rowid: RowId, token: u64) {
        let Some(entry) = self.entries.get_mut(&rowid) else { return };
        if let State::Leased { token: held, until, settling: false } = entry.state {
            if held == token {
                let visible = entry.due_at;
                entry.state = State::Ready { visible };
                self.leases.remove(&(until, rowid));
                self.add_ready(rowid, visible);
            }
        }
    }

    /// When the next row becomes visible, of any destination for which `full` is false;
    /// or the earliest lease's end, whatever its destination, if sooner. (Telling whose
    /// lease it is would walk every lease of the full destinations, on every idle turn
    /// of the dispatch loop; an early answer only wakes the loop once more.)
    pub fn next_visible(&self, full: impl Fn(&str) -> bool) -> Option<i64> {
        let ready = self.heads.iter().find(|(_, d)| !d.as_deref().is_some_and(&full)).map(|(at, _)| *at);
        let lease_end = self.leases.first().map(|(until, _)| *until);
        ready.into_iter().chain(lease_end).min()
    }

    /// The number of rows and the earliest due time among them.
    pub fn depth(&self) -> (u64, Option<i64>) {
        (self.entries.len() as u64, self.entries.values().map(|e| e.due_at).min())
    }

    fn intern(&mut self, destination: Option<&str>) -> Destination {
        let destination = destination?;
        if let Some(name) = self.names.get(destination) {
            return Some(Arc::clone(name));
        }
        let name: Arc<str> = Arc::from(destination);
        self.names.insert(Arc::clone(&name));
        Some(name)
    }

    /// Leases that ran out (and are not being settled) become visible at their end.
    fn expire(&mut self, now: i64) {
        let ended: Vec<(i64, RowId)> = self.leases.range(..(now.saturating_add(1), RowId::MIN)).copied().collect();
        for (until, rowid) in ended {
            let Some(entry) = self.entries.get_mut(&rowid) else {
                self.leases.remove(&(until, rowid));
                continue;
            };
            if let State::Leased { settling: false, .. } = entry.state {
                let visible = entry.due_at.max(until);
                entry.state = State::Ready { visible };
                self.leases.remove(&(until, rowid));
                self.add_ready(rowid, visible);
            }
        }
    }

    /// Move a ready row to leased; its new token, and its kept payload (no longer kept).
    fn take_lease(&mut self, rowid: RowId, until: i64) -> Option<(u64, Option<Box<str>>)> {
        let entry = self.entries.get_mut(&rowid)?;
        let State::Ready { visible } = entry.state else { return None };
        self.next_token += 1;
        let token = self.next_token;
        entry.state = State::Leased { token, until, settling: false };
        let destination = entry.destination.clone();
        let payload = entry.payload.take();
        self.release_payload(payload.as_deref());
        self.take_ready(&destination, rowid, visible);
        self.leases.insert((until, rowid));
        Some((token, payload))
    }

    fn add_ready(&mut self, rowid: RowId, visible: i64) {
        let Some(destination) = self.entries.get(&rowid).map(|e| e.destination.clone()) else { return };
        let rows = self.ready.entry(destination.clone()).or_default();
        let old_head = rows.first().map(|(at, _)| *at);
        rows.insert((visible, rowid));
        if old_head.is_none_or(|head| visible < head) {
            if let Some(head) = old_head {
                self.heads.remove(&(head, destination.clone()));
            }
            self.heads.insert((visible, destination));
        }
    }

    fn take_ready(&mut self, destination: &Destination, rowid: RowId, visible: i64) {
        let Some(rows) = self.ready.get_mut(destination) else { return };
        let old_head = rows.first().map(|(at, _)| *at);
        rows.remove(&(visible, rowid));
        let new_head = rows.first().map(|(at, _)| *at);
        if rows.is_empty() {
            self.ready.remove(destination);
        }
        if old_head != new_head {
            if let Some(head) = old_head {
                self.heads.remove(&(head, destination.clone()));
            }
            if let Some(head) = new_head {
                self.heads.insert((head, destination.clone()));
            }
        }
    }

    /// Every structure agrees with `entries` (tests).
    #[cfg(test)]
    fn check(&self) {
        let mut ready = 0;
        for (destination, rows) in &self.ready {
            assert!(!rows.is_empty(), "no empty sets");
            let head = rows.first().unwrap().0;
            assert!(self.heads.contains(&(head, destination.clone())), "head of {destination:?}");
            for (visible, rowid) in rows {
                let entry = &self.entries[rowid];
                assert_eq!(entry.state, State::Ready { visible: *visible });
                assert_eq!(&entry.destination, destination);
                ready += 1;
            }
        }
        assert_eq!(self.heads.len(), self.ready.len(), "one head per destination");
        for (until, rowid) in &self.leases {
            assert!(matches!(self.entries[rowid].state, State::Leased { until: u, .. } if u == *until));
        }
        assert_eq!(ready + self.leases.len(), self.entries.len(), "every row ready or leased");
        let kept: usize = self.entries.values().filter_map(|e| e.payload.as_deref()).map(str::len).sum();
        assert_eq!(kept, self.cached_bytes, "payload bytes counted");
        assert!(self.entries.values().all(|e| e.payload.is_none() || matches!(e.state, State::Ready { .. })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: i64 = 30_000;

    fn unbounded(_: &str) -> usize {
        usize::MAX
    }

    fn rows(leased: &[Lease]) -> Vec<RowId> {
        leased.iter().map(|(rowid, ..)| *rowid).collect()
    }

    #[test]
    fn rows_come_out_earliest_visible_first_and_only_when_due() {
        let mut index = QueueIndex::default();
        index.insert(1, 300, Some("a"), None);
        index.insert(2, 100, Some("b"), None);
        index.insert(3, 200, None, None);
        index.insert(4, 5_000, Some("a"), None);
        index.check();
        assert_eq!(rows(&index.lease(250, 250 + LEASE, 10, unbounded)), [2, 3]);
        assert_eq!(rows(&index.lease(1_000, 1_000 + LEASE, 10, unbounded)), [1]);
        assert!(index.lease(1_000, 1_000 + LEASE, 10, unbounded).is_empty());
        assert_eq!(index.next_visible(|_| false), Some(5_000));
        index.check();
    }

    #[test]
    fn max_keeps_the_earliest_across_destinations() {
        let mut index = QueueIndex::default();
        for (rowid, due) in [(1, 10), (2, 40), (3, 70)] {
            index.insert(rowid, due, Some("a"), None);
        }
        for (rowid, due) in [(4, 20), (5, 30), (6, 80)] {
            index.insert(rowid, due, Some("b"), None);
        }
        index.insert(7, 15, None, None);
        assert_eq!(rows(&index.lease(100, 100 + LEASE, 4, unbounded)), [1, 7, 4, 5]);
        assert_eq!(rows(&index.lease(100, 100 + LEASE, 10, unbounded)), [2, 3, 6]);
        index.check();
    }

    #[test]
    fn a_full_destination_is_passed_over_and_one_with_little_room_gives_that_much() {
        let mut index = QueueIndex::default();
        for rowid in 1..=1_000 {
            index.insert(rowid, rowid, Some("busy"), None);
        }
        index.insert(2_000, 500, Some("quiet"), None);
        index.insert(2_001, 600, Some("some"), None);
        index.insert(2_002, 601, Some("some"), None);
        let room = |d: &str| match d {
            "busy" => 0,
            "some" => 1,
            _ => usize::MAX,
        };
        assert_eq!(rows(&index.lease(10_000, 10_000 + LEASE, 64, room)), [2_000, 2_001]);
        assert_eq!(index.next_visible(|d| d == "busy"), Some(601));
        assert_eq!(index.next_visible(|d| d != "busy"), Some(1));
        index.check();
    }

    #[test]
    fn a_lease_runs_out_unless_settled_and_a_stale_token_settles_nothing() {
        let mut index = QueueIndex::default();
        index.insert(1, 0, Some("a"), None);
        let first = index.lease(0, LEASE, 10, unbounded);
        assert_eq!(rows(&first), [1]);
        assert_eq!(index.next_visible(|_| false), Some(LEASE), "back when the lease ends");
        assert!(index.lease(LEASE - 1, 2 * LEASE, 10, unbounded).is_empty());
        let second = index.lease(LEASE, 2 * LEASE, 10, unbounded);
        assert_eq!(rows(&second), [1], "taken over after the lease");
        assert!(!index.begin_settle(1, first[0].1), "the first holder's token is stale");
        assert!(index.begin_settle(1, second[0].1));
        assert!(!index.begin_settle(1, second[0].1), "one settle at a time");
        // Settling holds the row past its lease's end.
        assert!(index.lease(3 * LEASE, 4 * LEASE, 10, unbounded).is_empty());
        index.finish_settle(1, None);
        index.check();
        let third = index.lease(3 * LEASE, 4 * LEASE, 10, unbounded);
        assert_eq!(rows(&third), [1], "a failed settle leaves the lease to run out");
        assert!(index.begin_settle(1, third[0].1));
        index.finish_settle(1, Some(Settled::Removed));
        assert_eq!(index.len(), 0);
        index.check();
    }

    #[test]
    fn a_rescheduled_row_is_visible_at_its_new_time_under_its_new_destination() {
        let mut index = QueueIndex::default();
        index.insert(1, 0, Some("a"), None);
        let leased = index.lease(0, LEASE, 10, unbounded);
        assert!(index.begin_settle(1, leased[0].1));
        index
            .finish_settle(1, Some(Settled::Rescheduled { due_at: 500, destination: Some("b".into()), payload: None }));
        index.check();
        assert!(index.lease(499, LEASE, 10, unbounded).is_empty());
        assert!(index.lease(500, LEASE, 10, |d| usize::from(d != "b")).is_empty(), "counted under b");
        assert_eq!(rows(&index.lease(500, LEASE, 10, unbounded)), [1]);
        index.check();
    }

    #[test]
    fn unleased_rows_are_visible_at_their_due_time() {
        let mut index = QueueIndex::default();
        index.insert(1, 10, None, None);
        index.insert(2, 20, None, None);
        let leased = index.lease(100, 100 + LEASE, 10, unbounded);
        assert!(index.begin_settle(2, leased[1].1));
        index.unlease(2, leased[1].1);
        assert!(index.lease(100, 100 + LEASE, 10, unbounded).is_empty(), "a settling lease is not given up");
        index.finish_settle(2, None);
        index.unlease(1, leased[0].1);
        index.unlease(2, leased[1].1);
        index.check();
        assert_eq!(index.next_visible(|_| false), Some(10));
        assert_eq!(index.depth(), (2, Some(10)));
        index.remove(1);
        index.check();
        assert_eq!(index.depth(), (1, Some(20)));
    }

    #[test]
    fn payloads_are_kept_until_leased_within_the_byte_bound_and_can_be_forgotten() {
        let mut index = QueueIndex::default();
        let big: Box<str> = "x".repeat(PAYLOAD_CACHE_BYTES - 10).into();
        index.insert(1, 0, None, Some(big.clone()));
        index.insert(2, 1, None, Some("0123456789a".into())); // one byte too many: not kept
        index.insert(3, 2, None, Some("short".into()));
        index.check();
        let leased = index.lease(10, LEASE, 10, unbounded);
        let kept: Vec<Option<&str>> = leased.iter().map(|(_, _, p)| p.as_deref()).collect();
        assert_eq!(kept, [Some(&*big), None, Some("short")]);
        index.check();
        assert_eq!(index.cached_bytes, 0, "a leased row's payload is handed over, not kept");

        index.insert(4, 0, None, Some("kept".into()));
        let token = leased[0].1;
        assert!(index.begin_settle(1, token));
        let payload = Some("next".into());
        index.finish_settle(1, Some(Settled::Rescheduled { due_at: 0, destination: None, payload }));
        index.check();
        index.forget_payloads();
        index.check();
        let leased = index.lease(10, LEASE, 10, unbounded);
        assert!(leased.iter().all(|(_, _, p)| p.is_none()), "forgotten: read back from the file");
    }

    /// Memory per queued firing (not a pass/fail test): the process's resident size
    /// before and after indexing a million rows of 20 destinations, payloads not kept.
    /// `cargo test --release -p postback --features embedded --lib queue_index_memory -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn queue_index_memory() {
        fn resident_bytes() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
            let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            pages * 4096
        }
        const ROWS: i64 = 1_000_000;
        let destinations: Vec<String> = (0..20).map(|i| format!("https://receiver{i}.example:443")).collect();
        let before = resident_bytes();
        let mut index = QueueIndex::default();
        for rowid in 0..ROWS {
            index.insert(rowid, rowid / 7, Some(&destinations[(rowid % 20) as usize]), None);
        }
        let after = resident_bytes();
        println!("{} bytes per queued firing ({} rows)", (after - before) / ROWS as usize, index.len());
    }

    /// A row of the plain model: due, destination, lease (token, until), visible.
    type ModelRow = (i64, Option<String>, Option<(u64, i64)>, i64);

    /// Random operations against a plain list: the same rows come out, and the
    /// structures stay consistent.
    #[test]
    fn random_operations_match_a_plain_model() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut index = QueueIndex::default();
            let mut model: HashMap<RowId, ModelRow> = HashMap::new();
            let mut kept: HashMap<RowId, ()> = HashMap::new();
            let mut now = 0i64;
            let mut next_row = 1;
            let destinations = [Some("a"), Some("b"), Some("c"), None];
            for _ in 0..400 {
                match rng.random_range(0..10) {
                    0..=3 => {
                        let due = now + rng.random_range(-50..200);
                        let destination = destinations[rng.random_range(0..destinations.len())];
                        let payload = rng.random_bool(0.5).then(|| Box::from(format!("p{next_row}")));
                        if payload.is_some() {
                            kept.insert(next_row, ());
                        }
                        index.insert(next_row, due, destination, payload);
                        model.insert(next_row, (due, destination.map(str::to_string), None, due));
                        next_row += 1;
                    }
                    4..=6 => {
                        let max = rng.random_range(0..6);
                        let limit: usize = rng.random_range(0..3);
                        let until = now + rng.random_range(1..300);
                        let got = index.lease(now, until, max, |d| if d == "a" { limit } else { usize::MAX });
                        // The model: expire, then the earliest `max` visible, at most `limit` of a.
                        for (due, _, lease, visible) in model.values_mut() {
                            if let Some((_, end)) = *lease {
                                if end <= now {
                                    *lease = None;
                                    *visible = (*due).max(end);
                                }
                            }
                        }
                        let mut visible: Vec<(i64, RowId, Option<String>)> = model
                            .iter()
                            .filter(|(_, (_, _, lease, at))| lease.is_none() && *at <= now)
                            .map(|(rowid, (_, d, _, at))| (*at, *rowid, d.clone()))
                            .collect();
                        visible.sort();
                        let mut of_a = 0;
                        let expected: Vec<RowId> = visible
                            .into_iter()
                            .filter(|(_, _, d)| {
                                if d.as_deref() == Some("a") {
                                    of_a += 1;
                                    of_a <= limit
                                } else {
                                    true
                                }
                            })
                            .take(max)
                            .map(|(_, rowid, _)| rowid)
                            .collect();
                        assert_eq!(rows(&got), expected, "seed {seed}");
                        for (rowid, token, payload) in got {
                            model.get_mut(&rowid).unwrap().2 = Some((token, until));
                            let was_kept = kept.remove(&rowid).is_some();
                            assert_eq!(payload.is_some(), was_kept, "seed {seed}: a kept payload comes with its lease");
                        }
                    }
                    7 => {
                        let leased: Vec<(RowId, u64)> =
                            model.iter().filter_map(|(r, (_, _, l, _))| l.map(|(t, _)| (*r, t))).collect();
                        if let Some(&(rowid, token)) = leased.first() {
                            assert!(index.begin_settle(rowid, token));
                            if rng.random_bool(0.5) {
                                index.finish_settle(rowid, Some(Settled::Removed));
                                model.remove(&rowid);
                            } else {
                                let due = now + rng.random_range(0..100);
                                index.finish_settle(
                                    rowid,
                                    Some(Settled::Rescheduled { due_at: due, destination: None, payload: None }),
                                );
                                *model.get_mut(&rowid).unwrap() = (due, None, None, due);
                            }
                        }
                    }
                    _ => now += rng.random_range(0..60),
                }
                index.check();
                assert_eq!(index.len(), model.len());
            }
        }
    }
}
