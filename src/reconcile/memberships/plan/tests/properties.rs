//! The membership plan's invariants over generated worlds: three organizations (one
//! unlimited, one with little room, one Clerk does not know), six people.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::*;

const POOL: [&str; 6] = [
    "ann@x.com",
    "bob@x.com",
    "cy@y.org",
    "dee@x.com",
    "eve@y.org",
    "fay@x.com",
];

/// References a row may give: ids and slugs of the two known organizations, and one
/// Clerk does not know.
const REFERENCES: [&str; 5] = ["org_a", "acme", "org_b", "beta", "nope"];

const ROLES: [Option<&str>; 4] = [
    None,
    Some("org:admin"),
    Some("org:member"),
    Some("org:boss"),
];

const ORGS: [&str; 2] = ["org_a", "org_b"];

const STATES: [MembershipState; 8] = [
    MembershipState::Sending,
    MembershipState::Pending,
    MembershipState::Accepted,
    MembershipState::Revoked,
    MembershipState::Expired,
    MembershipState::Failed,
    MembershipState::Member,
    MembershipState::Removed,
];

const STATUSES: [InvitationStatus; 4] = [
    InvitationStatus::Pending,
    InvitationStatus::Accepted,
    InvitationStatus::Revoked,
    InvitationStatus::Expired,
];

fn user_id(person: usize) -> String {
    format!("user_{person}")
}

fn role_of(choice: usize) -> String {
    ROLES[choice].unwrap_or("org:member").to_owned()
}

fn rows() -> impl Strategy<Value = Vec<MembershipRosterRow>> {
    prop::collection::vec(
        (
            0..POOL.len(),
            0..REFERENCES.len(),
            0..ROLES.len(),
            prop::option::of(0..20i64),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
        ),
        0..12,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .map(|(person, reference, role, created, later, unreadable)| {
                if unreadable {
                    return Err(InvalidMembership {
                        email: POOL[person].to_owned(),
                        parsed: Some(email(POOL[person])),
                        organization: REFERENCES[reference].to_owned(),
                        reason: "unreadable".to_owned(),
                    });
                }
                Ok(row_with(POOL[person], REFERENCES[reference], |raw| {
                    raw.role = ROLES[role].map(str::to_owned);
                    raw.created_at = created.map(at);
                    raw.not_before = later.then(|| at(2_000));
                }))
            })
            .collect()
    })
}

/// Per organization: members (person, role, shown address or not) and invitations
/// (person, role, status).
fn holdings() -> impl Strategy<Value = Holdings> {
    (
        prop::collection::vec((0..POOL.len(), 0..ROLES.len(), any::<bool>()), 0..4),
        prop::collection::vec((0..POOL.len(), 0..ROLES.len(), 0..STATUSES.len()), 0..5),
    )
        .prop_map(|(members, invitations)| {
            let mut seen = HashSet::new();
            Holdings {
                members: members
                    .into_iter()
                    .filter(|(person, _, _)| seen.insert(*person))
                    .map(|(person, role, shown)| Member {
                        user_id: user_id(person),
                        email: shown.then(|| email(POOL[person])),
                        role: role_of(role),
                    })
                    .collect(),
                invitations: invitations
                    .into_iter()
                    .enumerate()
                    .map(|(i, (person, role, status))| Invitation {
                        id: format!("orginv_{i}"),
                        email: email(POOL[person]),
                        role: role_of(role),
                        status: STATUSES[status],
                        created_at: i as i64,
                    })
                    .collect(),
            }
        })
}

fn ledger() -> impl Strategy<Value = Vec<MembershipLedgerEntry>> {
    prop::collection::vec(
        (
            0..ORGS.len(),
            0..POOL.len(),
            any::<bool>(),
            0..6usize,
            0..STATES.len(),
            prop::bool::weighted(0.7),
            any::<bool>(),
        ),
        0..10,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(
                |(org, person, membership, invitation, state, owned, terminal)| {
                    let (kind, clerk_id) = if membership {
                        (MembershipKind::Membership, user_id(person))
                    } else {
                        (MembershipKind::Invitation, format!("orginv_{invitation}"))
                    };
                    MembershipLedgerEntry {
                        user_id: (STATES[state] == MembershipState::Accepted)
                            .then(|| user_id(person)),
                        owned,
                        terminal,
                        next_attempt_at: Some(at(1_010)),
                        ..recorded(
                            ORGS[org],
                            POOL[person],
                            kind,
                            Some(&clerk_id),
                            STATES[state],
                        )
                    }
                },
            )
            .collect()
    })
}

fn world() -> impl Strategy<Value = World> {
    (
        rows(),
        holdings(),
        holdings(),
        ledger(),
        prop::collection::vec(any::<bool>(), POOL.len()),
        prop::collection::vec(any::<bool>(), POOL.len()),
        0..4usize,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(rows, a, b, ledger, users, instance, room, invite, remove_members)| {
                let mut world = World::new()
                    .organization(organization("org_b", "beta", Room::Left(room)))
                    .policy(|p| {
                        p.remove_members = remove_members;
                        if invite {
                            p.existing_users = ExistingUsers::Invite;
                        }
                    });
                world.resolved.insert("nope".into(), Resolution::Unknown);
                world.rows = rows;
                world.holdings.insert("org_a".into(), a);
                world.holdings.insert("org_b".into(), b);
                world.ledger = ledger;
                for (person, known) in users.into_iter().enumerate() {
                    if known {
                        world.users.insert(email(POOL[person]), user_id(person));
                    }
                }
                for (person, on_roster) in instance.into_iter().enumerate() {
                    if on_roster {
                        world.instance_first.insert(email(POOL[person]));
                    }
                }
                world
            },
        )
}

impl World {
    fn resolves_to(&self, reference: &str) -> Option<&str> {
        match self.resolved.get(reference) {
            Some(Resolution::Found(organization)) => Some(organization.id.as_str()),
            _ => None,
        }
    }

    fn room(&self, organization_id: &str) -> usize {
        match self.resolved.get(organization_id) {
            Some(Resolution::Found(Organization {
                room: Room::Left(n),
                ..
            })) => *n,
            _ => usize::MAX,
        }
    }

    fn pending(&self, organization_id: &str, address: &str) -> bool {
        self.holdings[organization_id]
            .invitations
            .iter()
            .any(|i| i.email.as_str() == address && i.status == InvitationStatus::Pending)
    }

    /// The member for the address: by the address Clerk shows, the user id known for it,
    /// or a membership the ledger recorded for it.
    fn member_of(&self, organization_id: &str, address: &str) -> Option<&Member> {
        let known = self.users.get(&email(address));
        let recorded = |user_id: &str| {
            self.ledger.iter().any(|e| {
                e.kind == MembershipKind::Membership
                    && e.organization_id == organization_id
                    && e.email.as_str() == address
                    && e.clerk_id.as_deref() == Some(user_id)
            })
        };
        self.holdings[organization_id].members.iter().find(|m| {
            m.email.as_ref().map(Email::as_str) == Some(address)
                || known == Some(&m.user_id)
                || recorded(&m.user_id)
        })
    }

    fn owns_invitation(&self, organization_id: &str, invitation_id: &str) -> bool {
        self.ledger.iter().any(|e| {
            e.owned
                && e.kind == MembershipKind::Invitation
                && e.organization_id == organization_id
                && e.clerk_id.as_deref() == Some(invitation_id)
        })
    }

    fn owns_member(&self, organization_id: &str, user_id: &str) -> bool {
        self.ledger.iter().any(|e| {
            e.owned
                && e.organization_id == organization_id
                && match e.state {
                    MembershipState::Member => e.clerk_id.as_deref() == Some(user_id),
                    MembershipState::Accepted => {
                        e.kind == MembershipKind::Invitation
                            && self
                                .member_of(organization_id, e.email.as_str())
                                .is_some_and(|m| m.user_id == user_id)
                    }
                    _ => false,
                }
        })
    }

    fn desires(&self, organization_id: &str, address: &str, role: &str) -> bool {
        self.rows.iter().flatten().any(|row| {
            row.email.as_str() == address
                && self.resolves_to(&row.organization) == Some(organization_id)
                && row.role.as_deref().unwrap_or("org:member") == role
        })
    }
}

fn removed(item: &Item) -> bool {
    matches!(item, Item::Revoke { .. } | Item::RemoveMember { .. })
}

fn created(item: &Item) -> bool {
    matches!(
        item,
        Item::Invite { .. } | Item::AddMember { .. } | Item::Replace { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_address_is_both_created_and_removed_in_one_organization(world in world()) {
        let plan = world.run();
        let removals: HashSet<(&str, &str)> = plan.items.iter().filter(|i| removed(i))
            .map(|i| (i.email(), i.organization())).collect();
        for item in plan.items.iter().filter(|i| created(i)) {
            prop_assert!(!removals.contains(&(item.email(), item.organization())), "{item:?}");
        }
    }

    #[test]
    fn nothing_foreign_is_touched(world in world()) {
        for item in world.run().items {
            match &item {
                Item::Revoke { organization_id, invitation_id, .. }
                | Item::Replace { organization_id, invitation_id, .. } => {
                    prop_assert!(world.owns_invitation(organization_id, invitation_id), "{item:?}");
                }
                Item::RemoveMember { organization_id, user_id, .. } => {
                    prop_assert!(world.policy.remove_members);
                    prop_assert!(world.owns_member(organization_id, user_id), "{item:?}");
                }
                Item::ChangeRole { organization_id, user_id, .. } => {
                    prop_assert!(world.owns_member(organization_id, user_id), "{item:?}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_create_is_desired_with_its_role(world in world()) {
        for item in world.run().items {
            match &item {
                Item::Invite { organization_id, role, .. }
                | Item::AddMember { organization_id, role, .. }
                | Item::Replace { organization_id, role, .. } => {
                    prop_assert!(world.desires(organization_id, item.email(), role), "{item:?}");
                    prop_assert_ne!(role.as_str(), "org:boss");
                }
                Item::ChangeRole { organization_id, to, .. } => {
                    prop_assert!(world.desires(organization_id, item.email(), to), "{item:?}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn no_create_where_a_pending_invitation_or_a_membership_exists(world in world()) {
        for item in world.run().items.iter().filter(|i| i.takes_room()) {
            let (organization, address) = (item.organization(), item.email());
            prop_assert!(!world.pending(organization, address), "{item:?}");
            prop_assert!(world.member_of(organization, address).is_none(), "{item:?}");
        }
    }

    #[test]
    fn a_full_organization_never_gets_more_creates_than_its_room(world in world()) {
        let plan = world.run();
        for organization in ORGS {
            let creates = plan.items.iter()
                .filter(|i| i.organization() == organization && i.takes_room())
                .count();
            prop_assert!(creates <= world.room(organization), "{organization}: {creates}");
        }
    }

    #[test]
    fn someone_on_the_instance_roster_without_an_account_gets_no_organization_invitation(
        world in world()
    ) {
        let plan = world.run();
        for item in &plan.items {
            let address = email(item.email());
            let waits_for_instance = world.instance_first.contains(&address)
                && !world.users.contains_key(&address);
            if waits_for_instance {
                prop_assert!(!item.takes_room(), "{item:?}");
            }
            if let Item::Waiting { wait: Wait::InstanceFirst, .. } = item {
                prop_assert!(waits_for_instance, "{item:?}");
            }
            // Once an account is known, the policy decides as for anyone.
            if let Item::Invite { .. } = item {
                prop_assert!(
                    !world.instance_first.contains(&address)
                        || world.policy.existing_users == ExistingUsers::Invite,
                    "{item:?}"
                );
            }
        }
    }

    #[test]
    fn every_row_is_accounted_for(world in world()) {
        let plan = world.run();
        for row in &world.rows {
            let address = match row {
                Ok(row) => row.email.as_str(),
                Err(unreadable) => unreadable.email.as_str(),
            };
            prop_assert!(plan.items.iter().any(|i| i.email() == address), "{row:?}");
        }
    }
}
