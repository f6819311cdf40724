//! The Grafana dashboard under deploy/grafana/: that it imports into any Grafana with a
//! Prometheus data source picked at import (a `${datasource}` variable, no data source baked
//! in), and its queries, with Grafana's variables filled in, for the other modules: docs.rs ties
//! their metric names to the registry, prometheus.rs runs them through promtool and a real
//! Prometheus.
//!
//! Adding a panel: copy one in the JSON, give it the next free `id`, a `gridPos` below the
//! others, a title, a description and its targets (`refId` A, B, ...), each with the data
//! source `{"type": "prometheus", "uid": "${datasource}"}` and `{job=~"$job"}` in its selectors.

use serde_json::Value;
use std::collections::BTreeSet;

use crate::common::read;

pub(crate) const DASHBOARD_JSON: &str = "deploy/grafana/invite-sync.json";

/// The data source every panel and target names: the dashboard's variable.
const DATASOURCE_UID: &str = "${datasource}";

/// Grafana's built-in interval variables a query may use.
const INTERVAL_VARIABLES: [&str; 3] = ["__rate_interval", "__interval", "__range"];

/// The dashboard's JSON text.
pub(crate) fn text() -> String {
    read(DASHBOARD_JSON)
}

fn dashboard() -> Value {
    serde_json::from_str(&text()).unwrap_or_else(|e| panic!("{DASHBOARD_JSON} is not JSON: {e}"))
}

/// One PromQL query of a panel.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub panel_id: u64,
    pub panel: String,
    pub ref_id: String,
    /// As written in the dashboard, Grafana variables included.
    pub expr: String,
}

impl Query {
    /// Where it is, for messages: `panel 3 "Backlog" B`.
    pub(crate) fn place(&self) -> String {
        format!("panel {} {:?} {}", self.panel_id, self.panel, self.ref_id)
    }

    /// The query as Prometheus gets it: `$job` (or `${job}`) becomes `job`, and Grafana's
    /// interval variables become `interval`.
    /// An error names a variable left over that the tests do not know.
    pub(crate) fn resolved(&self, job: &str, interval: &str) -> Result<String, String> {
        let mut expr = self.expr.clone();
        for name in INTERVAL_VARIABLES {
            expr = expr
                .replace(&format!("${{{name}}}"), interval)
                .replace(&format!("${name}"), interval);
        }
        expr = expr.replace("${job}", job).replace("$job", job);
        if expr.contains('$') {
            return Err(format!(
                "{}: a variable the tests do not fill in is left in {expr:?}",
                self.place()
            ));
        }
        Ok(expr)
    }
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{DASHBOARD_JSON} has no list of panels"))
    {
        all.push(panel.clone());
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner.iter().cloned());
        }
    }
    all
}

/// Every query of every panel.
pub(crate) fn queries() -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in panels(&dashboard()) {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        for target in targets {
            queries.push(Query {
                panel_id: panel["id"].as_u64().unwrap_or_default(),
                panel: panel["title"].as_str().unwrap_or_default().to_owned(),
                ref_id: target["refId"].as_str().unwrap_or_default().to_owned(),
                expr: target["expr"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    assert!(queries.len() > 10, "too few queries read: {queries:?}");
    queries
}

/// The template variables' queries (`label_values(...)`), which also name metrics.
pub(crate) fn variable_queries() -> Vec<String> {
    dashboard()["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|variable| variable["definition"].as_str().map(str::to_owned))
        .collect()
}

fn datasource_problem(what: &str, datasource: &Value) -> Option<String> {
    let good = datasource["type"] == "prometheus" && datasource["uid"] == DATASOURCE_UID;
    (!good).then(|| {
        format!("{what}: the data source is {datasource}, not the ${{datasource}} variable")
    })
}

#[test]
fn the_dashboard_imports_with_a_prometheus_data_source_variable_and_well_formed_panels() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for key in ["title", "uid"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {key}"));
        }
    }
    if !dashboard["schemaVersion"].is_u64() {
        problems.push("no schemaVersion".to_owned());
    }
    // An export "for sharing externally" asks for inputs at import and names a data source of
    // the exporting Grafana; this dashboard uses a variable instead.
    if dashboard.get("__inputs").is_some() || text().contains("${DS_") {
        problems.push("it names a data source input (${DS_...}): use ${datasource}".to_owned());
    }

    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let datasource = variables
        .iter()
        .find(|variable| variable["name"] == "datasource");
    match datasource {
        Some(variable) if variable["type"] == "datasource" && variable["query"] == "prometheus" => {
        }
        other => problems.push(format!(
            "no variable `datasource` of type datasource for prometheus: {other:?}"
        )),
    }
    for variable in &variables {
        if variable["type"] == "query" {
            let name = variable["name"].as_str().unwrap_or_default();
            problems.extend(datasource_problem(
                &format!("variable {name}"),
                &variable["datasource"],
            ));
        }
    }

    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64();
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let here = format!("panel {id:?} {title:?}");
        match id {
            Some(id) if ids.insert(id) => {}
            _ => problems.push(format!("{here}: no id, or one another panel has")),
        }
        if title.is_empty() {
            problems.push(format!("{here}: no title"));
        }
        let grid = &panel["gridPos"];
        let fits = ["x", "y", "w", "h"].iter().all(|k| grid[k].is_u64())
            && grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(99) <= 24;
        if !fits {
            problems.push(format!(
                "{here}: gridPos {grid} is not within the 24 columns"
            ));
        }
        if panel["type"] == "row" {
            continue;
        }
        if !titles.insert(title.clone()) {
            problems.push(format!("{here}: another panel has this title"));
        }
        if panel["description"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{here}: no description"));
        }
        problems.extend(datasource_problem(&here, &panel["datasource"]));
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{here}: no query"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in &targets {
            let ref_id = target["refId"].as_str().unwrap_or_default().to_owned();
            if ref_id.is_empty() || !ref_ids.insert(ref_id.clone()) {
                problems.push(format!("{here}: a target has no refId, or a repeated one"));
            }
            problems.extend(datasource_problem(
                &format!("{here} {ref_id}"),
                &target["datasource"],
            ));
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.trim().is_empty() {
                problems.push(format!("{here} {ref_id}: no expr"));
            } else if expr.contains("invite_sync_") && !expr.contains("job=~\"$job\"") {
                problems.push(format!(
                    "{here} {ref_id}: {expr:?} does not select job=~\"$job\""
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{DASHBOARD_JSON}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn grafana_variables_are_filled_in_and_an_unknown_one_is_caught() {
    let query = Query {
        panel_id: 1,
        panel: "p".to_owned(),
        ref_id: "A".to_owned(),
        expr: r#"rate(x{job=~"$job"}[$__rate_interval]) + y{job=~"${job}"}"#.to_owned(),
    };
    assert_eq!(
        query.resolved(".+", "1m").as_deref(),
        Ok(r#"rate(x{job=~".+"}[1m]) + y{job=~".+"}"#)
    );
    let unknown = Query {
        expr: r#"x{instance=~"$instance"}"#.to_owned(),
        ..query
    };
    let error = unknown
        .resolved(".+", "1m")
        .expect_err("an unknown variable is caught");
    assert!(error.contains("$instance"), "{error}");
}

/// The families of the membership roster's organizations: each is on the Organizations row,
/// and no query keeps a label that names one organization (their number is unbounded: the
/// detail lives in `status`, `plan` and the API).
#[test]
fn the_organizations_row_shows_every_membership_metric_and_no_query_keeps_an_organization() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    let row_y = all
        .iter()
        .find(|p| p["type"] == "row" && p["title"] == "Organizations")
        .and_then(|row| row["gridPos"]["y"].as_u64())
        .unwrap_or_else(|| panic!("{DASHBOARD_JSON} has no Organizations row"));
    let below_row: Vec<&Value> = all
        .iter()
        .filter(|p| p["type"] != "row" && p["gridPos"]["y"].as_u64() > Some(row_y))
        .collect();
    let exprs_below: Vec<String> = below_row
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let mut problems = Vec::new();
    for family in [
        "invite_sync_membership_items",
        "invite_sync_membership_waiting",
        "invite_sync_membership_actions_total",
        "invite_sync_membership_backlog_invitations",
        "invite_sync_membership_held_removals",
        "invite_sync_organizations{",
        "invite_sync_organizations_full",
        "invite_sync_organizations_emptied_held",
    ] {
        if !exprs_below.iter().any(|e| e.contains(family)) {
            problems.push(format!(
                "no panel of the Organizations row queries {family}"
            ));
        }
    }
    for query in queries() {
        let expr = query.expr.to_lowercase();
        if expr.contains("organization_id") || expr.contains("by (organization") {
            problems.push(format!("{}: keeps an organization label", query.place()));
        }
    }
    // Nor does the process export one.
    let exposition = invite_sync::metrics::metrics().encode();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        if line.contains("organization=") || line.contains("organization_id=") {
            problems.push(format!(
                "the exposition has a label per organization: {line}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{DASHBOARD_JSON}:\n  {}",
        problems.join("\n  ")
    );
}
