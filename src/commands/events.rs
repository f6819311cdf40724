//! `invite-sync events`: the outbound events. `replay` makes dead letters (or, with `--all`,
//! every retained event that matches) due again and delivers them.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Exit, OutputFormat};
use crate::config::Settings;
use crate::service::events::Deliverer;
use crate::store::outbox::{self, ReplayFilter};

/// What `events replay` selects and how it ends.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Only deliveries to this endpoint (its URL as configured).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Only events of this type, e.g. person.invited.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only events of this address.
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// Only events made at or after this time (RFC 3339, e.g. 2026-03-04T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only this event (its webhook-id, msg_...).
    #[arg(long, value_name = "ID")]
    pub event_id: Option<String>,
    /// Every retained event that matches, not only dead letters: those delivered already,
    /// and those made before an endpoint was added, are sent again.
    #[arg(long)]
    pub all: bool,
    /// Only make them due: the running service sends them.
    #[arg(long)]
    pub no_send: bool,
    /// How long to spend sending (failed deliveries are retried after their backoff
    /// meanwhile) before leaving the rest to the service, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub send_for: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

#[derive(Debug, serde::Serialize)]
struct Replayed {
    /// Deliveries made due again.
    replayed: u64,
    /// Of the deliveries this command attempted: delivered, failed again, dead again.
    delivered: usize,
    failed: usize,
    dead: usize,
    /// Deliveries still to be made when the command ended (left to the service).
    pending: i64,
    /// Dead letters left to the configured endpoints.
    dead_letters: i64,
}

/// `events replay`.
pub async fn replay(settings: &Settings, args: ReplayArgs) -> anyhow::Result<Exit> {
    let filter = match filter(settings, &args) {
        Ok(filter) => filter,
        Err(reason) => {
            eprintln!("{reason}");
            return Ok(Exit::Usage);
        }
    };
    let pool = crate::startup::connect(settings).await?;
    super::migrate_if_configured(&pool, settings).await?;
    let deliverer = Deliverer::start(pool.clone(), settings).await?;
    let target = &settings.sync.target;
    let replayed = outbox::replay(&pool, target, &filter)
        .await
        .context("the dead letters could not be made due again")?;
    let pass = if args.no_send || !deliverer.has_endpoints() {
        crate::service::events::Pass::default()
    } else {
        deliverer
            .drain(Duration::from_secs(args.send_for))
            .await
            .context("the events could not be delivered")?
    };
    let state = outbox::state(&pool, target).await?;
    let report = Replayed {
        replayed,
        delivered: pass.delivered,
        failed: pass.failed,
        dead: pass.dead,
        pending: state.pending,
        dead_letters: state.dead_letters,
    };
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => {
            println!("replayed: {} deliveries made due again", report.replayed);
            if args.no_send {
                println!("sending: left to the running service (--no-send)");
            } else {
                println!(
                    "sent: {} delivered, {} failed (retried later), {} dead again",
                    report.delivered, report.failed, report.dead
                );
            }
            println!("pending: {}", report.pending);
            println!("dead letters left: {}", report.dead_letters);
        }
    }
    Ok(
        if !args.no_send && (report.dead_letters > 0 || report.pending > 0) {
            Exit::Failed
        } else {
            Exit::Success
        },
    )
}

fn filter(settings: &Settings, args: &ReplayArgs) -> Result<ReplayFilter, String> {
    let endpoint = match &args.endpoint {
        None => None,
        Some(url) => {
            let known = settings
                .events
                .endpoints
                .iter()
                .map(|e| e.url.to_string())
                .find(|known| known == url || known.trim_end_matches('/') == url);
            match known {
                Some(known) => Some(known),
                None => {
                    return Err(format!(
                        "--endpoint {url:?} is not one of events.endpoints ({})",
                        settings
                            .events
                            .endpoints
                            .iter()
                            .map(|e| e.url.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
    };
    let email = match &args.email {
        None => None,
        Some(email) => Some(
            crate::domain::Email::parse(email)
                .map_err(|e| format!("--email {email:?} is not an email address: {e}"))?
                .as_str()
                .to_owned(),
        ),
    };
    let since = match &args.since {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("--since {text:?} is not an RFC 3339 time: {e}"))?
                .with_timezone(&Utc),
        ),
    };
    Ok(ReplayFilter {
        endpoint,
        event_type: args.event_type.clone(),
        email,
        since,
        event_id: args.event_id.clone(),
        all: args.all,
    })
}
