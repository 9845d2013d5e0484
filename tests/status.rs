//! `autoscaler status`, `completions` and `man`: the real binary against PostgreSQL and SQLite
//! (Vespene's schema), with a gce-mig pool read through the Compute double.

mod common;

use autoscaler_gce_double::{ComputeDouble, InstanceSpec};
use common::{shell_pool, TestDb};
use std::process::Output;

const GROUP: &str = "projects/p1/zones/us-central1-a/instanceGroupManagers/linux-mig";

fn run(url: &str, endpoint: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env("AUTOSCALER_GCE_ENDPOINT", endpoint)
        .env("AUTOSCALER_GCE_CREDENTIALS", "anonymous")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

db_test!(
    status_explains_each_pool_and_changes_nothing,
    |t: TestDb| async move {
        let (_addr, double) = ComputeDouble::start();
        double.add_group(GROUP, &[]);
        for name in ["w-1", "w-2"] {
            double.add_instance(
                GROUP,
                InstanceSpec::new(name, "2026-01-01T00:00:00.000-07:00"),
            );
        }
        let mut linux = shell_pool(1, "linux", GROUP);
        linux.executor = Some("gce-mig".into());
        linux.autoscaling_status = Some(0);
        linux.last_autoscaled = Some(chrono::Utc::now());
        let mut shell = shell_pool(2, "shell", "true");
        shell.autoscaling_status = Some(5);
        shell.build_latest = false;
        let mut broken = shell_pool(3, "broken", "true");
        broken.minimum = 9;
        broken.maximum = 2;
        broken.autoscaling_status = Some(12);
        t.add_pool(&linux).await;
        t.add_pool(&shell).await;
        t.add_pool(&broken).await;
        t.add_builds(&[
            (1, 2, "QUEUED", Some(1), None),
            (2, 2, "QUEUED", Some(1), None),
            (3, 2, "RUNNING", Some(2), None),
            (4, 1, "QUEUED", Some(1), None),
        ])
        .await;
        let before: Vec<_> = [
            t.pool("linux").await,
            t.pool("shell").await,
            t.pool("broken").await,
        ]
        .to_vec();

        let out = run(&t.url, &double.endpoint(), &["status", "--format", "json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["format"], "vespene-autoscaler-status/1");
        let pools = doc["pools"].as_array().unwrap();
        let row = |name: &str| pools.iter().find(|p| p["pool"] == name).unwrap().clone();
        let linux_row = row("linux");
        assert_eq!(linux_row["queued"], 1);
        assert_eq!(linux_row["wants"], 1);
        assert_eq!(
            linux_row["desired"], 2,
            "the group's target size, from the double"
        );
        assert_eq!(linux_row["current"], 2);
        assert_eq!(
            linux_row["status_meaning"],
            "ok: the last attempt succeeded"
        );
        let shell_row = row("shell");
        assert_eq!(
            (shell_row["queued"].clone(), shell_row["running"].clone()),
            (2.into(), 1.into())
        );
        assert_eq!(
            shell_row["wants"], 3,
            "build_latest off: 2 queued + 1 running"
        );
        assert!(
            shell_row["desired"].is_null(),
            "a shell command has no target to read"
        );
        assert!(shell_row["status_meaning"]
            .as_str()
            .unwrap()
            .starts_with("not found"));
        let broken_row = row("broken");
        assert!(broken_row["wants"].is_null());
        assert!(
            broken_row["plan_error"]
                .as_str()
                .unwrap()
                .contains("minimum"),
            "{broken_row}"
        );
        assert!(broken_row["status_meaning"]
            .as_str()
            .unwrap()
            .starts_with("held"));

        let out = run(
            &t.url,
            &double.endpoint(),
            &["status", "--queue", "shell", "--queue", "broken"],
        );
        assert_eq!(out.status.code(), Some(0));
        let table = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("POOL"), "{table}");
        assert!(table.contains("2 (1 projects)"), "{table}");
        assert!(table.contains("5 not found"), "{table}");
        assert!(!table.contains("linux"), "only the named pools: {table}");
        // Columns line up: every row's STATUS column starts where the header's does.
        let col = lines[0].find("STATUS").unwrap();
        for l in lines.iter().skip(1).filter(|l| !l.starts_with("    ")) {
            assert!(
                l.len() > col && !l[..col].ends_with(|c: char| !c.is_whitespace()),
                "{table}"
            );
        }

        let after: Vec<_> = [
            t.pool("linux").await,
            t.pool("shell").await,
            t.pool("broken").await,
        ]
        .to_vec();
        assert_eq!(before, after, "status writes nothing");
        assert_eq!(double.target_size(GROUP), Some(2), "status scales nothing");
        t.cleanup().await;
    }
);

#[test]
fn status_with_an_unreachable_database_exits_2() {
    let out = run(
        "postgres://nobody:secret-pw@127.0.0.1:1/x",
        "http://127.0.0.1:1",
        &["status"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secret-pw"));
}

#[test]
fn completions_and_man_page_come_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run("sqlite:///nonexistent/x.db", "", &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        let (queue, force) = if shell == "fish" {
            ("-l queue", "-l force")
        } else {
            ("--queue", "--force")
        };
        for word in ["autoscaler", "status", "audit", "simulate", queue, force] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = run("sqlite:///nonexistent/x.db", "", &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH autoscaler"),
        "{}",
        &page[..200.min(page.len())]
    );
    for word in [
        "\\-\\-queue",
        "\\-\\-force",
        "\\-\\-sleep",
        "status",
        "audit",
    ] {
        assert!(page.contains(word), "man page lacks {word}");
    }
}
