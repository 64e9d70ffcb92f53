//! The auth layer: who is calling (the bootstrap keys, or a managed key looked up by its
//! hash through a ≤ 5 s cache), and whether the route's row of `ROUTES` lets that role
//! in. It runs once for every route (a `route_layer` over the whole router), hands the
//! handlers a `Caller` (actor, address; its visibility scopes the reads), and never
//! lets a key in a query string through except `?key=` on `GET /events` for ingest keys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, MatchedPath, Request, State as AxumState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::{access_of, Access, ApiError, State};
use crate::domain::access::{digest, hash_key, minute_of, same_hash, Actor, Caller, ManagedKey, Role, KEY_PREFIX};
use crate::ports::{AccessStore, Clock, StoreResult};

/// The two bootstrap keys of the settings (`ADMIN_API_KEY`, `INGEST_API_KEY`), kept as
/// SHA-256 digests.
pub struct ApiKeys {
    admin: [u8; 32],
    ingest: [u8; 32],
}

impl ApiKeys {
    pub fn new(admin_key: &str, ingest_key: &str) -> Self {
        Self { admin: digest(admin_key), ingest: digest(ingest_key) }
    }
}

/// How long a process trusts what it read of a managed key (revocation bound).
pub const KEY_CACHE_TTL: chrono::Duration = chrono::Duration::seconds(5);
/// Most keys (known or unknown) cached at once; beyond it the cache starts over.
const KEY_CACHE_MAX: usize = 10_000;
/// The length of a managed key: `pmk_` + 43 base64url characters (32 bytes).
const MANAGED_KEY_LEN: usize = 47;

struct Cached {
    key: Option<ManagedKey>,
    fetched_at: DateTime<Utc>,
}

/// Authenticates presented keys: the bootstrap pair, then managed keys through the
/// store, each read cached for at most `KEY_CACHE_TTL` on the clock port.
pub struct KeyRing {
    bootstrap: ApiKeys,
    store: Arc<dyn AccessStore>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl KeyRing {
    pub fn new(bootstrap: ApiKeys, store: Arc<dyn AccessStore>, clock: Arc<dyn Clock>) -> Self {
        Self { bootstrap, store, clock, cache: Mutex::default() }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Who this key is, `None` if it opens nothing (unknown, revoked, malformed).
    /// Comparisons are constant time over SHA-256 digests; a managed key is found by
    /// its hash (see docs/DESIGN.md *Access*).
    pub async fn authenticate(&self, presented: &str) -> StoreResult<Option<Actor>> {
        let d = digest(presented);
        if same_hash(&d, &self.bootstrap.admin) {
            return Ok(Some(Actor::bootstrap_admin()));
        }
        if same_hash(&d, &self.bootstrap.ingest) {
            return Ok(Some(Actor::bootstrap_ingest()));
        }
        // Only strings shaped like a managed key cost a lookup.
        if presented.len() != MANAGED_KEY_LEN || !presented.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let now = self.clock.now();
        let cached = {
            let cache = self.cache();
            cache.get(&d).filter(|c| now - c.fetched_at < KEY_CACHE_TTL).map(|c| c.key.clone())
        };
        let key = match cached {
            Some(key) => key,
            None => {
                let key = self.store.key_by_hash(&hex::encode(d)).await?;
                let mut cache = self.cache();
                if cache.len() >= KEY_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(d, Cached { key: key.clone(), fetched_at: now });
                key
            }
        };
        let Some(key) = key else { return Ok(None) };
        // The lookup was by hash; compare the stored hash whole, in constant time.
        let Ok(stored) = hex::decode(&key.hash) else { return Ok(None) };
        if !same_hash(&stored, &d) {
            return Ok(None);
        }
        self.note_use(&key, d, now).await;
        Ok(Some(key.actor()))
    }

    /// `last_used_at` at minute precision: written when the minute changed since the
    /// last write this process knows of, so a busy key costs one write a minute, not one
    /// per request. A failed write is only logged.
    async fn note_use(&self, key: &ManagedKey, d: [u8; 32], now: DateTime<Utc>) {
        let minute = minute_of(now);
        if key.last_used_at.is_some_and(|t| t >= minute) {
            return;
        }
        if let Some(c) = self.cache().get_mut(&d) {
            if let Some(k) = c.key.as_mut() {
                k.last_used_at = Some(minute);
            }
        }
        if let Err(e) = self.store.touch_key(&key.id, minute).await {
            tracing::warn!(key_id = %key.id, error = %e, "could not record the key's last use");
        }
    }

    /// Forget every cached key (after a revocation in this process: it applies at once
    /// here; other processes see it within `KEY_CACHE_TTL`).
    pub fn forget_all(&self) {
        self.cache().clear();
    }

    /// The stored hash of a new key (re-exported for the key service).
    pub fn hash(key: &str) -> String {
        hash_key(key)
    }
}

/// The presented key: the `x-api-key` header, or on `GET /events` only, `?key=`.
fn presented_key(request: &Request, query_allowed: bool) -> (Option<String>, bool) {
    if let Some(k) = request.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return (Some(k.to_string()), false);
    }
    if !query_allowed {
        return (None, false);
    }
    let key = request
        .uri()
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned()));
    (key, true)
}

/// The client's address: the connection's (local server), else the last hop of
/// `x-forwarded-for` (API Gateway appends the address it saw).
fn client_ip(request: &Request) -> Option<String> {
    if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        return Some(addr.ip().to_string());
    }
    let forwarded = request.headers().get("x-forwarded-for")?.to_str().ok()?;
    let last = forwarded.rsplit(',').next()?.trim();
    (!last.is_empty() && last.len() <= 64).then(|| last.to_string())
}

/// The one auth check: the route's row of `ROUTES` decides.
pub(crate) async fn authorize(AxumState(state): AxumState<State>, mut request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    let method = request.method().as_str().to_string();
    let roles = match access_of(&method, &path) {
        Some(Access::Open) => return next.run(request).await,
        Some(Access::Roles(roles)) => roles,
        // A route missing from the table opens to no one (a test keeps the table whole).
        None => return ApiError::Forbidden.into_response(),
    };
    let query_allowed = method == "GET" && path == "/events";
    let (key, from_query) = presented_key(&request, query_allowed);
    let Some(key) = key else { return ApiError::Unauthorized { field: "x-api-key" }.into_response() };
    let actor = match state.keys.authenticate(&key).await {
        Ok(Some(actor)) => actor,
        Ok(None) => return ApiError::Unauthorized { field: "x-api-key" }.into_response(),
        Err(e) => return ApiError::Unavailable(e).into_response(),
    };
    // A key in a URL ends up in logs and histories: only ingest keys, for pixel trackers.
    if from_query && actor.role != Role::Ingest {
        return ApiError::Unauthorized { field: "key" }.into_response();
    }
    if !roles.contains(&actor.role) {
        return ApiError::Forbidden.into_response();
    }
    let caller = Caller::new(actor, client_ip(&request));
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::domain::access::{new_key, AuditAction, AuditRecord, AuditTarget, TargetKind};
    use crate::testing::{ManualClock, MemoryAccessStore};
    use std::time::Duration;

    fn managed(key: &str, role: Role, now: DateTime<Utc>) -> ManagedKey {
        ManagedKey {
            id: format!("key_{}", &hash_key(key)[..8]),
            name: "Ana".into(),
            role,
            publisher_id: None,
            created_at: now,
            last_used_at: None,
            hash: hash_key(key),
        }
    }

    fn record(now: DateTime<Utc>, id: &str, action: AuditAction) -> AuditRecord {
        AuditRecord::new(
            &Caller::bootstrap_admin(),
            now,
            action,
            AuditTarget { kind: TargetKind::Key, id: Some(id.into()) },
            "test",
        )
    }

    fn ring(store: Arc<MemoryAccessStore>, clock: Arc<ManualClock>) -> KeyRing {
        KeyRing::new(ApiKeys::new("admin-key-0123456789", "ingest-key-0123456789"), store, clock)
    }

    #[tokio::test]
    async fn bootstrap_keys_are_admin_and_ingest() {
        let clock = Arc::new(ManualClock::starting_now());
        let ring = ring(Arc::new(MemoryAccessStore::new()), clock);
        assert_eq!(ring.authenticate("admin-key-0123456789").await.unwrap().unwrap().key_id, "env:admin");
        let ingest = ring.authenticate("ingest-key-0123456789").await.unwrap().unwrap();
        assert_eq!((ingest.key_id.as_str(), ingest.role), ("env:ingest", Role::Ingest));
        assert_eq!(ring.authenticate("nope").await.unwrap(), None);
    }

    /// A revoked key keeps opening this process for at most `KEY_CACHE_TTL` (other
    /// processes' caches), then nothing; `forget_all` applies it at once.
    #[tokio::test]
    async fn revocation_applies_within_the_cache_bound() {
        let clock = Arc::new(ManualClock::starting_now());
        let store = Arc::new(MemoryAccessStore::new());
        let ring = ring(store.clone(), clock.clone());
        let key = new_key();
        let k = managed(&key, Role::Viewer, clock.now());
        store.create_key(&k, &record(clock.now(), &k.id, AuditAction::KeyCreate)).await.unwrap();
        assert_eq!(ring.authenticate(&key).await.unwrap().unwrap().role, Role::Viewer);
        store.revoke_key(&k.id, &record(clock.now(), &k.id, AuditAction::KeyRevoke)).await.unwrap();
        clock.advance(Duration::from_millis(4_999));
        assert!(ring.authenticate(&key).await.unwrap().is_some(), "cached up to the bound");
        clock.advance(Duration::from_millis(1));
        assert_eq!(ring.authenticate(&key).await.unwrap(), None, "revoked: nothing after 5 s");

        // In the process that revoked it: at once.
        let other = new_key();
        let k2 = managed(&other, Role::Admin, clock.now());
        store.create_key(&k2, &record(clock.now(), &k2.id, AuditAction::KeyCreate)).await.unwrap();
        assert!(ring.authenticate(&other).await.unwrap().is_some());
        store.revoke_key(&k2.id, &record(clock.now(), &k2.id, AuditAction::KeyRevoke)).await.unwrap();
        ring.forget_all();
        assert_eq!(ring.authenticate(&other).await.unwrap(), None);
    }

    /// `last_used_at` is the minute, written once per minute however many requests.
    #[tokio::test]
    async fn last_use_is_written_once_a_minute() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T10:00:10Z").unwrap().with_timezone(&Utc);
        let clock = Arc::new(ManualClock::new(start));
        let store = Arc::new(MemoryAccessStore::new());
        let ring = ring(store.clone(), clock.clone());
        let key = new_key();
        let k = managed(&key, Role::Admin, start);
        store.create_key(&k, &record(start, &k.id, AuditAction::KeyCreate)).await.unwrap();
        ring.authenticate(&key).await.unwrap().unwrap();
        let used = |s: &Arc<MemoryAccessStore>| {
            let s = s.clone();
            async move { s.list_keys().await.unwrap()[0].last_used_at.map(|t| t.to_rfc3339()) }
        };
        assert_eq!(used(&store).await.as_deref(), Some("2026-01-01T10:00:00+00:00"));
        // A write now would be visible: set it back and check nothing rewrites it this minute.
        store.touch_key(&k.id, start - chrono::Duration::days(1)).await.unwrap();
        for _ in 0..10 {
            clock.advance(Duration::from_secs(4));
            ring.authenticate(&key).await.unwrap().unwrap();
        }
        assert_eq!(used(&store).await.as_deref(), Some("2026-01-01T10:00:00+00:00"), "no second write in the minute");
        clock.advance(Duration::from_secs(20));
        ring.authenticate(&key).await.unwrap().unwrap();
        assert_eq!(used(&store).await.as_deref(), Some("2026-01-01T10:01:00+00:00"));
    }

    /// A thousand random keys, managed-shaped or not: none opens anything.
    #[tokio::test]
    async fn random_keys_open_nothing() {
        let clock = Arc::new(ManualClock::starting_now());
        let ring = ring(Arc::new(MemoryAccessStore::new()), clock);
        for i in 0..1000 {
            let key = if i % 2 == 0 { new_key() } else { format!("k{}", rand::random::<u64>()) };
            assert_eq!(ring.authenticate(&key).await.unwrap(), None);
        }
    }

    /// The comparison's time does not depend on where two digests differ: the first
    /// byte differing or the last takes the same time (`subtle`'s `ct_eq`), within
    /// noise. Medians of many rounds, compared with a generous factor: a short-circuit
    /// comparison differs by the whole length (32×), this one not at all.
    #[test]
    fn the_comparison_takes_the_same_time_wherever_keys_differ() {
        use std::time::Instant;
        let a = digest("reference");
        let mut first = a;
        first[0] ^= 1;
        let mut last = a;
        last[31] ^= 1;
        let time = |other: &[u8; 32]| {
            let mut samples: Vec<u128> = (0..201)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..2_000 {
                        std::hint::black_box(same_hash(std::hint::black_box(&a), std::hint::black_box(other)));
                    }
                    t.elapsed().as_nanos()
                })
                .collect();
            samples.sort_unstable();
            samples[100] as f64
        };
        // Warm up, then interleave to share the machine's noise.
        time(&first);
        let (mut f, mut l) = (0.0, 0.0);
        for _ in 0..3 {
            f += time(&first);
            l += time(&last);
        }
        let ratio = f.max(l) / f.min(l);
        assert!(ratio < 1.5, "first-byte vs last-byte difference: {f} vs {l} ns (ratio {ratio:.2})");
    }
}
