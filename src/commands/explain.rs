//! `invite-sync explain EMAIL`: one person's roster rows, ledger history, Clerk's state, the
//! events sent, and the decision the next cycle would take with the rule that decided.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Exit, OutputFormat};
use crate::config::Settings;
use crate::domain::Email;
use crate::reconcile::explain::{self, Explanation};

pub async fn run(
    settings: &Settings,
    email: &str,
    offline: bool,
    format: OutputFormat,
) -> anyhow::Result<Exit> {
    let email = match Email::parse(email) {
        Ok(email) => email,
        Err(error) => {
            eprintln!("EMAIL: {email:?} is not an email address: {error}");
            return Ok(Exit::Usage);
        }
    };
    let reconciler = crate::startup::reconciler(settings).await?;
    let explanation = explain::explain(&reconciler, &email, offline).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        OutputFormat::Text => print!("{}", render_text(&explanation)),
    }
    Ok(Exit::Success)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn or_dash(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "-".to_owned())
}

/// The explanation as people read it: the decision first, then what it rests on.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut out, e);
    out
}

fn write_text(out: &mut String, e: &Explanation) -> std::fmt::Result {
    writeln!(out, "{} (target {})", e.email, e.target)?;
    writeln!(out, "Decision: {}", e.decision.rule)?;
    if let Some(wait) = &e.decision.waits_for {
        match wait.until {
            Some(until) => writeln!(out, "  waits for: {} until {}", wait.reason, time(until))?,
            None => writeln!(out, "  waits for: {}", wait.reason)?,
        }
    }
    for also in &e.decision.also {
        writeln!(out, "  also: {also}")?;
    }
    for membership in &e.memberships {
        writeln!(out, "Organization: {}", membership.rule)?;
    }
    if let Some(note) = &e.memberships_note {
        writeln!(out, "Organizations: {note}")?;
    }
    match (&e.clerk_error, e.clerk_asked) {
        (Some(error), _) => writeln!(
            out,
            "Clerk could not be asked ({error}): decided from the database alone"
        )?,
        (None, false) => writeln!(
            out,
            "Clerk was not asked (--offline): decided from the database alone"
        )?,
        (None, true) => {}
    }

    writeln!(out, "\nRoster:")?;
    if e.roster.is_empty() {
        writeln!(out, "  not on the roster")?;
    }
    for row in &e.roster {
        write!(
            out,
            "  {} source={} not_before={} written {}",
            row.email,
            row.source.as_deref().unwrap_or("-"),
            or_dash(row.not_before),
            or_dash(row.created_at)
        )?;
        match &row.invalid {
            Some(reason) => writeln!(out, " INVALID: {reason}")?,
            None => writeln!(out, " metadata={}", row.public_metadata)?,
        }
    }
    for row in &e.membership_rows {
        write!(
            out,
            "  organization {} role={} source={} not_before={}",
            row.organization,
            row.role.as_deref().unwrap_or("(default)"),
            row.source.as_deref().unwrap_or("-"),
            or_dash(row.not_before)
        )?;
        match &row.invalid {
            Some(reason) => writeln!(out, " INVALID: {reason}")?,
            None => writeln!(out)?,
        }
    }

    match &e.user {
        Some(user) => {
            write!(
                out,
                "\nKnown user: seen via {} at {}",
                user.seen_via,
                time(user.seen_at)
            )?;
            if let Some(id) = &user.clerk_user_id {
                write!(out, " ({id})")?;
            }
            if let Some(deleted) = user.deleted_at {
                write!(out, ", deleted in Clerk at {}", time(deleted))?;
            }
            writeln!(out)?;
        }
        None => writeln!(out, "\nKnown user: no")?,
    }

    if let Some(clerk) = &e.clerk {
        writeln!(out, "\nClerk now:")?;
        if clerk.invitations.is_empty() {
            writeln!(out, "  no invitation (revoked ones are not listed)")?;
        }
        for invitation in &clerk.invitations {
            writeln!(
                out,
                "  {} {:?} made {}{}",
                invitation.id,
                invitation.status,
                or_dash(invitation.created_at),
                if invitation.owned {
                    ", invite-sync's"
                } else {
                    ", not invite-sync's"
                }
            )?;
        }
        match clerk.users.as_slice() {
            [] => writeln!(out, "  no user")?,
            users => writeln!(out, "  user {}", users.join(", "))?,
        }
    }

    writeln!(out, "\nLedger:")?;
    if e.ledger.is_empty() && e.membership_ledger.is_empty() {
        writeln!(out, "  nothing recorded")?;
    }
    for line in &e.ledger {
        write!(
            out,
            "  #{} {} {} attempts={} created {} changed {}",
            line.id,
            line.invitation_id.as_deref().unwrap_or("(no id yet)"),
            line.state,
            line.attempts,
            time(line.created_at),
            or_dash(line.updated_at)
        )?;
        if !line.owned {
            write!(out, " (seen, not sent by invite-sync)")?;
        }
        if line.revoked_by_us {
            write!(out, " (revoked by invite-sync)")?;
        }
        writeln!(out)?;
    }
    for line in &e.membership_ledger {
        writeln!(
            out,
            "  #{} {} {} in {} as {} {} created {} changed {}",
            line.id,
            line.kind,
            line.clerk_id.as_deref().unwrap_or("(no id yet)"),
            line.organization_id,
            line.role,
            line.state,
            time(line.created_at),
            time(line.updated_at)
        )?;
    }

    if let Some(events) = &e.events {
        writeln!(out, "\nEvents:")?;
        if events.is_empty() {
            writeln!(out, "  none")?;
        }
        for event in events {
            writeln!(
                out,
                "  {} {} {} delivered={} waiting={} dead={}",
                time(event.created_at),
                event.kind,
                event.event_id,
                event.delivered,
                event.waiting,
                event.dead
            )?;
        }
    }

    if !e.last_errors.is_empty() {
        writeln!(out, "\nLast errors:")?;
        for error in &e.last_errors {
            writeln!(out, "  {error}")?;
        }
    }
    Ok(())
}
