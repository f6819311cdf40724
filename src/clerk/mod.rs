//! Clerk's Backend API, as far as invitations and user lookups go: the client, the shapes, and a faithful simulator.

pub mod budget;
pub mod client;
pub mod model;
pub mod sim;

pub use client::{
    ClerkClient, ClientError, ClientOptions, KeyKind, ListQuery, Operation, RequestRate,
    RetryPolicy,
};
pub use model::{
    ClerkError, ClerkErrors, CreateInvitation, DeletedObject, Invitation, InvitationPage,
    InvitationStatus, OrderBy, TemplateSlug, User, UserEmailAddress, API_VERSION,
};
