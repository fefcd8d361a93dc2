//! Every metric series a process can produce is on `/metrics` from the start, at 0
//! (docs/protocol.md, "Metrics"): `rate()` and absence alerts misbehave on series that appear late.

use testkit::{Gripmesh, parse_metric, scrape_metrics};

use crate::common::BIN;

/// Asserts every `series` is present in `page` (any value) and returns nothing.
fn assert_present(page: &str, series: &[&str]) {
    let missing: Vec<&&str> = series
        .iter()
        .filter(|s| parse_metric(page, s).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "series missing right after start: {missing:?}\n--- /metrics ---\n{page}"
    );
}

/// Standalone with the embedded sidecar, scraped right after `ready`: the edge's, control's
/// and the sidecar's counters are all there with their known label values, and
/// `gripmesh_control_routes_version` carries the table's version.
#[tokio::test]
async fn standalone_series_exist_at_zero_right_after_start() {
    // The gateway is never asked: no client connects.
    let gm = Gripmesh::standalone(BIN, &["--authz-gateway", "http://127.0.0.1:9"]).await;
    let page = scrape_metrics(gm.admin_addr()).await;
    let mut series: Vec<String> = Vec::new();
    for decision in ["allow", "deny", "error"] {
        for cache in ["hit", "miss"] {
            series.push(format!(
                "gripmesh_authz_checks_total{{decision=\"{decision}\",cache=\"{cache}\"}}"
            ));
        }
    }
    for reason in ["slow_consumer", "bad_payload"] {
        series.push(format!(
            "gripmesh_edge_messages_dropped_total{{reason=\"{reason}\"}}"
        ));
    }
    for reason in [
        "unauthorized",
        "too_large",
        "bad_request",
        "not_acceptable",
        "not_json",
        "invalid_format",
        "invalid_item",
        "invalid_channel",
        "body_timeout",
        "cross_site",
        "host",
        "bus_unavailable",
    ] {
        series.push(format!(
            "gripmesh_control_publish_rejected_total{{reason=\"{reason}\"}}"
        ));
    }
    for class in ["2xx", "4xx", "5xx", "error"] {
        series.push(format!(
            "gripmesh_edge_origin_requests_total{{status_class=\"{class}\"}}"
        ));
    }
    for result in ["sent", "rejected", "failed"] {
        series.push(format!(
            "gripmesh_edge_gone_requests_total{{result=\"{result}\"}}"
        ));
    }
    for bucket in [
        "gripmesh_routes",
        "gripmesh_revocations",
        "gripmesh_key_leases",
        "gripmesh_key_usage",
    ] {
        for reason in [
            "undecodable",
            "unsigned",
            "bad_signature",
            "replayed",
            "bad_key",
        ] {
            series.push(format!(
                "gripmesh_bus_records_refused_total{{bucket=\"{bucket}\",reason=\"{reason}\"}}"
            ));
        }
    }
    for api in ["http", "grpc"] {
        series.push(format!(
            "gripmesh_control_publish_items_total{{api=\"{api}\"}}"
        ));
    }
    for transport in ["ws", "http-stream", "http-response"] {
        series.push(format!(
            "gripmesh_edge_connections{{transport=\"{transport}\"}}"
        ));
    }
    series.extend(
        [
            "gripmesh_authz_revocations_total",
            "gripmesh_authz_gateway_duration_seconds_count",
            "gripmesh_authz_cache_entries",
            "gripmesh_authz_cache_bytes",
            "gripmesh_connections_refused_total",
            "gripmesh_edge_routes_reload_errors_total",
            "gripmesh_edge_delivery_latency_seconds_count",
            "gripmesh_bus_connected",
            "gripmesh_bus_reconnects_total",
        ]
        .map(str::to_owned),
    );
    let refs: Vec<&str> = series.iter().map(String::as_str).collect();
    assert_present(&page, &refs);
    assert_eq!(
        parse_metric(
            &page,
            "gripmesh_authz_checks_total{decision=\"allow\",cache=\"miss\"}"
        ),
        Some(0.0)
    );
    // Present from the start (above); the table itself lands in the store right after, so
    // the version is polled rather than read from the first scrape.
    let admin = gm.admin_addr();
    testkit::wait_until(
        std::time::Duration::from_secs(10),
        "gripmesh_control_routes_version >= 1 in standalone",
        || async move {
            let page = scrape_metrics(admin).await;
            parse_metric(&page, "gripmesh_control_routes_version").unwrap_or(0.0) >= 1.0
        },
    )
    .await;
}

/// `gripmesh authz`: the sidecar's series exist before its first check.
#[tokio::test]
async fn authz_tier_series_exist_at_zero_right_after_start() {
    let gm = Gripmesh::start(
        BIN,
        &[
            "authz",
            "--gateway",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    let page = scrape_metrics(gm.admin_addr()).await;
    assert_present(
        &page,
        &[
            "gripmesh_authz_checks_total{decision=\"deny\",cache=\"hit\"}",
            "gripmesh_authz_checks_total{decision=\"error\",cache=\"miss\"}",
            "gripmesh_authz_revocations_total",
            "gripmesh_authz_gateway_duration_seconds_count",
        ],
    );
}
