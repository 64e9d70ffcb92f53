//! Secret redaction for logs and API responses.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// What a redacted value is replaced with. A `PUT /postbacks/{id}` that sends this
/// exact value for a header keeps the stored secret.
pub const REDACTED: &str = "[REDACTED]";

/// Header names whose values are secrets: authorization, proxy-authorization, cookie,
/// set-cookie, and any name containing `key`, `token`, `secret`, `auth`, `password`,
/// `signature`, `session` (case-insensitive).
pub fn is_secret_header(name: &str) -> bool {
    // Compared ignoring ASCII case in place: this runs for every header and query
    // parameter of every logged request, so it allocates nothing.
    let name = name.trim();
    ["authorization", "proxy-authorization", "cookie", "set-cookie"].iter().any(|n| name.eq_ignore_ascii_case(n))
        || SECRET_NAME_PARTS.iter().any(|part| contains_ignore_ascii_case(name, part))
}

/// `haystack` contains the ASCII `needle`, ignoring ASCII case.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack.as_bytes().windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Substrings that make a header or query parameter name secret.
const SECRET_NAME_PARTS: &[&str] = &["key", "token", "secret", "auth", "password", "signature", "session"];

/// Short query parameter names that are secrets when they stand alone or as a
/// `_`/`-`/`.`-separated word (`sig`, `api_sig`, `user-pwd`), but not inside longer
/// words (`design`, `passenger`).
const SECRET_QUERY_WORDS: &[&str] = &["sig", "pass", "pwd"];

/// Is this (raw, possibly percent-encoded) query parameter name a secret?
fn is_secret_param(raw_name: &str) -> bool {
    // Most names are plain (`clickid`, `payout`): decoded only when there is something
    // to decode.
    let name: Cow<'_, str> = if raw_name.contains(['+', '%']) {
        let plus_decoded = raw_name.replace('+', " ");
        Cow::Owned(percent_encoding::percent_decode_str(&plus_decoded).decode_utf8_lossy().into_owned())
    } else {
        Cow::Borrowed(raw_name)
    };
    is_secret_header(&name)
        || name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| SECRET_QUERY_WORDS.iter().any(|secret| word.eq_ignore_ascii_case(secret)))
}

pub fn redact_headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), if is_secret_header(k) { REDACTED.to_string() } else { v.clone() }))
        .collect()
}

/// Redact secret-looking query values (same name rule as headers, plus `sig`, `pass`,
/// `pwd`) and any userinfo password in a URL, keeping the rest byte for byte.
///
/// Works on the text, never re-serialising, so what is logged is what was sent. The
/// query and a `k=v&...` fragment are both redacted; empty values stay empty. For a URL
/// that does not parse, any `user:password@` before the path is still masked (more
/// eagerly, since its structure is unknown).
pub fn redact_url(url: &str) -> String {
    let masked = mask_userinfo_password(url);
    let url = masked.as_ref();
    let mut out = String::with_capacity(url.len() + 16);
    // Fragment first: a `#` ends the query, and a `?` after it belongs to the fragment.
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => (&url[..i], Some(&url[i + 1..])),
        None => (url, None),
    };
    let (before_query, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    out.push_str(before_query);
    if let Some(query) = query {
        out.push('?');
        redact_pairs(query, &mut out);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        redact_pairs(fragment, &mut out);
    }
    out
}

fn mask_userinfo_password(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    if !rest.contains('@') {
        // No userinfo without an `@`: skip the full URL parse (every logged request
        // comes through here).
        return Cow::Borrowed(url);
    }
    let authority_len = match url::Url::parse(url) {
        // The parser found no password: nothing to mask.
        Ok(parsed) if parsed.password().is_none() => return Cow::Borrowed(url),
        // Where the parser ends the authority (`\` is a slash in http(s) URLs).
        Ok(_) => rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len()),
        // Unknown structure: the userinfo may reach as far as the last `@` (a `?` or
        // `/` in a mistyped password is what made the URL invalid). Masking too much
        // of a URL that could not have been sent is the safe side.
        Err(_) => rest.len(),
    };
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let Some(colon) = authority[..at].find(':') else {
        return Cow::Borrowed(url);
    };
    if colon + 1 == at {
        return Cow::Borrowed(url); // `user:@host`: an empty password hides nothing.
    }
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    Cow::Owned(format!("{}{REDACTED}{}", &url[..password_start], &url[password_end..]))
}

/// Copy `name=value&...` pairs into `out`, replacing secret values.
fn redact_pairs(pairs: &str, out: &mut String) {
    for (i, pair) in pairs.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secret_header_names() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "x-auth-token",
            "X-Client-Secret",
            "X-Password",
            "X-Hub-Signature-256",
            "X-Session-Id",
            "APIKEY",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in ["Content-Type", "Accept", "User-Agent", "X-Request-Id", "X-Sig"] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn redact_headers_masks_only_secrets() {
        let headers: BTreeMap<String, String> = [
            ("Authorization".to_string(), "Bearer abc".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ]
        .into();
        let out = redact_headers(&headers);
        assert_eq!(out["Authorization"], REDACTED);
        assert_eq!(out["Content-Type"], "application/json");
    }

    #[test]
    fn redact_url_cases() {
        let cases = [
            ("https://a.example/pb", "https://a.example/pb"),
            ("https://a.example/pb?clickid=1&payout=2.5", "https://a.example/pb?clickid=1&payout=2.5"),
            ("https://a.example/pb?token=abc&x=1", "https://a.example/pb?token=[REDACTED]&x=1"),
            ("https://a.example/pb?api_key=&x=1", "https://a.example/pb?api_key=&x=1"),
            ("https://a.example/?key=a&key=b&k=c", "https://a.example/?key=[REDACTED]&key=[REDACTED]&k=c"),
            (
                "https://a.example/?sig=zz&design=ok&api-sig=yy",
                "https://a.example/?sig=[REDACTED]&design=ok&api-sig=[REDACTED]",
            ),
            (
                "https://a.example/?pwd=1&pass=2&passenger=3",
                "https://a.example/?pwd=[REDACTED]&pass=[REDACTED]&passenger=3",
            ),
            ("https://a.example/?API%5FKEY=s3&Token=t", "https://a.example/?API%5FKEY=[REDACTED]&Token=[REDACTED]"),
            ("https://a.example/?x=1#frag", "https://a.example/?x=1#frag"),
            (
                "https://a.example/?secret=1#access_token=t&y=2",
                "https://a.example/?secret=[REDACTED]#access_token=[REDACTED]&y=2",
            ),
            ("https://a.example/p#x?token=1", "https://a.example/p#x?token=[REDACTED]"),
            ("https://a.example/?flag&token", "https://a.example/?flag&token"),
            ("https://a.example/?a=b=c&token=x=y", "https://a.example/?a=b=c&token=[REDACTED]"),
            ("https://user:hunter2@a.example/p?x=1", "https://user:[REDACTED]@a.example/p?x=1"),
            ("https://user@a.example/p", "https://user@a.example/p"),
            ("https://user:@a.example/p", "https://user:@a.example/p"),
            ("https://a.example:8443/users/@me:x", "https://a.example:8443/users/@me:x"),
            ("HTTPS://A.EXAMPLE/%7Bx%7D?Q=%20", "HTTPS://A.EXAMPLE/%7Bx%7D?Q=%20"),
            // Not parseable: the password is still masked.
            ("http://user:pa/ss@host:notaport/x", "http://user:[REDACTED]@host:notaport/x"),
            ("not a url ?token=abc", "not a url ?token=[REDACTED]"),
            ("http://user:pa?ss@host/x?token=t", "http://user:[REDACTED]@host/x?token=[REDACTED]"),
            ("http://user:pa#ss@host/x", "http://user:[REDACTED]@host/x"),
            ("https://u:p%40ss@host/", "https://u:[REDACTED]@host/"),
            ("https://u:p@ss@host/?a=1", "https://u:[REDACTED]@host/?a=1"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "input {input:?}");
        }
    }

    /// The first, allocating versions of the name rules: the in-place ones must agree.
    fn reference_is_secret_header(name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        matches!(name.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie")
            || SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
    }

    fn reference_is_secret_param(raw_name: &str) -> bool {
        let plus_decoded = raw_name.replace('+', " ");
        let name = percent_encoding::percent_decode_str(&plus_decoded).decode_utf8_lossy().to_ascii_lowercase();
        reference_is_secret_header(&name)
            || name.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| SECRET_QUERY_WORDS.contains(&word))
    }

    fn name_part() -> impl Strategy<Value = String> {
        "[a-z_]{1,8}".prop_filter("must not itself be secret", |n| !is_secret_param(n))
    }

    fn secret_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("token".to_string()),
            Just("api_key".to_string()),
            Just("Secret".to_string()),
            Just("sig".to_string()),
            Just("x-pwd".to_string()),
            Just("pass".to_string()),
            Just("AUTH".to_string()),
            Just("password".to_string()),
            Just("session_id".to_string()),
            Just("signature".to_string()),
        ]
    }

    proptest! {
        /// A value under a secret-named parameter never survives, whatever surrounds it;
        /// everything that is not a secret value is kept byte for byte.
        #[test]
        fn secret_query_values_never_leak(
            params in proptest::collection::vec((any::<bool>(), name_part(), secret_name(), "[a-z0-9]{0,6}"), 0..8),
            secret_bodies in proptest::collection::vec("[A-Za-z0-9._~-]{1,12}", 8),
            fragment in proptest::option::of("[a-z0-9]{0,10}"),
            password in proptest::option::of("[A-Za-z0-9]{1,10}"),
        ) {
            let mut url = String::from("https://");
            if let Some(pw) = &password {
                url.push_str(&format!("u:QQPW{pw}@"));
            }
            url.push_str("rcv.example/cb");
            let mut secrets = Vec::new();
            for (i, (is_secret, plain, secret, plain_value)) in params.iter().enumerate() {
                url.push(if i == 0 { '?' } else { '&' });
                if *is_secret {
                    let value = format!("ZZSECRET{}", secret_bodies[i]);
                    url.push_str(&format!("{secret}={value}"));
                    secrets.push(value);
                } else {
                    url.push_str(&format!("{plain}={plain_value}"));
                }
            }
            if let Some(f) = &fragment {
                url.push('#');
                url.push_str(f);
            }
            let out = redact_url(&url);
            prop_assert!(!out.contains("ZZSECRET"), "{out}");
            prop_assert!(!out.contains("QQPW"), "{out}");
            // Undo the masking, in string order (password first): it must give the input
            // back, so nothing but secret values was touched.
            let mut restored = out.clone();
            let originals = password.iter().map(|pw| format!("QQPW{pw}")).chain(secrets.iter().cloned());
            for original in originals {
                restored = restored.replacen(REDACTED, &original, 1);
            }
            prop_assert_eq!(restored, url);
        }

        #[test]
        fn secret_header_values_never_leak(
            secret in secret_name().prop_filter("header secret", |n| is_secret_header(n)),
            prefix in "[A-Za-z-]{0,4}",
            value in "[ -~]{1,20}",
        ) {
            let name = format!("{prefix}{secret}");
            let headers: BTreeMap<String, String> = [(name.clone(), value), ("Accept".into(), "*/*".into())].into();
            let out = redact_headers(&headers);
            prop_assert_eq!(&out[&name], REDACTED);
            prop_assert_eq!(&out["Accept"], "*/*");
        }

        /// The allocation-free name checks decide exactly as the allocating ones did,
        /// on names with secret words, mixed case, `+`, percent escapes and non-ASCII.
        #[test]
        fn name_rules_agree_with_the_reference(
            parts in proptest::collection::vec(prop_oneof![
                "(?i)(key|token|secret|auth|password|signature|session|sig|pass|pwd|cookie|authorization)",
                "[a-zA-Z0-9_.+ -]{0,4}",
                "%[0-9A-Fa-f]{2}",
                "%(4[bB]|6[bB]|5[fF]|2[bB]|[eE]9|C3%A9)",
                "\\PC{0,2}",
            ], 0..5),
        ) {
            let name: String = parts.concat();
            prop_assert_eq!(is_secret_header(&name), reference_is_secret_header(&name), "header {:?}", name);
            prop_assert_eq!(is_secret_param(&name), reference_is_secret_param(&name), "param {:?}", name);
        }

        #[test]
        fn never_panics_and_keeps_non_secret_text(s in "\\PC{0,60}") {
            let out = redact_url(&s);
            if !s.contains('?') && !s.contains('#') && !s.contains('@') {
                prop_assert_eq!(out, s);
            }
        }
    }
}
