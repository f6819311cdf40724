//! `invite-sync import`: a CSV roster loaded into the roster table (upsert by email), or a
//! membership roster file (a header with `organization`) into the membership roster (upsert
//! by email and organization).

use std::path::PathBuf;

use clap::Args;

use super::Exit;
use crate::config::Settings;
use crate::import::{import_path_with_memberships, ImportError, ImportOptions};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file: a header row naming the columns, `email` required. With an
    /// `organization` column it is a membership roster file, written into
    /// source.memberships_relation.
    pub file: PathBuf,
    /// The file is the whole roster (or the whole membership roster, for a membership file):
    /// rows not in it are deleted.
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
    let memberships = &settings.source.memberships_relation;
    match import_path_with_memberships(&pool, &args.file, &options, memberships).await {
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
