//! `invite-sync plan`: what the next cycle would do, revocations first, listed by email.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::{human_duration, Exit, OutputFormat};
use crate::config::Settings;
use crate::reconcile::memberships::overview;
use crate::reconcile::plan::written::{is_drift, Create, Head, Sink, Tail};
use crate::reconcile::plan::{Category, Item};
use crate::reconcile::Preview;

pub async fn run(
    settings: &Settings,
    format: OutputFormat,
    detailed_exitcode: bool,
) -> anyhow::Result<Exit> {
    let reconciler = crate::startup::reconciler(settings).await?;
    let target = &settings.sync.target;
    // The membership plan is read first and held (one item per person and organization);
    // its section follows the instance plan's.
    let memberships = overview::preview(&reconciler).await?;
    let out = io::BufWriter::new(io::stdout().lock());
    // Written as the roster is read: a plan of a million people is never held.
    let (written, out) = match format {
        OutputFormat::Text => {
            let mut sink = TextSink::new(out, target);
            let written = reconciler.write_plan(0, &mut sink).await?;
            let out = sink.finish().and_then(|mut out| {
                write_memberships_text(&mut out, &memberships)?;
                Ok(out)
            });
            (written, out)
        }
        OutputFormat::Json => {
            let mut sink = JsonSink::new(out, target);
            sink.memberships = Some(serde_json::to_value(&memberships)?);
            let written = reconciler.write_plan(0, &mut sink).await?;
            (written, sink.finish())
        }
    };
    out?.flush()?;
    let changes = written.changes || memberships.changes();
    Ok(if detailed_exitcode && changes {
        Exit::Changes
    } else {
        Exit::Success
    })
}

/// The organizations section of `plan`: each organization's items that are not in sync
/// (invalid rows among them, with their reason), its counts and backlog, the held removals,
/// the organization budget and the backlog's ETA at its pace. Nothing when there is no
/// membership roster and invite-sync holds nothing in any organization.
pub fn write_memberships_text(out: &mut impl Write, preview: &overview::Preview) -> io::Result<()> {
    if preview.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nOrganizations ({}), {} membership roster rows:",
        preview.organizations.len(),
        preview.rows
    )?;
    for organization in &preview.organizations {
        writeln!(out, "  {}", organization_heading(organization))?;
        for line in &organization.items {
            let mark = match line.category {
                _ if line.held => '!',
                "invite" | "reinvite" | "add_member" => '+',
                "change_role" | "replace" => '~',
                "revoke" | "remove_member" => '-',
                _ => '*',
            };
            let category = if line.held {
                format!("held {}", line.category)
            } else {
                line.category.to_owned()
            };
            write!(out, "    {mark} {category:<13} {}", line.email)?;
            match &line.detail {
                Some(detail) => writeln!(out, "  ({detail})")?,
                None => writeln!(out)?,
            }
        }
        let counts: Vec<String> = organization
            .counts
            .iter()
            .map(|(category, n)| format!("{category}={n}"))
            .collect();
        write!(
            out,
            "    Counts: {}; backlog {}",
            counts.join(" "),
            organization.backlog
        )?;
        if !organization.waiting.is_empty() {
            let waiting: Vec<String> = organization
                .waiting
                .iter()
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect();
            write!(out, "; waiting {}", waiting.join(" "))?;
        }
        writeln!(out)?;
    }
    if preview.held > 0 {
        let emptied = if preview.emptied.is_empty() {
            String::new()
        } else {
            format!(" (emptied: {})", preview.emptied.join(", "))
        };
        writeln!(
            out,
            "Membership removals held: {} ({}){emptied}. Release with `invite-sync sync --allow-revocations {}`.",
            preview.held,
            preview.held_reason.unwrap_or("held by the guard"),
            preview.held
        )?;
    }
    writeln!(
        out,
        "Organization budget left this window: {} bulk calls, {} single calls.",
        preview.budget.bulk.left, preview.budget.single.left
    )?;
    writeln!(out, "{}", membership_backlog_text(preview))?;
    if let Some(until) = preview.clerk_blocked_until {
        writeln!(
            out,
            "CLERK BLOCKS organization invitations (rate limited) until {}.",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
    }
    for error in &preview.errors {
        writeln!(out, "Not read: {error}")?;
    }
    Ok(())
}

/// An organization's heading: slug and id (or the reference Clerk did not resolve), name,
/// room.
fn organization_heading(organization: &overview::OrganizationPlan) -> String {
    let mut heading = match (&organization.slug, organization.resolved) {
        (Some(slug), true) => format!("{slug} ({})", organization.organization),
        (None, true) => organization.organization.clone(),
        (_, false) => format!("{} (not resolved)", organization.organization),
    };
    if let Some(name) = organization.name.as_deref().filter(|n| !n.is_empty()) {
        heading.push_str(&format!(" \"{name}\""));
    }
    if organization.resolved {
        match organization.room {
            Some(0) => heading.push_str(" FULL"),
            Some(room) => heading.push_str(&format!(" room {room}")),
            None => heading.push_str(" unlimited"),
        }
    }
    heading
}

/// The membership backlog's sentence: invitations to send, their ETA at the organization
/// budget's pace, and how many the budget left now does not carry.
fn membership_backlog_text(preview: &overview::Preview) -> String {
    match preview.backlog {
        0 => "Membership backlog 0: no organization invitation to send.".to_owned(),
        n => {
            let mut text = match preview.eta_seconds {
                0 => format!(
                    "Membership backlog {n}, all within the organization budget left this window"
                ),
                eta => format!(
                    "Membership backlog {n}, ETA {} at the organization budget's pace",
                    human_duration(eta)
                ),
            };
            if preview.waiting_for_budget > 0 {
                text.push_str(&format!(
                    "; {} wait for the budget",
                    preview.waiting_for_budget
                ));
            }
            text.push('.');
            text
        }
    }
}

/// Whether the next cycle would send anything (created, revoked, or held for release).
pub fn has_changes(preview: &Preview) -> bool {
    preview.queued > 0 || !preview.verdict.allowed.is_empty() || !preview.verdict.held.is_empty()
}

/// Feeds a plan held whole to a sink, as [`crate::reconcile::Reconciler::write_plan`] writes
/// one as it reads: the creates in queue order, the drift by address.
fn feed(preview: &Preview, sink: &mut impl Sink) {
    let counts = preview.plan.counts();
    sink.head(&Head {
        counts: &counts,
        verdict: &preview.verdict,
        queued: preview.queued,
    });
    for create in preview.plan.items.iter().filter_map(Create::of) {
        sink.create(&create);
    }
    let mut drift: Vec<&Item> = preview
        .plan
        .items
        .iter()
        .filter(|i| is_drift(i) && sink.wants_drift(i.category()))
        .collect();
    drift.sort_by(|a, b| a.email().cmp(b.email()));
    for item in drift {
        sink.drift(item);
    }
    sink.tail(&Tail {
        budget: preview.budget,
        queued: preview.queued,
        awaiting_user_check: preview.awaiting_user_check,
        eta: preview.eta,
        unsettled: preview.unsettled,
    });
}

/// The plan as one JSON value (what [`write_json`] writes).
pub fn render_json(preview: &Preview, target: &str) -> Value {
    let mut out = Vec::new();
    match write_json(preview, target, &mut out) {
        Ok(()) => serde_json::from_slice(&out).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Writes a plan held whole as JSON: an object with `target`, `counts`, `revocations`,
/// `held_reason`, `creates`, `drift`, `budget`, `backlog`, `awaiting_user_check`,
/// `eta_seconds` and `unsettled`.
pub fn write_json(preview: &Preview, target: &str, out: &mut impl Write) -> io::Result<()> {
    let mut sink = JsonSink::new(out, target);
    feed(preview, &mut sink);
    sink.finish().map(drop)
}

/// The plan as text (what `plan` prints).
pub fn render_text(preview: &Preview, target: &str) -> String {
    let mut sink = TextSink::new(Vec::new(), target);
    feed(preview, &mut sink);
    let out = sink.finish().unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a plan as JSON item by item. The first write error stops the writing and is given
/// back by `finish`.
struct JsonSink<'a, W: Write> {
    out: W,
    target: &'a str,
    /// Whether the array being written has an element yet.
    any: bool,
    in_drift: bool,
    /// The organizations section, written last when there is one.
    memberships: Option<Value>,
    error: Option<io::Error>,
}

impl<'a, W: Write> JsonSink<'a, W> {
    fn new(out: W, target: &'a str) -> Self {
        JsonSink {
            out,
            target,
            any: false,
            in_drift: false,
            memberships: None,
            error: None,
        }
    }

    fn write(&mut self, write: impl FnOnce(&mut W) -> io::Result<()>) {
        if self.error.is_none() {
            if let Err(e) = write(&mut self.out) {
                self.error = Some(e);
            }
        }
    }

    /// An element of the array being written, one a line.
    fn element(&mut self, value: &impl serde::Serialize) {
        let first = !self.any;
        self.any = true;
        self.write(|out| {
            out.write_all(if first { b"\n    " } else { b",\n    " })?;
            serde_json::to_writer(&mut *out, value)?;
            Ok(())
        });
    }

    /// Ends the creates and begins the drift, once.
    fn begin_drift(&mut self) {
        if !self.in_drift {
            self.in_drift = true;
            self.close_array();
            self.write(|out| out.write_all(b",\n  \"drift\": ["));
        }
    }

    /// Ends the array being written.
    fn close_array(&mut self) {
        let any = std::mem::take(&mut self.any);
        self.write(|out| out.write_all(if any { b"\n  ]" } else { b"]" }));
    }

    fn finish(self) -> io::Result<W> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

impl<W: Write> Sink for JsonSink<'_, W> {
    fn head(&mut self, head: &Head<'_>) {
        let verdict = head.verdict;
        let counts: std::collections::BTreeMap<&str, usize> = head
            .counts
            .iter()
            .map(|(category, n)| (category.as_str(), *n))
            .collect();
        let target = self.target;
        self.write(|out| {
            out.write_all(b"{\n  \"target\": ")?;
            serde_json::to_writer(&mut *out, target)?;
            out.write_all(b",\n  \"counts\": ")?;
            serde_json::to_writer(&mut *out, &counts)?;
            out.write_all(b",\n  \"revocations\": [")?;
            Ok(())
        });
        let revocations = verdict
            .allowed
            .iter()
            .map(|r| (r, "revoke"))
            .chain(verdict.held.iter().map(|r| (r, "held")))
            .chain(verdict.protected.iter().map(|r| (r, "protected")));
        for (r, status) in revocations {
            self.element(&json!({
                "email": r.email.as_str(),
                "invitation_id": r.invitation_id,
                "status": status
            }));
        }
        self.close_array();
        let held_reason = verdict
            .reason
            .filter(|_| !verdict.held.is_empty())
            .map(|r| r.describe());
        self.write(|out| {
            out.write_all(b",\n  \"held_reason\": ")?;
            serde_json::to_writer(&mut *out, &held_reason)?;
            out.write_all(b",\n  \"creates\": [")?;
            Ok(())
        });
    }

    fn create(&mut self, create: &Create<'_>) {
        match create.replaces {
            None => self.element(&CreateLine::Create {
                email: create.email,
                reinvite: create.reinvite,
                not_before: create.not_before,
            }),
            Some(replaces) => self.element(&CreateLine::Replace {
                email: create.email,
                replaces,
            }),
        }
    }

    fn wants_drift(&self, _: Category) -> bool {
        true
    }

    fn drift(&mut self, item: &Item) {
        self.begin_drift();
        self.element(&DriftLine {
            category: item.category().as_str(),
            email: item.email(),
            invitation_id: item.invitation_id(),
            reason: reason(item),
        });
    }

    fn tail(&mut self, tail: &Tail) {
        self.begin_drift();
        self.close_array();
        self.write(|out| {
            out.write_all(b",\n  \"budget\": ")?;
            serde_json::to_writer(&mut *out, &tail.budget)?;
            write!(
                out,
                ",\n  \"backlog\": {},\n  \"awaiting_user_check\": {},\n  \"eta_seconds\": {},\n  \"unsettled\": ",
                tail.queued,
                tail.awaiting_user_check,
                tail.eta.as_secs()
            )?;
            serde_json::to_writer(&mut *out, &tail.unsettled)?;
            Ok(())
        });
        if let Some(memberships) = self.memberships.take() {
            self.write(|out| {
                out.write_all(b",\n  \"memberships\": ")?;
                serde_json::to_writer(&mut *out, &memberships)?;
                Ok(())
            });
        }
        self.write(|out| out.write_all(b"\n}\n"));
    }
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

/// Writes a plan as text section by section. The first write error stops the writing and is
/// given back by `finish`.
struct TextSink<W: Write> {
    out: W,
    /// The counts line, from the head.
    counts: Vec<String>,
    /// How many drift items the drift section lists, from the head.
    drift: usize,
    in_drift: bool,
    error: Option<io::Error>,
}

impl<W: Write> TextSink<W> {
    fn new(out: W, target: &str) -> Self {
        let mut sink = TextSink {
            out,
            counts: Vec::new(),
            drift: 0,
            in_drift: false,
            error: None,
        };
        sink.write(format_args!("Plan for target {target}\n"));
        sink
    }

    fn write(&mut self, text: std::fmt::Arguments<'_>) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_fmt(text) {
                self.error = Some(e);
            }
        }
    }

    /// Ends the creates and heads the drift, once.
    fn begin_drift(&mut self) {
        if !self.in_drift {
            self.in_drift = true;
            let n = self.drift;
            self.write(format_args!("\nDrift and other items ({n}):\n"));
        }
    }

    fn finish(self) -> io::Result<W> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn head(&mut self, head: &Head<'_>) {
        self.counts = head
            .counts
            .iter()
            .map(|(category, n)| format!("{}={n}", category.as_str()))
            .collect();
        self.drift = head
            .counts
            .iter()
            .filter(|(category, _)| {
                !matches!(
                    category,
                    Category::Create | Category::Reinvite | Category::Replace | Category::Revoke
                ) && self.wants_drift(**category)
            })
            .map(|(_, n)| n)
            .sum();
        let verdict = head.verdict;
        let revoke_total = verdict.allowed.len() + verdict.held.len() + verdict.protected.len();
        self.write(format_args!("\nRevocations ({revoke_total}):\n"));
        for r in &verdict.allowed {
            self.write(format_args!(
                "  - revoke     {}  {}\n",
                r.email, r.invitation_id
            ));
        }
        for r in &verdict.held {
            self.write(format_args!(
                "  ! held       {}  {}\n",
                r.email, r.invitation_id
            ));
        }
        for r in &verdict.protected {
            self.write(format_args!(
                "  = protected  {}  {}\n",
                r.email, r.invitation_id
            ));
        }
        if let Some(reason) = verdict.reason.filter(|_| !verdict.held.is_empty()) {
            self.write(format_args!(
                "  {} held: {}. Release with `invite-sync sync --allow-revocations {}`.\n",
                verdict.held.len(),
                reason.describe(),
                verdict.held.len()
            ));
        }
        self.write(format_args!(
            "\nCreates ({}), in queue order:\n",
            head.queued
        ));
    }

    fn create(&mut self, create: &Create<'_>) {
        match create.replaces {
            None => {
                let label = if create.reinvite {
                    "reinvite"
                } else {
                    "create"
                };
                self.write(format_args!("  + {label:<10} {}\n", create.email));
            }
            Some(replaces) => self.write(format_args!(
                "  ~ {:<10} {}  (revokes {replaces})\n",
                "replace", create.email
            )),
        }
    }

    /// In-sync people are counted only.
    fn wants_drift(&self, category: Category) -> bool {
        category != Category::InSync
    }

    fn drift(&mut self, item: &Item) {
        self.begin_drift();
        let mut line = format!("  * {:<18} {}", item.category().as_str(), item.email());
        if let Some(id) = item.invitation_id() {
            line.push_str("  ");
            line.push_str(id);
        }
        if let Some(reason) = reason(item) {
            line.push_str(&format!("  ({reason})"));
        }
        self.write(format_args!("{line}\n"));
    }

    fn tail(&mut self, tail: &Tail) {
        self.begin_drift();
        let counts = counts_text(&self.counts);
        self.write(format_args!("\nCounts: {counts}\n"));
        self.write(format_args!(
            "Budget left this window: {} bulk calls, {} single calls.\n",
            tail.budget.bulk.left, tail.budget.single.left,
        ));
        let backlog = backlog_text(tail.queued, tail.awaiting_user_check, tail.eta.as_secs());
        self.write(format_args!("{backlog}\n"));
        if let Some(at) = tail.unsettled.settles_at {
            self.write(format_args!(
                "Unsettled creates: {} (outcome unknown; these people may have no invitation yet), looked up from {}.\n",
                tail.unsettled.creates,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
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
