//! `invite-sync demo`: the whole loop on the local PostgreSQL with the built-in simulated
//! Clerk: a sample roster invited, a few people removed and revoked, acceptance and expiry
//! noticed, two organizations kept equal to a membership roster (one named by slug, an
//! admin, existing accounts made members at once, a role change and a leaver), then the
//! service keeps running until Ctrl-C (or stops with `--once`).

use std::collections::HashMap;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio_util::sync::CancellationToken;

use super::private_postgres::{self, answers, PrivateCluster, LOCAL_SERVER};
use super::Exit;
use crate::clerk::sim::{self, SimOptions};
use crate::config::{self, Settings};
use crate::reconcile::{self, CycleResult, Request};
use crate::{import, service, store, telemetry};

/// The database the demo uses (and resets) on the local server.
pub const DATABASE: &str = "invite_sync_demo";
/// The sample roster.
const ROSTER: &str = include_str!("../../config/demo-roster.csv");
/// People in the roster who already have an account in the simulated Clerk.
const EXISTING_USERS: [&str; 3] = ["grace@example.com", "ken@example.com", "vint@example.com"];
/// The bearer token of the demo's `/v1/` endpoints.
const DEMO_API_TOKEN: &str = "demo-token-not-a-secret";
/// The simulated Clerk signs its user webhooks with this; the demo's service checks them.
const DEMO_WEBHOOK_SECRET: &str = "whsec_ZGVtby13ZWJob29rLW5vdC1hLXNlY3JldA==";
/// The demo's service listens on a free port of loopback, so another server cannot stand in
/// the way of the simulated Clerk's webhooks.
const DEMO_LISTEN: &str = "127.0.0.1:0";
/// How long the simulated Clerk's user webhooks may take to reach the demo's service.
const WEBHOOK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// The accepted user whose account Clerk deletes: she is still on the roster, so she is
/// invited again.
const REINVITED: &str = "ada@example.com";
/// People the demo removes from the roster.
const LEAVERS: [&str; 3] = ["alan@example.com", "jean@example.com", "tim@example.com"];
/// The organization the membership roster names by its slug.
const ACME: &str = "acme";
/// The existing account whose role in Acme the demo changes to admin.
const PROMOTED: &str = "grace@example.com";
/// The existing account that leaves Globex (a member invite-sync added, removed as
/// `organizations.remove_members` is on in the demo).
const ORG_LEAVER: &str = "vint@example.com";
/// The person who accepts her Acme invitation, as its admin.
const ORG_ACCEPTS: &str = "mia@example.com";

/// The membership roster: Acme named by its slug, Globex by its id (`{globex}`). Grace, Ken
/// and Vint already have accounts (and are on the instance roster too): they become members
/// at once, with no email. Mia, Noah, Olivia and Paul are new and only in organizations: each
/// gets an organization invitation.
fn membership_roster(globex: &str) -> String {
    format!(
        "email,organization,role\n\
         {ORG_ACCEPTS},{ACME},org:admin\n\
         noah@example.com,{ACME},\n\
         {PROMOTED},{ACME},org:member\n\
         olivia@example.com,{globex},\n\
         paul@example.com,{globex},\n\
         ken@example.com,{globex},org:admin\n\
         {ORG_LEAVER},{globex},\n"
    )
}

pub async fn run(once: bool) -> anyhow::Result<Exit> {
    telemetry::init_with_prefix(telemetry::Format::Pretty, "info", "[simulated Clerk] ")
        .map_err(anyhow::Error::msg)?;
    // Declared first so that it is dropped last: the server outlives every connection.
    let mut private = None;
    let server_url = match std::env::var("DATABASE_URL") {
        // An explicit server that does not answer is the user's to fix: an error below.
        Ok(url) => url,
        Err(_) if answers(LOCAL_SERVER).await => LOCAL_SERVER.to_owned(),
        Err(_) => {
            let cluster = start_private_cluster().await?;
            let url = cluster.url();
            private = Some(cluster);
            url
        }
    };
    let database_url = create_database(&server_url).await?;

    // The service's address is known before the simulated Clerk starts, so that its webhooks
    // are sent there; the socket stays bound for the whole demo, script and service alike.
    let listener = std::net::TcpListener::bind(DEMO_LISTEN)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .with_context(|| format!("the demo's service cannot listen on {DEMO_LISTEN}"))?;
    let listen = listener
        .local_addr()
        .context("the demo's service has no address")?;

    // The simulated Clerk tells the demo's service of users made and deleted, as Clerk's
    // webhooks would: the whole loop, rehearsed.
    let webhook = sim::WebhookTarget::new(
        &format!("http://{listen}/v1/webhooks/clerk"),
        DEMO_WEBHOOK_SECRET,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let simulator = sim::start(SimOptions::default().with_webhook(webhook))
        .await
        .context("the simulated Clerk could not start")?;

    let env: HashMap<String, String> = [
        ("DATABASE_URL", database_url.as_str()),
        ("CLERK_SECRET_KEY", simulator.secret_key()),
        ("INVITE_SYNC__CLERK__API_URL", simulator.base_url().as_str()),
        ("INVITE_SYNC__SYNC__SCHEDULE", "*/30 * * * * *"),
        ("INVITE_SYNC__SYNC__SHUTDOWN_TIMEOUT_SECONDS", "15"),
        ("INVITE_SYNC__HTTP__LISTEN", &listen.to_string()),
        ("INVITE_SYNC__HTTP__API_TOKEN", DEMO_API_TOKEN),
        (
            "INVITE_SYNC__HTTP__CLERK_WEBHOOK_SECRET",
            DEMO_WEBHOOK_SECRET,
        ),
        // The demo's leaver is removed from Globex; by default a membership is only reported.
        ("INVITE_SYNC__ORGANIZATIONS__REMOVE_MEMBERS", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = Settings::load(None, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let reconciler = crate::startup::reconciler(&settings).await?;
    let pool = reconciler.pool.clone();
    store::migrate(&pool)
        .await
        .context("the migrations could not be applied")?;
    // The webhooks' endpoint is up while the script runs; the service takes it over after.
    let webhooks = WebhookEndpoint::start(&reconciler, &settings, &listener)?;
    simulator.seed_users(&EXISTING_USERS);
    let acme = simulator
        .create_organization("Acme", Some(ACME), 10)
        .context("the simulated Clerk did not create Acme")?;
    let globex = simulator
        .create_organization("Globex", Some("globex"), 0)
        .context("the simulated Clerk did not create Globex")?;

    heading("1. The sample roster goes into desired_invitees");
    let imported = import::import_reader(
        &pool,
        ROSTER.as_bytes(),
        &import::ImportOptions {
            relation: settings.source.relation.clone(),
            replace: false,
            dry_run: false,
            skip_invalid: false,
            force: false,
            max_delete_ratio: settings.sync.max_revocation_ratio,
        },
    )
    .await
    .context("the sample roster could not be loaded")?;
    print!("{}", imported.render());
    println!(
        "{} of them already have an account in the simulated Clerk: {}",
        EXISTING_USERS.len(),
        EXISTING_USERS.join(", ")
    );
    println!(
        "\nThe simulated Clerk has two organizations: Acme ({}, slug {ACME}, room for 10) and Globex ({}, no limit).\nThe membership roster goes into desired_memberships: Acme named by its slug, Globex by its id; an empty role is organizations.default_role (org:member).",
        acme.id, globex.id
    );
    let memberships = membership_roster(&globex.id);
    print!("{memberships}");
    let imported = import::import_reader_with_memberships(
        &pool,
        memberships.as_bytes(),
        &import::ImportOptions {
            relation: settings.source.relation.clone(),
            replace: false,
            dry_run: false,
            skip_invalid: false,
            force: false,
            max_delete_ratio: settings.sync.max_revocation_ratio,
        },
        &settings.source.memberships_relation,
    )
    .await
    .context("the sample membership roster could not be loaded")?;
    print!("{}", imported.render());

    heading("2. The plan before the first cycle");
    print_plan(&reconciler, &settings).await?;

    heading("3. First cycle: invitations are created in bulk; in the organizations, invitations for the new people and memberships at once for the existing accounts");
    cycle(&reconciler, "demo").await?;
    print_status(&pool, &settings).await?;

    heading(&format!(
        "4. {} people leave: their rows are deleted",
        LEAVERS.len()
    ));
    let leavers: Vec<String> = LEAVERS.iter().map(|s| (*s).to_owned()).collect();
    let writer = store::roster::Writer::new(&settings.source.relation, store::roster::Columns::ALL);
    writer.delete(&mut *pool.acquire().await?, &leavers).await?;
    print_plan(&reconciler, &settings).await?;
    cycle(&reconciler, "demo").await?;

    heading("5. In Clerk, two people accept and one invitation expires");
    let invitations = simulator.invitations();
    let pending_of = |email: &str| {
        invitations
            .iter()
            .find(|i| {
                i.email_address.eq_ignore_ascii_case(email)
                    && i.status == crate::clerk::InvitationStatus::Pending
            })
            .map(|i| i.id.clone())
    };
    for email in [REINVITED, "linus@example.com"] {
        if let Some(id) = pending_of(email) {
            simulator.accept(&id);
            println!("{email} accepted {id}");
        }
    }
    let org_invitation = simulator.organization_invitations().into_iter().find(|i| {
        i.email_address.eq_ignore_ascii_case(ORG_ACCEPTS)
            && i.status == crate::clerk::InvitationStatus::Pending
    });
    if let Some(invitation) = org_invitation {
        simulator.accept_organization_invitation(&invitation.id);
        println!(
            "{ORG_ACCEPTS} accepted her Acme invitation {}: she is a member",
            invitation.id
        );
    }
    if let Some(id) = pending_of("radia@example.com") {
        simulator.expire(&id);
        println!("radia@example.com: invitation {id} expired");
    }
    cycle(&reconciler, "demo").await?;
    print_status(&pool, &settings).await?;

    heading(&format!(
        "6. Organizations: {PROMOTED} becomes an admin of Acme (a role change), {ORG_LEAVER} leaves Globex"
    ));
    let promoted = format!("email,organization,role\n{PROMOTED},{ACME},org:admin\n");
    let imported = import::import_reader_with_memberships(
        &pool,
        promoted.as_bytes(),
        &import::ImportOptions {
            relation: settings.source.relation.clone(),
            replace: false,
            dry_run: false,
            skip_invalid: false,
            force: false,
            max_delete_ratio: settings.sync.max_revocation_ratio,
        },
        &settings.source.memberships_relation,
    )
    .await
    .context("the role change could not be written")?;
    print!("{promoted}{}", imported.render());
    let writer = store::membership_roster::MembershipWriter::new(
        &settings.source.memberships_relation,
        store::membership_roster::MembershipColumns::ALL,
    );
    writer
        .delete(
            &mut *pool.acquire().await?,
            &[(ORG_LEAVER.to_owned(), globex.id.clone())],
        )
        .await?;
    println!("deleted the row of {ORG_LEAVER} in Globex ({})", globex.id);
    print_plan(&reconciler, &settings).await?;
    cycle(&reconciler, "demo").await?;
    check_organizations(&simulator, &acme.id, &globex.id)?;
    print_status(&pool, &settings).await?;

    heading("7. Clerk deletes ada's account; she is still on the roster, so she is invited again");
    let ada = simulator
        .users()
        .into_iter()
        .find(|u| u.emails().any(|e| e == REINVITED))
        .with_context(|| format!("{REINVITED} has no account in the simulated Clerk"))?;
    simulator.delete_user(&ada.id);
    println!(
        "deleted user {}: the simulated Clerk sends user.deleted to the service",
        ada.id
    );
    let delivered = simulator.webhooks_settled(WEBHOOK_DEADLINE).await;
    let webhook_stats = simulator.stats().webhooks;
    if !delivered || webhook_stats.delivered("user.deleted") == 0 {
        anyhow::bail!(
            "the simulated Clerk's user.deleted webhook did not reach the demo's service at \
             {listen} within {} s: {}",
            WEBHOOK_DEADLINE.as_secs(),
            serde_json::to_string(&webhook_stats).unwrap_or_default()
        );
    }
    cycle(&reconciler, "demo").await?;
    let reinvited = simulator.invitations().into_iter().any(|i| {
        i.email_address.eq_ignore_ascii_case(REINVITED)
            && i.status == crate::clerk::InvitationStatus::Pending
    });
    if !reinvited {
        anyhow::bail!("{REINVITED} was not invited again after Clerk deleted her account");
    }

    let stats = simulator.stats();
    println!(
        "\nSimulated Clerk received: {}",
        serde_json::to_string(&stats).unwrap_or_default()
    );
    webhooks.stop().await;
    if once {
        simulator.shutdown().await;
        pool.close().await;
        reconciler.pool.close().await;
        if let Some(cluster) = private.take() {
            let root = cluster.root().display().to_string();
            tokio::task::spawn_blocking(move || drop(cluster)).await?;
            println!("The private PostgreSQL was stopped and {root} removed.");
        }
        return Ok(Exit::Success);
    }

    heading("8. The service keeps running (Ctrl-C stops it)");
    println!(
        "Simulated Clerk: {}  (control API: http://{}/_sim/)\nRoster: {}  (try INSERT INTO desired_invitees (email) VALUES ('new@example.com'): a cycle follows within seconds)\nHTTP: http://{}/metrics, and curl -H 'Authorization: Bearer {DEMO_API_TOKEN}' http://{}/v1/status",
        simulator.base_url(),
        simulator.addr(),
        config::redact_database_url(&database_url),
        settings.http.listen,
        settings.http.listen,
    );
    let shutdown = CancellationToken::new();
    service::shutdown::cancel_on_signal(shutdown.clone());
    let listener = tokio::net::TcpListener::from_std(listener)
        .with_context(|| format!("the demo's service cannot listen on {listen}"))?;
    let listeners = service::Listeners {
        main: Some(listener),
        admin: None,
    };
    let served = service::run(reconciler, &settings, listeners, shutdown).await;
    simulator.shutdown().await;
    served?;
    Ok(Exit::Success)
}

/// The HTTP endpoint the simulated Clerk's webhooks reach while the script runs.
struct WebhookEndpoint {
    stop: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl WebhookEndpoint {
    /// Serves on a handle of its own to `listener`'s socket, which stays bound when it stops.
    fn start(
        reconciler: &reconcile::Reconciler,
        settings: &Settings,
        listener: &std::net::TcpListener,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let listener = listener
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
            .context("the demo's service cannot serve the simulated Clerk's webhooks")?;
        // Cycles run from the script.
        let served = service::serve_http_alone(reconciler, settings, listener, stop.clone())?;
        Ok(WebhookEndpoint { stop, served })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.served.await;
    }
}

/// Starts a throwaway cluster from the machine's PostgreSQL binaries, or says in one line
/// how to get them.
async fn start_private_cluster() -> anyhow::Result<PrivateCluster> {
    let Some(bin) = PrivateCluster::find_binaries() else {
        anyhow::bail!(
            "no PostgreSQL answers at 127.0.0.1:5432 and none is installed here: {}",
            private_postgres::HOW_TO_INSTALL
        );
    };
    println!(
        "No PostgreSQL answers at 127.0.0.1:5432 and DATABASE_URL is not set: starting a private one from {} (it is stopped and removed when the demo ends).",
        bin.display()
    );
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::start(&bin))
        .await?
        .context("the private PostgreSQL could not start")?;
    println!(
        "Private PostgreSQL at {} (data in {})",
        cluster.url(),
        cluster.root().display()
    );
    Ok(cluster)
}

fn heading(text: &str) {
    println!("\n=== {text} (Clerk is simulated) ===");
}

async fn cycle(reconciler: &reconcile::Reconciler, trigger: &str) -> anyhow::Result<()> {
    let result = reconciler
        .run_cycle(&Request::new(trigger), &CancellationToken::new())
        .await?;
    if let CycleResult::Ran(report) = result {
        println!(
            "cycle {}: {} created, {} revoked, {} held, {} failed; {} bulk and {} single create calls; counts {}",
            report.outcome.as_str(),
            report.tally.created,
            report.tally.revoked,
            report.held_revocations,
            report.tally.failed,
            report.tally.bulk_calls,
            report.tally.single_calls,
            serde_json::to_string(&report.counts).unwrap_or_default()
        );
        let m = &report.memberships;
        if m.rows > 0 || m.organizations > 0 {
            println!(
                "  organizations: {} invited, {} made members at once, {} roles changed, {} revoked, {} removed, {} held, {} failed; counts {}",
                m.invited,
                m.members_added,
                m.roles_changed,
                m.revoked,
                m.removed,
                m.held,
                m.failed,
                serde_json::to_string(&m.counts).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Fails unless the simulated Clerk shows the role change and the leaver done.
fn check_organizations(simulator: &sim::SimHandle, acme: &str, globex: &str) -> anyhow::Result<()> {
    let memberships = simulator.memberships();
    let member = |organization: &str, email: &str| {
        memberships.iter().find(|m| {
            m.organization.id == organization
                && m.identifier()
                    .is_some_and(|i| i.eq_ignore_ascii_case(email))
        })
    };
    match member(acme, PROMOTED) {
        Some(m) if m.role == "org:admin" => {
            println!("{PROMOTED} is an admin of Acme");
        }
        other => anyhow::bail!(
            "{PROMOTED}'s role in Acme was not changed to org:admin: {:?}",
            other.map(|m| &m.role)
        ),
    }
    if member(globex, ORG_LEAVER).is_some() {
        anyhow::bail!("{ORG_LEAVER} is still a member of Globex after leaving its roster");
    }
    println!("{ORG_LEAVER} is no longer a member of Globex");
    Ok(())
}

async fn print_plan(reconciler: &reconcile::Reconciler, settings: &Settings) -> anyhow::Result<()> {
    let preview = reconciler.preview(0).await?;
    let memberships = reconcile::memberships::overview::preview(reconciler).await?;
    let mut text = super::plan::render_text(&preview, &settings.sync.target).into_bytes();
    super::plan::write_memberships_text(&mut text, &memberships)?;
    print!("{}", String::from_utf8_lossy(&text));
    Ok(())
}

async fn print_status(pool: &sqlx::PgPool, settings: &Settings) -> anyhow::Result<()> {
    let status =
        super::status::collect(pool, &reconcile::CycleConfig::from_settings(settings)).await?;
    print!("{}", super::status::render_text(&status));
    Ok(())
}

/// Creates the demo database afresh on the server of `server_url`; returns its URL.
async fn create_database(server_url: &str) -> anyhow::Result<String> {
    let server: PgConnectOptions = server_url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    let mut admin = server
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("no PostgreSQL answers at DATABASE_URL")?;
    // A fresh database each time: one left by another version of invite-sync may hold
    // migrations this one does not know.
    store::drop_database(&mut admin, DATABASE)
        .await
        .with_context(|| format!("the database {DATABASE} could not be reset"))?;
    store::create_database(&mut admin, DATABASE)
        .await
        .with_context(|| format!("the database {DATABASE} could not be created"))?;
    let mut url = url::Url::parse(server_url).context("DATABASE_URL is not a URL")?;
    url.set_path(&format!("/{DATABASE}"));
    Ok(url.to_string())
}
