//! Organizations in the simulator's memory: the organizations, their invitations, memberships
//! and the instance's roles, and the rules Clerk applies to them (quota counting pending
//! invitations, one pending invitation per address, the last admin kept, Directory Sync
//! memberships left alone).

use std::cmp::Ordering;
use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::{accept_url, distinct, email_key, random_alphanumeric, State, DAY_MS};
use super::{Lifecycle, DEFAULT_EXPIRES_IN_DAYS};
use crate::clerk::model::InvitationStatus;
use crate::clerk::organization::{
    CreateOrganizationInvitation, Organization, OrganizationInvitation,
    OrganizationInvitationPublicOrganizationData, OrganizationInvitationPublicUserData,
    OrganizationMembership, OrganizationMembershipPublicUserData, OrganizationRole, Page,
    Permission, ROLE_ADMIN, ROLE_MEMBER,
};
use crate::clerk::sim::clock::now_ms;
use crate::clerk::sim::errors::ApiError;
use crate::clerk::sim::input::organizations::{
    is_valid_role_key, InvitationOrder, MembershipOrder, MembershipQuery, NewMembership,
    NewOrganization, OrgInvitationQuery, OrganizationOrder, OrganizationQuery, RoleQuery,
};
use crate::clerk::sim::users::{StoredUser, Verification};
use crate::clerk::sim::webhooks::Event;

const IMAGE_URL: &str = "https://img.simulated.clerk.invalid/default.png";

/// The system permissions of the two built-in roles.
const ADMIN_PERMISSIONS: [&str; 6] = [
    "org:sys_profile:manage",
    "org:sys_profile:delete",
    "org:sys_memberships:read",
    "org:sys_memberships:manage",
    "org:sys_domains:read",
    "org:sys_domains:manage",
];
const MEMBER_PERMISSIONS: [&str; 2] = ["org:sys_memberships:read", "org:sys_domains:read"];

#[derive(Debug, Clone)]
pub(in crate::clerk::sim) struct StoredOrg {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub max_allowed_memberships: u64,
    pub public_metadata: Map<String, Value>,
    pub private_metadata: Map<String, Value>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
struct StoredOrgInvitation {
    id: String,
    organization_id: String,
    email_address: String,
    email_key: String,
    role: String,
    inviter_id: Option<String>,
    public_metadata: Map<String, Value>,
    private_metadata: Map<String, Value>,
    url: String,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    lifecycle: Lifecycle,
    expired: bool,
}

impl StoredOrgInvitation {
    fn status(&self, now: i64) -> InvitationStatus {
        match self.lifecycle {
            Lifecycle::Revoked => InvitationStatus::Revoked,
            Lifecycle::Accepted => InvitationStatus::Accepted,
            Lifecycle::Open if self.expired || self.expires_at <= now => InvitationStatus::Expired,
            Lifecycle::Open => InvitationStatus::Pending,
        }
    }
}

#[derive(Debug, Clone)]
struct StoredMembership {
    id: String,
    organization_id: String,
    user_id: String,
    role: String,
    public_metadata: Map<String, Value>,
    private_metadata: Map<String, Value>,
    /// Managed by Directory Sync: the API may not change or remove it.
    scim: bool,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Clone)]
struct StoredRole {
    id: String,
    key: String,
    name: String,
    description: Option<String>,
    permissions: Vec<&'static str>,
    created_at: i64,
}

/// Everything organizational the simulator holds.
#[derive(Debug)]
pub(in crate::clerk::sim) struct Organizations {
    orgs: Vec<StoredOrg>,
    invitations: Vec<StoredOrgInvitation>,
    memberships: Vec<StoredMembership>,
    roles: Vec<StoredRole>,
    last_created_at: i64,
}

impl Organizations {
    pub fn new() -> Self {
        let now = now_ms();
        let role = |key: &str, name: &str, permissions: &[&'static str], at: i64| StoredRole {
            id: format!("role_{}", random_alphanumeric(27)),
            key: key.to_owned(),
            name: name.to_owned(),
            description: None,
            permissions: permissions.to_vec(),
            created_at: at,
        };
        Organizations {
            orgs: Vec::new(),
            invitations: Vec::new(),
            memberships: Vec::new(),
            roles: vec![
                role(ROLE_ADMIN, "Admin", &ADMIN_PERMISSIONS, now),
                role(ROLE_MEMBER, "Member", &MEMBER_PERMISSIONS, now + 1),
            ],
            last_created_at: now + 1,
        }
    }

    /// A strictly increasing creation time, so orders by `created_at` are total.
    fn tick(&mut self) -> i64 {
        let at = now_ms().max(self.last_created_at + 1);
        self.last_created_at = at;
        at
    }

    fn org(&self, id_or_slug: &str) -> Result<&StoredOrg, ApiError> {
        self.orgs
            .iter()
            .find(|org| org.id == id_or_slug || org.slug == id_or_slug)
            .ok_or_else(|| ApiError::organization_not_found(id_or_slug))
    }

    /// An organization named by its id, as the paths under `/organizations/{organization_id}/`
    /// do (a slug is not enough there).
    fn org_by_id(&self, id: &str) -> Result<&StoredOrg, ApiError> {
        self.orgs
            .iter()
            .find(|org| org.id == id)
            .ok_or_else(|| ApiError::organization_not_found(id))
    }

    fn role(&self, key: &str) -> Result<&StoredRole, ApiError> {
        self.roles
            .iter()
            .find(|role| role.key == key)
            .ok_or_else(|| ApiError::role_not_found(key))
    }

    fn role_name(&self, key: &str) -> String {
        self.role(key)
            .map(|role| role.name.clone())
            .unwrap_or_else(|_| key.to_owned())
    }

    fn members(&self, org_id: &str) -> impl Iterator<Item = &StoredMembership> {
        let org_id = org_id.to_owned();
        self.memberships
            .iter()
            .filter(move |m| m.organization_id == org_id)
    }

    fn pending(&self, org_id: &str, now: i64) -> impl Iterator<Item = &StoredOrgInvitation> {
        let org_id = org_id.to_owned();
        self.invitations.iter().filter(move |inv| {
            inv.organization_id == org_id && inv.status(now) == InvitationStatus::Pending
        })
    }

    fn counts(&self, org_id: &str, now: i64) -> (u64, u64) {
        (
            self.members(org_id).count() as u64,
            self.pending(org_id, now).count() as u64,
        )
    }

    fn membership_index(&self, org_id: &str, user_id: &str) -> Option<usize> {
        self.memberships
            .iter()
            .position(|m| m.organization_id == org_id && m.user_id == user_id)
    }

    fn admins(&self, org_id: &str) -> usize {
        self.members(org_id)
            .filter(|m| m.role == ROLE_ADMIN)
            .count()
    }

    fn org_view(&self, org: &StoredOrg, with_counts: bool, now: i64) -> Organization {
        let (members, pending) = if with_counts {
            self.counts(&org.id, now)
        } else {
            (0, 0)
        };
        Organization {
            object: "organization".to_owned(),
            id: org.id.clone(),
            name: org.name.clone(),
            slug: org.slug.clone(),
            image_url: Some(IMAGE_URL.to_owned()),
            has_image: false,
            members_count: with_counts.then_some(members),
            missing_member_with_elevated_permissions: None,
            pending_invitations_count: with_counts.then_some(pending),
            max_allowed_memberships: org.max_allowed_memberships,
            admin_delete_enabled: true,
            public_metadata: org.public_metadata.clone(),
            private_metadata: org.private_metadata.clone(),
            created_by: org.created_by.clone(),
            created_at: org.created_at,
            updated_at: org.updated_at,
            last_active_at: None,
            role_set_key: None,
        }
    }

    fn role_view(&self, role: &StoredRole) -> OrganizationRole {
        OrganizationRole {
            object: "role".to_owned(),
            id: role.id.clone(),
            name: role.name.clone(),
            key: role.key.clone(),
            description: role.description.clone(),
            is_creator_eligible: role.key == ROLE_ADMIN,
            permissions: role
                .permissions
                .iter()
                .map(|key| Permission {
                    object: "permission".to_owned(),
                    id: format!("perm_{}", key.replace(':', "_")),
                    name: (*key).to_owned(),
                    key: (*key).to_owned(),
                    description: format!("The system permission {key}."),
                    kind: "system".to_owned(),
                    created_at: role.created_at,
                    updated_at: role.created_at,
                })
                .collect(),
            created_at: role.created_at,
            updated_at: role.created_at,
        }
    }
}

fn user_data(user: &StoredUser) -> OrganizationMembershipPublicUserData {
    OrganizationMembershipPublicUserData {
        user_id: user.id.clone(),
        first_name: None,
        last_name: None,
        profile_image_url: Some(IMAGE_URL.to_owned()),
        image_url: IMAGE_URL.to_owned(),
        has_image: false,
        identifier: Some(user.email_address.clone()),
        username: None,
        banned: Some(false),
        deprovisioned: Some(false),
    }
}

/// One page of what matched, only its items shown.
fn page<S, T>(matching: Vec<S>, offset: usize, limit: usize, view: impl FnMut(S) -> T) -> Page<T> {
    let total_count = matching.len() as u64;
    Page {
        data: matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(view)
            .collect(),
        total_count,
    }
}

fn directed(ordering: Ordering, descending: bool) -> Ordering {
    if descending {
        ordering.reverse()
    } else {
        ordering
    }
}

fn to_value(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A slug made of a name: lowercase letters and digits, other runs turned into one dash.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "organization".to_owned()
    } else {
        slug
    }
}

/// How a control call adds a membership by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    UserId(String),
    /// The user of this address, created when there is none.
    Email(String),
}

impl State {
    fn stored_user(&self, user_id: &str) -> Result<&StoredUser, ApiError> {
        self.users
            .get(user_id)
            .ok_or_else(|| ApiError::user_not_found(user_id))
    }

    fn user_by_email(&self, email: &str) -> Option<&StoredUser> {
        self.user_emails
            .get(&email_key(email))
            .and_then(|id| self.users.get(id))
    }

    fn org_invitation_view(
        &self,
        inv: &StoredOrgInvitation,
        now: i64,
        with_organization: bool,
    ) -> OrganizationInvitation {
        let orgs = &self.organizations;
        let public_inviter_data = inv
            .inviter_id
            .as_deref()
            .and_then(|id| self.users.get(id))
            .map(|user| OrganizationInvitationPublicUserData {
                user_id: user.id.clone(),
                first_name: None,
                last_name: None,
                image_url: IMAGE_URL.to_owned(),
                has_image: false,
                identifier: user.email_address.clone(),
            });
        let public_organization_data = if with_organization {
            orgs.org_by_id(&inv.organization_id).ok().map(|org| {
                OrganizationInvitationPublicOrganizationData {
                    id: org.id.clone(),
                    name: org.name.clone(),
                    slug: org.slug.clone(),
                    image_url: Some(IMAGE_URL.to_owned()),
                    has_image: false,
                }
            })
        } else {
            None
        };
        OrganizationInvitation {
            object: "organization_invitation".to_owned(),
            id: inv.id.clone(),
            email_address: inv.email_address.clone(),
            role: inv.role.clone(),
            role_name: orgs.role_name(&inv.role),
            organization_id: inv.organization_id.clone(),
            inviter_id: inv.inviter_id.clone(),
            public_inviter_data,
            status: inv.status(now),
            public_metadata: inv.public_metadata.clone(),
            private_metadata: inv.private_metadata.clone(),
            url: Some(inv.url.clone()),
            expires_at: Some(inv.expires_at),
            created_at: inv.created_at,
            updated_at: inv.updated_at,
            public_organization_data,
        }
    }

    fn membership_view(&self, m: &StoredMembership, now: i64) -> OrganizationMembership {
        let orgs = &self.organizations;
        let organization = match orgs.org_by_id(&m.organization_id) {
            Ok(org) => orgs.org_view(org, false, now),
            Err(_) => Organization {
                object: "organization".to_owned(),
                id: m.organization_id.clone(),
                name: String::new(),
                slug: String::new(),
                image_url: None,
                has_image: false,
                members_count: None,
                missing_member_with_elevated_permissions: None,
                pending_invitations_count: None,
                max_allowed_memberships: 0,
                admin_delete_enabled: false,
                public_metadata: Map::new(),
                private_metadata: Map::new(),
                created_by: None,
                created_at: m.created_at,
                updated_at: m.created_at,
                last_active_at: None,
                role_set_key: None,
            },
        };
        let permissions = orgs
            .role(&m.role)
            .map(|role| role.permissions.iter().map(|p| (*p).to_owned()).collect())
            .unwrap_or_default();
        OrganizationMembership {
            object: "organization_membership".to_owned(),
            id: m.id.clone(),
            role: m.role.clone(),
            role_name: Some(orgs.role_name(&m.role)),
            permissions,
            public_metadata: m.public_metadata.clone(),
            private_metadata: m.private_metadata.clone(),
            organization,
            public_user_data: self.users.get(&m.user_id).map(user_data),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }

    fn raise_membership(&mut self, kind: &'static str, index: usize) {
        let now = now_ms();
        if let Some(m) = self.organizations.memberships.get(index) {
            let view = to_value(self.membership_view(m, now));
            self.raise(Event::organization(kind, view));
        }
    }

    /// `POST /organizations`: a new organization; `created_by` becomes its first admin.
    pub fn create_organization(&mut self, new: NewOrganization) -> Result<Organization, ApiError> {
        if let Some(creator) = &new.created_by {
            self.stored_user(creator)?;
        }
        let slug = match new.slug {
            Some(slug) if self.organizations.org(&slug).is_ok() => {
                return Err(ApiError::slug_taken())
            }
            Some(slug) => slug,
            None => {
                let base = slugify(&new.name);
                let mut slug = base.clone();
                while self.organizations.orgs.iter().any(|org| org.slug == slug) {
                    slug = format!("{base}-{}", random_alphanumeric(6).to_lowercase());
                }
                slug
            }
        };
        let now = self.organizations.tick();
        let org = StoredOrg {
            id: format!("org_{}", random_alphanumeric(27)),
            name: new.name,
            slug,
            max_allowed_memberships: new.max_allowed_memberships.unwrap_or(0),
            public_metadata: new.public_metadata,
            private_metadata: new.private_metadata,
            created_by: new.created_by.clone(),
            created_at: now,
            updated_at: now,
        };
        let id = org.id.clone();
        self.organizations.orgs.push(org);
        if let Some(creator) = new.created_by {
            self.insert_membership(&id, &creator, ROLE_ADMIN, Map::new(), Map::new(), false);
        }
        self.organization(&id, false)
    }

    /// `GET /organizations/{id_or_slug}`.
    pub fn organization(
        &self,
        id_or_slug: &str,
        with_counts: bool,
    ) -> Result<Organization, ApiError> {
        let orgs = &self.organizations;
        let org = orgs.org(id_or_slug)?;
        Ok(orgs.org_view(org, with_counts, now_ms()))
    }

    /// `GET /organizations`.
    pub fn list_organizations(&self, query: &OrganizationQuery) -> Page<Organization> {
        let now = now_ms();
        let orgs = &self.organizations;
        let needle = query.query.as_deref().map(str::to_lowercase);
        let mut matching: Vec<&StoredOrg> = orgs
            .orgs
            .iter()
            .filter(|org| {
                query.organization_ids.is_empty() || query.organization_ids.contains(&org.id)
            })
            .filter(|org| {
                query.user_ids.is_empty()
                    || orgs
                        .members(&org.id)
                        .any(|m| query.user_ids.contains(&m.user_id))
            })
            .filter(|org| match &needle {
                Some(needle) => {
                    org.id == *needle
                        || org.name.to_lowercase().contains(needle.as_str())
                        || org.slug.contains(needle.as_str())
                }
                None => true,
            })
            .collect();
        matching.sort_by(|a, b| {
            let primary = match query.order_by.field {
                OrganizationOrder::CreatedAt => a.created_at.cmp(&b.created_at),
                OrganizationOrder::Name => a.name.cmp(&b.name),
                OrganizationOrder::MembersCount => orgs
                    .members(&a.id)
                    .count()
                    .cmp(&orgs.members(&b.id).count()),
            };
            directed(primary, query.order_by.descending).then_with(|| a.id.cmp(&b.id))
        });
        page(matching, query.offset, query.limit, |org| {
            orgs.org_view(org, query.include_members_count, now)
        })
    }

    /// Set an organization's `max_allowed_memberships` (control API).
    pub fn set_max_allowed_memberships(
        &mut self,
        id_or_slug: &str,
        max: u64,
    ) -> Result<Organization, ApiError> {
        let now = now_ms();
        let id = self.organizations.org(id_or_slug)?.id.clone();
        if let Some(org) = self.organizations.orgs.iter_mut().find(|org| org.id == id) {
            org.max_allowed_memberships = max;
            org.updated_at = now.max(org.updated_at);
        }
        self.organization(&id, true)
    }

    /// `POST /organizations/{id}/invitations` and its bulk form: every item or none. Checks,
    /// in order: the organization, each item's role and inviter, members, pending invitations
    /// (earlier items of the same call included), then the quota.
    pub fn create_org_invitations(
        &mut self,
        org_id: &str,
        items: Vec<CreateOrganizationInvitation>,
    ) -> Result<Vec<OrganizationInvitation>, ApiError> {
        let now = now_ms();
        let orgs = &self.organizations;
        let org = orgs.org_by_id(org_id)?;
        for item in &items {
            orgs.role(&item.role)?;
            if let Some(inviter) = &item.inviter_user_id {
                self.stored_user(inviter)?;
                let admin = orgs
                    .membership_index(&org.id, inviter)
                    .and_then(|i| orgs.memberships.get(i))
                    .is_some_and(|m| m.role == ROLE_ADMIN);
                if !admin {
                    return Err(ApiError::not_an_admin(inviter));
                }
            }
        }
        let members: Vec<String> = items
            .iter()
            .filter(|item| {
                self.user_by_email(&item.email_address)
                    .is_some_and(|user| orgs.membership_index(&org.id, &user.id).is_some())
            })
            .map(|item| item.email_address.clone())
            .collect();
        if !members.is_empty() {
            return Err(ApiError::already_a_member(&distinct(members)));
        }
        let pending: HashSet<String> = orgs
            .pending(&org.id, now)
            .map(|inv| inv.email_key.clone())
            .collect();
        let mut in_call = HashSet::new();
        let mut duplicates = Vec::new();
        for item in &items {
            let key = email_key(&item.email_address);
            if pending.contains(&key) || !in_call.insert(key) {
                duplicates.push(item.email_address.clone());
            }
        }
        if !duplicates.is_empty() {
            return Err(ApiError::organization_duplicate_invitations(&distinct(
                duplicates,
            )));
        }
        let max = org.max_allowed_memberships;
        let (member_count, pending_count) = orgs.counts(&org.id, now);
        if max > 0 && member_count + pending_count + items.len() as u64 > max {
            return Err(ApiError::membership_quota_exceeded(max));
        }
        let org_id = org.id.clone();
        let mut created = Vec::with_capacity(items.len());
        for item in items {
            let at = self.organizations.tick();
            let days = item.expires_in_days.unwrap_or(DEFAULT_EXPIRES_IN_DAYS);
            let stored = StoredOrgInvitation {
                id: format!("orginv_{}", random_alphanumeric(27)),
                organization_id: org_id.clone(),
                email_key: email_key(&item.email_address),
                email_address: item.email_address,
                role: item.role,
                inviter_id: item.inviter_user_id,
                public_metadata: item.public_metadata.unwrap_or_default(),
                private_metadata: item.private_metadata.unwrap_or_default(),
                url: accept_url(item.redirect_url.as_deref()),
                created_at: at,
                updated_at: at,
                expires_at: at.saturating_add(i64::from(days) * DAY_MS),
                lifecycle: Lifecycle::Open,
                expired: false,
            };
            let view = self.org_invitation_view(&stored, at, false);
            self.raise(Event::organization(
                "organizationInvitation.created",
                to_value(&view),
            ));
            created.push(view);
            self.organizations.invitations.push(stored);
        }
        Ok(created)
    }

    fn org_invitations_matching(
        &self,
        org_id: Option<&str>,
        query: &OrgInvitationQuery,
        now: i64,
    ) -> Vec<&StoredOrgInvitation> {
        let emails: HashSet<String> = query.email_addresses.iter().map(|e| email_key(e)).collect();
        let needle = query.query.as_deref().map(str::to_lowercase);
        let mut matching: Vec<&StoredOrgInvitation> = self
            .organizations
            .invitations
            .iter()
            .filter(|inv| org_id.is_none_or(|id| inv.organization_id == id))
            .filter(|inv| query.statuses.is_empty() || query.statuses.contains(&inv.status(now)))
            .filter(|inv| emails.is_empty() || emails.contains(&inv.email_key))
            .filter(|inv| needle.as_deref().is_none_or(|n| inv.email_key.contains(n)))
            .collect();
        matching.sort_by(|a, b| {
            let primary = match query.order_by.field {
                InvitationOrder::CreatedAt => a.created_at.cmp(&b.created_at),
                InvitationOrder::EmailAddress => a.email_key.cmp(&b.email_key),
            };
            directed(primary, query.order_by.descending).then_with(|| a.id.cmp(&b.id))
        });
        matching
    }

    /// `GET /organizations/{id}/invitations`.
    pub fn list_org_invitations(
        &self,
        org_id: &str,
        query: &OrgInvitationQuery,
    ) -> Result<Page<OrganizationInvitation>, ApiError> {
        let now = now_ms();
        let org_id = self.organizations.org_by_id(org_id)?.id.clone();
        let matching = self.org_invitations_matching(Some(&org_id), query, now);
        Ok(page(matching, query.offset, query.limit, |inv| {
            self.org_invitation_view(inv, now, false)
        }))
    }

    /// `GET /organization_invitations`: every organization's, each with its organization's
    /// public data.
    pub fn list_instance_org_invitations(
        &self,
        query: &OrgInvitationQuery,
    ) -> Page<OrganizationInvitation> {
        let now = now_ms();
        let matching = self.org_invitations_matching(None, query, now);
        page(matching, query.offset, query.limit, |inv| {
            self.org_invitation_view(inv, now, true)
        })
    }

    fn org_invitation_index(&self, org_id: Option<&str>, id: &str) -> Result<usize, ApiError> {
        if let Some(org_id) = org_id {
            self.organizations.org_by_id(org_id)?;
        }
        self.organizations
            .invitations
            .iter()
            .position(|inv| inv.id == id && org_id.is_none_or(|org| inv.organization_id == org))
            .ok_or_else(|| ApiError::organization_invitation_not_found(id))
    }

    /// `GET /organizations/{id}/invitations/{invitation_id}`.
    pub fn org_invitation(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<OrganizationInvitation, ApiError> {
        let index = self.org_invitation_index(Some(org_id), id)?;
        let inv = &self.organizations.invitations[index];
        Ok(self.org_invitation_view(inv, now_ms(), false))
    }

    /// `POST /organizations/{id}/invitations/{invitation_id}/revoke`: only a pending one.
    pub fn revoke_org_invitation(
        &mut self,
        org_id: &str,
        id: &str,
        requesting_user_id: Option<&str>,
    ) -> Result<OrganizationInvitation, ApiError> {
        let now = now_ms();
        let index = self.org_invitation_index(Some(org_id), id)?;
        if let Some(requester) = requesting_user_id {
            self.stored_user(requester)?;
            let orgs = &self.organizations;
            let admin = orgs
                .membership_index(org_id, requester)
                .and_then(|i| orgs.memberships.get(i))
                .is_some_and(|m| m.role == ROLE_ADMIN);
            if !admin {
                return Err(ApiError::not_an_admin(requester));
            }
        }
        let inv = &mut self.organizations.invitations[index];
        let status = inv.status(now);
        if status != InvitationStatus::Pending {
            return Err(ApiError::organization_invitation_not_pending(
                id,
                status.as_str(),
            ));
        }
        inv.lifecycle = Lifecycle::Revoked;
        inv.updated_at = now.max(inv.updated_at);
        let inv = inv.clone();
        let view = self.org_invitation_view(&inv, now, false);
        self.raise(Event::organization(
            "organizationInvitation.revoked",
            to_value(&view),
        ));
        Ok(view)
    }

    /// Accept a pending organization invitation (control API): its address becomes a user if
    /// it is none, and a member with the invitation's role and metadata.
    pub fn accept_org_invitation(&mut self, id: &str) -> Result<OrganizationInvitation, ApiError> {
        let now = now_ms();
        let index = self.org_invitation_index(None, id)?;
        let inv = self.organizations.invitations[index].clone();
        let status = inv.status(now);
        if status != InvitationStatus::Pending {
            return Err(ApiError::not_pending(id, status.as_str()));
        }
        if let Some(user) = self.user_by_email(&inv.email_address) {
            if self
                .organizations
                .membership_index(&inv.organization_id, &user.id)
                .is_some()
            {
                return Err(ApiError::control_conflict(format!(
                    "{} is already a member of {}.",
                    inv.email_address, inv.organization_id
                )));
            }
        }
        let (user, _) = self.add_user_with(&inv.email_address, Verification::Ticket, Map::new());
        let stored = &mut self.organizations.invitations[index];
        stored.lifecycle = Lifecycle::Accepted;
        stored.updated_at = now.max(stored.updated_at);
        let stored = stored.clone();
        let view = self.org_invitation_view(&stored, now, false);
        let mut data = to_value(&view);
        if let Value::Object(fields) = &mut data {
            fields.insert("user_id".to_owned(), json!(user.id));
        }
        self.raise(Event::organization("organizationInvitation.accepted", data));
        self.insert_membership(
            &inv.organization_id,
            &user.id,
            &inv.role,
            inv.public_metadata,
            inv.private_metadata,
            false,
        );
        Ok(view)
    }

    /// Expire a pending organization invitation now (control API). No webhook: Clerk sends
    /// none on expiry.
    pub fn expire_org_invitation(&mut self, id: &str) -> Result<OrganizationInvitation, ApiError> {
        let now = now_ms();
        let index = self.org_invitation_index(None, id)?;
        let inv = &mut self.organizations.invitations[index];
        let status = inv.status(now);
        if status != InvitationStatus::Pending {
            return Err(ApiError::not_pending(id, status.as_str()));
        }
        inv.expired = true;
        inv.expires_at = inv.expires_at.min(now);
        inv.updated_at = now.max(inv.updated_at);
        let inv = inv.clone();
        Ok(self.org_invitation_view(&inv, now, false))
    }

    /// Every organization invitation of every status, oldest first, with its organization.
    pub fn all_org_invitations(&self) -> Vec<OrganizationInvitation> {
        let now = now_ms();
        self.organizations
            .invitations
            .iter()
            .map(|inv| self.org_invitation_view(inv, now, true))
            .collect()
    }

    /// Every membership of every organization, oldest first.
    pub fn all_memberships(&self) -> Vec<OrganizationMembership> {
        let now = now_ms();
        self.organizations
            .memberships
            .iter()
            .map(|m| self.membership_view(m, now))
            .collect()
    }

    /// Every organization, oldest first, with its counts.
    pub fn all_organizations(&self) -> Vec<Organization> {
        let now = now_ms();
        let orgs = &self.organizations;
        orgs.orgs
            .iter()
            .map(|org| orgs.org_view(org, true, now))
            .collect()
    }

    fn insert_membership(
        &mut self,
        org_id: &str,
        user_id: &str,
        role: &str,
        public_metadata: Map<String, Value>,
        private_metadata: Map<String, Value>,
        scim: bool,
    ) -> usize {
        let at = self.organizations.tick();
        self.organizations.memberships.push(StoredMembership {
            id: format!("orgmem_{}", random_alphanumeric(27)),
            organization_id: org_id.to_owned(),
            user_id: user_id.to_owned(),
            role: role.to_owned(),
            public_metadata,
            private_metadata,
            scim,
            created_at: at,
            updated_at: at,
        });
        let index = self.organizations.memberships.len() - 1;
        self.raise_membership("organizationMembership.created", index);
        index
    }

    /// `POST /organizations/{id}/memberships`: the user must exist and not be a member, and the
    /// organization must have room.
    pub fn create_membership(
        &mut self,
        org_id: &str,
        new: NewMembership,
    ) -> Result<OrganizationMembership, ApiError> {
        let now = now_ms();
        let orgs = &self.organizations;
        let org = orgs.org_by_id(org_id)?;
        let user = self.stored_user(&new.user_id)?;
        orgs.role(&new.role)?;
        if orgs.membership_index(&org.id, &user.id).is_some() {
            return Err(ApiError::already_a_member(std::slice::from_ref(
                &user.email_address,
            )));
        }
        let (members, pending) = orgs.counts(&org.id, now);
        let max = org.max_allowed_memberships;
        if max > 0 && members + pending >= max {
            return Err(ApiError::membership_quota_exceeded(max));
        }
        let org_id = org.id.clone();
        let index = self.insert_membership(
            &org_id,
            &new.user_id,
            &new.role,
            new.public_metadata,
            new.private_metadata,
            false,
        );
        Ok(self.membership_view(&self.organizations.memberships[index], now))
    }

    /// `GET /organizations/{id}/memberships`.
    pub fn list_memberships(
        &self,
        org_id: &str,
        query: &MembershipQuery,
    ) -> Result<Page<OrganizationMembership>, ApiError> {
        let now = now_ms();
        let org_id = self.organizations.org_by_id(org_id)?.id.clone();
        let emails: HashSet<String> = query.email_addresses.iter().map(|e| email_key(e)).collect();
        let needle = query.query.as_deref().map(str::to_lowercase);
        let email_needle = query.email_address_query.as_deref().map(str::to_lowercase);
        let email_of = |m: &StoredMembership| {
            self.users
                .get(&m.user_id)
                .map(|user| user.email_key.clone())
                .unwrap_or_default()
        };
        let mut matching: Vec<&StoredMembership> = self
            .organizations
            .members(&org_id)
            .filter(|m| query.user_ids.is_empty() || query.user_ids.contains(&m.user_id))
            .filter(|m| emails.is_empty() || emails.contains(&email_of(m)))
            .filter(|m| query.roles.is_empty() || query.roles.contains(&m.role))
            .filter(|m| {
                needle
                    .as_deref()
                    .is_none_or(|n| email_of(m).contains(n) || m.user_id.to_lowercase().contains(n))
            })
            .filter(|m| {
                email_needle
                    .as_deref()
                    .is_none_or(|n| email_of(m).contains(n))
            })
            .collect();
        matching.sort_by(|a, b| {
            let primary = match query.order_by.field {
                MembershipOrder::EmailAddress => email_of(a).cmp(&email_of(b)),
                MembershipOrder::CreatedAt | MembershipOrder::Other => {
                    a.created_at.cmp(&b.created_at)
                }
            };
            directed(primary, query.order_by.descending).then_with(|| a.id.cmp(&b.id))
        });
        Ok(page(matching, query.offset, query.limit, |m| {
            self.membership_view(m, now)
        }))
    }

    fn existing_membership(&self, org_id: &str, user_id: &str) -> Result<usize, ApiError> {
        let orgs = &self.organizations;
        let org = orgs.org_by_id(org_id)?;
        orgs.membership_index(&org.id, user_id)
            .ok_or_else(|| ApiError::membership_not_found(user_id))
    }

    /// `PATCH /organizations/{id}/memberships/{user_id}`.
    pub fn update_membership(
        &mut self,
        org_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<OrganizationMembership, ApiError> {
        let now = now_ms();
        let index = self.existing_membership(org_id, user_id)?;
        self.organizations.role(role)?;
        let orgs = &self.organizations;
        let m = &orgs.memberships[index];
        if m.scim {
            return Err(ApiError::managed_by_scim());
        }
        if m.role == ROLE_ADMIN && role != ROLE_ADMIN && orgs.admins(&m.organization_id) == 1 {
            return Err(ApiError::minimum_permissions_needed());
        }
        let m = &mut self.organizations.memberships[index];
        m.role = role.to_owned();
        m.updated_at = now.max(m.updated_at);
        self.raise_membership("organizationMembership.updated", index);
        Ok(self.membership_view(&self.organizations.memberships[index], now))
    }

    /// `DELETE /organizations/{id}/memberships/{user_id}`: the membership as it was.
    pub fn delete_membership(
        &mut self,
        org_id: &str,
        user_id: &str,
    ) -> Result<OrganizationMembership, ApiError> {
        let now = now_ms();
        let index = self.existing_membership(org_id, user_id)?;
        let orgs = &self.organizations;
        let m = &orgs.memberships[index];
        if m.scim {
            return Err(ApiError::managed_by_scim());
        }
        if m.role == ROLE_ADMIN && orgs.admins(&m.organization_id) == 1 {
            return Err(ApiError::minimum_permissions_needed());
        }
        let view = self.membership_view(m, now);
        self.organizations.memberships.remove(index);
        self.raise(Event::organization(
            "organizationMembership.deleted",
            to_value(&view),
        ));
        Ok(view)
    }

    /// Add a membership by hand (control API), as the dashboard would: no quota check.
    pub fn add_membership(
        &mut self,
        id_or_slug: &str,
        member: Member,
        role: &str,
        scim: bool,
    ) -> Result<OrganizationMembership, ApiError> {
        let org_id = self.organizations.org(id_or_slug)?.id.clone();
        self.organizations.role(role)?;
        let user_id = match member {
            Member::UserId(id) => self.stored_user(&id)?.id.clone(),
            Member::Email(email) => self.add_user(&email).0.id,
        };
        if self
            .organizations
            .membership_index(&org_id, &user_id)
            .is_some()
        {
            return Err(ApiError::control_conflict(format!(
                "{user_id} is already a member of {org_id}."
            )));
        }
        let index = self.insert_membership(&org_id, &user_id, role, Map::new(), Map::new(), scim);
        Ok(self.membership_view(&self.organizations.memberships[index], now_ms()))
    }

    /// Mark a membership as managed by Directory Sync, or not (control API).
    pub fn set_membership_scim(
        &mut self,
        id_or_slug: &str,
        user_id: &str,
        scim: bool,
    ) -> Result<OrganizationMembership, ApiError> {
        let org_id = self.organizations.org(id_or_slug)?.id.clone();
        let index = self.existing_membership(&org_id, user_id)?;
        self.organizations.memberships[index].scim = scim;
        Ok(self.membership_view(&self.organizations.memberships[index], now_ms()))
    }

    /// Remove every membership of a user about to be deleted, announcing each.
    pub(super) fn drop_memberships_of(&mut self, user_id: &str) {
        let now = now_ms();
        while let Some(index) = self
            .organizations
            .memberships
            .iter()
            .position(|m| m.user_id == user_id)
        {
            let view = self.membership_view(&self.organizations.memberships[index], now);
            self.organizations.memberships.remove(index);
            self.raise(Event::organization(
                "organizationMembership.deleted",
                to_value(&view),
            ));
        }
    }

    /// Define a custom organization role (control API).
    pub fn define_role(
        &mut self,
        key: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<OrganizationRole, ApiError> {
        if !is_valid_role_key(key) {
            return Err(ApiError::value_invalid(
                "key",
                "key must start with org: and contain only lowercase letters, digits and underscores.",
            ));
        }
        if self.organizations.role(key).is_ok() {
            return Err(ApiError::control_conflict(format!(
                "The role {key} exists."
            )));
        }
        let at = self.organizations.tick();
        let role = StoredRole {
            id: format!("role_{}", random_alphanumeric(27)),
            key: key.to_owned(),
            name: name
                .map(str::to_owned)
                .unwrap_or_else(|| key.trim_start_matches("org:").to_owned()),
            description: description.map(str::to_owned),
            permissions: MEMBER_PERMISSIONS.to_vec(),
            created_at: at,
        };
        let view = self.organizations.role_view(&role);
        self.organizations.roles.push(role);
        Ok(view)
    }

    /// `GET /organization_roles`.
    pub fn list_roles(&self, query: &RoleQuery) -> Page<OrganizationRole> {
        let orgs = &self.organizations;
        let needle = query.query.as_deref().map(str::to_lowercase);
        let mut matching: Vec<&StoredRole> = orgs
            .roles
            .iter()
            .filter(|role| {
                needle
                    .as_deref()
                    .is_none_or(|n| role.key.contains(n) || role.name.to_lowercase().contains(n))
            })
            .collect();
        matching.sort_by(|a, b| {
            directed(a.created_at.cmp(&b.created_at), query.descending)
                .then_with(|| a.id.cmp(&b.id))
        });
        page(matching, query.offset, query.limit, |role| {
            orgs.role_view(role)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_made_of_names() {
        assert_eq!(slugify("Acme, Inc."), "acme-inc");
        assert_eq!(slugify("  Ünïcode  "), "n-code");
        assert_eq!(slugify("!!!"), "organization");
    }
}
