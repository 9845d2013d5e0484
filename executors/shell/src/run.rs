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

/// Bytes of one output line kept for the log; the rest of the line is read and dropped, so a
/// command that prints hundreds of megabytes without a newline costs this much memory, not that.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// After the shell exits, how long its output may still take to reach EOF. A process that left
/// the group (`setsid cmd &`) keeps the pipe open for as long as it lives; the call does not
/// wait for it beyond this.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Logs one output line: bytes that are not UTF-8 are shown as U+FFFD rather than ending the
/// reader (which would close the pipe and kill the command with SIGPIPE).
fn emit(pool: &str, name: &str, line: &[u8], cut: bool, last: &mut Option<String>) {
    let mut text = String::from_utf8_lossy(line).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    if cut {
        text.push_str(&format!(" … (line cut at {MAX_LINE_BYTES} bytes)"));
    }
    tracing::info!(target: "autoscaler::shell", pool = %pool, stream = name, "[{pool}] {text}");
    if !text.trim().is_empty() {
        *last = Some(text);
    }
}

/// Reads a pipe to its end, whatever it holds, logging line by line; returns the last
/// non-blank line (for the error message of a failed command).
async fn read_lines<R: AsyncRead + Unpin>(reader: R, pool: &str, name: &str) -> Option<String> {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut last = None;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(target: "autoscaler::shell", pool = %pool, "[{pool}] reading {name}: {e}");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let (chunk, used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE_BYTES - line.len();
        if chunk.len() > room {
            line.extend_from_slice(&chunk[..room]);
            cut = true;
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume(used);
        if end {
            emit(pool, name, &line, cut, &mut last);
            line.clear();
            cut = false;
        }
    }
    if !line.is_empty() || cut {
        emit(pool, name, &line, cut, &mut last);
    }
    last
}

fn stream<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    pool: String,
    name: &'static str,
) -> JoinHandle<Option<String>> {
    tokio::spawn(async move { read_lines(reader, &pool, name).await })
}

/// Kills the command's process group if the autoscaler dies without cleaning up (SIGKILL, the
/// OOM killer), so a restarted autoscaler never runs the pool while the orphan still does: a
/// `sh` in a group of its own that waits for its stdin, a pipe only this process holds, to close.
/// Dropped when the call ends normally, it is killed first (and never signals the group).
fn watchdog(pgid: i32) -> Option<tokio::process::Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg("read -r _; kill -9 -\"$1\" 2>/dev/null")
        .arg("autoscaler-watchdog")
        .arg(pgid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tracing::warn!("could not start the watchdog of process group {pgid}: {e}"))
        .ok()
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
    let _watchdog = guard.pgid.and_then(watchdog);
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
    // The shell has exited: kill anything it left behind in its group, then collect output,
    // waiting no longer than OUTPUT_DRAIN for a process outside the group that holds the pipe.
    guard.signal(libc::SIGKILL);
    guard.pgid = None;
    let (mut out, mut err) = (out, err);
    let readers = async {
        let _ = (&mut out).await;
        (&mut err).await.ok().flatten()
    };
    let last_err = match tokio::time::timeout(OUTPUT_DRAIN, readers).await {
        Ok(last_err) => last_err,
        Err(_) => {
            out.abort();
            err.abort();
            tracing::warn!(target: "autoscaler::shell", pool = %pool,
                "[{pool}] executor_command exited, but a process it started outside its process group \
                 still holds its output; no longer reading it");
            None
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of `n` bytes of `x`, then an optional newline and a second line.
    struct Endless {
        left: usize,
        tail: &'static [u8],
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.left > 0 {
                let n = self.left.min(buf.remaining());
                buf.put_slice(&vec![b'x'; n]);
                self.left -= n;
            } else {
                let n = self.tail.len().min(buf.remaining());
                let tail = self.tail;
                buf.put_slice(&tail[..n]);
                self.tail = &tail[n..];
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn one_line_is_capped_and_the_rest_is_still_read() {
        let last = read_lines(
            Endless {
                left: 50 * 1024 * 1024,
                tail: b"",
            },
            "p",
            "stdout",
        )
        .await
        .unwrap();
        assert_eq!(
            last,
            format!(
                "{} … (line cut at {MAX_LINE_BYTES} bytes)",
                "x".repeat(MAX_LINE_BYTES)
            )
        );
        // The line after a cut one is read whole.
        let last = read_lines(
            Endless {
                left: 3 * MAX_LINE_BYTES,
                tail: b"\nafter \xff\xfe\r\n",
            },
            "p",
            "stdout",
        )
        .await
        .unwrap();
        assert_eq!(last, "after \u{fffd}\u{fffd}");
    }
}
