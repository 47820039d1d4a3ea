//! One module per command.

pub mod bench;
mod bench_client;
pub mod connections;
pub mod demo;
pub mod manifest;
pub mod records;
pub mod sim;
pub mod status;
pub mod sync;

use std::sync::Arc;

use anyhow::Context as _;
use tributary_manifest::Manifest;

/// Loads the manifest: a file if given, else the built-in adapter.
pub fn load_manifest(
    adapter: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<Manifest>> {
    let manifest = match file {
        Some(path) => tributary_manifest::load(path)?,
        None => tributary_manifest::builtin(adapter).with_context(|| {
            format!(
                "no built-in adapter `{adapter}` (built in: {}); pass --manifest FILE for your own",
                tributary_manifest::builtin_names()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })??,
    };
    Ok(Arc::new(manifest))
}

/// Thousands separators for humans.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}
