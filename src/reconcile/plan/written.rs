//! A plan written as it is made, for `plan`: its memory does not grow with the roster.
//!
//! The roster is read up to three times in one snapshot. The first read, by address, counts
//! every item and keeps only what Clerk's listing and the guard need (revocations,
//! replacements, invitations no row asks for), so the counts and the revocations are written
//! first. The second read takes the roster in the create queue's order, which the database
//! keeps (an index of the roster table), and writes each create as its row is decided again.
//! The third, by address again and only when there is drift to write, writes the drift as
//! the rows are decided, with the invitations no row asks for merged in by address.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::planner::Planner;
use super::{Category, Item};
use crate::clerk::budget::Budget;
use crate::domain::Email;
use crate::reconcile::guard::Verdict;
use crate::reconcile::{CycleError, Reconciler, Unsettled};
use crate::store::{people, users};

/// What the plan is written to, in this order: the head once, the creates (replacements
/// first, then creates, each in queue order), the drift (by address), the tail once.
pub trait Sink {
    fn head(&mut self, head: &Head<'_>);
    fn create(&mut self, create: &Create<'_>);
    /// Whether items of `category` (other than creates, replacements and revocations) are
    /// written as drift.
    fn wants_drift(&self, category: Category) -> bool;
    fn drift(&mut self, item: &Item);
    fn tail(&mut self, tail: &Tail);
}

/// A create, a re-invitation or a replacement, as the plan lists it.
pub struct Create<'a> {
    pub email: &'a str,
    pub reinvite: bool,
    pub not_before: Option<DateTime<Utc>>,
    /// The invitation a replacement revokes first.
    pub replaces: Option<&'a str>,
}

impl<'a> Create<'a> {
    /// The create of an item, if it is one.
    pub fn of(item: &'a Item) -> Option<Create<'a>> {
        match item {
            Item::Create { invitee, reinvite } => Some(Create {
                email: invitee.email.as_str(),
                reinvite: *reinvite,
                not_before: invitee.not_before,
                replaces: None,
            }),
            Item::Replace {
                invitee,
                invitation_id,
                ..
            } => Some(Create {
                email: invitee.email.as_str(),
                reinvite: false,
                not_before: invitee.not_before,
                replaces: Some(invitation_id),
            }),
            _ => None,
        }
    }
}

/// What comes before the items.
pub struct Head<'a> {
    pub counts: &'a BTreeMap<Category, usize>,
    pub verdict: &'a Verdict,
    /// Creates waiting (all of them, before this cycle's budget is spent).
    pub queued: usize,
}

/// What comes after the items.
pub struct Tail {
    pub budget: Budget,
    pub queued: usize,
    /// Of the creates, people Clerk has not recently said are not users.
    pub awaiting_user_check: usize,
    /// How long the people known to be invitable take to drain at the budget's pace.
    pub eta: Duration,
    pub unsettled: Unsettled,
}

/// Whether an item is drift: neither a create, a replacement nor a revocation.
pub fn is_drift(item: &Item) -> bool {
    !matches!(
        item,
        Item::Create { .. } | Item::Replace { .. } | Item::Revoke { .. }
    )
}

/// What `plan` says of the next cycle.
pub struct Written {
    /// Whether the next cycle would send anything (created, revoked, or held for release).
    pub changes: bool,
}

impl Reconciler {
    /// Writes what the next cycle would do to `sink`, without the lock and without writing
    /// anything else, reading the roster as the next cycle reads it but holding none of it.
    pub async fn write_plan(
        &self,
        allow_revocations: usize,
        sink: &mut impl Sink,
    ) -> Result<Written, CycleError> {
        let state = self.read_state(false).await?;
        let now = Utc::now();
        let snapshot = people::Snapshot::export(&self.pool).await?;
        let (pool, relation, target) = (&self.pool, &self.config.relation, &self.config.target);
        let policy = &self.config.policy;
        let planner = || Planner::new(&state.clerk, &state.owned_ids, state.listing(), now, policy);
        let max_age =
            i64::try_from(self.config.drain.user_check_max_age.as_secs()).unwrap_or(i64::MAX);
        let checked = users::fresh_not_users(pool, target, max_age).await?;
        let unchecked = |email: &Email| !checked.contains(email);

        // First read: the counts, the revocations and the replacements.
        let mut counting = planner().counting_all();
        let mut awaiting_user_check = 0;
        let desired_rows = people::for_each_in(pool, &snapshot, relation, target, |row, person| {
            let item = counting.decide(&row, person);
            if let Item::Create { invitee, .. } = &item {
                awaiting_user_check += usize::from(unchecked(&invitee.email));
            }
            counting.keep(item);
        })
        .await?;
        let duplicates = counting.duplicates();
        let plan = counting.finish();
        let (verdict, _) = self.judge(&state, &plan, desired_rows, allow_revocations);
        let counts = plan.counts();
        let queued = plan.queued();
        awaiting_user_check += plan.creates().filter(|i| unchecked(&i.email)).count();
        sink.head(&Head {
            counts: &counts,
            verdict: &verdict,
            queued,
        });

        // Second read: the creates, in queue order.
        for create in plan.items.iter().filter_map(Create::of) {
            sink.create(&create);
        }
        let to_create: usize = [Category::Create, Category::Reinvite]
            .iter()
            .filter_map(|c| counts.get(c))
            .sum();
        let only_creates = counts.len() == 1 && to_create == desired_rows;
        if only_creates {
            // Every row is a create (none has an item of another kind, none is a
            // re-invitation): its line is the row's address and `not_before`, read alone.
            let mut written = 0;
            people::addresses_queued(pool, &snapshot, relation, |text, not_before| {
                match Email::parse_invitable(text) {
                    Ok(email) => {
                        written += 1;
                        sink.create(&Create {
                            email: email.as_str(),
                            reinvite: false,
                            not_before,
                            replaces: None,
                        });
                    }
                    Err(_) => tracing::warn!("a roster row read as a create no longer reads"),
                }
            })
            .await?;
            if written != to_create {
                tracing::warn!(
                    counted = to_create,
                    written,
                    "the roster read in queue order gave another number of creates than read by address"
                );
            }
        } else if to_create > 0 {
            let mut queue = planner().knowing_duplicates(duplicates);
            let mut written = 0;
            people::for_each_queued(pool, &snapshot, relation, target, |row, person| {
                if let Some(item @ Item::Create { .. }) = queue.decide_queued(&row, person) {
                    written += 1;
                    if let Some(create) = Create::of(&item) {
                        sink.create(&create);
                    }
                }
            })
            .await?;
            if written != to_create {
                tracing::warn!(
                    counted = to_create,
                    written,
                    "the roster read in queue order gave another number of creates than read by address"
                );
            }
        }

        // Third read, when there is drift to write: by address, with the invitations no row
        // asks for merged in.
        let mut unasked: Vec<&Item> = plan
            .items
            .iter()
            .filter(|i| is_drift(i) && sink.wants_drift(i.category()))
            .collect();
        unasked.sort_by(|a, b| a.email().cmp(b.email()));
        // The roster's items are counted, not kept: those of a category written as drift
        // are read again.
        let roster_drift = plan.quiet.iter().any(|(category, n)| {
            *n > 0
                && !matches!(category, Category::Create | Category::Reinvite)
                && sink.wants_drift(*category)
        });
        let mut unasked = unasked.into_iter().peekable();
        if roster_drift {
            let mut drift = planner();
            people::for_each_in(pool, &snapshot, relation, target, |row, person| {
                let item = drift.decide(&row, person);
                if !is_drift(&item) || !sink.wants_drift(item.category()) {
                    return;
                }
                while let Some(before) = unasked.next_if(|i| i.email() < item.email()) {
                    sink.drift(before);
                }
                sink.drift(&item);
            })
            .await?;
        }
        for item in unasked {
            sink.drift(item);
        }
        drop(snapshot);

        let budget = self.budget().await?;
        let invitable = queued.saturating_sub(awaiting_user_check);
        let eta = budget.eta(invitable as u64, &self.config.budget, Utc::now());
        let unsettled = Unsettled::of(&state.ledger, self.config.settle_after, Utc::now());
        sink.tail(&Tail {
            budget,
            queued,
            awaiting_user_check,
            eta,
            unsettled,
        });
        Ok(Written {
            changes: queued > 0 || !verdict.allowed.is_empty() || !verdict.held.is_empty(),
        })
    }
}
