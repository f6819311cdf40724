//! Prometheus metrics: one registry for the process, served at `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: String,
}

/// The categories of the membership plan (`membership_items`), as the plan names them.
pub const MEMBERSHIP_CATEGORIES: &[&str] = &[
    "revoke",
    "remove_member",
    "replace",
    "invite",
    "reinvite",
    "add_member",
    "change_role",
    "reported",
    "waiting",
    "invalid",
    "in_sync",
];

/// Why people of the membership roster wait (`membership_waiting`).
pub const MEMBERSHIP_WAIT_REASONS: &[&str] = &[
    "full",
    "not_before",
    "unsettled",
    "refused",
    "unavailable",
    "instance_first",
];

/// What the membership pass counts in `membership_actions`, as (kind, outcome).
pub const MEMBERSHIP_ACTIONS: &[(&str, &str)] = &[
    ("invite", "done"),
    ("add_member", "done"),
    ("change_role", "done"),
    ("revoke", "done"),
    ("remove_member", "done"),
    ("create", "adopted"),
    ("create", "failed"),
];

/// Every metric invite-sync exports.
pub struct Metrics {
    registry: Registry,
    pub cycles: Family<OutcomeLabel, Counter>,
    pub cycle_duration: Histogram,
    pub actions: Family<ActionLabels, Counter>,
    pub drift: Family<CategoryLabel, Gauge>,
    pub desired: Gauge,
    pub owned_pending: Gauge,
    pub backlog: Gauge,
    pub backlog_eta: Gauge,
    pub awaiting_user_check: Gauge,
    pub budget_left: Family<EndpointLabel, Gauge>,
    pub clerk_calls: Family<CallLabels, Counter>,
    pub clerk_call_duration: Family<OperationLabel, Histogram>,
    pub invitation_wait: Histogram,
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    pub held_revocations: Gauge,
    pub last_success: Gauge<f64, AtomicU64>,
    pub lock_held: Gauge,
    pub clerk_blocked_until: Family<OperationLabel, Gauge<f64, AtomicU64>>,
    pub unsettled_creates: Gauge,
    pub unsettled_settle_at: Gauge<f64, AtomicU64>,
    pub event_deliveries: Family<OutcomeLabel, Counter>,
    pub event_dead_letters: Gauge,
    pub membership_items: Family<CategoryLabel, Gauge>,
    pub membership_waiting: Family<ReasonLabel, Gauge>,
    pub membership_actions: Family<ActionLabels, Counter>,
    pub membership_backlog: Gauge,
    pub membership_held: Gauge,
    pub organizations: Gauge,
    pub organizations_full: Gauge,
    pub organizations_emptied_held: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("invite_sync");
        let metrics = Metrics {
            cycles: Family::default(),
            cycle_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            actions: Family::default(),
            drift: Family::default(),
            desired: Gauge::default(),
            owned_pending: Gauge::default(),
            backlog: Gauge::default(),
            backlog_eta: Gauge::default(),
            awaiting_user_check: Gauge::default(),
            budget_left: Family::default(),
            clerk_calls: Family::default(),
            clerk_call_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 12))
            }),
            // 0.1 s to about five days: a notified change, then a backlog's wait for budget.
            invitation_wait: Histogram::new(exponential_buckets(0.1, 4.0, 12)),
            webhook_deliveries: Family::default(),
            held_revocations: Gauge::default(),
            last_success: Gauge::default(),
            lock_held: Gauge::default(),
            clerk_blocked_until: Family::default(),
            unsettled_creates: Gauge::default(),
            unsettled_settle_at: Gauge::default(),
            event_deliveries: Family::default(),
            event_dead_letters: Gauge::default(),
            membership_items: Family::default(),
            membership_waiting: Family::default(),
            membership_actions: Family::default(),
            membership_backlog: Gauge::default(),
            membership_held: Gauge::default(),
            organizations: Gauge::default(),
            organizations_full: Gauge::default(),
            organizations_emptied_held: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cycles",
            "Reconcile cycles by outcome (succeeded, partial, held, failed, interrupted)",
            metrics.cycles.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "Duration of reconcile cycles",
            metrics.cycle_duration.clone(),
        );
        registry.register(
            "actions",
            "What was done in Clerk per address, by kind (create, revoke, settle, user_check) and outcome",
            metrics.actions.clone(),
        );
        registry.register(
            "drift_items",
            "Items of the last plan by category",
            metrics.drift.clone(),
        );
        registry.register(
            "desired_invitees",
            "Rows in the roster",
            metrics.desired.clone(),
        );
        registry.register(
            "owned_pending_invitations",
            "Pending invitations invite-sync created",
            metrics.owned_pending.clone(),
        );
        registry.register(
            "backlog_invitations",
            "Creates waiting for budget",
            metrics.backlog.clone(),
        );
        registry.register(
            "backlog_eta_seconds",
            "Time until the backlog drains at the budget's pace",
            metrics.backlog_eta.clone(),
        );
        registry.register(
            "awaiting_user_check",
            "Queued people not yet known not to be Clerk users: each is looked up before a create",
            metrics.awaiting_user_check.clone(),
        );
        registry.register(
            "budget_left_calls",
            "Calls left in the current hourly window, per create endpoint (create_bulk_invitations, create_invitation, create_organization_invitations_bulk, create_organization_invitation)",
            metrics.budget_left.clone(),
        );
        registry.register(
            "clerk_calls",
            "Calls to Clerk by operation and HTTP status (or transport error)",
            metrics.clerk_calls.clone(),
        );
        registry.register(
            "clerk_call_duration_seconds",
            "Latency of calls to Clerk by operation",
            metrics.clerk_call_duration.clone(),
        );
        registry.register(
            "invitation_wait_seconds",
            "Time from a roster row being due (written, or its not_before) to its invitation being created",
            metrics.invitation_wait.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by webhook (roster, clerk) and the HTTP status answered (2xx accepted, others refused)",
            metrics.webhook_deliveries.clone(),
        );
        registry.register(
            "held_revocations",
            "Revocations the guard holds for the target: those of its latest cycle, whichever replica ran it",
            metrics.held_revocations.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            metrics.last_success.clone(),
        );
        registry.register(
            "lock_held",
            "1 while this process runs a cycle under the target's lock",
            metrics.lock_held.clone(),
        );
        registry.register(
            "clerk_blocked_until_timestamp_seconds",
            "Unix time until which a 429 from Clerk blocks the operation (0: not blocked since start)",
            metrics.clerk_blocked_until.clone(),
        );
        registry.register(
            "unsettled_creates",
            "Creates whose outcome is unknown (after a crash or a lost answer), waiting to be looked up",
            metrics.unsettled_creates.clone(),
        );
        registry.register(
            "unsettled_settle_timestamp_seconds",
            "Unix time from which the oldest unsettled create can be looked up (0: none waits)",
            metrics.unsettled_settle_at.clone(),
        );
        registry.register(
            "membership_items",
            "Items of the last membership plan by category (revoke, remove_member, replace, invite, reinvite, add_member, change_role, reported, waiting, invalid, in_sync)",
            metrics.membership_items.clone(),
        );
        registry.register(
            "membership_waiting",
            "People of the last membership plan who wait, by reason (full, not_before, unsettled, refused, unavailable)",
            metrics.membership_waiting.clone(),
        );
        registry.register(
            "membership_actions",
            "What the membership pass did in Clerk, by kind (invite, add_member, change_role, revoke, remove_member, create) and outcome (done, adopted, failed)",
            metrics.membership_actions.clone(),
        );
        registry.register(
            "membership_backlog_invitations",
            "Organization invitations the last membership pass left for the organization budget",
            metrics.membership_backlog.clone(),
        );
        registry.register(
            "membership_held_removals",
            "Membership removals (organization invitations revoked, members removed) the guard holds",
            metrics.membership_held.clone(),
        );
        registry.register(
            "organizations",
            "Organizations the last membership pass looked at",
            metrics.organizations.clone(),
        );
        registry.register(
            "organizations_full",
            "Organizations with no room left (max_allowed_memberships reached by members and pending invitations) as last read",
            metrics.organizations_full.clone(),
        );
        registry.register(
            "organizations_emptied_held",
            "Organizations whose roster emptied while invite-sync holds invitations or memberships there: their removals are held",
            metrics.organizations_emptied_held.clone(),
        );
        registry.register(
            "event_deliveries",
            "Outbound event delivery attempts by outcome (delivered, failed, dead)",
            metrics.event_deliveries.clone(),
        );
        registry.register(
            "event_dead_letters",
            "Outbound event deliveries given up (dead letters) to the configured endpoints, waiting for `invite-sync events replay`",
            metrics.event_dead_letters.clone(),
        );
        for outcome in ["delivered", "failed", "dead"] {
            metrics
                .event_deliveries
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_owned(),
                })
                .inc_by(0);
        }
        // Series a dashboard or an alert reads from the start: present at zero before the
        // first cycle, so a rule sees 0 rather than nothing.
        for outcome in ["succeeded", "partial", "held", "failed", "interrupted"] {
            metrics
                .cycles
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_owned(),
                })
                .inc_by(0);
        }
        for webhook in ["roster", "clerk"] {
            metrics
                .webhook_deliveries
                .get_or_create(&WebhookLabels {
                    webhook: webhook.to_owned(),
                    status: "200".to_owned(),
                })
                .inc_by(0);
        }
        for endpoint in [
            "create_bulk_invitations",
            "create_invitation",
            "create_organization_invitations_bulk",
            "create_organization_invitation",
        ] {
            metrics
                .budget_left
                .get_or_create(&EndpointLabel {
                    endpoint: endpoint.to_owned(),
                })
                .set(0);
        }
        for operation in [
            "list_invitations",
            "list_users",
            "create_bulk_invitations",
            "create_invitation",
            "revoke_invitation",
            "create_organization_invitations_bulk",
            "create_organization_invitation",
        ] {
            metrics
                .clerk_blocked_until
                .get_or_create(&OperationLabel {
                    operation: operation.to_owned(),
                })
                .set(0.0);
        }
        for category in MEMBERSHIP_CATEGORIES {
            metrics
                .membership_items
                .get_or_create(&CategoryLabel {
                    category: (*category).to_owned(),
                })
                .set(0);
        }
        for reason in MEMBERSHIP_WAIT_REASONS {
            metrics
                .membership_waiting
                .get_or_create(&ReasonLabel {
                    reason: (*reason).to_owned(),
                })
                .set(0);
        }
        for (kind, outcome) in MEMBERSHIP_ACTIONS {
            metrics
                .membership_actions
                .get_or_create(&ActionLabels {
                    kind: (*kind).to_owned(),
                    outcome: (*outcome).to_owned(),
                })
                .inc_by(0);
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn clerk_call(&self, operation: &str, status: &str, took: Duration) {
        self.clerk_calls
            .get_or_create(&CallLabels {
                operation: operation.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.clerk_call_duration
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn webhook_delivery(&self, webhook: &str, status: u16) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn action(&self, kind: &str, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records that Clerk blocks `operation` until `until`; a later block wins.
    pub fn clerk_blocked(&self, operation: &str, until: chrono::DateTime<chrono::Utc>) {
        let gauge = self.clerk_blocked_until.get_or_create(&OperationLabel {
            operation: operation.to_owned(),
        });
        let until = until.timestamp_millis() as f64 / 1000.0;
        if until > gauge.get() {
            gauge.set(until);
        }
    }

    /// Counts `n` membership actions of `kind` with `outcome`.
    pub fn membership_action(&self, kind: &str, outcome: &str, n: usize) {
        self.membership_actions
            .get_or_create(&ActionLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Counts one outbound event delivery attempt with `outcome`.
    pub fn event_delivery(&self, outcome: &str) {
        self.event_deliveries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn gauge(gauge: &Gauge, value: usize) {
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}
