//! The plan's tests: examples by what they decide, and property tests of its invariants.
//! The builders here serve the ladder's and the observation's tests too.

mod history;
mod invitations;
mod order;
mod properties;
mod rows;

use super::planner::*;
use super::*;
use crate::clerk::InvitationStatus;
use crate::domain::LedgerState;

use chrono::{Duration, TimeZone};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Map, Value};

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

/// Every world is seen at the same instant, so "past" and "future" are fixed offsets.
fn now() -> DateTime<Utc> {
    at(1_000)
}

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap()
}

fn row(address: &str) -> DesiredRow {
    DesiredRow::new(address)
}

fn row_with(address: &str, metadata: Value) -> DesiredRow {
    DesiredRow {
        public_metadata: metadata,
        ..row(address)
    }
}

fn metadata(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

pub(in crate::reconcile) fn invitation(
    id: &str,
    address: &str,
    status: InvitationStatus,
) -> Invitation {
    Invitation {
        object: "invitation".to_owned(),
        id: id.to_owned(),
        email_address: address.to_owned(),
        public_metadata: Map::new(),
        revoked: Some(status == InvitationStatus::Revoked),
        status,
        url: None,
        expires_at: None,
        created_at: 1,
        updated_at: 1,
    }
}

fn pending(id: &str, address: &str) -> Invitation {
    invitation(id, address, InvitationStatus::Pending)
}

/// An owned ledger entry; tests override what they are about.
pub(in crate::reconcile) fn entry(
    id: i64,
    address: &str,
    invitation_id: Option<&str>,
    state: LedgerState,
) -> LedgerEntry {
    LedgerEntry {
        id,
        email: email(address),
        clerk_invitation_id: invitation_id.map(str::to_owned),
        state,
        owned: true,
        row_digest: None,
        redirect_url: None,
        attempts: 1,
        last_error_code: None,
        last_error: None,
        terminal: false,
        next_attempt_at: None,
        revoked_by_us: false,
        created_at: at(0),
        sent_at: None,
    }
}

struct World {
    desired: Vec<Result<DesiredRow, InvalidRow>>,
    clerk: Vec<Invitation>,
    ledger: Vec<LedgerEntry>,
    known_users: HashSet<Email>,
    deleted_users: HashSet<Email>,
    policy: Policy,
}

impl World {
    fn new() -> Self {
        World {
            desired: Vec::new(),
            clerk: Vec::new(),
            ledger: Vec::new(),
            known_users: HashSet::new(),
            deleted_users: HashSet::new(),
            policy: Policy::default(),
        }
    }

    fn row(mut self, row: DesiredRow) -> Self {
        self.desired.push(Ok(row));
        self
    }

    fn unreadable(mut self, address: &str, reason: &str) -> Self {
        self.desired.push(Err(InvalidRow {
            email: address.to_owned(),
            parsed: Email::parse(address).ok(),
            reason: reason.to_owned(),
        }));
        self
    }

    fn invitation(mut self, invitation: Invitation) -> Self {
        self.clerk.push(invitation);
        self
    }

    fn entry(mut self, entry: LedgerEntry) -> Self {
        self.ledger.push(entry);
        self
    }

    fn user(mut self, address: &str) -> Self {
        self.known_users.insert(email(address));
        self
    }

    fn deleted_user(mut self, address: &str) -> Self {
        self.deleted_users.insert(email(address));
        self
    }

    fn policy(mut self, change: impl FnOnce(&mut Policy)) -> Self {
        change(&mut self.policy);
        self
    }

    fn run(&self) -> Plan {
        plan(
            Inputs {
                desired: &self.desired,
                clerk: &self.clerk,
                ledger: &self.ledger,
                known_users: &self.known_users,
                deleted_users: &self.deleted_users,
                listing: Listing::Full,
                now: now(),
            },
            &self.policy,
        )
    }

    fn invitee(&self, row: &DesiredRow) -> DesiredInvitee {
        DesiredInvitee::from_row(row, &self.policy.defaults).unwrap()
    }
}

fn only(plan: &Plan) -> &Item {
    assert_eq!(plan.items.len(), 1, "expected one item: {:#?}", plan.items);
    &plan.items[0]
}

fn categories(plan: &Plan) -> Vec<Category> {
    plan.items.iter().map(Item::category).collect()
}

fn create(invitee: DesiredInvitee, reinvite: bool) -> Item {
    Item::Create { invitee, reinvite }
}
