//! `invite-sync config check`: the effective configuration with secrets redacted, or every
//! bad key named. When SCIM is in use (`scim.token` or `scim.groups` set), the stored SCIM
//! groups no `scim.groups` entry names are listed too, as comments, if the database answers.

use std::path::Path;
use std::time::Duration;

use super::Exit;
use crate::config::{self, Settings};
use crate::scim::groups_map::Mappings;
use crate::store::group_memberships::{unmapped, unmapped_text};

/// How long `config check` waits for the database before it leaves the groups out.
const DATABASE_WAIT: Duration = Duration::from_secs(3);

/// Prints the effective configuration (exit 0), or names every bad key on stderr (exit 2).
pub async fn run(file: Option<&Path>) -> Exit {
    let env = config::process_env();
    let config::Checked { text, valid } = config::check(file, &env);
    if valid {
        print!("{text}");
        if let Ok(settings) = Settings::load(file, &env) {
            for line in groups_report(&settings).await {
                println!("# {line}");
            }
        }
        Exit::Success
    } else {
        eprint!("{text}");
        Exit::Usage
    }
}

/// The lines about SCIM groups: those no entry names, or why they could not be read.
async fn groups_report(settings: &Settings) -> Vec<String> {
    if settings.scim.token.is_empty() && settings.scim.groups.is_empty() {
        return Vec::new();
    }
    let read = async {
        let pool = crate::startup::connect(settings).await?;
        let groups = unmapped(
            &pool,
            &Mappings::new(settings.scim.groups.clone()),
            &settings.sync.target,
        )
        .await?;
        pool.close().await;
        anyhow::Ok(groups)
    };
    match tokio::time::timeout(DATABASE_WAIT, read).await {
        Ok(Ok(groups)) if groups.is_empty() => {
            vec!["SCIM groups: every stored group is named by a scim.groups entry".to_owned()]
        }
        Ok(Ok(groups)) => unmapped_text(&groups),
        Ok(Err(error)) => vec![format!(
            "SCIM groups not read (the configuration is still valid): {}",
            error.root_cause()
        )],
        Err(_) => vec![format!(
            "SCIM groups not read (the configuration is still valid): the database did not \
             answer within {} s",
            DATABASE_WAIT.as_secs()
        )],
    }
}
