//! `GET /console`: the admin console, a static page whose assets are built into the
//! binary (no CDN, no second server). The page itself needs no key; every data call
//! it makes sends the admin key from the tab's session storage.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Strict: no inline script, no `eval`, nothing from another origin, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX: &str = include_str!("../console/index.html");

/// Every asset the page loads: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../console/dom.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../console/app.css")),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (StatusCode::OK, headers, body).into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| ApiError::NotFound("console asset".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_no_inline_script() {
        for (name, _, _) in ASSETS {
            if name.ends_with(".js") && *name != "app.js" {
                continue; // imported by app.js
            }
            assert!(INDEX.contains(&format!("/console/{name}")), "{name} is linked from the page");
        }
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("style="), "no inline style");
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"), "nothing from elsewhere");
        for (name, _, body) in ASSETS {
            assert!(!body.contains("innerHTML"), "{name} never sets markup");
            assert!(!body.contains("eval("), "{name} never evaluates text");
        }
    }
}
