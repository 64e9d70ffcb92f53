//! The single writer thread and its group commit.
//!
//! Async callers send a job (a closure over the write connection) and await a oneshot
//! reply. The writer takes every job waiting (up to `max_batch`), runs them in ONE
//! transaction, each inside its own SAVEPOINT so a failing job is rolled back alone,
//! commits once (one fsync for the whole batch), then replies to all. A job's `Ok` is
//! only sent after the commit that made it durable succeeded.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::ports::{StoreError, StoreResult};

/// Counters of the writer, for tests and metrics.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub transactions: AtomicU64,
    pub jobs: AtomicU64,
    pub failed_jobs: AtomicU64,
    pub largest_batch: AtomicU64,
    pub stale_receipts: AtomicU64,
    pub quarantined_firings: AtomicU64,
    /// Queued firings found delivered when leased, and dropped.
    pub delivered_at_lease: AtomicU64,
    /// Queue wait (submit to the start of its batch's transaction), summed over jobs and
    /// the longest seen, in µs: two relaxed atomics per batch, cheap enough to keep on.
    pub queue_wait_micros_total: AtomicU64,
    pub queue_wait_micros_max: AtomicU64,
}

/// A job as the writer sees it, with its result type erased.
pub(crate) trait PendingJob: Send {
    /// Run the job's statements on the connection (inside the savepoint the writer
    /// opened). Returns whether the job succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Whether a successful commit of this job should wake queue consumers.
    fn wakes_consumers(&self) -> bool;
    /// When the job was handed to the writer (for the queue-wait counters).
    fn submitted_at(&self) -> Instant;
    /// About how many rows the job writes (for the transaction's size bound).
    fn rows(&self) -> usize;
    /// Send the reply. `commit` is the fate of the whole transaction.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

/// Told once whether the job's changes were committed: from `finish`, or with `false`
/// when the job is dropped unfinished (its caller went away before the writer took it,
/// or the writer is gone). For state kept beside the file, changed only after a commit.
pub(crate) type AfterCommit = Box<dyn FnOnce(bool) + Send>;

struct Job<T, F> {
    op: Option<F>,
    outcome: Option<StoreResult<T>>,
    reply: Option<oneshot::Sender<StoreResult<T>>>,
    after: Option<AfterCommit>,
    wakes_consumers: bool,
    rows: usize,
    submitted_at: Instant,
}

impl<T, F> Job<T, F> {
    /// A job submitted now.
    fn new(
        op: F,
        reply: oneshot::Sender<StoreResult<T>>,
        after: Option<AfterCommit>,
        wakes_consumers: bool,
        rows: usize,
    ) -> Self {
        // A measurement (the queue-wait counters), not a rule: monotonic time, not the clock port.
        let submitted_at = Instant::now();
        Self { op: Some(op), outcome: None, reply: Some(reply), after, wakes_consumers, rows, submitted_at }
    }
}

impl<T, F> Drop for Job<T, F> {
    fn drop(&mut self) {
        if let Some(after) = self.after.take() {
            after(false);
        }
    }
}

impl<T, F> PendingJob for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        // A panicking job must not take the writer thread (and every later write) down.
        let outcome = catch_unwind(AssertUnwindSafe(|| op(conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("write job panicked".into())));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn wakes_consumers(&self) -> bool {
        self.wakes_consumers
    }

    fn submitted_at(&self) -> Instant {
        self.submitted_at
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn finish(mut self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match (self.outcome.take(), commit) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(batch)) => Err(batch),
            (None, Ok(())) => Err(StoreError::Unavailable("write job was not run".into())),
        };
        if let Some(after) = self.after.take() {
            after(result.is_ok());
        }
        // The caller may have gone away (its future dropped); the write stands anyway.
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

pub(crate) enum Message {
    Job(Box<dyn PendingJob>),
    /// Finish what is queued before it, close the connection, then reply.
    Close(oneshot::Sender<()>),
}

/// The async side: submits jobs to the writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    sender: mpsc::Sender<Message>,
}

fn closed() -> StoreError {
    StoreError::Unavailable("the embedded store is closed".into())
}

impl WriterHandle {
    /// Run `op` in the next group-committed transaction; resolves once it is durable.
    pub async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(op, false, 1, None).await
    }

    /// Like `write`, for a job of about `rows` rows, waking queue consumers once committed
    /// if `wakes_consumers`, and calling `after` on the writer thread with whether the job
    /// was committed, before the reply: whether or not the caller is still waiting.
    pub async fn write_then<T, F>(
        &self,
        op: F,
        wakes_consumers: bool,
        rows: usize,
        after: AfterCommit,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(op, wakes_consumers, rows, Some(after)).await
    }

    async fn submit<T, F>(
        &self,
        op: F,
        wakes_consumers: bool,
        rows: usize,
        after: Option<AfterCommit>,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::new(op, reply, after, wakes_consumers, rows.max(1));
        self.sender.send(Message::Job(Box::new(job))).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.sender.send(Message::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

pub(crate) struct WriterConfig {
    pub max_batch: usize,
    pub channel_capacity: usize,
}

/// Most rows one transaction takes in jobs (its first job is taken whatever its size).
/// A batch ingest of 500 events writes about 1,500 rows: without a bound, several of
/// them share one long transaction, and each waits for all of them to be committed.
const MAX_TRANSACTION_ROWS: usize = 2_000;

/// Start the writer thread owning `conn`.
pub(crate) fn spawn(
    conn: Connection,
    config: WriterConfig,
    counters: Arc<WriterCounters>,
    notify: Arc<Notify>,
) -> std::io::Result<WriterHandle> {
    let (sender, receiver) = mpsc::channel(config.channel_capacity.max(1));
    let max_batch = config.max_batch.max(1);
    std::thread::Builder::new()
        .name("embedded-store-writer".into())
        .spawn(move || writer_loop(conn, receiver, max_batch, &counters, &notify))?;
    Ok(WriterHandle { sender })
}

fn writer_loop(
    conn: Connection,
    mut receiver: mpsc::Receiver<Message>,
    max_batch: usize,
    counters: &WriterCounters,
    notify: &Notify,
) {
    // A job taken from the channel that did not fit the transaction being gathered opens
    // the next one.
    let mut carried: Option<Box<dyn PendingJob>> = None;
    loop {
        let first = match carried.take() {
            Some(job) => Message::Job(job),
            None => match receiver.blocking_recv() {
                Some(message) => message,
                None => break,
            },
        };
        let mut batch = Vec::new();
        let mut close_reply = None;
        let mut rows = 0;
        match first {
            Message::Job(job) => {
                rows += job.rows();
                batch.push(job);
            }
            Message::Close(reply) => close_reply = Some(reply),
        }
        while close_reply.is_none() && batch.len() < max_batch && rows < MAX_TRANSACTION_ROWS {
            match receiver.try_recv() {
                Ok(Message::Job(job)) if rows + job.rows() > MAX_TRANSACTION_ROWS => {
                    carried = Some(job);
                    break;
                }
                Ok(Message::Job(job)) => {
                    rows += job.rows();
                    batch.push(job);
                }
                Ok(Message::Close(reply)) => close_reply = Some(reply),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(&conn, batch, counters, notify);
        }
        if let Some(reply) = close_reply {
            // Refuse whatever was sent after the close request.
            receiver.close();
            while let Ok(message) = receiver.try_recv() {
                match message {
                    Message::Job(job) => job.finish(Err(closed())),
                    Message::Close(other) => {
                        let _ = other.send(());
                    }
                }
            }
            drop(conn);
            let _ = reply.send(());
            return;
        }
    }
}

fn db_error(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite {context}: {e}"))
}

/// Run one batch in one transaction, each job in its own savepoint, then reply to all.
pub(crate) fn run_batch(
    conn: &Connection,
    mut batch: Vec<Box<dyn PendingJob>>,
    counters: &WriterCounters,
    notify: &Notify,
) {
    counters.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
    counters.largest_batch.fetch_max(batch.len() as u64, Ordering::Relaxed);
    let started = Instant::now();
    let (mut wait_total, mut wait_max) = (0u64, 0u64);
    for job in &batch {
        let waited = started.saturating_duration_since(job.submitted_at()).as_micros() as u64;
        wait_total += waited;
        wait_max = wait_max.max(waited);
    }
    counters.queue_wait_micros_total.fetch_add(wait_total, Ordering::Relaxed);
    counters.queue_wait_micros_max.fetch_max(wait_max, Ordering::Relaxed);
    let commit = run_in_transaction(conn, &mut batch, counters);
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    let mut wake = false;
    for job in batch {
        wake |= commit.is_ok() && job.wakes_consumers();
        job.finish(commit.clone());
    }
    if wake {
        // `notify_waiters` wakes every consumer waiting now; `notify_one` stores a permit
        // for a consumer that is between an empty `receive` and its wait, so no wake-up
        // is lost.
        notify.notify_waiters();
        notify.notify_one();
    }
}

fn run_in_transaction(
    conn: &Connection,
    batch: &mut [Box<dyn PendingJob>],
    counters: &WriterCounters,
) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| db_error("begin", e))?;
    let mut aborted = None;
    for job in batch.iter_mut() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            aborted = Some(db_error("savepoint", e));
            break;
        }
        let ok = job.run(conn);
        let end = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        if !ok {
            counters.failed_jobs.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = conn.execute_batch(end) {
            aborted = Some(db_error("release savepoint", e));
            break;
        }
        // Some errors (disk full, I/O) make SQLite roll back the whole transaction. The
        // jobs before this one are then lost, so the batch must not report success (and
        // later savepoints would silently start a new transaction).
        if conn.is_autocommit() {
            aborted = Some(StoreError::Unavailable("sqlite rolled the transaction back".into()));
            break;
        }
    }
    let result = match aborted {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").map_err(|e| db_error("commit", e)),
    };
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<T: Send + 'static>(
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> (Box<dyn PendingJob>, oneshot::Receiver<StoreResult<T>>) {
        job_then(op, None)
    }

    fn job_then<T: Send + 'static>(
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        after: Option<AfterCommit>,
    ) -> (Box<dyn PendingJob>, oneshot::Receiver<StoreResult<T>>) {
        sized_job(op, after, 1)
    }

    fn sized_job<T: Send + 'static>(
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        after: Option<AfterCommit>,
        rows: usize,
    ) -> (Box<dyn PendingJob>, oneshot::Receiver<StoreResult<T>>) {
        let (reply, answer) = oneshot::channel();
        (Box::new(Job::new(op, reply, after, true, rows)), answer)
    }

    /// An after-commit hook that records what it was told.
    fn told() -> (AfterCommit, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&seen);
        (Box::new(move |committed| record.lock().unwrap().push(committed)), seen)
    }

    #[test]
    fn the_after_commit_hook_hears_once_whether_its_job_was_committed() {
        let (conn, counters, notify) = scratch();
        let (ok_hook, ok_seen) = told();
        let (failing_hook, failing_seen) = told();
        let (ok_job, _a) = job_then(|c| insert(c, 1), Some(ok_hook));
        let (failing, _b) = job_then(|c| insert(c, 1), Some(failing_hook));
        run_batch(&conn, vec![ok_job, failing], &counters, &notify);
        assert_eq!(*ok_seen.lock().unwrap(), [true]);
        assert_eq!(*failing_seen.lock().unwrap(), [false], "its own failure: not committed");

        // A job dropped before the writer ran it (its caller went away, the writer closed).
        let (dropped_hook, dropped_seen) = told();
        let (dropped, _c) = job_then(|c| insert(c, 2), Some(dropped_hook));
        drop(dropped);
        assert_eq!(*dropped_seen.lock().unwrap(), [false]);

        // A batch whose commit fails tells every job false.
        let (ok_hook, ok_seen) = told();
        let (ok_job, _d) = job_then(|c| insert(c, 3), Some(ok_hook));
        let (rogue, _e) = job(|c| c.execute_batch("ROLLBACK").map_err(|e| db_error("rollback", e)));
        run_batch(&conn, vec![ok_job, rogue], &counters, &notify);
        assert_eq!(*ok_seen.lock().unwrap(), [false]);
    }

    /// A connection with table `t(v)`, fresh counters and a notifier.
    fn scratch() -> (Connection, WriterCounters, Notify) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER PRIMARY KEY)").unwrap();
        (conn, WriterCounters::default(), Notify::new())
    }

    fn insert(conn: &Connection, v: i64) -> StoreResult<()> {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [v]).map(|_| ()).map_err(|e| db_error("insert", e))
    }

    fn values(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_failing_job_is_rolled_back_alone_and_the_others_commit_together() {
        let (conn, counters, notify) = scratch();

        let (first, first_answer) = job(|c| insert(c, 1));
        // Writes a row, then fails: its row must not survive.
        let (failing, failing_answer) = job(|c| {
            insert(c, 2)?;
            insert(c, 1) // primary key conflict with the first job
        });
        let (panicking, panicking_answer) = job(|c| -> StoreResult<()> {
            insert(c, 4)?;
            panic!("bug in a job")
        });
        let (third, third_answer) = job(|c| insert(c, 3));

        run_batch(&conn, vec![first, failing, panicking, third], &counters, &notify);

        assert_eq!(first_answer.blocking_recv().unwrap(), Ok(()));
        assert!(matches!(failing_answer.blocking_recv().unwrap(), Err(StoreError::Unavailable(_))));
        assert!(matches!(panicking_answer.blocking_recv().unwrap(), Err(StoreError::Unavailable(_))));
        assert_eq!(third_answer.blocking_recv().unwrap(), Ok(()));
        assert_eq!(values(&conn), vec![1, 3]);
        assert_eq!(counters.transactions.load(Ordering::Relaxed), 1);
        assert_eq!(counters.jobs.load(Ordering::Relaxed), 4);
        assert_eq!(counters.failed_jobs.load(Ordering::Relaxed), 2);
        assert!(conn.is_autocommit(), "the batch transaction is closed");
    }

    /// Jobs of about `rows` rows each, all queued before a writer thread starts; how
    /// many transactions they took.
    fn transactions_for(rows: &[usize]) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (conn, counters, _) = scratch();
        let counters = Arc::new(counters);
        let (sender, receiver) = mpsc::channel(rows.len());
        let mut answers = Vec::new();
        for (i, n) in rows.iter().enumerate() {
            let v = i as i64;
            let (job, answer) = sized_job(move |c| insert(c, v), None, *n);
            runtime.block_on(sender.send(Message::Job(job))).ok().unwrap();
            answers.push(answer);
        }
        drop(sender);
        let writer_counters = Arc::clone(&counters);
        std::thread::spawn(move || writer_loop(conn, receiver, 512, &writer_counters, &Notify::new())).join().unwrap();
        for answer in answers {
            assert_eq!(answer.blocking_recv().unwrap(), Ok(()));
        }
        counters.transactions.load(Ordering::Relaxed)
    }

    #[test]
    fn a_transaction_takes_jobs_up_to_its_row_bound_and_the_next_one_the_rest() {
        assert_eq!(transactions_for(&[1; 100]), 1, "small jobs share one transaction");
        // 1,500 + 1,500 > 2,000: the second batch ingest waits for no one's commit but its own.
        assert_eq!(transactions_for(&[1_500, 1_500, 10]), 2);
        assert_eq!(transactions_for(&[5_000, 1]), 2, "a big job is taken alone, never refused");
        assert_eq!(transactions_for(&[1_000, 999, 1]), 1, "up to the bound exactly");
    }

    #[test]
    fn queue_wait_counts_from_submit_to_the_start_of_the_transaction() {
        let (conn, counters, notify) = scratch();
        let (inner, _answer) = job(|c| insert(c, 1));
        let (fresh, _fresh_answer) = job(|c| insert(c, 2));
        // The first job was submitted 50 ms before the batch started; the second just now.
        let submitted_at = inner.submitted_at() - std::time::Duration::from_millis(50);
        let waited: Box<dyn PendingJob> = Box::new(BackdatedJob(inner, submitted_at));
        run_batch(&conn, vec![waited, fresh], &counters, &notify);
        let max = counters.queue_wait_micros_max.load(Ordering::Relaxed);
        let total = counters.queue_wait_micros_total.load(Ordering::Relaxed);
        assert!((50_000..5_000_000).contains(&max), "max {max} µs");
        assert!(total >= max && total < max + 1_000_000, "total {total} µs, max {max} µs");
    }

    /// A job whose submit time is set by the test.
    struct BackdatedJob(Box<dyn PendingJob>, Instant);

    impl PendingJob for BackdatedJob {
        fn run(&mut self, conn: &Connection) -> bool {
            self.0.run(conn)
        }
        fn wakes_consumers(&self) -> bool {
            self.0.wakes_consumers()
        }
        fn submitted_at(&self) -> Instant {
            self.1
        }
        fn rows(&self) -> usize {
            self.0.rows()
        }
        fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
            self.0.finish(commit)
        }
    }

    #[test]
    fn a_failed_commit_fails_every_job_of_the_batch() {
        let (conn, counters, notify) = scratch();
        let (ok_job, ok_answer) = job(|c| insert(c, 1));
        // Ending the transaction from inside a job makes the batch lose its atomicity;
        // the writer must notice and report failure for everyone.
        let (rogue, rogue_answer) = job(|c| c.execute_batch("ROLLBACK").map_err(|e| db_error("rollback", e)));
        run_batch(&conn, vec![ok_job, rogue], &counters, &notify);
        assert!(ok_answer.blocking_recv().unwrap().is_err());
        assert!(rogue_answer.blocking_recv().unwrap().is_err());
        assert!(values(&conn).is_empty());
        assert!(conn.is_autocommit());
    }
}
