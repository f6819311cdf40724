use std::process::ExitCode;

use invite_sync::cli;
use invite_sync::commands::Exit;

/// A cycle reads the roster, the ledger and the known users a row at a time, and each row
/// makes a few short-lived strings: mimalloc serves those in less time than the system's
/// allocator. It is built without transparent huge pages (`no_thp`), which would make every
/// 2 MiB region it touches resident, and gives freed memory back at once
/// ([`allocator::give_back_at_once`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod allocator {
    use std::os::raw::{c_int, c_long};

    // `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (include/mimalloc.h of the
    // libmimalloc-sys version pinned in Cargo.toml, which names no constant for it): the test
    // below fails if it moves.
    const PURGE_DELAY: c_int = 15;

    extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// Memory freed is given back to the system at once rather than a second later: a
    /// process reading a million rows keeps the peak of what it holds, not of what it held
    /// over the last second.
    pub fn give_back_at_once() {
        // SAFETY: mi_option_set takes any option and value, at any time.
        unsafe { mi_option_set(PURGE_DELAY, 0) }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_option_set_is_the_purge_delay() {
            // mimalloc 3's purge delay is 1000 ms unless the environment says otherwise.
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                // SAFETY: reading an option has no precondition.
                assert_eq!(unsafe { super::mi_option_get(super::PURGE_DELAY) }, 1000);
            }
            super::give_back_at_once();
            // SAFETY: as above.
            assert_eq!(unsafe { super::mi_option_get(super::PURGE_DELAY) }, 0);
        }
    }
}

fn main() -> ExitCode {
    allocator::give_back_at_once();
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
