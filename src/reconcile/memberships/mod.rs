//! Organization memberships: the membership roster kept equal to Clerk's organizations.
//! The [`plan`] decides each (address, organization), the [`guard`] holds mass removals,
//! [`next_call`](mod@next_call) chooses each organization-invitation call under the
//! organization budget. A cycle runs the membership pass after the instance invitations:
//! settle creates of unknown outcome, read (the roster, the ledger, each organization once,
//! its memberships and pending invitations, the roles, the users), plan, guard, execute.

mod execute;
pub mod guard;
pub mod next_call;
mod observe;
pub mod overview;
pub mod plan;
pub mod report;
mod settle;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clerk::budget;
use crate::clerk::{ClerkClient, ClientError, OrganizationRefusal};
use crate::config::Settings;
use crate::reconcile::execute::Stop;
use crate::reconcile::Reconciler;
use crate::store::lock::LeaderLock;
use crate::telemetry::Chain;
pub use report::MembershipReport;

/// What the membership pass obeys, taken from the settings once.
#[derive(Debug, Clone)]
pub struct Config {
    /// `source.memberships_relation`.
    pub relation: String,
    pub policy: plan::Policy,
    /// The organization invitations' hourly budget, across every organization.
    pub limits: budget::Limits,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Config {
        let organizations = &settings.organizations;
        Config {
            relation: settings.source.memberships_relation.clone(),
            policy: plan::Policy {
                default_role: organizations.default_role.clone(),
                existing_users: organizations.existing_users,
                remove_members: organizations.remove_members,
            },
            limits: settings.clerk.organization_limits(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relation: "desired_memberships".to_owned(),
            policy: plan::Policy::default(),
            limits: budget::Limits::organizations(),
        }
    }
}

/// One membership pass under the cycle's lock.
pub(crate) struct Pass<'a> {
    pub(crate) reconciler: &'a Reconciler,
    pub(crate) clerk: &'a ClerkClient,
    pub(crate) lock: &'a mut LeaderLock,
    pub(crate) shutdown: &'a CancellationToken,
    pub(crate) run_id: Uuid,
    pub(crate) dry_run: bool,
    /// What is left of `sync --allow-revocations N` once the instance guard took its share.
    pub(crate) allow: usize,
    pub(crate) report: MembershipReport,
}

/// Runs the membership pass of a cycle: what it did, and why it stopped if it did. `allow`
/// is what is left of the request's `--allow-revocations N` after the instance pass: N is
/// one allowance for the whole cycle, instance revocations first.
pub async fn run(
    reconciler: &Reconciler,
    allow: usize,
    dry_run: bool,
    run_id: Uuid,
    lock: &mut LeaderLock,
    shutdown: &CancellationToken,
) -> MembershipReport {
    let mut pass = Pass {
        reconciler,
        clerk: &reconciler.clerk,
        lock,
        shutdown,
        run_id,
        dry_run,
        allow,
        report: MembershipReport::default(),
    };
    if let Err(stop) = pass.steps().await {
        tracing::warn!(error.message = %stop, error.cause_chain = %Chain(&stop), "the membership pass stopped");
        pass.report.stopped = Some(stop.to_string());
    }
    report::log_summary(&pass.report);
    pass.report
}

impl Pass<'_> {
    fn target(&self) -> &str {
        &self.reconciler.config.target
    }

    fn config(&self) -> &Config {
        &self.reconciler.config.memberships
    }

    /// How long the pass waits within the cycle for an invitation slot to free.
    fn linger(&self) -> Duration {
        (self.config().limits.window / 4).min(Duration::from_secs(30))
    }

    async fn checkpoint(&mut self) -> Result<(), Stop> {
        if self.shutdown.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        self.lock.ensure_held().await.map_err(Stop::LockLost)
    }

    async fn steps(&mut self) -> Result<(), Stop> {
        if !self.dry_run {
            self.settle().await?;
        }
        let Some(state) = self.observe().await? else {
            return Ok(());
        };
        let decision = state.decide(
            &self.config().policy,
            &self.reconciler.config.guard,
            self.allow,
        );
        self.report.planned(&decision.plan, &decision.verdict);
        let reporter = self.reconciler.config.reporter;
        report::log_drift(reporter, &decision.plan, self.dry_run);
        report::log_verdict(reporter, &decision.verdict, self.dry_run);
        if self.dry_run {
            self.report.backlog = decision
                .plan
                .items
                .iter()
                .filter(|i| i.sends_invitation())
                .count();
            return Ok(());
        }
        let executed = self.execute(decision, &state).await;
        let waiting = self.report.waiting.get("unsettled").copied().unwrap_or(0);
        if self.report.unsettled + waiting > 0 {
            let settle_after =
                chrono::Duration::from_std(self.reconciler.config.settle_after).unwrap_or_default();
            self.report.settles_at = Some(chrono::Utc::now() + settle_after);
        }
        executed
    }

    /// Notes an error the pass goes on after.
    fn note_error(&mut self, what: &str, error: &crate::clerk::ClientError) {
        let shown = self.reconciler.config.reporter.scrub(&error.to_string());
        tracing::warn!(what, error.message = %shown, "a Clerk call of the membership pass failed");
        self.report.errors.push(format!("{what}: {shown}"));
    }
}

/// Whether Clerk refused the credentials: the pass stops. A 403 for a full organization is
/// not that.
fn refused_credentials(error: &ClientError) -> bool {
    matches!(error, ClientError::InvalidKey(_))
        || (matches!(error.status(), Some(401 | 403))
            && error.organization_refusal() != Some(OrganizationRefusal::OrganizationFull))
}
