//! The connection lock: at most one process runs a connection's syncs.
//!
//! Two `sync`s of one connection at once would both resume the same run,
//! fetch every page twice and race each other's commits. So a process takes
//! the connection's lock before it starts (or resumes) a run and holds it
//! until the run has ended. The lock belongs to the operating system or to
//! the database server, never to a row: it is released when its holder
//! exits, however it exits (`kill -9` too), so the next process never waits
//! for a lease to expire.
//!
//! - SQLite: an exclusive `flock` on `DB.locks/connection-ID` beside the
//!   database file (taken by processes of one machine, which is where a
//!   SQLite file is written from). The holder writes who it is into the file.
//! - PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held
//!   by a connection of its own, whose `application_name` says who holds it;
//!   the server releases it when that session ends.

use std::any::Any;

/// The right to run one connection's syncs; released when dropped (or when
/// the process dies).
pub struct ConnectionLock {
    connection: String,
    /// Held, never read: in a mutex so that a lock can be shared by
    /// reference across tasks.
    _guard: std::sync::Mutex<Box<dyn Any + Send>>,
}

impl ConnectionLock {
    pub(crate) fn new(connection: &str, guard: impl Any + Send) -> Self {
        Self {
            connection: connection.to_owned(),
            _guard: std::sync::Mutex::new(Box::new(guard)),
        }
    }

    /// The name of the connection it locks.
    pub fn connection(&self) -> &str {
        &self.connection
    }
}

impl std::fmt::Debug for ConnectionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLock")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// The advisory-lock key space of connection locks on PostgreSQL (the first
/// of the two 32-bit keys; the second is [`key`] of the connection's name).
pub(crate) const PG_LOCK_CLASS: i32 = 0x5452_4942; // "TRIB"

/// A connection name's lock key: 32-bit FNV-1a, the same in every version
/// and on every platform (two names that share one merely exclude each
/// other).
pub(crate) fn key(connection: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in connection.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// The lock file name of a connection: its name where it is plain, and its
/// key, so that names differing only in the characters replaced differ.
pub(crate) fn file_name(connection: &str) -> String {
    let plain: String = connection
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{plain}-{:08x}.lock", key(connection) as u32)
}

/// The message of a lock someone else holds.
pub(crate) fn busy(connection: &str, holder: Option<&str>) -> crate::Error {
    let holder = holder.map(str::trim).filter(|h| !h.is_empty()).map_or_else(
        || "another process".to_owned(),
        |h| format!("another process ({h})"),
    );
    crate::Error::Busy(format!(
        "connection `{connection}` is busy: {holder} is running its sync; \
         try again when it has finished"
    ))
}
