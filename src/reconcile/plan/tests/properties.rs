//! The plan's invariants over generated worlds.

use super::*;
use crate::domain::roster_key;
use crate::reconcile::observation::observe;

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
                        .map(|invitee| invitee.digest());
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

impl Scenario {
    /// The world without the ledger entries invite-sync cannot have written: Clerk and the
    /// ledger agree on the address of each invitation they both hold and on the fate of one
    /// that can change no more; an invitation Clerk made leaves its create settled; and only
    /// a create can lack an invitation (every other state is one Clerk showed).
    fn coherent(&self) -> Scenario {
        let agrees = |e: &LedgerEntry| {
            let Some(id) = e.clerk_invitation_id.as_deref() else {
                return matches!(e.state, LedgerState::Sending | LedgerState::Failed);
            };
            self.clerk.iter().filter(|i| i.id == id).all(|i| {
                Email::parse(&i.email_address).ok().as_ref() == Some(&e.email)
                    && match e.state {
                        LedgerState::Accepted | LedgerState::Revoked => {
                            LedgerState::from(i.status) == e.state
                        }
                        LedgerState::Sending | LedgerState::Failed => false,
                        LedgerState::Pending | LedgerState::Expired => true,
                    }
            })
        };
        Scenario {
            ledger: self.ledger.iter().filter(|e| agrees(e)).cloned().collect(),
            ..self.clone()
        }
    }

    /// The world as a full cycle leaves it: the ledger as the full listing shows it, each
    /// accepted invitation the ledger did not hold recorded as seen (not owned), and its
    /// address a known user's (see `observation::record`).
    fn after_a_full_cycle(&self) -> Scenario {
        let mut ledger = observe(&self.ledger, &self.clerk, Listing::Full);
        let mut known_users = self.known_users.clone();
        let held: HashSet<String> = ledger
            .iter()
            .filter_map(|e| e.clerk_invitation_id.clone())
            .collect();
        let mut next_id = ledger.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        for invitation in &self.clerk {
            let state = match invitation.status {
                InvitationStatus::Accepted => LedgerState::Accepted,
                InvitationStatus::Expired => LedgerState::Expired,
                _ => continue,
            };
            if held.contains(&invitation.id) {
                continue;
            }
            let Ok(email) = Email::parse(&invitation.email_address) else {
                continue;
            };
            ledger.push(LedgerEntry {
                owned: false,
                ..entry(next_id, email.as_str(), Some(&invitation.id), state)
            });
            next_id += 1;
            if state == LedgerState::Accepted {
                known_users.insert(email);
            }
        }
        Scenario {
            ledger,
            known_users,
            ..self.clone()
        }
    }

    fn plan_listing(&self, listing: Listing<'_>) -> Plan {
        let desired: Vec<_> = self.desired.iter().cloned().map(Ok).collect();
        let clerk: Vec<Invitation> = match listing {
            Listing::Full => self.clerk.clone(),
            Listing::Pending { .. } => self
                .clerk
                .iter()
                .filter(|i| i.status == InvitationStatus::Pending)
                .cloned()
                .collect(),
        };
        let inputs = Inputs {
            desired: &desired,
            clerk: &clerk,
            ledger: &self.ledger,
            known_users: &self.known_users,
            deleted_users: &NO_ONE,
            listing,
            now: now(),
        };
        plan(inputs, &self.policy)
    }
}

/// Each person's category, by address.
fn categories(plan: &Plan) -> BTreeMap<String, Vec<Category>> {
    let mut by_email: BTreeMap<String, Vec<Category>> = BTreeMap::new();
    for item in &plan.items {
        by_email
            .entry(item.email().to_owned())
            .or_default()
            .push(item.category());
    }
    for categories in by_email.values_mut() {
        categories.sort();
    }
    by_email
}

proptest! {
    #[test]
    fn after_a_full_cycle_a_pending_only_cycle_reports_every_person_as_the_full_one_does(
        s in scenario()
    ) {
        let s = s.coherent();
        let settled = s.after_a_full_cycle();
        let nobody = HashSet::new();
        let full = settled.plan_listing(Listing::Full);
        let pending = settled.plan_listing(Listing::Pending { found_nowhere: &nobody });
        prop_assert_eq!(categories(&pending), categories(&full));
    }
}

/// Each roster row of `s` with the person its address names, as the reader gives them: the
/// ledger's entries oldest first and whether the address is a known user's.
fn rows_with_people(s: &Scenario) -> Vec<(Result<DesiredRow, InvalidRow>, Person)> {
    s.desired
        .iter()
        .map(|row| {
            let person = match Email::parse(&row.email) {
                Ok(email) => {
                    let mut entries: Vec<LedgerEntry> = s
                        .ledger
                        .iter()
                        .filter(|e| e.email == email)
                        .cloned()
                        .collect();
                    entries.sort_by_key(|e| e.id);
                    Person::of(entries, s.known_users.contains(&email), false)
                }
                Err(_) => Person::default(),
            };
            (Ok(row.clone()), person)
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// `plan` counts by address, then reads the roster again in queue order and decides each
    /// row again: it writes the same counts, revocations and creates, in the same order, as
    /// the plan held whole.
    #[test]
    fn a_plan_counted_then_decided_again_in_queue_order_is_the_plan_held_whole(
        s in scenario()
    ) {
        let held = s.plan();
        let owned = owned_ids(&s.ledger);
        let mut rows = rows_with_people(&s);
        // By address, as the held plan takes them (of rows of one address, the first counts).
        rows.sort_by_cached_key(|(row, _)| roster_key(row));
        let mut counting =
            Planner::new(&s.clerk, &owned, Listing::Full, now(), &s.policy).counting_all();
        for (row, person) in &rows {
            let item = counting.decide(row, person.clone());
            counting.keep(item);
        }
        let duplicates = counting.duplicates();
        let counted = counting.finish();
        prop_assert_eq!(counted.counts(), held.counts());
        prop_assert_eq!(counted.queued(), held.queued());
        let revocations: Vec<_> = counted.revocations().collect();
        prop_assert_eq!(revocations, held.revocations().collect::<Vec<_>>());

        // In queue order; rows that tie come in reverse, as the database may give them.
        rows.reverse();
        rows.sort_by_cached_key(|(row, _)| {
            let row = row.as_ref().ok();
            let created = row.and_then(|r| r.created_at);
            let not_before = row.and_then(|r| r.not_before);
            let key = row.map(|r| r.email.trim_matches(' ').to_ascii_lowercase());
            (not_before.or(created), created, key)
        });
        let mut queue =
            Planner::new(&s.clerk, &owned, Listing::Full, now(), &s.policy)
                .knowing_duplicates(duplicates);
        let mut creates: Vec<Item> = counted
            .items
            .iter()
            .filter(|i| matches!(i, Item::Replace { .. }))
            .cloned()
            .collect();
        for (row, person) in rows {
            if let Some(item @ Item::Create { .. }) = queue.decide_queued(&row, person) {
                creates.push(item);
            }
        }
        let expected: Vec<&Item> = held
            .items
            .iter()
            .filter(|i| matches!(i, Item::Create { .. } | Item::Replace { .. }))
            .collect();
        prop_assert_eq!(creates.iter().collect::<Vec<_>>(), expected);
    }
}
