//! A faithful in-memory Clerk Backend API for invitations, users and organizations, served
//! over a real socket.
//!
//! It answers the four invitation operations, the user lookups (`GET /users`,
//! `GET /users/count`, `GET /users/{id}`, `DELETE /users/{id}`) and the organization
//! operations (organizations, their invitations, memberships and roles) under `/v1` with
//! Clerk's shapes, validation, error codes and rate limits, and a control API under `/_sim/`
//! (no auth) to create and delete users, create organizations, add memberships by hand,
//! accept or expire invitations, inject faults and read counters. Given a webhook target it
//! delivers Svix-signed `user.*`, `organizationInvitation.*` and `organizationMembership.*`
//! events to it. Where Clerk's behaviour is unknown it takes the harsher reading:
//! one bad item fails a whole bulk call, and `ignore_existing: true` creates a
//! second pending invitation next to the first.
//!
//! Choices worth knowing when reading its answers:
//! - An empty bulk array is answered 422 `form_param_value_invalid` (the array
//!   violates `minItems: 1`; no parameter is missing).
//! - Calls that get no response at all (a `Hang` or `DropAfterApply` fault) are
//!   counted in [`SimStats`] under status [`SimStats::NO_RESPONSE`] (0).
//! - Every call that passes auth and the rate limits counts against the limits,
//!   including ones then answered by a fault or a validation error.

mod clock;
mod errors;
mod http;
mod input;
mod state;
mod users;
mod webhooks;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::model::{Invitation, User};
use super::organization::{
    Organization, OrganizationInvitation, OrganizationMembership, OrganizationRole,
};
use crate::telemetry::Chain;
use state::{Member, State};
pub use webhooks::{WebhookStats, WebhookTarget, WebhookTargetError};

/// How a simulator is started.
#[derive(Clone)]
pub struct SimOptions {
    /// Where [`start`] binds. Default `127.0.0.1:0` (any free port).
    pub listen: SocketAddr,
    /// The only key accepted as `Authorization: Bearer <key>`. Its prefix picks the
    /// per-10-s limit: `sk_live_` gets production's 1000, anything else development's 100.
    pub secret_key: String,
    /// The length of the "hour" of the hourly create limits; tests shorten it.
    pub hour: Duration,
    /// `false` disables every rate limit.
    pub rate_limits: bool,
    /// How long a `Hang` fault holds its request (it ends early on shutdown).
    pub hang: Duration,
    /// Where to deliver `user.created` / `user.deleted` webhooks; `None` delivers none.
    pub webhook: Option<WebhookTarget>,
}

impl SimOptions {
    /// These options, delivering webhooks to `target`.
    pub fn with_webhook(mut self, target: WebhookTarget) -> Self {
        self.webhook = Some(target);
        self
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            secret_key: "sk_test_simulator".to_owned(),
            hour: Duration::from_secs(3600),
            rate_limits: true,
            hang: Duration::from_secs(60),
            webhook: None,
        }
    }
}

// Hand-written so the key never reaches a log through a Debug print.
impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("listen", &self.listen)
            .field("secret_key", &"<redacted>")
            .field("hour", &self.hour)
            .field("rate_limits", &self.rate_limits)
            .field("hang", &self.hang)
            .field("webhook", &self.webhook)
            .finish()
    }
}

pub use super::model::Operation;

/// Answer the next `times` calls of `operation` (those that pass auth and the rate
/// limits) with `kind` instead of the normal behaviour. Faults queue up in the order
/// they were injected.
///
/// JSON: `{"operation": "create_invitation", "times": 2, "kind": {"type": "status", "status": 503}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub operation: Operation,
    #[serde(default = "one")]
    pub times: u32,
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn new(operation: Operation, times: u32, kind: FaultKind) -> Self {
        Fault {
            operation,
            times,
            kind,
        }
    }
}

/// What an injected fault does to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this HTTP status and a ClerkErrors body; nothing is applied. The code
    /// is `too_many_requests` for 429, `internal_clerk_error` for 5xx, `fault_injected`
    /// otherwise. `retry_after` (seconds) is sent as a `Retry-After` header when given.
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Hold the request for `SimOptions::hang` (or until shutdown) without applying it,
    /// then close the connection without a response.
    Hang,
    /// Apply the request, then close the connection without sending any response byte.
    DropAfterApply,
    /// Apply the request, then answer with this HTTP status (a 5xx) and a ClerkErrors body,
    /// as a server that fails after doing the work.
    StatusAfterApply { status: u16 },
}

/// Calls per operation and final HTTP status, addresses looked up, and webhook deliveries.
///
/// JSON: `{"create_invitation": {"200": 3, "422": 1}, "list_users": {"200": 2},
/// "user_lookup_addresses": 150, "webhooks": {...}}`. Calls that got no response (hang,
/// dropped connection) are counted under status 0. `user_lookup_addresses` (the
/// `email_address` values of `GET /users` calls answered 200) and `webhooks` (see
/// [`WebhookStats`]) are left out while zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub counts: BTreeMap<Operation, BTreeMap<u16, u64>>,
    /// `email_address` values in `GET /users` calls answered 200.
    pub user_lookup_addresses: u64,
    pub webhooks: WebhookStats,
}

const USER_LOOKUP_ADDRESSES: &str = "user_lookup_addresses";
const WEBHOOKS: &str = "webhooks";

impl Serialize for SimStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let extra =
            usize::from(self.user_lookup_addresses > 0) + usize::from(!self.webhooks.is_empty());
        let mut map = serializer.serialize_map(Some(self.counts.len() + extra))?;
        for (operation, by_status) in &self.counts {
            map.serialize_entry(operation, by_status)?;
        }
        if self.user_lookup_addresses > 0 {
            map.serialize_entry(USER_LOOKUP_ADDRESSES, &self.user_lookup_addresses)?;
        }
        if !self.webhooks.is_empty() {
            map.serialize_entry(WEBHOOKS, &self.webhooks)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SimStats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = Map::<String, Value>::deserialize(deserializer)?;
        let mut stats = SimStats::default();
        for (key, value) in map {
            match key.as_str() {
                USER_LOOKUP_ADDRESSES => {
                    stats.user_lookup_addresses =
                        serde_json::from_value(value).map_err(D::Error::custom)?;
                }
                WEBHOOKS => {
                    stats.webhooks = serde_json::from_value(value).map_err(D::Error::custom)?;
                }
                _ => {
                    let operation: Operation =
                        serde_json::from_value(Value::String(key)).map_err(D::Error::custom)?;
                    let by_status = serde_json::from_value(value).map_err(D::Error::custom)?;
                    stats.counts.insert(operation, by_status);
                }
            }
        }
        Ok(stats)
    }
}

impl SimStats {
    /// The status under which calls that got no response are counted.
    pub const NO_RESPONSE: u16 = 0;

    /// Calls of `operation` answered with `status`.
    pub fn count(&self, operation: Operation, status: u16) -> u64 {
        self.counts
            .get(&operation)
            .and_then(|by_status| by_status.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Calls of `operation`, whatever their status.
    pub fn total(&self, operation: Operation) -> u64 {
        self.counts
            .get(&operation)
            .map(|by_status| by_status.values().sum())
            .unwrap_or(0)
    }

    pub(crate) fn record(&mut self, operation: Operation, status: u16) {
        *self
            .counts
            .entry(operation)
            .or_default()
            .entry(status)
            .or_insert(0) += 1;
    }
}

/// What the server tasks and the handle share.
pub(crate) struct Sim {
    options: SimOptions,
    state: Mutex<State>,
    shutdown: CancellationToken,
    /// The `instance_id` of webhook events.
    instance_id: String,
    /// Woken whenever a webhook delivery ends (delivered, failed or abandoned).
    webhook_progress: Notify,
}

impl Sim {
    fn new(
        options: SimOptions,
        webhooks: Option<tokio::sync::mpsc::UnboundedSender<webhooks::Event>>,
    ) -> Self {
        let state = State::new(&options, webhooks);
        Sim {
            options,
            state: Mutex::new(state),
            shutdown: CancellationToken::new(),
            instance_id: webhooks::new_instance_id(),
            webhook_progress: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a
        // way that matters to a simulator, so keep serving rather than poison every call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bind `options.listen` and serve the simulator on it.
pub async fn start(options: SimOptions) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(options.listen).await?;
    start_on(listener, options).await
}

/// Serve the simulator on an already bound listener (`options.listen` is ignored).
pub async fn start_on(listener: TcpListener, options: SimOptions) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let target = options.webhook.clone();
    let (queue, deliveries) = match target {
        Some(_) => {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            (Some(sender), Some(receiver))
        }
        None => (None, None),
    };
    let sim = Arc::new(Sim::new(options, queue));
    if let (Some(target), Some(deliveries)) = (target, deliveries) {
        tokio::spawn(webhooks::deliver(Arc::clone(&sim), target, deliveries));
    }
    let server = tokio::spawn(http::serve(listener, Arc::clone(&sim)));
    tracing::debug!(%addr, "clerk simulator listening");
    Ok(SimHandle {
        addr,
        sim,
        server: Some(server),
    })
}

/// A running simulator. Dropping it stops the server, like [`SimHandle::shutdown`]
/// without waiting for the connections to close.
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Clerk API base, e.g. `http://127.0.0.1:PORT/v1`; operation paths are appended
    /// to it (`{base}/invitations`).
    pub fn base_url(&self) -> Url {
        let mut addr = self.addr;
        // A wildcard bind is reached through the loopback address of its family.
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            _ => {}
        }
        Url::parse(&format!("http://{addr}/v1")).expect("a socket address makes a valid URL")
    }

    /// The root of the server (the control API lives under `{root}/_sim/`).
    pub fn root_url(&self) -> Url {
        let mut url = self.base_url();
        url.set_path("/");
        url
    }

    pub fn secret_key(&self) -> &str {
        &self.sim.options.secret_key
    }

    /// Make these emails existing users, so creating invitations for them fails. Each new
    /// user raises a `user.created` webhook.
    pub fn seed_users(&self, emails: &[&str]) {
        let mut state = self.sim.state();
        for email in emails {
            state.add_user(email);
        }
    }

    /// The user of `email` (created, with a `user.created` webhook, if there is none).
    pub fn create_user(&self, email: &str) -> User {
        self.sim.state().add_user(email).0.model()
    }

    /// Delete a user (raising `user.deleted`); `false` if the id is unknown.
    pub fn delete_user(&self, user_id: &str) -> bool {
        self.sim.state().delete_user(user_id).is_ok()
    }

    /// Every user, oldest first.
    pub fn users(&self) -> Vec<User> {
        self.sim
            .state()
            .all_users()
            .into_iter()
            .map(|user| user.model())
            .collect()
    }

    /// Wait until every webhook event raised so far was delivered or given up on; `false` if
    /// `deadline` passed first.
    pub async fn webhooks_settled(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let progress = self.sim.webhook_progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if self.sim.state().stats().webhooks.settled() {
                    return;
                }
                progress.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    /// Accept a pending invitation (its email becomes a user). `false` if the id is
    /// unknown or the invitation is not pending.
    pub fn accept(&self, invitation_id: &str) -> bool {
        self.sim.state().accept(invitation_id).is_ok()
    }

    /// Expire a pending invitation now. `false` if the id is unknown or the invitation
    /// is not pending.
    pub fn expire(&self, invitation_id: &str) -> bool {
        self.sim.state().expire(invitation_id).is_ok()
    }

    /// A new organization, as `POST /organizations` makes it (`slug` made of the name when
    /// `None`; `max_allowed_memberships` 0 is no limit). `None` if the slug is taken or invalid.
    pub fn create_organization(
        &self,
        name: &str,
        slug: Option<&str>,
        max_allowed_memberships: u64,
    ) -> Option<Organization> {
        let new = input::organizations::NewOrganization {
            name: name.to_owned(),
            slug: slug.map(str::to_owned),
            created_by: None,
            max_allowed_memberships: Some(max_allowed_memberships),
            public_metadata: Map::new(),
            private_metadata: Map::new(),
        };
        if slug.is_some_and(|slug| !input::organizations::is_valid_slug(slug)) {
            return None;
        }
        self.sim.state().create_organization(new).ok()
    }

    /// Set an organization's `max_allowed_memberships` (by id or slug); `false` if unknown.
    pub fn set_max_allowed_memberships(&self, organization: &str, max: u64) -> bool {
        self.sim
            .state()
            .set_max_allowed_memberships(organization, max)
            .is_ok()
    }

    /// Add `email`'s user (created if there is none) to an organization (by id or slug) with
    /// `role`, as the dashboard would: no quota check; `scim` marks it managed by Directory
    /// Sync. `None` if the organization or role is unknown or the user is a member already.
    pub fn add_membership(
        &self,
        organization: &str,
        email: &str,
        role: &str,
        scim: bool,
    ) -> Option<OrganizationMembership> {
        self.sim
            .state()
            .add_membership(organization, Member::Email(email.to_owned()), role, scim)
            .ok()
    }

    /// Mark a membership as managed by Directory Sync (or not); `false` if there is none.
    pub fn set_membership_scim(&self, organization: &str, user_id: &str, managed: bool) -> bool {
        self.sim
            .state()
            .set_membership_scim(organization, user_id, managed)
            .is_ok()
    }

    /// Accept a pending organization invitation: its address becomes a user if it is none, and
    /// a member with the invitation's role and metadata. `false` if unknown or not pending.
    pub fn accept_organization_invitation(&self, invitation_id: &str) -> bool {
        self.sim
            .state()
            .accept_org_invitation(invitation_id)
            .is_ok()
    }

    /// Expire a pending organization invitation now. `false` if unknown or not pending.
    pub fn expire_organization_invitation(&self, invitation_id: &str) -> bool {
        self.sim
            .state()
            .expire_org_invitation(invitation_id)
            .is_ok()
    }

    /// Define a custom organization role (`org:...`); `None` if the key is invalid or taken.
    pub fn define_role(&self, key: &str, name: &str) -> Option<OrganizationRole> {
        self.sim.state().define_role(key, Some(name), None).ok()
    }

    /// Every organization, oldest first, with its counts.
    pub fn organizations(&self) -> Vec<Organization> {
        self.sim.state().all_organizations()
    }

    /// Every organization invitation of every status, oldest first.
    pub fn organization_invitations(&self) -> Vec<OrganizationInvitation> {
        self.sim.state().all_org_invitations()
    }

    /// Every membership of every organization, oldest first.
    pub fn memberships(&self) -> Vec<OrganizationMembership> {
        self.sim.state().all_memberships()
    }

    pub fn inject_fault(&self, fault: Fault) {
        self.sim.state().inject_fault(fault);
    }

    pub fn stats(&self) -> SimStats {
        self.sim.state().stats().clone()
    }

    /// Every invitation of every status, in creation order.
    pub fn invitations(&self) -> Vec<Invitation> {
        self.sim.state().all_invitations()
    }

    /// Forget invitations, users, organizations (custom roles included), faults, counters and
    /// rate-limit windows. Webhook deliveries already queued still go out.
    pub fn reset(&self) {
        self.sim.state().reset();
    }

    /// Stop accepting, end every connection (and every hang), and wait for the server to stop.
    pub async fn shutdown(mut self) {
        self.sim.shutdown.cancel();
        if let Some(server) = self.server.take() {
            if let Err(error) = server.await {
                tracing::warn!(error.message = %error, error.cause_chain = %Chain(&error), "clerk simulator server task failed");
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.sim.shutdown.cancel();
    }
}
