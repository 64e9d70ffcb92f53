//! `PostbackStore`: one row per postback, the whole postback as JSON.

use async_trait::async_trait;
use rusqlite::{ErrorCode, OptionalExtension};

use super::{decode, encode, EmbeddedStore};
use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackStore, StoreError, StoreResult};

const WHAT: &str = "postback";

#[async_trait]
impl PostbackStore for EmbeddedStore {
    async fn create(&self, postback: &Postback) -> StoreResult<()> {
        let body = encode(postback, WHAT)?;
        let (id, kind) = (postback.id.clone(), postback.kind.as_str());
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached("INSERT INTO postbacks (id, kind, body) VALUES (?1, ?2, ?3)")?
                .execute((&id, kind, &body));
            match inserted {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                    Err(StoreError::Conflict(format!("postback {id} already exists")))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        let id = id.to_string();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM postbacks WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            body.map(|b| decode(&b, WHAT)).transpose()
        })
        .await
    }

    async fn replace(&self, postback: &Postback) -> StoreResult<bool> {
        let body = encode(postback, WHAT)?;
        let (id, kind) = (postback.id.clone(), postback.kind.as_str());
        self.write(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE postbacks SET kind = ?2, body = ?3 WHERE id = ?1")?
                .execute((&id, kind, &body))?;
            Ok(changed > 0)
        })
        .await
    }

    async fn delete(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |conn| Ok(conn.prepare_cached("DELETE FROM postbacks WHERE id = ?1")?.execute([&id])? > 0))
            .await
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        self.read(move |conn| {
            let bodies: Vec<String> = match kind {
                Some(kind) => conn
                    .prepare_cached("SELECT body FROM postbacks WHERE kind = ?1 ORDER BY id")?
                    .query_map([kind.as_str()], |row| row.get(0))?
                    .collect::<Result<_, _>>()?,
                None => conn
                    .prepare_cached("SELECT body FROM postbacks ORDER BY id")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?,
            };
            bodies.iter().map(|b| decode(b, WHAT)).collect()
        })
        .await
    }
}
