//! Which create call goes out next, and to which endpoint: the queue and what refused calls
//! left to send again, and how a bulk call refused without naming anyone is split.

use std::collections::VecDeque;

use crate::clerk::client::MAX_BULK;
use crate::clerk::Operation;
use crate::domain::DesiredInvitee;

/// How a create call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateEndpoint {
    Bulk,
    Single,
}

impl CreateEndpoint {
    pub fn operation(self) -> Operation {
        match self {
            CreateEndpoint::Bulk => Operation::CreateBulkInvitations,
            CreateEndpoint::Single => Operation::CreateInvitation,
        }
    }
}

/// What waits to be sent in a cycle: the queue, and what refused calls left to send again.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) queue: VecDeque<DesiredInvitee>,
    /// Members of a refused bulk call, each batch to go again as one call.
    pub(super) batches: Vec<Vec<DesiredInvitee>>,
    /// Members to go again one by one.
    pub(super) singly: VecDeque<DesiredInvitee>,
}

impl Outbox {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.batches.is_empty() && self.singly.is_empty()
    }

    /// Everyone waiting.
    pub(super) fn len(&self) -> usize {
        self.queue.len() + self.singly.len() + self.batches.iter().map(Vec::len).sum::<usize>()
    }

    pub(super) fn waiting(&self) -> Waiting {
        Waiting {
            retry_batches: self.batches.len(),
            alone: self.singly.len(),
            queue: self.queue.len(),
        }
    }

    /// The batches that cannot go out as one join the queue's head.
    pub(super) fn unbatch(&mut self) {
        let batches: Vec<DesiredInvitee> = self.batches.drain(..).flatten().collect();
        self.put_back(batches);
    }

    /// Members back at the head of the queue, in their order.
    pub(super) fn put_back(&mut self, members: Vec<DesiredInvitee>) {
        for member in members.into_iter().rev() {
            self.queue.push_front(member);
        }
    }

    /// The members of `call`, and the endpoint they go to.
    pub(super) fn take(&mut self, call: NextCall) -> (CreateEndpoint, Vec<DesiredInvitee>) {
        match call {
            NextCall::RetryBatch => (CreateEndpoint::Bulk, self.batches.pop().unwrap_or_default()),
            NextCall::Alone => (
                CreateEndpoint::Single,
                self.singly.pop_front().into_iter().collect(),
            ),
            NextCall::Bulk(n) => (
                CreateEndpoint::Bulk,
                self.queue.drain(..n.min(self.queue.len())).collect(),
            ),
            NextCall::Single => (
                CreateEndpoint::Single,
                self.queue.pop_front().into_iter().collect(),
            ),
        }
    }
}

/// Which create call goes out next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextCall {
    /// A batch left by a refused bulk call, as one bulk call.
    RetryBatch,
    /// One that must go alone, as a single call.
    Alone,
    /// The next `n` of the queue as one bulk call.
    Bulk(usize),
    /// The next one of the queue as a single call.
    Single,
}

/// What waits to be sent, for [`next_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub retry_batches: usize,
    pub alone: usize,
    pub queue: usize,
}

/// Picks the next create call so the backlog drains soonest: every free slot of either
/// endpoint is used while anyone waits; bulk calls of 10 while 10 or more wait, single calls
/// for the rest, and a bulk call for stragglers when no single slot is left and none frees
/// soon (`single_soon`: within the cycle's wait). `None` when nothing can go out now.
pub fn next_call(
    waiting: Waiting,
    bulk_left: u32,
    single_left: u32,
    single_soon: bool,
) -> Option<NextCall> {
    if waiting.retry_batches > 0 && bulk_left > 0 {
        return Some(NextCall::RetryBatch);
    }
    if waiting.alone > 0 && single_left > 0 {
        return Some(NextCall::Alone);
    }
    match waiting.queue {
        0 => None,
        n if n >= MAX_BULK && bulk_left > 0 => Some(NextCall::Bulk(MAX_BULK)),
        _ if single_left > 0 => Some(NextCall::Single),
        n if bulk_left > 0 && !single_soon => Some(NextCall::Bulk(n.min(MAX_BULK))),
        _ => None,
    }
}

/// Splits the members of a bulk call Clerk refused without naming whom for into two halves
/// sent apart: a cause among them is found in at most 2 x ceil(log2 n) more calls (8 for a
/// full bulk of 10 with one cause), each half that succeeds inviting its members at once,
/// where sending them one by one cost n single calls. A half of one goes as a single call.
pub fn halves(mut members: Vec<DesiredInvitee>) -> (Vec<Vec<DesiredInvitee>>, Vec<DesiredInvitee>) {
    if members.len() <= 1 {
        return (Vec::new(), members);
    }
    let second = members.split_off(members.len().div_ceil(2));
    let mut batches = Vec::new();
    let mut singly = Vec::new();
    for half in [members, second] {
        if half.len() == 1 {
            singly.extend(half);
        } else {
            batches.push(half);
        }
    }
    (batches, singly)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::execute::tests::invitees;

    fn waiting(retry_batches: usize, alone: usize, queue: usize) -> Waiting {
        Waiting {
            retry_batches,
            alone,
            queue,
        }
    }

    #[test]
    fn bulk_calls_carry_the_queue_while_ten_or_more_wait_and_singles_the_rest() {
        assert_eq!(
            next_call(waiting(0, 0, 25), 3, 5, false),
            Some(NextCall::Bulk(10))
        );
        assert_eq!(
            next_call(waiting(0, 0, 9), 3, 5, false),
            Some(NextCall::Single)
        );
        assert_eq!(next_call(waiting(0, 0, 0), 3, 5, false), None);
    }

    #[test]
    fn every_free_slot_of_either_endpoint_is_used_while_anyone_waits() {
        // Bulk used up: singles go on with a long queue.
        assert_eq!(
            next_call(waiting(0, 0, 1000), 0, 1, false),
            Some(NextCall::Single)
        );
        // Singles used up and none freeing soon: stragglers go as one bulk call.
        assert_eq!(
            next_call(waiting(0, 0, 4), 2, 0, false),
            Some(NextCall::Bulk(4))
        );
        assert_eq!(next_call(waiting(0, 0, 4), 0, 0, false), None);
    }

    #[test]
    fn stragglers_wait_for_a_single_slot_that_frees_soon_rather_than_take_a_bulk_one() {
        assert_eq!(next_call(waiting(0, 0, 4), 2, 0, true), None);
        assert_eq!(
            next_call(waiting(0, 0, 12), 2, 0, true),
            Some(NextCall::Bulk(10))
        );
    }

    #[test]
    fn what_a_refusal_left_goes_before_the_queue() {
        assert_eq!(
            next_call(waiting(1, 1, 50), 1, 1, false),
            Some(NextCall::RetryBatch)
        );
        assert_eq!(
            next_call(waiting(1, 1, 50), 0, 1, false),
            Some(NextCall::Alone)
        );
        // One that must go alone waits for a single slot; the queue uses the bulk one.
        assert_eq!(
            next_call(waiting(0, 1, 50), 1, 0, false),
            Some(NextCall::Bulk(10))
        );
        assert_eq!(next_call(waiting(0, 1, 0), 1, 0, false), None);
    }

    #[test]
    fn the_outbox_counts_everyone_waiting_and_puts_members_back_at_its_head_in_order() {
        let mut all = invitees(7);
        let singly: VecDeque<_> = all.split_off(6).into();
        let batches = vec![all.split_off(4), all.split_off(2)];
        let mut outbox = Outbox {
            queue: all.into(),
            batches,
            singly,
        };
        assert_eq!(outbox.len(), 7);
        assert_eq!(outbox.waiting(), waiting(2, 1, 2));
        outbox.unbatch();
        assert_eq!(outbox.waiting(), waiting(0, 1, 6));
        let order: Vec<&str> = outbox.queue.iter().map(|m| m.email.as_str()).collect();
        assert_eq!(
            order,
            [
                "p4@example.com",
                "p5@example.com",
                "p2@example.com",
                "p3@example.com",
                "p0@example.com",
                "p1@example.com"
            ]
        );
        let (endpoint, members) = outbox.take(NextCall::Bulk(10));
        assert_eq!((endpoint, members.len()), (CreateEndpoint::Bulk, 6));
        outbox.put_back(members);
        assert_eq!(
            outbox.queue.front().map(|m| m.email.as_str()),
            Some("p4@example.com")
        );
        let (endpoint, members) = outbox.take(NextCall::Alone);
        assert_eq!(endpoint, CreateEndpoint::Single);
        assert_eq!(members[0].email.as_str(), "p6@example.com");
        assert_eq!(outbox.len(), 6);
    }

    #[test]
    fn a_refused_bulk_is_halved_and_a_half_of_one_goes_alone() {
        let (batches, singly) = halves(invitees(10));
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
        assert!(singly.is_empty());
        let (batches, singly) = halves(invitees(3));
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2]);
        assert_eq!(singly.len(), 1);
        let (batches, singly) = halves(invitees(1));
        assert!(batches.is_empty());
        assert_eq!(singly.len(), 1);
    }

    #[test]
    fn halving_finds_one_cause_among_ten_in_at_most_eight_calls() {
        // Every half holding the cause is refused and halved again; the others succeed.
        for cause in 0..10 {
            let mut calls = 0;
            let mut refused = vec![invitees(10)];
            let bad = format!("p{cause}@example.com");
            while let Some(members) = refused.pop() {
                let (batches, singly) = halves(members);
                for part in batches
                    .into_iter()
                    .chain(singly.into_iter().map(|m| vec![m]))
                {
                    calls += 1;
                    if part.len() > 1 && part.iter().any(|m| m.email.as_str() == bad) {
                        refused.push(part);
                    }
                }
            }
            assert!(calls <= 8, "cause {cause}: {calls} calls");
        }
    }
}
