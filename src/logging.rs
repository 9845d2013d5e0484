//! Logging setup: human text or one JSON object per line, on stderr (stdout is kept for
//! `--dry-run` plans and reports that scripts read).
//!
//! Pool names and command output come from users: in text logs, every control character in
//! an event (a newline that would forge a second log line, an escape sequence that would
//! reach the terminal) is written escaped, so one event is always one line. JSON escapes them
//! by itself.

use crate::config::LogFormat;
use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. The level comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(Escaping(std::io::stderr))
            .with_ansi(false)
            .with_target(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Escapes the control characters of a formatted text event, keeping its final newline.
pub fn escape_event(event: &[u8]) -> Vec<u8> {
    let (body, newline) = match event.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (event, false),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0x00..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    // C1 controls (U+0080..U+009F, which some terminals obey like ESC) in UTF-8 text.
    let text = String::from_utf8_lossy(&out);
    let mut out: Vec<u8> = if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        text.chars()
            .map(|c| {
                if ('\u{80}'..='\u{9f}').contains(&c) {
                    format!("\\u{{{:x}}}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into_bytes()
    } else {
        out
    };
    if newline {
        out.push(b'\n');
    }
    out
}

/// [`escape_event`] for one line of text printed outside the logger (the `--force` summary).
pub fn escape_line(line: &str) -> String {
    String::from_utf8_lossy(&escape_event(line.as_bytes())).into_owned()
}

/// A [`MakeWriter`] whose writers escape each event (tracing-subscriber writes one event per
/// `write_all`).
#[derive(Clone, Copy)]
struct Escaping<F>(F);

struct EscapingWriter<W>(W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_event(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, F, W> MakeWriter<'a> for Escaping<F>
where
    F: Fn() -> W + 'static,
    W: Write,
{
    type Writer = EscapingWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter((self.0)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_stays_one_line() {
        let forged = b"INFO pool evil\nERROR pool prod: forged\x1b[2J\r\x07 tab\tok\xc2\x9b\n";
        let out = String::from_utf8(escape_event(forged)).unwrap();
        assert_eq!(
            out,
            "INFO pool evil\\nERROR pool prod: forged\\x1b[2J\\r\\x07 tab\tok\\u{9b}\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        assert_eq!(
            escape_event(b"plain \xff bytes"),
            b"plain \xff bytes".to_vec()
        );
    }
}
