//! Test helpers for Tributary.
//!
//! The main item is [`PgServer`]: a throwaway PostgreSQL server that a test
//! starts for itself, because CI runs on a fresh machine with nothing running.
//!
//! * [`PgServer::start`] runs `initdb` into a fresh temporary directory (trust
//!   auth, UTF8, locale C) and starts `postgres` listening **only** on a unix
//!   socket inside that directory (`listen_addresses=''`). It returns once the
//!   server accepts connections (bounded by [`PgOptions::startup_timeout`]).
//! * [`PgServer::url`] / [`PgServer::create_database`] give URLs that sqlx 0.9's
//!   `PgConnectOptions` parses, of the form
//!   `postgres://postgres@localhost/<db>?host=<socket dir>&port=<port>`.
//! * [`shared`] is one server per test process, started on first use.
//!
//! ```no_run
//! # fn main() -> Result<(), tributary_testkit::TestkitError> {
//! // One server per test binary, one fresh database per test:
//! let url = tributary_testkit::shared().create_database("my_test")?;
//! // let pool = sqlx::PgPool::connect(&url).await?;
//! # let _ = url;
//! // Or a private server, e.g. durable for a benchmark:
//! let server = tributary_testkit::PgServer::start_with(
//!     tributary_testkit::PgOptions::new().durable(true).shared_buffers("256MB"),
//! )?;
//! # let _ = server.url();
//! # Ok(())
//! # }
//! ```
//!
//! All constructors are synchronous and use only `std::process` and
//! `std::thread::sleep`, so they work both outside and inside a tokio runtime
//! (inside one they simply block the calling worker for the startup time,
//! about a second). They never `block_on`.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When the effective uid is 0
//! the server binaries are run as the `postgres` system user through
//! `setpriv --reuid --regid --clear-groups` (which `exec`s, so the child *is*
//! the postmaster), falling back to `runuser -u postgres --`. The temporary
//! directory is chowned to that user first. Otherwise they run directly.
//!
//! # Cleanup
//!
//! * Dropping a [`PgServer`] sends the postmaster `SIGQUIT` (PostgreSQL's
//!   "immediate shutdown"), waits for it (at most 10 s, then `SIGKILL`), and
//!   removes the temporary directory (data dir, socket, log). It never hangs.
//! * Statics are never dropped, so the [`shared`] server, and any server whose
//!   test process is killed (timeout, `SIGKILL`, Ctrl-C, `process::exit`), is
//!   cleaned up by a **watchdog**: each server spawns a tiny `sh` script in its
//!   own process group whose stdin is a pipe held only by the test process.
//!   When the test process ends, however it ends, the kernel closes the pipe,
//!   the watchdog's `read` sees end-of-file, and it sends the postmaster
//!   `SIGQUIT` (then `SIGKILL` after 5 s) and `rm -rf`s the temporary
//!   directory. So no postgres outlives its test process by more than a few
//!   seconds, and CI is not kept alive by stray servers. The watchdog and the
//!   server have stdin/stdout/stderr detached from the test's pipes (server
//!   output goes to a log file in the temp dir). A clean drop tells the
//!   watchdog `done` and it exits without doing anything.
//!
//! # Locating the binaries
//!
//! `TRIBUTARY_PG_BIN` (a directory holding `initdb`, `postgres`, `psql`)
//! overrides; otherwise the highest version under `/usr/lib/postgresql/*/bin`
//! is used. The temporary directory is created under `TRIBUTARY_PG_TMPDIR`,
//! else `/tmp` (not `$TMPDIR`: unix socket paths are limited to ~100 bytes and
//! the `postgres` user must be able to reach the directory).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable naming the directory with the PostgreSQL server binaries.
pub const PG_BIN_ENV: &str = "TRIBUTARY_PG_BIN";
/// Environment variable naming the parent directory of the servers' temp dirs.
pub const PG_TMPDIR_ENV: &str = "TRIBUTARY_PG_TMPDIR";

const PG_ROOT: &str = "/usr/lib/postgresql";
const SUPERUSER: &str = "postgres";
const SYSTEM_USER: &str = "postgres";
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 30;

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no postgresql server binaries found: {0} (set TRIBUTARY_PG_BIN to a directory holding initdb, postgres and psql)"
    )]
    NoPostgres(String),
    /// Running as root but there is no user to run the server as.
    #[error(
        "running as root but the `postgres` system user does not exist; initdb/postgres refuse to run as root"
    )]
    NoPostgresUser,
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper command exited unsuccessfully.
    #[error("command `{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// A helper command did not finish in time and was killed.
    #[error("command `{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// The server exited before it accepted connections.
    #[error("postgres exited during startup ({status}); server log tail:\n{log_tail}")]
    ServerExited {
        /// How it ended.
        status: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server did not accept connections in time.
    #[error("postgres did not accept connections within {waited:?}; server log tail:\n{log_tail}")]
    StartupTimeout {
        /// How long we waited.
        waited: Duration,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// An option was not usable.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> TestkitError {
    move |source| TestkitError::Io {
        context: context.into(),
        source,
    }
}

/// Options for [`PgServer::start_with`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `false` (the default, for tests): `fsync=off`, `synchronous_commit=off`,
    /// `full_page_writes=off`. `true` (for benchmarks): PostgreSQL's defaults.
    pub durable: bool,
    /// Extra `-c name=value` settings, applied after the ones above (so they win).
    pub settings: Vec<(String, String)>,
    /// `shared_buffers`, e.g. `"256MB"`; `None` keeps PostgreSQL's default (128MB).
    pub shared_buffers: Option<String>,
    /// How long to wait for the server to accept connections (default 30 s).
    pub startup_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            durable: false,
            settings: Vec::new(),
            shared_buffers: None,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl PgOptions {
    /// Fast, non-durable options for tests (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`PgOptions::durable`].
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Adds a `-c name=value` server setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Sets [`PgOptions::shared_buffers`].
    pub fn shared_buffers(mut self, value: impl Into<String>) -> Self {
        self.shared_buffers = Some(value.into());
        self
    }

    /// Sets [`PgOptions::startup_timeout`].
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    fn server_settings(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        if !self.durable {
            for (k, v) in [
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ] {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
        if let Some(sb) = &self.shared_buffers {
            out.push(("shared_buffers".to_owned(), sb.clone()));
        }
        out.extend(self.settings.iter().cloned());
        out
    }
}

/// Who runs the server binaries.
#[derive(Debug, Clone)]
enum RunAs {
    /// The current user (not root).
    Me,
    /// Root: switch to this uid/gid with `setpriv`.
    Setpriv { uid: u32, gid: u32 },
    /// Root without `setpriv`: `runuser -u postgres --`.
    Runuser,
}

impl RunAs {
    fn detect() -> Result<RunAs, TestkitError> {
        if effective_uid() != 0 {
            return Ok(RunAs::Me);
        }
        let (uid, gid) = lookup_user(SYSTEM_USER).ok_or(TestkitError::NoPostgresUser)?;
        if find_in_path("setpriv").is_some() {
            Ok(RunAs::Setpriv { uid, gid })
        } else if find_in_path("runuser").is_some() {
            Ok(RunAs::Runuser)
        } else {
            Err(TestkitError::NoPostgres(
                "running as root but neither `setpriv` nor `runuser` is available to switch to the postgres user".into(),
            ))
        }
    }

    fn owner(&self) -> Option<(u32, u32)> {
        match self {
            RunAs::Me => None,
            RunAs::Setpriv { uid, gid } => Some((*uid, *gid)),
            RunAs::Runuser => lookup_user(SYSTEM_USER),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = match self {
            RunAs::Me => Command::new(program),
            RunAs::Setpriv { uid, gid } => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            RunAs::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", SYSTEM_USER, "--"]).arg(program);
                c
            }
        };
        scrub_env(&mut cmd);
        cmd
    }
}

/// Removes `PG*` variables (PGHOST, PGDATA, PGPASSWORD, ...) that would
/// redirect or alter our commands, and pins the locale.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C").env("LANG", "C");
}

/// The effective uid, without libc: `/proc/self` is owned by it; else `id -u`.
fn effective_uid() -> u32 {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return meta.uid();
    }
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// uid and gid of a user, from `/etc/passwd`, else `id`.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4
                && fields[0] == name
                && let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse())
            {
                return Some((uid, gid));
            }
        }
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The directory holding `initdb`, `postgres` and `psql`: `TRIBUTARY_PG_BIN`
/// if set, else the highest version under `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> Result<PathBuf, TestkitError> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        check_bin_dir(&dir).map_err(|missing| {
            TestkitError::NoPostgres(format!("{PG_BIN_ENV}={} has no {missing}", dir.display()))
        })?;
        return Ok(dir);
    }
    let entries = fs::read_dir(PG_ROOT)
        .map_err(|e| TestkitError::NoPostgres(format!("cannot read {PG_ROOT}: {e}")))?;
    let mut candidates: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u64> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            check_bin_dir(&bin).ok()?;
            Some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).ok_or_else(|| {
        TestkitError::NoPostgres(format!(
            "no {PG_ROOT}/<version>/bin with initdb, postgres and psql"
        ))
    })
}

fn check_bin_dir(dir: &Path) -> Result<(), &'static str> {
    for bin in ["initdb", "postgres", "psql"] {
        if !dir.join(bin).is_file() {
            return Err(bin);
        }
    }
    Ok(())
}

fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command to completion with a time limit, capturing its output.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<String, TestkitError> {
    let line = command_line(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io_err(format!("spawning `{line}`")))?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = match wait_timeout(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestkitError::CommandTimeout {
                command: line,
                timeout,
            });
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_err(format!("waiting for `{line}`"))(e));
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(TestkitError::CommandFailed {
            command: line,
            status: status.to_string(),
            output: format!("{}{}", stderr.trim_end(), stdout.trim_end()),
        })
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sends a signal with the shell's builtin `kill` (no libc, no procps needed).
fn send_signal(signal: &str, pid: u32) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\" 2>/dev/null", "sh", signal])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last lines of a file (the server log).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let mut last: VecDeque<String> = VecDeque::with_capacity(lines);
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if last.len() == lines {
            last.pop_front();
        }
        last.push_back(line);
    }
    if last.is_empty() {
        "(empty log)".to_owned()
    } else {
        Vec::from(last).join("\n")
    }
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn free_port() -> Result<u16, TestkitError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0 to pick a port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("reading the picked port"))?
        .port();
    Ok(port)
}

/// The watchdog: waits on stdin; on `done` exits quietly; on end-of-file (the
/// test process is gone) stops the postmaster and removes the temp dir.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP
pid=
while IFS= read -r line; do
  case "$line" in
    done) exit 0 ;;
    pid\ *) pid=${line#pid } ;;
  esac
done
filepid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
for p in $pid $filepid; do kill -s QUIT "$p" 2>/dev/null; done
i=0
while [ $i -lt 50 ]; do
  alive=
  for p in $pid $filepid; do
    if [ -r "/proc/$p/status" ]; then
      # a zombie (exited, not yet reaped by its new parent) is dead enough
      grep -q '^State:[[:space:]]*[^Z]' "/proc/$p/status" 2>/dev/null && alive=1
    elif [ ! -d /proc/self ]; then
      kill -0 "$p" 2>/dev/null && alive=1
    fi
  done
  [ -z "$alive" ] && break
  sleep 0.1
  i=$((i+1))
done
for p in $pid $filepid; do kill -s KILL "$p" 2>/dev/null; done
rm -rf "$1"
"#;

struct Running {
    postmaster: Child,
    watchdog: Option<(Child, ChildStdin)>,
}

/// A throwaway PostgreSQL server listening on a unix socket in a temp dir.
///
/// Dropping it stops the server and removes its files; see the crate docs.
#[derive(Debug)]
pub struct PgServer {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    pid: u32,
    bin: PathBuf,
    options: PgOptions,
    running: Mutex<Option<Running>>,
    db_counter: AtomicU64,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("postmaster", &self.postmaster.id())
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// Starts a server with [`PgOptions::default`] (fast, non-durable).
    pub fn start() -> Result<PgServer, TestkitError> {
        Self::start_with(PgOptions::default())
    }

    /// Starts a server with the given options.
    pub fn start_with(options: PgOptions) -> Result<PgServer, TestkitError> {
        for (name, value) in options.server_settings() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                || value.contains('\0')
            {
                return Err(TestkitError::InvalidOption(format!(
                    "bad setting {name:?} = {value:?}"
                )));
            }
        }
        let bin = pg_bin_dir()?;
        let run_as = RunAs::detect()?;
        let parent = std::env::var_os(PG_TMPDIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("tributary-pg-")
            .tempdir_in(&parent)
            .map_err(io_err(format!(
                "creating a temp dir in {}",
                parent.display()
            )))?;
        let root = dir.path().to_path_buf();
        if let Some((uid, gid)) = run_as.owner() {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).map_err(io_err(format!(
                "chowning {} to the postgres user",
                root.display()
            )))?;
        }

        // The watchdog first, so that even a kill during initdb leaves nothing.
        let mut watchdog = spawn_watchdog(&root)?;

        let mut server = PgServer {
            dir: Some(dir),
            root: root.clone(),
            port: 0,
            pid: 0,
            bin,
            options,
            running: Mutex::new(None),
            db_counter: AtomicU64::new(0),
        };

        let mut initdb = run_as.command(&server.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(server.data_dir())
            .args([
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(&root);
        if let Err(e) = run_bounded(initdb, INITDB_TIMEOUT) {
            finish_watchdog(&mut watchdog);
            return Err(e);
        }

        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => {
                    finish_watchdog(&mut watchdog);
                    return Err(e);
                }
            };
            match server.launch(&run_as, port, &mut watchdog) {
                Ok(postmaster) => {
                    server.port = port;
                    server.pid = server.read_pid().unwrap_or_else(|| postmaster.id());
                    *server.running.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(Running {
                        postmaster,
                        watchdog,
                    });
                    return Ok(server);
                }
                Err(e) => {
                    let retry = match &e {
                        TestkitError::ServerExited { log_tail, .. } => {
                            log_tail.contains("could not create lock file")
                                || log_tail.contains("Address already in use")
                                || log_tail.contains("could not bind")
                        }
                        _ => false,
                    };
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        finish_watchdog(&mut watchdog);
        Err(last_err.expect("at least one attempt"))
    }

    /// Starts `postgres` on `port` and waits until it is ready.
    fn launch(
        &self,
        run_as: &RunAs,
        port: u16,
        watchdog: &mut Option<(Child, ChildStdin)>,
    ) -> Result<Child, TestkitError> {
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err("duplicating the log handle"))?;
        let _ = fs::remove_file(self.data_dir().join("postmaster.pid"));

        let mut cmd = run_as.command(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&self.root)
            .args(["-c", "listen_addresses="])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for (name, value) in self.options.server_settings() {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("spawning `{}`", command_line(&cmd))))?;
        if let Some((_, stdin)) = watchdog.as_mut() {
            let _ = writeln!(stdin, "pid {}", child.id());
        }

        let started = Instant::now();
        let timeout = self.options.startup_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Err(TestkitError::ServerExited {
                        status: status.to_string(),
                        log_tail: tail(&log_path, LOG_TAIL_LINES),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    stop_child(&mut child, self.read_pid());
                    return Err(io_err("waiting for postgres")(e));
                }
            }
            if self.pid_file_ready() && self.socket_path_for(port).exists() {
                return Ok(child);
            }
            if started.elapsed() >= timeout {
                stop_child(&mut child, self.read_pid());
                return Err(TestkitError::StartupTimeout {
                    waited: timeout,
                    log_tail: tail(&log_path, LOG_TAIL_LINES),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `postmaster.pid`'s status line says `ready` (what `pg_ctl -w` checks).
    fn pid_file_ready(&self) -> bool {
        fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .map(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
            .unwrap_or(false)
    }

    fn read_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn socket_path_for(&self, port: u16) -> PathBuf {
        self.root.join(format!(".s.PGSQL.{port}"))
    }

    /// The directory holding the unix socket (the `host` of the URLs).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The unix socket file, `<socket_dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_path_for(self.port)
    }

    /// The port number (only part of the socket file name; no TCP listener).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server log file (server stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory with the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The options the server was started with.
    pub fn options(&self) -> &PgOptions {
        &self.options
    }

    /// URL of the default `postgres` database, e.g.
    /// `postgres://postgres@localhost/postgres?host=/tmp/tributary-pg-XXXX&port=54321`
    /// (sqlx 0.9: `host` starting with `/` selects the unix socket directory).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// URL of the named database on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/{}?host={}&port={}",
            percent_encode(database),
            percent_encode(&self.root.to_string_lossy()),
            self.port
        )
    }

    /// `CREATE DATABASE` with a unique name derived from `name_hint`; returns its URL.
    ///
    /// Runs `psql` (from the same bin dir as the server) as a subprocess, so it
    /// is safe to call from inside a tokio runtime.
    pub fn create_database(&self, name_hint: &str) -> Result<String, TestkitError> {
        let name = self.unique_name(name_hint);
        self.execute("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.database_url(&name))
    }

    /// Like [`PgServer::create_database`], but the database's default
    /// collation is the ICU locale `icu_locale` (e.g. `"en-US"`): text sorts
    /// and compares by language rules, as on most production servers,
    /// rather than byte by byte.
    pub fn create_database_icu(
        &self,
        name_hint: &str,
        icu_locale: &str,
    ) -> Result<String, TestkitError> {
        let name = self.unique_name(name_hint);
        let locale = icu_locale.replace('\'', "''");
        self.execute(
            "postgres",
            &format!(
                "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' \
                 LOCALE_PROVIDER icu ICU_LOCALE '{locale}' LOCALE 'C.UTF-8'"
            ),
        )?;
        Ok(self.database_url(&name))
    }

    fn unique_name(&self, hint: &str) -> String {
        let mut base: String = hint
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
            base.insert_str(0, "db_");
        }
        let n = self.db_counter.fetch_add(1, Ordering::Relaxed);
        format!("{base}_{n}")
    }

    /// Runs SQL with `psql` against `database` (a plain name) as the superuser
    /// and returns its unaligned, tuples-only output. Stops at the first error.
    pub fn execute(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        let mut cmd = Command::new(self.bin.join("psql"));
        scrub_env(&mut cmd);
        cmd.arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10");
        run_bounded(cmd, PSQL_TIMEOUT)
    }

    /// Whether the postmaster process is still running.
    pub fn is_running(&self) -> bool {
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(r) => matches!(r.postmaster.try_wait(), Ok(None)),
            None => false,
        }
    }
}

fn spawn_watchdog(root: &Path) -> Result<Option<(Child, ChildStdin)>, TestkitError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("tributary-pg-watchdog")
        .arg(root)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Own process group: a Ctrl-C to the test's group must not kill it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(io_err("spawning the watchdog shell"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    Ok(Some((child, stdin)))
}

/// Tells the watchdog all is clean and reaps it (bounded).
fn finish_watchdog(watchdog: &mut Option<(Child, ChildStdin)>) {
    if let Some((mut child, mut stdin)) = watchdog.take() {
        let _ = writeln!(stdin, "done");
        drop(stdin);
        if !matches!(
            wait_timeout(&mut child, Duration::from_secs(2)),
            Ok(Some(_))
        ) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Immediate shutdown (SIGQUIT), bounded wait, then SIGKILL.
fn stop_child(child: &mut Child, pid_from_file: Option<u32>) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    send_signal("QUIT", child.id());
    if let Some(pid) = pid_from_file.filter(|p| *p != child.id()) {
        send_signal("QUIT", pid);
    }
    if !matches!(wait_timeout(child, STOP_TIMEOUT), Ok(Some(_))) {
        let _ = child.kill();
        if let Some(pid) = pid_from_file.filter(|p| *p != child.id()) {
            send_signal("KILL", pid);
        }
        let _ = wait_timeout(child, STOP_TIMEOUT);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut running) = running {
            let pid = self.read_pid().or(Some(self.pid));
            stop_child(&mut running.postmaster, pid);
            finish_watchdog(&mut running.watchdog);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// The process-wide shared server for a whole test binary, started with
/// [`PgOptions::default`] on first use. Give each test its own database with
/// [`PgServer::create_database`].
///
/// Statics are never dropped: when the test process exits (or is killed) the
/// server's watchdog stops it and removes its temp dir within about a second
/// (see the crate docs). Each test process (cargo test / nextest run several)
/// gets its own server in its own temp dir, so they never collide.
///
/// # Panics
///
/// If the server cannot be started; the message includes the cause and the
/// server log tail. A later call tries again.
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(|| match PgServer::start() {
        Ok(server) => server,
        Err(e) => panic!("tributary-testkit: could not start the shared postgres server: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_paths_readable() {
        assert_eq!(
            percent_encode("/tmp/tributary-pg-Ab1_.x"),
            "/tmp/tributary-pg-Ab1_.x"
        );
        assert_eq!(percent_encode("a b&c?d"), "a%20b%26c%3Fd");
    }

    #[test]
    fn unique_names_are_sanitized() {
        let server = PgServer {
            dir: None,
            root: PathBuf::from("/nonexistent"),
            port: 1,
            pid: 0,
            bin: PathBuf::new(),
            options: PgOptions::default(),
            running: Mutex::new(None),
            db_counter: AtomicU64::new(0),
        };
        assert_eq!(server.unique_name("My Test-DB"), "my_test_db_0");
        assert_eq!(server.unique_name(""), "db__1");
        assert_eq!(server.unique_name("9lives"), "db_9lives_2");
        assert!(server.unique_name(&"x".repeat(100)).len() < 64);
    }

    #[test]
    fn non_durable_settings() {
        let s = PgOptions::default()
            .setting("work_mem", "8MB")
            .server_settings();
        assert!(s.contains(&("fsync".into(), "off".into())));
        assert_eq!(s.last(), Some(&("work_mem".into(), "8MB".into())));
        assert!(PgOptions::new().durable(true).server_settings().is_empty());
    }
}
