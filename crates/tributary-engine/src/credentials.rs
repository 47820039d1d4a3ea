//! A connection's credentials, sealed in the store.
//!
//! [`SealedCredentialStore`] is how the engine lets a [`Source`] persist a
//! rotated OAuth2 pair without the source touching the store: it seals the
//! credentials with the operator's [`SecretKey`] (which never enters the
//! database) and writes them with a compare-and-swap on their version.
//!
//! [`Source`]: tributary_source::Source

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tributary_core::{Clock, Credentials};
use tributary_secrets::{SecretKey, open_credentials, seal_credentials};
use tributary_source::CredentialStore;
use tributary_store::{Connection, Store};

/// Loads and saves one connection's sealed credentials.
#[derive(Debug)]
pub struct SealedCredentialStore {
    store: Arc<dyn Store>,
    key: Arc<SecretKey>,
    clock: Arc<dyn Clock>,
    connection_id: i64,
    connection: String,
    /// The version last read or written, for the compare-and-swap.
    version: Mutex<i64>,
}

/// Why stored credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tributary_store::Error),
    /// The sealed blob cannot be opened with this key.
    #[error("cannot open the credentials of connection `{connection}`: {source}")]
    Sealed {
        /// The connection.
        connection: String,
        /// Why.
        #[source]
        source: tributary_secrets::Error,
    },
}

impl SealedCredentialStore {
    /// The credentials store of `connection`.
    pub fn new(
        store: Arc<dyn Store>,
        key: Arc<SecretKey>,
        clock: Arc<dyn Clock>,
        connection: &Connection,
    ) -> Self {
        Self {
            store,
            key,
            clock,
            connection_id: connection.id,
            connection: connection.name.clone(),
            version: Mutex::new(0),
        }
    }

    fn set_version(&self, version: i64) {
        *self
            .version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = version;
    }

    fn version(&self) -> i64 {
        *self
            .version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stored credentials, opened; `None` if the connection has none.
    pub async fn read(&self) -> Result<Option<Credentials>, CredentialsError> {
        let Some(sealed) = self.store.credentials(self.connection_id).await? else {
            return Ok(None);
        };
        let credentials =
            open_credentials(&self.key, &sealed.sealed, &self.connection).map_err(|source| {
                CredentialsError::Sealed {
                    connection: self.connection.clone(),
                    source,
                }
            })?;
        self.set_version(sealed.version);
        Ok(Some(credentials))
    }
}

#[async_trait]
impl CredentialStore for SealedCredentialStore {
    async fn load(&self) -> Result<Option<Credentials>, String> {
        self.read().await.map_err(|e| e.to_string())
    }

    async fn save(&self, credentials: &Credentials) -> Result<(), String> {
        let sealed = seal_credentials(&self.key, credentials, &self.connection);
        // The pair being saved was just issued, so it is the newest there
        // is: when someone else wrote in between, write over them.
        for _ in 0..5 {
            match self
                .store
                .set_credentials(
                    self.connection_id,
                    credentials.kind(),
                    &sealed,
                    Some(self.version()),
                    self.clock.now(),
                )
                .await
            {
                Ok(version) => {
                    self.set_version(version);
                    return Ok(());
                }
                Err(tributary_store::Error::Conflict(_)) => {
                    let current = self
                        .store
                        .credentials(self.connection_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.set_version(current.map_or(0, |c| c.version));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        Err("the stored credentials keep changing under this process".into())
    }
}
