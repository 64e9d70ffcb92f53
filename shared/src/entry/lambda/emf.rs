//! The functions' metrics: one CloudWatch Embedded Metric Format line per invocation on
//! stdout.

use crate::service::App;

/// The CloudWatch namespace of the functions' EMF metrics.
pub const METRICS_NAMESPACE: &str = "PostbackManager";

/// Print the counts since the last call as one EMF line (nothing if nothing was counted).
/// CloudWatch Logs turns it into metrics: no API call from the function.
pub(super) fn emit_metrics(app: &App, function: &str) {
    if let Some(line) = emf_line(&app.metrics.take(), function, app.ports.clock.now().timestamp_millis()) {
        println!("{line}");
    }
}

/// One CloudWatch Embedded Metric Format line for these counts, with the dimension
/// `function`. EMF holds one value per metric name, so the label goes into the name:
/// `events_accepted_<type>`, `events_duplicate_<type>`, `firings_<outcome>`, and the
/// delivery durations as `delivery_duration_ms_sum` / `delivery_duration_count`.
pub fn emf_line(m: &crate::service::metrics::MetricsSnapshot, function: &str, timestamp_ms: i64) -> Option<String> {
    let mut values: Vec<(String, &'static str, serde_json::Value)> = Vec::new();
    let counts = [("events_accepted_", &m.accepted), ("events_duplicate_", &m.duplicates), ("firings_", &m.firings)];
    for (prefix, map) in counts {
        values.extend(map.iter().map(|(label, n)| (format!("{prefix}{label}"), "Count", serde_json::json!(n))));
    }
    if m.duration_count > 0 {
        let ms = (m.duration_sum_seconds * 1000.0).round();
        values.push(("delivery_duration_ms_sum".into(), "Milliseconds", serde_json::json!(ms)));
        values.push(("delivery_duration_count".into(), "Count", serde_json::json!(m.duration_count)));
    }
    if values.is_empty() {
        return None;
    }
    let definitions: Vec<_> =
        values.iter().map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit})).collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": METRICS_NAMESPACE, "Dimensions": [["function"]], "Metrics": definitions}],
        },
        "function": function,
    });
    if let Some(object) = line.as_object_mut() {
        object.extend(values.into_iter().map(|(name, _, value)| (name, value)));
    }
    Some(line.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn emf_line_has_the_invocation_counts() {
        let metrics = crate::service::metrics::Metrics::default();
        assert_eq!(super::emf_line(&metrics.snapshot(), "ingest", 1), None, "nothing counted, no line");
        metrics.event("click", false);
        metrics.event("click", false);
        metrics.event("conversion", true);
        metrics.firing("delivered");
        metrics.delivery_duration(Duration::from_millis(120));
        let line = super::emf_line(&metrics.take(), "dispatch", 1_700_000_000_000).unwrap();
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "PostbackManager");
        assert_eq!(directive["Dimensions"], serde_json::json!([["function"]]));
        assert_eq!(v["function"], "dispatch");
        let names: Vec<&str> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "events_accepted_click",
                "events_duplicate_conversion",
                "firings_delivered",
                "delivery_duration_ms_sum",
                "delivery_duration_count"
            ]
        );
        // Every declared metric has its value at the top level (EMF's rule).
        for name in &names {
            assert!(v[name].is_number(), "{name} in {line}");
        }
        assert_eq!(v["events_accepted_click"], 2);
        assert_eq!(v["delivery_duration_ms_sum"], 120.0);
        assert_eq!(super::emf_line(&metrics.take(), "dispatch", 1), None, "taken: the next invocation starts at zero");
    }
}
