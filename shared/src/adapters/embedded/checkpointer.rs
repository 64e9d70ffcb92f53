//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on
//! the one writer thread: every job queued behind that commit waits for the copy of the
//! WAL into the database file and its fsync. A checkpoint in PASSIVE mode needs no lock
//! the writer holds, so this thread runs one every `EVERY` on a connection of its own
//! while the writer keeps committing. The writer keeps an automatic checkpoint at a much
//! higher threshold as a backstop should this thread fall behind.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back into the database file.
const EVERY: Duration = Duration::from_millis(100);

/// The checkpoint thread; stopped and joined when dropped.
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn spawn(path: &Path) -> std::io::Result<Self> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        conn.busy_timeout(Duration::from_millis(100)).map_err(std::io::Error::other)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread =
            std::thread::Builder::new().name("embedded-store-checkpoint".into()).spawn(move || run(&conn, &signal))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (lock, wake) = stop;
    let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
    while !*stopped {
        let (guard, _) = wake.wait_timeout(stopped, EVERY).unwrap_or_else(PoisonError::into_inner);
        stopped = guard;
        if *stopped {
            break;
        }
        drop(stopped);
        // PASSIVE: copies what it can without waiting on the writer or readers; a busy
        // answer (the writer's backstop checkpoint is running) just means next time.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint skipped");
        }
        stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
