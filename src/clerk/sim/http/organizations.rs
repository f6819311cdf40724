//! The organization routes: Clerk's organizations, organization invitations, memberships and
//! roles under `/v1`, `GET /v1/users/count`, and their control API under `/_sim/`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::{call, control_body, control_respond, json_value, ConnectionKill, Shared};
use crate::clerk::organization::{TotalCount, ROLE_MEMBER};
use crate::clerk::sim::errors::ApiError;
use crate::clerk::sim::input::organizations as input;
use crate::clerk::sim::input::{is_valid_email, parse_user_query};
use crate::clerk::sim::state::Member;
use crate::clerk::sim::Operation;

type Kill = Option<Extension<ConnectionKill>>;

pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/v1/users/count", get(count_users))
        .route(
            "/v1/organizations",
            post(create_organization).get(list_organizations),
        )
        .route("/v1/organizations/{organization_id}", get(get_organization))
        .route(
            "/v1/organizations/{organization_id}/invitations",
            post(create_invitation).get(list_invitations),
        )
        .route(
            "/v1/organizations/{organization_id}/invitations/bulk",
            post(create_invitations_bulk),
        )
        .route(
            "/v1/organizations/{organization_id}/invitations/{invitation_id}",
            get(get_invitation),
        )
        .route(
            "/v1/organizations/{organization_id}/invitations/{invitation_id}/revoke",
            post(revoke_invitation),
        )
        .route(
            "/v1/organization_invitations",
            get(list_instance_invitations),
        )
        .route(
            "/v1/organizations/{organization_id}/memberships",
            post(create_membership).get(list_memberships),
        )
        .route(
            "/v1/organizations/{organization_id}/memberships/{user_id}",
            patch(update_membership).delete(delete_membership),
        )
        .route("/v1/organization_roles", get(list_roles))
        .route(
            "/_sim/organizations",
            post(control_create_organization).get(control_organizations),
        )
        .route(
            "/_sim/organizations/{organization}",
            patch(control_update_organization),
        )
        .route(
            "/_sim/organizations/{organization}/memberships",
            post(control_add_membership),
        )
        .route(
            "/_sim/organizations/{organization}/memberships/{user_id}/scim",
            post(control_scim),
        )
        .route("/_sim/organization_memberships", get(control_memberships))
        .route("/_sim/organization_invitations", get(control_invitations))
        .route(
            "/_sim/organization_invitations/{invitation_id}/accept",
            post(control_accept),
        )
        .route(
            "/_sim/organization_invitations/{invitation_id}/expire",
            post(control_expire),
        )
        .route("/_sim/organization_roles", post(control_define_role))
}

/// `GET /users/count`: how many users `GET /users` would find with the same filters, whatever
/// the page asked for.
async fn count_users(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = parse_user_query(query.as_deref());
    call(&sim, Operation::CountUsers, &headers, kill, |state| {
        let mut query = parsed?;
        query.limit = usize::MAX;
        query.offset = 0;
        query.starting_after = None;
        let total_count = state.list_users(&query)?.len() as u64;
        json_value(TotalCount {
            object: "total_count".to_owned(),
            total_count,
        })
    })
    .await
}

async fn create_organization(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = input::parse_new_organization(&body);
    call(
        &sim,
        Operation::CreateOrganization,
        &headers,
        kill,
        |state| json_value(state.create_organization(parsed?)?),
    )
    .await
}

async fn list_organizations(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_organization_query(query.as_deref());
    call(
        &sim,
        Operation::ListOrganizations,
        &headers,
        kill,
        |state| json_value(state.list_organizations(&parsed?)),
    )
    .await
}

async fn get_organization(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path(id_or_slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_organization_query(query.as_deref());
    call(&sim, Operation::GetOrganization, &headers, kill, |state| {
        let counts = parsed?.include_members_count;
        json_value(state.organization(&id_or_slug, counts)?)
    })
    .await
}

async fn create_invitation(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = input::parse_invitation(&body);
    call(
        &sim,
        Operation::CreateOrganizationInvitation,
        &headers,
        kill,
        |state| {
            let created = state.create_org_invitations(&org_id, vec![parsed?])?;
            json_value(created.first())
        },
    )
    .await
}

async fn create_invitations_bulk(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = input::parse_invitation_bulk(&body);
    call(
        &sim,
        Operation::CreateOrganizationInvitationsBulk,
        &headers,
        kill,
        |state| {
            let data = state.create_org_invitations(&org_id, parsed?)?;
            let total_count = data.len() as u64;
            json_value(crate::clerk::organization::Page { data, total_count })
        },
    )
    .await
}

async fn list_invitations(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_org_invitation_query(query.as_deref());
    call(
        &sim,
        Operation::ListOrganizationInvitations,
        &headers,
        kill,
        |state| json_value(state.list_org_invitations(&org_id, &parsed?)?),
    )
    .await
}

async fn list_instance_invitations(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_org_invitation_query(query.as_deref());
    call(
        &sim,
        Operation::ListInstanceOrganizationInvitations,
        &headers,
        kill,
        |state| json_value(state.list_instance_org_invitations(&parsed?)),
    )
    .await
}

async fn get_invitation(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path((org_id, invitation_id)): Path<(String, String)>,
) -> Response {
    call(
        &sim,
        Operation::GetOrganizationInvitation,
        &headers,
        kill,
        |state| json_value(state.org_invitation(&org_id, &invitation_id)?),
    )
    .await
}

async fn revoke_invitation(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path((org_id, invitation_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let parsed = input::parse_revoke(&body);
    call(
        &sim,
        Operation::RevokeOrganizationInvitation,
        &headers,
        kill,
        |state| {
            let requester = parsed?;
            json_value(state.revoke_org_invitation(
                &org_id,
                &invitation_id,
                requester.as_deref(),
            )?)
        },
    )
    .await
}

async fn create_membership(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = input::parse_new_membership(&body);
    call(
        &sim,
        Operation::CreateOrganizationMembership,
        &headers,
        kill,
        |state| json_value(state.create_membership(&org_id, parsed?)?),
    )
    .await
}

async fn list_memberships(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path(org_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_membership_query(query.as_deref());
    call(
        &sim,
        Operation::ListOrganizationMemberships,
        &headers,
        kill,
        |state| json_value(state.list_memberships(&org_id, &parsed?)?),
    )
    .await
}

async fn update_membership(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path((org_id, user_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let parsed = input::parse_role_change(&body);
    call(
        &sim,
        Operation::UpdateOrganizationMembership,
        &headers,
        kill,
        |state| json_value(state.update_membership(&org_id, &user_id, &parsed?)?),
    )
    .await
}

async fn delete_membership(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    Path((org_id, user_id)): Path<(String, String)>,
) -> Response {
    call(
        &sim,
        Operation::DeleteOrganizationMembership,
        &headers,
        kill,
        |state| json_value(state.delete_membership(&org_id, &user_id)?),
    )
    .await
}

async fn list_roles(
    State(sim): State<Shared>,
    kill: Kill,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let parsed = input::parse_role_query(query.as_deref());
    call(
        &sim,
        Operation::ListOrganizationRoles,
        &headers,
        kill,
        |state| json_value(state.list_roles(&parsed?)),
    )
    .await
}

// ---------------------------------------------------------------------------
// The control API: no auth, no limits, no faults, no counters.

/// The same body as `POST /v1/organizations` (a slug, `max_allowed_memberships`, ...).
async fn control_create_organization(State(sim): State<Shared>, body: Bytes) -> Response {
    let outcome = input::parse_new_organization(&body)
        .and_then(|new| sim.state().create_organization(new))
        .and_then(json_value);
    control_respond(outcome)
}

async fn control_organizations(State(sim): State<Shared>) -> Response {
    control_respond(json_value(sim.state().all_organizations()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateOrganization {
    max_allowed_memberships: u64,
}

async fn control_update_organization(
    State(sim): State<Shared>,
    Path(organization): Path<String>,
    body: Bytes,
) -> Response {
    let outcome = control_body::<UpdateOrganization>(&body)
        .and_then(|update| {
            sim.state()
                .set_max_allowed_memberships(&organization, update.max_allowed_memberships)
        })
        .and_then(json_value);
    control_respond(outcome)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMembership {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    email_address: Option<String>,
    #[serde(default)]
    role: Option<String>,
    /// Managed by Directory Sync.
    #[serde(default)]
    scim: bool,
}

async fn control_add_membership(
    State(sim): State<Shared>,
    Path(organization): Path<String>,
    body: Bytes,
) -> Response {
    let outcome = control_body::<AddMembership>(&body)
        .and_then(|add| {
            let member = match (add.user_id, add.email_address) {
                (Some(id), None) => Member::UserId(id),
                (None, Some(email)) if is_valid_email(&email) => Member::Email(email),
                (None, Some(email)) => return Err(ApiError::control_email_invalid(&email)),
                _ => {
                    return Err(ApiError::value_invalid(
                        "user_id",
                        "Give exactly one of user_id and email_address.",
                    ))
                }
            };
            let role = add.role.unwrap_or_else(|| ROLE_MEMBER.to_owned());
            sim.state()
                .add_membership(&organization, member, &role, add.scim)
        })
        .and_then(json_value);
    control_respond(outcome)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scim {
    #[serde(default = "managed")]
    managed: bool,
}

fn managed() -> bool {
    true
}

/// Mark a membership as managed by Directory Sync (`{"managed": false}` unmarks it); an
/// empty body marks it.
async fn control_scim(
    State(sim): State<Shared>,
    Path((organization, user_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Scim { managed: true })
    } else {
        control_body::<Scim>(&body)
    };
    let outcome = parsed
        .and_then(|scim| {
            sim.state()
                .set_membership_scim(&organization, &user_id, scim.managed)
        })
        .and_then(json_value);
    control_respond(outcome)
}

async fn control_memberships(State(sim): State<Shared>) -> Response {
    control_respond(json_value(sim.state().all_memberships()))
}

async fn control_invitations(State(sim): State<Shared>) -> Response {
    control_respond(json_value(sim.state().all_org_invitations()))
}

async fn control_accept(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    let outcome = sim.state().accept_org_invitation(&id);
    control_respond(outcome.and_then(json_value))
}

async fn control_expire(State(sim): State<Shared>, Path(id): Path<String>) -> Response {
    let outcome = sim.state().expire_org_invitation(&id);
    control_respond(outcome.and_then(json_value))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefineRole {
    key: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

async fn control_define_role(State(sim): State<Shared>, body: Bytes) -> Response {
    let outcome = control_body::<DefineRole>(&body)
        .and_then(|role| {
            sim.state()
                .define_role(&role.key, role.name.as_deref(), role.description.as_deref())
        })
        .and_then(json_value);
    control_respond(outcome)
}
