//! Integration tests of the PCO simulator: through the router with `tower::ServiceExt::oneshot`
//! and, in `server` and `faults`, through a real socket; `clerk_*` test the Clerk simulator.

mod auth;
mod clerk_api;
mod clerk_common;
mod clerk_contract;
mod clerk_data;
mod clerk_mutate;
mod clerk_mutations;
mod clerk_webhooks;
mod common;
mod determinism;
mod faults;
mod filters;
mod groups;
mod groups_mutations;
mod includes;
mod mutations;
mod nested;
mod oauth;
mod paging;
mod ratelimit;
mod server;
mod single;
mod webhooks;
