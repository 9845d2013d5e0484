//! The `[executors.gce-mig]` section of the config file, and the two environment variables that
//! override it.

mod file;

use crate::GceMigError;
use serde::{Deserialize, Serialize};

/// Points the client at another Compute endpoint (`http://HOST:PORT`): the in-process test
/// double, a private endpoint, a recording proxy. The name is a contract with users and with the
/// end-to-end tests; it wins over the config file so a test can redirect an unchanged config.
pub const ENV_ENDPOINT: &str = "AUTOSCALER_GCE_ENDPOINT";

/// Chooses the credentials (`anonymous`, `adc`, or a path to a service-account key file); wins
/// over the config file for the same reason as [`ENV_ENDPOINT`].
pub const ENV_CREDENTIALS: &str = "AUTOSCALER_GCE_CREDENTIALS";

/// The largest `launch_failure_after_seconds`: a week, so the duration arithmetic is bounded.
pub const MAX_LAUNCH_FAILURE_AFTER: u64 = 7 * 24 * 3600;

/// Settings of the gce-mig executor, shared by every pool that names it.
///
/// Everything has a default so an empty section (or none) works on a GCE VM with a service
/// account; unknown keys are an error because a misspelt `workers_per_instance` silently left at
/// 1 would over-provision by the factor the user meant to divide by.
///
/// Read through [`file::ConfigFile`], which also accepts the pre-rename names
/// (`operation_timeout_secs`, `request_timeout_secs`, `credentials_timeout_secs`,
/// `retry_attempts`) with a deprecation warning, so existing config files keep working.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "file::ConfigFile")]
pub struct Config {
    /// Project for the short group forms `zones/Z/instanceGroupManagers/NAME` and
    /// `regions/R/instanceGroupManagers/NAME`, so pools need not repeat it.
    pub project: Option<String>,
    /// Compute API root, e.g. `http://127.0.0.1:8089` for the test double. Unset means
    /// `https://compute.googleapis.com`. [`ENV_ENDPOINT`] overrides it.
    pub endpoint: Option<String>,
    /// `adc` (Application Default Credentials, the default), `anonymous` (no token at all: only
    /// for test doubles and private endpoints), or a path to a service-account key JSON file.
    /// [`ENV_CREDENTIALS`] overrides it.
    pub credentials: Option<String>,
    /// Vespene workers each instance runs (supervisor starting N workers). The plan counts
    /// workers, the group counts instances, so the target is `ceil(size / workers_per_instance)`
    /// — this replaces the docs' advice to raise `multiplier`, which over-provisions.
    pub workers_per_instance: u32,
    /// One more name a worker on an instance may report, as a Jinja template with `name`,
    /// `zone` and `project`, rendered per instance. Scale-in already knows every instance by
    /// its name, custom `hostname`, internal DNS names (`NAME.ZONE.c.PROJECT.internal`,
    /// `NAME.c.PROJECT.internal`) and internal IPs; this adds a name those do not cover (a
    /// private DNS zone, say). Kept so existing configs stay valid; the default adds nothing new.
    pub hostname_match: String,
    /// Never remove an instance that lacks the drain agent (label `vespene_drain_agent=v1`):
    /// such instances are held and reported instead of being deleted on the best-effort path,
    /// which can lose a build a worker claims between the busy read and the delete.
    pub require_drain_agent: bool,
    /// Warn (once per pool) when the group's instances lack `vespene_worker=true` and
    /// `vespene_pool=<pool>`; checked whenever instances are listed (on scale-in).
    pub check_labels: bool,
    /// How long to wait for a resize or deleteInstances operation to reach DONE
    /// (was `operation_timeout_secs`, still accepted).
    pub operation_timeout_seconds: u64,
    /// Per HTTP attempt; a hung connection must not stall the pool's cycle
    /// (was `request_timeout_secs`, still accepted).
    pub request_timeout_seconds: u64,
    /// How long construction may spend proving the credentials yield a token, so a machine with
    /// no credentials fails in seconds instead of after a minute of metadata-server retries
    /// (was `credentials_timeout_secs`, still accepted).
    pub credentials_timeout_seconds: u64,
    /// Attempts per call (first try included) on 429, 5xx, `rateLimitExceeded`, timeouts and
    /// connection errors. Mutating calls are retried too: they carry a request id. The same
    /// name as aws-asg's (was `retry_attempts`, still accepted).
    pub max_attempts: u32,
    /// First pause between attempts; doubles each time up to `retry_max_backoff_ms`.
    pub retry_initial_backoff_ms: u64,
    /// Longest pause between attempts (a `Retry-After` header is honoured up to this).
    pub retry_max_backoff_ms: u64,
    /// First pause between operation polls; grows by half each poll, up to 5 s.
    pub poll_interval_ms: u64,
    /// `maxResults` for list calls (1..=500, Compute's maximum).
    pub page_size: u32,
    /// How long instances may stay in `CREATING` with errors from the cloud (a quota, a
    /// stockout) before the pool fails with status 13 (`launch_failed`) and the cloud's reason.
    /// A `resize` is DONE as soon as the creations are scheduled, and the group retries them
    /// by itself, so a short error is no failure; builds that wait longer than this are.
    /// 0: fail as soon as an error shows.
    pub launch_failure_after_seconds: u64,
    /// What a leaver kept for a pool's standby target (`Plan::standby`) becomes: `suspend`
    /// (the default: memory is kept, so it resumes in seconds with its worker still running,
    /// and you pay for memory and disk while it waits) or `stop` (only the disk is kept and
    /// paid for; it boots again when started, slower). See docs/gce-mig.md.
    pub standby_action: StandbyAction,
}

/// How the executor holds a standby instance: the two Compute standby states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StandbyAction {
    /// `suspendInstances` / `resumeInstances` (instance status SUSPENDED).
    #[default]
    Suspend,
    /// `stopInstances` / `startInstances` (instance status TERMINATED).
    Stop,
}

impl StandbyAction {
    /// The verb for log lines and "would …" actions.
    pub fn verb(&self) -> &'static str {
        match self {
            StandbyAction::Suspend => "suspend",
            StandbyAction::Stop => "stop",
        }
    }

    /// The verb that brings such an instance back.
    pub fn back_verb(&self) -> &'static str {
        match self {
            StandbyAction::Suspend => "resume",
            StandbyAction::Stop => "start",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            project: None,
            endpoint: None,
            credentials: None,
            workers_per_instance: 1,
            hostname_match: "{{ name }}".to_string(),
            require_drain_agent: false,
            check_labels: true,
            operation_timeout_seconds: 300,
            request_timeout_seconds: 30,
            credentials_timeout_seconds: 10,
            max_attempts: 5,
            retry_initial_backoff_ms: 500,
            retry_max_backoff_ms: 10_000,
            poll_interval_ms: 1_000,
            page_size: 500,
            launch_failure_after_seconds: 300,
            standby_action: StandbyAction::Suspend,
        }
    }
}

/// Which credentials the client uses, after the environment override is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsSource {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, the gcloud ADC file,
    /// else the metadata server.
    Adc,
    /// No token: for the test double and private endpoints that do not authenticate.
    Anonymous,
    /// A service-account key file.
    KeyFile(String),
}

impl CredentialsSource {
    fn parse(value: &str) -> Result<Self, GceMigError> {
        let v = value.trim();
        match v {
            "" | "adc" | "default" => Ok(CredentialsSource::Adc),
            "anonymous" => Ok(CredentialsSource::Anonymous),
            path if path.contains('/') || path.ends_with(".json") => {
                Ok(CredentialsSource::KeyFile(path.to_string()))
            }
            _ => Err(GceMigError::Config {
                setting: "credentials",
                // The value is a mode name or a path, never key material, so it can be echoed.
                message: format!(
                    "{v:?} is not `adc`, `anonymous` or a path to a service-account key file"
                ),
            }),
        }
    }

    /// A short description for logs (never the file's contents).
    pub fn describe(&self) -> String {
        match self {
            CredentialsSource::Adc => "application default credentials".into(),
            CredentialsSource::Anonymous => "anonymous".into(),
            CredentialsSource::KeyFile(p) => format!("service-account key file {p}"),
        }
    }
}

/// The config with the environment applied and every value checked.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub config: Config,
    pub endpoint: Option<String>,
    pub credentials: CredentialsSource,
}

impl Config {
    /// Applies [`ENV_ENDPOINT`] / [`ENV_CREDENTIALS`] from `lookup` and checks every value, so a
    /// bad setting is reported at start-up naming the setting rather than mid-cycle.
    pub(crate) fn resolve(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Resolved, GceMigError> {
        let cfg = self.clone();
        let bad = |setting: &'static str, message: String| GceMigError::Config { setting, message };

        if cfg.workers_per_instance == 0 {
            return Err(bad("workers_per_instance", "must be at least 1".into()));
        }
        if cfg.operation_timeout_seconds == 0 {
            return Err(bad(
                "operation_timeout_seconds (was operation_timeout_secs)",
                "must be at least 1".into(),
            ));
        }
        if cfg.request_timeout_seconds == 0 {
            return Err(bad(
                "request_timeout_seconds (was request_timeout_secs)",
                "must be at least 1".into(),
            ));
        }
        if cfg.credentials_timeout_seconds == 0 {
            return Err(bad(
                "credentials_timeout_seconds (was credentials_timeout_secs)",
                "must be at least 1".into(),
            ));
        }
        if cfg.max_attempts == 0 {
            return Err(bad(
                "max_attempts (was retry_attempts)",
                "must be at least 1 (the first try)".into(),
            ));
        }
        if cfg.retry_max_backoff_ms < cfg.retry_initial_backoff_ms {
            return Err(bad(
                "retry_max_backoff_ms",
                format!(
                    "{} is below retry_initial_backoff_ms ({})",
                    cfg.retry_max_backoff_ms, cfg.retry_initial_backoff_ms
                ),
            ));
        }
        if cfg.launch_failure_after_seconds > MAX_LAUNCH_FAILURE_AFTER {
            return Err(bad(
                "launch_failure_after_seconds",
                format!(
                    "{} is above {MAX_LAUNCH_FAILURE_AFTER} (a week): a launch failing that long is long known",
                    cfg.launch_failure_after_seconds
                ),
            ));
        }
        if cfg.page_size == 0 || cfg.page_size > 500 {
            return Err(bad(
                "page_size",
                format!("{} is outside 1..=500", cfg.page_size),
            ));
        }
        if let Some(p) = &cfg.project {
            if !crate::target::valid_project(p) {
                return Err(bad("project", format!("{p:?} is not a GCE project id")));
            }
        }
        crate::names::check_hostname_template(&cfg.hostname_match)
            .map_err(|e| bad("hostname_match", e))?;

        let endpoint = endpoint_of(&cfg, lookup)?;
        let credentials = credentials_of(&cfg, lookup, endpoint.as_deref())?;
        Ok(Resolved {
            endpoint: endpoint.map(|u| u.trim_end_matches('/').to_string()),
            credentials,
            config: cfg,
        })
    }
}

/// The endpoint in use, [`ENV_ENDPOINT`] first, checked to be an `http(s)://` URL with a host;
/// a bad value names the variable or the setting it came from.
fn endpoint_of(
    cfg: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, GceMigError> {
    let bad = |setting: &'static str, message: String| GceMigError::Config { setting, message };
    let endpoint = match lookup(ENV_ENDPOINT).filter(|v| !v.trim().is_empty()) {
        Some(v) => Some((v.trim().to_string(), ENV_ENDPOINT)),
        None => cfg
            .endpoint
            .clone()
            .map(|v| (v.trim().to_string(), "endpoint")),
    };
    if let Some((url, from)) = &endpoint {
        let setting = if *from == "endpoint" {
            "endpoint"
        } else {
            ENV_ENDPOINT
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                setting,
                format!("{url:?} must start with http:// or https://"),
            ));
        }
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad(setting, format!("{url:?} has no host")));
        }
    }
    Ok(endpoint.map(|(url, _)| url))
}

/// The credentials in use, [`ENV_CREDENTIALS`] first; refused with a token over plain http
/// to anything but this machine, so a token never crosses a network in clear text.
fn credentials_of(
    cfg: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
    endpoint: Option<&str>,
) -> Result<CredentialsSource, GceMigError> {
    let bad = |setting: &'static str, message: String| GceMigError::Config { setting, message };
    let credentials = match lookup(ENV_CREDENTIALS).filter(|v| !v.trim().is_empty()) {
        Some(v) => CredentialsSource::parse(&v).map_err(|e| match e {
            GceMigError::Config { message, .. } => bad(ENV_CREDENTIALS, message),
            other => other,
        })?,
        None => CredentialsSource::parse(cfg.credentials.as_deref().unwrap_or("adc"))?,
    };
    // A bearer token must not travel in clear text to anything but this machine.
    if let Some(url) = endpoint {
        if url.starts_with("http://")
            && credentials != CredentialsSource::Anonymous
            && !is_loopback_url(url)
        {
            return Err(bad(
                "endpoint",
                format!(
                    "{url:?} is plain http to a remote host; use https, or credentials = \"anonymous\" \
                     for an endpoint that needs no token"
                ),
            ));
        }
    }
    Ok(credentials)
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_adc_one_worker_and_google_endpoint() {
        let r = Config::default().resolve(&env(&[])).unwrap();
        assert_eq!(r.credentials, CredentialsSource::Adc);
        assert_eq!(r.endpoint, None);
        assert_eq!(r.config.workers_per_instance, 1);
        assert_eq!(r.config.hostname_match, "{{ name }}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let cfg = Config {
            endpoint: Some("https://compute.example.com".into()),
            credentials: Some("adc".into()),
            ..Config::default()
        };
        let r = cfg
            .resolve(&env(&[
                (ENV_ENDPOINT, "http://127.0.0.1:4567/"),
                (ENV_CREDENTIALS, "anonymous"),
            ]))
            .unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:4567"));
        assert_eq!(r.credentials, CredentialsSource::Anonymous);
    }

    #[test]
    fn toml_section_parses_and_rejects_unknown_keys() {
        let cfg: Config = toml::from_str(
            "project = \"my-proj\"\nworkers_per_instance = 4\ncredentials = \"anonymous\"\nendpoint = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        assert_eq!(cfg.workers_per_instance, 4);
        assert_eq!(cfg.project.as_deref(), Some("my-proj"));
        assert!(!cfg.require_drain_agent);
        let strict: Config = toml::from_str("require_drain_agent = true\n").unwrap();
        assert!(strict.require_drain_agent);
        let err = toml::from_str::<Config>("workers_per_instanse = 4\n").unwrap_err();
        assert!(err.to_string().contains("workers_per_instanse"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let check = |cfg: Config, setting: &str| {
            let err = cfg.resolve(&env(&[])).unwrap_err();
            assert!(
                err.to_string().contains(setting),
                "{err} should name {setting}"
            );
            assert_eq!(err.kind(), autoscaler_executor::ErrorKind::Config);
        };
        check(
            Config {
                workers_per_instance: 0,
                ..Config::default()
            },
            "workers_per_instance",
        );
        check(
            Config {
                max_attempts: 0,
                ..Config::default()
            },
            "retry_attempts",
        );
        check(
            Config {
                max_attempts: 0,
                ..Config::default()
            },
            "max_attempts",
        );
        check(
            Config {
                page_size: 501,
                ..Config::default()
            },
            "page_size",
        );
        check(
            Config {
                launch_failure_after_seconds: u64::MAX,
                ..Config::default()
            },
            "launch_failure_after_seconds",
        );
        check(
            Config {
                hostname_match: "{{ name ".into(),
                ..Config::default()
            },
            "hostname_match",
        );
        check(
            Config {
                hostname_match: "{{ nme }}".into(),
                ..Config::default()
            },
            "hostname_match",
        );
        check(
            Config {
                credentials: Some("sekrit".into()),
                ..Config::default()
            },
            "credentials",
        );
        check(
            Config {
                endpoint: Some("ftp://x".into()),
                ..Config::default()
            },
            "endpoint",
        );
        check(
            Config {
                project: Some("Bad Project".into()),
                ..Config::default()
            },
            "project",
        );
        let err = Config::default()
            .resolve(&env(&[(ENV_CREDENTIALS, "nonsense")]))
            .unwrap_err();
        assert!(err.to_string().contains(ENV_CREDENTIALS), "{err}");
    }

    #[test]
    fn tokens_never_go_over_plain_http_to_remote_hosts() {
        let remote = Config {
            endpoint: Some("http://10.1.2.3:80".into()),
            ..Config::default()
        };
        let err = remote.resolve(&env(&[])).unwrap_err();
        assert!(err.to_string().contains("plain http"), "{err}");
        // Loopback or anonymous is fine.
        let local = Config {
            endpoint: Some("http://127.0.0.1:80".into()),
            ..Config::default()
        };
        assert!(local.resolve(&env(&[])).is_ok());
        let anon = Config {
            endpoint: Some("http://10.1.2.3:80".into()),
            credentials: Some("anonymous".into()),
            ..Config::default()
        };
        assert!(anon.resolve(&env(&[])).is_ok());
    }
}
