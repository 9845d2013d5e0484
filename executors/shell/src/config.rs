use serde::Deserialize;

/// `[executors.shell]` in the config file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A command still running after this many seconds is killed with its whole process group
    /// (a hung `terraform apply` must not hold the pool forever). Default 600.
    pub timeout_seconds: u64,
    /// After the timeout, SIGTERM first; SIGKILL this many seconds later if still alive.
    pub kill_grace_seconds: u64,
    /// The shell that runs the rendered command with `-c`. Default `/bin/sh`.
    pub shell: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout_seconds: 600,
            kill_grace_seconds: 5,
            shell: "/bin/sh".into(),
        }
    }
}
