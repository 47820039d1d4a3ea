//! Integration tests of the PCO simulator: through the router with `tower::ServiceExt::oneshot`
//! and, in `server` and `faults`, through a real socket.

mod auth;
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
