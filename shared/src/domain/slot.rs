//! Rate-limit slots (see *Postback → `rate_limit_per_second`*): a postback's cursor is
//! the latest UTC second in which a request slot was taken and how many were taken in
//! it. Every adapter's `ControlStore::take_slot` moves it with this one rule, atomically.

/// The slot cursor after taking one: seconds before the cursor are full or past, so the
/// first second at or after `from` with room is the cursor (if it has room and is not
/// past), the next one, or `from` itself.
pub fn next_slot((second, taken): (i64, u32), from: i64, limit: u32) -> (i64, u32) {
    if second < from {
        (from, 1)
    } else if taken < limit {
        (second, taken + 1)
    } else {
        (second.saturating_add(1), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::next_slot;

    #[test]
    fn the_cursor_fills_a_second_then_moves_on_and_jumps_to_a_later_start() {
        let cases = [
            // (cursor, from, limit) → cursor after
            ((i64::MIN, 0), 100, 2, (100, 1)),
            ((100, 1), 100, 2, (100, 2)),
            ((100, 2), 100, 2, (101, 1)),
            ((101, 1), 100, 2, (101, 2)),
            ((101, 2), 105, 2, (105, 1)),
            ((105, 1), 105, 1, (106, 1)),
        ];
        for (cursor, from, limit, expected) in cases {
            assert_eq!(next_slot(cursor, from, limit), expected, "{cursor:?} from {from} limit {limit}");
        }
    }
}
