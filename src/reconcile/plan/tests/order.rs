//! The order of a plan, its queue, and its counts.

use super::*;

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
