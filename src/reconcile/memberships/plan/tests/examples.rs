//! What the plan decides, example by example.

use super::*;

#[test]
fn a_new_person_is_invited_with_the_rows_role_or_the_default_one() {
    let plan = World::new()
        .row(row_as("ann@x.com", "acme", "org:admin"))
        .row(row("bob@x.com", "org_a"))
        .run();
    let roles: Vec<(&str, &str, &str)> = plan
        .items
        .iter()
        .map(|item| match item {
            Item::Invite {
                organization_id,
                role,
                reinvite: false,
                ..
            } => (item.email(), organization_id.as_str(), role.as_str()),
            other => panic!("expected an invite: {other:?}"),
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("ann@x.com", "org_a", "org:admin"),
            ("bob@x.com", "org_a", "org:member")
        ]
    );
}

#[test]
fn a_known_user_becomes_a_member_at_once_or_is_invited_as_the_policy_says() {
    let world = World::new()
        .row(row("ann@x.com", "acme"))
        .user("ann@x.com", "user_ann");
    match only(&world.run()) {
        Item::AddMember { user_id, role, .. } => {
            assert_eq!(
                (user_id.as_str(), role.as_str()),
                ("user_ann", "org:member")
            )
        }
        other => panic!("expected a membership: {other:?}"),
    }
    let inviting = world.policy(|p| p.existing_users = ExistingUsers::Invite);
    assert_eq!(categories(&inviting.run()), [Category::Invite]);
}

#[test]
fn a_member_or_a_pending_invitation_with_the_rows_role_is_in_sync() {
    let plan = World::new()
        .row(row("ann@x.com", "acme"))
        .row(row_as("bob@x.com", "acme", "org:admin"))
        .member("org_a", member("user_ann", "ann@x.com", "org:member"))
        .invitation(
            "org_a",
            invitation(
                "orginv_b",
                "bob@x.com",
                "org:admin",
                InvitationStatus::Pending,
            ),
        )
        .run();
    assert_eq!(categories(&plan), [Category::InSync, Category::InSync]);
}

#[test]
fn an_owned_members_role_is_set_back_and_a_foreign_ones_is_reported() {
    let world = World::new()
        .row(row_as("ann@x.com", "acme", "org:admin"))
        .member("org_a", member("user_ann", "ann@x.com", "org:member"));
    match only(&world.run()) {
        Item::Reported {
            note: Note::ForeignRole { have, want },
            ..
        } => assert_eq!((have.as_str(), want.as_str()), ("org:member", "org:admin")),
        other => panic!("expected a report: {other:?}"),
    }
    let owned = world.recorded(recorded(
        "org_a",
        "ann@x.com",
        MembershipKind::Membership,
        Some("user_ann"),
        MembershipState::Member,
    ));
    assert_eq!(
        only(&owned.run()),
        &Item::ChangeRole {
            organization_id: "org_a".into(),
            email: email("ann@x.com"),
            user_id: "user_ann".into(),
            from: "org:member".into(),
            to: "org:admin".into(),
        }
    );
}

#[test]
fn a_member_whose_invitation_invite_sync_sent_was_accepted_is_owned() {
    let plan = World::new()
        .row(row_as("ann@x.com", "acme", "org:admin"))
        .member("org_a", member("user_ann", "ann@x.com", "org:member"))
        .recorded(recorded(
            "org_a",
            "ann@x.com",
            MembershipKind::Invitation,
            Some("orginv_1"),
            MembershipState::Accepted,
        ))
        .run();
    assert_eq!(categories(&plan), [Category::ChangeRole]);
}

#[test]
fn an_owned_pending_invitation_with_another_role_is_replaced_a_foreign_one_reported() {
    let world = World::new()
        .row(row_as("ann@x.com", "acme", "org:admin"))
        .invitation(
            "org_a",
            invitation(
                "orginv_1",
                "ann@x.com",
                "org:member",
                InvitationStatus::Pending,
            ),
        );
    assert_eq!(categories(&world.run()), [Category::Reported]);
    let owned = world.recorded(recorded(
        "org_a",
        "ann@x.com",
        MembershipKind::Invitation,
        Some("orginv_1"),
        MembershipState::Pending,
    ));
    match only(&owned.run()) {
        Item::Replace {
            invitation_id,
            role,
            from,
            ..
        } => assert_eq!(
            (invitation_id.as_str(), role.as_str(), from.as_str()),
            ("orginv_1", "org:admin", "org:member")
        ),
        other => panic!("expected a replacement: {other:?}"),
    }
}

#[test]
fn a_removed_rows_owned_invitation_is_revoked_and_a_foreign_one_reported() {
    let plan = World::new()
        .invitation(
            "org_a",
            invitation(
                "orginv_1",
                "ann@x.com",
                "org:member",
                InvitationStatus::Pending,
            ),
        )
        .invitation(
            "org_a",
            invitation(
                "orginv_2",
                "bob@x.com",
                "org:member",
                InvitationStatus::Pending,
            ),
        )
        .recorded(recorded(
            "org_a",
            "ann@x.com",
            MembershipKind::Invitation,
            Some("orginv_1"),
            MembershipState::Pending,
        ))
        .run();
    assert_eq!(
        plan.items,
        [
            Item::Revoke {
                organization_id: "org_a".into(),
                email: email("ann@x.com"),
                invitation_id: "orginv_1".into(),
            },
            Item::Reported {
                organization_id: "org_a".into(),
                email: email("bob@x.com"),
                note: Note::ForeignInvitation,
            }
        ]
    );
}

#[test]
fn a_leavers_owned_membership_is_removed_only_when_remove_members_is_on() {
    let world = World::new()
        .member("org_a", member("user_ann", "ann@x.com", "org:member"))
        .member("org_a", member("user_hand", "hand@x.com", "org:member"))
        .recorded(recorded(
            "org_a",
            "ann@x.com",
            MembershipKind::Membership,
            Some("user_ann"),
            MembershipState::Member,
        ));
    let notes: Vec<Option<Note>> = world
        .run()
        .items
        .into_iter()
        .map(|item| match item {
            Item::Reported { note, .. } => Some(note),
            _ => None,
        })
        .collect();
    assert_eq!(
        notes,
        [Some(Note::KeptMember), Some(Note::ForeignMember)],
        "reported, never touched"
    );
    let removing = world.policy(|p| p.remove_members = true).run();
    assert_eq!(
        categories(&removing),
        [Category::RemoveMember, Category::Reported]
    );
    assert_eq!(removing.items[0].email(), "ann@x.com");
}

#[test]
fn an_expired_invitation_is_sent_again() {
    let plan = World::new()
        .row(row("ann@x.com", "acme"))
        .invitation(
            "org_a",
            invitation(
                "orginv_1",
                "ann@x.com",
                "org:member",
                InvitationStatus::Expired,
            ),
        )
        .run();
    assert_eq!(categories(&plan), [Category::Reinvite]);
}

#[test]
fn a_deleted_membership_of_someone_on_the_roster_is_made_again() {
    let plan = World::new()
        .row(row("ann@x.com", "acme"))
        .user("ann@x.com", "user_ann")
        .recorded(recorded(
            "org_a",
            "ann@x.com",
            MembershipKind::Membership,
            Some("user_ann"),
            MembershipState::Member,
        ))
        .run();
    assert_eq!(categories(&plan), [Category::AddMember]);
}

#[test]
fn a_full_organizations_people_beyond_its_room_wait_oldest_first_and_others_go_on() {
    let mut world = World::new().organization(organization("org_full", "full", Room::Left(2)));
    for (i, address) in ["d@x.com", "a@x.com", "c@x.com", "b@x.com"]
        .iter()
        .enumerate()
    {
        world = world.row(DesiredMembership {
            created_at: Some(at(i as i64)),
            ..row(address, "full")
        });
    }
    let plan = world.row(row("z@x.com", "acme")).run();
    let invited: Vec<&str> = plan
        .items
        .iter()
        .filter(|i| i.organization() == "org_full" && i.takes_room())
        .map(Item::email)
        .collect();
    assert_eq!(invited, ["d@x.com", "a@x.com"], "the oldest rows first");
    assert_eq!(plan.waiting().get("full"), Some(&2));
    assert!(plan
        .items
        .iter()
        .any(|i| i.email() == "z@x.com" && i.category() == Category::Invite));
}

#[test]
fn room_counts_members_and_pending_invitations_and_zero_is_unlimited() {
    assert_eq!(Room::of(0, 40, 2), Room::Unlimited);
    assert_eq!(Room::of(10, 7, 2), Room::Left(1));
    assert_eq!(Room::of(10, 9, 3), Room::Left(0));
}

#[test]
fn unknown_organizations_and_roles_and_duplicate_references_are_invalid_and_the_rest_go_on() {
    let mut world = World::new()
        .row(row("ann@x.com", "nope"))
        .row(row_as("bob@x.com", "acme", "org:boss"))
        .row(DesiredMembership {
            created_at: Some(at(1)),
            ..row("cy@x.com", "acme")
        })
        .row(DesiredMembership {
            created_at: Some(at(2)),
            ..row("cy@x.com", "org_a")
        })
        .row(DesiredMembership {
            created_at: Some(at(3)),
            ..row("dee@x.com", "acme")
        });
    world.resolved.insert("nope".into(), Resolution::Unknown);
    let plan = world.run();
    let invalid: Vec<(&str, &str, &str)> = plan
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Invalid {
                organization,
                email,
                reason,
            } => Some((email.as_str(), organization.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(invalid.len(), 3, "{invalid:#?}");
    // By organization reference: acme, nope, org_a.
    assert!(invalid[0].2.contains("role \"org:boss\""));
    assert!(invalid[1].2.contains("no organization \"nope\""));
    assert_eq!((invalid[2].0, invalid[2].1), ("cy@x.com", "org_a"));
    assert!(invalid[2].2.contains("as \"acme\""), "{}", invalid[2].2);
    let invited: Vec<&str> = plan
        .items
        .iter()
        .filter(|i| i.category() == Category::Invite)
        .map(Item::email)
        .collect();
    assert_eq!(invited, ["cy@x.com", "dee@x.com"]);
}

#[test]
fn an_unlisted_organization_decides_nothing_and_its_rows_wait() {
    let mut world = World::new().row(row("ann@x.com", "acme"));
    world.holdings.clear();
    let plan = world.run();
    assert!(matches!(
        only(&plan),
        Item::Waiting {
            wait: Wait::Unavailable { .. },
            ..
        }
    ));
    let mut unreachable = World::new().row(row("ann@x.com", "acme"));
    unreachable
        .resolved
        .insert("acme".into(), Resolution::Unavailable("timed out".into()));
    assert_eq!(unreachable.run().waiting().get("unavailable"), Some(&1));
}

#[test]
fn an_unreadable_row_keeps_its_addresses_invitation() {
    let mut world = World::new().invitation(
        "org_a",
        invitation(
            "orginv_1",
            "ann@x.com",
            "org:member",
            InvitationStatus::Pending,
        ),
    );
    world = world.recorded(recorded(
        "org_a",
        "ann@x.com",
        MembershipKind::Invitation,
        Some("orginv_1"),
        MembershipState::Pending,
    ));
    world.rows.push(Err(InvalidMembership {
        email: "ann@x.com".into(),
        parsed: Some(email("ann@x.com")),
        organization: "acme".into(),
        reason: "public_metadata is not an object".into(),
    }));
    assert_eq!(categories(&world.run()), [Category::Invalid]);
}

#[test]
fn an_unsettled_create_a_future_row_and_a_refusal_wait_and_a_terminal_refusal_is_reported() {
    let sending = World::new()
        .row(row("ann@x.com", "acme"))
        .recorded(recorded(
            "org_a",
            "ann@x.com",
            MembershipKind::Invitation,
            None,
            MembershipState::Sending,
        ));
    assert_eq!(sending.run().waiting().get("unsettled"), Some(&1));
    let later = World::new().row(DesiredMembership {
        not_before: Some(at(2_000)),
        ..row("ann@x.com", "acme")
    });
    assert_eq!(later.run().waiting().get("not_before"), Some(&1));
    let backing_off = World::new()
        .row(row("ann@x.com", "acme"))
        .recorded(MembershipLedgerEntry {
            next_attempt_at: Some(at(1_010)),
            last_error_code: Some("internal".into()),
            ..recorded(
                "org_a",
                "ann@x.com",
                MembershipKind::Invitation,
                None,
                MembershipState::Failed,
            )
        });
    assert_eq!(backing_off.run().waiting().get("refused"), Some(&1));
    let digest = row("ann@x.com", "acme").digest;
    let terminal = World::new()
        .row(row("ann@x.com", "acme"))
        .recorded(MembershipLedgerEntry {
            terminal: true,
            row_digest: Some(digest),
            last_error_code: Some("form_param_format_invalid".into()),
            ..recorded(
                "org_a",
                "ann@x.com",
                MembershipKind::Invitation,
                None,
                MembershipState::Failed,
            )
        });
    assert!(matches!(
        only(&terminal.run()),
        Item::Reported {
            note: Note::Refused { .. },
            ..
        }
    ));
    let mut changed = terminal.clone();
    changed.rows = vec![Ok(row_as("ann@x.com", "acme", "org:admin"))];
    assert_eq!(
        categories(&changed.run()),
        [Category::Invite],
        "the row changed"
    );
}

#[test]
fn a_member_known_only_by_user_id_is_matched_through_the_known_users() {
    let plan = World::new()
        .row(row("ann@x.com", "acme"))
        .member(
            "org_a",
            Member {
                user_id: "user_ann".into(),
                email: None,
                role: "org:member".into(),
            },
        )
        .user("ann@x.com", "user_ann")
        .run();
    assert_eq!(categories(&plan), [Category::InSync]);
}

#[test]
fn removals_come_first_then_creates_in_queue_order() {
    let plan = World::new()
        .row(DesiredMembership {
            created_at: Some(at(5)),
            ..row("late@x.com", "acme")
        })
        .row(DesiredMembership {
            created_at: Some(at(1)),
            ..row("early@x.com", "acme")
        })
        .invitation(
            "org_a",
            invitation(
                "orginv_1",
                "gone@x.com",
                "org:member",
                InvitationStatus::Pending,
            ),
        )
        .recorded(recorded(
            "org_a",
            "gone@x.com",
            MembershipKind::Invitation,
            Some("orginv_1"),
            MembershipState::Pending,
        ))
        .run();
    let order: Vec<&str> = plan.items.iter().map(Item::email).collect();
    assert_eq!(order, ["gone@x.com", "early@x.com", "late@x.com"]);
}

#[test]
fn someone_on_the_instance_roster_too_waits_for_that_invitation_then_becomes_a_member() {
    let world = World::new()
        .row(row_as("ann@x.com", "acme", "org:admin"))
        .row(row("bob@x.com", "acme"))
        .on_instance_roster("ann@x.com");
    let plan = world.run();
    let ann = plan
        .items
        .iter()
        .find(|i| i.email() == "ann@x.com")
        .expect("ann is planned");
    assert_eq!(
        ann,
        &Item::Waiting {
            organization: "org_a".to_owned(),
            email: email("ann@x.com"),
            wait: Wait::InstanceFirst,
        }
    );
    assert_eq!(
        plan.waiting().into_iter().collect::<Vec<_>>(),
        [("instance_first", 1)]
    );
    assert!(Wait::InstanceFirst
        .describe()
        .starts_with("instance invitation first"));
    // Bob is on the membership roster alone: invited by the organization.
    let bob = plan.items.iter().find(|i| i.email() == "bob@x.com");
    assert!(matches!(bob, Some(Item::Invite { .. })), "{bob:?}");

    // Accepted: a user with an id. A membership with the row's role, no email.
    let accepted = world.user("ann@x.com", "user_ann");
    let ann = accepted.run();
    let ann = ann
        .items
        .iter()
        .find(|i| i.email() == "ann@x.com")
        .expect("ann is planned");
    match ann {
        Item::AddMember { user_id, role, .. } => {
            assert_eq!((user_id.as_str(), role.as_str()), ("user_ann", "org:admin"))
        }
        other => panic!("expected a membership: {other:?}"),
    }
    // With existing_users = "invite" the operator asked for an organization invitation.
    let inviting = accepted.policy(|p| p.existing_users = ExistingUsers::Invite);
    let plan = inviting.run();
    let ann = plan.items.iter().find(|i| i.email() == "ann@x.com");
    assert!(
        matches!(ann, Some(Item::Invite { role, .. }) if role == "org:admin"),
        "{ann:?}"
    );
}

#[test]
fn waiting_for_the_instance_invitation_leaves_what_clerk_holds_alone() {
    // Already invited by the organization (before the person joined the instance roster),
    // or already a member: nothing changes, nothing is revoked.
    let plan = World::new()
        .row(row("ann@x.com", "acme"))
        .row(row("bob@x.com", "acme"))
        .row_with_future("cy@x.com")
        .on_instance_roster("ann@x.com")
        .on_instance_roster("bob@x.com")
        .on_instance_roster("cy@x.com")
        .invitation(
            "org_a",
            invitation(
                "orginv_1",
                "ann@x.com",
                "org:member",
                InvitationStatus::Pending,
            ),
        )
        .member("org_a", member("user_bob", "bob@x.com", "org:member"))
        .run();
    assert_eq!(
        categories(&plan),
        [Category::Waiting, Category::InSync, Category::InSync],
        "{plan:#?}"
    );
    // A future row waits for its time first.
    assert!(matches!(
        &plan.items[0],
        Item::Waiting {
            wait: Wait::NotBefore { .. },
            ..
        }
    ));
}
