//! Running one command: process group, streamed output, timeout, kill.

use autoscaler_executor::{ErrorKind, ExecutorError};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// Kills the command's process group if the future running it is dropped (shutdown, or an
/// outer timeout), so no orphaned `terraform` keeps changing the fleet behind our back.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn signal(&self, sig: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg only sends a signal; a stale group id fails with ESRCH.
            unsafe {
                libc::killpg(pgid, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

fn stream<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    pool: String,
    name: &'static str,
) -> JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut last = None;
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "autoscaler::shell", pool = %pool, stream = name, "[{pool}] {line}");
            if !line.trim().is_empty() {
                last = Some(line);
            }
        }
        last
    })
}

/// Runs `command` with `shell -c` in a new process group; Ok when it exits 0.
pub(crate) async fn run(
    shell: &str,
    command: &str,
    env: &[(&str, String)],
    pool: &str,
    timeout: Duration,
    grace: Duration,
) -> Result<(), ExecutorError> {
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        ExecutorError::new(
            pool,
            ErrorKind::Spawn,
            format!("could not start {shell} -c for executor_command: {e}"),
        )
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|id| id as i32),
    };
    let out = stream(
        child.stdout.take().expect("piped"),
        pool.to_string(),
        "stdout",
    );
    let err = stream(
        child.stderr.take().expect("piped"),
        pool.to_string(),
        "stderr",
    );

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            guard.signal(libc::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                guard.signal(libc::SIGKILL);
                let _ = child.wait().await;
            }
            // Children of the shell may still hold the pipes; the guard's SIGKILL on drop
            // covers them, and we do not wait for the readers.
            drop(guard);
            out.abort();
            err.abort();
            return Err(ExecutorError::new(
                pool,
                ErrorKind::Timeout,
                format!(
                    "executor_command still running after {} s; killed its process group",
                    timeout.as_secs()
                ),
            ));
        }
    };
    let status = status.map_err(|e| {
        ExecutorError::new(
            pool,
            ErrorKind::Spawn,
            format!("waiting for executor_command: {e}"),
        )
    })?;
    // The shell has exited: kill anything it left behind in its group, then collect output.
    guard.signal(libc::SIGKILL);
    guard.pgid = None;
    let _ = out.await;
    let last_err = err.await.ok().flatten();
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let tail = last_err
        .map(|l| format!(": {}", l.chars().take(300).collect::<String>()))
        .unwrap_or_default();
    Err(ExecutorError::new(
        pool,
        ErrorKind::Command(code),
        format!("executor_command exited with status {code}{tail}"),
    ))
}
