//! Listings (`LogStore::query`): the plan of a filter over one of the three indexes
//! (key range, FilterExpression), its sources read a page at a time, and their merge.

use std::collections::{BTreeMap, VecDeque};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use futures::future::try_join_all;

use super::keys::{cursor_at, fired_key, time_key, LOG_SHARDS};
use super::{
    DynamoLogStore, FIRED_KEY, ID, LISTED_UNTIL, OFFER_ID, OUTCOME, POSTBACK_ID, PUBLISHER_ID, SHARD, STATUS_CODE,
    TEST, TRANSACTION_ID, TYPE,
};
use crate::adapters::aws::error::unavailable;
use crate::adapters::aws::item::{batch_get, get_s, n, s, Item, EXPIRES_AT};
use crate::adapters::aws::resources::{LOGS_BY_POSTBACK, LOGS_BY_TRANSACTION, LOGS_NEWEST};
use crate::domain::log::{
    Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPage, LogPredicate, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT,
};
use crate::ports::StoreResult;

/// Items evaluated per Query page when filters may discard many of them (a page also
/// stops at 1 MB read).
const FILTERED_PAGE: i32 = 1000;
/// Query pages one listing reads at most (over all its sources): with filters that
/// match little, a request reads at most this many pages (≤ 1 MB each), then answers
/// what it found with a cursor where it stopped, even if the page is short or empty.
const MAX_QUERY_PAGES: usize = 8;

/// How much one listing may read: pages, and items evaluated per filtered page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBound {
    pub pages: usize,
    pub page_items: i32,
}

impl Default for ReadBound {
    fn default() -> Self {
        ReadBound { pages: MAX_QUERY_PAGES, page_items: FILTERED_PAGE }
    }
}

/// The sort-key range a listing reads: keys at or above `low` (from `from`), below
/// `high` (the smaller of: the cursor's key, the first key after `to`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRange {
    low: Option<String>,
    high: Option<String>,
}

impl KeyRange {
    fn for_filter(filter: &LogFilter) -> KeyRange {
        // A bare time key sorts before every `time#id` of that time and after every
        // earlier one, so it bounds inclusively from below and exclusively from above.
        let low = filter.from.map(time_key);
        let to_high = filter.to.and_then(|t| t.checked_add_signed(chrono::Duration::nanoseconds(1))).map(time_key);
        let cursor_high = filter.cursor.as_ref().map(|c| fired_key(c.fired_at, &c.last_id));
        let high = match (to_high, cursor_high) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        KeyRange { low, high }
    }

    fn is_empty(&self) -> bool {
        matches!((&self.low, &self.high), (Some(l), Some(h)) if l >= h)
    }

    fn admits(&self, key: &str) -> bool {
        self.low.as_deref().is_none_or(|l| key >= l) && self.high.as_deref().is_none_or(|h| key < h)
    }

    /// The sort-key part of a KeyConditionExpression, with its values.
    fn condition(&self) -> (Option<&'static str>, Vec<(&'static str, String)>) {
        match (&self.low, &self.high) {
            (None, None) => (None, vec![]),
            (Some(l), None) => (Some("#fk >= :lo"), vec![(":lo", l.clone())]),
            (None, Some(h)) => (Some("#fk < :hi"), vec![(":hi", h.clone())]),
            // BETWEEN is inclusive; the exclusive upper bound is then dropped by `admits`.
            (Some(l), Some(h)) => (Some("#fk BETWEEN :lo AND :hi"), vec![(":lo", l.clone()), (":hi", h.clone())]),
        }
    }
}

/// One index partition read newest first, a page at a time.
struct Source {
    index: &'static str,
    hash_attribute: &'static str,
    hash_value: String,
    /// Entries read and not merged yet, with their sort keys.
    buffer: VecDeque<(String, LogEntry)>,
    start_key: Option<Item>,
    /// The sort key of the last item evaluated (matching or not): everything of this
    /// source at or above it has been seen.
    read_down_to: Option<String>,
    done: bool,
}

/// The Query parts every source of one listing shares.
struct Plan<'a> {
    filter: &'a LogFilter,
    range: KeyRange,
    filter_expression: String,
    names: BTreeMap<String, String>,
    values: BTreeMap<String, AttributeValue>,
    page: i32,
    now: DateTime<Utc>,
}

/// The FilterExpression term (with its names; `:now` is the caller's) that keeps live
/// entries only: not past `expires_at`, and, when delivered entries may outlive the
/// retention as markers (`listed_until`), not past `listed_until` either.
pub(super) fn visible_condition(listed_until: bool) -> (&'static str, BTreeMap<String, String>) {
    let mut names = BTreeMap::from([("#exp".to_string(), EXPIRES_AT.to_string())]);
    if listed_until {
        names.insert("#lu".to_string(), LISTED_UNTIL.to_string());
        ("#exp > :now AND (attribute_not_exists(#lu) OR #lu > :now)", names)
    } else {
        ("#exp > :now", names)
    }
}

impl<'a> Plan<'a> {
    fn new(
        filter: &'a LogFilter,
        index: &str,
        want: usize,
        page_items: i32,
        now: DateTime<Utc>,
        listed_until: bool,
    ) -> Plan<'a> {
        let (visible, mut names) = visible_condition(listed_until);
        let mut conditions = vec![visible.to_string()];
        let mut values = BTreeMap::from([(":now".to_string(), n(now.timestamp()))]);
        let mut add = |attribute: &str, op: &str, value: AttributeValue| {
            let i = names.len();
            names.insert(format!("#f{i}"), attribute.to_string());
            values.insert(format!(":f{i}"), value);
            conditions.push(format!("#f{i} {op} :f{i}"));
        };
        if let (Some(pb), false) = (&filter.postback_id, index == LOGS_BY_POSTBACK) {
            add(POSTBACK_ID, "=", s(pb));
        }
        if let (Some(tx), false) = (&filter.transaction_id, index == LOGS_BY_TRANSACTION) {
            add(TRANSACTION_ID, "=", s(tx));
        }
        if let Some(kind) = filter.kind {
            add(TYPE, "=", s(kind.as_str()));
        }
        if let Some(offer) = &filter.offer_id {
            add(OFFER_ID, "=", s(offer));
        }
        if let Some(publisher) = &filter.publisher_id {
            add(PUBLISHER_ID, "=", s(publisher));
        }
        if let Some(code) = filter.status_code {
            add(STATUS_CODE, "=", n(code));
        }
        if let Some(outcome) = filter.outcome {
            add(OUTCOME, "=", s(outcome.as_str()));
        }
        // Only projected columns can be compared in the index; the text columns are
        // compared in memory on the entries read from the table (`read_page`).
        let mut in_memory = false;
        for p in &filter.predicates {
            let Some(attribute) = predicate_attribute(p.column()) else {
                in_memory = true;
                continue;
            };
            let i = names.len();
            names.insert(format!("#f{i}"), attribute.to_string());
            values.insert(format!(":f{i}"), predicate_value(p));
            conditions.push(match p.op() {
                LogOp::Is => format!("#f{i} = :f{i}"),
                // `<>` is false where the attribute is missing; *is not* keeps those.
                LogOp::IsNot => format!("(attribute_not_exists(#f{i}) OR #f{i} <> :f{i})"),
                LogOp::Contains => format!("contains(#f{i}, :f{i})"),
            });
        }
        let filtered = conditions.len() > 1 || in_memory;
        let want = i32::try_from(want).unwrap_or(page_items);
        Plan {
            filter,
            range: KeyRange::for_filter(filter),
            filter_expression: conditions.join(" AND "),
            names,
            values,
            page: if filtered { page_items.max(want) } else { want },
            now,
        }
    }
}

impl DynamoLogStore {
    /// Read the next page of `source` (one Query call).
    async fn read_page(&self, source: &mut Source, plan: &Plan<'_>) -> StoreResult<()> {
        {
            let (range_condition, range_values) = plan.range.condition();
            let key_condition = match range_condition {
                Some(c) => format!("#hk = :hk AND {c}"),
                None => "#hk = :hk".to_string(),
            };
            // DynamoDB rejects names and values the expressions do not use.
            let key_name = range_condition.map(|_| FIRED_KEY.to_string());
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(source.index)
                .key_condition_expression(key_condition)
                .filter_expression(&plan.filter_expression)
                .expression_attribute_names("#hk", source.hash_attribute)
                .expression_attribute_values(":hk", s(&source.hash_value))
                .scan_index_forward(false)
                .limit(plan.page)
                .set_exclusive_start_key(source.start_key.take());
            for (k, v) in &plan.names {
                query = query.expression_attribute_names(k, v);
            }
            for (k, v) in &plan.values {
                query = query.expression_attribute_values(k, v.clone());
            }
            if let Some(name) = key_name {
                query = query.expression_attribute_names("#fk", name);
            }
            for (k, v) in range_values {
                query = query.expression_attribute_values(k, s(v));
            }
            let page = query.send().await.map_err(|e| unavailable("DynamoDB Query logs", e))?;
            // The index holds keys and filter attributes only: read the entries it kept
            // from the table (strongly consistent, 100 keys a call), in index order.
            let kept: Vec<(String, String)> = page
                .items()
                .iter()
                .filter_map(|item| Some((get_s(item, FIRED_KEY)?.to_string(), get_s(item, ID)?.to_string())))
                .filter(|(key, _)| plan.range.admits(key))
                .collect();
            let keys: Vec<Item> = kept.iter().map(|(_, id)| Item::from([(ID.to_string(), s(id))])).collect();
            let mut found: std::collections::HashMap<String, Item> = batch_get(&self.client, &self.table, keys)
                .await?
                .into_iter()
                .filter_map(|item| Some((get_s(&item, ID)?.to_string(), item)))
                .collect();
            for (key, id) in kept {
                // Gone since the index was read (expired): not listed.
                let Some(item) = found.remove(&id) else { continue };
                let Some(entry) = Self::parse_entry(&item, plan.now)? else { continue };
                if plan.filter.matches(&entry) {
                    source.buffer.push_back((key, entry));
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => {
                    source.read_down_to = get_s(&key, FIRED_KEY).map(str::to_string);
                    source.start_key = Some(key);
                }
                _ => source.done = true,
            }
        }
        Ok(())
    }

    /// `LogStore::query`: the sources of the index the filter picks, merged newest first.
    pub(super) async fn list_entries(&self, filter: &LogFilter) -> StoreResult<LogPage> {
        let limit = match filter.limit {
            0 => DEFAULT_LOG_LIMIT,
            l => l.min(MAX_LOG_LIMIT),
        };
        // One more than a page tells whether there is a next page.
        let want = limit + 1;
        let (index, hash_attribute, hash_values) = match (&filter.transaction_id, &filter.postback_id) {
            (Some(tx), _) => (LOGS_BY_TRANSACTION, TRANSACTION_ID, vec![tx.clone()]),
            (None, Some(pb)) => (LOGS_BY_POSTBACK, POSTBACK_ID, vec![pb.clone()]),
            (None, None) => (LOGS_NEWEST, SHARD, (0..LOG_SHARDS).map(|i| format!("all#{i}")).collect()),
        };
        let plan =
            Plan::new(filter, index, want, self.bound.page_items, self.clock.now(), self.markers_outlive_entries());
        let inverted = matches!((filter.from, filter.to), (Some(from), Some(to)) if from > to);
        if inverted || plan.range.is_empty() {
            return Ok(LogPage { items: vec![], next_cursor: None });
        }
        let mut sources: Vec<Source> = hash_values
            .into_iter()
            .map(|hash_value| Source {
                index,
                hash_attribute,
                hash_value,
                buffer: VecDeque::new(),
                start_key: None,
                read_down_to: None,
                done: false,
            })
            .collect();
        let mut items = Vec::with_capacity(want);
        let mut pages = 0;
        // The first round reads every source once, whatever the bound.
        let max_pages = self.bound.pages.max(sources.len());
        // Where the listing stopped for the read bound, if it did: the highest key an
        // unfinished source has been read down to. Every source has been read at and
        // above it, so everything there was seen.
        let mut stopped_at: Option<String> = None;
        while items.len() < want {
            // A head can be merged only when every unfinished source has one.
            let empty: Vec<&mut Source> = sources.iter_mut().filter(|s| s.buffer.is_empty() && !s.done).collect();
            if !empty.is_empty() {
                if pages + empty.len() > max_pages {
                    stopped_at = sources.iter().filter(|s| !s.done).filter_map(|s| s.read_down_to.clone()).max();
                    break;
                }
                pages += empty.len();
                try_join_all(empty.into_iter().map(|s| self.read_page(s, &plan))).await?;
                continue;
            }
            match pop_newest(&mut sources, None) {
                Some(entry) => items.push(entry),
                None => break,
            }
        }
        if let Some(bound) = &stopped_at {
            // Heads the other sources still hold at or above the stop are complete too.
            while items.len() < want {
                match pop_newest(&mut sources, Some(bound)) {
                    Some(entry) => items.push(entry),
                    None => break,
                }
            }
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| Cursor::after(e).encode())
        } else {
            // Stopped short: resume strictly below the stop (that item was evaluated).
            stopped_at.as_deref().and_then(cursor_at).map(|c| c.encode())
        };
        Ok(LogPage { items, next_cursor })
    }
}

/// Take the newest buffered entry of all sources (the merge step), if its key is at or
/// above `floor`.
fn pop_newest(sources: &mut [Source], floor: Option<&String>) -> Option<LogEntry> {
    let newest = sources
        .iter_mut()
        .filter(|s| s.buffer.front().is_some_and(|(k, _)| floor.is_none_or(|f| k >= f)))
        .max_by(|a, b| a.buffer.front().map(|(k, _)| k).cmp(&b.buffer.front().map(|(k, _)| k)))?;
    newest.buffer.pop_front().map(|(_, entry)| entry)
}

/// The index attribute a predicate compares, if the log indexes project it
/// (`resources::LOGS_PROJECTED_*`); `None` for the text columns, compared in memory.
fn predicate_attribute(column: LogColumn) -> Option<&'static str> {
    match column {
        LogColumn::PostbackId => Some(POSTBACK_ID),
        LogColumn::TransactionId => Some(TRANSACTION_ID),
        LogColumn::Type => Some(TYPE),
        LogColumn::OfferId => Some(OFFER_ID),
        LogColumn::PublisherId => Some(PUBLISHER_ID),
        LogColumn::StatusCode => Some(STATUS_CODE),
        LogColumn::Outcome => Some(OUTCOME),
        LogColumn::Test => Some(TEST),
        LogColumn::PostbackName
        | LogColumn::DeliveryId
        | LogColumn::EventId
        | LogColumn::Url
        | LogColumn::Error
        | LogColumn::ResponseBody => None,
    }
}

/// The predicate's value as the attribute holds it: a number, a boolean or a string.
fn predicate_value(p: &LogPredicate) -> AttributeValue {
    match p.column() {
        LogColumn::StatusCode => n(p.value()),
        LogColumn::Test => AttributeValue::Bool(p.value() == "true"),
        _ => s(p.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, nanos).unwrap()
    }

    #[test]
    fn time_bounds_and_the_cursor_bound_the_key_range() {
        let t = at(1_767_225_600, 500);
        let key = |secs_offset: i64, nanos: i64, id: &str| {
            fired_key(t + chrono::Duration::seconds(secs_offset) + chrono::Duration::nanoseconds(nanos), id)
        };
        let mut filter = LogFilter { from: Some(t), to: Some(t), ..LogFilter::default() };
        let range = KeyRange::for_filter(&filter);
        assert!(range.admits(&key(0, 0, "a")) && range.admits(&key(0, 0, "zzzz")), "from and to are inclusive");
        assert!(!range.admits(&key(0, -1, "zzzz")) && !range.admits(&key(0, 1, "0")), "and exact to the nanosecond");
        assert!(!range.is_empty());

        // The cursor is an exclusive upper bound on (fired_at, id).
        filter = LogFilter { cursor: Some(Cursor { fired_at: t, last_id: "m".into() }), ..LogFilter::default() };
        let range = KeyRange::for_filter(&filter);
        assert_eq!(range.high.as_deref(), Some(key(0, 0, "m").as_str()));
        assert!(range.admits(&key(0, 0, "l")) && !range.admits(&key(0, 0, "m")) && !range.admits(&key(0, 0, "n")));
        assert!(range.admits(&key(-1, 0, "z")));
        // With `to` as well, the lower of the two bounds counts.
        filter.to = Some(t - chrono::Duration::seconds(1));
        assert!(!KeyRange::for_filter(&filter).admits(&key(0, 0, "l")));
        assert!(KeyRange::for_filter(&filter).admits(&key(-1, 0, "z")));
        filter.to = Some(t + chrono::Duration::seconds(1));
        assert_eq!(KeyRange::for_filter(&filter).high.as_deref(), Some(key(0, 0, "m").as_str()));
        // A cursor older than `from`: nothing left.
        filter.from = Some(t + chrono::Duration::nanoseconds(1));
        assert!(KeyRange::for_filter(&filter).is_empty());
    }

    #[test]
    fn times_outside_years_0000_to_9999_are_clamped() {
        // `from` in an offset that moves it past 9999 in UTC, `to` at the very end.
        let late = DateTime::parse_from_rfc3339("9999-12-31T23:00:00-02:00").unwrap().with_timezone(&Utc);
        let range = KeyRange::for_filter(&LogFilter { from: Some(late), ..LogFilter::default() });
        assert!(
            !range.admits(&fired_key(crate::testing::fixtures::now(), "x")),
            "a bound past 9999 admits nothing of today"
        );
        let end = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z").unwrap().with_timezone(&Utc);
        let range = KeyRange::for_filter(&LogFilter { to: Some(end), ..LogFilter::default() });
        assert!(range.admits(&fired_key(crate::testing::fixtures::now(), "x")));
        let early = DateTime::parse_from_rfc3339("0000-01-01T00:00:00+01:00").unwrap().with_timezone(&Utc);
        let range = KeyRange::for_filter(&LogFilter { from: Some(early), ..LogFilter::default() });
        assert!(range.admits(&fired_key(crate::testing::fixtures::now(), "x")));
        assert!(time_key(early).starts_with("0000-01-01T00:00:00"));
    }
}
