//! A small pool of read-only connections, used from `spawn_blocking`, or on the calling
//! thread for point reads (`read_point`). WAL lets them read the last committed state
//! while the writer works.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::ports::{StoreError, StoreResult};

pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: holding a permit guarantees an idle connection.
    permits: Arc<Semaphore>,
}

/// Gives the connection back to the pool even if the read panics.
struct Borrowed<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}

impl ReadPool {
    pub fn new(connections: Vec<Connection>) -> Self {
        let permits = Arc::new(Semaphore::new(connections.len()));
        Self { idle: Mutex::new(connections), permits }
    }

    /// Run a point read (a primary-key lookup or an index probe: a few cached pages,
    /// microseconds, and WAL readers never wait for the writer) right here on an idle
    /// connection: the hand-off to the blocking pool and back costs more than the read.
    /// With no connection idle, it goes to the pool like `read`.
    pub async fn read_point<T, F>(self: &Arc<Self>, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let Ok(_permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return self.read(op).await;
        };
        self.with_idle(op)
    }

    /// Run `op` on an idle connection, given back afterwards. The caller holds a permit,
    /// which guarantees one is idle.
    fn with_idle<T>(&self, op: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let borrowed = Borrowed { pool: self, conn };
        match &borrowed.conn {
            Some(conn) => op(conn),
            None => Err(StoreError::Unavailable("no idle read connection".into())),
        }
    }

    /// Run `op` on a pooled read-only connection on the blocking thread pool.
    pub async fn read<T, F>(self: &Arc<Self>, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("read pool closed".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.with_idle(op)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}
