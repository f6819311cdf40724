//! invite-sync keeps a Clerk application's invitations equal to a roster in PostgreSQL.

pub mod clerk;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod import;
pub mod metrics;
pub mod reconcile;
pub mod scim;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhook_signature;
