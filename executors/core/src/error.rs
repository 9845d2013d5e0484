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
            ErrorKind::Timeout => 124,
            ErrorKind::Spawn => 127,
        }
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
}

impl ExecutorError {
    /// Builds an error for `pool`; `message` should name the setting or target involved.
    pub fn new(pool: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ExecutorError {
            pool: pool.to_string(),
            kind,
            message: message.into(),
        }
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
