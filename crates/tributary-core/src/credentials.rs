//! What a connection authenticates with.
//!
//! [`Credentials`] are plain data (serde) so that they can be sealed at rest
//! by `tributary-secrets` and stored opaque; their `Debug` never shows a
//! secret, so they are safe in logs and error messages.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The credentials one connection holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credentials {
    /// A static `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// HTTP Basic (PCO personal access tokens: application id and secret).
    Basic {
        /// User (PCO: application id).
        user: String,
        /// Password (PCO: secret).
        password: String,
    },
    /// OAuth2 client credentials and a (rotating) refresh token.
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2Credentials),
}

/// An OAuth2 grant: the client, the refresh token and the current access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Credentials {
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// The refresh token; it rotates on every refresh.
    pub refresh_token: String,
    /// The current access token, if one has been issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// When the access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Overrides the manifest's token URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
}

impl Credentials {
    /// A static bearer token.
    pub fn bearer(token: impl Into<String>) -> Self {
        Credentials::Bearer {
            token: token.into(),
        }
    }

    /// The kind's name: `bearer`, `basic` or `oauth2`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Bearer { .. } => "bearer",
            Credentials::Basic { .. } => "basic",
            Credentials::OAuth2(_) => "oauth2",
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        match self {
            Credentials::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}:<redacted>)"),
            Credentials::OAuth2(oauth) => oauth.fmt(f),
        }
    }
}

impl std::fmt::Debug for OAuth2Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("token_url", &self.token_url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let all = [
            Credentials::bearer("s3cret"),
            Credentials::Basic {
                user: "app".into(),
                password: "s3cret".into(),
            },
            Credentials::OAuth2(OAuth2Credentials {
                client_id: "client".into(),
                client_secret: "s3cret".into(),
                refresh_token: "s3cret".into(),
                access_token: Some("s3cret".into()),
                expires_at: None,
                token_url: None,
            }),
        ];
        for credentials in all {
            let shown = format!("{credentials:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn round_trips_as_tagged_json() {
        let credentials = Credentials::OAuth2(OAuth2Credentials {
            client_id: "c".into(),
            client_secret: "s".into(),
            refresh_token: "r".into(),
            access_token: None,
            expires_at: None,
            token_url: None,
        });
        let json = serde_json::to_value(&credentials).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "oauth2", "client_id": "c", "client_secret": "s", "refresh_token": "r"})
        );
        assert_eq!(
            serde_json::from_value::<Credentials>(json).unwrap(),
            credentials
        );
        let bearer: Credentials = serde_json::from_str(r#"{"kind":"bearer","token":"t"}"#).unwrap();
        assert_eq!(bearer, Credentials::bearer("t"));
    }
}
