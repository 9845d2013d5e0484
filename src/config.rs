//! The optional TOML config file: executor settings and process settings that do not belong in
//! Vespene's `worker_pools` rows. Unknown keys are errors, not silently ignored: a misspelt
//! `workers_per_instnace` must not leave a fleet four times too big.

use serde::Deserialize;
use std::path::Path;

/// Log output format: `text` for people, `json` (one object per line) for log pipelines.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
// Doc comments on the variants would become `--log-format`'s help text, a contract: the enum's
// own comment above says what each means.
#[allow(missing_docs)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The whole config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Used when `--log-format` is not given.
    pub log_format: Option<LogFormat>,
    /// Pools evaluated at the same time; a slow pool then delays no other pool by more than
    /// its own timeout. Default 8.
    pub concurrency: Option<usize>,
    /// The runaway guard: at most this many workers above the size last applied, per pool
    /// per cycle (and at most this many launched by one shell call). Default: unlimited,
    /// since declarative backends converge anyway and the pool `maximum` always applies.
    pub max_step_up: Option<u32>,
    /// Between full cycles (every `--sleep` seconds), pools with a declarative executor
    /// (aws-asg, gce-mig) are re-planned every this many seconds, so a queued build reaches
    /// the group within about a second. Each poll costs three small queries. 0 turns it off.
    /// Default 1.
    pub poll_seconds: Option<f64>,
    /// After SIGTERM/SIGINT, how long executor calls in progress may go on before they are
    /// stopped. Default 30.
    pub shutdown_grace_seconds: Option<u64>,
    /// Serve `/metrics` and `/healthz` here (`--metrics-addr` wins).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `/healthz` fails once the database has been unreachable this long. Default 120.
    pub unhealthy_after_seconds: Option<u64>,
    /// `/healthz` also fails once no cycle has finished for this many `--sleep` intervals: a
    /// stuck cycle stops every pool. 0 turns the check off. Default 45.
    pub stuck_after_sleeps: Option<u32>,
    /// Per-backend settings.
    #[serde(default)]
    pub executors: ExecutorsConfig,
    /// Per-planner settings, `[planners.NAME]`; each planner checks its own keys.
    #[serde(default)]
    pub planners: std::collections::BTreeMap<String, toml::Table>,
    /// `[audit]`: thresholds of `autoscaler audit`.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// The `[audit]` section of the config file: the thresholds the findings are judged by.
///
/// Unknown keys are errors, like everywhere in the file: a misspelt `drain_limit_secs` left at
/// its default would silently hide stuck drains.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The Vespene version every worker image should carry in its `vespene_version` tag/label
    /// (the image checklist's first point). Unset: version skew is not checked.
    pub expected_version: Option<String>,
    /// How long running ≠ desired may last before it is drift (instances take minutes to boot).
    pub drift_grace_seconds: u64,
    /// How long an instance may stay in Terminating:Wait / deleting before it is stuck; set it
    /// to the longest build you expect plus the drain's own time.
    pub drain_limit_seconds: u64,
    /// How long a running instance may go without its worker checking in before the image is
    /// suspected.
    pub boot_allowance_seconds: u64,
    /// A `workers` row whose machine is gone is reported once its last check-in is this old.
    pub stale_worker_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            expected_version: None,
            drift_grace_seconds: 900,
            drain_limit_seconds: 3600,
            boot_allowance_seconds: 900,
            stale_worker_seconds: 86_400,
        }
    }
}

/// One section per backend, named like the pool's `executor` column.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorsConfig {
    /// `[executors.shell]`: timeouts and the environment of the pools' commands.
    #[cfg(feature = "shell")]
    #[serde(default)]
    pub shell: autoscaler_shell::Config,
    /// `[executors.aws-asg]`: region, endpoints and credentials' source of the ASG backend.
    #[cfg(feature = "aws-asg")]
    #[serde(default, rename = "aws-asg")]
    pub aws_asg: autoscaler_aws_asg::Config,
    /// `[executors.gce-mig]`: project, endpoints and credentials' source of the MIG backend.
    #[cfg(feature = "gce-mig")]
    #[serde(default, rename = "gce-mig")]
    pub gce_mig: autoscaler_gce_mig::Config,
}

/// A config file that could not be used; the message carries the path and, for syntax and
/// unknown-key errors, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions).
    #[error("config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the file system said.
        reason: String,
    },
    /// Not TOML, or a key the file may not have (with its line and column).
    #[error("config file {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with the position.
        reason: String,
    },
    /// Well-formed, but a value is unusable.
    #[error("config file {path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The setting at fault.
        field: &'static str,
        /// Why its value cannot be used.
        reason: String,
    },
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            reason: describe_toml_error(text, &e),
        })?;
        if let Err(e) = crate::planner::Planners::from_config(&cfg.planners) {
            return Err(ConfigError::Invalid {
                path: origin.to_string(),
                field: "planners",
                reason: e.to_string(),
            });
        }
        if let Some(p) = cfg.poll_seconds {
            if !p.is_finite() || !(0.0..=3600.0).contains(&p) {
                return Err(ConfigError::Invalid {
                    path: origin.to_string(),
                    field: "poll_seconds",
                    reason: format!("must be a number of seconds from 0 to 3600, got {p:?}"),
                });
            }
        }
        let a = &cfg.audit;
        for (field, v) in [
            ("audit.drift_grace_seconds", a.drift_grace_seconds),
            ("audit.drain_limit_seconds", a.drain_limit_seconds),
            ("audit.boot_allowance_seconds", a.boot_allowance_seconds),
            ("audit.stale_worker_seconds", a.stale_worker_seconds),
            (
                "shutdown_grace_seconds",
                cfg.shutdown_grace_seconds.unwrap_or(0),
            ),
            (
                "unhealthy_after_seconds",
                cfg.unhealthy_after_seconds.unwrap_or(0),
            ),
        ] {
            if v > MAX_SETTING_SECONDS {
                return Err(ConfigError::Invalid {
                    path: origin.to_string(),
                    field,
                    reason: format!("at most {MAX_SETTING_SECONDS} seconds (100 years), got {v}"),
                });
            }
        }
        if cfg.concurrency == Some(0) {
            return Err(ConfigError::Invalid {
                path: origin.to_string(),
                field: "concurrency",
                reason: "must be at least 1".into(),
            });
        }
        Ok(cfg)
    }
}

/// Longest duration a setting in seconds may hold (100 years): beyond it, date arithmetic
/// overflows, and such a value can only be a mistake.
pub const MAX_SETTING_SECONDS: u64 = 100 * 365 * 86_400;

/// `toml`'s message with the line and column stated in one line (its own message spreads them
/// over a snippet that reads badly in a log).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_with_line_and_column() {
        let err = Config::parse("concurrency = 4\nconcurency = 5\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("config file x.toml: line 2, column 1: unknown field `concurency`"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let msg = Config::parse("log_format = \"json\"\n[executors\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn parses_full_file() {
        let cfg = Config::parse(
            "log_format = \"json\"\nconcurrency = 3\n[executors.shell]\ntimeout_seconds = 5\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(cfg.log_format, Some(LogFormat::Json));
        assert_eq!(cfg.concurrency, Some(3));
        #[cfg(feature = "shell")]
        assert_eq!(cfg.executors.shell.timeout_seconds, 5);
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        let msg = Config::parse("concurrency = 0", "c.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "config file c.toml: concurrency: must be at least 1");
    }

    #[test]
    fn numeric_edges_are_errors_naming_the_setting() {
        for (text, expected) in [
            ("poll_seconds = 1e300", "poll_seconds: must be a number of seconds from 0 to 3600, got 1e300"),
            ("[audit]\ndrift_grace_seconds = 9223372036854775807", "audit.drift_grace_seconds: at most 3153600000 seconds (100 years), got 9223372036854775807"),
            ("[audit]\nstale_worker_seconds = 9223372036854775807", "audit.stale_worker_seconds: at most"),
            ("shutdown_grace_seconds = 9223372036854775807", "shutdown_grace_seconds: at most"),
        ] {
            let msg = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(msg.starts_with(&format!("config file c.toml: {expected}")), "{text}: {msg}");
        }
        assert!(Config::parse(
            "poll_seconds = 3600\n[audit]\ndrift_grace_seconds = 3153600000",
            "c.toml"
        )
        .is_ok());
    }

    #[test]
    fn unreadable_file_is_named() {
        let msg = Config::load(Path::new("/nonexistent/autoscaler.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("config file /nonexistent/autoscaler.toml: "),
            "{msg}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests over config parsing: whatever the file holds, parsing returns a config or
    //! an error that names the file, and never panics.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Err(e) = Config::parse(&text, "f.toml") {
                prop_assert!(e.to_string().starts_with("config file f.toml: "));
            }
        }

        #[test]
        fn tomlish_text_never_panics(lines in proptest::collection::vec(
            prop_oneof![
                Just("[executors.shell]".to_string()),
                Just("[executors.gce-mig]".to_string()),
                Just("[planners.stock]".to_string()),
                "[a-z_]{1,12} = [0-9]{1,4}",
                "[a-z_]{1,12} = \"[a-z ]{0,8}\"",
                "(concurrency|max_step_up|timeout_seconds|workers_per_instance) = -?[0-9]{1,3}",
            ], 0..8)) {
            let text = lines.join("\n");
            if let Err(e) = Config::parse(&text, "f.toml") {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("config file f.toml: "), "{}", msg);
            }
        }
    }
}
