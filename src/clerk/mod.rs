//! Clerk's Backend API, as far as invitations, user lookups and organizations go: the client, the shapes, and a faithful simulator.

pub mod budget;
pub mod client;
pub mod model;
pub mod organization;
pub mod sim;

pub use client::{
    ClerkClient, ClientError, ClientOptions, KeyKind, ListQuery, Operation, OrganizationRefusal,
    RequestRate, RetryPolicy,
};
pub use model::{
    ClerkError, ClerkErrors, CreateInvitation, DeletedObject, Invitation, InvitationPage,
    InvitationStatus, OrderBy, TemplateSlug, User, UserEmailAddress, API_VERSION,
};
pub use organization::{
    CreateOrganizationInvitation, CreateOrganizationMembership, Organization,
    OrganizationInvitation, OrganizationInvitationStatus, OrganizationMembership,
    OrganizationMembershipPublicUserData, OrganizationRole, Page, TotalCount,
    UpdateOrganizationMembership,
};
