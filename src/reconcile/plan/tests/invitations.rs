//! What the plan does about a person's invitations: create, reinvite, revoke, leave a
//! foreign one alone, report a stale one or replace it.

use super::*;

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
