//! Integration tests: one binary, a module per area. They talk to a real PostgreSQL
//! (a fresh database per test) and to the Clerk simulator over a real socket.

mod clerk_sdk;
mod cli;
mod client;
mod client_orgs;
mod common;
mod config;
mod dashboard;
mod deploy;
mod docs;
mod events;
mod explain;
mod faults;
mod faults_orgs;
mod hostile_input;
mod http;
mod import;
mod membership_writers;
mod memberships;
mod ownership;
mod prometheus;
mod reconcile;
mod scim;
mod scim_group_orgs;
mod scim_groups;
mod scim_input;
mod sim;
mod sim_orgs;
mod store;
mod store_memberships;
