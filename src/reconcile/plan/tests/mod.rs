use super::*;

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

pub(super) fn invitation(id: &str, address: &str, status: InvitationStatus) -> Invitation {
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
fn entry(id: i64, address: &str, invitation_id: Option<&str>, state: LedgerState) -> LedgerEntry {
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

#[test]
fn a_desired_person_without_an_invitation_is_created() {
    let ann = row_with(" Ann@Example.com ", json!({"team": "ops"}));
    let world = World::new().row(ann.clone());
    let plan = world.run();
    assert_eq!(plan.items, vec![create(world.invitee(&ann), false)]);
    let invitee = plan.creates().next().unwrap();
    assert_eq!(invitee.email.as_str(), "ann@example.com");
    assert_eq!(invitee.request.email_address, "ann@example.com");
    assert_eq!(invitee.metadata(), metadata(json!({"team": "ops"})));
}

#[test]
fn a_desired_person_whose_invitation_expired_in_clerk_is_reinvited() {
    let world = World::new().row(row("ann@x.com")).invitation(invitation(
        "inv_1",
        "ann@x.com",
        InvitationStatus::Expired,
    ));
    assert_eq!(
        world.run().items,
        vec![create(world.invitee(&row("ann@x.com")), true)]
    );
}

#[test]
fn a_desired_person_the_ledger_records_as_expired_is_reinvited() {
    let world =
        World::new()
            .row(row("ann@x.com"))
            .entry(entry(1, "ann@x.com", None, LedgerState::Expired));
    assert_eq!(only(&world.run()).category(), Category::Reinvite);
}

#[test]
fn a_ledger_pending_invitation_that_clerk_shows_expired_is_reinvited() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(invitation("inv_1", "ANN@x.com", InvitationStatus::Expired))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending));
    assert_eq!(only(&world.run()).category(), Category::Reinvite);
}

#[test]
fn with_reinvite_expired_off_an_expired_invitation_is_reported_and_not_sent() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(invitation("inv_1", "ann@x.com", InvitationStatus::Expired))
        .policy(|p| p.reinvite_expired = false);
    assert_eq!(
        world.run().items,
        vec![Item::Expired {
            email: email("ann@x.com")
        }]
    );

    let from_ledger = World::new()
        .row(row("bob@x.com"))
        .entry(entry(1, "bob@x.com", None, LedgerState::Expired))
        .policy(|p| p.reinvite_expired = false);
    assert_eq!(only(&from_ledger.run()).category(), Category::Expired);
}

#[test]
fn an_owned_pending_invitation_for_someone_no_longer_desired_is_revoked() {
    let world = World::new()
        .invitation(pending("inv_1", "Gone@X.com"))
        .entry(entry(1, "gone@x.com", Some("inv_1"), LedgerState::Pending));
    assert_eq!(
        world.run().items,
        vec![Item::Revoke {
            email: email("gone@x.com"),
            invitation_id: "inv_1".to_owned(),
        }]
    );
}

#[test]
fn a_pending_invitation_made_by_hand_for_someone_not_desired_is_reported_as_foreign_and_kept() {
    let unrecorded = World::new().invitation(pending("inv_1", "hand@x.com"));
    assert_eq!(
        unrecorded.run().items,
        vec![Item::Foreign {
            email: email("hand@x.com"),
            invitation_id: "inv_1".to_owned(),
        }]
    );

    // The ledger may have seen the invitation without having made it.
    let seen = World::new()
        .invitation(pending("inv_1", "hand@x.com"))
        .entry(LedgerEntry {
            owned: false,
            ..entry(1, "hand@x.com", Some("inv_1"), LedgerState::Pending)
        });
    let plan = seen.run();
    assert_eq!(only(&plan).category(), Category::Foreign);
    assert_eq!(plan.revocations().count(), 0);
}

#[test]
fn with_ownership_all_a_foreign_pending_invitation_is_revoked() {
    let world = World::new()
        .invitation(pending("inv_1", "hand@x.com"))
        .policy(|p| p.ownership = Ownership::All);
    assert_eq!(
        world.run().items,
        vec![Item::Revoke {
            email: email("hand@x.com"),
            invitation_id: "inv_1".to_owned(),
        }]
    );
}

#[test]
fn accepted_and_expired_invitations_of_people_not_desired_are_left_alone() {
    let world = World::new()
        .invitation(invitation("inv_1", "a@x.com", InvitationStatus::Accepted))
        .invitation(invitation("inv_2", "b@x.com", InvitationStatus::Expired))
        .entry(entry(1, "a@x.com", Some("inv_1"), LedgerState::Pending))
        .entry(entry(2, "b@x.com", Some("inv_2"), LedgerState::Pending))
        .policy(|p| p.ownership = Ownership::All);
    assert_eq!(world.run(), Plan::default());
}

#[test]
fn a_pending_invitation_whose_metadata_differs_from_the_roster_is_reported_stale() {
    let world = World::new()
        .row(row_with("ann@x.com", json!({"team": "ops"})))
        .invitation(Invitation {
            public_metadata: metadata(json!({"team": "dev"})),
            ..pending("inv_1", "ann@x.com")
        })
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending));
    assert_eq!(
        world.run().items,
        vec![Item::Stale {
            email: email("ann@x.com"),
            invitation_id: "inv_1".to_owned(),
            differences: vec!["public_metadata"],
        }]
    );
}

#[test]
fn an_owned_invitation_sent_with_another_redirect_than_the_roster_asks_is_stale() {
    let world = World::new()
        .row(DesiredRow {
            redirect_url: Some("https://new.example/in".to_owned()),
            ..row("ann@x.com")
        })
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(LedgerEntry {
            redirect_url: Some("https://old.example/in".to_owned()),
            ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
        });
    assert_eq!(
        world.run().items,
        vec![Item::Stale {
            email: email("ann@x.com"),
            invitation_id: "inv_1".to_owned(),
            differences: vec!["redirect_url"],
        }]
    );
}

#[test]
fn a_redirect_from_the_defaults_counts_as_what_the_roster_asks() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(LedgerEntry {
            redirect_url: Some("https://old.example/in".to_owned()),
            ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
        })
        .policy(|p| p.defaults.redirect_url = Some("https://new.example/in".to_owned()));
    assert_eq!(only(&world.run()).category(), Category::Stale);

    let same = World::new()
        .row(row("ann@x.com"))
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(LedgerEntry {
            redirect_url: Some("https://new.example/in".to_owned()),
            ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
        })
        .policy(|p| p.defaults.redirect_url = Some("https://new.example/in".to_owned()));
    assert_eq!(only(&same.run()).category(), Category::InSync);
}

#[test]
fn the_redirect_of_an_invitation_invite_sync_did_not_make_is_not_compared() {
    // Clerk does not report the redirect; only the ledger of an owned one knows it.
    let world = World::new()
        .row(DesiredRow {
            redirect_url: Some("https://new.example/in".to_owned()),
            ..row("ann@x.com")
        })
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(LedgerEntry {
            owned: false,
            redirect_url: Some("https://old.example/in".to_owned()),
            ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
        });
    assert_eq!(
        world.run().items,
        vec![Item::InSync {
            email: email("ann@x.com"),
            invitation_id: "inv_1".to_owned(),
            owned: false,
        }]
    );
}

#[test]
fn with_on_change_replace_an_owned_stale_invitation_is_replaced() {
    let ann = DesiredRow {
        redirect_url: Some("https://new.example/in".to_owned()),
        ..row_with("ann@x.com", json!({"team": "ops"}))
    };
    let world = World::new()
        .row(ann.clone())
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(LedgerEntry {
            redirect_url: Some("https://old.example/in".to_owned()),
            ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
        })
        .policy(|p| p.on_change = OnChange::Replace);
    let plan = world.run();
    assert_eq!(
        plan.items,
        vec![Item::Replace {
            invitee: world.invitee(&ann),
            invitation_id: "inv_1".to_owned(),
            differences: vec!["public_metadata", "redirect_url"],
        }]
    );
    assert_eq!(plan.creates().count(), 1);
    assert_eq!(
        plan.revocations().count(),
        0,
        "a replace is not a revocation of someone not desired"
    );
}

#[test]
fn with_on_change_replace_a_foreign_stale_invitation_is_only_reported() {
    let world = World::new()
        .row(row_with("ann@x.com", json!({"team": "ops"})))
        .invitation(pending("inv_1", "ann@x.com"))
        .policy(|p| p.on_change = OnChange::Replace);
    assert_eq!(
        world.run().items,
        vec![Item::Stale {
            email: email("ann@x.com"),
            invitation_id: "inv_1".to_owned(),
            differences: vec!["public_metadata"],
        }]
    );
}

#[test]
fn with_on_change_replace_and_ownership_all_a_foreign_stale_invitation_is_replaced() {
    let ann = row_with("ann@x.com", json!({"team": "ops"}));
    let world = World::new()
        .row(ann.clone())
        .invitation(pending("inv_1", "ann@x.com"))
        .policy(|p| {
            p.on_change = OnChange::Replace;
            p.ownership = Ownership::All;
        });
    assert_eq!(
        world.run().items,
        vec![Item::Replace {
            invitee: world.invitee(&ann),
            invitation_id: "inv_1".to_owned(),
            differences: vec!["public_metadata"],
        }]
    );
}

#[test]
fn ownership_all_alone_does_not_replace_a_stale_invitation() {
    let world = World::new()
        .row(row_with("ann@x.com", json!({"team": "ops"})))
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending))
        .policy(|p| p.ownership = Ownership::All);
    assert_eq!(only(&world.run()).category(), Category::Stale);
}

#[test]
fn an_unreadable_row_is_invalid_keeps_its_invitation_and_the_others_go_on() {
    let world = World::new()
        .unreadable("inf@x.com", "not_before is infinity")
        .unreadable("", "email is NULL")
        .row(row("good@x.com"))
        .invitation(pending("inv_1", "inf@x.com"))
        .entry(entry(1, "inf@x.com", Some("inv_1"), LedgerState::Pending));
    let plan = world.run();
    assert_eq!(
        plan.creates().map(|i| i.email.as_str()).collect::<Vec<_>>(),
        ["good@x.com"]
    );
    assert_eq!(plan.revocations().count(), 0, "{:#?}", plan.items);
    let invalid: Vec<(&str, &str)> = plan
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Invalid { email, reason } => Some((email.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        invalid,
        [
            ("", "email is NULL"),
            ("inf@x.com", "not_before is infinity")
        ]
    );
}

#[test]
fn each_kind_of_bad_row_is_reported_invalid_with_its_reason_and_the_others_go_on() {
    let bad: Vec<(DesiredRow, &str)> = vec![
        (row("not an email"), "whitespace"),
        (row("ann@"), "domain"),
        (row(""), "empty"),
        (row_with("b1@x.com", json!([1, 2])), "JSON object"),
        (row_with("b2@x.com", json!("ops")), "JSON object"),
        (
            row_with("b3@x.com", json!({"blob": "x".repeat(9_000)})),
            "at most",
        ),
        (
            DesiredRow {
                redirect_url: Some("ftp://x.example/in".to_owned()),
                ..row("b4@x.com")
            },
            "http or https",
        ),
        (
            DesiredRow {
                redirect_url: Some("not a url".to_owned()),
                ..row("b5@x.com")
            },
            "not a URL",
        ),
        (
            DesiredRow {
                expires_in_days: Some(0),
                ..row("b6@x.com")
            },
            "between 1 and 365",
        ),
        (
            DesiredRow {
                expires_in_days: Some(366),
                ..row("b7@x.com")
            },
            "between 1 and 365",
        ),
        (
            DesiredRow {
                template_slug: Some("welcome".to_owned()),
                ..row("b8@x.com")
            },
            "template_slug",
        ),
    ];
    let good = row("good@x.com");
    let mut world = World::new();
    for (row, _) in &bad {
        world = world.row(row.clone());
    }
    world = world.row(good.clone());
    let plan = world.run();

    assert_eq!(plan.items.len(), bad.len() + 1);
    assert_eq!(
        plan.creates().map(|i| i.email.as_str()).collect::<Vec<_>>(),
        ["good@x.com"]
    );
    for (row, reason) in &bad {
        let found = plan.items.iter().find(|item| match item {
            Item::Invalid { email, reason: r } => email == &row.email && r.contains(reason),
            _ => false,
        });
        assert!(
            found.is_some(),
            "{:?} should be invalid for {reason:?}: {:#?}",
            row.email,
            plan.items
        );
    }
}

#[test]
fn a_second_row_with_the_same_address_in_another_case_is_invalid() {
    let first = row_with("ann@x.com", json!({"n": 1}));
    let second = row_with("ANN@x.com", json!({"n": 2}));
    let world = World::new().row(first.clone()).row(second);
    let plan = world.run();
    assert_eq!(
        plan.items,
        vec![
            create(world.invitee(&first), false),
            Item::Invalid {
                email: "ann@x.com".to_owned(),
                reason: "another roster row has the same address".to_owned(),
            },
        ]
    );
}

#[test]
fn an_invalid_first_row_makes_a_later_valid_row_for_the_same_address_a_duplicate() {
    let world = World::new()
        .row(DesiredRow {
            expires_in_days: Some(0),
            ..row("ann@x.com")
        })
        .row(row("Ann@x.com"));
    let plan = world.run();
    assert_eq!(categories(&plan), [Category::Invalid, Category::Invalid]);
    assert_eq!(plan.creates().count(), 0);
}

#[test]
fn an_invalid_row_whose_address_parses_still_protects_that_persons_pending_invitation() {
    let world = World::new()
        .row(row_with("Ann@X.com", json!([1])))
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending))
        .policy(|p| p.ownership = Ownership::All);
    let plan = world.run();
    assert_eq!(categories(&plan), [Category::Invalid]);
    assert_eq!(plan.revocations().count(), 0);
}

#[test]
fn a_row_whose_address_does_not_parse_is_reported_as_written_and_protects_nobody() {
    let world = World::new()
        .row(row("ann at x.com"))
        .invitation(pending("inv_1", "ann@x.com"))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending));
    let plan = world.run();
    assert_eq!(categories(&plan), [Category::Revoke, Category::Invalid]);
    assert_eq!(plan.items[1].email(), "ann at x.com");
}

#[test]
fn an_invalid_row_whose_address_parses_is_reported_under_its_normalised_address() {
    let plan = World::new()
        .row(row_with(" Ann@X.com ", json!([1])))
        .row(row("bob@x.com"))
        .row(row("BOB@x.com"))
        .run();
    let invalid: Vec<&str> = plan
        .items
        .iter()
        .filter(|item| item.category() == Category::Invalid)
        .map(Item::email)
        .collect();
    assert_eq!(invalid, ["ann@x.com", "bob@x.com"]);
}

#[test]
fn a_row_not_before_a_future_time_is_deferred() {
    let world = World::new().row(DesiredRow {
        not_before: Some(now() + Duration::hours(1)),
        ..row("ann@x.com")
    });
    assert_eq!(
        world.run().items,
        vec![Item::Deferred {
            email: email("ann@x.com"),
            not_before: now() + Duration::hours(1),
        }]
    );
}

#[test]
fn a_row_whose_not_before_has_come_is_created() {
    for not_before in [now() - Duration::hours(1), now()] {
        let world = World::new().row(DesiredRow {
            not_before: Some(not_before),
            ..row("ann@x.com")
        });
        assert_eq!(
            only(&world.run()).category(),
            Category::Create,
            "{not_before}"
        );
    }
}

#[test]
fn a_deferred_row_that_already_has_its_pending_invitation_is_in_sync() {
    let world = World::new()
        .row(DesiredRow {
            not_before: Some(now() + Duration::hours(1)),
            ..row("ann@x.com")
        })
        .invitation(pending("inv_1", "ann@x.com"));
    assert_eq!(only(&world.run()).category(), Category::InSync);
}

#[test]
fn a_person_who_accepted_an_invitation_in_clerk_is_neither_invited_nor_revoked() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(invitation("inv_1", "Ann@x.com", InvitationStatus::Accepted))
        .invitation(pending("inv_2", "ann@x.com"))
        .entry(entry(1, "ann@x.com", Some("inv_2"), LedgerState::Pending));
    let plan = world.run();
    assert_eq!(
        plan.items,
        vec![Item::Accepted {
            email: email("ann@x.com")
        }]
    );
}

#[test]
fn a_person_the_ledger_records_as_accepted_is_never_invited_again() {
    let world = World::new()
        .row(row("ann@x.com"))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Accepted))
        .entry(entry(2, "ann@x.com", None, LedgerState::Revoked));
    assert_eq!(only(&world.run()).category(), Category::Accepted);
}

#[test]
fn a_ledger_pending_invitation_that_clerk_shows_accepted_counts_as_accepted() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(invitation("inv_1", "ann@x.com", InvitationStatus::Accepted))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending));
    assert_eq!(only(&world.run()).category(), Category::Accepted);
}

#[test]
fn someone_who_is_already_a_user_is_not_invited() {
    let world = World::new().row(row("Ann@X.com")).user("ann@x.com");
    assert_eq!(
        world.run().items,
        vec![Item::AlreadyUser {
            email: email("ann@x.com")
        }]
    );
}

#[test]
fn a_deleted_user_who_had_accepted_and_is_still_desired_is_invited_again() {
    let world = World::new()
        .row(row("ann@example.com"))
        .invitation(invitation(
            "inv_1",
            "ann@example.com",
            InvitationStatus::Accepted,
        ))
        .entry(entry(
            1,
            "ann@example.com",
            Some("inv_1"),
            LedgerState::Accepted,
        ))
        .deleted_user("ann@example.com");
    let invitee = world.invitee(&row("ann@example.com"));
    assert_eq!(only(&world.run()), &create(invitee, false));
}

#[test]
fn a_deleted_user_invited_again_is_in_sync_while_the_new_invitation_waits() {
    let world = World::new()
        .row(row("ann@example.com"))
        .invitation(invitation(
            "inv_1",
            "ann@example.com",
            InvitationStatus::Accepted,
        ))
        .invitation(pending("inv_2", "ann@example.com"))
        .deleted_user("ann@example.com");
    assert_eq!(categories(&world.run()), [Category::InSync]);
}

#[test]
fn an_owned_invitation_revoked_outside_invite_sync_is_not_sent_again_for_the_same_row() {
    let ann = row_with("ann@x.com", json!({"team": "ops"}));
    let digest = World::new().invitee(&ann).digest;
    let world = World::new().row(ann).entry(LedgerEntry {
        row_digest: Some(digest),
        ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
    });
    assert_eq!(
        world.run().items,
        vec![Item::RevokedExternally {
            email: email("ann@x.com"),
            invitation_id: Some("inv_1".to_owned()),
        }]
    );
}

#[test]
fn once_the_row_changes_a_person_revoked_outside_invite_sync_is_invited_again() {
    let before = row_with("ann@x.com", json!({"team": "ops"}));
    let after = row_with("ann@x.com", json!({"team": "dev"}));
    let digest = World::new().invitee(&before).digest;
    let world = World::new().row(after.clone()).entry(LedgerEntry {
        row_digest: Some(digest),
        ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending)
    });
    assert_eq!(
        world.run().items,
        vec![create(world.invitee(&after), false)]
    );
}

#[test]
fn an_invitation_invite_sync_revoked_itself_is_sent_again_when_the_person_is_desired_again() {
    let ann = row("ann@x.com");
    let digest = World::new().invitee(&ann).digest;
    let world = World::new().row(ann).entry(LedgerEntry {
        row_digest: Some(digest),
        revoked_by_us: true,
        ..entry(1, "ann@x.com", Some("inv_1"), LedgerState::Revoked)
    });
    assert_eq!(only(&world.run()).category(), Category::Create);
}

fn failed(digest: Option<String>, terminal: bool, next: Option<DateTime<Utc>>) -> LedgerEntry {
    LedgerEntry {
        row_digest: digest,
        terminal,
        next_attempt_at: next,
        last_error_code: Some("form_param_value_invalid".to_owned()),
        last_error: Some("refused".to_owned()),
        ..entry(1, "ann@x.com", None, LedgerState::Failed)
    }
}

#[test]
fn a_terminal_failure_holds_the_same_row_without_a_retry_time() {
    let ann = row("ann@x.com");
    let digest = World::new().invitee(&ann).digest;
    let world = World::new()
        .row(ann)
        .entry(failed(Some(digest), true, None));
    assert_eq!(
        world.run().items,
        vec![Item::Failed {
            email: email("ann@x.com"),
            code: Some("form_param_value_invalid".to_owned()),
            reason: Some("refused".to_owned()),
            retry_at: None,
        }]
    );
}

#[test]
fn a_terminal_failure_is_retried_once_the_row_changes() {
    let before = row("ann@x.com");
    let digest = World::new().invitee(&before).digest;
    let world = World::new()
        .row(row_with("ann@x.com", json!({"fixed": true})))
        .entry(failed(Some(digest), true, None));
    assert_eq!(only(&world.run()).category(), Category::Create);
}

#[test]
fn a_transient_failure_waits_for_its_next_attempt() {
    let retry = now() + Duration::minutes(5);
    let world = World::new()
        .row(row("ann@x.com"))
        .entry(failed(None, false, Some(retry)));
    assert_eq!(
        world.run().items,
        vec![Item::Failed {
            email: email("ann@x.com"),
            code: Some("form_param_value_invalid".to_owned()),
            reason: Some("refused".to_owned()),
            retry_at: Some(retry),
        }]
    );
}

#[test]
fn a_transient_failure_whose_next_attempt_has_come_is_retried() {
    for next in [Some(now() - Duration::minutes(5)), Some(now()), None] {
        let world = World::new()
            .row(row("ann@x.com"))
            .entry(failed(None, false, next));
        assert_eq!(only(&world.run()).category(), Category::Create, "{next:?}");
    }
}

#[test]
fn a_create_still_sending_is_unsettled_and_not_sent_again() {
    let world =
        World::new()
            .row(row("ann@x.com"))
            .entry(entry(1, "ann@x.com", None, LedgerState::Sending));
    let plan = world.run();
    assert_eq!(
        plan.items,
        vec![Item::Unsettled {
            email: email("ann@x.com")
        }]
    );
    assert_eq!(plan.creates().count(), 0);
}

#[test]
fn an_unsettled_create_is_settled_before_anything_else_is_decided() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(invitation("inv_1", "ann@x.com", InvitationStatus::Accepted))
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Accepted))
        .entry(entry(2, "ann@x.com", None, LedgerState::Sending));
    assert_eq!(only(&world.run()).category(), Category::Unsettled);
}

#[test]
fn a_pending_invitation_carrying_the_roster_metadata_is_in_sync() {
    let world = World::new()
        .row(row_with("ann@x.com", json!({"team": "ops", "level": 2})))
        .invitation(Invitation {
            public_metadata: metadata(json!({"level": 2, "team": "ops"})),
            ..pending("inv_1", "ann@x.com")
        })
        .entry(entry(1, "ann@x.com", Some("inv_1"), LedgerState::Pending));
    assert_eq!(
        world.run().items,
        vec![Item::InSync {
            email: email("ann@x.com"),
            invitation_id: "inv_1".to_owned(),
            owned: true,
        }]
    );
}

#[test]
fn a_foreign_pending_invitation_for_a_desired_person_is_in_sync_and_not_duplicated() {
    let world = World::new()
        .row(row("ann@x.com"))
        .invitation(pending("inv_1", "ann@x.com"));
    let plan = world.run();
    assert_eq!(
        plan.items,
        vec![Item::InSync {
            email: email("ann@x.com"),
            invitation_id: "inv_1".to_owned(),
            owned: false,
        }]
    );
    assert_eq!(plan.creates().count(), 0);
}

#[test]
fn of_several_pending_invitations_the_newest_is_the_one_compared() {
    let world = World::new()
        .row(row_with("ann@x.com", json!({"v": 2})))
        .invitation(Invitation {
            public_metadata: metadata(json!({"v": 2})),
            created_at: 20,
            ..pending("inv_new", "ann@x.com")
        })
        .invitation(Invitation {
            public_metadata: metadata(json!({"v": 1})),
            created_at: 10,
            ..pending("inv_old", "ann@x.com")
        });
    assert_eq!(only(&world.run()).invitation_id(), Some("inv_new"));
}

#[test]
fn emails_are_compared_without_regard_to_case_between_roster_clerk_and_ledger() {
    let world = World::new()
        .row(row("Ann@X.com"))
        .row(row(" CARL@x.COM"))
        .row(row("Dee@X.com"))
        .invitation(pending("inv_1", "ann@x.com"))
        .invitation(pending("inv_2", "dEE@x.com"))
        .entry(entry(1, "ANN@x.com", Some("inv_1"), LedgerState::Pending))
        .user("carl@x.com");
    let plan = world.run();
    assert_eq!(
        plan.items,
        vec![
            Item::AlreadyUser {
                email: email("carl@x.com")
            },
            Item::InSync {
                email: email("ann@x.com"),
                invitation_id: "inv_1".to_owned(),
                owned: true,
            },
            Item::InSync {
                email: email("dee@x.com"),
                invitation_id: "inv_2".to_owned(),
                owned: false,
            },
        ]
    );
}

#[test]
fn revocations_come_first_then_replacements_then_creates_then_the_rest() {
    let world = World::new()
        .row(row("hand@x.com"))
        .row(DesiredRow {
            created_at: Some(at(900)),
            ..row_with("rep@x.com", json!({"v": 2}))
        })
        .row(DesiredRow {
            created_at: Some(at(1)),
            ..row("new@x.com")
        })
        .row(row("bad email"))
        .row(DesiredRow {
            not_before: Some(now() + Duration::days(1)),
            ..row("later@x.com")
        })
        .invitation(pending("inv_hand", "hand@x.com"))
        .invitation(pending("inv_rep", "rep@x.com"))
        .invitation(pending("inv_zed", "zed@x.com"))
        .invitation(pending("inv_amy", "amy@x.com"))
        .invitation(pending("inv_foreign", "foreign@x.com"))
        .entry(entry(1, "rep@x.com", Some("inv_rep"), LedgerState::Pending))
        .entry(entry(2, "zed@x.com", Some("inv_zed"), LedgerState::Pending))
        .entry(entry(3, "amy@x.com", Some("inv_amy"), LedgerState::Pending))
        .policy(|p| p.on_change = OnChange::Replace);
    let plan = world.run();
    let order: Vec<(Category, &str)> = plan
        .items
        .iter()
        .map(|item| (item.category(), item.email()))
        .collect();
    assert_eq!(
        order,
        [
            (Category::Revoke, "amy@x.com"),
            (Category::Revoke, "zed@x.com"),
            (Category::Replace, "rep@x.com"),
            (Category::Create, "new@x.com"),
            (Category::Foreign, "foreign@x.com"),
            (Category::Invalid, "bad email"),
            (Category::Deferred, "later@x.com"),
            (Category::InSync, "hand@x.com"),
        ]
    );
}

#[test]
fn creates_are_queued_by_oldest_not_before_or_else_row_age_then_oldest_row() {
    let rows = [
        DesiredRow {
            created_at: Some(at(5)),
            ..row("a@x.com")
        },
        DesiredRow {
            not_before: Some(at(1)),
            created_at: Some(at(9)),
            ..row("b@x.com")
        },
        DesiredRow {
            created_at: Some(at(3)),
            ..row("c@x.com")
        },
        DesiredRow {
            not_before: Some(at(3)),
            created_at: Some(at(2)),
            ..row("d@x.com")
        },
        DesiredRow {
            created_at: Some(at(4)),
            ..row("e@x.com")
        },
    ];
    let mut world =
        World::new().invitation(invitation("inv_e", "e@x.com", InvitationStatus::Expired));
    for row in rows {
        world = world.row(row);
    }
    let plan = world.run();
    let queue: Vec<&str> = plan.creates().map(|i| i.email.as_str()).collect();
    assert_eq!(
        queue,
        ["b@x.com", "d@x.com", "c@x.com", "e@x.com", "a@x.com"]
    );
    assert_eq!(
        categories(&plan),
        [
            Category::Create,
            Category::Create,
            Category::Create,
            Category::Reinvite,
            Category::Create
        ],
        "reinvites share the queue with creates"
    );
}

#[test]
fn rows_queued_at_the_same_time_are_sent_in_address_order() {
    let plan = World::new()
        .row(DesiredRow {
            created_at: Some(at(1)),
            ..row("zed@x.com")
        })
        .row(DesiredRow {
            created_at: Some(at(1)),
            ..row("amy@x.com")
        })
        .run();
    let queue: Vec<&str> = plan.creates().map(|i| i.email.as_str()).collect();
    assert_eq!(queue, ["amy@x.com", "zed@x.com"]);
}

#[test]
fn the_rest_is_ordered_by_category_then_email() {
    let plan = World::new()
        .row(row("zed@x.com"))
        .row(row("amy@x.com"))
        .row(row("bob@x.com"))
        .user("zed@x.com")
        .user("amy@x.com")
        .invitation(pending("inv_b", "bob@x.com"))
        .invitation(pending("inv_y", "yan@x.com"))
        .invitation(pending("inv_c", "cat@x.com"))
        .run();
    let order: Vec<(Category, &str)> = plan
        .items
        .iter()
        .map(|item| (item.category(), item.email()))
        .collect();
    assert_eq!(
        order,
        [
            (Category::Foreign, "cat@x.com"),
            (Category::Foreign, "yan@x.com"),
            (Category::AlreadyUser, "amy@x.com"),
            (Category::AlreadyUser, "zed@x.com"),
            (Category::InSync, "bob@x.com"),
        ]
    );
}

#[test]
fn counts_tally_each_category() {
    let plan = World::new()
        .row(row("a@x.com"))
        .row(row("b@x.com"))
        .row(row("c@x.com"))
        .row(row("bad email"))
        .invitation(invitation("inv_c", "c@x.com", InvitationStatus::Expired))
        .invitation(pending("inv_d", "d@x.com"))
        .invitation(pending("inv_e", "e@x.com"))
        .entry(entry(1, "d@x.com", Some("inv_d"), LedgerState::Pending))
        .run();
    let expected: BTreeMap<Category, usize> = [
        (Category::Revoke, 1),
        (Category::Create, 2),
        (Category::Reinvite, 1),
        (Category::Foreign, 1),
        (Category::Invalid, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(plan.counts(), expected);
    assert_eq!(Plan::default().counts(), BTreeMap::new());
}

#[test]
fn creates_and_revocations_list_exactly_what_is_to_be_sent() {
    let world = World::new()
        .row(row("new@x.com"))
        .row(row_with("rep@x.com", json!({"v": 2})))
        .row(row("old@x.com"))
        .invitation(pending("inv_rep", "rep@x.com"))
        .invitation(pending("inv_gone", "gone@x.com"))
        .invitation(invitation(
            "inv_old",
            "old@x.com",
            InvitationStatus::Expired,
        ))
        .invitation(pending("inv_foreign", "foreign@x.com"))
        .entry(entry(1, "rep@x.com", Some("inv_rep"), LedgerState::Pending))
        .entry(entry(
            2,
            "gone@x.com",
            Some("inv_gone"),
            LedgerState::Pending,
        ))
        .policy(|p| p.on_change = OnChange::Replace);
    let plan = world.run();
    let mut creates: Vec<&str> = plan.creates().map(|i| i.email.as_str()).collect();
    creates.sort_unstable();
    assert_eq!(creates, ["new@x.com", "old@x.com", "rep@x.com"]);
    let revocations: Vec<(&str, &str)> = plan
        .revocations()
        .map(|(email, id)| (email.as_str(), id))
        .collect();
    assert_eq!(revocations, [("gone@x.com", "inv_gone")]);
}

#[test]
fn an_empty_world_plans_nothing() {
    assert_eq!(World::new().run(), Plan::default());
}

#[test]
fn observe_takes_clerks_status_for_pending_and_expired_entries_and_marks_missing_ones_revoked() {
    let clerk = [
        invitation("inv_a", "a@x.com", InvitationStatus::Accepted),
        invitation("inv_b", "b@x.com", InvitationStatus::Expired),
        invitation("inv_c", "c@x.com", InvitationStatus::Pending),
        invitation("inv_d", "d@x.com", InvitationStatus::Revoked),
    ];
    let ledger = [
        entry(1, "a@x.com", Some("inv_a"), LedgerState::Pending),
        entry(2, "b@x.com", Some("inv_b"), LedgerState::Pending),
        entry(3, "c@x.com", Some("inv_c"), LedgerState::Expired),
        entry(4, "d@x.com", Some("inv_d"), LedgerState::Pending),
        entry(5, "e@x.com", Some("inv_gone"), LedgerState::Expired),
    ];
    let states: Vec<LedgerState> = observe(&ledger, &clerk, Listing::Full)
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        states,
        [
            LedgerState::Accepted,
            LedgerState::Expired,
            LedgerState::Pending,
            LedgerState::Revoked,
            LedgerState::Revoked,
        ]
    );
}

#[test]
fn a_pending_only_listing_takes_an_entry_for_revoked_only_when_a_lookup_found_it_nowhere() {
    let clerk = [
        invitation("inv_a", "a@x.com", InvitationStatus::Accepted),
        invitation("inv_b", "b@x.com", InvitationStatus::Expired),
        invitation("inv_c", "c@x.com", InvitationStatus::Pending),
    ];
    let ledger = [
        entry(1, "a@x.com", Some("inv_a"), LedgerState::Pending),
        entry(2, "b@x.com", Some("inv_b"), LedgerState::Pending),
        entry(3, "c@x.com", Some("inv_c"), LedgerState::Pending),
        entry(4, "d@x.com", Some("inv_d"), LedgerState::Pending),
        entry(5, "e@x.com", Some("inv_e"), LedgerState::Expired),
        entry(6, "f@x.com", Some("inv_f"), LedgerState::Pending),
    ];
    let found_nowhere: HashSet<String> = ["inv_f".to_owned()].into();
    let states: Vec<LedgerState> = observe(
        &ledger,
        &clerk,
        Listing::Pending {
            found_nowhere: &found_nowhere,
        },
    )
    .iter()
    .map(|e| e.state)
    .collect();
    assert_eq!(
        states,
        [
            LedgerState::Accepted,
            LedgerState::Expired,
            LedgerState::Pending,
            LedgerState::Pending,
            LedgerState::Expired,
            LedgerState::Revoked,
        ]
    );
}

#[test]
fn observe_leaves_entries_in_other_states_or_without_an_id_alone() {
    let clerk = [invitation("inv_a", "a@x.com", InvitationStatus::Pending)];
    let ledger = [
        entry(1, "a@x.com", Some("inv_a"), LedgerState::Sending),
        entry(2, "a@x.com", Some("inv_a"), LedgerState::Failed),
        entry(3, "a@x.com", Some("inv_gone"), LedgerState::Accepted),
        entry(4, "a@x.com", None, LedgerState::Pending),
        LedgerEntry {
            revoked_by_us: true,
            ..entry(5, "a@x.com", Some("inv_a"), LedgerState::Revoked)
        },
    ];
    assert_eq!(observe(&ledger, &clerk, Listing::Full), ledger.to_vec());
}

const POOL: [&str; 8] = [
    "ann@x.com",
    "bob@x.com",
    "cy@y.org",
    "dee@x.com",
    "eve@y.org",
    "fay@x.com",
    "gus@x.com",
    "hal@y.org",
];

const REDIRECTS: [Option<&str>; 3] = [
    None,
    Some("https://a.example/in"),
    Some("https://b.example/in"),
];

const STATES: [LedgerState; 6] = [
    LedgerState::Sending,
    LedgerState::Pending,
    LedgerState::Accepted,
    LedgerState::Revoked,
    LedgerState::Expired,
    LedgerState::Failed,
];

static NO_ONE: std::sync::LazyLock<HashSet<Email>> = std::sync::LazyLock::new(HashSet::new);

#[derive(Debug, Clone)]
struct Scenario {
    desired: Vec<DesiredRow>,
    clerk: Vec<Invitation>,
    ledger: Vec<LedgerEntry>,
    known_users: HashSet<Email>,
    policy: Policy,
}

impl Scenario {
    fn plan(&self) -> Plan {
        let desired: Vec<_> = self.desired.iter().cloned().map(Ok).collect();
        let inputs = Inputs {
            desired: &desired,
            clerk: &self.clerk,
            ledger: &self.ledger,
            known_users: &self.known_users,
            deleted_users: &NO_ONE,
            listing: Listing::Full,
            now: now(),
        };
        plan(inputs, &self.policy)
    }

    fn parsed_desired(&self) -> HashSet<Email> {
        self.desired
            .iter()
            .filter_map(|row| Email::parse(&row.email).ok())
            .collect()
    }

    fn first_row(&self, email: &Email) -> Option<&DesiredRow> {
        self.desired
            .iter()
            .find(|row| Email::parse(&row.email).ok().as_ref() == Some(email))
    }

    fn clerk_for<'a>(&'a self, email: &'a Email) -> impl Iterator<Item = &'a Invitation> + 'a {
        self.clerk
            .iter()
            .filter(move |i| Email::parse(&i.email_address).ok().as_ref() == Some(email))
    }

    fn pending_for<'a>(&'a self, email: &'a Email) -> impl Iterator<Item = &'a Invitation> + 'a {
        self.clerk_for(email)
            .filter(|i| i.status == InvitationStatus::Pending)
    }

    fn owns(&self, invitation_id: &str) -> bool {
        self.ledger
            .iter()
            .any(|e| e.owned && e.clerk_invitation_id.as_deref() == Some(invitation_id))
    }
}

/// Random case and padding, so that spellings of one address collide across inputs.
fn spelled() -> impl Strategy<Value = String> {
    (0..POOL.len(), any::<u16>(), prop::bool::weighted(0.1)).prop_map(|(i, mask, pad)| {
        let spelled: String = POOL[i]
            .chars()
            .enumerate()
            .map(|(k, c)| {
                if (mask >> (k % 16)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        if pad {
            format!(" {spelled}  ")
        } else {
            spelled
        }
    })
}

fn object_metadata() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(json!({})),
        3 => Just(json!({"team": "a"})),
        2 => Just(json!({"team": "b", "n": 1})),
    ]
}

fn time_choice() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(now() - Duration::hours(1))),
        1 => Just(Some(now())),
        1 => Just(Some(now() + Duration::hours(1))),
    ]
}

fn desired_row() -> impl Strategy<Value = DesiredRow> {
    (
        spelled(),
        object_metadata(),
        0..REDIRECTS.len(),
        time_choice(),
        prop::option::of(0..20i64),
        0..32u8,
    )
        .prop_map(|(address, metadata, redirect, not_before, created, flaw)| {
            let mut row = DesiredRow {
                public_metadata: metadata,
                redirect_url: REDIRECTS[redirect].map(str::to_owned),
                not_before,
                created_at: created.map(at),
                ..DesiredRow::new(address)
            };
            match flaw {
                0 => row.email = "not an email".to_owned(),
                1 => row.public_metadata = json!(["not", "an", "object"]),
                2 => row.public_metadata = json!({"blob": "x".repeat(9_000)}),
                3 => row.redirect_url = Some("ftp://x.example/in".to_owned()),
                4 => row.expires_in_days = Some(0),
                5 => row.template_slug = Some("welcome".to_owned()),
                _ => {}
            }
            row
        })
}

fn clerk_invitation() -> impl Strategy<Value = (String, InvitationStatus, Value, i64)> {
    (
        spelled(),
        prop::sample::select(InvitationStatus::ALL.to_vec()),
        object_metadata(),
        0..20i64,
    )
}

/// A ledger entry before it is tied to the generated invitations and rows.
#[derive(Debug, Clone)]
struct RawEntry {
    link: Option<usize>,
    follow_invitation_email: bool,
    address: String,
    state: LedgerState,
    owned: bool,
    digest: u8,
    redirect: usize,
    terminal: bool,
    next_attempt_at: Option<DateTime<Utc>>,
    revoked_by_us: bool,
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    (
        (
            prop::option::of(0..11usize),
            prop::bool::weighted(0.9),
            spelled(),
            prop_oneof![
                1 => prop::sample::select(STATES.to_vec()),
                1 => Just(LedgerState::Pending),
                1 => Just(LedgerState::Failed),
            ],
            prop::bool::weighted(0.7),
        ),
        (
            0..4u8,
            0..REDIRECTS.len(),
            any::<bool>(),
            time_choice(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (link, follow_invitation_email, address, state, owned),
                (digest, redirect, terminal, next_attempt_at, revoked_by_us),
            )| RawEntry {
                link,
                follow_invitation_email,
                address,
                state,
                owned,
                digest,
                redirect,
                terminal,
                next_attempt_at,
                revoked_by_us,
            },
        )
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0..REDIRECTS.len(),
        any::<bool>(),
    )
        .prop_map(
            |(all, replace, reinvite_expired, redirect, notify)| Policy {
                ownership: if all {
                    Ownership::All
                } else {
                    Ownership::Owned
                },
                on_change: if replace {
                    OnChange::Replace
                } else {
                    OnChange::Report
                },
                reinvite_expired,
                defaults: RowDefaults {
                    notify,
                    redirect_url: REDIRECTS[redirect].map(str::to_owned),
                    ..RowDefaults::default()
                },
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(desired_row(), 0..8),
        prop::collection::vec(clerk_invitation(), 0..10),
        prop::collection::vec(raw_entry(), 0..10),
        prop::collection::hash_set(0..POOL.len(), 0..3),
        policy(),
    )
        .prop_map(|(desired, clerk, raw_ledger, users, policy)| {
            let clerk: Vec<Invitation> = clerk
                .into_iter()
                .enumerate()
                .map(|(k, (address, status, metadata, created_at))| Invitation {
                    public_metadata: metadata.as_object().cloned().unwrap(),
                    created_at,
                    ..invitation(&format!("inv_{k}"), &address, status)
                })
                .collect();
            let ledger = raw_ledger
                .into_iter()
                .enumerate()
                .map(|(id, raw)| {
                    let linked = raw.link.and_then(|k| clerk.get(k));
                    let address = match linked {
                        Some(invitation) if raw.follow_invitation_email => {
                            invitation.email_address.clone()
                        }
                        _ => raw.address,
                    };
                    let email = Email::parse(&address).unwrap();
                    let clerk_invitation_id = match (raw.link, linked) {
                        (_, Some(invitation)) => Some(invitation.id.clone()),
                        (Some(k), None) => Some(format!("inv_gone_{k}")),
                        (None, _) => None,
                    };
                    let same_row = desired
                        .iter()
                        .find(|row| Email::parse(&row.email).ok().as_ref() == Some(&email))
                        .and_then(|row| DesiredInvitee::from_row(row, &policy.defaults).ok())
                        .map(|invitee| invitee.digest);
                    let row_digest = match raw.digest {
                        0 => None,
                        1 => Some("another row".to_owned()),
                        _ => same_row,
                    };
                    LedgerEntry {
                        id: id as i64,
                        email,
                        clerk_invitation_id,
                        state: raw.state,
                        owned: raw.owned,
                        row_digest,
                        redirect_url: REDIRECTS[raw.redirect].map(str::to_owned),
                        attempts: 1,
                        last_error_code: None,
                        last_error: None,
                        terminal: raw.terminal,
                        next_attempt_at: raw.next_attempt_at,
                        revoked_by_us: raw.revoked_by_us,
                        created_at: at(id as i64),
                        sent_at: None,
                    }
                })
                .collect();
            let known_users = users.into_iter().map(|k| email(POOL[k])).collect();
            Scenario {
                desired,
                clerk,
                ledger,
                known_users,
                policy,
            }
        })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn sent(plan: &Plan) -> (Vec<&Email>, Vec<(&Email, &str)>) {
    (
        plan.creates().map(|invitee| &invitee.email).collect(),
        plan.revocations().collect(),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_email_is_both_created_and_revoked(s in scenario()) {
        let plan = s.plan();
        let (creates, revocations) = sent(&plan);
        for (email, id) in &revocations {
            prop_assert!(!creates.contains(email), "{email} is created and revoked ({id})");
        }
        let unique: HashSet<&Email> = creates.iter().copied().collect();
        prop_assert_eq!(unique.len(), creates.len(), "an email is created twice");
    }

    #[test]
    fn nothing_foreign_is_revoked(s in scenario()) {
        let plan = s.plan();
        let desired = s.parsed_desired();
        for item in &plan.items {
            let (email, id) = match item {
                Item::Revoke { email, invitation_id } => {
                    prop_assert!(!desired.contains(email), "{email} is desired");
                    (email, invitation_id)
                }
                Item::Replace { invitee, invitation_id, .. } => (&invitee.email, invitation_id),
                _ => continue,
            };
            prop_assert!(
                s.policy.ownership == Ownership::All || s.owns(id),
                "{id} of {email} is not owned"
            );
            prop_assert!(
                s.pending_for(email).any(|i| &i.id == id),
                "{id} is not a pending invitation of {email}"
            );
        }
    }

    #[test]
    fn every_create_is_for_the_first_valid_row_of_a_desired_email(s in scenario()) {
        let plan = s.plan();
        for invitee in plan.creates() {
            let row = s.first_row(&invitee.email);
            prop_assert!(row.is_some(), "{} is not desired", invitee.email);
            let expected = DesiredInvitee::from_row(row.unwrap(), &s.policy.defaults);
            prop_assert_eq!(expected.as_ref().ok(), Some(invitee));
        }
    }

    #[test]
    fn no_create_for_an_email_with_a_pending_invitation(s in scenario()) {
        let plan = s.plan();
        for item in &plan.items {
            match item {
                Item::Create { invitee, .. } => {
                    let live: Vec<&str> =
                        s.pending_for(&invitee.email).map(|i| i.id.as_str()).collect();
                    prop_assert!(live.is_empty(), "{} has {live:?}", invitee.email);
                }
                Item::Replace { invitee, invitation_id, .. } => {
                    // The deliberate exception: it revokes the newest pending one first.
                    let newest = s
                        .pending_for(&invitee.email)
                        .max_by_key(|i| (i.created_at, i.id.clone()));
                    prop_assert_eq!(newest.map(|i| &i.id), Some(invitation_id));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn each_row_and_each_pending_invitation_of_someone_not_desired_yields_one_item(
        s in scenario()
    ) {
        let plan = s.plan();
        let desired = s.parsed_desired();
        let (about_invitations, about_rows): (Vec<&Item>, Vec<&Item>) = plan
            .items
            .iter()
            .partition(|item| matches!(item, Item::Revoke { .. } | Item::Foreign { .. }));

        prop_assert_eq!(about_rows.len(), s.desired.len());
        for row in &s.desired {
            let key = Email::parse(&row.email)
                .map(|e| e.as_str().to_owned())
                .unwrap_or_else(|_| row.email.clone());
            let rows = s
                .desired
                .iter()
                .filter(|r| {
                    Email::parse(&r.email).map(|e| e.as_str().to_owned()).unwrap_or_else(|_| r.email.clone())
                        == key
                })
                .count();
            let items = about_rows
                .iter()
                .filter(|item| {
                    Email::parse(item.email()).map(|e| e.as_str().to_owned())
                        .unwrap_or_else(|_| item.email().to_owned())
                        == key
                })
                .count();
            prop_assert_eq!(items, rows, "rows and items of {}", key);
        }

        let mut expected: Vec<&str> = s
            .clerk
            .iter()
            .filter(|i| i.status == InvitationStatus::Pending)
            .filter(|i| Email::parse(&i.email_address).is_ok_and(|e| !desired.contains(&e)))
            .map(|i| i.id.as_str())
            .collect();
        let mut actual: Vec<&str> = about_invitations
            .iter()
            .filter_map(|item| item.invitation_id())
            .collect();
        expected.sort_unstable();
        actual.sort_unstable();
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn no_create_for_an_accepted_known_or_unsettled_email(s in scenario()) {
        let plan = s.plan();
        let observed = observe(&s.ledger, &s.clerk, Listing::Full);
        for invitee in plan.creates() {
            let email = &invitee.email;
            prop_assert!(!s.known_users.contains(email), "{email} is a user");
            prop_assert!(
                !s.clerk_for(email).any(|i| i.status == InvitationStatus::Accepted),
                "{email} accepted in Clerk"
            );
            let entries: Vec<&LedgerEntry> =
                observed.iter().filter(|e| &e.email == email).collect();
            prop_assert!(
                !entries.iter().any(|e| e.state == LedgerState::Accepted),
                "{email} accepted in the ledger"
            );
            prop_assert!(
                !entries.iter().any(|e| e.state == LedgerState::Sending),
                "{email} is unsettled"
            );
        }
    }

    #[test]
    fn the_plan_is_deterministic(s in scenario()) {
        let first = s.plan();
        let again = s.clone().plan();
        prop_assert_eq!(&first, &again);
        prop_assert_eq!(first, s.plan());
    }

    #[test]
    fn the_plan_is_ordered_revocations_replacements_creates_then_the_rest(s in scenario()) {
        let plan = s.plan();
        let rank = |item: &Item| match item.category() {
            Category::Revoke => 0,
            Category::Replace => 1,
            Category::Create | Category::Reinvite => 2,
            _ => 3,
        };
        let ranks: Vec<u8> = plan.items.iter().map(rank).collect();
        prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");

        let queue: Vec<_> = plan
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Create { invitee, .. } => Some((
                    invitee.not_before.or(invitee.created_at),
                    invitee.created_at,
                    invitee.email.as_str(),
                )),
                _ => None,
            })
            .collect();
        prop_assert!(queue.windows(2).all(|w| w[0] <= w[1]), "{queue:?}");

        let rest: Vec<(Category, &str)> = plan
            .items
            .iter()
            .filter(|item| rank(item) == 3)
            .map(|item| (item.category(), item.email()))
            .collect();
        prop_assert!(rest.windows(2).all(|w| w[0] <= w[1]), "{rest:?}");
    }

    #[test]
    fn counts_add_up_to_the_items(s in scenario()) {
        let plan = s.plan();
        prop_assert_eq!(plan.counts().values().sum::<usize>(), plan.items.len());
        let counts = plan.counts();
        let count = |c: Category| counts.get(&c).copied().unwrap_or(0);
        prop_assert_eq!(
            plan.creates().count(),
            count(Category::Create) + count(Category::Reinvite) + count(Category::Replace)
        );
        prop_assert_eq!(plan.revocations().count(), count(Category::Revoke));
    }

    #[test]
    fn a_cycle_plan_holds_the_queue_head_and_counts_the_rest_as_the_whole_plan_does(
        s in scenario(),
        head in 1usize..6,
    ) {
        let whole = s.plan();
        let desired: Vec<_> = s.desired.iter().cloned().map(Ok).collect();
        let inputs = Inputs {
            desired: &desired,
            clerk: &s.clerk,
            ledger: &s.ledger,
            known_users: &s.known_users,
            deleted_users: &NO_ONE,
            listing: Listing::Full,
            now: now(),
        };
        let owned = owned_ids(&s.ledger);
        let planner = Planner::new(&s.clerk, &owned, Listing::Full, now(), &s.policy)
            .counting_quiet()
            .keeping_creates(head);
        let cycle = feed(inputs, planner);
        prop_assert_eq!(cycle.counts(), whole.counts());
        prop_assert_eq!(cycle.queued(), whole.queued());
        // The creates held are the whole plan's first, in its order, and replacements all stay.
        let fresh = |plan: &Plan| -> Vec<Email> {
            plan.items
                .iter()
                .filter_map(|item| match item {
                    Item::Create { invitee, .. } => Some(invitee.email.clone()),
                    _ => None,
                })
                .collect()
        };
        let expected: Vec<Email> = fresh(&whole).into_iter().take(head).collect();
        prop_assert_eq!(fresh(&cycle), expected);
        prop_assert_eq!(cycle.past_head(), whole.queued() - cycle.creates().count());
        let loud = |plan: &Plan| -> Vec<Item> {
            plan.items
                .iter()
                .filter(|item| {
                    !matches!(
                        item,
                        Item::Create { .. }
                            | Item::Accepted { .. }
                            | Item::AlreadyUser { .. }
                            | Item::InSync { .. }
                    )
                })
                .cloned()
                .collect()
        };
        prop_assert_eq!(loud(&cycle), loud(&whole));
    }
}
