//! The shell executor against a real `/bin/sh`.

use autoscaler_executor::{ErrorKind, Executor, Plan, ScaleRequest, WorkerPool};
use autoscaler_shell::{Config, ShellExecutor};
use std::time::{Duration, Instant};

use autoscaler_executor::testing::StaticDirectory;

fn pool(command: &str) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(3, "linux-large");
    p.executor = Some("shell".into());
    p.executor_command = command.into();
    p
}

async fn scale(
    exec: &ShellExecutor,
    p: &WorkerPool,
    dry_run: bool,
) -> Result<autoscaler_executor::Outcome, autoscaler_executor::ExecutorError> {
    exec.scale(ScaleRequest {
        pool: p,
        plan: Plan {
            size: 4,
            queued_size: 1,
            standby: 0,
        },
        dry_run,
        workers: &StaticDirectory::idle(),
    })
    .await
}

#[tokio::test]
async fn runs_the_rendered_command_with_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = pool(&format!(
        "echo {{{{ worker_pool.name }}}} {{{{ size }}}} {{{{ queued_size }}}} $VESPENE_POOL $VESPENE_SIZE > {}",
        out.display()
    ));
    let exec = ShellExecutor::new(Config::default());
    let outcome = scale(&exec, &p, false).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "linux-large 4 1 linux-large 4\n"
    );
    assert!(
        outcome.actions[0].starts_with("ran: echo linux-large 4 1"),
        "{:?}",
        outcome.actions
    );
}

#[tokio::test]
async fn dry_run_renders_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let p = pool(&format!("touch {} # {{{{ size }}}}", marker.display()));
    let outcome = scale(&ShellExecutor::new(Config::default()), &p, true)
        .await
        .unwrap();
    assert_eq!(
        outcome.actions,
        vec![format!("would run: touch {} # 4", marker.display())]
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn exit_code_becomes_the_status() {
    let p = pool("echo about to fail >&2; exit 7");
    let err = scale(&ShellExecutor::new(Config::default()), &p, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Command(7));
    assert_eq!(err.status_code(), 7);
    assert_eq!(
        err.to_string(),
        "pool linux-large: executor_command exited with status 7: about to fail"
    );
}

#[tokio::test]
async fn template_errors_are_distinct() {
    let err = scale(
        &ShellExecutor::new(Config::default()),
        &pool("echo {{ nope }}"),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Template);
    assert!(
        err.to_string()
            .starts_with("pool linux-large: executor_command: undefined variable"),
        "{err}"
    );
    let err = scale(
        &ShellExecutor::new(Config::default()),
        &pool("echo {{ size"),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("pool linux-large: executor_command: template syntax error at line 1"),
        "{err}"
    );
}

#[tokio::test]
async fn spawn_failure_is_distinct() {
    let cfg = Config {
        shell: "/nonexistent/sh".into(),
        ..Config::default()
    };
    let err = scale(&ShellExecutor::new(cfg), &pool("true"), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Spawn);
    assert!(
        err.to_string()
            .contains("could not start /nonexistent/sh -c"),
        "{err}"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    // The shell starts a background grandchild that would outlive a plain kill of the shell.
    let p = pool(&format!(
        "sleep 300 & echo $! > {}; wait",
        pidfile.display()
    ));
    let cfg = Config {
        timeout_seconds: 1,
        kill_grace_seconds: 1,
        ..Config::default()
    };
    let started = Instant::now();
    let err = scale(&ShellExecutor::new(cfg), &p, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert_eq!(err.status_code(), 124);
    assert!(err.to_string().contains("still running after 1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Give the kernel a moment to reap, then the grandchild must be gone.
    let mut alive = true;
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie (state Z) awaiting its reaper: either way it no longer runs.
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            alive = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive, "grandchild {pid} survived the timeout");
}

fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && stat.split_whitespace().nth(2) != Some("Z")
}

/// Issue 12 item 2: a process that leaves the group (`setsid`) and keeps the output pipe open
/// does not hold the call: the shell's exit plus a short drain ends it.
#[tokio::test]
async fn a_detached_child_holding_the_pipe_does_not_stall_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("detached.pid");
    // The pid file is written once the child has left the group (after setsid).
    let p = pool(&format!(
        "setsid sh -c 'echo $$ > {f}; exec sleep 60' & while [ ! -s {f} ]; do sleep 0.01; done; echo launched",
        f = pidfile.display()
    ));
    let cfg = Config {
        timeout_seconds: 30,
        ..Config::default()
    };
    let started = Instant::now();
    let outcome = scale(&ShellExecutor::new(cfg), &p, false).await;
    let took = started.elapsed();
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let detached_alive = running(pid);
    unsafe { libc_kill(pid, 9) };
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        detached_alive,
        "the test's premise: the detached child outlives the call"
    );
    // The drain is 2 s; the child would hold the pipe for 60 s.
    assert!(took < Duration::from_secs(20), "the call took {took:?}");
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Issue 12 item 5: bytes that are not UTF-8 are logged lossily; the pipe stays open and the
/// command finishes its work with its own exit code (not 141, SIGPIPE).
#[tokio::test]
async fn non_utf8_output_does_not_kill_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let p = pool(&format!(
        "printf 'bad \\377\\376 bytes\\n'; printf '\\377\\n' >&2; i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; touch {}; echo last words >&2; exit 7",
        done.display()
    ));
    let err = scale(&ShellExecutor::new(Config::default()), &p, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Command(7), "{err}");
    assert!(err.to_string().ends_with("status 7: last words"), "{err}");
    assert!(done.exists(), "the command did not finish its work");
}

/// Issue 12 item 6: output without a newline is read to the end, holding at most one capped
/// line, and the command finishes normally.
#[tokio::test]
async fn a_line_without_newline_is_capped_and_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let p = pool(&format!(
        "head -c 30000000 /dev/zero | tr '\\0' x >&2; touch {}; exit 5",
        done.display()
    ));
    let err = scale(&ShellExecutor::new(Config::default()), &p, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Command(5), "{err}");
    assert!(done.exists());
}
