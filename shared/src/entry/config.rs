//! Settings from the environment (the spec's table), read once at start-up.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::breaker::{BreakerPolicy, DEFAULT_COOLDOWN_MS, DEFAULT_FAILURE_THRESHOLD, MAX_COOLDOWN_MS};
use crate::domain::delivery::RetryPolicy;

#[derive(Debug, thiserror::Error)]
#[error("setting {name}: {message}")]
pub struct SettingsError {
    pub name: &'static str,
    pub message: String,
}

#[derive(Clone)]
pub struct Settings {
    pub port: u16,
    pub data_dir: PathBuf,
    pub admin_api_key: String,
    pub ingest_api_key: String,
    pub allow_private_targets: bool,
    pub delivery_timeout: Duration,
    pub retry: RetryPolicy,
    pub log_retention_days: u32,
    /// `AUDIT_RETENTION_DAYS`: how long audit records live (1..=3650, default 365).
    pub audit_retention_days: u32,
    /// `BREAKER_FAILURE_THRESHOLD`, `BREAKER_COOLDOWN_MS` (and the probe lease, from
    /// `DELIVERY_TIMEOUT_MS`).
    pub breaker: BreakerPolicy,
    /// Most requests in flight to one destination (scheme, host, port) at once, on the
    /// local server (`DESTINATION_CONCURRENCY`).
    pub destination_concurrency: usize,
    /// `PARTNER_POSTBACKS` (`off` | `review` | `auto`, default `review`) and
    /// `PARTNER_PRIVATE_TARGETS` (default false).
    pub partners: crate::domain::partner::PartnerPolicy,
}

impl std::fmt::Debug for Settings {
    // Never print the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("allow_private_targets", &self.allow_private_targets)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("retry", &self.retry)
            .field("log_retention_days", &self.log_retention_days)
            .field("breaker", &self.breaker)
            .field("destination_concurrency", &self.destination_concurrency)
            .field("partners", &self.partners)
            .finish_non_exhaustive()
    }
}

/// Where a key came from, so the local server can print generated ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    Generated,
}

/// Shortest key accepted from the environment: keys are bearer secrets.
pub const MIN_KEY_LEN: usize = 16;

/// Longest `DELIVERY_TIMEOUT_MS` accepted, the same as `template.yaml`'s
/// `DeliveryTimeoutMs` maximum: the dispatch function (60 s) must fit one request plus
/// the store writes around it, and `/postbacks/{id}/test` waits for one request within
/// API Gateway's 30 s.
pub const MAX_DELIVERY_TIMEOUT_MS: u64 = 30_000;

/// Highest `BREAKER_FAILURE_THRESHOLD` accepted.
pub const MAX_BREAKER_FAILURE_THRESHOLD: u32 = 10_000;

/// Largest `DESTINATION_CONCURRENCY` accepted: the local server's senders in all
/// (`LOCAL_CONCURRENCY`); a larger bound per destination would bound nothing.
pub const MAX_DESTINATION_CONCURRENCY: usize = crate::service::LOCAL_CONCURRENCY;

impl Settings {
    /// Read settings through `get` (the environment in production, a map in tests).
    /// With `generate_missing_keys` (local server) absent keys are generated; otherwise
    /// (AWS) they are required.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        generate_missing_keys: bool,
    ) -> Result<(Settings, [KeySource; 2]), SettingsError> {
        let port = parse_or(&get, "PORT", 3000u16)?;
        let data_dir = PathBuf::from(get("DATA_DIR").filter(|s| !s.is_empty()).unwrap_or_else(|| "./data".into()));
        let (admin_api_key, admin_src) = key(&get, "ADMIN_API_KEY", generate_missing_keys)?;
        let (ingest_api_key, ingest_src) = key(&get, "INGEST_API_KEY", generate_missing_keys)?;
        if admin_api_key == ingest_api_key {
            return Err(SettingsError {
                name: "INGEST_API_KEY",
                message: "must differ from ADMIN_API_KEY (the two keys are separate secrets)".into(),
            });
        }
        let allow_private_targets = match get("ALLOW_PRIVATE_TARGETS").as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                return Err(SettingsError {
                    name: "ALLOW_PRIVATE_TARGETS",
                    message: format!("expected true or false, got {v:?}"),
                })
            }
        };
        let timeout_ms: u64 = parse_or(&get, "DELIVERY_TIMEOUT_MS", 10_000)?;
        let max_attempts: u32 = parse_or(&get, "RETRY_MAX_ATTEMPTS", 10)?;
        let base_delay_ms: u64 = parse_or(&get, "RETRY_BASE_DELAY_MS", 30_000)?;
        let log_retention_days: u32 = parse_or(&get, "LOG_RETENTION_DAYS", 30)?;
        if timeout_ms == 0 || timeout_ms > MAX_DELIVERY_TIMEOUT_MS {
            return Err(SettingsError {
                name: "DELIVERY_TIMEOUT_MS",
                message: format!("must be 1..={MAX_DELIVERY_TIMEOUT_MS}"),
            });
        }
        if max_attempts == 0 || max_attempts > 100 {
            return Err(SettingsError { name: "RETRY_MAX_ATTEMPTS", message: "must be 1..=100".into() });
        }
        if log_retention_days == 0 || log_retention_days > 3650 {
            return Err(SettingsError { name: "LOG_RETENTION_DAYS", message: "must be 1..=3650".into() });
        }
        let audit_retention_days: u32 = parse_or(&get, "AUDIT_RETENTION_DAYS", 365)?;
        if audit_retention_days == 0 || audit_retention_days > 3650 {
            return Err(SettingsError { name: "AUDIT_RETENTION_DAYS", message: "must be 1..=3650".into() });
        }
        let destination_concurrency: usize =
            parse_or(&get, "DESTINATION_CONCURRENCY", crate::service::DEFAULT_DESTINATION_CONCURRENCY)?;
        if destination_concurrency == 0 || destination_concurrency > MAX_DESTINATION_CONCURRENCY {
            return Err(SettingsError {
                name: "DESTINATION_CONCURRENCY",
                message: format!("must be 1..={MAX_DESTINATION_CONCURRENCY}"),
            });
        }
        let failure_threshold: u32 = parse_or(&get, "BREAKER_FAILURE_THRESHOLD", DEFAULT_FAILURE_THRESHOLD)?;
        if failure_threshold == 0 || failure_threshold > MAX_BREAKER_FAILURE_THRESHOLD {
            return Err(SettingsError {
                name: "BREAKER_FAILURE_THRESHOLD",
                message: format!(
                    "must be 1..={MAX_BREAKER_FAILURE_THRESHOLD} (consecutive failures that open a breaker)"
                ),
            });
        }
        let cooldown_ms: u64 = parse_or(&get, "BREAKER_COOLDOWN_MS", DEFAULT_COOLDOWN_MS)?;
        if cooldown_ms == 0 || cooldown_ms > MAX_COOLDOWN_MS {
            return Err(SettingsError {
                name: "BREAKER_COOLDOWN_MS",
                message: format!(
                    "must be 1..={MAX_COOLDOWN_MS} (the first open period; re-opens double it up to 10 minutes)"
                ),
            });
        }
        let partner_mode = match get("PARTNER_POSTBACKS").as_deref().map(str::trim) {
            None | Some("") => crate::domain::partner::PartnerMode::default(),
            Some(v) => crate::domain::partner::PartnerMode::parse(v).ok_or_else(|| SettingsError {
                name: "PARTNER_POSTBACKS",
                message: format!("expected off, review or auto, got {v:?}"),
            })?,
        };
        let partner_private_targets = match get("PARTNER_PRIVATE_TARGETS").as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                return Err(SettingsError {
                    name: "PARTNER_PRIVATE_TARGETS",
                    message: format!("expected true or false, got {v:?}"),
                })
            }
        };
        Ok((
            Settings {
                port,
                data_dir,
                admin_api_key,
                ingest_api_key,
                allow_private_targets,
                delivery_timeout: Duration::from_millis(timeout_ms),
                retry: RetryPolicy { max_attempts, base_delay: Duration::from_millis(base_delay_ms) },
                log_retention_days,
                audit_retention_days,
                breaker: BreakerPolicy::new(failure_threshold, cooldown_ms, Duration::from_millis(timeout_ms)),
                destination_concurrency,
                partners: crate::domain::partner::PartnerPolicy {
                    mode: partner_mode,
                    private_targets: partner_private_targets,
                },
            },
            [admin_src, ingest_src],
        ))
    }

    pub fn from_env(generate_missing_keys: bool) -> Result<(Settings, [KeySource; 2]), SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok(), generate_missing_keys)
    }

    pub fn log_retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.log_retention_days))
    }

    pub fn audit_retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.audit_retention_days))
    }
}

/// A number setting: `default` when unset or empty, else its value (trimmed).
pub(crate) fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, SettingsError> {
    match get(name).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| SettingsError { name, message: format!("not a valid number: {v:?}") }),
    }
}

fn key(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    generate: bool,
) -> Result<(String, KeySource), SettingsError> {
    match get(name).filter(|s| !s.trim().is_empty()) {
        Some(k) if k.len() < MIN_KEY_LEN => {
            Err(SettingsError { name, message: format!("must be at least {MIN_KEY_LEN} characters") })
        }
        Some(k) => Ok((k, KeySource::Environment)),
        None if generate => Ok((generate_key(), KeySource::Generated)),
        None => Err(SettingsError { name, message: "is required".into() }),
    }
}

/// 32 random bytes, URL-safe base64.
pub fn generate_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> Result<Settings, SettingsError> {
        let vars = [
            ("ADMIN_API_KEY", "admin-key-0123456789"),
            ("INGEST_API_KEY", "ingest-key-0123456789"),
            ("DELIVERY_TIMEOUT_MS", value),
        ];
        Settings::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), false).map(|s| s.0)
    }

    fn with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut all = vec![("ADMIN_API_KEY", "admin-key-0123456789"), ("INGEST_API_KEY", "ingest-key-0123456789")];
        all.extend_from_slice(vars);
        Settings::from_lookup(|k| all.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), false).map(|s| s.0)
    }

    #[test]
    fn destination_concurrency_is_1_to_256_default_16() {
        let cases: &[(&str, Result<usize, &str>)] = &[
            ("", Ok(16)),
            ("1", Ok(1)),
            (" 32 ", Ok(32)),
            ("256", Ok(256)),
            ("0", Err("setting DESTINATION_CONCURRENCY: must be 1..=256")),
            ("257", Err("setting DESTINATION_CONCURRENCY: must be 1..=256")),
            ("-1", Err("setting DESTINATION_CONCURRENCY: not a valid number: \"-1\"")),
            ("many", Err("setting DESTINATION_CONCURRENCY: not a valid number: \"many\"")),
        ];
        for (value, want) in cases {
            let got = with(&[("DESTINATION_CONCURRENCY", value)])
                .map(|s| s.destination_concurrency)
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{value:?}");
        }
    }

    #[test]
    fn partner_settings_have_defaults_and_values() {
        use crate::domain::partner::PartnerMode;
        let default = with(&[]).unwrap().partners;
        assert_eq!((default.mode, default.private_targets), (PartnerMode::Review, false));
        for (value, mode) in [("off", PartnerMode::Off), ("review", PartnerMode::Review), (" auto ", PartnerMode::Auto)]
        {
            assert_eq!(with(&[("PARTNER_POSTBACKS", value)]).unwrap().partners.mode, mode);
        }
        assert!(with(&[("PARTNER_PRIVATE_TARGETS", "true")]).unwrap().partners.private_targets);
        let bad = with(&[("PARTNER_POSTBACKS", "maybe")]).unwrap_err().to_string();
        assert_eq!(bad, "setting PARTNER_POSTBACKS: expected off, review or auto, got \"maybe\"");
        assert!(with(&[("PARTNER_PRIVATE_TARGETS", "yes")]).is_err());
    }

    #[test]
    fn breaker_settings_have_defaults_and_ranges() {
        let default = with(&[]).unwrap().breaker;
        assert_eq!((default.failure_threshold, default.cooldown_ms), (10, 30_000));
        assert_eq!(default.probe_lease_ms, 10_000 + 30_000, "delivery timeout + margin");
        let set = with(&[
            ("BREAKER_FAILURE_THRESHOLD", "3"),
            ("BREAKER_COOLDOWN_MS", "600000"),
            ("DELIVERY_TIMEOUT_MS", "2000"),
        ])
        .unwrap()
        .breaker;
        assert_eq!((set.failure_threshold, set.cooldown_ms, set.probe_lease_ms), (3, 600_000, 32_000));
        #[rustfmt::skip]
        let bad = [
            ("BREAKER_FAILURE_THRESHOLD", "0", "setting BREAKER_FAILURE_THRESHOLD: must be 1..=10000 (consecutive failures that open a breaker)"),
            ("BREAKER_FAILURE_THRESHOLD", "10001", "setting BREAKER_FAILURE_THRESHOLD: must be 1..=10000 (consecutive failures that open a breaker)"),
            ("BREAKER_FAILURE_THRESHOLD", "ten", "setting BREAKER_FAILURE_THRESHOLD: not a valid number: \"ten\""),
            ("BREAKER_COOLDOWN_MS", "0", "setting BREAKER_COOLDOWN_MS: must be 1..=600000 (the first open period; re-opens double it up to 10 minutes)"),
            ("BREAKER_COOLDOWN_MS", "600001", "setting BREAKER_COOLDOWN_MS: must be 1..=600000 (the first open period; re-opens double it up to 10 minutes)"),
            ("BREAKER_COOLDOWN_MS", "-5", "setting BREAKER_COOLDOWN_MS: not a valid number: \"-5\""),
        ];
        for (name, value, message) in bad {
            let err = with(&[(name, value)]).map(|_| ()).unwrap_err();
            assert_eq!(err.to_string(), message, "{name}={value}");
        }
    }

    #[test]
    fn delivery_timeout_is_1_to_30000_ms() {
        assert_eq!(with_timeout("").unwrap().delivery_timeout, Duration::from_secs(10), "default");
        assert_eq!(with_timeout("1").unwrap().delivery_timeout, Duration::from_millis(1));
        assert_eq!(with_timeout("30000").unwrap().delivery_timeout, Duration::from_secs(30));
        for bad in ["0", "30001", "300000"] {
            let err = with_timeout(bad).map(|_| ()).unwrap_err();
            assert_eq!(err.to_string(), "setting DELIVERY_TIMEOUT_MS: must be 1..=30000", "{bad}");
        }
    }
}
