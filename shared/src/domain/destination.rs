//! A firing's destination: the scheme, host and port its request goes to. The local
//! dispatcher bounds the requests in flight per destination (`DESTINATION_CONCURRENCY`),
//! so one slow receiver cannot hold every sender. Two receivers on one host but on
//! different ports are different destinations; a path or query never matters.

use super::macros::MacroContext;
use super::postback::CompiledPostback;
use super::template::Encoding;

/// `scheme://host:port` of an absolute http(s) URL, lowercase, with the scheme's default
/// port written out (`https://aff.example:443`), so every spelling of one receiver is one
/// key. `None` if the URL does not parse or has no host (such a request fails anyway).
pub fn destination_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = match parsed.host()? {
        url::Host::Domain(domain) => domain.to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => format!("[{ip}]"),
    };
    let port = parsed.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", parsed.scheme()))
}

impl CompiledPostback {
    /// Where this postback's request for `ctx` goes (see [`destination_of`]). Most URL
    /// templates spell the host out before any macro: then the destination is read off
    /// that literal text without rendering; a host built from macros is rendered.
    pub fn destination(&self, ctx: &MacroContext<'_>) -> Option<String> {
        if let Some(fixed) = fixed_authority(self.url.literal_prefix()) {
            return destination_of(fixed);
        }
        destination_of(&self.url.render(ctx, Encoding::Url).ok()?)
    }
}

/// The `scheme://authority` part of a URL template's literal prefix, if the prefix holds
/// it whole (a `/`, `?` or `#` follows the authority before any macro). The URL parser
/// reads `\` as `/` in http(s) URLs, so it ends the authority too.
fn fixed_authority(prefix: &str) -> Option<&str> {
    let after_scheme = prefix.find("://")? + 3;
    let end = prefix[after_scheme..].find(['/', '?', '#', '\\'])? + after_scheme;
    Some(&prefix[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::event::EventType;
    use crate::testing::fixtures;

    #[test]
    fn destination_is_scheme_host_and_port() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://aff.example/pb?x=1", Some("https://aff.example:443")),
            ("http://aff.example/pb", Some("http://aff.example:80")),
            ("HTTPS://AFF.Example:443/pb", Some("https://aff.example:443")),
            ("https://aff.example:8443/a", Some("https://aff.example:8443")),
            ("http://127.0.0.1:3001/ok", Some("http://127.0.0.1:3001")),
            ("http://127.0.0.1:3002/ok", Some("http://127.0.0.1:3002")),
            ("http://[::1]:8080/", Some("http://[::1]:8080")),
            ("https://user:pw@aff.example/pb", Some("https://aff.example:443")),
            ("https://aff.example", Some("https://aff.example:443")),
            ("not a url", None),
            ("/relative/path", None),
            ("", None),
        ];
        for (url, want) in cases {
            assert_eq!(destination_of(url).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn fixed_authority_needs_the_whole_authority_before_any_macro() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://aff.example/pb?c=", Some("https://aff.example")),
            ("https://aff.example?c=", Some("https://aff.example")),
            ("https://aff.example:8443#", Some("https://aff.example:8443")),
            ("https://aff.example\\x", Some("https://aff.example")),
            // The host (or the userinfo before it) goes on in a macro: render.
            ("https://", None),
            ("https://aff.", None),
            ("https://user:", None),
            ("", None),
        ];
        for (prefix, want) in cases {
            assert_eq!(fixed_authority(prefix), *want, "{prefix:?}");
        }
    }

    fn compiled(url: &str) -> CompiledPostback {
        let mut postback = fixtures::postback("pb_1", EventType::Click);
        postback.url = url.to_string();
        CompiledPostback::new(postback).unwrap()
    }

    #[test]
    fn a_host_made_of_macros_is_rendered() {
        let mut event = fixtures::event(EventType::Click, "T1");
        let ctx = |event: &crate::domain::event::Event| {
            let p = compiled("https://{sub1}.aff.example:{sub2}/pb?c={transaction_id}");
            let ctx = MacroContext::new(event, "pb_1", "P", "d_1", 1);
            p.destination(&ctx)
        };
        event.subs[0] = Some("EU".into());
        event.subs[1] = Some("8443".into());
        assert_eq!(ctx(&event).as_deref(), Some("https://eu.aff.example:8443"));
        event.subs[0] = Some("us".into());
        event.subs[1] = Some("9000".into());
        assert_eq!(ctx(&event).as_deref(), Some("https://us.aff.example:9000"), "another sub, another destination");
        let fixed = compiled("http://127.0.0.1:3001/ok?c={transaction_id}");
        let ctx = MacroContext::new(&event, "pb_1", "P", "d", 1);
        assert_eq!(fixed.destination(&ctx).as_deref(), Some("http://127.0.0.1:3001"));
    }
}
