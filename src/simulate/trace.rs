//! Traces of builds: what the simulator replays.
//!
//! A trace is a CSV file with a header row naming the columns `queued_at`, `duration_seconds`
//! and, optionally, `project` (in any order; other columns are an error, so a misspelt column
//! is never silently ignored). Lines starting with `#` are comments (the generators record
//! their command line and seed there).
//!
//! - `queued_at`: when the build was queued, either an RFC 3339 timestamp
//!   (`2024-03-04T09:15:00Z`) or a number of seconds since the start of the trace (`540`,
//!   `540.25`). One trace uses one form throughout. With timestamps the simulation starts at
//!   the earliest one; with offsets it starts at offset 0, which is taken to be
//!   [`OFFSET_EPOCH`] (a Monday, 00:00 UTC) so planners see a plausible clock.
//! - `duration_seconds`: how long the build runs once a worker has it (a non-negative number).
//! - `project`: any text; builds of the same project are duplicates for Vespene's
//!   `build_latest`. Empty means "no project": such a build is never a duplicate.
//!
//! Times are kept in whole milliseconds; the rows may come in any order.

use chrono::{DateTime, TimeZone, Utc};
use std::collections::HashMap;
use std::io::{Read, Write};

/// Where offset traces start: Monday 2024-03-04 00:00:00 UTC. A fixed, documented instant, so
/// a planner that looks at the clock sees the same day every run.
pub const OFFSET_EPOCH: i64 = 1_709_510_400;

/// One build of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceBuild {
    /// Milliseconds after the start of the trace.
    pub queued_ms: i64,
    /// Milliseconds of work once started.
    pub duration_ms: i64,
    /// Index into [`Trace::projects`]; `None` for a build without a project.
    pub project: Option<u32>,
}

/// A whole trace, sorted by queue time (rows queued at the same instant keep their file order,
/// which stands in for Vespene's build ids).
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The instant that offset 0 stands for.
    pub start: DateTime<Utc>,
    /// The builds, by queue time.
    pub builds: Vec<TraceBuild>,
    /// Project names, indexed by [`TraceBuild::project`].
    pub projects: Vec<String>,
    /// Whether `queued_at` was written as RFC 3339 timestamps (kept when writing it back).
    pub timestamps: bool,
}

/// A trace that could not be read. The message names the file, the line and the column, so a
/// bad row in a 100,000-line export can be found and fixed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read or written.
    #[error("{file}: {reason}")]
    Io {
        /// The file.
        file: String,
        /// What the file system said.
        reason: String,
    },
    /// The header row is missing a column or has an unknown one.
    #[error("{file}: line {line}: {reason}")]
    Header {
        /// The file (or `-`, stdin), as named on the command line.
        file: String,
        /// The line, counted from 1 as an editor counts them.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A value could not be used.
    #[error("{file}: line {line}, column {column} ({name}): {reason}")]
    Value {
        /// The file (or `-`, stdin), as named on the command line.
        file: String,
        /// The line, counted from 1 as an editor counts them.
        line: u64,
        /// The column, counted from 1.
        column: usize,
        /// The column's name in the header.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The CSV itself is malformed (unbalanced quotes, a row with too many fields, …).
    #[error("{file}: line {line}: {reason}")]
    Csv {
        /// The file (or `-`, stdin), as named on the command line.
        file: String,
        /// The line, counted from 1 as an editor counts them.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The trace's column layout, found from the header row.
struct Columns {
    queued_at: usize,
    duration: usize,
    project: Option<usize>,
    count: usize,
}

impl Trace {
    /// Reads a trace file; errors name `path`.
    pub fn load(path: &std::path::Path) -> Result<Trace, TraceError> {
        let file = std::fs::File::open(path).map_err(|e| TraceError::Io {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Trace::parse(file, &path.display().to_string())
    }

    /// Parses trace CSV from `input`; `origin` names it in errors.
    pub fn parse(mut input: impl Read, origin: &str) -> Result<Trace, TraceError> {
        let text = read_utf8(&mut input, origin)?;
        let lines = std::cell::RefCell::new(Lines::new(text.as_bytes()));
        let line_of = |pos: Option<&csv::Position>| {
            pos.map(|p| lines.borrow_mut().line_at(p.byte() as usize))
                .unwrap_or(0)
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut record = csv::StringRecord::new();
        let csv_err = |e: csv::Error| {
            let line = line_of(e.position());
            let reason = match e.kind() {
                csv::ErrorKind::Utf8 { err, .. } => {
                    format!("field {} is not valid UTF-8", err.field() + 1)
                }
                csv::ErrorKind::Io(io) => io.to_string(),
                other => format!("{other:?}"),
            };
            TraceError::Csv {
                file: origin.to_string(),
                line,
                reason,
            }
        };
        // The header: the first non-comment, non-blank row.
        let columns = loop {
            if !reader.read_record(&mut record).map_err(csv_err)? {
                return Err(TraceError::Header {
                    file: origin.to_string(),
                    line: 1,
                    reason:
                        "empty trace: expected a header row `queued_at,duration_seconds,project`"
                            .into(),
                });
            }
            if record.iter().all(str::is_empty) {
                continue;
            }
            let line = line_of(record.position());
            break header(&record, origin, line)?;
        };

        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut projects: Vec<String> = Vec::new();
        let mut rows: Vec<(Stamp, i64, Option<u32>)> = Vec::new();
        let mut form: Option<(bool, u64)> = None; // (timestamps?, line that decided)
        while reader.read_record(&mut record).map_err(csv_err)? {
            let line = line_of(record.position());
            if record.iter().all(str::is_empty) {
                continue;
            }
            let value_err = |column: usize, name: &'static str, reason: String| TraceError::Value {
                file: origin.to_string(),
                line,
                column: column + 1,
                name,
                reason,
            };
            if record.len() != columns.count {
                return Err(TraceError::Csv {
                    file: origin.to_string(),
                    line,
                    reason: format!(
                        "expected {} fields as in the header, found {}",
                        columns.count,
                        record.len()
                    ),
                });
            }
            let raw = &record[columns.queued_at];
            let stamp = parse_queued_at(raw)
                .map_err(|reason| value_err(columns.queued_at, "queued_at", reason))?;
            one_form(&mut form, &stamp, line, raw)
                .map_err(|reason| value_err(columns.queued_at, "queued_at", reason))?;
            let raw = &record[columns.duration];
            let duration_ms = parse_seconds(raw)
                .map_err(|reason| value_err(columns.duration, "duration_seconds", reason))?;
            let project = match columns.project.map(|c| &record[c]) {
                None | Some("") => None,
                Some(name) => Some(intern(&mut interned, &mut projects, name)),
            };
            rows.push((stamp, duration_ms, project));
        }

        Ok(assemble(rows, form.is_some_and(|f| f.0), projects))
    }

    /// Writes the trace as CSV (the same format [`Trace::parse`] reads), with `comments` as
    /// `#` lines at the top.
    pub fn write(&self, out: impl Write, comments: &[String]) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        for c in comments {
            for line in c.lines() {
                writeln!(out, "# {line}")?;
            }
        }
        writeln!(out, "queued_at,duration_seconds,project")?;
        for b in &self.builds {
            let queued = if self.timestamps {
                (self.start + chrono::Duration::milliseconds(b.queued_ms))
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            } else {
                format_seconds(b.queued_ms)
            };
            let project = b
                .project
                .map(|p| csv_field(&self.projects[p as usize]))
                .unwrap_or_default();
            writeln!(out, "{queued},{},{project}", format_seconds(b.duration_ms))?;
        }
        out.flush()
    }

    /// Sum of every build's duration, in seconds.
    pub fn total_work_seconds(&self) -> f64 {
        self.builds
            .iter()
            .map(|b| b.duration_ms as f64)
            .sum::<f64>()
            / 1000.0
    }
}

/// Line numbers from byte offsets. The csv crate's own line count goes wrong after blank
/// lines, comments and CRLF endings; its byte offset points at the end of the previous
/// record, so the record's line is the first line after it that is neither blank nor a
/// comment. Records come in order, so the count resumes where the last one stopped.
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(text: &'a [u8]) -> Self {
        Lines {
            text,
            at: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, byte: usize) -> u64 {
        let t = self.text;
        let mut i = byte.min(t.len());
        loop {
            while i < t.len() && (t[i] == b'\r' || t[i] == b'\n') {
                i += 1;
            }
            let line_start = i == 0 || t[i - 1] == b'\n';
            if i < t.len() && t[i] == b'#' && line_start {
                while i < t.len() && t[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            break;
        }
        if i < self.at {
            self.at = 0;
            self.line = 1;
        }
        self.line += t[self.at..i].iter().filter(|&&b| b == b'\n').count() as u64;
        self.at = i;
        self.line
    }
}

/// A `queued_at` value before the trace's start is known.
#[derive(Clone, Copy, Debug)]
enum Stamp {
    At(DateTime<Utc>),
    Offset(i64),
}

/// The whole input as text; invalid UTF-8 is an error naming its line.
fn read_utf8(input: &mut impl Read, origin: &str) -> Result<String, TraceError> {
    let mut raw = Vec::new();
    input.read_to_end(&mut raw).map_err(|e| TraceError::Io {
        file: origin.to_string(),
        reason: e.to_string(),
    })?;
    String::from_utf8(raw).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        TraceError::Csv {
            file: origin.to_string(),
            line: 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64,
            reason: "not valid UTF-8".into(),
        }
    })
}

/// One form of `queued_at` per file: the first row decides (timestamps or seconds offsets,
/// and on which line), a later row of the other form is an error naming that line.
fn one_form(
    form: &mut Option<(bool, u64)>,
    stamp: &Stamp,
    line: u64,
    raw: &str,
) -> Result<(), String> {
    let is_ts = matches!(stamp, Stamp::At(_));
    match *form {
        None => *form = Some((is_ts, line)),
        Some((ts, first)) if ts != is_ts => {
            return Err(format!(
                "{raw:?} is {} but line {first} used {}; use one form throughout",
                if is_ts {
                    "a timestamp"
                } else {
                    "a seconds offset"
                },
                if ts { "timestamps" } else { "seconds offsets" }
            ));
        }
        _ => {}
    }
    Ok(())
}

/// A project's number, given in order of first appearance: builds carry a small number, the
/// trace keeps each name once.
fn intern(interned: &mut HashMap<String, u32>, projects: &mut Vec<String>, name: &str) -> u32 {
    match interned.get(name) {
        Some(&i) => i,
        None => {
            let i = projects.len() as u32;
            interned.insert(name.to_string(), i);
            projects.push(name.to_string());
            i
        }
    }
}

/// The trace from its rows: timestamps become offsets from the earliest, and builds are sorted
/// by arrival (stable: ties keep file order).
fn assemble(
    rows: Vec<(Stamp, i64, Option<u32>)>,
    timestamps: bool,
    projects: Vec<String>,
) -> Trace {
    let start = if timestamps {
        rows.iter()
            .filter_map(|r| match r.0 {
                Stamp::At(t) => Some(t),
                Stamp::Offset(_) => None,
            })
            .min()
            .expect("timestamps imply a row")
    } else {
        Utc.timestamp_opt(OFFSET_EPOCH, 0).unwrap()
    };
    let mut builds: Vec<TraceBuild> = rows
        .into_iter()
        .map(|(stamp, duration_ms, project)| TraceBuild {
            queued_ms: match stamp {
                Stamp::At(t) => (t - start).num_milliseconds(),
                Stamp::Offset(ms) => ms,
            },
            duration_ms,
            project,
        })
        .collect();
    builds.sort_by_key(|b| b.queued_ms); // stable: ties keep file order
    Trace {
        start,
        builds,
        projects,
        timestamps,
    }
}

fn header(record: &csv::StringRecord, origin: &str, line: u64) -> Result<Columns, TraceError> {
    let err = |reason: String| TraceError::Header {
        file: origin.to_string(),
        line,
        reason,
    };
    let (mut queued_at, mut duration, mut project) = (None, None, None);
    for (i, name) in record.iter().enumerate() {
        let slot = match name.to_ascii_lowercase().as_str() {
            "queued_at" => &mut queued_at,
            "duration_seconds" => &mut duration,
            "project" => &mut project,
            other => {
                return Err(err(format!(
                    "column {} is {other:?}; expected the columns queued_at, duration_seconds and optionally project",
                    i + 1
                )))
            }
        };
        if slot.replace(i).is_some() {
            return Err(err(format!("column {} repeats {name:?}", i + 1)));
        }
    }
    let missing = |what: &str| {
        err(format!(
            "the header has no {what} column (expected queued_at,duration_seconds,project)"
        ))
    };
    Ok(Columns {
        queued_at: queued_at.ok_or_else(|| missing("queued_at"))?,
        duration: duration.ok_or_else(|| missing("duration_seconds"))?,
        project,
        count: record.len(),
    })
}

fn parse_queued_at(raw: &str) -> Result<Stamp, String> {
    if raw.is_empty() {
        return Err("empty; expected an RFC 3339 timestamp or seconds since the start".into());
    }
    if raw.contains('T') || raw.contains('t') || raw.matches('-').count() >= 2 {
        return DateTime::parse_from_rfc3339(raw)
            .map(|t| Stamp::At(t.with_timezone(&Utc)))
            .map_err(|e| format!("{raw:?} is not an RFC 3339 timestamp ({e})"));
    }
    if raw.parse::<f64>().is_err() {
        return Err(format!(
            "{raw:?} is neither an RFC 3339 timestamp nor a number of seconds"
        ));
    }
    parse_seconds(raw).map(Stamp::Offset)
}

/// A non-negative number of seconds, to whole milliseconds.
fn parse_seconds(raw: &str) -> Result<i64, String> {
    let x: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("{raw:?} must be a finite number, 0 or more"));
    }
    if x > 1e12 {
        return Err(format!("{raw:?} is too large"));
    }
    Ok((x * 1000.0).round() as i64)
}

/// Milliseconds as seconds, without a fraction when whole.
pub(crate) fn format_seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        s.trim_end_matches('0').to_string()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r', '#']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
