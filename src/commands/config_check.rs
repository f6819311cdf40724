//! `invite-sync config check`: the effective configuration with secrets redacted, or every
//! bad key named.

use std::path::Path;

use super::Exit;
use crate::config;

/// Prints the effective configuration (exit 0), or names every bad key on stderr (exit 2).
pub fn run(file: Option<&Path>) -> Exit {
    let env = config::process_env();
    let config::Checked { text, valid } = config::check(file, &env);
    if valid {
        print!("{text}");
        Exit::Success
    } else {
        eprint!("{text}");
        Exit::Usage
    }
}
