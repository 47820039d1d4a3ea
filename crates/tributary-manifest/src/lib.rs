//! Declarative adapter manifests.
//!
//! An adapter is a TOML file, not code: where the API lives, how it
//! authenticates and pages, its rate limit, and per entity the endpoints,
//! includes, delta strategy, relationships and the field mapping to the
//! canonical model. [`parse`] turns a file into a validated [`Manifest`];
//! every problem it finds is a [`Diagnostic`] naming the file, the line and
//! the fix. The format is documented in `docs/MANIFESTS.md`.
//!
//! Architecture invariant: this crate does no I/O beyond reading a manifest
//! file, and knows nothing of HTTP or storage.

mod error;
pub mod graph;
mod model;
pub mod spec;

pub use error::{Diagnostic, ManifestError};
pub use graph::{CycleError, Dependency, DependencyGraph, DependencyKind};
pub use model::{Auth, Entity, Field, Manifest, Pagination, RateLimit, Relationship};
pub use spec::{
    AuthKind, DeltaSpec as Delta, FieldType, Format, PaginationStyle, RelationshipSource,
    WebhookApply, WebhookScheme,
};

use std::path::Path;

/// The built-in manifests: (name, TOML text).
const BUILTINS: &[(&str, &str)] = &[
    ("pco", include_str!("../manifests/pco.toml")),
    ("clerk", include_str!("../manifests/clerk.toml")),
];

/// Names of the manifests built into the binary.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The TOML text of a built-in manifest.
pub fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// A built-in manifest, parsed and validated.
pub fn builtin(name: &str) -> Option<Result<Manifest, ManifestError>> {
    builtin_text(name).map(|text| parse(&format!("builtin:{name}"), text))
}

/// Reads and validates a manifest file.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|err| ManifestError {
        diagnostics: vec![Diagnostic {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the manifest: {err}"),
            help: "check the path and that the file is readable".into(),
        }],
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|err| ManifestError {
        diagnostics: vec![error::not_utf8(&file, &bytes, err)],
    })?;
    parse(&file, text)
}

/// Parses and validates manifest text; `file` names it in diagnostics.
pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
    match toml::from_str::<spec::ManifestSpec>(text) {
        Ok(spec) => model::build(file, text, spec),
        Err(err) => {
            let mut reporter = error::Reporter::new(file, text);
            let (message, help) = error::explain_parse_error(text, err.span(), err.message());
            reporter.error(err.span(), message, help);
            Err(reporter.finish().unwrap_err())
        }
    }
}
