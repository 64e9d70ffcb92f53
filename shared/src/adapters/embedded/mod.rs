//! Embedded (SQLite) adapters for the local server: postbacks, touches, logs, the
//! firing queue with its timer and delivery control (breakers, held firings), all in ONE database file, so an acknowledged event, its
//! queued firings and their delivery markers share one durable store.
//!
//! Writes go through one writer thread that group-commits (see `writer`); reads go
//! through a small pool of read-only connections (see `readers`). `EmbeddedStore` is a
//! cheap handle (an `Arc`) implementing all five storage ports.

mod access;
mod checkpointer;
mod combined;
mod control;
mod logs;
mod postbacks;
mod queue;
mod queue_index;
mod readers;
mod schema;
mod touches;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use crate::ports::{Clock, StoreError, StoreResult};

use readers::ReadPool;
use writer::{WriterCounters, WriterHandle};

/// What the local server decides about the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How long a received firing stays hidden before it comes back (if not acked).
    pub lease: Duration,
    /// `LOG_RETENTION_DAYS`: logs, touches, dedupe keys and delivery markers older than
    /// this are not returned and are removed by `purge_expired`.
    pub retention: chrono::Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self { lease: Duration::from_secs(60), retention: chrono::Duration::days(30) }
    }
}

/// SQLite `synchronous` level of the write connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced: an acknowledged write survives power loss.
    #[default]
    Full,
    /// WAL is fsynced only at checkpoints: an acknowledged write survives a process
    /// crash but the last commits may be lost on power loss. For benchmarks.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// Knobs with sensible defaults; `EmbeddedStore::open` uses `StoreTuning::default()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    pub durability: Durability,
    /// Most write jobs committed in one transaction.
    pub max_batch: usize,
    /// Read-only connections in the pool.
    pub readers: usize,
}

impl Default for StoreTuning {
    fn default() -> Self {
        Self { durability: Durability::Full, max_batch: 512, readers: 4 }
    }
}

/// Writer counters since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Transactions the writer ran (each one commit, one fsync with `Durability::Full`).
    pub transactions: u64,
    /// Write jobs run (each async write call is one job).
    pub jobs: u64,
    /// Jobs that failed and were rolled back alone.
    pub failed_jobs: u64,
    /// The most jobs seen in one transaction.
    pub largest_batch: u64,
    /// `ack`/`retry` calls whose lease had been taken over (or whose firing was gone):
    /// they changed nothing.
    pub stale_receipts: u64,
    /// Queue rows whose payload could not be decoded, moved to `firings_quarantine`.
    pub quarantined_firings: u64,
    /// Queued firings found already delivered when leased (a crash between a delivery
    /// and its ack in an older version), dropped instead of handed out.
    pub delivered_at_lease: u64,
    /// Sum over jobs of the time from submit to the start of their transaction, in µs.
    pub queue_wait_micros_total: u64,
    /// The longest such wait seen, in µs.
    pub queue_wait_micros_max: u64,
}

struct Core {
    writer: WriterHandle,
    readers: Arc<ReadPool>,
    counters: Arc<WriterCounters>,
    notify: Arc<Notify>,
    options: EmbeddedOptions,
    path: PathBuf,
    /// Every "now" of the store: leases, due times, retention cutoffs, row ages.
    clock: Arc<dyn Clock>,
    /// The breaker mirror and the rate-limit slots (`control.rs`).
    control: control::ControlState,
    /// The queue's visibility order and leases (`queue_index.rs`).
    queue: queue::SharedIndex,
    /// WAL checkpoints off the writer thread; stops when the store is dropped.
    _checkpointer: checkpointer::Checkpointer,
}

/// The embedded store: one SQLite file, implementing `PostbackStore`, `TouchStore`,
/// `LogStore`, `FiringQueue` and `ControlStore`. Clone it freely; all clones share one writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    core: Arc<Core>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.core.path).field("options", &self.core.options).finish()
    }
}

impl EmbeddedStore {
    /// Open (or create) the database at `path` with fsync on every commit, timed by
    /// `clock` (`SystemClock` in the server).
    pub fn open(path: &Path, options: EmbeddedOptions, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::open_with(path, options, StoreTuning::default(), clock)
    }

    pub fn open_with(
        path: &Path,
        options: EmbeddedOptions,
        tuning: StoreTuning,
        clock: Arc<dyn Clock>,
    ) -> StoreResult<Self> {
        prepare_file(path)?;
        let write_conn = schema::open_writer(path, tuning.durability.pragma()).map_err(open_error)?;
        let control = control::ControlState::load(&write_conn)?;
        let queue = Arc::new(std::sync::Mutex::new(queue::load_index(&write_conn)?));
        let read_conns = (0..tuning.readers.max(1))
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<Connection>, _>>()
            .map_err(open_error)?;
        let counters = Arc::new(WriterCounters::default());
        let notify = Arc::new(Notify::new());
        let config =
            writer::WriterConfig { max_batch: tuning.max_batch, channel_capacity: tuning.max_batch.max(1) * 8 };
        let writer = writer::spawn(write_conn, config, Arc::clone(&counters), Arc::clone(&notify))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        let checkpointer = checkpointer::Checkpointer::spawn(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            core: Arc::new(Core {
                writer,
                readers: Arc::new(ReadPool::new(read_conns)),
                counters,
                notify,
                options,
                path: path.to_path_buf(),
                clock,
                control,
                queue,
                _checkpointer: checkpointer,
            }),
        })
    }

    pub fn options(&self) -> EmbeddedOptions {
        self.core.options
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.core.counters;
        StoreStats {
            transactions: c.transactions.load(Ordering::Relaxed),
            jobs: c.jobs.load(Ordering::Relaxed),
            failed_jobs: c.failed_jobs.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            stale_receipts: c.stale_receipts.load(Ordering::Relaxed),
            quarantined_firings: c.quarantined_firings.load(Ordering::Relaxed),
            delivered_at_lease: c.delivered_at_lease.load(Ordering::Relaxed),
            queue_wait_micros_total: c.queue_wait_micros_total.load(Ordering::Relaxed),
            queue_wait_micros_max: c.queue_wait_micros_max.load(Ordering::Relaxed),
        }
    }

    /// Finish the writes already submitted and close the write connection. Later writes
    /// (from any clone) fail with `Unavailable`; reads keep working until the last clone
    /// is dropped. Dropping every clone without `close` also stops the writer.
    pub async fn close(&self) {
        self.core.writer.close().await;
    }

    /// Delete logs, touches, statuses, dedupe keys and delivery markers older than the
    /// retention, in small transactions so other writes interleave. Returns the number
    /// of rows deleted. Reads ignore expired rows whether or not they were purged.
    pub async fn purge_expired(&self) -> StoreResult<u64> {
        const CHUNK: i64 = 2_000;
        let cutoff = self.cutoff(self.now());
        let (cutoff_ms, cutoff_ns) = (millis(cutoff), nanos(cutoff));
        // (table, row key, age column, bound)
        let targets: [(&str, &str, &str, i64); 7] = [
            ("logs", "rowid", "fired_at_ns", cutoff_ns),
            ("touches", "rowid", "created_at", cutoff_ms),
            ("statuses", "rowid", "created_at", cutoff_ms),
            ("seen", "dedupe_key", "created_at", cutoff_ms),
            ("delivered", "delivery_id", "created_at", cutoff_ms),
            ("replayed", "delivery_id", "created_at", cutoff_ms),
            ("firings_quarantine", "rowid", "quarantined_at", cutoff_ms),
        ];
        let mut total = 0u64;
        for (table, key, column, bound) in targets {
            let sql =
                format!("DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < ?1 LIMIT ?2)");
            loop {
                let sql = sql.clone();
                let deleted = self.write(move |conn| Ok(conn.prepare_cached(&sql)?.execute((bound, CHUNK))?)).await?;
                total += deleted as u64;
                if (deleted as i64) < CHUNK {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Now, on the store's clock.
    fn now(&self) -> DateTime<Utc> {
        self.core.clock.now()
    }

    /// Rows older than this are expired.
    fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_signed(self.core.options.retention).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.core.writer.write(op).await
    }

    async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.core.readers.read(op).await
    }

    /// A point read on the calling thread (see `ReadPool::read_point`).
    async fn read_point<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.core.readers.read_point(op).await
    }
}

/// Create the parent folder, and the file itself readable by its owner only: the store
/// holds postback headers, which often carry receivers' credentials. SQLite gives the
/// `-wal` and `-shm` files the same permissions.
fn prepare_file(path: &Path) -> StoreResult<()> {
    let io = |e: std::io::Error| StoreError::Unavailable(format!("cannot create {}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut create = std::fs::OpenOptions::new();
    create.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
    create.open(path).map(drop).map_err(io)
}

fn open_error(e: schema::SchemaError) -> StoreError {
    match e {
        schema::SchemaError::TooNew { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(format!("cannot open the embedded store: {other}")),
    }
}

/// Every SQLite error is a storage failure (503), never a panic. Errors with a meaning
/// of their own (a primary-key conflict on create) are matched before this applies.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(format!("sqlite: {e}"))
    }
}

fn encode<T: Serialize>(value: &T, what: &str) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("cannot encode {what}: {e}")))
}

fn decode<T: DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored {what} is unreadable: {e}")))
}

/// An INSERT of a new row: one whose key is taken is a `Conflict` ("`what` already
/// exists"), as on every other store.
fn insert_new(inserted: rusqlite::Result<usize>, what: impl FnOnce() -> String) -> StoreResult<()> {
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(StoreError::Conflict(format!("{} already exists", what())))
        }
        Err(e) => Err(e.into()),
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Nanoseconds since the epoch, saturating outside 1677..2262.
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 { i64::MIN } else { i64::MAX })
}

fn from_millis(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("stored time {ms} is out of range")))
}
