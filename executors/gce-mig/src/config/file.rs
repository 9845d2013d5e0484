//! The section as written in the config file, before the renamed keys are folded in.
//!
//! The cloud executors share key names (`*_seconds`, `max_attempts`), so gce-mig's
//! `operation_timeout_secs`, `request_timeout_secs`, `credentials_timeout_secs` and
//! `retry_attempts` were renamed. Config keys are a contract with users: the old names stay
//! accepted, each logs a deprecation warning when the file is read, and a file that sets both
//! the old and the new name of one setting is refused naming both (which of two values was
//! meant cannot be guessed).

use super::{Config, StandbyAction};
use serde::Deserialize;

/// `(new name, old name)` of every renamed key, for messages and the docs.
pub(crate) const RENAMED: [(&str, &str); 4] = [
    ("operation_timeout_seconds", "operation_timeout_secs"),
    ("request_timeout_seconds", "request_timeout_secs"),
    ("credentials_timeout_seconds", "credentials_timeout_secs"),
    ("max_attempts", "retry_attempts"),
];

/// Every key the section accepts, old names included; unknown keys are an error (see
/// [`Config`]), and the error's location in the file comes from the format's deserializer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ConfigFile {
    project: Option<String>,
    endpoint: Option<String>,
    credentials: Option<String>,
    workers_per_instance: u32,
    hostname_match: String,
    require_drain_agent: bool,
    check_labels: bool,
    operation_timeout_seconds: Option<u64>,
    operation_timeout_secs: Option<u64>,
    request_timeout_seconds: Option<u64>,
    request_timeout_secs: Option<u64>,
    credentials_timeout_seconds: Option<u64>,
    credentials_timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    retry_attempts: Option<u32>,
    retry_initial_backoff_ms: u64,
    retry_max_backoff_ms: u64,
    poll_interval_ms: u64,
    page_size: u32,
    launch_failure_after_seconds: u64,
    standby_action: StandbyAction,
}

impl Default for ConfigFile {
    fn default() -> Self {
        let d = Config::default();
        ConfigFile {
            project: d.project,
            endpoint: d.endpoint,
            credentials: d.credentials,
            workers_per_instance: d.workers_per_instance,
            hostname_match: d.hostname_match,
            require_drain_agent: d.require_drain_agent,
            check_labels: d.check_labels,
            operation_timeout_seconds: None,
            operation_timeout_secs: None,
            request_timeout_seconds: None,
            request_timeout_secs: None,
            credentials_timeout_seconds: None,
            credentials_timeout_secs: None,
            max_attempts: None,
            retry_attempts: None,
            retry_initial_backoff_ms: d.retry_initial_backoff_ms,
            retry_max_backoff_ms: d.retry_max_backoff_ms,
            poll_interval_ms: d.poll_interval_ms,
            page_size: d.page_size,
            launch_failure_after_seconds: d.launch_failure_after_seconds,
            standby_action: d.standby_action,
        }
    }
}

/// The value of a renamed setting: the new name's, else the old name's (with a deprecation
/// warning), else the default; both set is an error naming both.
fn renamed<T>(
    (new, old): (&str, &str),
    new_value: Option<T>,
    old_value: Option<T>,
    default: T,
) -> Result<T, String> {
    match (new_value, old_value) {
        (Some(_), Some(_)) => Err(format!(
            "[executors.gce-mig] sets both {new} and {old} (its former name): keep only {new}"
        )),
        (Some(v), None) => Ok(v),
        (None, Some(v)) => {
            tracing::warn!(
                setting = old,
                replacement = new,
                "[executors.gce-mig] {old} is deprecated: rename it to {new} (the old name still works)"
            );
            Ok(v)
        }
        (None, None) => Ok(default),
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = String;

    fn try_from(f: ConfigFile) -> Result<Config, String> {
        let d = Config::default();
        let [operation, request, credentials, attempts] = RENAMED;
        Ok(Config {
            operation_timeout_seconds: renamed(
                operation,
                f.operation_timeout_seconds,
                f.operation_timeout_secs,
                d.operation_timeout_seconds,
            )?,
            request_timeout_seconds: renamed(
                request,
                f.request_timeout_seconds,
                f.request_timeout_secs,
                d.request_timeout_seconds,
            )?,
            credentials_timeout_seconds: renamed(
                credentials,
                f.credentials_timeout_seconds,
                f.credentials_timeout_secs,
                d.credentials_timeout_seconds,
            )?,
            max_attempts: renamed(attempts, f.max_attempts, f.retry_attempts, d.max_attempts)?,
            project: f.project,
            endpoint: f.endpoint,
            credentials: f.credentials,
            workers_per_instance: f.workers_per_instance,
            hostname_match: f.hostname_match,
            require_drain_agent: f.require_drain_agent,
            check_labels: f.check_labels,
            retry_initial_backoff_ms: f.retry_initial_backoff_ms,
            retry_max_backoff_ms: f.retry_max_backoff_ms,
            poll_interval_ms: f.poll_interval_ms,
            page_size: f.page_size,
            launch_failure_after_seconds: f.launch_failure_after_seconds,
            standby_action: f.standby_action,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Collects what `tracing` writes while `f` runs, so the warning itself is asserted.
    fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    /// The four renamed settings as both files below set them.
    fn assert_read(cfg: &Config) {
        assert_eq!(cfg.operation_timeout_seconds, 7);
        assert_eq!(cfg.request_timeout_seconds, 8);
        assert_eq!(cfg.credentials_timeout_seconds, 9);
        assert_eq!(cfg.max_attempts, 2);
    }

    #[test]
    fn old_names_still_work_and_warn() {
        let (cfg, logs) = logs_of(|| {
            toml::from_str::<Config>(
                "operation_timeout_secs = 7\nrequest_timeout_secs = 8\n\
                 credentials_timeout_secs = 9\nretry_attempts = 2\n",
            )
            .unwrap()
        });
        assert_read(&cfg);
        for (new, old) in RENAMED {
            assert_eq!(
                logs.matches(&format!("{old} is deprecated: rename it to {new}"))
                    .count(),
                1,
                "{logs}"
            );
        }
    }

    #[test]
    fn new_names_work_without_a_warning() {
        let (cfg, logs) = logs_of(|| {
            toml::from_str::<Config>(
                "operation_timeout_seconds = 7\nrequest_timeout_seconds = 8\n\
                 credentials_timeout_seconds = 9\nmax_attempts = 2\n",
            )
            .unwrap()
        });
        assert_read(&cfg);
        assert!(!logs.contains("deprecated"), "{logs}");
        // Unset, each takes its default.
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
    }

    #[test]
    fn both_names_of_one_setting_is_an_error_naming_both() {
        for (new, old) in RENAMED {
            let err = toml::from_str::<Config>(&format!("{new} = 3\n{old} = 4\n")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(new) && msg.contains(old), "{msg}");
        }
    }
}
