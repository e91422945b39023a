//! Logging: one style, structured fields plus a short capitalised message, to stderr, as text
//! for people or JSON for machines.

pub mod event;

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `level` is an `EnvFilter` directive such as `info` or `popbridge=debug`; `RUST_LOG` wins.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        ))
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // Already initialised (tests): keep the first.
    drop(result);
}

/// Lines of the live progress frame now on the terminal (see `progress`): a log line
/// clears the frame first, so the next frame is drawn below the log instead of over it.
pub static LIVE_FRAME: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// Stderr, clearing the live progress frame before a log line.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut frame = LIVE_FRAME.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if *frame > 0 {
            write!(err, "\x1b[{}A\x1b[J", *frame)?;
            *frame = 0;
        }
        err.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Colour only for a person at a terminal: escape codes in a file, journald or a log
/// collector are noise. `NO_COLOR` (non-empty) turns it off everywhere.
fn colour(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, false));
        assert!(!colour(false, false));
        assert!(!colour(true, true));
    }
}
