use std::process::ExitCode;

use invite_sync::cli;
use invite_sync::commands::Exit;

fn main() -> ExitCode {
    invite_sync::telemetry::withhold_panic_messages();
    let mut cli = match cli::parse() {
        Ok(cli) => cli,
        Err(exit) => return exit.into(),
    };
    // Before the runtime's threads exist: setting variables is only sound while single-threaded.
    if let Err(exit) = cli::apply_env_file(&mut cli) {
        return exit.into();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: the async runtime could not start: {error}");
            return Exit::Failed.into();
        }
    };
    runtime.block_on(cli::run(cli)).into()
}
