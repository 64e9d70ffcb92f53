//! Schema and its `user_version`-based migrations, and the connection settings.
//!
//! Times are integers: milliseconds since the epoch, except `logs.fired_at_ns`
//! (nanoseconds, so the `from`/`to` filters compare exactly with the entry's time).

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only; never edit
/// a released step.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE postbacks (
        id   TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX postbacks_by_kind ON postbacks(kind, id);

    -- Clicks and impressions, stored whole for enrichment; the latest per kind wins.
    CREATE TABLE touches (
        transaction_id TEXT NOT NULL,
        kind           TEXT NOT NULL,
        event          TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        PRIMARY KEY (transaction_id, kind)
    );
    CREATE INDEX touches_by_age ON touches(created_at);

    -- Current status of a conversion or named event (StatusKey::as_key).
    CREATE TABLE statuses (
        transaction_id TEXT NOT NULL,
        status_key     TEXT NOT NULL,
        current        TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        PRIMARY KEY (transaction_id, status_key)
    );
    CREATE INDEX statuses_by_age ON statuses(created_at);

    CREATE TABLE seen (
        dedupe_key TEXT PRIMARY KEY NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX seen_by_age ON seen(created_at);

    CREATE TABLE logs (
        id             TEXT PRIMARY KEY NOT NULL,
        postback_id    TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        kind           TEXT NOT NULL,
        offer_id       TEXT,
        publisher_id   TEXT,
        status_code    INTEGER,
        outcome        TEXT NOT NULL,
        fired_at_ns    INTEGER NOT NULL,
        body           TEXT NOT NULL,
        -- LogEntry::firing is not serialized with the entry (it is not API output).
        firing         TEXT
    );
    CREATE INDEX logs_by_postback ON logs(postback_id, id);
    CREATE INDEX logs_by_transaction ON logs(transaction_id, id);
    CREATE INDEX logs_by_fired_at ON logs(fired_at_ns);

    CREATE TABLE delivered (
        delivery_id TEXT PRIMARY KEY NOT NULL,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX delivered_by_age ON delivered(created_at);

    -- The queue. A row is visible when max(due_at, lease_until) <= now.
    CREATE TABLE firings (
        delivery_id TEXT PRIMARY KEY NOT NULL,
        due_at      INTEGER NOT NULL,
        lease_until INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        payload     TEXT NOT NULL
    );
    CREATE INDEX firings_by_visibility ON firings(max(due_at, lease_until));

    -- Queue rows whose payload could not be decoded, moved aside so they cannot block
    -- the queue.
    CREATE TABLE firings_quarantine (
        delivery_id    TEXT NOT NULL,
        payload        TEXT NOT NULL,
        error          TEXT NOT NULL,
        quarantined_at INTEGER NOT NULL
    );
    ",
    // 2: `GET /logs` is ordered by fired_at (ties by id), not by id (minted when the
    // attempt is logged, after its request): the log indexes end in (fired_at_ns, id).
    "
    DROP INDEX logs_by_postback;
    DROP INDEX logs_by_transaction;
    DROP INDEX logs_by_fired_at;
    CREATE INDEX logs_by_postback ON logs(postback_id, fired_at_ns, id);
    CREATE INDEX logs_by_transaction ON logs(transaction_id, fired_at_ns, id);
    CREATE INDEX logs_by_fired_at ON logs(fired_at_ns, id);
    ",
    // 3: postback versions. `postbacks.version` is the current one (rows from before
    // read as 1, like their bodies); `postback_versions` keeps the versions a replace
    // superseded, written in the replace's transaction.
    "
    ALTER TABLE postbacks ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE postback_versions (
        postback_id TEXT NOT NULL,
        version     INTEGER NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (postback_id, version)
    ) WITHOUT ROWID;
    ",
    // 4: delivery control. A postback's breaker (the `Breaker` as JSON, and the version
    // its conditional writes compare) and the firings its open breaker holds, in release
    // order. Rate-limit slots are not stored (see `control.rs`).
    "
    CREATE TABLE breakers (
        postback_id TEXT PRIMARY KEY NOT NULL,
        version     INTEGER NOT NULL,
        body        TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE held_firings (
        postback_id  TEXT NOT NULL,
        queued_at_ns INTEGER NOT NULL,
        delivery_id  TEXT NOT NULL,
        payload      TEXT NOT NULL,
        PRIMARY KEY (postback_id, queued_at_ns, delivery_id)
    ) WITHOUT ROWID;
    ",
    // 5: bulk replay (`POST /logs/replay`): per delivery id, the newest of its entries
    // replayed, so a second replay does not queue it again. Self-contained (IF NOT
    // EXISTS) so it can take any place in this list.
    "
    CREATE TABLE IF NOT EXISTS replayed (
        delivery_id TEXT PRIMARY KEY NOT NULL,
        fired_at_ns INTEGER NOT NULL,
        entry_id    TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS replayed_by_age ON replayed(created_at);
    ",
    // 6: fair sending. `firings.destination` (Firing::destination; NULL for rows from
    // before, never held back) lets `receive_fair` pass over the due firings of a
    // destination at its limit; the visibility index carries it (and the id) so that
    // pass reads the index only.
    "
    ALTER TABLE firings ADD COLUMN destination TEXT;
    DROP INDEX firings_by_visibility;
    CREATE INDEX firings_by_visibility ON firings(max(due_at, lease_until), destination, delivery_id);
    ",
    // 7: the queue's visibility order and its leases are kept in memory
    // (`queue_index.rs`, loaded from this table at open): a row keeps what must survive
    // a crash, and is found by its rowid. No lease columns, no visibility index: a lease
    // is no write, and a firing's row is written twice (queued, settled), not three times.
    "
    CREATE TABLE firings_7 (
        delivery_id TEXT PRIMARY KEY NOT NULL,
        due_at      INTEGER NOT NULL,
        payload     TEXT NOT NULL,
        destination TEXT
    );
    INSERT INTO firings_7 (delivery_id, due_at, payload, destination)
        SELECT delivery_id, due_at, payload, destination FROM firings ORDER BY due_at;
    DROP TABLE firings;
    ALTER TABLE firings_7 RENAME TO firings;
    ",
    // 8: the postbacks' change stamp (`PostbackStore::changes_since`): one row per
    // postback write, in the write's transaction; the stamp is the highest. The last
    // `CHANGES_KEPT` are kept. Self-contained (IF NOT EXISTS) so it can take any place.
    "
    CREATE TABLE IF NOT EXISTS postback_changes (
        stamp       INTEGER PRIMARY KEY NOT NULL,
        postback_id TEXT NOT NULL
    );
    ",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this build understands ({SCHEMA_VERSION})")]
    TooNew { found: i64 },
    #[error("could not switch to WAL journal mode (got {0:?})")]
    NoWal(String),
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL pages at which the writer checkpoints itself (4 KiB each: about 40 MiB of WAL).
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// Open the write connection: WAL, the requested `synchronous` level, migrated schema.
pub(crate) fn open_writer(path: &std::path::Path, synchronous: &str) -> Result<Connection, SchemaError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SchemaError::NoWal(mode));
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    // The checkpoints run on their own thread (`checkpointer.rs`); this one, in the
    // commit that crosses it, is the backstop should that thread fall behind.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn)?;
    Ok(conn)
}

/// Open one read-only connection (after the writer created the schema).
pub(crate) fn open_reader(path: &std::path::Path) -> Result<Connection, SchemaError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { found });
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_fresh_file_once_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = open_writer(&path, "FULL").unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(conn);
        // Reopening runs no step again (it would fail: the tables exist).
        let conn = open_writer(&path, "FULL").unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(open_writer(&path, "FULL"), Err(SchemaError::TooNew { .. })));
    }

    /// A version-1 file (log indexes on id) gets the fired_at indexes and keeps its rows.
    #[test]
    fn version_1_gets_the_fired_at_log_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO logs (id, postback_id, transaction_id, kind, outcome, fired_at_ns, body) \
             VALUES ('l1', 'pb', 'T', 'click', 'delivered', 5, '{}')",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_writer(&path, "FULL").unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let columns = |index: &str| -> Vec<String> {
            conn.prepare(&format!("PRAGMA index_info({index})"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(2))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(columns("logs_by_postback"), ["postback_id", "fired_at_ns", "id"]);
        assert_eq!(columns("logs_by_transaction"), ["transaction_id", "fired_at_ns", "id"]);
        assert_eq!(columns("logs_by_fired_at"), ["fired_at_ns", "id"]);
        let rows: i64 = conn.query_row("SELECT count(*) FROM logs", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
    }

    /// A version-2 file keeps its postbacks, each at version 1 with no saved versions.
    #[test]
    fn version_2_postbacks_become_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute("INSERT INTO postbacks (id, kind, body) VALUES ('pb', 'click', '{}')", []).unwrap();
        drop(conn);
        let conn = open_writer(&path, "FULL").unwrap();
        let version: i64 = conn.query_row("SELECT version FROM postbacks WHERE id = 'pb'", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 1);
        let saved: i64 = conn.query_row("SELECT count(*) FROM postback_versions", [], |r| r.get(0)).unwrap();
        assert_eq!(saved, 0);
    }

    /// A version-3 file gets the (empty) delivery-control tables and keeps its rows.
    #[test]
    fn version_3_gets_the_control_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        for step in &MIGRATIONS[..3] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute("INSERT INTO postbacks (id, kind, body) VALUES ('pb', 'click', '{}')", []).unwrap();
        drop(conn);
        let conn = open_writer(&path, "FULL").unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert!(version >= 4);
        for table in ["breakers", "held_firings"] {
            let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap();
            assert_eq!(rows, 0, "{table}");
        }
        let postbacks: i64 = conn.query_row("SELECT count(*) FROM postbacks", [], |r| r.get(0)).unwrap();
        assert_eq!(postbacks, 1);
    }

    #[test]
    fn held_firings_are_read_in_order_from_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("db.sqlite"), "NORMAL").unwrap();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT payload FROM held_firings WHERE postback_id = ?1 \
                 ORDER BY queued_at_ns, delivery_id LIMIT 10",
            )
            .unwrap()
            .query_map(["pb"], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().all(|step| !step.contains("TEMP B-TREE")), "no sort step: {plan:?}");
        assert!(plan.iter().any(|step| step.contains("PRIMARY KEY")), "plan: {plan:?}");
    }

    /// A version-6 file's queued firings (leased ones too) stay queued, due as before,
    /// with their payloads and destinations; the lease columns and the index are gone.
    #[test]
    fn version_6_firings_keep_their_rows_without_lease_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        for step in &MIGRATIONS[..6] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute(
            "INSERT INTO firings (delivery_id, due_at, lease_until, lease_token, payload, destination) VALUES \
             ('d1', 10, 0, NULL, '{\"a\":1}', 'http://a'), ('d2', 20, 99999, 'tok', '{\"b\":2}', NULL)",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_writer(&path, "FULL").unwrap();
        let rows: Vec<(String, i64, String, Option<String>)> = conn
            .prepare("SELECT delivery_id, due_at, payload, destination FROM firings ORDER BY delivery_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [
                ("d1".to_string(), 10, "{\"a\":1}".to_string(), Some("http://a".to_string())),
                ("d2".to_string(), 20, "{\"b\":2}".to_string(), None)
            ]
        );
        let columns: Vec<String> = conn
            .prepare("PRAGMA table_info(firings)")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(columns, ["delivery_id", "due_at", "payload", "destination"]);
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'firings_by_visibility'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
    }
}
