//! The membership plan's tests: examples by what they decide, and property tests of its
//! invariants.

mod examples;
mod properties;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::domain::MembershipRow;

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn now() -> DateTime<Utc> {
    at(1_000)
}

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap()
}

/// A roster row, read as the roster reader reads it (its digest included).
fn row_with(
    address: &str,
    organization: &str,
    change: impl FnOnce(&mut MembershipRow),
) -> DesiredMembership {
    let mut raw = MembershipRow::new(address, organization);
    change(&mut raw);
    DesiredMembership::from_row(&raw).unwrap()
}

fn row(address: &str, organization: &str) -> DesiredMembership {
    row_with(address, organization, |_| {})
}

fn row_as(address: &str, organization: &str, role: &str) -> DesiredMembership {
    row_with(address, organization, |raw| {
        raw.role = Some(role.to_owned())
    })
}

fn organization(id: &str, slug: &str, room: Room) -> Organization {
    Organization {
        id: id.to_owned(),
        slug: slug.to_owned(),
        room,
    }
}

fn member(user_id: &str, address: &str, role: &str) -> Member {
    Member {
        user_id: user_id.to_owned(),
        email: Some(email(address)),
        role: role.to_owned(),
    }
}

fn invitation(id: &str, address: &str, role: &str, status: InvitationStatus) -> Invitation {
    Invitation {
        id: id.to_owned(),
        email: email(address),
        role: role.to_owned(),
        status,
        created_at: 1,
    }
}

/// An owned ledger entry; tests override what they are about.
fn recorded(
    organization_id: &str,
    address: &str,
    kind: MembershipKind,
    clerk_id: Option<&str>,
    state: MembershipState,
) -> MembershipLedgerEntry {
    MembershipLedgerEntry {
        id: 1,
        email: email(address),
        organization_id: organization_id.to_owned(),
        kind,
        clerk_id: clerk_id.map(str::to_owned),
        user_id: None,
        role: "org:member".to_owned(),
        state,
        owned: true,
        row_digest: None,
        attempts: 1,
        last_error_code: None,
        last_error: None,
        terminal: false,
        next_attempt_at: None,
        call_id: None,
        run_id: None,
        sent_at: None,
        settled_at: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

#[derive(Debug, Clone)]
struct World {
    rows: Vec<MembershipRosterRow>,
    resolved: HashMap<String, Resolution>,
    holdings: HashMap<String, Holdings>,
    ledger: Vec<MembershipLedgerEntry>,
    users: HashMap<Email, String>,
    instance_first: HashSet<Email>,
    roles: Option<HashSet<String>>,
    policy: Policy,
}

impl World {
    /// One organization, `org_a` (slug `acme`), unlimited, with the two built-in roles.
    fn new() -> World {
        World {
            rows: Vec::new(),
            resolved: HashMap::new(),
            holdings: HashMap::new(),
            ledger: Vec::new(),
            users: HashMap::new(),
            instance_first: HashSet::new(),
            roles: Some(["org:admin", "org:member"].map(str::to_owned).into()),
            policy: Policy::default(),
        }
        .organization(organization("org_a", "acme", Room::Unlimited))
    }

    fn organization(mut self, organization: Organization) -> World {
        self.holdings.entry(organization.id.clone()).or_default();
        self.resolved.insert(
            organization.slug.clone(),
            Resolution::Found(organization.clone()),
        );
        self.resolved
            .insert(organization.id.clone(), Resolution::Found(organization));
        self
    }

    fn row(mut self, row: DesiredMembership) -> World {
        self.rows.push(Ok(row));
        self
    }

    fn member(mut self, organization_id: &str, member: Member) -> World {
        self.holdings
            .entry(organization_id.to_owned())
            .or_default()
            .members
            .push(member);
        self
    }

    fn invitation(mut self, organization_id: &str, invitation: Invitation) -> World {
        self.holdings
            .entry(organization_id.to_owned())
            .or_default()
            .invitations
            .push(invitation);
        self
    }

    fn recorded(mut self, entry: MembershipLedgerEntry) -> World {
        self.ledger.push(entry);
        self
    }

    fn user(mut self, address: &str, user_id: &str) -> World {
        self.users.insert(email(address), user_id.to_owned());
        self
    }

    /// A row of `org_a` for `address` whose `not_before` is a day after now.
    fn row_with_future(self, address: &str) -> World {
        self.row(row_with(address, "acme", |raw| {
            raw.not_before = Some(now() + Duration::days(1))
        }))
    }

    /// The address is on the instance roster too.
    fn on_instance_roster(mut self, address: &str) -> World {
        self.instance_first.insert(email(address));
        self
    }

    fn policy(mut self, change: impl FnOnce(&mut Policy)) -> World {
        change(&mut self.policy);
        self
    }

    fn run(&self) -> Plan {
        plan(
            Inputs {
                rows: &self.rows,
                resolved: &self.resolved,
                holdings: &self.holdings,
                ledger: &self.ledger,
                users: &self.users,
                instance_first: &self.instance_first,
                roles: self.roles.as_ref(),
                now: now(),
            },
            &self.policy,
        )
    }
}

fn categories(plan: &Plan) -> Vec<Category> {
    plan.items.iter().map(Item::category).collect()
}

fn only(plan: &Plan) -> &Item {
    assert_eq!(plan.items.len(), 1, "expected one item: {:#?}", plan.items);
    &plan.items[0]
}
