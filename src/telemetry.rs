//! The tracing subscriber: human-readable lines for a terminal, JSON lines for production.

use std::io::IsTerminal;

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pretty,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(format: Format, level: &str) -> Result<(), String> {
    init_with_prefix(format, level, "")
}

/// Libraries whose info lines say nothing to an operator: PostgreSQL's notices (`relation
/// "_sqlx_migrations" already exists, skipping` on every start) and the scheduler's start-up
/// chatter. Kept at warn unless `level` names them itself.
const QUIET_LIBRARIES: [&str; 2] = ["sqlx::postgres::notice", "tokio_cron_scheduler"];

fn with_quiet_libraries(level: &str) -> String {
    let mut directives = level.to_owned();
    for library in QUIET_LIBRARIES {
        let root = library.split("::").next().unwrap_or(library);
        if !level.contains(root) {
            directives.push_str(&format!(",{library}=warn"));
        }
    }
    directives
}

/// Like [`init`], with `prefix` at the start of every line (the demo marks its lines so).
pub fn init_with_prefix(format: Format, level: &str, prefix: &'static str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)
            .map_err(|e| format!("RUST_LOG is not a valid filter: {e}"))?,
        _ => EnvFilter::try_new(with_quiet_libraries(level))
            .map_err(|e| format!("log.level is not a valid filter: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(PrefixedStderr { prefix })
        .with_span_events(FmtSpan::NONE);
    let installed = match format {
        Format::Pretty => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| format!("the log subscriber could not be installed: {e}"))
}

/// Standard error, each line led by a fixed prefix.
#[derive(Clone, Copy)]
struct PrefixedStderr {
    prefix: &'static str,
}

struct PrefixedLine {
    prefix: &'static str,
    buffer: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PrefixedStderr {
    type Writer = PrefixedLine;

    fn make_writer(&'a self) -> Self::Writer {
        PrefixedLine {
            prefix: self.prefix,
            buffer: Vec::with_capacity(256),
        }
    }
}

impl std::io::Write for PrefixedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedLine {
    // The formatter writes one event per writer: the whole event goes out at once.
    fn drop(&mut self) {
        use std::io::Write;
        let mut out = Vec::with_capacity(self.buffer.len() + self.prefix.len());
        for line in self.buffer.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        let _ = std::io::stderr().lock().write_all(&out);
    }
}

/// An error and its causes on one line, `error: cause: cause`, each said once: a cause whose
/// text the one before already holds (a wrapper that repeats its source's message, as a
/// database error does) is left out. What a log line says where an error ends.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !last.contains(&text) {
                write!(f, ": {text}")?;
                last = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

/// A panic prints where it happened, never its message: a message may quote input (an HTTP
/// body, a roster row), and echoed raw to stderr it could forge a log line. The binary sets
/// this first thing.
pub fn withhold_panic_messages() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".to_owned());
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        eprintln!(
            "error: internal error: thread '{thread}' panicked at {place} \
             (its message is withheld, for it may quote input)"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(texts: &[&'static str]) -> Option<Box<Layer>> {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| Some(Box::new(Layer { text, source })))
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let error = layers(&[
            "the cycle failed",
            "the database failed: timed out",
            "timed out",
        ]);
        let error = error.expect("three layers");
        assert_eq!(
            Chain(error.as_ref()).to_string(),
            "the cycle failed: the database failed: timed out"
        );
        let single = layers(&["alone"]).expect("one layer");
        assert_eq!(Chain(single.as_ref()).to_string(), "alone");
    }

    /// Run in a child process of the test binary, so the hook it sets is not the one of
    /// every other test.
    #[test]
    fn a_panic_prints_its_place_and_never_its_message() {
        const CHILD: &str = "INVITE_SYNC_TEST_PANIC_CHILD";
        const NAME: &str = "telemetry::tests::a_panic_prints_its_place_and_never_its_message";
        if std::env::var_os(CHILD).is_some() {
            super::withhold_panic_messages();
            panic!("QUOTED-INPUT\n{{\"level\":\"INFO\"}}");
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("the test binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "the child panicked: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("panicked at src/telemetry.rs:"),
            "the place is printed: {stderr}"
        );
        assert!(
            !stderr.contains("QUOTED-INPUT") && !stdout.contains("QUOTED-INPUT"),
            "the message is withheld: {stdout}{stderr}"
        );
    }
}
