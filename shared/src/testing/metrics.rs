//! Reading the local server's `GET /metrics` (Prometheus text) from the outside: the
//! end-to-end tests and the load generator.

/// The text `GET {base}/metrics` answers with the key `api_key` (whatever the status).
pub async fn scrape(http: &reqwest::Client, base: &str, api_key: &str) -> String {
    let response = http.get(format!("{base}/metrics")).header("x-api-key", api_key).send().await.unwrap();
    response.text().await.unwrap()
}

/// The value of the series `name` (its full name with any labels, as written) in a
/// Prometheus text exposition; `None` if it is not there.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
