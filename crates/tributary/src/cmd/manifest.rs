//! `tributary manifest check` and `tributary graph`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::load_manifest;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a manifest file; every error names the file, the line and the fix.
    Check {
        /// The manifest file.
        file: PathBuf,
    },
    /// Print a built-in manifest (a starting point for your own).
    Show {
        /// Built-in adapter name.
        #[arg(default_value = "pco")]
        adapter: String,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { file } => match tributary_manifest::load(&file) {
            Ok(m) => {
                crate::outln!(
                    "{}: ok — adapter `{}`, {} entities in {} waves",
                    file.display(),
                    m.name,
                    m.entities.len(),
                    m.graph.waves().len()
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                crate::output::note(&errors.to_string());
                crate::output::note(&format!(
                    "{} error{} in {}",
                    errors.diagnostics.len(),
                    if errors.diagnostics.len() == 1 {
                        ""
                    } else {
                        "s"
                    },
                    file.display()
                ));
                Ok(ExitCode::from(crate::exit::FAILED))
            }
        },
        Command::Show { adapter } => {
            let text = tributary_manifest::builtin_text(&adapter)
                .ok_or_else(|| anyhow::anyhow!("no built-in adapter `{adapter}`"))?;
            crate::out!("{text}")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Waves and dependencies as text.
    Text,
    /// Mermaid flowchart source.
    Mermaid,
    /// Graphviz DOT source.
    Dot,
}

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Built-in adapter name.
    #[arg(long, default_value = "pco")]
    adapter: String,
    /// A manifest file instead of a built-in adapter.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let manifest = load_manifest(&args.adapter, args.manifest.as_deref())?;
    let out = match args.format {
        Format::Text => manifest.graph.to_text(),
        Format::Mermaid => manifest.graph.to_mermaid(),
        Format::Dot => manifest.graph.to_dot(),
    };
    crate::out!("{out}")?;
    Ok(ExitCode::SUCCESS)
}
