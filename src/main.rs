use std::process::ExitCode;

use clap::Parser;
use invite_sync::cli::{self, Cli};

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                // With --detailed-exitcode, 2 means "changes": a usage error is 1 there.
                _ if std::env::args_os().any(|a| a == "--detailed-exitcode") => {
                    ExitCode::from(cli::EXIT_FAILED)
                }
                _ => ExitCode::from(cli::EXIT_USAGE),
            };
        }
    };
    // Before the runtime's threads exist: setting variables is only sound while single-threaded.
    if let Err(code) = cli::apply_env_file(&mut cli) {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: the async runtime could not start: {error}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    runtime.block_on(cli::run(cli))
}
