//! `parse::postback::spec_from_json` (POST/PUT /postbacks) on arbitrary JSON: never panics; what
//! it accepts compiles, renders with sample values, and, PUT back as GOT, is accepted
//! again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback::domain::macros::{sample_event, MacroContext};
use postback::domain::postback::Postback;
use postback::domain::signing::SigningSecret;
use postback::entry::http::parse::postback::spec_from_json;
use postback_fuzz::received_at;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(spec) = spec_from_json(&value) else { return };

    let postback = spec.clone().into_postback("pb_fuzz".to_string(), received_at(), received_at());
    // The service gives a signing postback saved without a secret a random one.
    let mut saved = postback.clone();
    if saved.signing.is_on() && saved.signing_secret.is_none() {
        saved.signing_secret = Some(SigningSecret::from_key_bytes(&[7; 32]));
    }
    let compiled = match saved.compile() {
        Ok(compiled) => compiled,
        Err(e) => panic!("an accepted postback does not compile: {e}"),
    };

    // Save-time checks render with sample values; firing with them must work too.
    let param_keys: Vec<String> = std::iter::once(&compiled.url)
        .chain(compiled.headers.iter().map(|(_, t)| t))
        .chain(compiled.body.as_ref())
        .flat_map(|t| t.macros())
        .filter_map(|m| m.strip_prefix("params."))
        .map(str::to_string)
        .collect();
    let event = sample_event(postback.kind, param_keys.iter().map(String::as_str));
    let ctx = MacroContext::new(&event, &postback.id, &postback.name, "d_fuzz", 1);
    let request = match compiled.render_signed(&ctx, received_at()) {
        Ok(request) => request,
        Err(e) => panic!("an accepted postback does not render with sample values: {e}"),
    };
    assert!(url::Url::parse(&request.url).is_ok(), "rendered url {:?} does not parse", request.url);
    assert_eq!(request.headers.contains_key("webhook-signature"), postback.signing.is_on(), "signed iff signing is on");
    for (name, value) in &request.headers {
        assert!(!value.contains(['\r', '\n']), "header {name} renders CR/LF: {value:?}");
    }

    // PUT back what was GOT: accepted again, unchanged.
    let json = serde_json::to_value(&postback).expect("a postback serializes");
    let again = spec_from_json(&json);
    assert_eq!(again.as_ref(), Ok(&spec), "re-validating the stored postback changed or refused it: {json}");
    let back: Postback = serde_json::from_value(json).expect("a stored postback deserializes");
    assert_eq!(back, postback, "the stored postback does not survive serde");
});
