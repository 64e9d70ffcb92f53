//! Hot paths: matching an event against many postbacks, rendering templates, and the
//! per-firing work outside the store (render + shown request + log entry parts, and one
//! request of the HTTP sender on a kept-alive loopback connection), and authenticating a
//! request with the bootstrap admin key and with a managed key (`auth`).
//!
//! `cargo bench -p postback --bench hot_paths` runs all; add a filter such as
//! `-- matching` for one group. `matching/linear_scan` is the baseline for
//! `matching/10k_postbacks_1k_offers` (same postbacks, same event, same predicate), which
//! is in turn the baseline for `matching/10k_postbacks_third_with_conditions`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

#[path = "../tests/it/matching_oracle/mod.rs"]
mod matching_oracle;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use postback::adapters::sender::{ReqwestSender, SenderConfig};
use postback::domain::condition::Condition;
use postback::domain::delivery::OutboundRequest;
use postback::domain::event::{Event, EventType, Status};
use postback::domain::firing::Firing;
use postback::domain::macros::MacroContext;
use postback::domain::matching::PostbackIndex;
use postback::domain::postback::{CompiledPostback, FireOn, Postback, Scope};
use postback::domain::redact::redact_url;
use postback::domain::template::{Encoding, Segment, Template};
use postback::ports::HttpSender;

const POSTBACKS: usize = 10_000;
const OFFERS: u64 = 1_000;
const PUBLISHERS: u64 = 200;

/// A small deterministic generator, so every run benches the same data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

fn ids(rng: &mut SplitMix, prefix: &str, pool: u64, count: u64) -> Vec<String> {
    (0..count).map(|_| format!("{prefix}{}", rng.below(pool))).collect()
}

/// 10,000 postbacks over 1,000 offers and 200 publishers: half conversions, a quarter
/// events, the rest clicks and impressions; 85 % scoped to 1–3 offers (half of those
/// also to publishers), most of the others scoped to publishers, ~1.5 % global.
fn postbacks() -> Vec<Postback> {
    let mut rng = SplitMix(42);
    (0..POSTBACKS)
        .map(|i| {
            let kind = match rng.percent() {
                0..50 => EventType::Conversion,
                50..75 => EventType::Event,
                75..90 => EventType::Click,
                _ => EventType::Impression,
            };
            let offer_scoped = rng.percent() < 85;
            let offers = if offer_scoped {
                let n = 1 + rng.below(3);
                Scope::Only(ids(&mut rng, "o", OFFERS, n))
            } else {
                Scope::All
            };
            let publisher_scoped = if offer_scoped { rng.percent() < 50 } else { rng.percent() < 90 };
            let publishers = if publisher_scoped {
                let n = 1 + rng.below(2);
                Scope::Only(ids(&mut rng, "p", PUBLISHERS, n))
            } else {
                Scope::All
            };
            let fire_on = match rng.percent() {
                0..70 => FireOn::Approved,
                70..80 => FireOn::Pending,
                80..90 => FireOn::Rejected,
                _ => FireOn::All,
            };
            let event_names = (kind == EventType::Event && rng.percent() < 60)
                .then(|| vec![["deposit", "upsell", "ftd"][rng.below(3) as usize].to_string()]);
            Postback {
                name: format!("postback {i}"),
                enabled: rng.percent() < 95,
                offers,
                publishers,
                fire_on,
                rejection_reasons: (fire_on == FireOn::Rejected).then(|| vec!["fraud".to_string()]),
                event_names,
                url: format!("https://receiver{i}.example/pb?clickid={{external_transaction_id}}"),
                ..matching_oracle::plain_postback(&format!("pb_{i:05}"), kind)
            }
        })
        .collect()
}

/// One to three conditions that the benched conversion passes or fails at different
/// points: a decimal comparison, a list, a substring, a missing value.
fn conditions(i: usize) -> Vec<Condition> {
    let c =
        |field: &str, op: &str, value: Option<serde_json::Value>| Condition::new(field, op, value.as_ref()).unwrap();
    let all = [
        c("payout", "gte", Some(serde_json::json!(["10.00", "12.5", "15"][i % 3]))),
        c("country", "in", Some(serde_json::json!(["DE", "AT", "CH"]))),
        c("params.campaign", "contains", Some(serde_json::json!("sale"))),
        c("sub3", "not_exists", None),
    ];
    let start = i % all.len();
    all.iter().cycle().skip(start).take(1 + i % 3).cloned().collect()
}

/// Compiled by hand (literal URL) so matching can be benched on its own.
fn compiled(p: Postback) -> CompiledPostback {
    let url = Template { segments: vec![Segment::Literal(p.url.clone())] };
    CompiledPostback { postback: p, url, headers: Vec::new(), body: None, signing: None, reversal: None }
}

fn conversion() -> Event {
    Event {
        kind: EventType::Conversion,
        transaction_id: "T1".into(),
        event_id: Some("ev-1".into()),
        offer_id: Some("o17".into()),
        publisher_id: Some("p3".into()),
        external_transaction_id: Some("aff-click-123".into()),
        status: Some(Status::Approved),
        rejection_reason: None,
        event_name: None,
        payout: Some("12.50".into()),
        revenue: Some("20.00".into()),
        currency: Some("USD".into()),
        subs: [Some("s1".into()), Some("s2 with space".into()), None, None, None, None, None, None, None, None],
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0".into()),
        country: Some("DE".into()),
        timestamp: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
        params: [("campaign".to_string(), "spring \"sale\"".to_string())].into(),
    }
}

/// The naive baseline: the whole predicate over every postback, then sort by id.
fn linear_scan(all: &[Arc<CompiledPostback>], e: &Event) -> Vec<Arc<CompiledPostback>> {
    let mut out: Vec<Arc<CompiledPostback>> =
        all.iter().filter(|c| matching_oracle::matches(&c.postback, e)).cloned().collect();
    out.sort_by(|a, b| a.postback.id.cmp(&b.postback.id));
    out
}

/// The index of `all`, checked against the linear scan before it is timed (`what` says
/// which postbacks these are).
fn checked_index(all: &[Arc<CompiledPostback>], event: &Event, what: &str) -> PostbackIndex {
    let index = PostbackIndex::from_compiled(all.iter().map(|c| (**c).clone()));
    let ids = |found: Vec<Arc<CompiledPostback>>| found.iter().map(|c| c.postback.id.clone()).collect::<Vec<_>>();
    let found = ids(index.matching(event));
    assert_eq!(found, ids(linear_scan(all, event)), "index and linear scan must agree ({what})");
    eprintln!("matching ({what}): the benched conversion fires {} of {POSTBACKS} postbacks", found.len());
    index
}

fn bench_matching(c: &mut Criterion) {
    let all: Vec<Arc<CompiledPostback>> = postbacks().into_iter().map(|p| Arc::new(compiled(p))).collect();
    let event = conversion();
    let index = checked_index(&all, &event, "no conditions");

    let mut group = c.benchmark_group("matching");
    group.bench_function("10k_postbacks_1k_offers", |b| b.iter(|| index.matching(black_box(&event))));
    group.bench_function("linear_scan", |b| b.iter(|| linear_scan(black_box(&all), black_box(&event))));

    // The same postbacks, a third of them with one to three conditions; baseline: the
    // index above (no conditions), measured in the same run.
    let conditioned: Vec<Arc<CompiledPostback>> = postbacks()
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            if i % 3 == 0 {
                p.conditions = conditions(i / 3);
            }
            Arc::new(compiled(p))
        })
        .collect();
    let conditioned_index = checked_index(&conditioned, &event, "conditions on a third");
    group.bench_function("10k_postbacks_third_with_conditions", |b| {
        b.iter(|| conditioned_index.matching(black_box(&event)))
    });

    // Partners: the same postbacks, half partner-owned and a tenth of those pending;
    // baseline: `10k_postbacks_1k_offers`, measured in the same run.
    let partnered: Vec<Arc<CompiledPostback>> = postbacks()
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            if i % 2 == 0 {
                p.owner = Some(postback::domain::postback::Owner { publisher_id: format!("pub_{}", i % 97) });
                if i % 20 == 0 {
                    p.approval = postback::domain::partner::Approval::pending();
                }
            }
            Arc::new(compiled(p))
        })
        .collect();
    let partnered_index = checked_index(&partnered, &event, "half partner-owned, a tenth of those pending");
    group.bench_function("10k_postbacks_half_partner_tenth_pending", |b| {
        b.iter(|| partnered_index.matching(black_box(&event)))
    });
    group.finish();
}

fn bench_render(c: &mut Criterion) {
    let url_source = "https://affiliate-postback.example/pb?clickid={external_transaction_id}&payout={payout}\
         &currency={currency}&s1={sub1}&s2={sub2}&tx={transaction_id}&ts={unix_timestamp}&d={delivery_id}";
    let url = Template::parse(url_source).expect("URL template parses");
    let body = Template::parse(
        r#"{"lead": "{transaction_id}", "amount": "{payout}", "status": "{status}", "sub2": "{sub2}", "campaign": "{params.campaign}", "ua": "{user_agent}", "at": "{timestamp}"}"#,
    )
    .expect("body template parses");
    let event = conversion();
    let ctx = MacroContext::new(&event, "pb_00001", "CRM webhook", "d_0123456789abcdef0123456789abcdef", 1);
    let mut group = c.benchmark_group("render");
    group.bench_function("url_template", |b| b.iter(|| url.render(black_box(&ctx), Encoding::Url)));
    // Baseline: the naive way, one `str::replace` pass per macro.
    let names: Vec<&str> = url.macros().collect();
    group.bench_function("url_naive_replace_baseline", |b| {
        b.iter(|| {
            let mut out = black_box(url_source).to_string();
            for name in &names {
                let value = ctx.value(name).unwrap_or_default();
                let encoded =
                    percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string();
                out = out.replace(&format!("{{{name}}}"), &encoded);
            }
            out
        })
    });
    group.bench_function("json_body_template", |b| b.iter(|| body.render(black_box(&ctx), Encoding::Json)));
    // The same URL with three of its macros passed through function chains: the cost of
    // the functions (parsed at save, so only run here) over `url_template`.
    let chained = Template::parse(
        "https://affiliate-postback.example/pb?clickid={external_transaction_id}&payout={payout|mul:0.8|round:2}\
         &currency={currency|lower}&s1={sub1|trim|sha256}&s2={sub2}&tx={transaction_id}&ts={unix_timestamp}&d={delivery_id}",
    )
    .expect("URL template with chains parses");
    group.bench_function("url_template_three_chains", |b| b.iter(|| chained.render(black_box(&ctx), Encoding::Url)));
    group.finish();
}

/// A typical affiliate GET postback (no headers, no body, no signing), as the load test's.
fn get_postback(url: &str) -> CompiledPostback {
    let p = Postback {
        name: "Affiliate GET".into(),
        url: url.into(),
        ..matching_oracle::plain_postback("pb_00001", EventType::Conversion)
    };
    CompiledPostback::new(p).expect("the bench postback compiles")
}

fn firing() -> Firing {
    let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    Firing {
        destination: Some("http://affiliate-postback.example:80".into()),
        postback_version: Some(1),
        ..Firing::first("d_0123456789abcdef0123456789abcdef".into(), "pb_00001".into(), conversion(), at, at)
    }
}

/// The parts of a delivered firing outside the store and the sender, each on its own:
/// what `service::dispatch` does per attempt (its `base_entry` clones the firing into
/// the log entry, and redacts the template URL only for entries without a request).
fn bench_firing(c: &mut Criterion) {
    let postback = get_postback(
        "https://affiliate-postback.example/pb?clickid={external_transaction_id}&payout={payout}&tx={transaction_id}&d={delivery_id}",
    );
    let firing = firing();
    let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 1).unwrap();
    let mut group = c.benchmark_group("firing");
    group.bench_function("render_signed_get", |b| {
        b.iter(|| {
            let ctx = firing.macro_context(&postback.postback);
            postback.render_signed(black_box(&ctx), now).unwrap()
        })
    });
    let ctx = firing.macro_context(&postback.postback);
    let request = postback.render_signed(&ctx, now).unwrap();
    group.bench_function("shown_get", |b| b.iter(|| postback.shown(black_box(&request), &ctx)));
    group.bench_function("redact_url_template", |b| b.iter(|| redact_url(black_box(&postback.postback.url))));
    group.bench_function("firing_clone", |b| b.iter(|| black_box(&firing).clone()));
    group.bench_function("firing_json_encode", |b| b.iter(|| serde_json::to_string(black_box(&firing)).unwrap()));
    let encoded = serde_json::to_string(&firing).unwrap();
    group.bench_function("firing_json_decode", |b| {
        b.iter(|| serde_json::from_str::<Firing>(black_box(&encoded)).unwrap())
    });
    // The load test's firings: events with no sub1..sub10 (most trackers' conversions).
    let mut no_subs = firing.clone();
    no_subs.event.subs = Default::default();
    group.bench_function("firing_json_encode_no_subs", |b| {
        b.iter(|| serde_json::to_string(black_box(&no_subs)).unwrap())
    });
    let encoded = serde_json::to_string(&no_subs).unwrap();
    group.bench_function("firing_json_decode_no_subs", |b| {
        b.iter(|| serde_json::from_str::<Firing>(black_box(&encoded)).unwrap())
    });
    group.finish();
}

/// One GET through the real sender (guarded resolver, reqwest pool) to an axum sink on
/// loopback, on a kept-alive connection: the per-request CPU of the HTTP client and the
/// sink together (the sink's share is the same before and after a sender change).
fn bench_sender(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = runtime.block_on(async {
        let sink = axum::Router::new().route("/{*p}", axum::routing::get(|| async { "OK" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });
        addr
    });
    let sender = ReqwestSender::new(SenderConfig::new(Duration::from_secs(10), true)).unwrap();
    let postback = get_postback(&format!("http://{addr}/pb?t={{transaction_id}}&d={{delivery_id}}"));
    let firing = firing();
    let ctx = firing.macro_context(&postback.postback);
    let request: OutboundRequest = postback.render(&ctx).unwrap();
    // Connect once so every timed request reuses the pooled connection.
    let first = runtime.block_on(sender.send(&request)).unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "OK"));
    let mut group = c.benchmark_group("sender");
    group.bench_function("get_keepalive_loopback", |b| b.iter(|| runtime.block_on(sender.send(black_box(&request)))));
    group.finish();
}

/// A store that holds one managed key (the bench measures the cached path, as a busy
/// key sees it: no store call within the 5 s bound).
struct OneKey(postback::domain::access::ManagedKey);

#[async_trait::async_trait]
impl postback::ports::AccessStore for OneKey {
    async fn create_key(
        &self,
        _: &postback::domain::access::ManagedKey,
        _: &postback::domain::access::AuditRecord,
    ) -> postback::ports::StoreResult<()> {
        Ok(())
    }
    async fn key_by_hash(
        &self,
        hash: &str,
    ) -> postback::ports::StoreResult<Option<postback::domain::access::ManagedKey>> {
        Ok((hash == self.0.hash).then(|| self.0.clone()))
    }
    async fn list_keys(&self) -> postback::ports::StoreResult<Vec<postback::domain::access::ManagedKey>> {
        Ok(vec![self.0.clone()])
    }
    async fn revoke_key(
        &self,
        _: &str,
        _: &postback::domain::access::AuditRecord,
    ) -> postback::ports::StoreResult<bool> {
        Ok(false)
    }
    async fn touch_key(&self, _: &str, _: chrono::DateTime<Utc>) -> postback::ports::StoreResult<()> {
        Ok(())
    }
    async fn append_audit(&self, _: &postback::domain::access::AuditRecord) -> postback::ports::StoreResult<()> {
        Ok(())
    }
    async fn query_audit(
        &self,
        _: &postback::domain::access::AuditFilter,
    ) -> postback::ports::StoreResult<postback::domain::access::AuditPage> {
        Ok(postback::domain::access::AuditPage { items: vec![], next_cursor: None })
    }
}

/// Authenticating a request: the bootstrap admin key (two constant-time digest
/// comparisons) and a managed key (the same, then the ≤ 5 s cache and one more
/// comparison). The difference is what a managed key adds per request.
fn bench_auth(c: &mut Criterion) {
    use postback::domain::access::{hash_key, new_key, ManagedKey, Role};
    use postback::entry::http::{ApiKeys, KeyRing};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let managed = new_key();
    let stored = ManagedKey {
        id: "key_bench".into(),
        name: "Bench".into(),
        role: Role::Viewer,
        publisher_id: None,
        created_at: Utc::now(),
        last_used_at: None,
        hash: hash_key(&managed),
    };
    let ring = KeyRing::new(
        ApiKeys::new("admin-key-0123456789abcdef", "ingest-key-0123456789abcdef"),
        Arc::new(OneKey(stored)),
        Arc::new(postback::adapters::system::SystemClock),
    );
    let mut group = c.benchmark_group("auth");
    group.bench_function("bootstrap_admin_key", |b| {
        b.iter(|| runtime.block_on(ring.authenticate(black_box("admin-key-0123456789abcdef"))).unwrap().unwrap())
    });
    group.bench_function("managed_key_cached", |b| {
        b.iter(|| runtime.block_on(ring.authenticate(black_box(&managed))).unwrap().unwrap())
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_matching, bench_render, bench_firing, bench_sender, bench_auth
}
criterion_main!(benches);
