//! How well `invite-sync run` spends Clerk's organization invitation budget, with the hour
//! scaled down: 3,000 memberships over 40 organizations of skewed sizes (one of 1,000, nine
//! of 100, thirty of about 37), 30% of the addresses existing accounts (made members directly,
//! at no organization budget), the rest invited. It runs until Clerk's memberships and pending
//! invitations equal the roster and prints the drain time against the ideal that
//! `reconcile::memberships::next_call` states (every slot spent as soon as it frees and every
//! bulk call full: `10·B + S` = 750 invitations a window, so `N` invitations in `⌈N / 750⌉`
//! windows, the last one partly: (windows - 1) x hour + the last window's calls at Clerk's
//! request limit, from the service's start), beside the laxer ideal `benches/backlog.rs`
//! uses (the last window as fast as this run sent it), each window's invitations, calls by
//! kind and status, 429 answers, duplicates (two live invitations of one address in
//! one organization), invitations sent to existing accounts, and the machine.
//!
//! `cargo bench --bench organizations`. It runs the built binary as the service and its
//! `clerk-sim` as Clerk (an `sk_live_` key: 1000 requests per 10 s), each a process of its
//! own, over real sockets, on the PostgreSQL of DATABASE_URL (else 127.0.0.1:5432, else a
//! private cluster as the demo makes one) in a scratch database. `BENCH_HOUR_SECONDS` sets
//! the scaled hour (default 60); `BENCH_SERVICE_BIN` runs another build of invite-sync as the
//! service (to compare two versions against the same simulator). It exits 1 when a figure
//! misses the bar: a 429, a duplicate, or a drain over 1.10 x the ideal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use invite_sync::clerk::organization::{
    Organization, OrganizationInvitation, OrganizationInvitationStatus, OrganizationMembership,
};
use serde_json::Value;

mod support;
use support::{free_port, start_simulator, with_database, Proc, NEVER};

const BIN: &str = env!("CARGO_BIN_EXE_invite-sync");
const KEY: &str = "sk_live_organizations_bench";
/// Clerk's organization budget per window: 50 bulk calls of at most 10, and 250 single calls.
const BULK: usize = 50;
const SINGLE: usize = 250;
const PER_WINDOW: usize = BULK * 10 + SINGLE;
/// Clerk's general request limit for an `sk_live_` key.
const REQUESTS_PER_10_S: usize = 1000;
/// The bar the issue sets for the drain against the ideal.
const BAR: f64 = 1.10;

/// The organizations' sizes: one of 1,000, nine of 100, thirty of about 37 (3,000 in all).
fn sizes() -> Vec<usize> {
    let mut sizes = vec![1_000];
    sizes.extend([100; 9]);
    // 1,100 over thirty: twenty of 37 and ten of 36.
    sizes.extend((0..30).map(|i| if i < 20 { 37 } else { 36 }));
    sizes
}

/// One membership roster row.
struct Row {
    email: String,
    slug: String,
    role: &'static str,
    user: bool,
}

fn roster() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut n = 0usize;
    for (o, size) in sizes().into_iter().enumerate() {
        for _ in 0..size {
            rows.push(Row {
                email: format!("member{n:05}@example.com"),
                slug: format!("org-{o:02}"),
                role: if n % 25 == 0 {
                    "org:admin"
                } else {
                    "org:member"
                },
                // 30%: three addresses in every ten.
                user: n % 10 < 3,
            });
            n += 1;
        }
    }
    rows
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let hour: u64 = std::env::var("BENCH_HOUR_SECONDS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(60);
    let service = std::env::var("BENCH_SERVICE_BIN").unwrap_or_else(|_| BIN.to_owned());
    println!("service binary: {service}; hour scaled to {hour} s; Clerk key kind: sk_live_ (1000 requests per 10 s)");
    println!("machine: {}", machine());
    let (figures, met) = with_database(|url| run(&service, hour, url)).await?;
    println!("{figures}");
    if !met {
        eprintln!("the benchmark missed its bar (0 429s, 0 duplicates, drain within {BAR:.2} x the ideal)");
        std::process::exit(1);
    }
    Ok(())
}

/// The CPU, its cores and the memory, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("?".to_owned(), |kb| format!("{:.1}", kb / 1024.0 / 1024.0));
    let virtualised = cpuinfo.contains(" hypervisor");
    format!(
        "{model}, {cores} cores, {memory_gb} GB{}",
        if virtualised { ", virtual machine" } else { "" }
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> anyhow::Result<T> {
    let answer = http.get(&url).send().await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "GET {url}: {}",
        answer.status()
    );
    Ok(answer.json().await?)
}

/// What the simulator holds, against the roster.
struct Seen {
    invitations: Vec<OrganizationInvitation>,
    memberships: Vec<OrganizationMembership>,
}

impl Seen {
    async fn read(http: &reqwest::Client, root: &str) -> anyhow::Result<Seen> {
        Ok(Seen {
            invitations: get(http, format!("{root}/_sim/organization_invitations")).await?,
            memberships: get(http, format!("{root}/_sim/organization_memberships")).await?,
        })
    }

    /// The roster's (organization id, address) pairs Clerk holds as a member or a pending
    /// invitation with the roster's role: when each place was made, and whether it is a
    /// membership (the first place made, should a pair hold two).
    fn satisfied(
        &self,
        wanted: &HashMap<(String, String), &'static str>,
    ) -> HashMap<(String, String), (i64, bool)> {
        let members = self.memberships.iter().filter_map(|m| {
            let key = (m.organization.id.clone(), m.identifier()?.to_lowercase());
            (wanted.get(&key) == Some(&m.role.as_str())).then_some((key, (m.created_at, true)))
        });
        let pending = self
            .invitations
            .iter()
            .filter(|i| i.status == OrganizationInvitationStatus::Pending)
            .filter_map(|i| {
                let key = (i.organization_id.clone(), i.email_address.to_lowercase());
                (wanted.get(&key) == Some(&i.role.as_str())).then_some((key, (i.created_at, false)))
            });
        let mut places: HashMap<(String, String), (i64, bool)> = HashMap::new();
        for (key, place) in members.chain(pending) {
            let kept = places.entry(key).or_insert(place);
            if place.0 < kept.0 {
                *kept = place;
            }
        }
        places
    }
}

async fn run(service: &str, hour: u64, url: String) -> anyhow::Result<(String, bool)> {
    let (_sim, root) = start_simulator(BIN, KEY, &["--hour-seconds", &hour.to_string()]).await?;
    let http = reqwest::Client::new();
    let rows = roster();

    // The organizations, without a membership limit.
    let mut ids: HashMap<String, String> = HashMap::new();
    for o in 0..sizes().len() {
        let slug = format!("org-{o:02}");
        let answer = http
            .post(format!("{root}/_sim/organizations"))
            .json(&serde_json::json!({ "name": format!("Organization {o:02}"), "slug": slug }))
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "creating {slug}: {}",
            answer.status()
        );
        let organization: Organization = answer.json().await?;
        ids.insert(slug, organization.id);
    }
    let users: Vec<&str> = rows
        .iter()
        .filter(|r| r.user)
        .map(|r| r.email.as_str())
        .collect();
    for chunk in users.chunks(500) {
        let seeded = http
            .post(format!("{root}/_sim/users"))
            .json(&serde_json::json!({ "email_addresses": chunk }))
            .send()
            .await?;
        anyhow::ensure!(
            seeded.status().is_success(),
            "seeding users: {}",
            seeded.status()
        );
    }
    let user_set: HashSet<&str> = users.iter().copied().collect();
    let invitable = rows.len() - users.len();
    let wanted: HashMap<(String, String), &'static str> = rows
        .iter()
        .map(|r| ((ids[&r.slug].clone(), r.email.clone()), r.role))
        .collect();

    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", url.clone()),
        ("CLERK_SECRET_KEY", KEY.to_owned()),
        ("INVITE_SYNC__CLERK__API_URL", format!("{root}/v1")),
        (
            "INVITE_SYNC__CLERK__CREATE_WINDOW_SECONDS",
            hour.to_string(),
        ),
        ("INVITE_SYNC__SYNC__SCHEDULE", NEVER.to_owned()),
        (
            "INVITE_SYNC__HTTP__LISTEN",
            format!("127.0.0.1:{}", free_port()?),
        ),
        ("INVITE_SYNC__LOG__LEVEL", "warn".to_owned()),
    ];
    let migrated = Command::new(service)
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    anyhow::ensure!(migrated.status.success(), "migrate: {migrated:?}");
    let pool = sqlx::PgPool::connect(&url).await?;
    let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
    let slugs: Vec<&str> = rows.iter().map(|r| r.slug.as_str()).collect();
    let roles: Vec<&str> = rows.iter().map(|r| r.role).collect();
    sqlx::query(
        "INSERT INTO desired_memberships (email, organization, role, created_at)
         SELECT email, organization, role, now() - make_interval(secs => count - ord)
         FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
              AS t(email, organization, role, ord),
              (SELECT cardinality($1::text[]) AS count) AS c",
    )
    .bind(&emails)
    .bind(&slugs)
    .bind(&roles)
    .execute(&pool)
    .await?;
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    pool.close().await;

    let started_ms = now_ms();
    let started = Instant::now();
    let mut command = Command::new(service);
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut process = Proc::start(format!("{service} run"), command, &["run"]);
    let give_up = Duration::from_secs(hour * (invitable.div_ceil(PER_WINDOW) + 4) as u64);
    // Nothing can be done before the last window opens: until then only the process is
    // watched, so the listings of thousands stay off the two cores the service runs on.
    let last_window_opens =
        Duration::from_secs(hour * (invitable.div_ceil(PER_WINDOW) as u64).saturating_sub(1));
    let seen = loop {
        if started.elapsed() < last_window_opens {
            anyhow::ensure!(
                process.exited().is_none(),
                "the service stopped: {}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let seen = Seen::read(&http, &root).await?;
        let done = seen.satisfied(&wanted).len() >= wanted.len();
        if done || started.elapsed() > give_up {
            break seen;
        }
        anyhow::ensure!(
            process.exited().is_none(),
            "the service stopped: {}",
            process.stderr()
        );
        // The times measured are Clerk's own (each place's created_at): polling seldom keeps
        // the listings off the two cores the service runs on.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let stats: Value = get(&http, format!("{root}/_sim/stats")).await?;
    let figures = Figures::of(&seen, &wanted, &user_set, &stats, invitable);
    Ok(figures.report(hour, started_ms, now_ms(), &postgres))
}

struct Figures {
    roster: usize,
    invitable: usize,
    /// The roster's places Clerk holds, by when each was made.
    satisfied: Vec<i64>,
    /// Of them, memberships.
    members: usize,
    /// Every invitation created, by time.
    invited: Vec<i64>,
    /// Every membership Clerk holds.
    all_members: usize,
    duplicates: usize,
    invited_users: usize,
    calls: BTreeMap<String, BTreeMap<String, u64>>,
    too_many: u64,
}

impl Figures {
    fn of(
        seen: &Seen,
        wanted: &HashMap<(String, String), &'static str>,
        users: &HashSet<&str>,
        stats: &Value,
        invitable: usize,
    ) -> Figures {
        let mut live: HashMap<(String, String), usize> = HashMap::new();
        for invitation in &seen.invitations {
            if matches!(
                invitation.status,
                OrganizationInvitationStatus::Pending | OrganizationInvitationStatus::Accepted
            ) {
                *live
                    .entry((
                        invitation.organization_id.clone(),
                        invitation.email_address.to_lowercase(),
                    ))
                    .or_default() += 1;
            }
        }
        let mut invited: Vec<i64> = seen.invitations.iter().map(|i| i.created_at).collect();
        invited.sort_unstable();
        let places = seen.satisfied(wanted);
        let members = places.values().filter(|(_, member)| *member).count();
        let mut satisfied: Vec<i64> = places.into_values().map(|(at, _)| at).collect();
        satisfied.sort_unstable();
        let mut calls: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut too_many = 0;
        for (operation, by_status) in stats.as_object().into_iter().flatten() {
            for (status, n) in by_status.as_object().into_iter().flatten() {
                let n = n.as_u64().unwrap_or(0);
                calls
                    .entry(operation.clone())
                    .or_default()
                    .insert(status.clone(), n);
                if status == "429" {
                    too_many += n;
                }
            }
        }
        Figures {
            roster: wanted.len(),
            invitable,
            satisfied,
            members,
            invited,
            all_members: seen.memberships.len(),
            duplicates: live.values().filter(|n| **n > 1).count(),
            invited_users: seen
                .invitations
                .iter()
                .filter(|i| users.contains(i.email_address.to_lowercase().as_str()))
                .count(),
            calls,
            too_many,
        }
    }

    fn report(
        &self,
        hour: u64,
        started_ms: i64,
        stopped_ms: i64,
        postgres: &str,
    ) -> (String, bool) {
        let hour_ms = hour as i64 * 1000;
        let secs = |ms: i64| ms as f64 / 1000.0;
        let drained = self.satisfied.len() == self.roster;
        let drained_ms = if drained {
            self.satisfied.last().map_or(0, |last| last - started_ms)
        } else {
            stopped_ms - started_ms
        };
        let invited = &self.invited;
        // The ideal of next_call.rs: every slot spent as soon as it frees and every bulk call
        // full, 750 invitations a window, so N drain in ⌈N / 750⌉ windows: those before the
        // last whole, then the last window's calls (full bulk calls first, then singles) at
        // Clerk's request limit, from the start of the service.
        let n = invited.len().max(self.invitable);
        let windows = n.div_ceil(PER_WINDOW).max(1);
        let last_window = n - (windows - 1) * PER_WINDOW;
        let last_bulk = (last_window / 10).min(BULK);
        let last_calls = last_bulk + (last_window - last_bulk * 10);
        let last_window_floor_ms =
            (last_calls.saturating_sub(1) / REQUESTS_PER_10_S) as i64 * 10_000;
        let ideal_ms = (windows as i64 - 1) * hour_ms + last_window_floor_ms;
        let ratio = drained_ms as f64 / ideal_ms.max(1) as f64;
        // As benches/backlog.rs measures it: the last window's invitations sent as fast as
        // this run sent them (its first to its last), a laxer ideal.
        let last_window_send_ms = match (invited.len().checked_sub(last_window), invited.last()) {
            (Some(first), Some(last)) => last - invited[first],
            _ => 0,
        };
        let lax_ideal_ms = (windows as i64 - 1) * hour_ms + last_window_send_ms;
        // Each window's invitations (the k-th 750 made): when the first and the last went out.
        let spans: Vec<String> = invited
            .chunks(PER_WINDOW)
            .map(|chunk| {
                let (first, last) = (chunk[0] - started_ms, chunk[chunk.len() - 1] - started_ms);
                format!(
                    "{} from {:.1} s to {:.1} s ({:.1} s)",
                    chunk.len(),
                    secs(first),
                    secs(last),
                    secs(last - first)
                )
            })
            .collect();
        let first_ms = invited.first().map_or(0, |first| first - started_ms);
        let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
        for at in invited {
            *per_window.entry((at - started_ms) / hour_ms).or_default() += 1;
        }
        let mut most_in_a_window = 0;
        let mut first = 0;
        for (last, at) in invited.iter().enumerate() {
            while invited[first] <= at - hour_ms {
                first += 1;
            }
            most_in_a_window = most_in_a_window.max(last + 1 - first);
        }
        let total = |operation: &str| -> u64 {
            self.calls
                .get(operation)
                .map_or(0, |by_status| by_status.values().sum())
        };
        let met = self.too_many == 0
            && self.duplicates == 0
            && self.satisfied.len() == self.roster
            && ratio <= BAR;
        let text = format!(
            "== organizations: {roster} memberships over 40 organizations (1 x 1,000, 9 x 100, 30 x ~37), {users} existing accounts, {invitable} to invite, hour = {hour} s, PostgreSQL {postgres} ==\n\
             in Clerk as the roster says: {satisfied} of {roster} ({members} members, {pending} pending invitations); Clerk holds {all_members} memberships and {all_invitations} invitations in all\n\
             {drained} {drain:.1} s; ideal {ideal:.1} s ({windows} window(s) of {PER_WINDOW}: {before} x {hour} s + {floor:.1} s for the last window's {last_window} in {last_calls} calls at {REQUESTS_PER_10_S} requests per 10 s); ratio {ratio:.3} (bar {BAR:.2})\n\
             against the laxer ideal of benches/backlog.rs ({before} x {hour} s + {send:.1} s, the time this run took to send the last window's {last_window}): {lax_ideal:.1} s, ratio {lax_ratio:.3}\n\
             first invitation {first:.1} s after the start; each window's invitations: {spans}\n\
             invitations per {hour}-s span since the start: {per_window:?}\n\
             most invitations in any {hour}-s span: {most} (Clerk allows {PER_WINDOW})\n\
             calls: {bulk} bulk invitation creates, {single} single invitation creates, {memberships} membership creates, {lookups} user lookups, {reads} organization reads (get, list invitations, list memberships, roles)\n\
             429 answers: {too_many}; duplicates (two live invitations of one address in one organization): {duplicates}; invitations to existing accounts: {invited_users}\n\
             calls by operation and status: {calls:?}\n\
             bar (0 429s, 0 duplicates, drain within {BAR:.2} x the ideal): {verdict}\n",
            roster = self.roster,
            users = self.roster - self.invitable,
            invitable = self.invitable,
            satisfied = self.satisfied.len(),
            members = self.members,
            pending = self.satisfied.len() - self.members,
            all_members = self.all_members,
            all_invitations = self.invited.len(),
            drained = if drained {
                "drained in"
            } else {
                "NOT drained: gave up after"
            },
            drain = secs(drained_ms),
            ideal = secs(ideal_ms),
            before = windows - 1,
            floor = secs(last_window_floor_ms),
            send = secs(last_window_send_ms),
            lax_ideal = secs(lax_ideal_ms),
            lax_ratio = drained_ms as f64 / lax_ideal_ms.max(1) as f64,
            spans = spans.join("; "),
            first = secs(first_ms),
            most = most_in_a_window,
            bulk = total("create_organization_invitations_bulk"),
            single = total("create_organization_invitation"),
            memberships = total("create_organization_membership"),
            lookups = total("list_users"),
            reads = total("get_organization")
                + total("list_organization_invitations")
                + total("list_organization_memberships")
                + total("list_organization_roles"),
            too_many = self.too_many,
            duplicates = self.duplicates,
            invited_users = self.invited_users,
            calls = self.calls,
            verdict = if met { "met" } else { "MISSED" },
        );
        (text, met)
    }
}
