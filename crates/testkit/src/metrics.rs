//! Prometheus scrapes of the admin listener.
//!
//! A query is `name` or `name{label="value",...}`. It matches every sample with that exact
//! name whose labels include all the queried ones (extra labels are allowed); the values of
//! all matching samples are summed. `None` means no sample matched.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::http_get;

/// `GET /metrics` on the admin listener; panics unless 200.
pub async fn scrape_metrics(admin: SocketAddr) -> String {
    let resp = http_get(admin, "/metrics", &[]).await;
    assert_eq!(resp.status, 200, "GET /metrics: {}", resp.text());
    resp.text()
}

/// The summed value of the samples matching `query` in a scrape, or `None`.
pub async fn metric_value(admin: SocketAddr, query: &str) -> Option<f64> {
    parse_metric(&scrape_metrics(admin).await, query)
}

/// Waits until `accept(value)` holds for the metric (a missing metric counts as 0); returns the
/// value. Panics after `timeout` with the last value seen.
pub async fn wait_metric(
    admin: SocketAddr,
    query: &str,
    timeout: Duration,
    what: &str,
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric_value(admin, query).await.unwrap_or(0.0);
        if accept(value) {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("metric {query}: {what} not reached within {timeout:?}; last value {value}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the metric is at least `min`.
pub async fn wait_metric_at_least(
    admin: SocketAddr,
    query: &str,
    min: f64,
    timeout: Duration,
) -> f64 {
    wait_metric(admin, query, timeout, &format!(">= {min}"), |v| v >= min).await
}

/// Waits until the metric is at most `max` (a missing metric counts as 0).
pub async fn wait_metric_at_most(
    admin: SocketAddr,
    query: &str,
    max: f64,
    timeout: Duration,
) -> f64 {
    wait_metric(admin, query, timeout, &format!("<= {max}"), |v| v <= max).await
}

/// Sums the samples in Prometheus text `exposition` that match `query`.
pub fn parse_metric(exposition: &str, query: &str) -> Option<f64> {
    let (want_name, want_labels) = parse_series(query.trim())?;
    let mut total = None;
    for line in exposition.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, rest)) = split_series(line) else {
            continue;
        };
        let Some((name, labels)) = parse_series(series) else {
            continue;
        };
        if name != want_name {
            continue;
        }
        if !want_labels.iter().all(|w| labels.contains(w)) {
            continue;
        }
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        total = Some(total.unwrap_or(0.0) + value);
    }
    total
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Splits `name{labels} value [ts]` into the series part and the rest.
fn split_series(line: &str) -> Option<(&str, &str)> {
    if let Some(open) = line.find('{') {
        // Find the closing brace outside quoted label values.
        let bytes = line.as_bytes();
        let mut in_quotes = false;
        let mut i = open + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b'}' if !in_quotes => return Some((&line[..=i], &line[i + 1..])),
                _ => {}
            }
            i += 1;
        }
        None
    } else {
        let at = line.find(char::is_whitespace)?;
        Some((&line[..at], &line[at..]))
    }
}

/// Parses `name` or `name{k="v",...}` into the name and its label pairs.
fn parse_series(series: &str) -> Option<(String, Vec<(String, String)>)> {
    let Some(open) = series.find('{') else {
        return Some((series.to_string(), Vec::new()));
    };
    let name = series[..open].trim().to_string();
    let inner = series[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim().to_string(), value));
    }
    Some((name, labels))
}

#[cfg(test)]
mod tests {
    use super::parse_metric;

    const TEXT: &str = "# HELP x y\n# TYPE gripmesh_edge_connections gauge\n\
        gripmesh_edge_connections{transport=\"http-stream\"} 2\n\
        gripmesh_edge_connections{transport=\"ws\"} 1\n\
        gripmesh_build_info{version=\"0.1.0\"} 1\n\
        gripmesh_edge_subscriptions 3\n\
        odd{a=\"x,}y\",b=\"z\"} 4 1700000000\n";

    #[test]
    fn matches_by_name_and_labels() {
        assert_eq!(
            parse_metric(TEXT, "gripmesh_edge_connections{transport=\"http-stream\"}"),
            Some(2.0)
        );
        assert_eq!(parse_metric(TEXT, "gripmesh_edge_connections"), Some(3.0));
        assert_eq!(parse_metric(TEXT, "gripmesh_edge_subscriptions"), Some(3.0));
        assert_eq!(parse_metric(TEXT, "gripmesh_build_info"), Some(1.0));
        assert_eq!(parse_metric(TEXT, "odd{b=\"z\"}"), Some(4.0));
        assert_eq!(parse_metric(TEXT, "odd{a=\"x,}y\"}"), Some(4.0));
        assert_eq!(parse_metric(TEXT, "missing"), None);
        assert_eq!(
            parse_metric(TEXT, "gripmesh_edge_connections{transport=\"none\"}"),
            None
        );
    }
}
