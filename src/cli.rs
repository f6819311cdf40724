//! The command line: one binary, a subcommand per task.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::clerk::ClientError;
pub use crate::commands::clerk_sim::ClerkSimArgs;
pub use crate::commands::import::ImportArgs;
use crate::commands::{self, Exit, OutputFormat};
use crate::config::{self, Settings};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "invite-sync",
    version,
    about = "Keeps a Clerk application's invitations equal to a roster in PostgreSQL"
)]
pub struct Cli {
    /// The configuration file (TOML). Built-in defaults apply to what it leaves out, and
    /// INVITE_SYNC__SECTION__KEY, DATABASE_URL and CLERK_SECRET_KEY override it.
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        env = "INVITE_SYNC_CONFIG"
    )]
    pub config: Option<PathBuf>,

    /// Read environment variables from FILE first, exactly as systemd's EnvironmentFile= reads
    /// it (no shell: `&` and `$` in a value are kept); its values replace the environment's.
    /// Run a command by hand as the service runs: --env-file /etc/invite-sync/invite-sync.env
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: cycles on the schedule, at start, on SIGHUP; stops cleanly on SIGTERM.
    Run,
    /// Run one cycle. Exit 0 done, 1 failed or items failed, 3 revocations held.
    Sync(SyncArgs),
    /// Show what the next cycle would do, revocations first.
    Plan(PlanArgs),
    /// Show the last runs, the backlog, the budget, held revocations and the lock holder.
    Status(StatusArgs),
    /// Explain one person: roster rows, ledger history, Clerk's state, events, and the
    /// decision the next cycle would take with the rule that decided. Exit 2 for a bad address.
    Explain(ExplainArgs),
    /// Load a CSV roster into the roster table (upsert by email).
    Import(ImportArgs),
    /// Run the whole loop on the local PostgreSQL against the built-in simulated Clerk.
    Demo(DemoArgs),
    /// Apply the database migrations (safe to run again).
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The outbound events sent to events.endpoints.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Serve a simulated Clerk Backend API (invitations, users and their webhooks) for
    /// rehearsals and tests.
    ClerkSim(ClerkSimArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Plan and report, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Release up to N revocations the guard holds, this once.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub allow_revocations: usize,
    /// Send again the creates Clerk refused (a terminal failure, which otherwise waits for the
    /// roster row to change): those of the addresses given, or every one without an address.
    #[arg(long, value_name = "EMAIL", num_args = 0.., conflicts_with = "dry_run")]
    pub retry_failed: Option<Vec<String>>,
    /// Reconcile in full: list every invitation in Clerk, not only the pending ones.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The address to explain.
    pub email: String,
    /// Ask Clerk nothing: decide from the database alone (no guard verdict, no organizations).
    #[arg(long)]
    pub offline: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after the scripted cycles instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Send dead letters again: exit 0 when every delivery is made, 1 when dead letters or
    /// pending deliveries are left.
    Replay(commands::events::ReplayArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration with secrets redacted, or name every bad key (exit 2).
    Check,
}

/// Parses the process's arguments. On a usage error, or after `--help` / `--version`, the
/// message is printed and the exit code returned.
pub fn parse() -> Result<Cli, Exit> {
    Cli::try_parse().map_err(|error| {
        let _ = error.print();
        match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Exit::Success
            }
            // The arguments did not parse, so `plan --detailed-exitcode` is looked for by word.
            _ => Exit::usage(std::env::args_os().any(|a| a == "--detailed-exitcode")),
        }
    })
}

/// Sets the variables of `--env-file`, before any thread starts. A file that cannot be read
/// or parsed is a usage error naming it.
pub fn apply_env_file(cli: &mut Cli) -> Result<(), Exit> {
    let Some(path) = &cli.env_file else {
        return Ok(());
    };
    let assignments = config::read_env_file(path).map_err(|reason| {
        eprintln!("--env-file {}: {reason}", path.display());
        Exit::Usage
    })?;
    for (key, value) in assignments {
        if key == "INVITE_SYNC_CONFIG" && cli.config.is_none() {
            cli.config = Some(PathBuf::from(&value));
        }
        std::env::set_var(key, value);
    }
    Ok(())
}

/// Runs a parsed command line and returns how it ended.
pub async fn run(cli: Cli) -> Exit {
    let outcome = match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => return commands::config_check::run(cli.config.as_deref()).await,
        Command::ClerkSim(args) => commands::clerk_sim::run(args).await,
        Command::Demo(args) => commands::demo::run(args.once).await,
        command => {
            let config_error = Exit::usage(matches!(
                &command,
                Command::Plan(args) if args.detailed_exitcode
            ));
            let needs_clerk = matches!(command, Command::Run | Command::Sync(_) | Command::Plan(_))
                || matches!(&command, Command::Explain(args) if !args.offline);
            let settings = match load(cli.config, needs_clerk, config_error) {
                Ok(settings) => settings,
                Err(code) => return code,
            };
            match command {
                Command::Run => commands::run::run(&settings).await,
                Command::Sync(args) => {
                    let retry = match retry_failed(args.retry_failed) {
                        Ok(retry) => retry,
                        Err(code) => return code,
                    };
                    commands::sync::run(
                        &settings,
                        args.dry_run,
                        args.allow_revocations,
                        retry,
                        args.full,
                    )
                    .await
                }
                Command::Plan(args) => {
                    commands::plan::run(&settings, args.format, args.detailed_exitcode).await
                }
                Command::Status(args) => commands::status::run(&settings, args.format).await,
                Command::Explain(args) => {
                    commands::explain::run(&settings, &args.email, args.offline, args.format).await
                }
                Command::Import(args) => commands::import::run(&settings, args).await,
                Command::Migrate => commands::migrate::run(&settings).await,
                Command::Events {
                    command: EventsCommand::Replay(args),
                } => commands::events::replay(&settings, args).await,
                Command::Config { .. } | Command::ClerkSim(_) | Command::Demo(_) => {
                    unreachable!("handled above")
                }
            }
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error.message = %error, error.cause_chain = ?error, "command failed");
            eprintln!("error: {}", telemetry::Chain(error.as_ref()));
            Exit::Failed
        }
    }
}

/// `--retry-failed`'s addresses, each checked; a bad one is a usage error naming it.
fn retry_failed(emails: Option<Vec<String>>) -> Result<commands::sync::RetryFailed, Exit> {
    use commands::sync::RetryFailed;
    match emails {
        None => Ok(RetryFailed::None),
        Some(emails) if emails.is_empty() => Ok(RetryFailed::All),
        Some(emails) => emails
            .iter()
            .map(|email| {
                crate::domain::Email::parse(email).map_err(|e| {
                    eprintln!("--retry-failed: {email:?} is not an email address: {e}");
                    Exit::Usage
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RetryFailed::These),
    }
}

/// Loads the settings and installs logging. A bad configuration, or a missing or unusable
/// Clerk secret key for a command that calls Clerk, exits with `config_error` before any
/// connection is made.
fn load(file: Option<PathBuf>, needs_clerk: bool, config_error: Exit) -> Result<Settings, Exit> {
    let settings = Settings::from_process_env(file.as_deref()).map_err(|error| {
        eprintln!("invalid configuration:\n{error}");
        config_error
    })?;
    if needs_clerk {
        let checked = settings
            .clerk
            .client_options()
            .map_err(|e| e.to_string())
            .and_then(|options| {
                crate::clerk::ClerkClient::new(options)
                    .map(drop)
                    .map_err(|e| match e {
                        ClientError::InvalidKey(_) => format!("clerk.secret_key: {e}"),
                        ClientError::InvalidApiUrl => format!("clerk.api_url: {e}"),
                        _ => e.to_string(),
                    })
            });
        if let Err(error) = checked {
            eprintln!("invalid configuration:\n{error}");
            return Err(config_error);
        }
    }
    let format = match settings.log.format {
        config::LogFormat::Pretty => telemetry::Format::Pretty,
        config::LogFormat::Json => telemetry::Format::Json,
    };
    telemetry::init(format, &settings.log.level).map_err(|error| {
        eprintln!("{error}");
        config_error
    })?;
    Ok(settings)
}
