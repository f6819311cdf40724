//! `invite-sync plan`: what the next cycle would do, revocations first, listed by email.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::{human_duration, Exit, OutputFormat};
use crate::config::Settings;
use crate::reconcile::plan::Item;
use crate::reconcile::Preview;

pub async fn run(
    settings: &Settings,
    format: OutputFormat,
    detailed_exitcode: bool,
) -> anyhow::Result<Exit> {
    let reconciler = crate::startup::reconciler(settings).await?;
    let preview = reconciler.preview(0).await?;
    match format {
        OutputFormat::Text => print!("{}", render_text(&preview, &settings.sync.target)),
        OutputFormat::Json => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            write_json(&preview, &settings.sync.target, &mut out)?;
            out.flush()?;
        }
    }
    let changes = has_changes(&preview);
    Ok(if detailed_exitcode && changes {
        Exit::Changes
    } else {
        Exit::Success
    })
}

/// Whether the next cycle would send anything (created, revoked, or held for release).
pub fn has_changes(preview: &Preview) -> bool {
    preview.queued > 0 || !preview.verdict.allowed.is_empty() || !preview.verdict.held.is_empty()
}

/// The plan as one JSON value (what [`write_json`] writes).
pub fn render_json(preview: &Preview, target: &str) -> Value {
    let mut out = Vec::new();
    match write_json(preview, target, &mut out) {
        Ok(()) => serde_json::from_slice(&out).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Writes the plan as JSON item by item, so a plan of a million people is never one value in
/// memory: an object with `target`, `counts`, `revocations`, `held_reason`, `creates`,
/// `drift`, `budget`, `backlog`, `awaiting_user_check` and `eta_seconds`.
pub fn write_json(preview: &Preview, target: &str, out: &mut impl Write) -> io::Result<()> {
    let verdict = &preview.verdict;
    let counts: std::collections::BTreeMap<&str, usize> = preview
        .plan
        .counts()
        .into_iter()
        .map(|(category, n)| (category.as_str(), n))
        .collect();
    out.write_all(b"{\n  \"target\": ")?;
    serde_json::to_writer(&mut *out, target)?;
    out.write_all(b",\n  \"counts\": ")?;
    serde_json::to_writer(&mut *out, &counts)?;
    out.write_all(b",\n  \"revocations\": ")?;
    let revocations = verdict
        .allowed
        .iter()
        .map(|r| (r, "revoke"))
        .chain(verdict.held.iter().map(|r| (r, "held")))
        .chain(verdict.protected.iter().map(|r| (r, "protected")))
        .map(|(r, status)| {
            json!({"email": r.email.as_str(), "invitation_id": r.invitation_id, "status": status})
        });
    write_array(out, revocations)?;
    out.write_all(b",\n  \"held_reason\": ")?;
    let held_reason = verdict
        .reason
        .filter(|_| !verdict.held.is_empty())
        .map(|r| r.describe());
    serde_json::to_writer(&mut *out, &held_reason)?;
    out.write_all(b",\n  \"creates\": ")?;
    let creates = preview.plan.items.iter().filter_map(|item| match item {
        Item::Create { invitee, reinvite } => Some(CreateLine::Create {
            email: invitee.email.as_str(),
            reinvite: *reinvite,
            not_before: invitee.not_before,
        }),
        Item::Replace {
            invitee,
            invitation_id,
            ..
        } => Some(CreateLine::Replace {
            email: invitee.email.as_str(),
            replaces: invitation_id,
        }),
        _ => None,
    });
    write_array(out, creates)?;
    out.write_all(b",\n  \"drift\": ")?;
    let drift = preview
        .plan
        .items
        .iter()
        .filter(|item| {
            !matches!(
                item,
                Item::Create { .. } | Item::Replace { .. } | Item::Revoke { .. }
            )
        })
        .map(|item| DriftLine {
            category: item.category().as_str(),
            email: item.email(),
            invitation_id: item.invitation_id(),
            reason: reason(item),
        });
    write_array(out, drift)?;
    out.write_all(b",\n  \"budget\": ")?;
    serde_json::to_writer(&mut *out, &preview.budget)?;
    write!(
        out,
        ",\n  \"backlog\": {},\n  \"awaiting_user_check\": {},\n  \"eta_seconds\": {},\n  \"unsettled\": ",
        preview.queued,
        preview.awaiting_user_check,
        preview.eta.as_secs()
    )?;
    serde_json::to_writer(&mut *out, &preview.unsettled)?;
    out.write_all(b"\n}\n")
}

/// One element of `creates`, written without building a JSON value.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum CreateLine<'a> {
    Create {
        email: &'a str,
        reinvite: bool,
        not_before: Option<chrono::DateTime<chrono::Utc>>,
    },
    Replace {
        email: &'a str,
        replaces: &'a str,
    },
}

/// One element of `drift`.
#[derive(serde::Serialize)]
struct DriftLine<'a> {
    category: &'a str,
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    invitation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A JSON array, one element a line.
fn write_array<T: serde::Serialize>(
    out: &mut impl Write,
    items: impl Iterator<Item = T>,
) -> io::Result<()> {
    out.write_all(b"[")?;
    let mut any = false;
    for item in items {
        out.write_all(if any { b",\n    " } else { b"\n    " })?;
        serde_json::to_writer(&mut *out, &item)?;
        any = true;
    }
    out.write_all(if any { b"\n  ]" } else { b"]" })
}

fn reason(item: &Item) -> Option<String> {
    match item {
        Item::Invalid { reason, .. } => Some(reason.clone()),
        Item::Stale { differences, .. } | Item::Replace { differences, .. } => {
            Some(format!("differs in {}", differences.join(", ")))
        }
        Item::Failed {
            code,
            reason,
            retry_at,
            ..
        } => Some(format!(
            "{}: {} (retry {})",
            code.as_deref().unwrap_or("error"),
            reason.as_deref().unwrap_or(""),
            retry_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "when the row changes".into())
        )),
        Item::Deferred { not_before, .. } => {
            Some(format!("not before {}", not_before.to_rfc3339()))
        }
        _ => None,
    }
}

pub fn render_text(preview: &Preview, target: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Plan for target {target}");
    render_revocations(&mut out, preview);
    render_creates(&mut out, preview);
    render_drift(&mut out, preview);
    render_totals(&mut out, preview);
    out
}

fn render_revocations(out: &mut String, preview: &Preview) {
    use std::fmt::Write;
    let verdict = &preview.verdict;
    let revoke_total = verdict.allowed.len() + verdict.held.len() + verdict.protected.len();
    let _ = writeln!(out, "\nRevocations ({revoke_total}):");
    for r in &verdict.allowed {
        let _ = writeln!(out, "  - revoke     {}  {}", r.email, r.invitation_id);
    }
    for r in &verdict.held {
        let _ = writeln!(out, "  ! held       {}  {}", r.email, r.invitation_id);
    }
    for r in &verdict.protected {
        let _ = writeln!(out, "  = protected  {}  {}", r.email, r.invitation_id);
    }
    if let Some(reason) = verdict.reason.filter(|_| !verdict.held.is_empty()) {
        let _ = writeln!(
            out,
            "  {} held: {}. Release with `invite-sync sync --allow-revocations {}`.",
            verdict.held.len(),
            reason.describe(),
            verdict.held.len()
        );
    }
}

fn render_creates(out: &mut String, preview: &Preview) {
    use std::fmt::Write;
    let _ = writeln!(out, "\nCreates ({}), in queue order:", preview.queued);
    for item in &preview.plan.items {
        match item {
            Item::Create { invitee, reinvite } => {
                let label = if *reinvite { "reinvite" } else { "create" };
                let _ = writeln!(out, "  + {label:<10} {}", invitee.email);
            }
            Item::Replace {
                invitee,
                invitation_id,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  ~ {:<10} {}  (revokes {invitation_id})",
                    "replace", invitee.email
                );
            }
            _ => {}
        }
    }
}

fn render_drift(out: &mut String, preview: &Preview) {
    use std::fmt::Write;
    let drift: Vec<&Item> = preview
        .plan
        .items
        .iter()
        .filter(|item| {
            !matches!(
                item,
                Item::Create { .. }
                    | Item::Replace { .. }
                    | Item::Revoke { .. }
                    | Item::InSync { .. }
            )
        })
        .collect();
    let _ = writeln!(out, "\nDrift and other items ({}):", drift.len());
    for item in drift {
        let _ = write!(out, "  * {:<18} {}", item.category().as_str(), item.email());
        if let Some(id) = item.invitation_id() {
            let _ = write!(out, "  {id}");
        }
        if let Some(reason) = reason(item) {
            let _ = write!(out, "  ({reason})");
        }
        let _ = writeln!(out);
    }
}

fn render_totals(out: &mut String, preview: &Preview) {
    use std::fmt::Write;
    let counts: Vec<String> = preview
        .plan
        .counts()
        .into_iter()
        .map(|(category, n)| format!("{}={n}", category.as_str()))
        .collect();
    let _ = writeln!(out, "\nCounts: {}", counts_text(&counts));
    let _ = writeln!(
        out,
        "Budget left this window: {} bulk calls, {} single calls.",
        preview.budget.bulk.left, preview.budget.single.left,
    );
    let _ = writeln!(
        out,
        "{}",
        backlog_text(
            preview.queued,
            preview.awaiting_user_check,
            preview.eta.as_secs()
        )
    );
    if let Some(at) = preview.unsettled.settles_at {
        let _ = writeln!(
            out,
            "Unsettled creates: {} (outcome unknown; these people may have no invitation yet), looked up from {}.",
            preview.unsettled.creates,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}

/// The counts line's text: `create=3 in_sync=40`, or `none` for a plan with no item at all
/// (an empty roster and no invitation in Clerk).
fn counts_text(counts: &[String]) -> String {
    if counts.is_empty() {
        "none (nothing on the roster, no invitation in Clerk)".to_owned()
    } else {
        counts.join(" ")
    }
}

/// The backlog's sentence of `plan`. The ETA is that of the people known to be invitable: those
/// awaiting a user check are looked up in Clerk's users before any create, so theirs is not
/// known yet.
pub fn backlog_text(queued: usize, awaiting_user_check: usize, eta_seconds: u64) -> String {
    let eta = human_duration(eta_seconds);
    let invitable = queued.saturating_sub(awaiting_user_check);
    match (queued, awaiting_user_check) {
        (0, _) => "Backlog 0: nothing waits.".to_owned(),
        (_, 0) => format!("Backlog {queued}, ETA {eta}."),
        _ if invitable == 0 => format!(
            "Backlog {queued}, all awaiting a user check (a lookup in Clerk's users before any \
             create): no ETA until they are checked."
        ),
        _ => format!(
            "Backlog {queued}, ETA {eta} for the {invitable} known to be invitable; \
             {awaiting_user_check} await a user check first."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_plan_says_so_instead_of_a_bare_counts_label() {
        assert_eq!(
            counts_text(&[]),
            "none (nothing on the roster, no invitation in Clerk)"
        );
        let counts = ["create=2".to_owned(), "in_sync=40".to_owned()];
        assert_eq!(counts_text(&counts), "create=2 in_sync=40");
    }

    #[test]
    fn the_backlog_sentence_gives_an_eta_only_for_those_known_to_be_invitable() {
        assert_eq!(backlog_text(0, 0, 0), "Backlog 0: nothing waits.");
        assert_eq!(
            backlog_text(1204, 0, 12_420),
            "Backlog 1204, ETA 3 h 27 min."
        );
        assert_eq!(
            backlog_text(37, 37, 0),
            "Backlog 37, all awaiting a user check (a lookup in Clerk's users before any \
             create): no ETA until they are checked."
        );
        assert_eq!(
            backlog_text(1204, 4, 12_420),
            "Backlog 1204, ETA 3 h 27 min for the 1200 known to be invitable; 4 await a user \
             check first."
        );
    }
}
