//! The spool: fetched pages kept on disk until they are committed.
//!
//! The engine fetches ahead of its commits (the next pages of an entity are
//! fetched while earlier ones wait for the committer). Without a spool, a
//! crash loses every fetched page that had not committed yet, and the
//! resumed run asks the API for them again — requests that, under a rate
//! limit, cost real time. With a spool, each fetched page's response bodies
//! are appended to the entity's log (in the operating system's cache: no
//! `fsync`) before the page goes on; a resumed run finds the pages a killed
//! process fetched and reads them from the spool instead of the API. So a
//! `kill -9` costs at most the requests that were in flight.
//!
//! An entity's log is a series of segment files of [`SEGMENT_PAGES`] pages
//! each; a segment is deleted once every page in it has committed, so the
//! spool holds little more than the pages in flight. Each page is one
//! append — a header line (entity, key, time, body lengths) and the bodies.
//!
//! The spool is a cache, never the truth: a page that is missing, torn (a
//! machine crash before the cache reached the disk), from another run or
//! older than [`MAX_AGE`] is ignored and fetched again. Failing to write one
//! only costs that page's protection, never the sync.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tributary_core::Clock;

/// Spooled pages older than this are fetched again: a full sync resumed
/// days later should not apply days-old pages.
pub const MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Pages per segment file.
pub const SEGMENT_PAGES: usize = 32;

/// One run's spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// When pages are fetched, and how old a spooled one is.
    clock: Arc<dyn Clock>,
    entities: Mutex<HashMap<String, EntityLog>>,
}

/// The log of one entity.
#[derive(Debug, Default)]
struct EntityLog {
    /// Whether the segments an earlier process left have been read.
    loaded: bool,
    /// Pages an earlier process spooled and nobody took yet, by key, with
    /// the segment file they came from.
    found: HashMap<String, (Vec<Vec<u8>>, PathBuf, u64)>,
    /// How many of `found`'s pages each old segment still holds.
    found_left: HashMap<PathBuf, usize>,
    /// The segment being appended to.
    current: Option<(u64, File)>,
    /// Segments written by this process: pages written and committed.
    segments: HashMap<u64, Segment>,
    /// Which segment holds each key written by this process.
    key_segment: HashMap<String, u64>,
    next_seq: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    written: usize,
    committed: usize,
}

impl Spool {
    /// The spool of run `run_id` of connection `connection_id` under
    /// `root`, created if missing. Spools of the connection's other runs
    /// (finished or abandoned) are removed. `identity` names the run beyond
    /// its ids, which start at 1 in every database (its start time, the
    /// connection's name and base URL, the page size): a spool left by a
    /// run with the same ids in another database, or for another account,
    /// does not match and is discarded, never replayed.
    pub fn open(
        root: &Path,
        connection_id: i64,
        run_id: i64,
        identity: &str,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Self> {
        let connection_dir = root.join(format!("connection-{connection_id}"));
        create_private_dir(&connection_dir)?;
        let name = format!("run-{run_id}");
        for entry in std::fs::read_dir(&connection_dir)?.flatten() {
            if entry.file_name() != name.as_str() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = connection_dir.join(name);
        let marker = dir.join("identity");
        if dir.exists() && std::fs::read_to_string(&marker).ok().as_deref() != Some(identity) {
            std::fs::remove_dir_all(&dir)?;
        }
        create_private_dir(&dir)?;
        if !marker.exists() {
            let tmp = dir.join("identity.tmp");
            let written =
                std::fs::write(&tmp, identity).and_then(|()| std::fs::rename(&tmp, &marker));
            if let Err(error) = written {
                // A full disk: leave nothing half-written behind.
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        }
        Ok(Self {
            dir,
            clock,
            entities: Mutex::new(HashMap::new()),
        })
    }

    /// Seconds since the epoch, by the spool's clock.
    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp()).unwrap_or_default()
    }

    /// The file name prefix of an entity's segments.
    fn prefix(entity: &str) -> String {
        let mut hasher = DefaultHasher::new();
        entity.hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    fn with_log<T>(&self, entity: &str, f: impl FnOnce(&Path, &mut EntityLog) -> T) -> T {
        let mut entities = self
            .entities
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = entities.entry(entity.to_owned()).or_default();
        if !log.loaded {
            log.load(&self.dir, entity, self.now());
        }
        f(&self.dir, log)
    }

    /// Keeps the response bodies of `entity`'s page `key` (its cursor, or
    /// its parent's id) until [`Spool::committed`].
    pub fn put(&self, entity: &str, key: &str, bodies: &[Vec<u8>]) -> io::Result<()> {
        let now = self.now();
        self.with_log(entity, |dir, log| log.append(dir, entity, key, bodies, now))
    }

    /// The bodies an earlier process kept for `entity`'s page `key`, if a
    /// whole, fresh copy is there. Taking a page keeps it spooled (now as
    /// this process's) until it commits.
    pub fn take(&self, entity: &str, key: &str) -> Option<Vec<Vec<u8>>> {
        self.with_log(entity, |dir, log| {
            let (bodies, path, fetched_at) = log.found.remove(key)?;
            if let Some(left) = log.found_left.get_mut(&path) {
                *left -= 1;
                if *left == 0 {
                    log.found_left.remove(&path);
                    let _ = std::fs::remove_file(&path);
                }
            }
            // Spooled again as this process's, with the time it was
            // fetched: a page does not grow younger by being replayed.
            if let Err(error) = log.append(dir, entity, key, &bodies, fetched_at) {
                tracing::warn!(%error, "cannot spool a replayed page again");
            }
            Some(bodies)
        })
    }

    /// `entity`'s page `key` has committed: its segment goes once all of
    /// its pages have.
    pub fn committed(&self, entity: &str, key: &str) {
        self.with_log(entity, |_, log| {
            let Some(seq) = log.key_segment.remove(key) else {
                return;
            };
            let current = log.current.as_ref().map(|(s, _)| *s);
            if let Some(segment) = log.segments.get_mut(&seq) {
                segment.committed += 1;
                if segment.committed >= segment.written && current != Some(seq) {
                    let _ = std::fs::remove_file(&segment.path);
                    log.segments.remove(&seq);
                }
            }
        });
    }

    /// `entity`'s page `key` will not be applied (a page fetched ahead
    /// that the list contradicted): it leaves the spool as a committed
    /// page does.
    pub fn discard(&self, entity: &str, key: &str) {
        self.committed(entity, key);
    }

    /// Removes the run's spool (the run has ended).
    pub fn close(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // And the connection's directory and the spool's root, if nothing
        // else is in them.
        if let Some(connection) = self.dir.parent() {
            let _ = std::fs::remove_dir(connection);
            if let Some(root) = connection.parent() {
                let _ = std::fs::remove_dir(root);
            }
        }
    }
}

impl EntityLog {
    /// Reads the segments an earlier process left for `entity`.
    fn load(&mut self, dir: &Path, entity: &str, now: u64) {
        self.loaded = true;
        let prefix = Spool::prefix(entity);
        let mut max_seq = None;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_prefix('.'))
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            max_seq = max_seq.max(Some(seq));
            let path = entry.path();
            let pages = std::fs::read(&path)
                .map(|content| parse_segment(&content, entity, now))
                .unwrap_or_default();
            if pages.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            self.found_left.insert(path.clone(), pages.len());
            for (key, bodies, fetched_at) in pages {
                if let Some((_, old, _)) =
                    self.found.insert(key, (bodies, path.clone(), fetched_at))
                    && let Some(left) = self.found_left.get_mut(&old)
                {
                    // A later copy of the same page replaces the earlier.
                    *left -= 1;
                }
            }
        }
        self.next_seq = max_seq.map_or(0, |s| s + 1);
    }

    fn append(
        &mut self,
        dir: &Path,
        entity: &str,
        key: &str,
        bodies: &[Vec<u8>],
        fetched_at: u64,
    ) -> io::Result<()> {
        let full = self
            .current
            .as_ref()
            .is_some_and(|(seq, _)| self.segments[seq].written >= SEGMENT_PAGES);
        if full && let Some((seq, _)) = self.current.take() {
            // Closed: deleted now if all of it has committed already.
            if let Some(segment) = self.segments.get(&seq)
                && segment.committed >= segment.written
            {
                let _ = std::fs::remove_file(&segment.path);
                self.segments.remove(&seq);
            }
        }
        if self.current.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = dir.join(format!("{}.{seq}.seg", Spool::prefix(entity)));
            let file = File::options().create(true).append(true).open(&path)?;
            self.segments.insert(
                seq,
                Segment {
                    path,
                    written: 0,
                    committed: 0,
                },
            );
            self.current = Some((seq, file));
        }
        let (seq, file) = self.current.as_mut().expect("a current segment");
        let lengths: Vec<usize> = bodies.iter().map(Vec::len).collect();
        let header = json!({
            "entity": entity,
            "key": key,
            "fetched_at": fetched_at,
            "lengths": lengths,
        });
        let mut record = serde_json::to_vec(&header).map_err(io::Error::other)?;
        record.push(b'\n');
        for body in bodies {
            record.extend_from_slice(body);
        }
        // One write: a crash leaves a whole page or a torn tail, which the
        // reader drops.
        file.write_all(&record)?;
        let seq = *seq;
        let segment = self.segments.get_mut(&seq).expect("its segment");
        segment.written += 1;
        // A page spooled again (a replayed copy that could not be used)
        // supersedes its earlier copy, which will never commit: that
        // segment no longer waits for it.
        if let Some(earlier) = self.key_segment.insert(key.to_owned(), seq)
            && let Some(old) = self.segments.get_mut(&earlier)
        {
            old.written = old.written.saturating_sub(1);
            if earlier != seq && old.committed >= old.written {
                let _ = std::fs::remove_file(&old.path);
                self.segments.remove(&earlier);
            }
        }
        Ok(())
    }
}

/// The whole, fresh pages of a segment, in order; stops at the first torn
/// or foreign one.
fn parse_segment(mut content: &[u8], entity: &str, now: u64) -> Vec<(String, Vec<Vec<u8>>, u64)> {
    let mut pages = Vec::new();
    while !content.is_empty() {
        let Some((key, bodies, fetched_at, rest)) = parse_page(content, entity, now) else {
            break;
        };
        pages.push((key, bodies, fetched_at));
        content = rest;
    }
    pages
}

/// A page read back: its key, its bodies, and what follows it.
type ReadPage<'a> = (String, Vec<Vec<u8>>, u64, &'a [u8]);

fn parse_page<'a>(content: &'a [u8], entity: &str, now: u64) -> Option<ReadPage<'a>> {
    let newline = content.iter().position(|b| *b == b'\n')?;
    let header: Value = serde_json::from_slice(&content[..newline]).ok()?;
    if header["entity"] != entity {
        return None;
    }
    let key = header["key"].as_str()?.to_owned();
    let fetched_at = header["fetched_at"].as_u64()?;
    let fresh = now.saturating_sub(fetched_at) <= MAX_AGE.as_secs();
    let mut rest = &content[newline + 1..];
    let mut bodies = Vec::new();
    for length in header["lengths"].as_array()? {
        let length = usize::try_from(length.as_u64()?).ok()?;
        if rest.len() < length {
            return None;
        }
        let (body, tail) = rest.split_at(length);
        bodies.push(body.to_vec());
        rest = tail;
    }
    (fresh && !bodies.is_empty()).then_some((key, bodies, fetched_at, rest))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // API data: readable by its owner only.
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{ManualClock, SystemClock};

    /// The wall clock, for tests where time does not matter.
    fn clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    fn segments(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count()
    }

    fn body(i: usize) -> Vec<Vec<u8>> {
        vec![format!("{{\"page\":{i}}}").into_bytes()]
    }

    #[test]
    fn pages_a_killed_process_spooled_come_back_once() {
        let root = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
            for i in 0..5 {
                spool.put("Person", &format!("k{i}"), &body(i)).unwrap();
            }
            spool
                .put("Email", "k0", &[b"a".to_vec(), b"bc".to_vec()])
                .unwrap();
            spool.committed("Person", "k0");
            spool.committed("Person", "k1");
            // Killed: never closed.
        }
        let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
        // Committed pages are still in the segment (it holds uncommitted
        // ones), so they can come back too; the engine asks only for
        // pages after its checkpoint.
        assert_eq!(spool.take("Person", "k3"), Some(body(3)));
        assert_eq!(spool.take("Person", "k3"), None, "taken once");
        assert_eq!(spool.take("Person", "k9"), None);
        assert_eq!(
            spool.take("Email", "k0"),
            Some(vec![b"a".to_vec(), b"bc".to_vec()])
        );
        assert_eq!(spool.take("Email", "k3"), None);
        // A taken page is spooled again: a second kill keeps it.
        drop(spool);
        let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
        assert_eq!(spool.take("Person", "k3"), Some(body(3)));
    }

    #[test]
    fn committed_segments_are_deleted() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
        let dir = root.path().join("connection-1/run-7");
        for i in 0..SEGMENT_PAGES + 3 {
            spool.put("Person", &format!("k{i}"), &body(i)).unwrap();
        }
        assert_eq!(segments(&dir), 2);
        for i in 0..SEGMENT_PAGES {
            spool.committed("Person", &format!("k{i}"));
        }
        assert_eq!(segments(&dir), 1, "the full, committed segment is gone");
        for i in SEGMENT_PAGES..SEGMENT_PAGES + 3 {
            spool.committed("Person", &format!("k{i}"));
        }
        // The current segment stays open until it fills or the run ends.
        assert_eq!(segments(&dir), 1);
        spool.close();
        assert!(!dir.exists());
        assert!(!root.path().join("connection-1").exists());
    }

    #[test]
    fn a_page_spooled_again_does_not_keep_its_old_segment() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
        let dir = root.path().join("connection-1/run-7");
        for i in 0..SEGMENT_PAGES {
            spool.put("Person", &format!("k{i}"), &body(i)).unwrap();
        }
        // k0 spooled again (its first copy was unusable): it lands in the
        // second segment, and the first waits only for the others.
        spool.put("Person", "k0", &body(0)).unwrap();
        assert_eq!(segments(&dir), 2);
        for i in 1..SEGMENT_PAGES {
            spool.committed("Person", &format!("k{i}"));
        }
        assert_eq!(segments(&dir), 1, "the first segment is gone");
        spool.committed("Person", "k0");
        assert_eq!(
            segments(&dir),
            1,
            "the current one stays until the run ends"
        );
    }

    #[test]
    fn torn_tails_and_stale_pages_are_fetched_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("connection-1/run-7");
        {
            let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
            spool.put("Person", "k0", &body(0)).unwrap();
            spool.put("Person", "k1", &body(1)).unwrap();
        }
        // A machine crash can leave the last page short.
        let seg = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let content = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &content[..content.len() - 2]).unwrap();
        // And a page too old to apply.
        let old = SystemClock.now()
            - chrono::Duration::from_std(MAX_AGE).unwrap()
            - chrono::Duration::seconds(60);
        let header = json!({
            "entity": "Email",
            "key": "k0",
            "fetched_at": old.timestamp(),
            "lengths": [2],
        });
        let mut stale = serde_json::to_vec(&header).unwrap();
        stale.extend_from_slice(b"\n{}");
        std::fs::write(dir.join(format!("{}.0.seg", Spool::prefix("Email"))), stale).unwrap();

        let spool = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
        assert_eq!(spool.take("Person", "k0"), Some(body(0)));
        assert_eq!(spool.take("Person", "k1"), None);
        assert_eq!(spool.take("Email", "k0"), None);
    }

    #[test]
    fn a_spool_of_the_same_ids_from_another_database_is_discarded() {
        let root = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(root.path(), 1, 1, "db-a", clock()).unwrap();
            spool.put("Person", "k", &body(0)).unwrap();
        }
        // A fresh database numbers its connection and run 1 again.
        let other = Spool::open(root.path(), 1, 1, "db-b", clock()).unwrap();
        assert!(other.take("Person", "k").is_none());
        drop(other);
        let again = Spool::open(root.path(), 1, 1, "db-a", clock()).unwrap();
        assert!(
            again.take("Person", "k").is_none(),
            "discarded, not kept aside"
        );
    }

    #[test]
    fn a_replayed_page_keeps_its_age() {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(SystemClock.now());
        let at = |clock: &ManualClock| -> Arc<dyn Clock> { Arc::new(clock.clone()) };
        {
            let spool = Spool::open(root.path(), 1, 7, "db-a", at(&clock)).unwrap();
            spool.put("Person", "k", &body(0)).unwrap();
        }
        // Nearly as old as a page may be: replayed, and spooled again by
        // the take with its original time.
        clock.advance(chrono::Duration::from_std(MAX_AGE).unwrap() - chrono::Duration::seconds(2));
        let spool = Spool::open(root.path(), 1, 7, "db-a", at(&clock)).unwrap();
        assert!(spool.take("Person", "k").is_some());
        drop(spool);
        // Once that time is past the limit, the page is fetched again.
        clock.advance(chrono::Duration::seconds(3));
        let spool = Spool::open(root.path(), 1, 7, "db-a", at(&clock)).unwrap();
        assert!(spool.take("Person", "k").is_none());
    }

    #[test]
    fn a_new_run_clears_the_connections_old_spools_only() {
        let root = tempfile::tempdir().unwrap();
        {
            let old = Spool::open(root.path(), 1, 7, "db-a", clock()).unwrap();
            old.put("Person", "k", &body(0)).unwrap();
            let other = Spool::open(root.path(), 2, 3, "db-a", clock()).unwrap();
            other.put("Person", "k", &body(0)).unwrap();
        }
        let new = Spool::open(root.path(), 1, 8, "db-a", clock()).unwrap();
        assert!(new.take("Person", "k").is_none());
        assert!(!root.path().join("connection-1/run-7").exists());
        let other = Spool::open(root.path(), 2, 3, "db-a", clock()).unwrap();
        assert!(other.take("Person", "k").is_some());
    }
}
