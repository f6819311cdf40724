//! What a person's history decides: accepted, a user (or a deleted one), revoked outside
//! invite-sync, refused before, unsettled, or in sync.

use super::*;

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
    let digest = World::new().invitee(&ann).digest();
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
    let digest = World::new().invitee(&before).digest();
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
    let digest = World::new().invitee(&ann).digest();
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
    let digest = World::new().invitee(&ann).digest();
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
    let digest = World::new().invitee(&before).digest();
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
