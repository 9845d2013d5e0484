//! Bad input, table-driven: each bad pool gets a specific error naming the pool and the field,
//! a non-zero `autoscaling_status`, no executor call, and the good pool beside it is unaffected.
//! Then the inputs that stop the process before any pool (config file, database URL).

mod common;

use autoscaler_executor::WorkerPool;
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
