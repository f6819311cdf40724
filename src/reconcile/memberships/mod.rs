//! Organization memberships: the membership roster kept equal to Clerk's organizations.
//! The [`plan`] decides each (address, organization), the [`guard`] holds mass removals,
//! [`next_call`](mod@next_call) chooses each organization-invitation call under the
//! organization budget.

pub mod guard;
pub mod next_call;
pub mod plan;
