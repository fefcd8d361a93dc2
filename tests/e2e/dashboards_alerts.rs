//! The operations assets: the Grafana dashboard (`deploy/grafana/`) and the
//! Prometheus alert rules (`deploy/prometheus/`). They must stay in step with the metrics the
//! binary exports: every `gripmesh_*` name they use must be in the README's metrics table, so a
//! rename breaks this test. Structure is checked too (the JSON parses as a Grafana dashboard,
//! the rules file has the shape of a `groups:` rules file with severity and annotations).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::common::workspace_root;

fn read(rel: &str) -> String {
    let path: PathBuf = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `gripmesh_[a-z_]+` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("gripmesh_") {
        let start = i + at;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "gripmesh_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('_');
        if !preceded_by_word && name.len() > "gripmesh".len() {
            out.insert(name.to_owned());
        }
        i = end;
    }
    out
}

/// The metric names of the README's `## Metrics` section.
fn documented_metrics() -> BTreeSet<String> {
    let readme = read("README.md");
    let start = readme
        .find("\n## Metrics")
        .expect("README.md has a `## Metrics` section");
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let names = metric_names(&section[..end]);
    assert!(
        names.len() >= 10,
        "too few metrics in README's table: {names:?}"
    );
    names
}

/// Names used in an asset that the README does not document (histogram series `_bucket`,
/// `_sum` and `_count` belong to their documented histogram).
fn undocumented(used: &BTreeSet<String>, documented: &BTreeSet<String>) -> Vec<String> {
    used.iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            !documented.contains(*name) && !documented.contains(base)
        })
        .cloned()
        .collect()
}

/// Parentheses, brackets and braces balance outside quoted strings.
fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in expr.chars() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !quoted
}

/// Checks a `histogram_quantile` expression aggregates its `_bucket` rate by `le`.
fn check_quantile(expr: &str, context: &str) {
    if expr.contains("histogram_quantile") {
        assert!(
            expr.contains("_bucket") && expr.contains("le") && expr.contains("rate("),
            "{context}: histogram_quantile without a rate of _bucket by le: {expr}"
        );
    }
}

/// Runs `promtool` with `args` when it is installed; `None` when it is not.
fn promtool(args: &[&std::ffi::OsStr]) -> Option<std::process::Output> {
    match std::process::Command::new("promtool").args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool not installed: PromQL not checked by Prometheus' parser");
            None
        }
        Err(e) => panic!("running promtool: {e}"),
    }
}

fn assert_promtool_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "promtool {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Grafana dashboard: valid JSON with the usual top-level shape, a `${DS_PROMETHEUS}`
/// datasource variable plus `job` and `instance` variables, and a panel for every area the
/// issue lists, each querying only documented metrics with balanced PromQL.
#[test]
fn grafana_dashboard_is_valid_and_uses_documented_metrics() {
    let text = read("deploy/grafana/gripmesh-dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("templating variable {name} missing"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["job", "instance"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name} variable type");
        assert_eq!(
            v["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{name} variable datasource"
        );
    }

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = HashSet::new();
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(
            x + w <= 24 && grid["h"].as_u64().is_some(),
            "gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("panel title");
        titles.push(title.to_owned());
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?} datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("target expr");
            assert!(balanced(expr), "panel {title:?}: unbalanced PromQL {expr}");
            assert!(
                expr.contains("job=~\"$job\"") && expr.contains("instance=~\"$instance\""),
                "panel {title:?}: query ignores the job/instance variables: {expr}"
            );
            check_quantile(expr, title);
            assert!(target["refId"].as_str().is_some(), "panel {title:?}: refId");
            exprs.push(expr.to_owned());
        }
    }

    // The panel list, as the metrics each must query.
    let all = exprs.join("\n");
    for needed in [
        "gripmesh_edge_connections{",
        "gripmesh_edge_connections_opened_total",
        "gripmesh_edge_channels",
        "gripmesh_edge_subscriptions",
        "gripmesh_edge_messages_sent_total",
        "gripmesh_edge_messages_dropped_total",
        "gripmesh_edge_delivery_latency_seconds_bucket",
        "gripmesh_edge_origin_requests_total",
        "gripmesh_edge_origin_duration_seconds_bucket",
        "gripmesh_control_publish_items_total",
        "gripmesh_control_publish_rejected_total",
        "gripmesh_bus_connected",
        "gripmesh_bus_reconnects_total",
        "gripmesh_control_routes_version",
        "gripmesh_edge_routes_version",
        "gripmesh_authz_checks_total",
        "gripmesh_authz_gateway_duration_seconds_bucket",
        "gripmesh_authz_revocations_total",
        "gripmesh_connections_refused_total",
    ] {
        assert!(all.contains(needed), "no dashboard panel queries {needed}");
    }
    for (quantile, metric) in [
        ("0.5", "gripmesh_edge_delivery_latency_seconds_bucket"),
        ("0.99", "gripmesh_edge_delivery_latency_seconds_bucket"),
        ("0.99", "gripmesh_edge_origin_duration_seconds_bucket"),
        ("0.99", "gripmesh_authz_gateway_duration_seconds_bucket"),
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| e.contains(&format!("histogram_quantile({quantile},"))
                    && e.contains(metric)),
            "no p{quantile} panel over {metric}"
        );
    }
    for (label, metric) in [
        ("transport", "gripmesh_edge_connections{"),
        ("transport", "gripmesh_edge_messages_sent_total"),
        ("reason", "gripmesh_edge_messages_dropped_total"),
        ("status_class", "gripmesh_edge_origin_requests_total"),
        ("api", "gripmesh_control_publish_items_total"),
        ("reason", "gripmesh_control_publish_rejected_total"),
        ("decision, cache", "gripmesh_authz_checks_total"),
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| e.contains(metric) && e.contains(&format!("by ({label})"))),
            "no panel breaks {metric} down by {label}"
        );
    }

    // Prometheus' own parser, when installed: every query as a recording rule, with the
    // dashboard variables filled in.
    let dir = testkit::TempDir::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: |\n          {expr}\n"
        ));
    }
    let file = dir.write("dashboard-queries.yaml", &rules);
    if let Some(out) = promtool(&["check".as_ref(), "rules".as_ref(), file.as_os_str()]) {
        assert_promtool_ok(&out, "check rules (dashboard queries)");
    }

    let used = metric_names(&text);
    let missing = undocumented(&used, &documented_metrics());
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics missing from README.md's metrics table: {missing:?}"
    );
}

/// One alerting rule as read from the rules file.
#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    has_for: bool,
    severity: Option<String>,
    summary: bool,
    description: bool,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// A structural reading of a Prometheus rules file (`groups:` → `- name:` + `rules:` →
/// `- alert:` with `expr`, `for`, `labels.severity`, `annotations.summary/description`);
/// block scalars (`|`, `>-`) are gathered by indentation. Panics on anything outside that
/// shape: tabs, a missing `groups:` root, a group without `rules:`, a key outside a rule.
fn parse_rules(text: &str) -> (Vec<String>, Vec<Rule>) {
    let mut groups = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut root_seen = false;
    let mut group_has_rules = true;
    let mut section = "";
    while let Some((n, line)) = lines.next() {
        let n = n + 1;
        assert!(!line.contains('\t'), "line {n}: tab character");
        assert!(!line.ends_with(' '), "line {n}: trailing space");
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = indent(line);
        if !root_seen {
            assert_eq!(trimmed, "groups:", "line {n}: the root must be `groups:`");
            assert_eq!(depth, 0, "line {n}: `groups:` indented");
            root_seen = true;
            continue;
        }
        assert!(depth > 0, "line {n}: a second root key {trimmed:?}");
        let item = trimmed.strip_prefix("- ");
        let body = item.unwrap_or(trimmed);
        let Some((key, value)) = body.split_once(':') else {
            panic!("line {n}: not a `key: value` line: {trimmed:?}");
        };
        let (key, value) = (key.trim(), value.trim());
        // A block scalar: the following more-indented lines are its value.
        let mut value = value.to_owned();
        if value == "|" || value == ">-" || value == ">" || value == "|-" {
            let key_depth = depth + if item.is_some() { 2 } else { 0 };
            let mut block = Vec::new();
            while let Some((_, next)) = lines.peek() {
                if next.trim().is_empty() || indent(next) > key_depth {
                    block.push(next.trim().to_owned());
                    lines.next();
                } else {
                    break;
                }
            }
            value = block.join("\n").trim().to_owned();
            assert!(!value.is_empty(), "line {n}: empty block for {key}");
        } else if value.starts_with('"') {
            assert!(
                value.len() >= 2 && value.ends_with('"'),
                "line {n}: unterminated string"
            );
        }
        match (item.is_some(), key) {
            (true, "name") => {
                assert!(group_has_rules, "group before line {n} has no rules");
                groups.push(value);
                group_has_rules = false;
                section = "group";
            }
            (false, "rules") => {
                assert!(section == "group", "line {n}: `rules:` outside a group");
                group_has_rules = true;
                section = "rules";
            }
            (true, "alert") => {
                assert!(group_has_rules, "line {n}: alert outside `rules:`");
                rules.push(Rule {
                    alert: value,
                    ..Rule::default()
                });
                section = "rule";
            }
            (false, _) => {
                let rule = rules
                    .last_mut()
                    .unwrap_or_else(|| panic!("line {n}: {key} outside a rule"));
                match key {
                    "expr" => rule.expr = value,
                    "for" => {
                        assert!(
                            value.ends_with('m') || value.ends_with('s') || value.ends_with('h'),
                            "line {n}: duration {value:?}"
                        );
                        rule.has_for = true;
                    }
                    "labels" | "annotations" => {
                        section = if key == "labels" {
                            "labels"
                        } else {
                            "annotations"
                        }
                    }
                    "severity" if section == "labels" => {
                        rule.severity = Some(value.trim_matches('"').to_owned())
                    }
                    "summary" if section == "annotations" => rule.summary = !value.is_empty(),
                    "description" if section == "annotations" => {
                        rule.description = !value.is_empty()
                    }
                    other if section == "labels" || section == "annotations" => {
                        assert!(!other.is_empty(), "line {n}: empty key");
                    }
                    other => panic!("line {n}: unexpected key {other:?} in a rule"),
                }
            }
            (true, other) => panic!("line {n}: unexpected list item {other:?}"),
        }
    }
    assert!(root_seen, "no `groups:` root");
    assert!(group_has_rules, "the last group has no rules");
    (groups, rules)
}

/// The alert rules: a `groups:` rules file with the alerts, each with an expression
/// over documented metrics, a severity label and summary/description annotations. When the
/// deploy tooling's PyYAML is present (`target/deploy-venv`), the file must also load as YAML
/// and agree with this reading.
#[test]
fn prometheus_alert_rules_are_well_formed_and_use_documented_metrics() {
    let text = read("deploy/prometheus/gripmesh-alerts.yaml");
    let (groups, rules) = parse_rules(&text);
    assert!(!groups.is_empty());
    let unique: HashSet<&str> = groups.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        groups.len(),
        "duplicate group names {groups:?}"
    );
    let names: HashSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "duplicate alert names");
    for rule in &rules {
        let a = &rule.alert;
        assert!(
            a.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && a.chars().all(|c| c.is_ascii_alphanumeric()),
            "alert name {a:?}"
        );
        assert!(!rule.expr.is_empty(), "{a}: no expr");
        assert!(balanced(&rule.expr), "{a}: unbalanced PromQL {}", rule.expr);
        check_quantile(&rule.expr, a);
        assert!(
            matches!(
                rule.severity.as_deref(),
                Some("critical" | "warning" | "info")
            ),
            "{a}: severity {:?}",
            rule.severity
        );
        assert!(
            rule.summary && rule.description,
            "{a}: summary and description"
        );
    }

    // The alerts, recognised by what they watch.
    let find = |what: &str, pred: &dyn Fn(&Rule) -> bool| {
        rules
            .iter()
            .find(|r| pred(r))
            .unwrap_or_else(|| panic!("no alert for {what}"))
    };
    let bus = find("bus disconnected", &|r| {
        r.expr.contains("gripmesh_bus_connected") && !r.expr.contains("up{")
    });
    assert!(bus.has_for, "bus disconnected needs a `for`");
    assert!(bus.expr.contains("== 0"), "{}", bus.expr);
    find("edge not ready", &|r| {
        r.expr.contains("up{") && r.expr.contains("gripmesh_bus_connected")
    });
    find("slow-consumer drops", &|r| {
        r.expr.contains("gripmesh_edge_messages_dropped_total")
            && r.expr.contains("reason=\"slow_consumer\"")
    });
    let latency = find("delivery latency p99", &|r| {
        r.expr
            .contains("gripmesh_edge_delivery_latency_seconds_bucket")
    });
    assert!(
        latency.expr.contains("histogram_quantile(0.99") && latency.expr.ends_with("> 1"),
        "{}",
        latency.expr
    );
    let origin = find("origin errors", &|r| {
        r.expr.contains("gripmesh_edge_origin_requests_total")
    });
    assert!(
        origin.expr.contains("5xx")
            && origin.expr.contains("error")
            && origin.expr.contains("0.05"),
        "{}",
        origin.expr
    );
    find("publish rejections", &|r| {
        r.expr.contains("gripmesh_control_publish_rejected_total")
    });
    find("authz gateway errors", &|r| {
        r.expr.contains("gripmesh_authz_checks_total") && r.expr.contains("decision=\"error\"")
    });
    find("route reload errors", &|r| {
        r.expr.contains("gripmesh_edge_routes_reload_errors_total")
    });

    // Prometheus' own checks, when installed: the rules load, and their unit tests
    // (deploy/prometheus/gripmesh-alerts.test.yaml) see each alert fire on matching series.
    let rules_file = workspace_root().join("deploy/prometheus/gripmesh-alerts.yaml");
    let tests_file = workspace_root().join("deploy/prometheus/gripmesh-alerts.test.yaml");
    assert!(tests_file.exists(), "the alert rules have unit tests");
    if let Some(out) = promtool(&["check".as_ref(), "rules".as_ref(), rules_file.as_os_str()]) {
        assert_promtool_ok(&out, "check rules");
        let out = promtool(&["test".as_ref(), "rules".as_ref(), tests_file.as_os_str()])
            .expect("promtool ran a moment ago");
        assert_promtool_ok(&out, "test rules");
    }

    // A real YAML parser, when the deploy checks' virtualenv provides one.
    let python = workspace_root().join("target/deploy-venv/bin/python3");
    if python.exists() {
        let script = "import sys, yaml, json\n\
            d = yaml.safe_load(open(sys.argv[1]))\n\
            print(json.dumps([r['alert'] for g in d['groups'] for r in g['rules']]))\n";
        let out = std::process::Command::new(&python)
            .args(["-c", script])
            .arg(workspace_root().join("deploy/prometheus/gripmesh-alerts.yaml"))
            .output()
            .expect("running python3");
        if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") {
            eprintln!("PyYAML not installed; structural check only");
        } else {
            assert!(
                out.status.success(),
                "the rules file does not load as YAML: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let parsed: Vec<String> =
                serde_json::from_slice(&out.stdout).expect("alert names as JSON");
            let ours: Vec<String> = rules.iter().map(|r| r.alert.clone()).collect();
            assert_eq!(parsed, ours, "YAML parser and structural reading disagree");
        }
    }

    let used: BTreeSet<String> = rules.iter().flat_map(|r| metric_names(&r.expr)).collect();
    let missing = undocumented(&used, &documented_metrics());
    assert!(
        missing.is_empty(),
        "the alert rules use metrics missing from README.md's metrics table: {missing:?}"
    );
}
