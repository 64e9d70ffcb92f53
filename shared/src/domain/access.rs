//! Access: managed keys and their roles, who did what (the actor), the audit trail's
//! records, and what a caller may read (its visibility). The route → roles table is in
//! `crate::entry::http` (`ROUTES`); this module only names the roles.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ValidationError;

/// Prefix of every managed key.
pub const KEY_PREFIX: &str = "pmk_";
/// Random bytes in a managed key (then base64url: 43 characters).
pub const KEY_BYTES: usize = 32;
/// Longest key name.
pub const MAX_KEY_NAME_CHARS: usize = 200;
/// Longest `publisher_id` of a partner key.
pub const MAX_PUBLISHER_ID_LEN: usize = 128;
/// Actor key id of the bootstrap `ADMIN_API_KEY`.
pub const ENV_ADMIN: &str = "env:admin";
/// Actor key id of the bootstrap `INGEST_API_KEY`.
pub const ENV_INGEST: &str = "env:ingest";

super::named_enum! {
    #[strum(serialize_all = "lowercase")]
    pub enum Role {
        Admin,
        Viewer,
        Partner,
        Ingest,
    }
}

/// Who made a change: the key's id, name, role and publisher (partner keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub publisher_id: Option<String>,
}

impl Actor {
    /// The bootstrap `ADMIN_API_KEY`.
    pub fn bootstrap_admin() -> Actor {
        Actor { key_id: ENV_ADMIN.into(), name: "ADMIN_API_KEY".into(), role: Role::Admin, publisher_id: None }
    }

    /// The bootstrap `INGEST_API_KEY`.
    pub fn bootstrap_ingest() -> Actor {
        Actor { key_id: ENV_INGEST.into(), name: "INGEST_API_KEY".into(), role: Role::Ingest, publisher_id: None }
    }

    /// What this actor may read: everything, or (partner keys) one publisher's own.
    pub fn visibility(&self) -> Visibility {
        match (&self.role, &self.publisher_id) {
            (Role::Partner, Some(p)) => Visibility::Publisher(p.clone()),
            // A partner without a publisher cannot exist (refused at create); if one
            // did, it would see nothing rather than everything.
            (Role::Partner, None) => Visibility::Publisher(String::new()),
            _ => Visibility::All,
        }
    }
}

/// The scope of a caller's reads, computed once by the auth layer from the key and
/// handed to the services: a postback or log entry outside it is "not found".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// A partner: only what belongs to this publisher.
    Publisher(String),
}

impl Visibility {
    /// Whether a postback owned by `owner` (`owner.publisher_id`; `None`: the network's
    /// own) is visible.
    pub fn sees_owner(&self, owner: Option<&str>) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Publisher(p) => !p.is_empty() && owner == Some(p.as_str()),
        }
    }
}

/// The caller of a request, as the auth layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    /// The client's address, as recorded in audit records.
    pub ip: Option<String>,
}

impl Caller {
    pub fn new(actor: Actor, ip: Option<String>) -> Caller {
        Caller { actor, ip }
    }

    /// The bootstrap admin with no address (service calls made outside HTTP: tests,
    /// tools).
    pub fn bootstrap_admin() -> Caller {
        Caller { actor: Actor::bootstrap_admin(), ip: None }
    }

    pub fn visibility(&self) -> Visibility {
        self.actor.visibility()
    }
}

/// A managed key as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub publisher_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Minute precision; written at most once a minute per key and process.
    pub last_used_at: Option<DateTime<Utc>>,
    /// `hash_key` of the key (hex).
    pub hash: String,
}

impl ManagedKey {
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            publisher_id: self.publisher_id.clone(),
        }
    }
}

/// What `POST /keys` asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub role: Role,
    pub publisher_id: Option<String>,
}

impl KeySpec {
    /// Every rule of a key request; the error names the field.
    pub fn new(name: String, role: Role, publisher_id: Option<String>) -> Result<KeySpec, ValidationError> {
        let chars = name.chars().count();
        if name.trim().is_empty() {
            return Err(ValidationError::invalid("name", "name must not be empty"));
        }
        if chars > MAX_KEY_NAME_CHARS {
            return Err(ValidationError::invalid(
                "name",
                format!("name is {chars} characters; at most {MAX_KEY_NAME_CHARS}"),
            ));
        }
        match (role, &publisher_id) {
            (Role::Partner, None) => return Err(ValidationError::required("publisher_id")),
            (Role::Partner, Some(p)) if p.is_empty() || p.len() > MAX_PUBLISHER_ID_LEN => {
                return Err(ValidationError::invalid(
                    "publisher_id",
                    format!("publisher_id must be 1 to {MAX_PUBLISHER_ID_LEN} characters"),
                ))
            }
            (Role::Partner, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(ValidationError::invalid(
                    "publisher_id",
                    "publisher_id is only for partner keys (role \"partner\")",
                ))
            }
        }
        Ok(KeySpec { name, role, publisher_id })
    }
}

/// A new key: `pmk_` + base64url (no padding) of 32 bytes from the OS-seeded generator.
pub fn new_key() -> String {
    let bytes: [u8; KEY_BYTES] = rand::random();
    format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a key: SHA-256, hex. The key holds 256 random bits, so a fast
/// hash is as strong as a slow one here (nothing to brute-force; see docs/DESIGN.md).
pub fn hash_key(key: &str) -> String {
    hex::encode(digest(key))
}

/// SHA-256 of a presented key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compare two hashes in constant time (the time does not depend on where they differ).
pub fn same_hash(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

super::named_enum! {
    /// What an audit record says was done.
    pub enum AuditAction {
        #[strum(serialize = "postback.create")]
        PostbackCreate,
        #[strum(serialize = "postback.replace")]
        PostbackReplace,
        #[strum(serialize = "postback.delete")]
        PostbackDelete,
        /// Partners issue: an admin approves a partner's pending postback or revision.
        #[strum(serialize = "postback.approve")]
        PostbackApprove,
        /// Partners issue: an admin rejects it.
        #[strum(serialize = "postback.reject")]
        PostbackReject,
        #[strum(serialize = "postback.secret_read")]
        PostbackSecretRead,
        #[strum(serialize = "postback.secret_rotate")]
        PostbackSecretRotate,
        #[strum(serialize = "postback.resume")]
        PostbackResume,
        #[strum(serialize = "postback.test")]
        PostbackTest,
        #[strum(serialize = "log.resend")]
        LogResend,
        #[strum(serialize = "logs.replay")]
        LogsReplay,
        #[strum(serialize = "key.create")]
        KeyCreate,
        #[strum(serialize = "key.revoke")]
        KeyRevoke,
    }
}

super::named_enum! {
    #[strum(serialize_all = "lowercase")]
    pub enum TargetKind {
        Postback,
        Log,
        Key,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTarget {
    pub kind: TargetKind,
    pub id: Option<String>,
}

/// One change, as the audit trail keeps it. Never a key, secret or signature: the
/// summary is built from names and ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    pub target: AuditTarget,
    pub version_before: Option<u32>,
    pub version_after: Option<u32>,
    pub ip: Option<String>,
    pub summary: String,
}

impl AuditRecord {
    /// A record of `action` on `target` by `caller` at `at`, with a new id (UUID v7:
    /// ordered by time).
    pub fn new(
        caller: &Caller,
        at: DateTime<Utc>,
        action: AuditAction,
        target: AuditTarget,
        summary: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            id: format!("aud_{}", super::ids::time_ordered(at).simple()),
            at,
            actor: caller.actor.clone(),
            action,
            target,
            version_before: None,
            version_after: None,
            ip: caller.ip.clone(),
            summary: summary.into(),
        }
    }

    pub fn versions(mut self, before: Option<u32>, after: Option<u32>) -> AuditRecord {
        self.version_before = before;
        self.version_after = after;
        self
    }

    /// The fixed-width sort key of the listing: `at` (RFC 3339, nanoseconds, UTC) + `#`
    /// + id. Newest first is this key descending.
    pub fn sort_key(&self) -> String {
        sort_key(self.at, &self.id)
    }
}

pub fn sort_key(at: DateTime<Utc>, id: &str) -> String {
    format!("{}#{id}", at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

/// Filters of `GET /audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor_key_id: Option<String>,
    pub action: Option<AuditAction>,
    pub target_id: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    pub limit: usize,
    pub cursor: Option<AuditCursor>,
}

pub const DEFAULT_AUDIT_LIMIT: usize = 50;
pub const MAX_AUDIT_LIMIT: usize = 500;

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            actor_key_id: None,
            action: None,
            target_id: None,
            from: None,
            to: None,
            limit: DEFAULT_AUDIT_LIMIT,
            cursor: None,
        }
    }
}

impl AuditFilter {
    /// Whether `r` passes the filters and lies after the cursor.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.actor_key_id.as_deref().is_none_or(|k| r.actor.key_id == k)
            && self.action.is_none_or(|a| r.action == a)
            && self.target_id.as_deref().is_none_or(|t| r.target.id.as_deref() == Some(t))
            && self.from.is_none_or(|f| r.at >= f)
            && self.to.is_none_or(|t| r.at < t)
            && self.cursor.as_ref().is_none_or(|c| r.sort_key() < c.0)
    }
}

/// Position in the audit listing: the sort key of the last record returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor(pub String);

impl AuditCursor {
    pub fn after(r: &AuditRecord) -> AuditCursor {
        AuditCursor(r.sort_key())
    }

    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("a1:{}", self.0))
    }

    pub fn decode(s: &str) -> Result<AuditCursor, ValidationError> {
        let bad = || ValidationError::invalid("cursor", "cursor is not one this server issued");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let key = text.strip_prefix("a1:").ok_or_else(bad)?;
        let (time, id) = key.split_once('#').ok_or_else(bad)?;
        DateTime::parse_from_rfc3339(time).map_err(|_| bad())?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad());
        }
        Ok(AuditCursor(key.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

/// Newest first, filtered, one page: what every store's `query_audit` returns for the
/// records it read in order (the memory and embedded stores share it).
pub fn page_of(mut records: Vec<AuditRecord>, filter: &AuditFilter) -> AuditPage {
    records.retain(|r| filter.matches(r));
    records.sort_by_key(|r| std::cmp::Reverse(r.sort_key()));
    let more = records.len() > filter.limit;
    records.truncate(filter.limit);
    let next_cursor = if more { records.last().map(|r| AuditCursor::after(r).encode()) } else { None };
    AuditPage { items: records, next_cursor }
}

/// The minute `at` falls in (`last_used_at` is kept at minute precision).
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_long() {
        let (a, b) = (new_key(), new_key());
        assert!(a.starts_with(KEY_PREFIX));
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&a[KEY_PREFIX.len()..]).unwrap();
        assert_eq!(raw.len(), KEY_BYTES);
        assert_eq!(hash_key(&a).len(), 64);
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn key_spec_names_the_field() {
        let err = |n: &str, r, p: Option<&str>| KeySpec::new(n.into(), r, p.map(String::from)).unwrap_err().field;
        assert_eq!(err("", Role::Admin, None), "name");
        assert_eq!(err(&"x".repeat(201), Role::Admin, None), "name");
        assert!(KeySpec::new("é".repeat(200), Role::Admin, None).is_ok(), "200 characters, not bytes");
        assert_eq!(err("Ana", Role::Partner, None), "publisher_id");
        assert_eq!(err("Ana", Role::Viewer, Some("7")), "publisher_id");
        assert_eq!(err("Ana", Role::Partner, Some("")), "publisher_id");
        assert!(KeySpec::new("P".into(), Role::Partner, Some("7".into())).is_ok());
    }

    #[test]
    fn actions_and_roles_round_trip_their_names() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn a_partner_sees_only_its_own() {
        let partner =
            Actor { key_id: "k".into(), name: "P".into(), role: Role::Partner, publisher_id: Some("7".into()) };
        let v = partner.visibility();
        assert!(v.sees_owner(Some("7")));
        assert!(!v.sees_owner(Some("8")));
        assert!(!v.sees_owner(None), "the network's own postbacks are not a partner's");
        assert!(Actor::bootstrap_admin().visibility().sees_owner(None));
    }

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let r = AuditRecord::new(
            &Caller::bootstrap_admin(),
            DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            AuditAction::KeyCreate,
            AuditTarget { kind: TargetKind::Key, id: Some("key_1".into()) },
            "s",
        );
        let c = AuditCursor::after(&r);
        assert_eq!(AuditCursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(AuditCursor::decode("nope").unwrap_err().field, "cursor");
    }

    #[test]
    fn minutes_are_whole() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:59.9Z").unwrap().with_timezone(&Utc);
        assert_eq!(minute_of(at).to_rfc3339(), "2026-01-02T03:04:00+00:00");
    }

    #[test]
    fn same_hash_is_equality() {
        assert!(same_hash(&digest("a"), &digest("a")));
        assert!(!same_hash(&digest("a"), &digest("b")));
    }
}
