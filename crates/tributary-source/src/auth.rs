//! Authenticating requests, and refreshing OAuth2 tokens exactly once.
//!
//! Static bearer tokens and HTTP Basic credentials are sent as they are. An
//! OAuth2 connection holds a refresh token that ROTATES: each refresh returns
//! a new one and kills the old, so two refreshes racing with the same token
//! break the connection. Hence:
//!
//! - one refresh at a time per connection (single flight): a task that finds
//!   the token expiring takes the refresh lock; tasks arriving meanwhile wait
//!   and then use the fresh token instead of refreshing again;
//! - a token is refreshed shortly before it expires, not after a 401;
//! - the new pair is persisted through the [`CredentialStore`] while the lock
//!   is still held, before any request uses it;
//! - a refresh token the server rejects is first compared with the persisted
//!   one: another process may have rotated it, in which case its pair is
//!   adopted; otherwise the connection needs re-authorisation.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tributary_core::{Clock, Credentials, OAuth2Credentials};

use crate::{Error, Result};

/// Where a connection's credentials are persisted, so that a rotated
/// refresh token survives the process. Implemented by whoever owns the
/// store (the source never touches it).
#[async_trait]
pub trait CredentialStore: Send + Sync + std::fmt::Debug {
    /// The credentials as persisted now (another process may have rotated
    /// them since they were loaded).
    async fn load(&self) -> Result<Option<Credentials>, String>;
    /// Persists refreshed credentials. Called while the refresh lock is
    /// held, before the new token is used.
    async fn save(&self, credentials: &Credentials) -> Result<(), String>;
}

/// How long before its expiry an access token is refreshed.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Attempts to persist a refreshed pair before giving up (it is kept in
/// memory either way: the old refresh token is already dead).
const SAVE_ATTEMPTS: u32 = 3;

/// The header value a request carries.
#[derive(Clone)]
pub(crate) enum Authorization {
    Bearer(String),
    Basic { user: String, password: String },
}

impl Authorization {
    pub(crate) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Authorization::Bearer(token) => request.bearer_auth(token),
            Authorization::Basic { user, password } => request.basic_auth(user, Some(password)),
        }
    }
}

#[derive(Debug)]
struct Current {
    credentials: Credentials,
    /// Bumped by every refresh, so a task that saw a 401 with an older
    /// token knows someone else already refreshed.
    generation: u64,
}

/// Authenticates the requests of one source.
#[derive(Debug)]
pub(crate) struct Authenticator {
    current: RwLock<Arc<Current>>,
    refresh_lock: tokio::sync::Mutex<()>,
    store: Option<Arc<dyn CredentialStore>>,
    /// Absolute token endpoint, for OAuth2.
    token_url: Option<String>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// How long before expiry to refresh: a minute, or a tenth of the
    /// token's lifetime when that is shorter (known after one refresh).
    margin: std::sync::Mutex<Duration>,
    /// Set when the token endpoint refused the refresh token for good: every
    /// later request fails at once instead of posting the dead token again.
    revoked: std::sync::Mutex<Option<String>>,
}

impl Authenticator {
    pub(crate) fn new(
        credentials: Credentials,
        store: Option<Arc<dyn CredentialStore>>,
        token_url: Option<String>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            current: RwLock::new(Arc::new(Current {
                credentials,
                generation: 0,
            })),
            refresh_lock: tokio::sync::Mutex::new(()),
            store,
            token_url,
            clock,
            http,
            margin: std::sync::Mutex::new(REFRESH_MARGIN),
            revoked: std::sync::Mutex::new(None),
        }
    }

    /// Whether refreshed credentials are persisted (they are a
    /// connection's stored ones).
    pub(crate) fn persists(&self) -> bool {
        self.store.is_some()
    }

    fn revoked(&self) -> Result<()> {
        match &*self
            .revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            Some(detail) => Err(Error::Auth {
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    fn margin(&self) -> Duration {
        *self
            .margin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, credentials: Credentials) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let generation = current.generation + 1;
        *current = Arc::new(Current {
            credentials,
            generation,
        });
    }

    /// The credentials now held (refreshed ones included).
    pub(crate) fn credentials(&self) -> Credentials {
        self.current().credentials.clone()
    }

    /// Whether a 401 can be cured by refreshing.
    pub(crate) fn can_refresh(&self) -> bool {
        matches!(self.current().credentials, Credentials::OAuth2(_))
    }

    /// The authorization for the next request and the generation it belongs
    /// to; refreshes an OAuth2 token that is missing or about to expire.
    pub(crate) async fn authorization(&self) -> Result<(Authorization, u64)> {
        self.revoked()?;
        let current = self.current();
        match &current.credentials {
            Credentials::Bearer { token } => {
                Ok((Authorization::Bearer(token.clone()), current.generation))
            }
            Credentials::Basic { user, password } => Ok((
                Authorization::Basic {
                    user: user.clone(),
                    password: password.clone(),
                },
                current.generation,
            )),
            Credentials::OAuth2(oauth) => {
                if let Some(token) = self.usable_token(oauth) {
                    return Ok((Authorization::Bearer(token), current.generation));
                }
                self.refresh(current.generation).await?;
                let current = self.current();
                match &current.credentials {
                    Credentials::OAuth2(OAuth2Credentials {
                        access_token: Some(token),
                        ..
                    }) => Ok((Authorization::Bearer(token.clone()), current.generation)),
                    _ => Err(Error::Auth {
                        detail: "the token endpoint issued no access token".into(),
                    }),
                }
            }
        }
    }

    fn usable_token(&self, oauth: &OAuth2Credentials) -> Option<String> {
        let token = oauth.access_token.as_ref()?;
        match oauth.expires_at {
            Some(expires_at) => {
                let left = (expires_at - self.clock.now()).to_std().unwrap_or_default();
                (left > self.margin()).then(|| token.clone())
            }
            None => Some(token.clone()),
        }
    }

    /// Refreshes the OAuth2 token unless someone did since `seen` (single
    /// flight). A no-op for static credentials.
    pub(crate) async fn refresh(&self, seen: u64) -> Result<()> {
        let _guard = self.refresh_lock.lock().await;
        self.revoked()?;
        let current = self.current();
        if current.generation != seen {
            return Ok(()); // refreshed while we waited
        }
        let Credentials::OAuth2(ours) = &current.credentials else {
            return Ok(());
        };
        // Another process may have rotated the pair already: then its
        // refresh token is the live one (ours is dead).
        let mut oauth = ours.clone();
        if let Some(adopted) = self.adopt_persisted(&oauth).await {
            let usable = self.usable_token(&adopted).is_some();
            self.replace(Credentials::OAuth2(adopted.clone()));
            if usable {
                return Ok(());
            }
            oauth = adopted;
        }
        let oauth = &oauth;
        match self.request_refresh(oauth).await {
            Ok(fresh) => {
                self.persist(&Credentials::OAuth2(fresh.clone())).await;
                self.replace(Credentials::OAuth2(fresh));
                tracing::info!("oauth2 access token refreshed");
                Ok(())
            }
            Err(error @ Error::Auth { .. }) => {
                // Rejected: maybe another process won the race and rotated
                // the token; its pair is then ours too.
                if let Some(adopted) = self.adopt_persisted(oauth).await {
                    self.replace(Credentials::OAuth2(adopted));
                    return Ok(());
                }
                if let Error::Auth { detail } = &error {
                    *self
                        .revoked
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(detail.clone());
                }
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The persisted pair, if it differs from `ours` (rotated elsewhere).
    async fn adopt_persisted(&self, ours: &OAuth2Credentials) -> Option<OAuth2Credentials> {
        let store = self.store.as_ref()?;
        match store.load().await {
            Ok(Some(Credentials::OAuth2(persisted)))
                if persisted.refresh_token != ours.refresh_token =>
            {
                tracing::info!("adopting oauth2 tokens rotated by another process");
                Some(persisted)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "could not reload persisted credentials");
                None
            }
        }
    }

    async fn persist(&self, credentials: &Credentials) {
        let Some(store) = &self.store else { return };
        for attempt in 1..=SAVE_ATTEMPTS {
            match store.save(credentials).await {
                Ok(()) => return,
                Err(error) if attempt < SAVE_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "saving refreshed credentials failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(error) => tracing::error!(
                    %error,
                    "refreshed credentials could not be saved; this process keeps them, \
                     but after a restart the connection will need re-authorisation"
                ),
            }
        }
    }

    async fn request_refresh(&self, oauth: &OAuth2Credentials) -> Result<OAuth2Credentials> {
        let url = oauth
            .token_url
            .clone()
            .or_else(|| self.token_url.clone())
            .ok_or_else(|| Error::Auth {
                detail:
                    "oauth2 credentials but no token URL: set `token_url` in the manifest's [auth]"
                        .into(),
            })?;
        // The client secret travels in the form body, never in the URL.
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", oauth.refresh_token.as_str()),
            ("client_id", oauth.client_id.as_str()),
            ("client_secret", oauth.client_secret.as_str()),
        ];
        let response = self
            .http
            .post(&url)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|source| Error::Transport {
                method: "POST",
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|source| Error::Transport {
            method: "POST",
            url: url.clone(),
            source,
        })?;
        let doc: Option<Value> = serde_json::from_str(&body).ok();
        if !status.is_success() {
            let code = doc
                .as_ref()
                .and_then(|d| d.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let description = doc
                .as_ref()
                .and_then(|d| d.get("error_description"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(match (status.as_u16(), code) {
                (_, "invalid_grant" | "invalid_client" | "unauthorized_client")
                | (400 | 401 | 403, _) => Error::Auth {
                    detail: format!(
                        "the token endpoint refused the refresh ({status}{}{}{}): re-authorise the connection",
                        if code.is_empty() { "" } else { ", " },
                        code,
                        if description.is_empty() {
                            String::new()
                        } else {
                            format!(": {description}")
                        },
                    ),
                },
                _ => Error::Status {
                    method: "POST",
                    url,
                    status: status.as_u16(),
                    detail: crate::error_detail(&body),
                    retry_after: None,
                },
            });
        }
        let token = |field: &str| {
            doc.as_ref()
                .and_then(|d| d.get(field))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let access_token = token("access_token")
            .ok_or_else(|| crate::malformed(&url, "the token response has no access_token"))?;
        let expires_in = doc
            .as_ref()
            .and_then(|d| d.get("expires_in"))
            .and_then(Value::as_i64);
        if let Some(secs) = expires_in {
            let lifetime = Duration::from_secs(secs.max(0) as u64);
            *self
                .margin
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                REFRESH_MARGIN.min(lifetime / 10);
        }
        let expires_at = expires_in.map(|secs| self.clock.now() + chrono::Duration::seconds(secs));
        Ok(OAuth2Credentials {
            access_token: Some(access_token),
            expires_at,
            // Servers that do not rotate keep the old refresh token valid.
            refresh_token: token("refresh_token").unwrap_or_else(|| oauth.refresh_token.clone()),
            ..oauth.clone()
        })
    }
}
