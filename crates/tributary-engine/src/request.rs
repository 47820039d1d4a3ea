//! One entry point for a sync of any kind of a connection: what `tributary
//! sync`, the scheduler and webhook processing all go through.
//!
//! [`Engine::run_request`] checks what cannot work before anything is
//! opened or sent, takes the connection's lock, finds its credentials (the
//! ones given, or the connection's sealed ones — refusing a connection that
//! needs re-authorisation), builds the source, records the connection and
//! runs the sync.

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{Credentials, RunKind};
use tributary_manifest::Manifest;
use tributary_secrets::SecretKey;
use tributary_source::{
    CredentialStore, LocalRateLimiter, RateLimiter, Source, SourceOptions, Unlimited,
};
use tributary_store::{ConnectionStatus, NewConnection, RateBudget};

use crate::{Engine, Progress, RunReport, SealedCredentialStore};

/// Why a requested run could not start (a run that started and failed is
/// a [`RunReport`] instead).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The engine refused it (another process holds the connection, a
    /// store failure, an unknown entity).
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// The source cannot be built as configured (nothing was sent).
    #[error(transparent)]
    Source(#[from] tributary_source::Error),
    /// The connection has no usable credentials; the message says how to
    /// give some.
    #[error("{0}")]
    Credentials(String),
    /// The connection's sealed credentials cannot be opened.
    #[error(transparent)]
    Sealed(#[from] crate::CredentialsError),
    /// The request does not fit the stored connection (another adapter).
    #[error("{0}")]
    Mismatch(String),
}

impl From<tributary_store::Error> for RequestError {
    fn from(error: tributary_store::Error) -> Self {
        Self::Engine(error.into())
    }
}

/// A sync to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The connection's name (created on first use).
    pub connection: String,
    /// Full or delta.
    pub kind: RunKind,
    /// The adapter.
    pub manifest: Arc<Manifest>,
    /// The API's base URL; `None`: the connection's, else the manifest's.
    pub base_url: Option<String>,
    /// Credentials for this run only; `None`: the connection's sealed ones,
    /// opened with [`RunRequest::secret_key`].
    pub credentials: Option<Credentials>,
    /// The key that opens stored credentials, or why there is none (said
    /// only if stored credentials are needed).
    pub secret_key: Result<Arc<SecretKey>, String>,
    /// Records per request; `None`: the manifest's.
    pub page_size: Option<u32>,
    /// The request budget; `None`: the connection's own (see
    /// `Store::set_rate_limit`), else the manifest's.
    pub rate_limiter: Option<Arc<dyn RateLimiter>>,
    /// Time one request may take.
    pub request_timeout: Duration,
    /// Only these entities; `None`: all.
    pub entities: Option<Vec<String>>,
    /// Names the run: a second request with the same key returns the
    /// run the first one made (see [`Engine::sync_keyed`]).
    pub idempotency_key: Option<String>,
}

impl RunRequest {
    /// A request with the defaults: the connection's stored credentials,
    /// the manifest's page size and budget, every entity.
    pub fn new(connection: &str, kind: RunKind, manifest: Arc<Manifest>) -> Self {
        Self {
            connection: connection.to_owned(),
            kind,
            manifest,
            base_url: None,
            credentials: None,
            secret_key: Err("no secret key was given".into()),
            page_size: None,
            rate_limiter: None,
            request_timeout: Duration::from_secs(30),
            entities: None,
            idempotency_key: None,
        }
    }
}

impl Engine {
    /// Runs (or resumes) the sync `request` asks for, holding the
    /// connection's lock from before anything of it changes until the run
    /// has ended.
    pub async fn run_request(
        &self,
        request: RunRequest,
        progress: Arc<dyn Progress>,
    ) -> Result<RunReport, RequestError> {
        // What cannot work is said before anything is opened or sent.
        tributary_source::check_page_size(&request.manifest, request.page_size)?;
        if let Some(url) = &request.base_url {
            tributary_source::check_base_url(url)?;
        }
        // The lock first: nothing of the connection changes while another
        // process syncs it.
        let lock = self.lock(&request.connection).await?;
        let existing = self.store.connection(&request.connection).await?;
        if let Some(connection) = &existing
            && connection.adapter != request.manifest.name
        {
            return Err(RequestError::Mismatch(format!(
                "connection `{}` uses adapter `{}`, not `{}`: run it with its own adapter, or \
                 name another connection",
                connection.name, connection.adapter, request.manifest.name
            )));
        }
        // A stored connection keeps its base URL unless told otherwise.
        let base_url = request
            .base_url
            .or_else(|| existing.as_ref().map(|c| c.base_url.clone()));
        let (credentials, credential_store) = match request.credentials {
            Some(credentials) => (credentials, None),
            None => {
                let name = &request.connection;
                let connection = existing.as_ref().ok_or_else(|| {
                    RequestError::Credentials(format!(
                        "no credentials for connection `{name}`: set TRIBUTARY_TOKEN, or store them with \
                         `tributary connections add {name} --auth ...`"
                    ))
                })?;
                if connection.status == ConnectionStatus::NeedsReauth {
                    return Err(RequestError::Credentials(format!(
                        "connection `{name}` needs re-authorisation ({}): store new credentials with \
                         `tributary connections add {name} --auth ...`",
                        connection
                            .status_reason
                            .as_deref()
                            .unwrap_or("no reason recorded"),
                    )));
                }
                let key = request.secret_key.clone().map_err(|why| {
                    RequestError::Credentials(format!(
                        "stored credentials are sealed: the secret key is needed to open them: {why}"
                    ))
                })?;
                let sealed = SealedCredentialStore::new(
                    self.store.clone(),
                    key,
                    self.clock.clone(),
                    connection,
                );
                let credentials = sealed.read().await?.ok_or_else(|| {
                    RequestError::Credentials(format!(
                        "connection `{name}` has no stored credentials: set TRIBUTARY_TOKEN, or store \
                         them with `tributary connections add {name} --auth ...`"
                    ))
                })?;
                let sealed: Arc<dyn CredentialStore> = Arc::new(sealed);
                (credentials, Some(sealed))
            }
        };
        let source = Source::new(
            request.manifest.clone(),
            credentials,
            SourceOptions {
                base_url,
                page_size: request.page_size,
                timeout: request.request_timeout,
                // The request's, else the connection's own, else the
                // manifest's.
                rate_limiter: request.rate_limiter.or_else(|| {
                    existing
                        .as_ref()
                        .and_then(|c| c.rate_limit)
                        .map(budget_limiter)
                }),
                clock: self.clock.clone(),
                credential_store,
            },
        )?;
        let connection = self
            .store
            .ensure_connection(
                NewConnection {
                    name: &request.connection,
                    adapter: &request.manifest.name,
                    base_url: source.base_url(),
                },
                self.clock.now(),
            )
            .await?;
        let report = self
            .sync_keyed(
                &lock,
                &connection,
                &source,
                request.kind,
                request.entities.as_deref(),
                request.idempotency_key.as_deref(),
                progress,
            )
            .await?;
        Ok(report)
    }
}

/// The limiter of a connection's own budget.
fn budget_limiter(budget: RateBudget) -> Arc<dyn RateLimiter> {
    match budget.requests {
        0 => Arc::new(Unlimited::default()),
        n => Arc::new(LocalRateLimiter::new(n, budget.period)),
    }
}
