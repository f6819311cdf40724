//! The client's organization calls: an organization by id or slug, the roles, organization
//! invitations (single, bulk, listed per organization or for the whole instance, revoked)
//! and memberships (created, listed, their role changed, removed).
//!
//! The two invitation creates spend the organization invitations' hourly limits and obey a
//! 429's `Retry-After` as the instance creates do; everything else costs the general request
//! limit only. Lists page by 500, oldest first, and list again when the total changes while
//! they page.

use std::collections::HashSet;

use reqwest::Method;
use serde::de::DeserializeOwned;
use url::Url;

use super::{ClerkClient, ClientError, Operation, MAX_BULK, MAX_PAGE};
use crate::clerk::model::InvitationStatus;
use crate::clerk::organization::{
    CreateOrganizationInvitation, CreateOrganizationMembership, Organization,
    OrganizationInvitation, OrganizationMembership, OrganizationRole, Page,
    UpdateOrganizationMembership,
};

/// The most values of one filter (`email_address`, `user_id`, `role`) one
/// `GET …/memberships` call may carry (Clerk's limit).
pub const MEMBERSHIP_FILTER_VALUES: usize = 100;

/// How often a list is taken again from the start when its total changed while it was paged.
const LISTING_ATTEMPTS: u32 = 5;

impl ClerkClient {
    /// `GET /organizations/{id_or_slug}?include_members_count=true`: the organization with its
    /// member and pending invitation counts, so that its room can be read
    /// ([`Organization::room`]). An unknown one is 404 `resource_not_found`
    /// ([`super::OrganizationRefusal::NotFound`]).
    pub async fn get_organization(&self, id_or_slug: &str) -> Result<Organization, ClientError> {
        let operation = Operation::GetOrganization;
        let mut url = self.url(operation, &["organizations", id_or_slug])?;
        url.query_pairs_mut()
            .append_pair("include_members_count", "true");
        self.call_url::<_, ()>(operation, Method::GET, url, None)
            .await
    }

    /// Every organization role of the instance (`GET /organization_roles`), all pages.
    pub async fn list_organization_roles(&self) -> Result<Vec<OrganizationRole>, ClientError> {
        let operation = Operation::ListOrganizationRoles;
        let url = self.url(operation, &["organization_roles"])?;
        self.every_page_of(operation, url, &[("order_by", "+created_at")])
            .await
    }

    /// `POST /organizations/{organization_id}/invitations`. Spends one of the hourly single
    /// organization invitations; never retried once it may have reached Clerk.
    pub async fn create_organization_invitation(
        &self,
        organization_id: &str,
        request: &CreateOrganizationInvitation,
    ) -> Result<OrganizationInvitation, ClientError> {
        let operation = Operation::CreateOrganizationInvitation;
        let url = self.url(
            operation,
            &["organizations", organization_id, "invitations"],
        )?;
        self.call_url(operation, Method::POST, url, Some(request))
            .await
    }

    /// `POST /organizations/{organization_id}/invitations/bulk` with 1 to [`MAX_BULK`] items,
    /// all for this organization. All or nothing, as far as Clerk says. No call for an empty
    /// slice; more than [`MAX_BULK`] is refused before a call is spent on it.
    pub async fn create_organization_invitations_bulk(
        &self,
        organization_id: &str,
        requests: &[CreateOrganizationInvitation],
    ) -> Result<Vec<OrganizationInvitation>, ClientError> {
        let operation = Operation::CreateOrganizationInvitationsBulk;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if requests.len() > MAX_BULK {
            return Err(ClientError::InvalidRequest {
                operation,
                reason: format!(
                    "{} invitations in one bulk call; Clerk takes at most {MAX_BULK}",
                    requests.len()
                ),
            });
        }
        let url = self.url(
            operation,
            &["organizations", organization_id, "invitations", "bulk"],
        )?;
        let page: Page<OrganizationInvitation> = self
            .call_url(operation, Method::POST, url, Some(requests))
            .await?;
        Ok(page.data)
    }

    /// One page of `GET /organizations/{organization_id}/invitations`, oldest first, with
    /// this status (every status for `None`); `limit` at most [`MAX_PAGE`].
    pub async fn list_organization_invitations(
        &self,
        organization_id: &str,
        status: Option<InvitationStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<Page<OrganizationInvitation>, ClientError> {
        let operation = Operation::ListOrganizationInvitations;
        let mut url = self.url(
            operation,
            &["organizations", organization_id, "invitations"],
        )?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(status) = status {
                query.append_pair("status", status.as_str());
            }
            query
                .append_pair("order_by", "+created_at")
                .append_pair("limit", &limit.to_string())
                .append_pair("offset", &offset.to_string());
        }
        self.call_url::<_, ()>(operation, Method::GET, url, None)
            .await
    }

    /// Every invitation of the organization with this status (every status for `None`),
    /// across as many pages of [`MAX_PAGE`] as it takes, oldest first, each once.
    pub async fn list_all_organization_invitations(
        &self,
        organization_id: &str,
        status: Option<InvitationStatus>,
    ) -> Result<Vec<OrganizationInvitation>, ClientError> {
        let operation = Operation::ListOrganizationInvitations;
        let url = self.url(
            operation,
            &["organizations", organization_id, "invitations"],
        )?;
        let mut filters = vec![("order_by", "+created_at")];
        if let Some(status) = status {
            filters.push(("status", status.as_str()));
        }
        self.every_page_of(operation, url, &filters).await
    }

    /// The organization's invitations of `email` (any status), oldest first: how a create
    /// whose outcome is unknown is settled. Clerk matches the address case-insensitively;
    /// anything else it answers is left out.
    pub async fn find_organization_invitations_by_email(
        &self,
        organization_id: &str,
        email: &str,
    ) -> Result<Vec<OrganizationInvitation>, ClientError> {
        let operation = Operation::ListOrganizationInvitations;
        if email.trim().is_empty() {
            return Err(ClientError::InvalidRequest {
                operation,
                reason: "the email address to look up is empty".to_owned(),
            });
        }
        let url = self.url(
            operation,
            &["organizations", organization_id, "invitations"],
        )?;
        let mut found: Vec<OrganizationInvitation> = self
            .every_page_of(
                operation,
                url,
                &[("order_by", "+created_at"), ("email_address", email)],
            )
            .await?;
        found.retain(|i| i.email_address.eq_ignore_ascii_case(email));
        Ok(found)
    }

    /// Every organization invitation of the instance with this status (every status for
    /// `None`), `GET /organization_invitations`, all pages, oldest first, each once. Each
    /// carries its `organization_id`.
    pub async fn list_instance_organization_invitations(
        &self,
        status: Option<InvitationStatus>,
    ) -> Result<Vec<OrganizationInvitation>, ClientError> {
        let operation = Operation::ListInstanceOrganizationInvitations;
        let url = self.url(operation, &["organization_invitations"])?;
        let mut filters = vec![("order_by", "+created_at")];
        if let Some(status) = status {
            filters.push(("status", status.as_str()));
        }
        self.every_page_of(operation, url, &filters).await
    }

    /// `POST /organizations/{organization_id}/invitations/{invitation_id}/revoke`. Only a
    /// pending invitation can be revoked: another is refused with
    /// [`super::OrganizationRefusal::InvitationNotPending`].
    pub async fn revoke_organization_invitation(
        &self,
        organization_id: &str,
        invitation_id: &str,
    ) -> Result<OrganizationInvitation, ClientError> {
        let operation = Operation::RevokeOrganizationInvitation;
        let url = self.url(
            operation,
            &[
                "organizations",
                organization_id,
                "invitations",
                invitation_id,
                "revoke",
            ],
        )?;
        self.call_url::<_, ()>(operation, Method::POST, url, None)
            .await
    }

    /// `POST /organizations/{organization_id}/memberships`: the user becomes a member with
    /// `role`, no email sent. The user must exist and not be a member already. Costs the
    /// general request limit only; not retried once it may have reached Clerk (a second
    /// one would be refused as already a member, hiding that the first worked).
    pub async fn create_membership(
        &self,
        organization_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<OrganizationMembership, ClientError> {
        let operation = Operation::CreateOrganizationMembership;
        check_value(operation, "user id", user_id)?;
        check_value(operation, "role", role)?;
        let url = self.url(
            operation,
            &["organizations", organization_id, "memberships"],
        )?;
        let body = CreateOrganizationMembership {
            user_id: user_id.to_owned(),
            role: role.to_owned(),
        };
        self.call_url(operation, Method::POST, url, Some(&body))
            .await
    }

    /// Every membership of the organization, all pages, oldest first, each once.
    pub async fn list_memberships(
        &self,
        organization_id: &str,
    ) -> Result<Vec<OrganizationMembership>, ClientError> {
        let operation = Operation::ListOrganizationMemberships;
        let url = self.url(
            operation,
            &["organizations", organization_id, "memberships"],
        )?;
        self.every_page_of(operation, url, &[("order_by", "+created_at")])
            .await
    }

    /// The organization's memberships of users owning any of `emails` (Clerk matches them
    /// case-insensitively), one call per [`MEMBERSHIP_FILTER_VALUES`] addresses; no call for
    /// an empty slice, which Clerk would read as "every member". Each membership once.
    pub async fn find_memberships_by_email(
        &self,
        organization_id: &str,
        emails: &[String],
    ) -> Result<Vec<OrganizationMembership>, ClientError> {
        let operation = Operation::ListOrganizationMemberships;
        let url = self.url(
            operation,
            &["organizations", organization_id, "memberships"],
        )?;
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for chunk in emails.chunks(MEMBERSHIP_FILTER_VALUES) {
            let mut filters = vec![("order_by", "+created_at")];
            filters.extend(chunk.iter().map(|e| ("email_address", e.as_str())));
            let page: Vec<OrganizationMembership> =
                self.every_page_of(operation, url.clone(), &filters).await?;
            for membership in page {
                if seen.insert(membership.id.clone()) {
                    found.push(membership);
                }
            }
        }
        Ok(found)
    }

    /// `PATCH /organizations/{organization_id}/memberships/{user_id}`: the member's role
    /// becomes `role`. Demoting the last admin is refused with
    /// [`super::OrganizationRefusal::LastAdmin`].
    pub async fn update_membership_role(
        &self,
        organization_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<OrganizationMembership, ClientError> {
        let operation = Operation::UpdateOrganizationMembership;
        check_value(operation, "role", role)?;
        let url = self.url(
            operation,
            &["organizations", organization_id, "memberships", user_id],
        )?;
        let body = UpdateOrganizationMembership {
            role: role.to_owned(),
        };
        self.call_url(operation, Method::PATCH, url, Some(&body))
            .await
    }

    /// `DELETE /organizations/{organization_id}/memberships/{user_id}`: the membership
    /// removed, as it was. A membership Directory Sync manages is refused with
    /// [`super::OrganizationRefusal::ManagedByDirectorySync`].
    pub async fn delete_membership(
        &self,
        organization_id: &str,
        user_id: &str,
    ) -> Result<OrganizationMembership, ClientError> {
        let operation = Operation::DeleteOrganizationMembership;
        let url = self.url(
            operation,
            &["organizations", organization_id, "memberships", user_id],
        )?;
        self.call_url::<_, ()>(operation, Method::DELETE, url, None)
            .await
    }

    /// The URL of `segments` under the API's base, each segment percent-encoded (an id or
    /// slug cannot reach another path). An empty or blank segment is refused: it would name
    /// another endpoint (`/organizations/` is the list).
    fn url(&self, operation: Operation, segments: &[&str]) -> Result<Url, ClientError> {
        let mut previous = "";
        for segment in segments {
            let what = match previous {
                "organizations" => "organization id or slug",
                "invitations" => "invitation id",
                "memberships" => "user id",
                _ => "path segment",
            };
            check_value(operation, what, segment)?;
            previous = segment;
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ClientError::InvalidApiUrl)?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Every item of a `{data, total_count}` list at `url` with `filters`, by pages of
    /// [`MAX_PAGE`], each item (by `id`) once. Offset paging skips an item when one before
    /// it leaves the list between two pages; a changed `total_count` shows that happened,
    /// and the list is taken again from the start (at most [`LISTING_ATTEMPTS`] times).
    async fn every_page_of<T: DeserializeOwned + Listed>(
        &self,
        operation: Operation,
        url: Url,
        filters: &[(&str, &str)],
    ) -> Result<Vec<T>, ClientError> {
        let mut attempt = 0;
        'listing: loop {
            attempt += 1;
            let mut seen = HashSet::new();
            let mut all = Vec::new();
            let mut offset: u64 = 0;
            let mut total: Option<u64> = None;
            loop {
                let mut page_url = url.clone();
                page_url
                    .query_pairs_mut()
                    .extend_pairs(filters.iter().copied())
                    .append_pair("limit", &MAX_PAGE.to_string())
                    .append_pair("offset", &offset.to_string());
                let page: Page<T> = self
                    .call_url::<_, ()>(operation, Method::GET, page_url, None)
                    .await?;
                if total.is_some_and(|t| t != page.total_count) && attempt < LISTING_ATTEMPTS {
                    tracing::debug!(
                        operation = operation.as_str(),
                        attempt,
                        "the list changed while it was paged; listing again"
                    );
                    continue 'listing;
                }
                total = Some(page.total_count);
                let received = page.data.len() as u64;
                for item in page.data {
                    if seen.insert(item.id().to_owned()) {
                        all.push(item);
                    }
                }
                offset += received;
                if received < u64::from(MAX_PAGE) || offset >= page.total_count {
                    return Ok(all);
                }
            }
        }
    }
}

/// An item of a paged list, told apart by its id.
trait Listed {
    fn id(&self) -> &str;
}

impl Listed for OrganizationRole {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for OrganizationInvitation {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for OrganizationMembership {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Refuses an empty or blank value before any call is made, naming it.
fn check_value(operation: Operation, what: &str, value: &str) -> Result<(), ClientError> {
    if value.trim().is_empty() {
        return Err(ClientError::InvalidRequest {
            operation,
            reason: format!("the {what} is empty"),
        });
    }
    Ok(())
}
