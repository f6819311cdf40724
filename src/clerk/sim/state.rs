//! The simulator's memory: invitations, users, faults, counters and rate-limit windows,
//! and the rules Clerk applies to them.

mod organizations;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::clock::now_ms;
use super::errors::ApiError;
use super::input::{ListQuery, UserOrder, UserQuery};
use super::users::{StoredUser, Verification};
use super::webhooks::Event;
use super::{Fault, FaultKind, Operation, SimOptions, SimStats};
use crate::clerk::model::{Invitation, InvitationPage, InvitationStatus, OrderField};
pub use organizations::Member;
use organizations::Organizations;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const DEFAULT_EXPIRES_IN_DAYS: u32 = 30;
const ACCEPT_URL: &str = "https://accounts.simulated.clerk.invalid/sign-up";

/// Where an invitation is in its life, apart from expiry, which depends on the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Open,
    Accepted,
    Revoked,
}

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    email_address: String,
    email_key: String,
    public_metadata: Map<String, Value>,
    url: String,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    lifecycle: Lifecycle,
    // Set by the control API; kept apart from `expires_at` so a clock step back cannot revive it.
    expired: bool,
}

impl Stored {
    fn status(&self, now_ms: i64) -> InvitationStatus {
        match self.lifecycle {
            Lifecycle::Revoked => InvitationStatus::Revoked,
            Lifecycle::Accepted => InvitationStatus::Accepted,
            Lifecycle::Open if self.expired || self.expires_at <= now_ms => {
                InvitationStatus::Expired
            }
            Lifecycle::Open => InvitationStatus::Pending,
        }
    }

    fn view(&self, now_ms: i64) -> Invitation {
        let status = self.status(now_ms);
        Invitation {
            object: "invitation".to_owned(),
            id: self.id.clone(),
            email_address: self.email_address.clone(),
            public_metadata: self.public_metadata.clone(),
            revoked: Some(status == InvitationStatus::Revoked),
            status,
            url: Some(self.url.clone()),
            expires_at: Some(self.expires_at),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A sliding window: at most `limit` hits in any `span`.
#[derive(Debug)]
struct Window {
    limit: usize,
    span: Duration,
    hits: VecDeque<Instant>,
}

impl Window {
    fn new(limit: usize, span: Duration) -> Self {
        Window {
            limit,
            span,
            hits: VecDeque::new(),
        }
    }

    /// How long until one more hit fits, or `None` if it fits now.
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&oldest) = self.hits.front() {
            if now.saturating_duration_since(oldest) >= self.span {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        if self.hits.len() < self.limit {
            return None;
        }
        let oldest = *self.hits.front()?;
        Some((oldest + self.span).saturating_duration_since(now))
    }

    fn hit(&mut self, now: Instant) {
        self.hits.push_back(now);
    }

    fn clear(&mut self) {
        self.hits.clear();
    }
}

/// The per-10-s limit of every call, and the hourly limits of the creates: the instance's
/// invitations and, apart, the organization invitations (across every organization).
#[derive(Debug)]
struct Limits {
    enabled: bool,
    all: Window,
    create: Window,
    bulk: Window,
    org_create: Window,
    org_bulk: Window,
}

/// Clerk's hourly limits of organization invitations, per instance.
const ORG_CREATE_PER_HOUR: usize = 250;
const ORG_BULK_PER_HOUR: usize = 50;

impl Limits {
    fn new(options: &SimOptions) -> Self {
        let per_10s = if options.secret_key.starts_with("sk_live_") {
            1000
        } else {
            100
        };
        Limits {
            enabled: options.rate_limits,
            all: Window::new(per_10s, Duration::from_secs(10)),
            create: Window::new(100, options.hour),
            bulk: Window::new(25, options.hour),
            org_create: Window::new(ORG_CREATE_PER_HOUR, options.hour),
            org_bulk: Window::new(ORG_BULK_PER_HOUR, options.hour),
        }
    }

    /// Count the call, or say in how many seconds it may be retried; a refused call does not count.
    fn admit(&mut self, operation: Operation, now: Instant) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let own_wait = self.own(operation).and_then(|window| window.wait(now));
        let wait = match (self.all.wait(now), own_wait) {
            (None, None) => None,
            (a, b) => a.max(b),
        };
        if let Some(wait) = wait {
            return Err(retry_after_secs(wait));
        }
        self.all.hit(now);
        if let Some(window) = self.own(operation) {
            window.hit(now);
        }
        Ok(())
    }

    /// The hourly window of a create operation.
    fn own(&mut self, operation: Operation) -> Option<&mut Window> {
        match operation {
            Operation::CreateInvitation => Some(&mut self.create),
            Operation::CreateBulkInvitations => Some(&mut self.bulk),
            Operation::CreateOrganizationInvitation => Some(&mut self.org_create),
            Operation::CreateOrganizationInvitationsBulk => Some(&mut self.org_bulk),
            // Everything else costs only the per-10-s limit.
            _ => None,
        }
    }

    fn clear(&mut self) {
        self.all.clear();
        self.create.clear();
        self.bulk.clear();
        self.org_create.clear();
        self.org_bulk.clear();
    }
}

/// Whole seconds, rounded up, at least 1: what a `Retry-After` header carries.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// What happens to a call that passed auth and the rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Normal,
    Fault(FaultKind),
}

pub struct State {
    invitations: Vec<Stored>,
    /// Users by id.
    users: BTreeMap<String, StoredUser>,
    /// User ids by lower-cased email address.
    user_emails: HashMap<String, String>,
    faults: VecDeque<Fault>,
    stats: SimStats,
    limits: Limits,
    last_created_at: i64,
    last_user_created_at: i64,
    organizations: Organizations,
    /// Where webhook events go, when the simulator delivers webhooks.
    webhooks: Option<UnboundedSender<Event>>,
}

fn email_key(email: &str) -> String {
    email.to_lowercase()
}

fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random trace id, 32 hex digits.
pub fn new_trace_id() -> String {
    let bits: u128 = rand::thread_rng().gen();
    format!("{bits:032x}")
}

/// Emails listed once each, compared case-insensitively, in first-seen order.
fn distinct(emails: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    emails
        .into_iter()
        .filter(|email| seen.insert(email_key(email)))
        .collect()
}

impl State {
    pub fn new(options: &SimOptions, webhooks: Option<UnboundedSender<Event>>) -> Self {
        State {
            invitations: Vec::new(),
            users: BTreeMap::new(),
            user_emails: HashMap::new(),
            faults: VecDeque::new(),
            stats: SimStats::default(),
            limits: Limits::new(options),
            last_created_at: 0,
            last_user_created_at: 0,
            organizations: Organizations::new(),
            webhooks,
        }
    }

    pub fn reset(&mut self) {
        self.invitations.clear();
        self.users.clear();
        self.user_emails.clear();
        self.faults.clear();
        self.stats = SimStats::default();
        self.limits.clear();
        self.organizations = Organizations::new();
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut SimStats {
        &mut self.stats
    }

    /// Queue a webhook event, when webhooks are delivered at all.
    fn raise(&mut self, event: Event) {
        if let Some(queue) = &self.webhooks {
            if queue.send(event).is_ok() {
                self.stats.webhooks.raised += 1;
            }
        }
    }

    pub fn record(&mut self, operation: Operation, status: u16) {
        self.stats.record(operation, status);
    }

    pub fn admit(&mut self, operation: Operation, now: Instant) -> Result<(), u64> {
        self.limits.admit(operation, now)
    }

    pub fn inject_fault(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push_back(fault);
        }
    }

    /// Take one use of the oldest fault injected for `operation`.
    pub fn plan(&mut self, operation: Operation) -> Plan {
        let Some(index) = self.faults.iter().position(|f| f.operation == operation) else {
            return Plan::Normal;
        };
        let Some(fault) = self.faults.get_mut(index) else {
            return Plan::Normal;
        };
        let kind = fault.kind.clone();
        fault.times = fault.times.saturating_sub(1);
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Plan::Fault(kind)
    }

    /// The user of `email`, created (and announced by a `user.created` event) if there is
    /// none. `true` when it was created now.
    pub fn add_user(&mut self, email: &str) -> (StoredUser, bool) {
        self.add_user_with(email, Verification::Admin, Map::new())
    }

    fn add_user_with(
        &mut self,
        email: &str,
        verification: Verification,
        public_metadata: Map<String, Value>,
    ) -> (StoredUser, bool) {
        let key = email_key(email);
        if let Some(user) = self.user_emails.get(&key).and_then(|id| self.users.get(id)) {
            return (user.clone(), false);
        }
        let now = now_ms();
        let created_at = now.max(self.last_user_created_at + 1);
        self.last_user_created_at = created_at;
        let user = StoredUser {
            id: format!("user_{}", random_alphanumeric(27)),
            email_id: format!("idn_{}", random_alphanumeric(27)),
            email_address: email.to_owned(),
            email_key: key.clone(),
            verification,
            public_metadata,
            created_at,
        };
        self.user_emails.insert(key, user.id.clone());
        self.users.insert(user.id.clone(), user.clone());
        self.raise(Event::user_created(user.view()));
        (user, true)
    }

    /// Delete a user (announced by a `user.deleted` event); its address is free again.
    pub fn delete_user(&mut self, id: &str) -> Result<Value, ApiError> {
        if !self.users.contains_key(id) {
            return Err(ApiError::user_not_found(id));
        }
        // Its memberships go with it, each announced while the user can still be shown.
        self.drop_memberships_of(id);
        let user = self
            .users
            .remove(id)
            .ok_or_else(|| ApiError::user_not_found(id))?;
        self.user_emails.remove(&user.email_key);
        let deleted = serde_json::json!({"object": "user", "id": user.id, "deleted": true});
        self.raise(Event::user_deleted(deleted.clone()));
        Ok(deleted)
    }

    pub fn user(&self, id: &str) -> Result<Value, ApiError> {
        self.users
            .get(id)
            .map(StoredUser::view)
            .ok_or_else(|| ApiError::user_not_found(id))
    }

    /// Every user, oldest first.
    pub fn all_users(&self) -> Vec<&StoredUser> {
        let mut users: Vec<&StoredUser> = self.users.values().collect();
        users.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        users
    }

    fn is_user(&self, key: &str) -> bool {
        self.user_emails.contains_key(key)
    }

    /// `GET /users`: the users matching every filter given, ordered and paged.
    pub fn list_users(&self, query: &UserQuery) -> Result<Vec<Value>, ApiError> {
        let emails: HashSet<String> = query.email_addresses.iter().map(|e| email_key(e)).collect();
        let ids: HashSet<&str> = query.user_ids.iter().map(String::as_str).collect();
        let email_needle = query.email_address_query.as_deref().map(str::to_lowercase);
        let needle = query.query.as_deref().map(str::to_lowercase);
        let mut matching: Vec<&StoredUser> = self
            .users
            .values()
            .filter(|u| query.email_addresses.is_empty() || emails.contains(&u.email_key))
            .filter(|u| query.user_ids.is_empty() || ids.contains(u.id.as_str()))
            .filter(|u| {
                email_needle
                    .as_deref()
                    .is_none_or(|n| u.email_key.contains(n))
            })
            .filter(|u| {
                needle
                    .as_deref()
                    .is_none_or(|n| u.email_key.contains(n) || u.id.to_lowercase().contains(n))
            })
            .collect();
        let order = query.order_by;
        matching.sort_by(|a, b| {
            let primary = match order.field {
                // Every user is created and last updated at once in the simulator.
                UserOrder::CreatedAt | UserOrder::UpdatedAt => a.created_at.cmp(&b.created_at),
                UserOrder::EmailAddress => a
                    .email_key
                    .cmp(&b.email_key)
                    .then_with(|| a.email_address.cmp(&b.email_address)),
                // Fields the simulator's users leave empty: all equal.
                UserOrder::Other => Ordering::Equal,
            };
            let primary = if order.descending {
                primary.reverse()
            } else {
                primary
            };
            primary.then_with(|| a.id.cmp(&b.id))
        });
        let start = match &query.starting_after {
            Some(cursor) => {
                matching
                    .iter()
                    .position(|u| &u.id == cursor)
                    .ok_or_else(|| {
                        ApiError::value_invalid(
                            "starting_after",
                            format!("starting_after {cursor} is not a user of this instance."),
                        )
                    })?
                    + 1
            }
            None => query.offset,
        };
        Ok(matching
            .into_iter()
            .skip(start)
            .take(query.limit)
            .map(StoredUser::view)
            .collect())
    }

    pub fn all_invitations(&self) -> Vec<Invitation> {
        let now = now_ms();
        self.invitations.iter().map(|inv| inv.view(now)).collect()
    }

    fn find_mut(&mut self, id: &str) -> Result<&mut Stored, ApiError> {
        self.invitations
            .iter_mut()
            .find(|inv| inv.id == id)
            .ok_or_else(|| ApiError::invitation_not_found(id))
    }

    fn has_pending(&self, key: &str, now: i64) -> bool {
        self.invitations
            .iter()
            .any(|inv| inv.email_key == key && inv.status(now) == InvitationStatus::Pending)
    }

    /// Create every item or none: existing users first (cannot be bypassed), then
    /// pending invitations, including earlier items of the same call.
    pub fn create(
        &mut self,
        items: Vec<crate::clerk::model::CreateInvitation>,
    ) -> Result<Vec<Invitation>, ApiError> {
        let now = now_ms();
        let taken: Vec<String> = items
            .iter()
            .filter(|item| self.is_user(&email_key(&item.email_address)))
            .map(|item| item.email_address.clone())
            .collect();
        if !taken.is_empty() {
            return Err(ApiError::identifier_exists(&distinct(taken)));
        }

        let mut in_call = HashSet::new();
        let mut duplicates = Vec::new();
        for item in &items {
            let key = email_key(&item.email_address);
            let pending = self.has_pending(&key, now) || in_call.contains(&key);
            if pending && item.ignore_existing != Some(true) {
                duplicates.push(item.email_address.clone());
            }
            in_call.insert(key);
        }
        if !duplicates.is_empty() {
            return Err(ApiError::duplicate_invitations(&distinct(duplicates)));
        }

        let mut created = Vec::with_capacity(items.len());
        for item in items {
            // Strictly increasing, so ordering by created_at is total and stable.
            let created_at = now.max(self.last_created_at + 1);
            self.last_created_at = created_at;
            let days = item.expires_in_days.unwrap_or(DEFAULT_EXPIRES_IN_DAYS);
            let stored = Stored {
                id: format!("inv_{}", random_alphanumeric(27)),
                email_key: email_key(&item.email_address),
                url: accept_url(item.redirect_url.as_deref()),
                email_address: item.email_address,
                public_metadata: item.public_metadata.unwrap_or_default(),
                created_at,
                updated_at: created_at,
                expires_at: created_at.saturating_add(i64::from(days) * DAY_MS),
                lifecycle: Lifecycle::Open,
                expired: false,
            };
            created.push(stored.view(created_at));
            self.invitations.push(stored);
        }
        Ok(created)
    }

    pub fn list(&self, query: &ListQuery) -> (Vec<Invitation>, u64) {
        let now = now_ms();
        let needle = query.query.as_deref().map(str::to_lowercase);
        let mut matching: Vec<(&Stored, InvitationStatus)> = self
            .invitations
            .iter()
            .map(|inv| (inv, inv.status(now)))
            .filter(|(_, status)| {
                if query.statuses.is_empty() {
                    *status != InvitationStatus::Revoked
                } else {
                    query.statuses.contains(status)
                }
            })
            .filter(|(inv, _)| match &needle {
                Some(needle) => {
                    inv.email_key.contains(needle.as_str())
                        || inv.id.to_lowercase().contains(needle.as_str())
                }
                None => true,
            })
            .collect();
        let order = query.order_by;
        matching.sort_by(|(a, _), (b, _)| {
            let primary = match order.field {
                OrderField::CreatedAt => a.created_at.cmp(&b.created_at),
                OrderField::EmailAddress => a
                    .email_key
                    .cmp(&b.email_key)
                    .then_with(|| a.email_address.cmp(&b.email_address)),
                OrderField::ExpiresAt => a.expires_at.cmp(&b.expires_at),
            };
            let primary = if order.descending {
                primary.reverse()
            } else {
                primary
            };
            match primary {
                Ordering::Equal => a.id.cmp(&b.id),
                unequal => unequal,
            }
        });
        let total = matching.len() as u64;
        let page = matching
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|(inv, _)| inv.view(now))
            .collect();
        (page, total)
    }

    pub fn list_page(&self, query: &ListQuery) -> InvitationPage {
        let (data, total_count) = self.list(query);
        InvitationPage { data, total_count }
    }

    pub fn revoke(&mut self, id: &str) -> Result<Invitation, ApiError> {
        let now = now_ms();
        let inv = self.find_mut(id)?;
        match inv.lifecycle {
            Lifecycle::Revoked => Err(ApiError::already_revoked()),
            Lifecycle::Accepted => Err(ApiError::already_accepted()),
            Lifecycle::Open => {
                inv.lifecycle = Lifecycle::Revoked;
                inv.updated_at = now.max(inv.updated_at);
                Ok(inv.view(now))
            }
        }
    }

    /// Accept a pending invitation; its email becomes a user (unless it is one already),
    /// with the invitation's public metadata.
    pub fn accept(&mut self, id: &str) -> Result<Invitation, ApiError> {
        let now = now_ms();
        let inv = self.find_mut(id)?;
        let status = inv.status(now);
        if status != InvitationStatus::Pending {
            return Err(ApiError::not_pending(id, status.as_str()));
        }
        inv.lifecycle = Lifecycle::Accepted;
        inv.updated_at = now.max(inv.updated_at);
        let view = inv.view(now);
        let email = inv.email_address.clone();
        let metadata = inv.public_metadata.clone();
        self.add_user_with(&email, Verification::Ticket, metadata);
        Ok(view)
    }

    /// Expire a pending invitation now.
    pub fn expire(&mut self, id: &str) -> Result<Invitation, ApiError> {
        let now = now_ms();
        let inv = self.find_mut(id)?;
        let status = inv.status(now);
        if status != InvitationStatus::Pending {
            return Err(ApiError::not_pending(id, status.as_str()));
        }
        inv.expired = true;
        inv.expires_at = inv.expires_at.min(now);
        inv.updated_at = now.max(inv.updated_at);
        Ok(inv.view(now))
    }
}

fn accept_url(redirect_url: Option<&str>) -> String {
    let mut url = format!("{ACCEPT_URL}?__clerk_ticket={}", random_alphanumeric(40));
    if let Some(redirect) = redirect_url {
        url.push_str("&redirect_url=");
        url.extend(url::form_urlencoded::byte_serialize(redirect.as_bytes()));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(expires_at: i64) -> Stored {
        Stored {
            id: "inv_x".into(),
            email_address: "a@b.co".into(),
            email_key: "a@b.co".into(),
            public_metadata: Map::new(),
            url: accept_url(None),
            created_at: 1,
            updated_at: 1,
            expires_at,
            lifecycle: Lifecycle::Open,
            expired: false,
        }
    }

    #[test]
    fn an_open_invitation_expires_with_the_clock() {
        let inv = stored(1_000);
        assert_eq!(inv.status(999), InvitationStatus::Pending);
        assert_eq!(inv.status(1_000), InvitationStatus::Expired);
        let mut revoked = stored(1_000);
        revoked.lifecycle = Lifecycle::Revoked;
        assert_eq!(revoked.status(2_000), InvitationStatus::Revoked);
        let view = revoked.view(2_000);
        assert_eq!(view.revoked, Some(true));
    }

    #[test]
    fn window_refuses_until_the_oldest_hit_leaves() {
        let start = Instant::now();
        let mut window = Window::new(2, Duration::from_secs(10));
        assert_eq!(window.wait(start), None);
        window.hit(start);
        window.hit(start + Duration::from_secs(3));
        assert_eq!(
            window.wait(start + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(window.wait(start + Duration::from_secs(10)), None);
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
