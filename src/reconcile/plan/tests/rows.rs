//! Roster rows that cannot succeed, repeated addresses, and rows not due yet.

use super::*;

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
