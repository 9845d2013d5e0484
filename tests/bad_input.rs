//! Bad input, table-driven: each bad pool gets a specific error naming the pool and the field,
//! a non-zero `autoscaling_status`, no executor call, and the good pool beside it is unaffected.
//! Then the inputs that stop the process before any pool (config file, database URL).

mod common;

use autoscaler_executor::WorkerPool;
use common::process::run_bounded;
use common::{shell_pool, TestDb};
use std::process::Command;

struct Case {
    name: &'static str,
    mutate: fn(&mut WorkerPool, &str),
    status: i32,
    message: &'static str,
}

fn set_cmd(p: &mut WorkerPool, c: &str) {
    p.executor_command = c.into();
}

const CASES: &[Case] = &[
    Case { name: "min_above_max", mutate: |p, _| { p.minimum = 5; p.maximum = 3 }, status: 2, message: "pool bad: minimum: 5 is greater than maximum 3" },
    Case { name: "negative_max", mutate: |p, _| p.maximum = -1, status: 2, message: "pool bad: maximum: must not be negative, got -1" },
    Case { name: "nan_weight", mutate: |p, _| p.queued_weight = f64::NAN, status: 2, message: "pool bad: queued_weight: must be a finite number, got NaN" },
    Case { name: "infinite_weight", mutate: |p, _| p.running_weight = f64::INFINITY, status: 2, message: "pool bad: running_weight: must be a finite number, got inf" },
    Case { name: "negative_weight", mutate: |p, _| p.queued_weight = -1.0, status: 2, message: "pool bad: queued_weight: must not be negative, got -1" },
    Case { name: "negative_multiplier", mutate: |p, _| p.multiplier = -2.0, status: 2, message: "pool bad: multiplier: must not be negative, got -2" },
    Case { name: "nan_multiplier", mutate: |p, _| p.multiplier = f64::NAN, status: 2, message: "pool bad: multiplier: must be a finite number, got NaN" },
    Case { name: "excess_below_minus_max", mutate: |p, _| p.excess = -50, status: 2, message: "pool bad: excess: -50 is below -maximum (-10)" },
    Case { name: "negative_reevaluate", mutate: |p, _| p.reevaluate_minutes = -1, status: 2, message: "pool bad: reevaluate_minutes: must not be negative, got -1" },
    Case { name: "unknown_planner", mutate: |p, _| p.planner = Some("oracle".into()), status: 2, message: "pool bad: planner: unknown planner \"oracle\"" },
    Case { name: "unknown_executor", mutate: |p, _| p.executor = Some("kubernetes".into()), status: 2, message: "pool bad: executor: unknown executor \"kubernetes\"" },
    Case { name: "no_executor", mutate: |p, _| p.executor = None, status: 2, message: "pool bad: executor: not set" },
    Case { name: "template_syntax", mutate: |p, f| set_cmd(p, &format!("touch {f} {{{{ size ")), status: 3, message: "pool bad: executor_command: template syntax error at line 1" },
    Case { name: "undefined_variable", mutate: |p, f| set_cmd(p, &format!("touch {f} {{{{ worker_pool.colour }}}}")), status: 3, message: "pool bad: executor_command: undefined variable in template at line 1" },
    Case { name: "renders_empty", mutate: |p, f| set_cmd(p, &format!("{{% if false %}}touch {f}{{% endif %}}")), status: 3, message: "pool bad: executor_command: template rendered an empty command" },
    Case { name: "cloud_empty_command", mutate: |p, _| { p.executor = Some("gce-mig".into()); p.executor_command = String::new() }, status: 3, message: "pool bad: executor_command: template rendered an empty command" },
    Case { name: "gce_malformed_path", mutate: |p, _| { p.executor = Some("gce-mig".into()); p.executor_command = "projects/p/zones/z/{{ worker_pool.name }}".into() }, status: 2, message: "pool bad: executor_command renders to \"projects/p/zones/z/bad\", which is not a managed instance group" },
];

#[tokio::test]
async fn each_bad_pool_fails_alone_with_a_named_field() {
    for (engine, case) in [common::Engine::Sqlite, common::Engine::Postgres]
        .into_iter()
        .flat_map(|e| CASES.iter().map(move |c| (e, c)))
    {
        let t = TestDb::new(engine).await;
        let dir = tempfile::tempdir().unwrap();
        let bad_file = dir.path().join("bad-ran");
        let good_file = dir.path().join("good-ran");
        let mut bad = shell_pool(1, "bad", &format!("touch {}", bad_file.display()));
        (case.mutate)(&mut bad, &bad_file.display().to_string());
        let good = shell_pool(2, "good", &format!("touch {}", good_file.display()));
        t.add_pool(&bad).await;
        t.add_pool(&good).await;
        let out = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
            .args([
                "--database-url",
                &t.url,
                "--queue",
                "bad",
                "--queue",
                "good",
                "--force",
            ])
            .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
            .env("AUTOSCALER_GCE_ENDPOINT", "http://127.0.0.1:1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let label = format!("{} on {engine:?}", case.name);
        assert_eq!(out.status.code(), Some(1), "{label}: {stderr}");
        assert!(
            stderr.contains(&format!("autoscaler: pool bad failed: {}", case.message)),
            "{}: {stderr}",
            case.name
        );
        assert_eq!(
            t.status_of("bad").await,
            (Some(case.status), None),
            "{}",
            case.name
        );
        assert!(
            !bad_file.exists(),
            "{}: the bad pool's executor ran",
            case.name
        );
        assert!(
            good_file.exists(),
            "{}: the good pool did not run",
            case.name
        );
        assert_eq!(t.status_of("good").await.0, Some(0), "{label}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn pool_name_with_shell_metacharacters_is_one_word_when_quoted() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("names");
    let name = "a b;$(touch /tmp/autoscaler-injected)`id`'\"";
    t.add_pool(&shell_pool(
        1,
        name,
        &format!(
            "printf '[%s]' {{{{ worker_pool.name | shell_quote }}}} > {}",
            out_file.display()
        ),
    ))
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["--database-url", &t.url, "--queue", name, "--force"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        format!("[{name}]")
    );
    assert!(!std::path::Path::new("/tmp/autoscaler-injected").exists());
    t.cleanup().await;
}

/// Inputs that stop the process before any pool is touched: exit 2 and a precise message.
#[test]
fn config_and_url_errors_stop_before_any_pool() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--config".into(), write("syntax.toml", "concurrency = 4\n[executors\n").display().to_string()],
            format!("config file {}: line 2, column 11:", dir.path().join("syntax.toml").display()),
        ),
        (
            vec!["--config".into(), write("unknown.toml", "concurrency = 4\n\n[executors.shell]\ntimeout_secs = 5\n").display().to_string()],
            format!("config file {}: line 4, column 1: unknown field `timeout_secs`", dir.path().join("unknown.toml").display()),
        ),
        (
            vec!["--config".into(), write("gce.toml", "[executors.gce-mig]\nworkers_per_instanse = 2\n").display().to_string()],
            "line 2, column 1: unknown field `workers_per_instanse`".into(),
        ),
        (
            vec!["--config".into(), write("planner.toml", "[planners.oracle]\n").display().to_string()],
            "planners: [planners.oracle]: unknown planner".into(),
        ),
        (
            vec!["--config".into(), write("types.toml", "concurrency = \"lots\"\n").display().to_string()],
            "line 1, column 15: invalid type: string \"lots\", expected usize".into(),
        ),
        (
            vec!["--config".into(), "/nonexistent/autoscaler.toml".into()],
            "config file /nonexistent/autoscaler.toml: No such file or directory".into(),
        ),
        (
            vec!["--database-url".into(), "mysql://u:topsecret@h/db".into()],
            "invalid --database-url mysql://u:***@h/db: expected a postgres://, postgresql:// or sqlite: URL".into(),
        ),
        (
            vec!["--database-url".into(), "postgres://u:topsecret@h:notaport/db".into()],
            "invalid --database-url".into(),
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
            .args(&args)
            .args(["--queue", "x", "--force"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("topsecret"), "{stderr}");
    }
}

/// Issue 12 item 1: PostgreSQL timestamps outside chrono's range ('infinity', '-infinity', year
/// 294000) fail their own pool with status 2, naming the column; the process does not panic.
#[tokio::test]
async fn out_of_range_timestamps_fail_only_their_pool() {
    let t = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let good_file = dir.path().join("good-ran");
    t.add_pool(&shell_pool(
        1,
        "good",
        &format!("touch {}", good_file.display()),
    ))
    .await;
    let bad = [
        ("inf", "infinity"),
        ("ninf", "-infinity"),
        ("far", "294000-01-01 00:00:00+00"),
    ];
    for (i, (name, value)) in bad.iter().enumerate() {
        let ran = dir.path().join(name);
        t.add_pool(&shell_pool(
            i as i64 + 2,
            name,
            &format!("touch {}", ran.display()),
        ))
        .await;
        t.exec(&format!(
            "UPDATE worker_pools SET last_autoscaled = '{value}' WHERE name = '{name}'"
        ))
        .await;
    }
    let mut args = vec!["--database-url", &t.url, "--force"];
    for n in ["good", "inf", "ninf", "far"] {
        args.extend(["--queue", n]);
    }
    let out = run_bounded(&args, &[], std::time::Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for (name, _) in bad {
        assert!(
            stderr.contains(&format!(
                "autoscaler: pool {name} failed: pool {name}: last_autoscaled: cannot be read"
            )),
            "{name}: {stderr}"
        );
        assert!(
            !dir.path().join(name).exists(),
            "{name}: acted on a row that failed to read"
        );
        let status: (i32,) =
            sqlx::query_as("SELECT autoscaling_status FROM worker_pools WHERE name = $1")
                .bind(name)
                .fetch_one(match &t.db {
                    autoscaler::db::Database::Postgres(p) => p,
                    _ => unreachable!(),
                })
                .await
                .unwrap();
        assert_eq!(status.0, 2, "{name}");
    }
    assert!(good_file.exists(), "the good pool did not run");
    assert_eq!(t.status_of("good").await.0, Some(0));
    t.cleanup().await;
}

/// Issue 12 item 1: `audit` and `simulate --export-trace` read such rows one by one too: the
/// unreadable row is named (column and all), the rest is still read, and nothing panics.
#[tokio::test]
async fn audit_and_trace_export_survive_out_of_range_timestamps() {
    let t = TestDb::postgres().await;
    let mut cloud = shell_pool(1, "cloudy", "projects/p/zones/z/instanceGroupManagers/g");
    cloud.executor = Some("gce-mig".into());
    t.add_pool(&cloud).await;
    t.add_pool(&shell_pool(2, "shelly", "true")).await;
    t.exec("UPDATE worker_pools SET last_autoscaled = 'infinity'")
        .await;
    t.add_worker(7, "w7").await;
    t.exec("UPDATE workers SET last_checkin = '-infinity' WHERE id = 7")
        .await;
    let out = run_bounded(
        &["--database-url", &t.url, "audit", "--format", "json"],
        &[
            ("AUTOSCALER_GCE_CREDENTIALS", "anonymous"),
            ("AUTOSCALER_GCE_ENDPOINT", "http://127.0.0.1:1"),
        ],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("pool cloudy failed: pool cloudy: last_autoscaled: cannot be read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("worker 7 failed: workers row 7: last_checkin: cannot be read"),
        "{stderr}"
    );
    // A shell pool is not the audit's business, readable or not.
    assert!(!stderr.contains("shelly"), "{stderr}");

    // A trace: build 1 ran normally, build 2's queued_time is 'infinity'.
    t.exec("UPDATE worker_pools SET last_autoscaled = NULL")
        .await;
    t.add_builds(&[
        (1, 2, "SUCCESS", Some(1), None),
        (2, 2, "SUCCESS", Some(1), None),
    ])
    .await;
    t.exec(
        "UPDATE builds SET queued_time = '2024-03-04 09:00:00+00', start_time = '2024-03-04 09:00:10+00', \
         end_time = '2024-03-04 09:05:00+00'; UPDATE builds SET queued_time = 'infinity' WHERE id = 2",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let out = run_bounded(
        &[
            "--database-url",
            &t.url,
            "simulate",
            "--export-trace",
            csv.to_str().unwrap(),
            "--from-db",
            "shelly",
            "--since",
            "2024-01-01",
        ],
        &[],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("left out builds row 2: queued_time: cannot be read"),
        "{stderr}"
    );
    assert!(stderr.contains("wrote 1 builds of pool shelly"), "{stderr}");
    t.cleanup().await;
}

/// Issue 12 item 3: a template that would render for ever fails its pool with status 3, and
/// the other pool of the cycle runs.
#[tokio::test]
async fn a_runaway_template_fails_its_pool_alone() {
    let t = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let good_file = dir.path().join("good-ran");
    t.add_pool(&shell_pool(
        1,
        "loop",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    ))
    .await;
    t.add_pool(&shell_pool(
        2,
        "good",
        &format!("touch {}", good_file.display()),
    ))
    .await;
    let out = run_bounded(
        &[
            "--database-url",
            &t.url,
            "--queue",
            "loop",
            "--queue",
            "good",
            "--force",
        ],
        &[],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "pool loop failed: pool loop: executor_command: template exceeded its render budget"
        ),
        "{stderr}"
    );
    assert_eq!(t.status_of("loop").await.0, Some(3));
    assert!(good_file.exists());
    t.cleanup().await;
}

/// Issue 12 item 12: numeric edges are usage or config errors (exit 2, naming the setting),
/// never a panic or a hang.
#[test]
fn numeric_edges_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let trace = cfg("t.csv", "queued_at,duration_seconds\n0,60\n");
    let poll = cfg("poll.toml", "poll_seconds = 1e300\n");
    let drift = cfg(
        "drift.toml",
        "[audit]\ndrift_grace_seconds = 9223372036854775807\n",
    );
    let db = dir.path().join("v.db");
    let url = format!("sqlite://{}", db.display());
    let init = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(["db", "init", "--database-url", &url])
        .output()
        .unwrap();
    assert!(init.status.success());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--queue", "x", "--sleep", "9223372036854775807"],
            "--sleep",
        ),
        (vec!["--queue", "x", "--sleep", "0"], "--sleep"),
        (
            vec!["--queue", "x", "--config", &poll],
            "poll_seconds: must be a number of seconds from 0 to 3600",
        ),
        (
            vec!["audit", "--older-than", "10000000000000000"],
            "is longer than 100 years",
        ),
        (
            vec!["audit", "--older-than", "999999999999999999w"],
            "is too long",
        ),
        (
            vec!["--config", &drift, "audit"],
            "audit.drift_grace_seconds: at most",
        ),
        (
            vec!["simulate", "--trace", &trace, "--boot-seconds", "1e16"],
            "--boot-seconds: at most 604800 seconds",
        ),
        (
            vec![
                "simulate",
                "--trace",
                &trace,
                "--sleep",
                "9223372036854775807",
            ],
            "--sleep: must be 1 to 604800 seconds",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend(args.iter().copied());
        let out = run_bounded(&all, &[], std::time::Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Issue 12 item 9: no URL parameter value reaches the logs or errors, whatever its name, in
/// any subcommand.
#[test]
fn url_parameter_values_are_never_printed() {
    let base = common::admin_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{sep}sslpassword=topsecret1&Password=topsecret2&application_name=topsecret3"
    );
    let runs: Vec<Vec<&str>> = vec![
        vec!["--queue", "nonexistent-pool", "--force"],
        vec!["audit", "--queue", "nonexistent-pool"],
        vec![
            "simulate",
            "--from-db",
            "nonexistent-pool",
            "--trace",
            "/nonexistent.csv",
        ],
    ];
    for args in runs {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend(args.iter().copied());
        let out = run_bounded(
            &all,
            &[("RUST_LOG", "debug")],
            std::time::Duration::from_secs(60),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("topsecret"), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    // The warning names what it ignores.
    let mut all = vec!["--database-url", url.as_str()];
    all.extend(["--queue", "nonexistent-pool", "--force"]);
    let out = run_bounded(&all, &[], std::time::Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ignoring unrecognized connect parameter(s) sslpassword, Password"),
        "{stderr}"
    );
}

/// Issue 12 item 15: text logs cannot be forged by a pool name or command output, nor carry
/// escape sequences to the terminal.
#[tokio::test]
async fn text_logs_escape_control_characters() {
    let t = TestDb::sqlite().await;
    let name = "evil\nERROR pool prod failed: forged";
    t.add_pool(&shell_pool(
        1,
        name,
        "printf 'out\\033[2Jput\\nsecond\\rline\\n'; exit 3",
    ))
    .await;
    let out = run_bounded(
        &["--database-url", &t.url, "--queue", name, "--force"],
        &[("RUST_LOG", "info")],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    let log_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("autoscaler: "))
        .collect();
    assert!(
        log_lines.iter().all(|l| !l.starts_with("ERROR pool prod")),
        "{stderr}"
    );
    assert!(
        stderr.contains("evil\\nERROR pool prod failed: forged"),
        "{stderr}"
    );
    assert!(stderr.contains("out\\x1b[2Jput"), "{stderr}");
    t.cleanup().await;
}

/// Issue 12 item 15: a non-cloud pool row that cannot be read does not fail `audit`.
#[tokio::test]
async fn audit_skips_an_unreadable_pool_it_would_not_audit() {
    let t = TestDb::sqlite().await;
    t.add_pool(&shell_pool(1, "shelly", "true")).await;
    t.exec("UPDATE worker_pools SET multiplier = 'lots' WHERE id = 1")
        .await;
    let out = run_bounded(
        &["--database-url", &t.url, "audit"],
        &[],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Named explicitly, it is the audit's business: reported, exit 2.
    let out = run_bounded(
        &["--database-url", &t.url, "audit", "--queue", "shelly"],
        &[],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pool shelly: multiplier: cannot be read"),
        "{stderr}"
    );
    t.cleanup().await;
}
