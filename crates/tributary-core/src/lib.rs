//! The shared vocabulary of Tributary.
//!
//! Every other crate speaks in these types: a [`SourceRecord`] is what an
//! adapter yields for one source object, an [`EdgeRef`] is one relationship it
//! points along, a [`Cursor`] is where an entity's scan stands, and a
//! [`Clock`] is where time comes from. Nothing here performs I/O.

pub mod canonical;
pub mod clock;
pub mod credentials;
pub mod record;
pub mod text;
pub mod url;

pub use canonical::{Borrowed, CanonicalJson, canonical_json};
pub use clock::{Clock, ManualClock, SystemClock};
pub use credentials::{Credentials, OAuth2Credentials};
pub use record::{
    ChangeKind, Cursor, EdgeRef, PreparedRecord, QuarantinedRecord, RunKind, RunState,
    SourceRecord, content_hash,
};
pub use text::thousands;
pub use url::redact_url;

/// Timestamps everywhere in Tributary are UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
