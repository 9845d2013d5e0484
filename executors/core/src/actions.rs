//! The lines an [`crate::Outcome`] lists, worded in one place: every mutating call a backend
//! makes, or, in a dry run, `would …` and the same words. A `--dry-run` is read as a preview of
//! the real run, so the two must not drift apart backend by backend.

use std::fmt::Display;

/// One pool's cycle of calls, as the operator reads them in the log and in `--dry-run`.
///
/// A backend asks [`ActionLog::would`] before each mutating call: in a dry run that lists the
/// call and tells the backend to skip it, so nothing changes anywhere; in a real run the backend
/// makes the call and lists it with [`ActionLog::did`], with whatever the answer added (a
/// request id), or drops it when the call failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionLog {
    dry_run: bool,
    lines: Vec<String>,
}

impl ActionLog {
    /// An empty log for a real run, or for a dry run.
    pub fn new(dry_run: bool) -> Self {
        ActionLog {
            dry_run,
            lines: Vec::new(),
        }
    }

    /// Whether this cycle only reports.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// In a dry run, lists `would {call}` and returns true: the caller must skip the call. In a
    /// real run, lists nothing and returns false: the caller makes the call and reports it with
    /// [`ActionLog::did`].
    pub fn would(&mut self, call: impl Display) -> bool {
        if self.dry_run {
            self.lines.push(format!("would {call}"));
        }
        self.dry_run
    }

    /// Lists a call that was made (never called in a dry run, where [`ActionLog::would`] said
    /// to skip it).
    pub fn did(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// Lists a call that is made unless this is a dry run, in the words of either: the caller
    /// makes it when this returns true. For a backend that lists a call before it makes it.
    pub fn call(&mut self, call: impl Display) -> bool {
        if !self.would(&call) {
            self.did(call.to_string());
            return true;
        }
        false
    }

    /// Lines another step of the same cycle listed (already worded for this run).
    pub fn extend(&mut self, lines: impl IntoIterator<Item = String>) {
        self.lines.extend(lines);
    }

    /// The lines listed so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The lines, for [`crate::Outcome::actions`].
    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_lists_would_and_skips_while_a_real_run_lists_what_was_done() {
        let mut dry = ActionLog::new(true);
        assert!(dry.would("resize g from 1 to 3 instances"));
        assert!(!dry.call("terminate i-1"));
        assert_eq!(
            dry.into_lines(),
            [
                "would resize g from 1 to 3 instances",
                "would terminate i-1"
            ]
        );

        let mut real = ActionLog::new(false);
        assert!(!real.would("resize g from 1 to 3 instances"));
        real.did("resize g from 1 to 3 instances (requestId r-1)");
        assert!(real.call("terminate i-1"));
        assert_eq!(
            real.lines(),
            [
                "resize g from 1 to 3 instances (requestId r-1)",
                "terminate i-1"
            ]
        );
    }
}
