//! Rendering a compiled postback into the request to send, and the redacted copy of that
//! request that goes into logs and API responses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::delivery::OutboundRequest;
use super::macros::MacroContext;
use super::postback::CompiledPostback;
use super::redact::{is_secret_header, redact_headers, redact_url, REDACTED};
use super::signing::{url_signature, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::template::{Encoding, RenderError};

impl CompiledPostback {
    /// Render the request for one firing. The body is encoded by content type: JSON
    /// escaping for JSON, form encoding for `application/x-www-form-urlencoded`, as is
    /// otherwise. A body gets a `Content-Type` header unless the postback sets one.
    ///
    /// With signing on, a `{signature}` in the URL renders [`url_signature`] of the URL
    /// rendered with it empty; the `webhook-*` headers are [`CompiledPostback::sign`]'s.
    pub fn render(&self, ctx: &MacroContext<'_>) -> Result<OutboundRequest, RenderError> {
        let mut url = self.url.render(ctx, Encoding::Url)?;
        if let Some(keys) = self.signing.as_ref().filter(|_| self.url.uses_signature()) {
            let signature = url_signature(&keys.current, &url);
            url = self.url.render_with_signature(ctx, Encoding::Url, Some(&signature))?;
        }
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
        Ok(OutboundRequest {
            method: self.postback.method.as_str().to_string(),
            url,
            headers,
            body,
            public_only: false,
        })
    }
}

impl CompiledPostback {
    /// Add the Standard Webhooks headers (signing on only): `webhook-id` is the delivery
    /// id, `webhook-timestamp` the unix seconds of `now` (the attempt), and
    /// `webhook-signature` signs the body (empty when there is none) with every key in
    /// force at `now`.
    pub fn sign(&self, request: &mut OutboundRequest, delivery_id: &str, now: DateTime<Utc>) {
        let Some(keys) = &self.signing else { return };
        let timestamp = now.timestamp();
        let signature = keys.signature_header(delivery_id, timestamp, request.body.as_deref().unwrap_or_default(), now);
        request.headers.insert(HEADER_ID.to_string(), delivery_id.to_string());
        request.headers.insert(HEADER_TIMESTAMP.to_string(), timestamp.to_string());
        request.headers.insert(HEADER_SIGNATURE.to_string(), signature);
    }

    /// Render and sign: the request to send for one attempt at `now`.
    pub fn render_signed(&self, ctx: &MacroContext<'_>, now: DateTime<Utc>) -> Result<OutboundRequest, RenderError> {
        let mut request = self.render(ctx)?;
        self.sign(&mut request, ctx.delivery_id, now);
        Ok(request)
    }

    /// The copy of `request` (rendered from `ctx`) that may be logged or shown: as
    /// [`OutboundRequest::redacted`], and the `{signature}` value in the URL redacted
    /// too, whatever the parameter carrying it is called.
    pub fn shown(&self, request: &OutboundRequest, ctx: &MacroContext<'_>) -> OutboundRequest {
        let mut shown = request.redacted();
        if !self.postback.template_secrets.is_empty() {
            let p = &self.postback;
            shown.url = p.redact_template_secrets(&shown.url).into_owned();
            shown.body = shown.body.as_deref().map(|b| p.redact_template_secrets(b).into_owned());
            for value in shown.headers.values_mut() {
                *value = p.redact_template_secrets(value).into_owned();
            }
        }
        if self.signing.is_some() && self.url.uses_signature() {
            shown.url = match self.url.render_with_signature(ctx, Encoding::Url, Some(REDACTED)) {
                Ok(url) => redact_url(&url),
                Err(_) => REDACTED.to_string(),
            };
        }
        shown.headers.entry(HEADER_SIGNATURE.to_string()).and_modify(|v| *v = REDACTED.to_string());
        shown
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
            public_only: self.public_only,
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
