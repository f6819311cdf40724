//! How to read Clerk's refusal of a create: what it means for the call ([`classify`]) and for
//! each member ([`attribute`]), who among those looked up are users ([`users_among`]), which
//! invitation a create of unknown outcome made ([`adoptable`]), and when a refused one goes
//! again ([`backoff_after`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::next_call::CreateEndpoint;
use crate::clerk::model::codes;
use crate::clerk::{ClerkError, ClientError, Invitation, InvitationStatus};
use crate::domain::{DesiredInvitee, Email};
use crate::store::users;

/// What a refused create call means as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The call never reached Clerk: forgotten, and creates stop this cycle.
    NeverSent,
    /// The endpoint is rate-limited for `wait` seconds; `sent` says whether Clerk counted
    /// the call (not when the client's own record of a block stopped it).
    RateLimited { sent: bool, wait: u64 },
    /// The credentials were refused: the cycle stops, forgetting the call's rows first
    /// when Clerk answered 401 or 403.
    Unauthorized { forget: bool },
    /// Clerk may have applied it: settled by a lookup next cycle, not sent again.
    OutcomeUnknown,
    /// Clerk applied nothing: the refusal is [`attribute`]d to the members; `terminal`
    /// when one refused alone is not to be tried again.
    Refused { terminal: bool },
}

/// What a refused create call means.
pub fn classify(error: &ClientError) -> Refusal {
    match error {
        ClientError::NeverSent { .. } => Refusal::NeverSent,
        ClientError::RateLimited {
            retry_after, sent, ..
        } => Refusal::RateLimited {
            sent: *sent,
            wait: retry_after
                .map_or(60, |d| d.as_secs().max(1))
                .min(crate::clerk::client::MAX_RETRY_AFTER.as_secs()),
        },
        ClientError::InvalidKey(_) => Refusal::Unauthorized { forget: false },
        _ if error.may_have_applied() => Refusal::OutcomeUnknown,
        _ if matches!(error.status(), Some(401 | 403)) => Refusal::Unauthorized { forget: true },
        _ => Refusal::Refused {
            terminal: error.status() == Some(422),
        },
    }
}

/// What becomes of one member of a create call Clerk refused and applied nothing of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Named as having a pending invitation already: recorded, not sent again.
    Duplicate,
    /// Named as a user already: marked, no budget spent on them again.
    User,
    /// Not named by a bulk call that named others: sent again with the others not named.
    Resend,
    /// In a bulk call refused without naming anyone: looked up, then sent again in halves.
    LookUp,
    /// Refused alone: failed, tried again after a backoff unless the refusal is terminal.
    Failed,
}

/// Which member Clerk's errors name, and so the fate of each, in member order. A call of
/// one is named by any error with the code, whether it lists addresses or not.
pub fn attribute(
    errors: &[ClerkError],
    members: &[DesiredInvitee],
    endpoint: CreateEndpoint,
) -> Vec<Fate> {
    let named = |code: &str| -> Vec<Email> {
        let mut named: Vec<Email> = errors
            .iter()
            .filter(|e| e.code == code)
            .flat_map(|e| e.email_addresses())
            .filter_map(|e| Email::parse(&e).ok())
            .collect();
        if let [alone] = members {
            if named.is_empty() && errors.iter().any(|e| e.code == code) {
                named.push(alone.email.clone());
            }
        }
        named
    };
    let duplicates = named(codes::DUPLICATE_RECORD);
    let existing = named(codes::FORM_IDENTIFIER_EXISTS);
    let anyone_named = !duplicates.is_empty() || !existing.is_empty();
    members
        .iter()
        .map(|member| {
            if duplicates.contains(&member.email) {
                Fate::Duplicate
            } else if existing.contains(&member.email) {
                Fate::User
            } else if endpoint == CreateEndpoint::Single {
                Fate::Failed
            } else if anyone_named {
                Fate::Resend
            } else {
                Fate::LookUp
            }
        })
        .collect()
}

/// Splits the addresses asked about into the users Clerk answered with (each with its user
/// id) and the rest, who are not users.
pub fn users_among(
    asked: &[Email],
    found: &[crate::clerk::User],
) -> (Vec<users::KnownUser>, Vec<Email>) {
    let mut ids: HashMap<Email, &str> = HashMap::new();
    for user in found {
        for address in &user.email_addresses {
            if let Ok(email) = Email::parse(&address.email_address) {
                ids.entry(email).or_insert(user.id.as_str());
            }
        }
    }
    let mut known = Vec::new();
    let mut not_users = Vec::new();
    for email in asked {
        match ids.get(email) {
            Some(id) => known.push(users::KnownUser {
                email: email.clone(),
                clerk_user_id: Some((*id).to_owned()),
            }),
            None => not_users.push(email.clone()),
        }
    }
    (known, not_users)
}

/// How far Clerk's clock may trail the database's when telling a create of ours from an
/// invitation made by hand just before it.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// The invitation a create sent at `sent_at` most likely made: not revoked, not already in
/// the ledger, and not older than the create (an older one was made by someone else).
/// Pending ones first, then the newest.
pub fn adoptable(
    found: Vec<Invitation>,
    known: &HashSet<&str>,
    sent_at: DateTime<Utc>,
) -> Option<Invitation> {
    let since = (sent_at - CLOCK_SKEW).timestamp_millis();
    found
        .into_iter()
        .filter(|i| i.status != InvitationStatus::Revoked)
        .filter(|i| !known.contains(i.id.as_str()))
        .filter(|i| i.created_at >= since)
        .max_by_key(|i| (i.status == InvitationStatus::Pending, i.created_at))
}

/// When, from `now`, to try a refused create again: 1 minute doubling per attempt, at most
/// 6 hours.
pub fn backoff_after(attempts: i32, now: DateTime<Utc>) -> DateTime<Utc> {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    let minutes = 2i64.saturating_pow(exponent).min(360);
    now + chrono::Duration::minutes(minutes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clerk::InvitationStatus as S;
    use crate::clerk::Operation;
    use crate::reconcile::execute::tests::invitees;

    fn invitation(id: &str, status: S, created_at: DateTime<Utc>) -> Invitation {
        Invitation {
            object: "invitation".to_owned(),
            id: id.to_owned(),
            email_address: "ann@example.com".to_owned(),
            public_metadata: serde_json::Map::new(),
            revoked: Some(status == S::Revoked),
            status,
            url: None,
            expires_at: None,
            created_at: created_at.timestamp_millis(),
            updated_at: created_at.timestamp_millis(),
        }
    }

    fn answered(status: u16, errors: Vec<ClerkError>) -> ClientError {
        ClientError::Clerk {
            operation: Operation::CreateBulkInvitations,
            status,
            errors,
            trace_id: None,
        }
    }

    fn clerk_error(code: &str, addresses: &[&str]) -> ClerkError {
        ClerkError {
            message: code.to_owned(),
            long_message: String::new(),
            code: code.to_owned(),
            meta: (!addresses.is_empty()).then(|| {
                let mut meta = serde_json::Map::new();
                meta.insert("email_addresses".to_owned(), serde_json::json!(addresses));
                meta
            }),
        }
    }

    #[test]
    fn a_refusal_is_told_by_what_clerk_could_have_done() {
        let limited = |retry_after: Option<u64>, sent| ClientError::RateLimited {
            operation: Operation::CreateInvitation,
            retry_after: retry_after.map(Duration::from_secs),
            sent,
            trace_id: None,
        };
        assert_eq!(
            classify(&limited(Some(90), true)),
            Refusal::RateLimited {
                sent: true,
                wait: 90
            }
        );
        assert_eq!(
            classify(&limited(None, false)),
            Refusal::RateLimited {
                sent: false,
                wait: 60
            },
            "a minute when Clerk says nothing"
        );
        let longest = crate::clerk::client::MAX_RETRY_AFTER.as_secs();
        assert_eq!(
            classify(&limited(Some(longest * 10), true)),
            Refusal::RateLimited {
                sent: true,
                wait: longest
            }
        );
        assert_eq!(
            classify(&limited(Some(0), true)),
            Refusal::RateLimited {
                sent: true,
                wait: 1
            }
        );
        assert_eq!(
            classify(&ClientError::InvalidKey("empty")),
            Refusal::Unauthorized { forget: false }
        );
        for status in [401, 403] {
            assert_eq!(
                classify(&answered(status, Vec::new())),
                Refusal::Unauthorized { forget: true }
            );
        }
        for status in [500, 502, 503] {
            assert_eq!(
                classify(&answered(status, Vec::new())),
                Refusal::OutcomeUnknown
            );
        }
        let unreadable = ClientError::Decode {
            operation: Operation::CreateInvitation,
            status: 200,
            message: "not JSON".to_owned(),
        };
        assert_eq!(classify(&unreadable), Refusal::OutcomeUnknown);
        assert_eq!(
            classify(&answered(422, Vec::new())),
            Refusal::Refused { terminal: true }
        );
        assert_eq!(
            classify(&answered(400, Vec::new())),
            Refusal::Refused { terminal: false }
        );
    }

    #[test]
    fn a_refused_bulk_names_its_duplicates_and_users_and_sends_the_rest_again() {
        let members = invitees(4);
        let errors = [
            clerk_error(codes::DUPLICATE_RECORD, &["P1@example.com"]),
            clerk_error(codes::FORM_IDENTIFIER_EXISTS, &["p3@example.com", "nobody"]),
        ];
        assert_eq!(
            attribute(&errors, &members, CreateEndpoint::Bulk),
            [Fate::Resend, Fate::Duplicate, Fate::Resend, Fate::User]
        );
    }

    #[test]
    fn a_bulk_refused_without_naming_anyone_has_each_member_looked_up() {
        let members = invitees(3);
        // A code that names people, but no address: nobody is named.
        let errors = [clerk_error(codes::DUPLICATE_RECORD, &[])];
        assert_eq!(
            attribute(&errors, &members, CreateEndpoint::Bulk),
            [Fate::LookUp; 3]
        );
        assert_eq!(
            attribute(&[], &members, CreateEndpoint::Bulk),
            [Fate::LookUp; 3]
        );
        // Someone outside the call is named: the members were not the cause.
        let elsewhere = [clerk_error(codes::DUPLICATE_RECORD, &["else@example.com"])];
        assert_eq!(
            attribute(&elsewhere, &members, CreateEndpoint::Bulk),
            [Fate::Resend; 3]
        );
    }

    #[test]
    fn a_call_of_one_is_named_by_its_code_alone() {
        let one = invitees(1);
        let duplicate = [clerk_error(codes::DUPLICATE_RECORD, &[])];
        let user = [clerk_error(codes::FORM_IDENTIFIER_EXISTS, &[])];
        let other = [clerk_error("form_param_format_invalid", &[])];
        for endpoint in [CreateEndpoint::Single, CreateEndpoint::Bulk] {
            assert_eq!(attribute(&duplicate, &one, endpoint), [Fate::Duplicate]);
            assert_eq!(attribute(&user, &one, endpoint), [Fate::User]);
        }
        assert_eq!(
            attribute(&other, &one, CreateEndpoint::Single),
            [Fate::Failed]
        );
        assert_eq!(attribute(&[], &one, CreateEndpoint::Single), [Fate::Failed]);
        assert_eq!(
            attribute(&other, &one, CreateEndpoint::Bulk),
            [Fate::LookUp]
        );
        // Both codes: the pending invitation is what counts.
        let both = [duplicate[0].clone(), user[0].clone()];
        assert_eq!(
            attribute(&both, &one, CreateEndpoint::Single),
            [Fate::Duplicate]
        );
    }

    #[test]
    fn users_are_told_apart_by_any_of_their_addresses() {
        let user = |id: &str, addresses: &[&str]| -> crate::clerk::User {
            serde_json::from_value(serde_json::json!({
                "id": id,
                "email_addresses": addresses
                    .iter()
                    .map(|a| serde_json::json!({"email_address": a}))
                    .collect::<Vec<_>>(),
            }))
            .expect("a user")
        };
        let asked: Vec<Email> = ["ann@example.com", "bob@example.com", "cy@example.com"]
            .iter()
            .map(|a| Email::parse(a).expect("an address"))
            .collect();
        let found = [
            user("user_1", &["other@example.com", "Ann@Example.com"]),
            user("user_2", &["cy@example.com"]),
        ];
        let (known, not_users) = users_among(&asked, &found);
        let known: Vec<_> = known
            .iter()
            .map(|u| (u.email.as_str(), u.clerk_user_id.as_deref()))
            .collect();
        assert_eq!(
            known,
            [
                ("ann@example.com", Some("user_1")),
                ("cy@example.com", Some("user_2"))
            ]
        );
        assert_eq!(
            not_users,
            [Email::parse("bob@example.com").expect("an address")]
        );
    }

    #[test]
    fn a_lookup_adopts_only_what_the_create_could_have_made() {
        let sent = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let known: HashSet<&str> = ["inv_known"].into_iter().collect();
        let minutes = chrono::Duration::minutes;
        let found = vec![
            invitation("inv_by_hand", S::Pending, sent - minutes(30)),
            invitation("inv_known", S::Pending, sent + minutes(1)),
            invitation("inv_revoked", S::Revoked, sent + minutes(1)),
            invitation("inv_ours", S::Pending, sent + chrono::Duration::seconds(2)),
        ];
        let adopted = adoptable(found, &known, sent).map(|i| i.id);
        assert_eq!(adopted.as_deref(), Some("inv_ours"));

        let only_by_hand = vec![invitation("inv_by_hand", S::Pending, sent - minutes(30))];
        assert_eq!(
            adoptable(only_by_hand, &known, sent),
            None,
            "made by hand before the create"
        );

        // Clerk's clock may trail: a few minutes before the send still counts.
        let skewed = vec![invitation("inv_skewed", S::Pending, sent - minutes(2))];
        assert!(adoptable(skewed, &known, sent).is_some());

        let pending_first = vec![
            invitation("inv_accepted", S::Accepted, sent + minutes(2)),
            invitation("inv_pending", S::Pending, sent + minutes(1)),
        ];
        assert_eq!(
            adoptable(pending_first, &known, sent)
                .map(|i| i.id)
                .as_deref(),
            Some("inv_pending")
        );
    }

    #[test]
    fn a_refused_create_goes_again_after_a_minute_doubling_per_attempt_up_to_six_hours() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let after = |attempts| (backoff_after(attempts, now) - now).num_minutes();
        assert_eq!(
            [1, 2, 3, 4, 9].map(after),
            [1, 2, 4, 8, 256],
            "a minute, doubling"
        );
        assert_eq!(
            [10, 20, 21, i32::MAX].map(after),
            [360; 4],
            "at most 6 hours"
        );
        assert_eq!(
            [0, -1, i32::MIN].map(after),
            [1; 3],
            "never before a minute"
        );
    }
}
