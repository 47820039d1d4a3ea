//! Secrets at rest.
//!
//! A connection's [`Credentials`] are stored in the database only as a blob
//! sealed with AES-256-GCM under a [`SecretKey`] that lives outside the
//! database: in the environment (`TRIBUTARY_SECRET_KEY`) or in a file only
//! its owner can read (`TRIBUTARY_SECRET_KEY_FILE`).
//!
//! A sealed blob is `version (1 byte) ‖ nonce (12 random bytes) ‖
//! ciphertext ‖ tag (16 bytes)`. The version byte and the caller's
//! associated data (for credentials: the connection's name) are
//! authenticated, so a blob opens only under the key and for the connection
//! it was sealed for: a blob copied to another connection's row fails to
//! open exactly as a tampered one does.
//!
//! Architecture invariant: this is the only crate that sees plaintext
//! secrets at rest. The store keeps opaque bytes; the key never touches the
//! database. No error message here contains key material or plaintext.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, Key, KeyInit, Nonce, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tributary_core::Credentials;
use zeroize::Zeroize as _;

pub use zeroize::Zeroizing;

/// The environment variable holding the key itself, base64.
pub const KEY_ENV: &str = "TRIBUTARY_SECRET_KEY";
/// The environment variable holding the path of a file that holds the key.
pub const KEY_FILE_ENV: &str = "TRIBUTARY_SECRET_KEY_FILE";

/// The format version written in the first byte of every sealed blob.
pub const SEALED_VERSION: u8 = 1;
/// Key length in bytes (AES-256).
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Errors of loading keys and opening sealed data. None carries secret
/// material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `TRIBUTARY_SECRET_KEY` nor `TRIBUTARY_SECRET_KEY_FILE` is set.
    #[error(
        "no secret key configured: set TRIBUTARY_SECRET_KEY to a base64-encoded 32-byte key, \
         or TRIBUTARY_SECRET_KEY_FILE to the path of a file (chmod 600) that holds one; \
         generate a key with `tributary connections keygen`"
    )]
    NoKey,
    /// Both ways of giving the key are set, so which one wins would be a guess.
    #[error(
        "both TRIBUTARY_SECRET_KEY and TRIBUTARY_SECRET_KEY_FILE are set: keep only one of them"
    )]
    AmbiguousKey,
    /// The key is not base64 of exactly 32 bytes.
    #[error("bad secret key from {origin}: {problem}")]
    BadKey {
        /// Where the key came from (a variable name or a file path).
        origin: String,
        /// What is wrong with it (never the key itself).
        problem: String,
    },
    /// The key file cannot be read.
    #[error("cannot read the secret key file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable or writable by other users.
    #[error(
        "the secret key file {} is accessible by group or others (mode {mode:o}): \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Authentication failed: another key, altered bytes, or a blob sealed
    /// for different associated data (another connection).
    #[error(
        "cannot open sealed data: wrong secret key, or the data was altered or belongs to \
         another connection"
    )]
    Open,
    /// The blob is shorter than a version, a nonce and a tag.
    #[error("sealed data is truncated ({0} bytes)")]
    Truncated(usize),
    /// The blob was written by a format this build does not read.
    #[error("sealed data has format version {0}; this build reads version {SEALED_VERSION}")]
    UnsupportedVersion(u8),
    /// The plaintext opened but is not valid credentials.
    #[error("sealed credentials are unreadable: {0}")]
    BadCredentials(String),
}

impl Error {
    /// Whether trying again may succeed: never — every case needs a person
    /// to fix the key, its file or the stored data.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A 32-byte AES-256-GCM key. Its bytes are wiped on drop and never
/// printed: `Debug` shows only `SecretKey(<redacted>)`.
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A fresh random key from the operating system's generator.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        let mut key = Key::<Aes256Gcm>::generate();
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        key.as_mut_slice().zeroize();
        Self { bytes }
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Parses a base64 (standard alphabet, padded) key; surrounding
    /// whitespace is ignored. `origin` names where it came from, for errors.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self> {
        let bad = |problem: String| Error::BadKey {
            origin: origin.to_owned(),
            problem,
        };
        if text.trim().is_empty() {
            return Err(bad(
                "it is empty (generate a key with `tributary connections keygen`)".into(),
            ));
        }
        // The decoder's own error names the offending byte, which is part of
        // the key: say only that it is not base64.
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| {
            bad("not valid base64 (generate a key with `tributary connections keygen`)".into())
        })?);
        if decoded.len() != KEY_LEN {
            return Err(bad(format!(
                "decodes to {} bytes, expected {KEY_LEN}",
                decoded.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(Self { bytes })
    }

    /// The key as base64 (what `from_base64` reads).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.bytes.as_slice()))
    }

    /// Reads a key file: base64 of 32 bytes, surrounding whitespace ignored.
    /// On unix the file must not be accessible by group or others.
    pub fn from_file(path: &Path) -> Result<Self> {
        let io = |source| Error::KeyFile {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        check_permissions(path, &meta)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Loads the key the environment names: `TRIBUTARY_SECRET_KEY` (the key
    /// itself) or `TRIBUTARY_SECRET_KEY_FILE` (a file holding it).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// [`Self::from_env`] with the variables read through `var` (for tests
    /// and embedders that keep their configuration elsewhere).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let nonempty = |name| var(name).filter(|v: &OsString| !v.is_empty());
        match (nonempty(KEY_ENV), nonempty(KEY_FILE_ENV)) {
            (Some(_), Some(_)) => Err(Error::AmbiguousKey),
            (Some(key), None) => {
                let key = Zeroizing::new(key.into_string().map_err(|_| Error::BadKey {
                    origin: KEY_ENV.into(),
                    problem: "not valid UTF-8".into(),
                })?);
                Self::from_base64(&key, KEY_ENV)
            }
            (None, Some(path)) => Self::from_file(Path::new(&path)),
            (None, None) => Err(Error::NoKey),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.bytes.as_slice()).expect("the key is 32 bytes")
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad`.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = Nonce::<Aes256Gcm>::generate();
        let aad = associated_data(SEALED_VERSION, aad);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Checks and decrypts what [`Self::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(Error::Truncated(0));
        };
        if version != SEALED_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Truncated(sealed.len()));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = <&Nonce<Aes256Gcm>>::try_from(nonce).expect("the nonce is 12 bytes");
        let aad = associated_data(version, aad);
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Open)
    }
}

/// What is authenticated besides the ciphertext: the format version and the
/// caller's data.
fn associated_data(version: u8, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(version);
    out.extend_from_slice(aad);
    out
}

/// The associated data that binds credentials to their connection.
fn credentials_aad(connection: &str) -> Vec<u8> {
    format!("tributary/credentials/{connection}").into_bytes()
}

/// Seals a connection's credentials (as their JSON) for storage, bound to
/// the connection's name.
pub fn seal_credentials(key: &SecretKey, credentials: &Credentials, connection: &str) -> Vec<u8> {
    let json =
        Zeroizing::new(serde_json::to_vec(credentials).expect("credentials serialise to JSON"));
    key.seal(&json, &credentials_aad(connection))
}

/// Opens what [`seal_credentials`] sealed for the same connection name.
pub fn open_credentials(key: &SecretKey, sealed: &[u8], connection: &str) -> Result<Credentials> {
    let json = key.open(sealed, &credentials_aad(connection))?;
    // serde_json's message may quote the offending value, which could be a
    // secret: report only where and what kind of problem it is.
    serde_json::from_slice(&json).map_err(|e| {
        Error::BadCredentials(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// The associated data that binds a webhook secret to its connection.
fn webhook_secret_aad(connection: &str) -> Vec<u8> {
    format!("tributary/webhook-secret/{connection}").into_bytes()
}

/// Seals a connection's webhook secret (as the sender shows it) for
/// storage, bound to the connection's name.
pub fn seal_webhook_secret(key: &SecretKey, secret: &str, connection: &str) -> Vec<u8> {
    key.seal(secret.as_bytes(), &webhook_secret_aad(connection))
}

/// Opens what [`seal_webhook_secret`] sealed for the same connection name.
pub fn open_webhook_secret(
    key: &SecretKey,
    sealed: &[u8],
    connection: &str,
) -> Result<Zeroizing<String>> {
    let bytes = key.open(sealed, &webhook_secret_aad(connection))?;
    std::str::from_utf8(&bytes)
        .map(|text| Zeroizing::new(text.to_owned()))
        .map_err(|_| Error::BadCredentials("a webhook secret that is not UTF-8".to_owned()))
}

/// The associated data that binds a subscription's signing secret (webhooks
/// out) to its connection — and to that purpose: a blob sealed as one
/// kind never opens as another.
fn subscription_secret_aad(connection: &str) -> Vec<u8> {
    format!("tributary/subscription-secret/{connection}").into_bytes()
}

/// A new signing secret for webhooks out, as receivers are shown it:
/// `whsec_` and the base64 of 32 random bytes from the operating system's
/// generator (the Standard Webhooks form).
///
/// # Panics
///
/// If the operating system's random number generator fails.
pub fn generate_signing_secret() -> Zeroizing<String> {
    let bytes = SecretKey::generate();
    Zeroizing::new(format!("whsec_{}", bytes.to_base64().as_str()))
}

/// Seals a subscription's signing secret (`whsec_...`) for storage, bound
/// to its connection's name.
pub fn seal_subscription_secret(key: &SecretKey, secret: &str, connection: &str) -> Vec<u8> {
    key.seal(secret.as_bytes(), &subscription_secret_aad(connection))
}

/// Opens what [`seal_subscription_secret`] sealed for the same connection
/// name.
pub fn open_subscription_secret(
    key: &SecretKey,
    sealed: &[u8],
    connection: &str,
) -> Result<Zeroizing<String>> {
    let bytes = key.open(sealed, &subscription_secret_aad(connection))?;
    std::str::from_utf8(&bytes)
        .map(|text| Zeroizing::new(text.to_owned()))
        .map_err(|_| Error::BadCredentials("a subscription secret that is not UTF-8".to_owned()))
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// The prefix of every API token.
pub const API_TOKEN_PREFIX: &str = "trb_";

/// A new API token — `trb_` and 32 random bytes in unpadded base64url —
/// and its SHA-256 in hex, the only form of it that is stored.
///
/// # Panics
/// If the operating system's random number generator fails.
pub fn new_api_token() -> (Zeroizing<String>, String) {
    use base64::Engine as _;
    let key = SecretKey::generate();
    let token = Zeroizing::new(format!(
        "{API_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.bytes.as_slice())
    ));
    let hash = api_token_hash(&token);
    (token, hash)
}

/// The SHA-256 (hex) of an API token, as stored and looked up.
pub fn api_token_hash(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use tributary_core::OAuth2Credentials;

    use super::*;

    fn oauth() -> Credentials {
        Credentials::OAuth2(OAuth2Credentials {
            client_id: "client".into(),
            client_secret: "client-s3cret".into(),
            refresh_token: "refresh-s3cret".into(),
            access_token: Some("access-s3cret".into()),
            expires_at: None,
            token_url: None,
        })
    }

    #[test]
    fn seal_and_open_round_trip() {
        let key = SecretKey::generate();
        let sealed = key.seal(b"hello", b"aad");
        assert_eq!(sealed[0], SEALED_VERSION);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(key.open(&sealed, b"aad").unwrap().as_slice(), b"hello");
        // A fresh nonce every time.
        assert_ne!(key.seal(b"hello", b"aad"), sealed);

        let sealed = seal_credentials(&key, &oauth(), "main");
        assert_eq!(open_credentials(&key, &sealed, "main").unwrap(), oauth());
        let needle = b"s3cret";
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle),
            "no plaintext in the blob"
        );
    }

    #[test]
    fn webhook_secrets_are_sealed_to_their_connection() {
        let key = SecretKey::generate();
        let sealed = seal_webhook_secret(&key, "whsec_s3cretvalue", "main");
        assert_eq!(
            open_webhook_secret(&key, &sealed, "main").unwrap().as_str(),
            "whsec_s3cretvalue"
        );
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "no plaintext");
        // Not under another connection's name, nor as credentials.
        assert!(open_webhook_secret(&key, &sealed, "other").is_err());
        assert!(open_credentials(&key, &sealed, "main").is_err());
    }

    #[test]
    fn subscription_secrets_are_fresh_and_sealed_for_their_purpose() {
        let key = SecretKey::generate();
        let secret = generate_signing_secret();
        assert!(secret.starts_with("whsec_"));
        let decoded = BASE64.decode(&secret["whsec_".len()..]).unwrap();
        assert_eq!(decoded.len(), 32);
        assert_ne!(generate_signing_secret().as_str(), secret.as_str());
        let sealed = seal_subscription_secret(&key, &secret, "main");
        assert_eq!(
            open_subscription_secret(&key, &sealed, "main")
                .unwrap()
                .as_str(),
            secret.as_str()
        );
        // Not for another connection, nor as an inbound webhook secret.
        assert!(open_subscription_secret(&key, &sealed, "other").is_err());
        assert!(open_webhook_secret(&key, &sealed, "main").is_err());
        let inbound = seal_webhook_secret(&key, &secret, "main");
        assert!(open_subscription_secret(&key, &inbound, "main").is_err());
    }

    #[test]
    fn the_wrong_key_fails() {
        let sealed = seal_credentials(&SecretKey::generate(), &oauth(), "main");
        let error = open_credentials(&SecretKey::generate(), &sealed, "main").unwrap_err();
        assert!(matches!(error, Error::Open), "{error}");
        assert!(error.to_string().contains("wrong secret key"), "{error}");
    }

    #[test]
    fn another_connection_cannot_open_the_blob() {
        let key = SecretKey::generate();
        let sealed = seal_credentials(&key, &oauth(), "main");
        assert!(matches!(
            open_credentials(&key, &sealed, "other"),
            Err(Error::Open)
        ));
        assert!(matches!(key.open(&sealed, b""), Err(Error::Open)));
    }

    #[test]
    fn any_altered_byte_fails() {
        let key = SecretKey::generate();
        let sealed = key.seal(b"plaintext", b"aad");
        for i in 1..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert!(
                matches!(key.open(&altered, b"aad"), Err(Error::Open)),
                "byte {i}"
            );
        }
        let mut versioned = sealed.clone();
        versioned[0] = 2;
        assert!(matches!(
            key.open(&versioned, b"aad"),
            Err(Error::UnsupportedVersion(2))
        ));
        assert!(matches!(
            key.open(&sealed[..20], b"aad"),
            Err(Error::Truncated(20))
        ));
        assert!(matches!(key.open(&[], b"aad"), Err(Error::Truncated(0))));
    }

    #[test]
    fn debug_hides_the_key() {
        let key = SecretKey::from_bytes([7; KEY_LEN]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "SecretKey(<redacted>)");
        assert!(!shown.contains(key.to_base64().as_str()));
    }

    #[test]
    fn base64_keys_parse_and_errors_name_no_key_bytes() {
        let key = SecretKey::generate();
        let text = format!("  {}\n", key.to_base64().as_str());
        let parsed = SecretKey::from_base64(&text, "test").unwrap();
        assert_eq!(parsed.to_base64(), key.to_base64());

        let short = BASE64.encode([1u8; 16]);
        let error = SecretKey::from_base64(&short, KEY_ENV)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("TRIBUTARY_SECRET_KEY") && error.contains("16 bytes, expected 32"),
            "{error}"
        );
        let error = SecretKey::from_base64("not*base64!", KEY_ENV)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not valid base64"), "{error}");
        assert!(!error.contains("not*base64"), "{error}");
    }

    #[test]
    fn the_environment_names_the_key() {
        let key = SecretKey::generate();
        let b64 = key.to_base64();
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let loaded = SecretKey::from_vars(vars(vec![(KEY_ENV, b64.to_string())])).unwrap();
        assert_eq!(loaded.to_base64(), b64);

        let error = SecretKey::from_vars(vars(vec![])).unwrap_err();
        assert!(matches!(error, Error::NoKey));
        let message = error.to_string();
        assert!(
            message.contains("TRIBUTARY_SECRET_KEY")
                && message.contains("TRIBUTARY_SECRET_KEY_FILE")
                && message.contains("tributary connections keygen"),
            "{message}"
        );
        // Empty counts as unset.
        assert!(matches!(
            SecretKey::from_vars(vars(vec![(KEY_ENV, String::new())])),
            Err(Error::NoKey)
        ));
        assert!(matches!(
            SecretKey::from_vars(vars(vec![
                (KEY_ENV, b64.to_string()),
                (KEY_FILE_ENV, "/x".into())
            ])),
            Err(Error::AmbiguousKey)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = SecretKey::generate();
        std::fs::write(&path, format!("{}\n", key.to_base64().as_str())).unwrap();

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = SecretKey::from_file(&path).unwrap_err();
        assert!(matches!(
            error,
            Error::KeyFilePermissions { mode: 0o644, .. }
        ));
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(SecretKey::from_file(&path).is_err());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = SecretKey::from_file(&path).unwrap();
        assert_eq!(loaded.to_base64(), key.to_base64());
        let via_env = SecretKey::from_vars(|name| {
            (name == KEY_FILE_ENV).then(|| path.clone().into_os_string())
        })
        .unwrap();
        assert_eq!(via_env.to_base64(), key.to_base64());

        let missing = SecretKey::from_file(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, Error::KeyFile { .. }), "{missing}");
    }

    #[test]
    fn api_tokens_are_random_and_only_their_hash_is_kept() {
        let (a, hash_a) = new_api_token();
        let (b, hash_b) = new_api_token();
        assert!(
            a.starts_with(API_TOKEN_PREFIX) && a.len() == 4 + 43,
            "{}",
            a.len()
        );
        assert_ne!(*a, *b);
        assert_ne!(hash_a, hash_b);
        assert_eq!(hash_a, api_token_hash(&a));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a[4..]));
    }
}
