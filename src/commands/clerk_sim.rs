//! `invite-sync clerk-sim`: a simulated Clerk Backend API served until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::Exit;
use crate::clerk::sim::{self, SimOptions};
use crate::telemetry;

#[derive(Debug, Args)]
pub struct ClerkSimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8900")]
    pub listen: SocketAddr,
    /// The secret key clients must send (sk_test_... or sk_live_..., which sets the request rate).
    #[arg(long, env = "CLERK_SIM_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Length in seconds of the "hour" of the hourly create limits.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub hour_seconds: u64,
    /// Serve without any rate limit.
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Deliver Svix-signed `user.created` / `user.deleted` webhooks to this URL
    /// (e.g. http://127.0.0.1:8080/v1/webhooks/clerk); needs --webhook-secret.
    #[arg(long, requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// The endpoint's signing secret, `whsec_<base64>` (used only with --webhook-url).
    #[arg(long, env = "CLERK_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
}

pub async fn run(args: ClerkSimArgs) -> anyhow::Result<Exit> {
    telemetry::init(telemetry::Format::Pretty, "info").map_err(anyhow::Error::msg)?;
    let mut options = SimOptions {
        listen: args.listen,
        hour: Duration::from_secs(args.hour_seconds),
        rate_limits: !args.no_rate_limits,
        ..SimOptions::default()
    };
    if let Some(key) = args.secret_key {
        if crate::clerk::KeyKind::of(&key).is_none() {
            eprintln!("--secret-key must start with sk_test_ or sk_live_");
            return Ok(Exit::Usage);
        }
        options.secret_key = key;
    }
    if let (Some(url), Some(secret)) = (&args.webhook_url, &args.webhook_secret) {
        match sim::WebhookTarget::new(url, secret) {
            Ok(target) => options.webhook = Some(target),
            Err(error) => {
                eprintln!("--webhook-url/--webhook-secret: {error}");
                return Ok(Exit::Usage);
            }
        }
    }
    let webhook_url = options.webhook.as_ref().map(|t| t.url().to_string());
    let handle = sim::start(options)
        .await
        .with_context(|| format!("the simulator could not listen on {}", args.listen))?;
    tracing::info!(
        api_url = %handle.base_url(),
        control = %format!("http://{}/_sim/", handle.addr()),
        hour_seconds = args.hour_seconds,
        rate_limits = !args.no_rate_limits,
        webhook_url = webhook_url.as_deref().unwrap_or("none"),
        "simulated Clerk is serving; Ctrl-C stops it"
    );
    crate::service::shutdown::signal().await;
    handle.shutdown().await;
    tracing::info!("simulated Clerk stopped");
    Ok(Exit::Success)
}
