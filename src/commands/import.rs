//! `invite-sync import`: a CSV roster loaded into the roster table (upsert by email).

use std::path::PathBuf;

use clap::Args;

use super::Exit;
use crate::config::Settings;
use crate::import::{import_path, ImportError, ImportOptions};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file: a header row naming the columns, `email` required.
    pub file: PathBuf,
    /// The file is the whole roster: rows not in it are deleted.
    #[arg(long)]
    pub replace: bool,
    /// Report what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the good lines even when some are bad.
    #[arg(long)]
    pub skip_invalid: bool,
    /// With --replace, delete more than sync.max_revocation_ratio of the roster.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(settings: &Settings, args: ImportArgs) -> anyhow::Result<Exit> {
    let pool = crate::startup::connect(settings).await?;
    let options = ImportOptions {
        relation: settings.source.relation.clone(),
        replace: args.replace,
        dry_run: args.dry_run,
        skip_invalid: args.skip_invalid,
        force: args.force,
        max_delete_ratio: settings.sync.max_revocation_ratio,
    };
    match import_path(&pool, &args.file, &options).await {
        Ok(summary) => {
            print!("{}", summary.render());
            Ok(Exit::Success)
        }
        Err(error) => {
            if let ImportError::RefusedDeletion { summary, .. } = &error {
                print!("{}", summary.render());
            }
            eprintln!("import failed: {error}");
            Ok(Exit::Failed)
        }
    }
}
