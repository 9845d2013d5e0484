use std::fmt;

/// Why an executor failed, coarse enough for metrics labels and for choosing a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A setting of the pool or the config file is unusable; nothing was attempted.
    Config,
    /// `executor_command` did not render.
    Template,
    /// The command could not be started.
    Spawn,
    /// The command or call outlived its timeout and was stopped.
    Timeout,
    /// The command ran and exited non-zero (the code is the pool's `autoscaling_status`).
    Command(i32),
    /// No credentials, or the credentials were refused.
    Credentials,
    /// The target group does not exist.
    NotFound,
    /// The credentials lack a permission.
    PermissionDenied,
    /// Rate limited even after retries.
    Throttled,
    /// The endpoint could not be reached or answered 5xx even after retries.
    Unavailable,
    /// The Vespene database could not say which workers are busy, so nothing was scaled in.
    Directory,
    /// Anything else the backend reported.
    Backend,
    /// Stopped because the process is shutting down.
    Cancelled,
    /// Scale-in was held because a RUNNING build could be on any instance (it runs on a worker
    /// whose hostname matches no instance): nothing was removed, and the hostname matching
    /// needs fixing before the pool can shrink.
    Held,
    /// The cloud accepted the size but could not launch the machines (a quota, a stockout, a
    /// broken launch template): an accepted request is not a launched machine, and builds wait
    /// until an operator acts, so the pool fails with the cloud's own reason
    /// ([`ExecutorError::reason`]) instead of reporting success.
    LaunchFailed,
}

impl ErrorKind {
    /// A stable lowercase name for metrics labels and JSON logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Template => "template",
            ErrorKind::Spawn => "spawn",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Command(_) => "command",
            ErrorKind::Credentials => "credentials",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Directory => "directory",
            ErrorKind::Backend => "backend",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Held => "held",
            ErrorKind::LaunchFailed => "launch_failed",
        }
    }

    /// The value written to `worker_pools.autoscaling_status`: the exit code for a command,
    /// else a fixed code per kind (documented in docs/status-codes.md) so an operator can tell a
    /// template error from an outage by looking at the column.
    pub fn status_code(&self) -> i32 {
        match self {
            ErrorKind::Command(code) if *code != 0 => *code,
            ErrorKind::Command(_) => 1,
            ErrorKind::Config => 2,
            ErrorKind::Template => 3,
            ErrorKind::Credentials => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::PermissionDenied => 6,
            ErrorKind::Throttled => 7,
            ErrorKind::Unavailable => 8,
            ErrorKind::Directory => 9,
            ErrorKind::Backend => 10,
            ErrorKind::Cancelled => 11,
            ErrorKind::Held => 12,
            ErrorKind::LaunchFailed => 13,
            ErrorKind::Timeout => 124,
            ErrorKind::Spawn => 127,
        }
    }
}

/// What a value of `worker_pools.autoscaling_status` means, in words, for `autoscaler status`
/// and the docs: the one table of codes, next to [`ErrorKind::status_code`] that writes them.
/// A shell command's own exit status is written as is, so for a shell pool a small code may
/// also be the command's (the caller, which knows the executor, says so).
pub fn describe_status(code: i32) -> String {
    let fixed = match code {
        0 => "ok: the last attempt succeeded",
        2 => "configuration: a pool setting or the config file is unusable",
        3 => "template: executor_command did not render",
        4 => "credentials: missing or refused cloud credentials",
        5 => "not found: the target group does not exist",
        6 => "permission denied: the credentials lack a permission",
        7 => "throttled: rate limited even after retries",
        8 => "unavailable: the cloud endpoint could not be reached or answered 5xx",
        9 => "database: busy workers could not be read, nothing was scaled in",
        10 => "cloud error: another error from the cloud",
        11 => "cancelled: stopped by a shutdown",
        12 => "held: a RUNNING build runs on a worker that matches no instance",
        13 => "launch failing: the cloud accepted the size but could not launch instances",
        124 => "timeout: the command or call outlived its timeout",
        127 => "spawn: the command could not be started",
        _ => "",
    };
    if fixed.is_empty() {
        format!("command: the shell command exited with status {code}")
    } else {
        fixed.to_string()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Command(code) => write!(f, "command exited with status {code}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// An executor failure, always naming the pool so one line in a log says whose it is.
///
/// Messages must never carry secrets: backends format them from names and codes, not from
/// request bodies or credentials.
#[derive(Debug, thiserror::Error)]
#[error("pool {pool}: {message}")]
pub struct ExecutorError {
    /// The pool's name.
    pub pool: String,
    /// What went wrong, coarsely.
    pub kind: ErrorKind,
    /// What went wrong, for a human: names the setting or the target.
    pub message: String,
    /// The cloud's own short reason code when it gave one (`QUOTA_EXCEEDED`,
    /// `InsufficientInstanceCapacity`, …), so metrics can count failures by cause without
    /// parsing messages; `None` for failures the autoscaler itself detected.
    pub reason: Option<String>,
}

impl ExecutorError {
    /// Builds an error for `pool`; `message` should name the setting or target involved.
    pub fn new(pool: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ExecutorError {
            pool: pool.to_string(),
            kind,
            message: message.into(),
            reason: None,
        }
    }

    /// Attaches the cloud's reason code (see [`ExecutorError::reason`]).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// See [`ErrorKind::status_code`].
    pub fn status_code(&self) -> i32 {
        self.kind.status_code()
    }
}

/// The database could not answer [`crate::WorkerDirectory::busy_workers`]; scale-in then must
/// not happen, since every machine might be busy.
#[derive(Debug, thiserror::Error)]
#[error("reading busy workers from the Vespene database: {0}")]
pub struct DirectoryError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_status_has_its_own_words() {
        let kinds = [
            ErrorKind::Config,
            ErrorKind::Template,
            ErrorKind::Spawn,
            ErrorKind::Timeout,
            ErrorKind::Credentials,
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::Throttled,
            ErrorKind::Unavailable,
            ErrorKind::Directory,
            ErrorKind::Backend,
            ErrorKind::Cancelled,
            ErrorKind::Held,
            ErrorKind::LaunchFailed,
        ];
        let mut seen = std::collections::HashSet::new();
        for k in kinds {
            let words = describe_status(k.status_code());
            assert!(!words.starts_with("command:"), "{k:?} has no words");
            assert!(seen.insert(words), "{k:?} shares its words");
        }
        assert!(describe_status(0).starts_with("ok"));
        assert_eq!(
            describe_status(ErrorKind::Command(42).status_code()),
            "command: the shell command exited with status 42"
        );
    }
}
