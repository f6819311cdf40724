//! invite-sync keeps a Clerk application's invitations equal to a roster in PostgreSQL.

pub mod clerk;
pub mod config;
pub mod store;
pub mod telemetry;
