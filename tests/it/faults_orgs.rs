//! The fault suite for organization memberships: the built binary's `run` and `sync` killed
//! with SIGKILL at random moments over a membership backlog while the simulator injects
//! faults (5xx before and after applying, connections dropped after applying, hangs, 429s)
//! on every organization call, and then over role changes and leavers; and connections
//! dropped (and 5xx answers) after Clerk applied each kind of write: organization invitation
//! creates single and bulk, membership creates, role changes, revocations and removals.
//! Each ends with no duplicate invitation, nobody lost, no wrong removal, and the memberships
//! made by hand untouched; each prints its figures (`--no-capture`) and its seed
//! (`FAULT_SEED=<n>` replays one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use invite_sync::clerk::organization::{CreateOrganizationInvitation, Organization};
use invite_sync::clerk::sim::{Fault, FaultKind, Operation, SimOptions, SimStats};
use invite_sync::clerk::InvitationStatus;
use rand::rngs::StdRng;
use rand::Rng;

use crate::common::{people, wait_for, Harness, Proc};
use crate::faults::{inject_fault, kill_after_calls, overrides, seeded_rng, CONVERGE, HANG};

/// One person in one organization: (organization id, lower-cased address).
type Pair = (String, String);

/// The calls that change an organization in Clerk.
const WRITES: [Operation; 6] = [
    Operation::CreateOrganizationInvitation,
    Operation::CreateOrganizationInvitationsBulk,
    Operation::CreateOrganizationMembership,
    Operation::UpdateOrganizationMembership,
    Operation::RevokeOrganizationInvitation,
    Operation::DeleteOrganizationMembership,
];

/// The instance suite's settings, an organization budget that makes a backlog (4 single and
/// 2 bulk calls per two-second window), and leavers' memberships removed.
async fn harness(target: &str) -> Harness {
    let mut settings = overrides(target);
    settings.extend([
        (
            "INVITE_SYNC__CLERK__ORG_SINGLE_CREATE_PER_WINDOW",
            "4".to_owned(),
        ),
        (
            "INVITE_SYNC__CLERK__ORG_BULK_CREATE_PER_WINDOW",
            "2".to_owned(),
        ),
        (
            "INVITE_SYNC__ORGANIZATIONS__REMOVE_MEMBERS",
            "true".to_owned(),
        ),
    ]);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Harness::with(
        SimOptions {
            rate_limits: false,
            hang: HANG,
            ..SimOptions::default()
        },
        &settings,
    )
    .await
}

fn writes(stats: &SimStats) -> u64 {
    WRITES.iter().map(|operation| stats.total(*operation)).sum()
}

// ---------------------------------------------------------------------------
// The roster, and what Clerk should hold

/// A membership made by hand in the simulator's dashboard: never touched.
#[derive(Debug, Clone)]
struct ByHand {
    organization: String,
    user_id: String,
    membership_id: String,
    role: String,
}

/// The roster, what is allowed to happen, and what must stay.
#[derive(Debug, Default)]
struct World {
    /// Each desired pair's role.
    desired: BTreeMap<Pair, String>,
    /// How the roster names each pair's organization (a slug or an id).
    names: BTreeMap<Pair, String>,
    /// Pairs taken off the roster.
    removed: BTreeSet<Pair>,
    /// Invitations each pair may have had made in all (more is a duplicate).
    allowed: HashMap<Pair, usize>,
    /// Pairs whose invitations may be revoked: leavers, and a pending role change.
    may_revoke: BTreeSet<Pair>,
    /// Memberships that must keep their id (no delete and create again).
    keep_members: BTreeMap<Pair, String>,
    by_hand: Vec<ByHand>,
    /// Organization invitations made by hand for addresses off the roster.
    foreign: Vec<String>,
    /// People added during a storm so far.
    arrivals: usize,
}

impl World {
    async fn add(
        &mut self,
        h: &Harness,
        organization: &Organization,
        by: &str,
        email: &str,
        role: &str,
    ) {
        sqlx::query(
            "INSERT INTO desired_memberships (email, organization, role) VALUES ($1, $2, $3)",
        )
        .bind(email)
        .bind(by)
        .bind(role)
        .execute(&h.db.pool)
        .await
        .expect("a membership roster row is inserted");
        let pair = (organization.id.clone(), email.to_lowercase());
        self.desired.insert(pair.clone(), role.to_owned());
        self.names.insert(pair.clone(), by.to_owned());
        self.allowed.insert(pair, 1);
    }

    async fn set_role(&mut self, h: &Harness, pair: &Pair, role: &str, pending: bool) {
        sqlx::query(
            "UPDATE desired_memberships SET role = $3 WHERE lower(btrim(email)) = $1 AND btrim(organization) = $2",
        )
        .bind(&pair.1)
        .bind(&self.names[pair])
        .bind(role)
        .execute(&h.db.pool)
        .await
        .expect("a membership roster row is updated");
        self.desired.insert(pair.clone(), role.to_owned());
        if pending {
            // Revoked, and sent again with the new role.
            *self.allowed.entry(pair.clone()).or_default() += 1;
            self.may_revoke.insert(pair.clone());
        }
    }

    async fn remove(&mut self, h: &Harness, pair: &Pair) {
        sqlx::query(
            "DELETE FROM desired_memberships WHERE lower(btrim(email)) = $1 AND btrim(organization) = $2",
        )
        .bind(&pair.1)
        .bind(&self.names[pair])
        .execute(&h.db.pool)
        .await
        .expect("a membership roster row is deleted");
        self.desired.remove(pair);
        self.removed.insert(pair.clone());
        self.may_revoke.insert(pair.clone());
        self.keep_members.remove(pair);
    }

    /// A hand-made admin in each organization (so no role change or removal of the roster's
    /// ever hits Clerk's last-admin refusal), a hand-made member managed by Directory Sync,
    /// and two hand-made invitations.
    async fn make_by_hand(&mut self, h: &Harness, organizations: &[&Organization]) {
        for (n, organization) in organizations.iter().enumerate() {
            let email = format!("byhand-admin{n}@example.com");
            let membership = h
                .sim
                .add_membership(&organization.id, &email, "org:admin", false)
                .expect("a membership is made by hand");
            self.by_hand.push(ByHand {
                organization: organization.id.clone(),
                user_id: membership.user_id().unwrap_or_default().to_owned(),
                membership_id: membership.id.clone(),
                role: membership.role.clone(),
            });
        }
        let scim = h
            .sim
            .add_membership(
                &organizations[0].id,
                "byhand-scim@example.com",
                "org:member",
                true,
            )
            .expect("a Directory Sync membership is made");
        self.by_hand.push(ByHand {
            organization: organizations[0].id.clone(),
            user_id: scim.user_id().unwrap_or_default().to_owned(),
            membership_id: scim.id.clone(),
            role: scim.role.clone(),
        });
        for (n, organization) in organizations.iter().take(2).enumerate() {
            let invitation = h
                .reconciler
                .clerk
                .create_organization_invitation(
                    &organization.id,
                    &CreateOrganizationInvitation::new(
                        format!("byhand-invited{n}@example.com"),
                        "org:member",
                    ),
                )
                .await
                .expect("an organization invitation is made by hand");
            self.foreign.push(invitation.id);
        }
    }

    /// What the simulator holds, against the roster.
    fn outcome(&self, h: &Harness) -> Outcome {
        let invitations = h.sim.organization_invitations();
        let memberships = h.sim.memberships();
        let mut made: HashMap<Pair, usize> = HashMap::new();
        let mut pending: HashMap<Pair, Vec<(String, String)>> = HashMap::new();
        let mut revoked: BTreeSet<Pair> = BTreeSet::new();
        for invitation in &invitations {
            let pair = (
                invitation.organization_id.clone(),
                invitation.email_address.to_lowercase(),
            );
            *made.entry(pair.clone()).or_default() += 1;
            match invitation.status {
                InvitationStatus::Pending => pending
                    .entry(pair)
                    .or_default()
                    .push((invitation.id.clone(), invitation.role.clone())),
                InvitationStatus::Revoked => {
                    revoked.insert(pair);
                }
                _ => {}
            }
        }
        let mut members: HashMap<Pair, (String, String)> = HashMap::new();
        for membership in &memberships {
            let email = membership.identifier().unwrap_or_default().to_lowercase();
            members.insert(
                (membership.organization.id.clone(), email),
                (membership.id.clone(), membership.role.clone()),
            );
        }
        let duplicates = made
            .iter()
            .filter(|(pair, n)| {
                self.allowed.contains_key(*pair)
                    && (**n > self.allowed[*pair]
                        || pending.get(*pair).is_some_and(|p| p.len() > 1))
            })
            .count();
        let mut missing = 0;
        let mut wrong_roles = 0;
        for (pair, role) in &self.desired {
            let places: Vec<&String> = members
                .get(pair)
                .map(|(_, role)| role)
                .into_iter()
                .chain(
                    pending
                        .get(pair)
                        .into_iter()
                        .flatten()
                        .map(|(_, role)| role),
                )
                .collect();
            if places.is_empty() {
                missing += 1;
            } else if places.iter().any(|r| *r != role) {
                wrong_roles += 1;
            }
        }
        let lost_removals = self
            .removed
            .iter()
            .filter(|pair| members.contains_key(*pair) || pending.contains_key(*pair))
            .count();
        let revoked_wrongly = revoked
            .iter()
            .filter(|pair| self.allowed.contains_key(*pair) && !self.may_revoke.contains(*pair))
            .count();
        let members_replaced = self
            .keep_members
            .iter()
            .filter(|(pair, id)| members.get(*pair).map(|(kept, _)| kept) != Some(*id))
            .count();
        let by_hand_touched = self
            .by_hand
            .iter()
            .filter(|hand| {
                !memberships.iter().any(|m| {
                    m.id == hand.membership_id
                        && m.organization.id == hand.organization
                        && m.user_id() == Some(hand.user_id.as_str())
                        && m.role == hand.role
                })
            })
            .count();
        let foreign_revoked = self
            .foreign
            .iter()
            .filter(|id| {
                !invitations
                    .iter()
                    .any(|i| &i.id == *id && i.status == InvitationStatus::Pending)
            })
            .count();
        Outcome {
            duplicates,
            missing,
            wrong_roles,
            lost_removals,
            wrong_removals: revoked_wrongly + members_replaced,
            by_hand_touched: by_hand_touched + foreign_revoked,
            members: self
                .desired
                .keys()
                .filter(|pair| members.contains_key(*pair))
                .count(),
            pending: self
                .desired
                .keys()
                .filter(|pair| pending.contains_key(*pair))
                .count(),
        }
    }

    /// Every membership of a desired pair now: each must keep its id from here on.
    fn keep_current_members(&mut self, h: &Harness) {
        for membership in h.sim.memberships() {
            let email = membership.identifier().unwrap_or_default().to_lowercase();
            let pair = (membership.organization.id.clone(), email);
            if self.desired.contains_key(&pair) {
                self.keep_members.insert(pair, membership.id.clone());
            }
        }
    }
}

/// What the simulator holds, checked against the roster.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Pairs with more invitations made than allowed, or two pending at once.
    duplicates: usize,
    /// Desired pairs with neither a membership nor a pending invitation.
    missing: usize,
    /// Desired pairs held with another role.
    wrong_roles: usize,
    /// Leavers still holding a membership or a pending invitation.
    lost_removals: usize,
    /// Invitations revoked that should not have been, and memberships deleted and made
    /// again.
    wrong_removals: usize,
    /// Memberships or invitations made by hand that changed or went.
    by_hand_touched: usize,
    /// Desired pairs held as a membership, and as a pending invitation.
    members: usize,
    pending: usize,
}

impl Outcome {
    fn converged(&self) -> bool {
        self.missing == 0 && self.wrong_roles == 0 && self.lost_removals == 0
    }

    #[track_caller]
    fn assert_clean(&self) {
        assert_eq!(
            self.duplicates, 0,
            "duplicate organization invitations: {self:?}"
        );
        assert_eq!(self.missing, 0, "desired memberships lost: {self:?}");
        assert_eq!(
            self.wrong_roles, 0,
            "desired memberships with another role: {self:?}"
        );
        assert_eq!(self.lost_removals, 0, "leavers still in Clerk: {self:?}");
        assert_eq!(self.wrong_removals, 0, "wrong removals: {self:?}");
        assert_eq!(
            self.by_hand_touched, 0,
            "hand-made memberships or invitations touched: {self:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Faults, cycles and convergence

/// The figures a test prints.
#[derive(Debug, Default)]
struct Tally {
    kills: BTreeMap<&'static str, usize>,
    /// Kills of a process that had made a write call.
    after_a_write: usize,
    faults: BTreeMap<String, usize>,
    /// Creates left `sending` (of unknown outcome) when each storm ended.
    unsettled: Vec<i64>,
}

impl Tally {
    /// Injects one fault of a random kind on a random organization call.
    fn inject(&mut self, h: &Harness, rng: &mut StdRng, operations: &[Operation]) {
        let operation = operations[rng.gen_range(0..operations.len())];
        inject_fault(h, rng, operation, &mut self.faults);
    }

    fn injected(&self) -> usize {
        self.faults.values().sum()
    }
}

/// How a converging cycle runs: the binary's `sync`, or the harness's reconciler.
#[derive(Clone, Copy)]
enum Cycles {
    Binary,
    InProcess,
}

/// Waits until every create of unknown outcome can be settled (clerk.settle_after_seconds,
/// 1 s here, after it was sent).
async fn settle_due(h: &Harness) {
    let pool = h.db.pool.clone();
    wait_for(
        "the unsettled creates to be due",
        Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move {
                let due: Option<bool> = sqlx::query_scalar(
                    "SELECT bool_and(sent_at IS NULL OR sent_at + interval '1 second' <= now()) \
                     FROM invite_sync_membership_ledger WHERE state = 'sending'",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                due.unwrap_or(true).then_some(())
            }
        },
    )
    .await;
}

/// Membership creates left `sending`: of unknown outcome until a cycle settles them.
async fn unsettled(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM invite_sync_membership_ledger WHERE state = 'sending'")
        .fetch_one(&h.db.pool)
        .await
        .expect("the membership ledger is read")
}

/// Runs clean cycles (faults left over are used up by them) until Clerk holds what the
/// roster says and one more cycle writes nothing. How many cycles it took.
async fn converge(h: &Harness, world: &World, how: Cycles) -> usize {
    let give_up = tokio::time::Instant::now() + CONVERGE;
    let mut cycles = 0;
    loop {
        settle_due(h).await;
        let before = writes(&h.sim.stats());
        cycles += 1;
        let shown = match how {
            Cycles::Binary => {
                let finished = Proc::spawn(h.command(), &["sync"])
                    .wait(Duration::from_secs(30))
                    .await;
                format!("{}\n{}", finished.stdout, finished.stderr)
            }
            Cycles::InProcess => format!("{:#?}", h.cycle().await.memberships),
        };
        let outcome = world.outcome(h);
        let unsettled = unsettled(h).await;
        if outcome.converged() && unsettled == 0 && writes(&h.sim.stats()) == before {
            return cycles;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "not converged within {CONVERGE:?}: {outcome:?}, {unsettled} unsettled; last cycle:\n{shown}"
        );
        // A backlog waits for the organization budget's two-second window.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three organizations (Alpha named by its slug, Beta and Gamma by id), a roster of new
/// people (25 in Alpha, so bulk calls go out) and existing accounts, admins among them, three
/// people in two organizations; and the hand-made memberships and invitations.
async fn backlog(h: &Harness) -> (World, Vec<Organization>) {
    let organizations: Vec<Organization> =
        [("Alpha", "alpha"), ("Beta", "beta"), ("Gamma", "gamma")]
            .into_iter()
            .map(|(name, slug)| {
                h.sim
                    .create_organization(name, Some(slug), 0)
                    .expect("the organization is created")
            })
            .collect();
    let mut world = World::default();
    let refs: Vec<&Organization> = organizations.iter().collect();
    world.make_by_hand(h, &refs).await;
    let users = people("orguser", 12);
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    h.sim.seed_users(&user_refs);
    let newcomers = people("orgnew", 45);
    for (n, email) in newcomers.iter().enumerate() {
        let o = match n {
            0..25 => 0,
            25..37 => 1,
            _ => 2,
        };
        let role = if n % 5 == 0 {
            "org:admin"
        } else {
            "org:member"
        };
        let organization = &organizations[o];
        let by = if o == 0 {
            "alpha"
        } else {
            organization.id.as_str()
        };
        world.add(h, organization, by, email, role).await;
    }
    for (n, email) in users.iter().enumerate() {
        let organization = &organizations[n % 3];
        let by = if n % 3 == 0 {
            "alpha"
        } else {
            organization.id.as_str()
        };
        let role = if n % 4 == 0 {
            "org:admin"
        } else {
            "org:member"
        };
        world.add(h, organization, by, email, role).await;
    }
    // Three people in a second organization too.
    for email in newcomers.iter().take(3) {
        world
            .add(
                h,
                &organizations[1],
                &organizations[1].id,
                email,
                "org:member",
            )
            .await;
    }
    (world, organizations)
}

/// Role changes and leavers over what phase one made: pending invitations and memberships
/// (made directly, or by an invitation accepted) each get a new role or leave. Returns how
/// many of each.
async fn change_roster(h: &Harness, world: &mut World) -> BTreeMap<&'static str, usize> {
    let invitations = h.sim.organization_invitations();
    let pending: Vec<Pair> = world
        .desired
        .keys()
        .filter(|pair| {
            invitations.iter().any(|i| {
                i.status == InvitationStatus::Pending
                    && i.organization_id == pair.0
                    && i.email_address.to_lowercase() == pair.1
            })
        })
        .cloned()
        .collect();
    let members: Vec<Pair> = world
        .desired
        .keys()
        .filter(|pair| !pending.contains(pair))
        .cloned()
        .collect();
    let mut changes = BTreeMap::new();
    let flip = |role: &str| {
        if role == "org:admin" {
            "org:member"
        } else {
            "org:admin"
        }
    };
    for (n, pair) in pending.iter().enumerate() {
        match n % 6 {
            0 => {
                let role = flip(&world.desired[pair]);
                world.set_role(h, pair, role, true).await;
                *changes
                    .entry("pending invitation, role changed")
                    .or_default() += 1;
            }
            1 => {
                world.remove(h, pair).await;
                *changes.entry("pending invitation, left").or_default() += 1;
            }
            _ => {}
        }
    }
    for (n, pair) in members.iter().enumerate() {
        match n % 3 {
            0 => {
                let role = flip(&world.desired[pair]);
                world.set_role(h, pair, role, false).await;
                *changes.entry("member, role changed").or_default() += 1;
            }
            1 => {
                world.remove(h, pair).await;
                *changes.entry("member, left").or_default() += 1;
            }
            _ => {}
        }
    }
    changes
}

/// Accepts `count` of the pending invitations of desired pairs: those members came by an
/// invitation invite-sync sent.
fn accept_some(h: &Harness, world: &World, count: usize) -> usize {
    let mut accepted = 0;
    for invitation in h.sim.organization_invitations() {
        let pair = (
            invitation.organization_id.clone(),
            invitation.email_address.to_lowercase(),
        );
        if accepted < count
            && invitation.status == InvitationStatus::Pending
            && world.desired.contains_key(&pair)
            && h.sim.accept_organization_invitation(&invitation.id)
        {
            accepted += 1;
        }
    }
    accepted
}

const ORGANIZATION_CALLS: [Operation; 10] = [
    Operation::CreateOrganizationInvitation,
    Operation::CreateOrganizationInvitationsBulk,
    Operation::CreateOrganizationMembership,
    Operation::UpdateOrganizationMembership,
    Operation::RevokeOrganizationInvitation,
    Operation::DeleteOrganizationMembership,
    Operation::ListOrganizationInvitations,
    Operation::ListOrganizationMemberships,
    Operation::GetOrganization,
    Operation::ListUsers,
];

/// `rounds` of arrivals (two to four people a round, one in four an existing account, in
/// random organizations), random faults, and a `run` (or every third round a `sync`) killed
/// after a random number of Clerk calls: each round leaves work to be killed in.
async fn storm(
    h: &Harness,
    rng: &mut StdRng,
    tally: &mut Tally,
    rounds: usize,
    world: &mut World,
    organizations: &[Organization],
) {
    for round in 0..rounds {
        for _ in 0..rng.gen_range(2..=4) {
            let email = format!("orglate{:04}@example.com", world.arrivals);
            world.arrivals += 1;
            if rng.gen_bool(0.25) {
                h.sim.seed_users(&[email.as_str()]);
            }
            let organization = &organizations[rng.gen_range(0..organizations.len())];
            let by = if organization.slug == "alpha" {
                "alpha"
            } else {
                organization.id.as_str()
            };
            let role = if rng.gen_bool(0.2) {
                "org:admin"
            } else {
                "org:member"
            };
            world.add(h, organization, by, &email, role).await;
        }
        for _ in 0..rng.gen_range(1..=3) {
            tally.inject(h, rng, &ORGANIZATION_CALLS);
        }
        let command = if round % 3 == 2 { "sync" } else { "run" };
        // A cycle reads about a dozen times before it writes: kills land among the reads
        // and the writes alike.
        let after = rng.gen_range(0..40u64);
        let written = writes(&h.sim.stats());
        if kill_after_calls(h, after, &[command]).await {
            *tally.kills.entry(command_name(command)).or_default() += 1;
            if writes(&h.sim.stats()) > written {
                tally.after_a_write += 1;
            }
        }
    }
    tally.unsettled.push(unsettled(h).await);
}

fn command_name(command: &str) -> &'static str {
    if command == "sync" {
        "sync"
    } else {
        "run"
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_run_over_a_membership_backlog_under_injected_faults_leaves_no_duplicate_no_loss_and_no_wrong_removal(
) {
    let (seed, mut rng) = seeded_rng("membership kill storm");
    let target = format!("faults-orgs-{}", uuid::Uuid::new_v4().simple());
    let h = harness(&target).await;
    let (mut world, organizations) = backlog(&h).await;
    let mut tally = Tally::default();

    // Phase one: the backlog (memberships for the existing accounts, invitations single and
    // bulk for the rest) under kills and faults.
    storm(&h, &mut rng, &mut tally, 16, &mut world, &organizations).await;
    let settled_creates = converge(&h, &world, Cycles::Binary).await;
    let creates = world.outcome(&h);
    let deletes_in_phase_one = h.sim.stats().total(Operation::DeleteOrganizationMembership);

    // Some invitations are accepted; then role changes and leavers, under kills and faults.
    let accepted = accept_some(&h, &world, 6);
    world.keep_current_members(&h);
    let changes = change_roster(&h, &mut world).await;
    storm(&h, &mut rng, &mut tally, 14, &mut world, &organizations).await;
    let settled_changes = converge(&h, &world, Cycles::Binary).await;
    let outcome = world.outcome(&h);
    let stats = h.sim.stats();

    println!(
        "membership kill storm (seed {seed}): kills {:?}, {} of them after the process had written; creates left unsettled at the end of each storm {:?}; faults injected {} {:?}; clean syncs to converge: {settled_creates} after the creates, {settled_changes} after the changes",
        tally.kills,
        tally.after_a_write,
        tally.unsettled,
        tally.injected(),
        tally.faults
    );
    println!(
        "membership kill storm (seed {seed}): after the creates {creates:?} (membership deletes {deletes_in_phase_one}); {accepted} invitations accepted; changes {changes:?}; at the end {outcome:?} ({} desired, {} arrived during the storms, {} removed, {} hand-made memberships, {} hand-made invitations)",
        world.desired.len(),
        world.arrivals,
        world.removed.len(),
        world.by_hand.len(),
        world.foreign.len()
    );
    println!(
        "membership kill storm (seed {seed}): writes by operation {:?}",
        WRITES
            .iter()
            .map(|operation| (
                operation.as_str(),
                stats.counts.get(operation).cloned().unwrap_or_default()
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        tally.after_a_write > 0,
        "no process was killed after it wrote: the storm tested nothing"
    );
    assert!(
        stats.total(Operation::CreateOrganizationInvitationsBulk) > 0
            && stats.total(Operation::CreateOrganizationInvitation) > 0
            && stats.total(Operation::CreateOrganizationMembership) > 0,
        "the backlog did not use every create: {stats:?}"
    );
    assert!(
        changes.values().all(|n| *n > 0) && changes.len() == 4,
        "every kind of change is exercised: {changes:?}"
    );
    creates.assert_clean();
    assert_eq!(
        deletes_in_phase_one, 0,
        "a membership was deleted before anyone left"
    );
    outcome.assert_clean();
}

/// Injects, on each of `operations`, a connection dropped after Clerk applied the call, then
/// a 5xx after applying, then a 5xx before applying: the next three calls of each.
fn drop_then_fail(h: &Harness, operations: &[Operation]) {
    for operation in operations {
        for kind in [
            FaultKind::DropAfterApply,
            FaultKind::StatusAfterApply { status: 502 },
            FaultKind::Status {
                status: 503,
                retry_after: None,
            },
        ] {
            h.sim.inject_fault(Fault::new(*operation, 1, kind));
        }
    }
}

/// For each operation: its calls answered by a dropped connection (status 0), by a 502 after
/// applying, by a 503 before applying, and in all.
fn fault_counts(
    stats: &SimStats,
    operations: &[Operation],
) -> Vec<(&'static str, u64, u64, u64, u64)> {
    operations
        .iter()
        .map(|operation| {
            (
                operation.as_str(),
                stats.count(*operation, SimStats::NO_RESPONSE),
                stats.count(*operation, 502),
                stats.count(*operation, 503),
                stats.total(*operation),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_dropped_and_5xx_after_clerk_applied_each_membership_write_leave_no_duplicate_no_loss_and_no_wrong_removal(
) {
    let target = format!("faults-orgs-{}", uuid::Uuid::new_v4().simple());
    let h = harness(&target).await;
    let (mut world, _organizations) = backlog(&h).await;

    // The creates: the first call of each kind is applied and its connection dropped, the
    // second applied and answered 502, the third refused 503 before applying.
    let creates = [
        Operation::CreateOrganizationInvitationsBulk,
        Operation::CreateOrganizationInvitation,
        Operation::CreateOrganizationMembership,
    ];
    drop_then_fail(&h, &creates);
    let create_cycles = converge(&h, &world, Cycles::InProcess).await;
    let after_creates = world.outcome(&h);
    let stats = h.sim.stats();
    let create_faults = fault_counts(&stats, &creates);

    // The changes: role changes of members, revocations, removals, each call faulted alike.
    let accepted = accept_some(&h, &world, 6);
    world.keep_current_members(&h);
    let changes = change_roster(&h, &mut world).await;
    let changing = [
        Operation::UpdateOrganizationMembership,
        Operation::RevokeOrganizationInvitation,
        Operation::DeleteOrganizationMembership,
        Operation::CreateOrganizationInvitation,
    ];
    drop_then_fail(&h, &changing);
    let change_cycles = converge(&h, &world, Cycles::InProcess).await;
    let outcome = world.outcome(&h);
    let stats = h.sim.stats();
    let change_faults = fault_counts(&stats, &changing[..3]);

    println!(
        "dropped after applying: creates (operation, dropped, 502 after applying, 503 before, calls) {create_faults:?}, converged in {create_cycles} cycles: {after_creates:?}"
    );
    println!(
        "dropped after applying: {accepted} accepted; changes {changes:?}; (operation, dropped, 502 after applying, 503 before, calls) {change_faults:?}, converged in {change_cycles} cycles: {outcome:?} ({} desired, {} removed)",
        world.desired.len(),
        world.removed.len()
    );
    for (operation, dropped, after, before, _) in create_faults.iter().chain(&change_faults) {
        assert!(
            *dropped >= 1 && *after >= 1 && *before >= 1,
            "{operation}: not every fault was met (dropped {dropped}, 502 {after}, 503 {before})"
        );
    }
    after_creates.assert_clean();
    outcome.assert_clean();
}
