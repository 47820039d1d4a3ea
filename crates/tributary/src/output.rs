//! What the commands write: data on stdout, notes and errors on stderr.
//!
//! Every command writes stdout through [`outln!`]/[`out!`], which return an
//! error instead of panicking: a reader that closed the pipe (`| head -1`)
//! ends the command quietly with success, and any other failure to write
//! (a full disk behind `> file`, `> /dev/full`) is a clean error. Notes for
//! the person at the terminal go through [`note`]: plain lines, or — with
//! `--log-format json` — JSON events like every log line, so stderr carries
//! JSON only.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether stderr carries JSON (`--log-format json`).
static JSON: AtomicBool = AtomicBool::new(false);

/// The tracing target of notes and progress events in JSON mode.
pub const TARGET: &str = "tributary::cli";

/// Switches notes and progress to JSON events.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether stderr carries JSON.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writing to stdout failed.
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

/// Writes `args` to stdout.
pub fn write(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// `println!` that returns [`StdoutError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that returns [`StdoutError`] instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

/// Whether `error` is stdout's reader having gone away (`| head`): the
/// command ends quietly. (A broken pipe anywhere else — a database
/// connection — is an error like any other.)
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<StdoutError>()
            .is_some_and(|e| e.0.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A note for the person running the command, on stderr: a plain line, or
/// a JSON event with `fields` in JSON mode.
pub fn note(message: &str) {
    if json() {
        tracing::info!(target: TARGET, "{message}");
    } else {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{message}");
    }
}

/// The text of an error and its causes, each said once: a cause whose
/// words its effect already quotes is not repeated.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if said.is_empty() || text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}
