//! A plan written as it is made, for `plan`: its memory does not grow with the roster past a
//! fixed bound.
//!
//! The roster is read by address once, in one snapshot with the ledger and the known users.
//! That read counts every item and keeps only what Clerk's listing and the guard need
//! (revocations, replacements, invitations no row asks for), and each create as a compact
//! record (its queue key and address, about 50 bytes), so the counts and the revocations are
//! written first and the creates follow, sorted into the create queue's order at the end.
//! Should the creates outgrow [`QUEUE_BYTES`], the records are dropped and the roster is read
//! again in queue order (which an index of the roster table keeps), each create written as its
//! row is decided again. The drift, only when there is drift to write, is written as the
//! roster is read by address again, with the invitations no row asks for merged in.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::planner::Planner;
use super::{Category, Item};
use crate::clerk::budget::Budget;
use crate::domain::DesiredInvitee;
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

/// The most memory the creates of one plan are held in, as compact records (address bytes
/// and 24 bytes of queue key each, the vectors' spare capacity included): about 1.1 million
/// creates of 30-byte addresses. A plan with more reads the roster again in queue order.
pub const QUEUE_BYTES: usize = 64 << 20;

/// The creates of a plan held compactly to be written in the create queue's order: the
/// addresses back to back in one string and, for each, its queue key. About 24 bytes plus the
/// address's length a create (some 55 MB for a million 30-byte addresses with the vectors'
/// spare capacity), against a few hundred for a kept item.
#[derive(Debug)]
pub struct CreateQueue {
    records: Vec<Queued>,
    text: String,
    limit: usize,
    overflowed: bool,
}

/// One create: its queue key (`not_before`, else when the row was written; then when it was
/// written; in microseconds, `i64::MIN` standing for none, which sorts first as a missing time
/// does) and where its address lies in the queue's text.
#[derive(Debug, Clone, Copy)]
struct Queued {
    first: i64,
    created: i64,
    start: u32,
    len: u16,
    flags: u8,
}

const HAS_NOT_BEFORE: u8 = 1;
const REINVITE: u8 = 2;

fn micros(time: Option<DateTime<Utc>>) -> i64 {
    time.map_or(i64::MIN, |t| t.timestamp_micros())
}

impl CreateQueue {
    /// A queue holding at most `limit` bytes.
    pub fn new(limit: usize) -> CreateQueue {
        CreateQueue {
            records: Vec::new(),
            text: String::new(),
            limit,
            overflowed: false,
        }
    }

    /// Whether the creates outgrew the limit (and were dropped).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    fn bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Queued>() + self.text.capacity()
    }

    /// Holds a create; once the queue would outgrow its limit, drops everything and holds
    /// nothing more.
    pub fn push(&mut self, invitee: &DesiredInvitee, reinvite: bool) {
        if self.overflowed {
            return;
        }
        let address = invitee.email.as_str();
        let (Ok(start), Ok(len)) = (u32::try_from(self.text.len()), u16::try_from(address.len()))
        else {
            return self.overflow();
        };
        // What growing either vector would take, before it is taken.
        let mut needed = self.bytes();
        if self.records.len() == self.records.capacity() {
            needed += self.records.capacity().max(4) * std::mem::size_of::<Queued>();
        }
        if self.text.len() + address.len() > self.text.capacity() {
            needed += self.text.capacity().max(address.len() * 8);
        }
        if needed > self.limit {
            return self.overflow();
        }
        let mut flags = 0;
        if invitee.not_before.is_some() {
            flags |= HAS_NOT_BEFORE;
        }
        if reinvite {
            flags |= REINVITE;
        }
        self.records.push(Queued {
            first: micros(invitee.not_before.or(invitee.created_at)),
            created: micros(invitee.created_at),
            start,
            len,
            flags,
        });
        self.text.push_str(address);
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.records = Vec::new();
        self.text = String::new();
    }

    fn address(&self, record: &Queued) -> &str {
        let start = record.start as usize;
        self.text
            .get(start..start + usize::from(record.len))
            .unwrap_or_default()
    }

    /// How many creates are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Writes the creates held, in the create queue's order (the oldest `not_before`, a row
    /// without one having waited since it was written, then the oldest row, then the address),
    /// as the plan sorts its items.
    pub fn write(mut self, sink: &mut impl Sink) {
        let mut records = std::mem::take(&mut self.records);
        records.sort_unstable_by(|a, b| {
            (a.first, a.created, self.address(a)).cmp(&(b.first, b.created, self.address(b)))
        });
        for record in &records {
            let not_before = (record.flags & HAS_NOT_BEFORE != 0)
                .then(|| DateTime::from_timestamp_micros(record.first))
                .flatten();
            sink.create(&Create {
                email: self.address(record),
                reinvite: record.flags & REINVITE != 0,
                not_before,
                replaces: None,
            });
        }
    }
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

        // First read: the counts, the revocations, the replacements and the creates.
        let mut counting = planner().counting_all();
        let mut awaiting_user_check = 0;
        let mut held = CreateQueue::new(QUEUE_BYTES);
        let desired_rows = people::for_each_in(pool, &snapshot, relation, target, |row, person| {
            let item = counting.decide(&row, person);
            if let Item::Create { invitee, reinvite } = &item {
                awaiting_user_check += usize::from(unchecked(&invitee.email));
                held.push(invitee, *reinvite);
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

        // The replacements, then the creates in queue order: held from the first read, or,
        // when there were too many to hold, from a second read in queue order.
        for create in plan.items.iter().filter_map(Create::of) {
            sink.create(&create);
        }
        let to_create: usize = [Category::Create, Category::Reinvite]
            .iter()
            .filter_map(|c| counts.get(c))
            .sum();
        let only_creates = counts.len() == 1 && to_create == desired_rows;
        if !held.overflowed() {
            if held.len() != to_create {
                tracing::warn!(
                    counted = to_create,
                    held = held.len(),
                    "the creates held gave another number than the counts"
                );
            }
            held.write(sink);
        } else if only_creates {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DesiredRow, RowDefaults};

    #[derive(Default)]
    struct Lines(Vec<(String, bool, Option<DateTime<Utc>>)>);

    impl Sink for Lines {
        fn head(&mut self, _: &Head<'_>) {}
        fn create(&mut self, create: &Create<'_>) {
            self.0
                .push((create.email.to_owned(), create.reinvite, create.not_before));
        }
        fn wants_drift(&self, _: Category) -> bool {
            false
        }
        fn drift(&mut self, _: &Item) {}
        fn tail(&mut self, _: &Tail) {}
    }

    fn time(text: &str) -> DateTime<Utc> {
        text.parse().expect("a time")
    }

    fn invitee(email: &str, created: &str, not_before: Option<&str>) -> DesiredInvitee {
        let row = DesiredRow {
            created_at: Some(time(created)),
            not_before: not_before.map(time),
            ..DesiredRow::new(email)
        };
        DesiredInvitee::from_row(&row, &RowDefaults::default()).expect("a valid row")
    }

    #[test]
    fn held_creates_are_written_in_queue_order() {
        let mut queue = CreateQueue::new(QUEUE_BYTES);
        queue.push(&invitee("cy@x.com", "2026-01-03T00:00:00Z", None), false);
        queue.push(
            &invitee(
                "al@x.com",
                "2026-01-05T00:00:00Z",
                Some("2026-01-02T00:00:00Z"),
            ),
            true,
        );
        queue.push(&invitee("bo@x.com", "2026-01-03T00:00:00Z", None), false);
        queue.push(&invitee("di@x.com", "2026-01-01T00:00:00Z", None), false);
        assert_eq!(queue.len(), 4);
        let mut lines = Lines::default();
        queue.write(&mut lines);
        assert_eq!(
            lines.0,
            vec![
                ("di@x.com".to_owned(), false, None),
                (
                    "al@x.com".to_owned(),
                    true,
                    Some(time("2026-01-02T00:00:00Z"))
                ),
                ("bo@x.com".to_owned(), false, None),
                ("cy@x.com".to_owned(), false, None),
            ]
        );
    }

    #[test]
    fn a_queue_past_its_limit_holds_nothing_and_says_so() {
        let mut queue = CreateQueue::new(1024);
        for i in 0..100 {
            queue.push(
                &invitee(&format!("person{i}@x.com"), "2026-01-01T00:00:00Z", None),
                false,
            );
            assert!(queue.bytes() <= 1024);
        }
        assert!(queue.overflowed());
        assert!(queue.is_empty());
    }
}
