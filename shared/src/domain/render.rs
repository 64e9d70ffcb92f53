//! Rendering a compiled postback into the request to send, and the redacted copy of that
//! request that goes into logs and API responses.

use std::collections::BTreeMap;

use super::delivery::OutboundRequest;
use super::macros::MacroContext;
use super::postback::CompiledPostback;
use super::redact::{is_secret_header, redact_headers, redact_url, REDACTED};
use super::template::{Encoding, RenderError};

impl CompiledPostback {
    /// Render the request for one firing. The body is encoded by content type: JSON
    /// escaping for JSON, form encoding for `application/x-www-form-urlencoded`, as is
    /// otherwise. A body gets a `Content-Type` header unless the postback sets one.
    pub fn render(&self, ctx: &MacroContext<'_>) -> Result<OutboundRequest, RenderError> {
        let url = self.url.render(ctx, Encoding::Url)?;
        let mut headers = BTreeMap::new();
        for (name, template) in &self.headers {
            headers.insert(name.clone(), template.render(ctx, Encoding::Header)?);
        }
        let body = match &self.body {
            Some(template) => Some(template.render(ctx, Encoding::for_content_type(&self.postback.content_type))?),
            None => None,
        };
        if body.is_some() && !headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
            headers.insert("Content-Type".to_string(), self.postback.content_type.clone());
        }
        Ok(OutboundRequest { method: self.postback.method.as_str().to_string(), url, headers, body })
    }
}

impl OutboundRequest {
    /// The copy that may be logged or shown: secret query values, secret header values and
    /// secret-named JSON body fields replaced by `[REDACTED]`.
    pub fn redacted(&self) -> OutboundRequest {
        OutboundRequest {
            method: self.method.clone(),
            url: redact_url(&self.url),
            headers: redact_headers(&self.headers),
            body: self.body.as_deref().map(redact_body),
        }
    }
}

/// Redact secret-named fields of a JSON body; other bodies are kept as they are.
pub fn redact_body(body: &str) -> String {
    fn walk(value: &mut serde_json::Value) -> bool {
        let mut changed = false;
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if is_secret_header(key) && !v.is_object() && !v.is_array() {
                        *v = serde_json::Value::String(REDACTED.to_string());
                        changed = true;
                    } else {
                        changed |= walk(v);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    changed |= walk(v);
                }
            }
            _ => {}
        }
        changed
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut value) => {
            if walk(&mut value) {
                value.to_string()
            } else {
                body.to_string()
            }
        }
        Err(_) => body.to_string(),
    }
}
