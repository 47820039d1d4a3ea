//! Integration tests of the PCO simulator: through the router with `tower::ServiceExt::oneshot`
//! and, in `server`, through a real socket.

mod auth;
mod common;
mod determinism;
mod filters;
mod includes;
mod mutations;
mod nested;
mod paging;
mod server;
mod single;
