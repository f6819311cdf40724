//! A real Prometheus (Debian's `prometheus` package: `prometheus` and `promtool`) against the
//! shipped alert rules and dashboard: `promtool` parses every dashboard query, and a Prometheus
//! scraping `invite-sync run` sees the target up, has every series the dashboard queries,
//! evaluates every rule and dashboard query without error, and raises
//! `InviteSyncRevocationsHeld` once the roster is emptied with owned invitations pending.
//!
//! Where the binaries are missing the tests say so on stderr and pass; with CI=true they fail.
//! `scripts/test` installs the package when it is missing.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_port, people, repo_path, Harness, Proc, Scratch};
use crate::dashboard::{queries, Query};
use crate::docs::invite_sync_names_in;

const ALERTS_YAML: &str = "deploy/prometheus/alerts.yaml";
/// The scrape job; the dashboard's `$job`.
const JOB: &str = "invite-sync";
/// Scrape and rule evaluation interval: short, so the test is quick.
const INTERVAL: &str = "1s";
/// Grafana's `$__rate_interval` in the queries run here: a few scrapes.
const RATE_INTERVAL: &str = "10s";
/// How long Prometheus may take to do what a step waits for.
const DEADLINE: Duration = Duration::from_secs(30);

/// Prints to the test's stderr past the harness's capture, so a skip is seen even when the
/// test passes (nextest shows these tests' output: .config/nextest.toml).
fn say(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// The path of `tool` on PATH. Missing: `None` after saying the test is skipped, or a failure
/// when CI=true.
fn installed(tool: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let why = format!(
            "{tool} is not on PATH (Debian's prometheus package brings it; scripts/test installs it)"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {why}, and CI=true"
        );
        say(&format!("SKIPPED {test}: {why}"));
    }
    found
}

/// The dashboard's queries as recording rules, which `promtool check rules` parses.
fn dashboard_rules(queries: &[Query]) -> String {
    let rules: Vec<Value> = queries
        .iter()
        .map(|query| {
            let expr = query
                .resolved(".+", RATE_INTERVAL)
                .unwrap_or_else(|e| panic!("{e}"));
            serde_json::json!({
                "record": format!("dashboard:panel_{}:{}", query.panel_id, query.ref_id.to_lowercase()),
                "expr": expr,
            })
        })
        .collect();
    serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()
}

#[test]
fn every_dashboard_query_parses_with_promtool() {
    let test = "every_dashboard_query_parses_with_promtool";
    let Some(promtool) = installed("promtool", test) else {
        return;
    };
    let queries = queries();
    let scratch = Scratch::new("dashboard-rules");
    let rules = scratch.write("dashboard-rules.json", &dashboard_rules(&queries));
    let output = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("promtool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check rules refuses a dashboard query ({}):\n{printed}",
        output.status
    );
    // Every query was read as a rule: none was dropped on the way.
    let found = format!("SUCCESS: {} rules found", queries.len());
    assert!(printed.contains(&found), "expected {found:?}:\n{printed}");
    say(&format!(
        "{test}: promtool check rules over the dashboard's queries: {}",
        printed.trim().replace('\n', " / ")
    ));
}

/// Prometheus' HTTP API.
struct Api {
    base: String,
    client: reqwest::Client,
}

/// Starts a Prometheus of the test's own, its configuration and storage in `scratch`, on a
/// port of its own, scraping `scrape` as `JOB` and evaluating the shipped rules; waits until
/// it is ready.
async fn start_prometheus(binary: &Path, scratch: &Scratch, scrape: &str) -> (Proc, Api) {
    let rules = repo_path(ALERTS_YAML);
    let config = format!(
        "global:\n  scrape_interval: {INTERVAL}\n  scrape_timeout: {INTERVAL}\n  \
         evaluation_interval: {INTERVAL}\n\
         rule_files:\n  - {rules:?}\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      \
         - targets: [\"{scrape}\"]\n"
    );
    let config = scratch.write("prometheus.yml", &config);
    let storage = scratch.0.join("data");
    let listen = format!(
        "127.0.0.1:{}",
        free_port().expect("a loopback port is free")
    );
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", storage.display()),
        format!("--web.listen-address={listen}"),
        "--log.level=warn".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::start(
        format!("prometheus {}", args.join(" ")),
        Command::new(binary),
        &args,
    );
    let api = Api {
        base: format!("http://{listen}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client"),
    };
    let ready = format!("{}/-/ready", api.base);
    proc.wait_until("Prometheus to be ready", DEADLINE, || async {
        api.client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
    (proc, api)
}

impl Api {
    /// The `data` of a successful API answer; `None` when Prometheus cannot be reached or
    /// answers otherwise.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The API's whole answer, error or not.
    async fn api_answer(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus does not answer {path}: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("Prometheus' answer to {path} is not JSON: {e}"))
    }

    /// Whether the scrape target of `JOB` is up.
    async fn target_up(&self) -> bool {
        self.api("/api/v1/targets", &[])
            .await
            .and_then(|data| data["activeTargets"].as_array().cloned())
            .is_some_and(|targets| {
                targets
                    .iter()
                    .any(|t| t["labels"]["job"] == JOB && t["health"] == "up")
            })
    }

    /// The metric names Prometheus has series of.
    async fn names(&self) -> BTreeSet<String> {
        self.api("/api/v1/label/__name__/values", &[])
            .await
            .and_then(|data| data.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect()
    }

    /// Every alerting rule by name, with its state and health.
    async fn rules(&self) -> Vec<Value> {
        self.api("/api/v1/rules", &[("type", "alert")])
            .await
            .and_then(|data| data["groups"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The active (pending or firing) alerts named `name`.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        self.api("/api/v1/alerts", &[])
            .await
            .and_then(|data| data["alerts"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|alert| alert["labels"]["alertname"] == name)
            .collect()
    }
}

/// Polls `check` until it returns an empty list, or fails the test naming what is left.
async fn until_none_left<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let give_up = Instant::now() + DEADLINE;
    loop {
        let left = check().await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "after {DEADLINE:?}, {what}:\n  {}",
            left.join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_run_has_the_dashboard_series_and_raises_held_revocations() {
    let test = "a_real_prometheus_scrapes_run_has_the_dashboard_series_and_raises_held_revocations";
    let Some(binary) = installed("prometheus", test) else {
        return;
    };
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .map(|out| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines().next().unwrap_or_default().to_owned()
        })
        .unwrap_or_default();

    let listen = format!(
        "127.0.0.1:{}",
        free_port().expect("a loopback port is free")
    );
    let h = Harness::serving(&[
        ("INVITE_SYNC__SYNC__DEBOUNCE_SECONDS", "0.2"),
        ("INVITE_SYNC__HTTP__LISTEN", &listen),
    ])
    .await;
    let roster = people("scraped", 5);
    let emails: Vec<&str> = roster.iter().map(String::as_str).collect();
    h.add_people(&emails).await;
    // An organization's membership roster, invited in the same start cycle.
    h.sim
        .create_organization("Scraped", Some("scraped"), 0)
        .expect("the organization is created");
    let members = people("member", 5);
    for email in &members {
        sqlx::query("INSERT INTO desired_memberships (email, organization) VALUES ($1, 'scraped')")
            .bind(email)
            .execute(&h.db.pool)
            .await
            .expect("a membership roster row is inserted");
    }
    let pending_memberships = || {
        h.sim
            .organization_invitations()
            .into_iter()
            .filter(|i| i.status == invite_sync::clerk::InvitationStatus::Pending)
            .count()
    };

    // The service invites the roster in its start cycle and listens for roster changes.
    let mut service = Proc::start("invite-sync run".to_owned(), h.command(), &["run"]);
    service
        .wait_until("the start cycle's invitations", DEADLINE, || {
            std::future::ready(
                h.pending().len() == roster.len() && pending_memberships() == members.len(),
            )
        })
        .await;
    service
        .wait_until(
            "the service to listen for roster changes",
            DEADLINE,
            || async { h.listener_pid().await.is_some() },
        )
        .await;

    // Declared first, so it is removed after Prometheus stops.
    let scratch = Scratch::new("prometheus");
    let (mut prometheus_proc, prometheus) = start_prometheus(&binary, &scratch, &listen).await;
    prometheus_proc
        .wait_until("the invite-sync target to be up", DEADLINE, || {
            prometheus.target_up()
        })
        .await;

    // Every series the dashboard queries is in Prometheus.
    let queries = queries();
    let mut wanted: BTreeSet<String> = queries
        .iter()
        .flat_map(|query| invite_sync_names_in(&query.expr))
        .collect();
    wanted.insert("up".to_owned());
    until_none_left(
        "series the dashboard queries are missing from Prometheus",
        || async {
            let names = prometheus.names().await;
            wanted.difference(&names).cloned().collect()
        },
    )
    .await;

    // Every rule has been evaluated against the scraped series without error, and nothing is
    // pending: InviteSyncMetricsAbsent, pending from an evaluation before the first scrape,
    // is resolved by the next.
    until_none_left(
        "alerting rules not evaluated, failing, or active",
        || async {
            let rules = prometheus.rules().await;
            if rules.is_empty() {
                return vec!["no rule loaded".to_owned()];
            }
            rules
                .iter()
                .filter(|rule| rule["health"] != "ok" || rule["state"] != "inactive")
                .map(|rule| {
                    format!(
                        "{}: health {}, state {}, last error {}",
                        rule["name"], rule["health"], rule["state"], rule["lastError"]
                    )
                })
                .collect()
        },
    )
    .await;
    let rules = prometheus.rules().await;

    // Every dashboard query runs in Prometheus.
    let mut failed = Vec::new();
    for query in &queries {
        let expr = query
            .resolved(JOB, RATE_INTERVAL)
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = prometheus
            .api_answer("/api/v1/query", &[("query", &expr)])
            .await;
        if answer["status"] != "success" {
            failed.push(format!("{}: {expr}: {}", query.place(), answer["error"]));
        }
    }
    assert!(
        failed.is_empty(),
        "dashboard queries Prometheus refuses:\n  {}",
        failed.join("\n  ")
    );

    // The roster comes back empty: the guard holds every revocation, and Prometheus sees it.
    sqlx::query("DELETE FROM desired_invitees")
        .execute(&h.db.pool)
        .await
        .expect("the roster is emptied");
    let emptied = Instant::now();
    prometheus_proc
        .wait_until(
            "InviteSyncRevocationsHeld to be pending or firing",
            DEADLINE,
            || async {
                prometheus
                    .alerts("InviteSyncRevocationsHeld")
                    .await
                    .iter()
                    .any(|alert| alert["state"] == "pending" || alert["state"] == "firing")
            },
        )
        .await;
    let took = emptied.elapsed();
    let alerts = prometheus.alerts("InviteSyncRevocationsHeld").await;
    let alert = alerts.first().expect("the alert is active");
    assert_eq!(alert["labels"]["job"], JOB, "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert_eq!(
        summary,
        format!(
            "invite-sync is holding {} revocations for an operator",
            roster.len()
        ),
        "{alert:#}\n--- invite-sync's log ---\n{}",
        service.stderr()
    );
    // Held, not sent: every invitation is still pending.
    assert_eq!(h.pending().len(), roster.len());

    // The organization's roster empties too: its removals are held, and Prometheus sees it.
    sqlx::query("DELETE FROM desired_memberships")
        .execute(&h.db.pool)
        .await
        .expect("the membership roster is emptied");
    prometheus_proc
        .wait_until(
            "InviteSyncMembershipRemovalsHeld to be pending or firing",
            DEADLINE,
            || async {
                prometheus
                    .alerts("InviteSyncMembershipRemovalsHeld")
                    .await
                    .iter()
                    .any(|alert| alert["state"] == "pending" || alert["state"] == "firing")
            },
        )
        .await;
    let alerts = prometheus.alerts("InviteSyncMembershipRemovalsHeld").await;
    let alert = alerts.first().expect("the alert is active");
    assert_eq!(
        alert["annotations"]["summary"].as_str().unwrap_or_default(),
        format!(
            "invite-sync is holding {} membership removals for an operator",
            members.len()
        ),
        "{alert:#}\n--- invite-sync's log ---\n{}",
        service.stderr()
    );
    assert_eq!(pending_memberships(), members.len());

    say(&format!(
        "{test}: {version}; target {JOB} up, {} dashboard series present, {} alerting rules \
         evaluated with health ok, {} dashboard queries answered; InviteSyncRevocationsHeld \
         {} {:.1} s after the roster was emptied: {summary:?}",
        wanted.len(),
        rules.len(),
        queries.len(),
        alert["state"].as_str().unwrap_or_default(),
        took.as_secs_f64(),
    ));
}
