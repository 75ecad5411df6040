//! Running git and helm: bounded in time, killed with everything they started
//! (ssh, git-remote-https, upload-pack) on timeout or cancellation, and with
//! stderr cleaned of secrets before anyone sees it.

use crate::error::SourceError;
use crate::url::scrub_urls_in;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Hides secrets in text that came out of a tool.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<String>) -> Redactor {
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = scrub_urls_in(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Most of a failing command's stderr worth keeping; git's last lines carry the cause.
const MAX_MESSAGE: usize = 4096;

pub(crate) struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub env_remove: Vec<&'static str>,
    pub cwd: Option<PathBuf>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// What the error says ran, e.g. `git fetch`; never the arguments.
    pub label: String,
    /// The repository, credentials removed, for messages.
    pub repo: String,
}

impl Cmd {
    pub fn new(program: &Path, label: impl Into<String>, repo: &str, timeout: Duration) -> Cmd {
        Cmd {
            program: program.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdin: None,
            timeout,
            label: label.into(),
            repo: scrub_urls_in(repo),
        }
    }

    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(&mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> &mut Cmd {
        self.env.push((k.into(), v.into()));
        self
    }
}

pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Kills the command's process group unless the command was reaped, so that
/// nothing it started outlives a timeout or a dropped future.
struct GroupKill {
    pgid: Option<u32>,
    reaped: AtomicBool,
}

impl GroupKill {
    fn kill(&self) {
        if self.reaped.load(Ordering::SeqCst) {
            return;
        }
        if let Some(pgid) = self.pgid.and_then(|p| libc::pid_t::try_from(p).ok())
            && pgid > 0
        {
            // SAFETY: kill(2) with a negative id signals the process group the
            // child leads (spawned with process_group(0)); the child is not yet
            // reaped, so the id cannot have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf).await;
    }
    buf
}

/// Runs `cmd`; returns its output, or an error carrying its stderr when it
/// exits non-zero. Every string is passed through `redactor`.
pub(crate) async fn run(cmd: &Cmd, redactor: &Redactor) -> Result<Finished, SourceError> {
    let out = run_raw(cmd, redactor).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(SourceError::Command {
            command: cmd.label.clone(),
            repo: cmd.repo.clone(),
            message: failure_message(&out),
        })
    }
}

pub(crate) fn failure_message(out: &Finished) -> String {
    let msg = out.stderr.trim();
    if msg.is_empty() {
        match out.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        }
    } else {
        msg.to_string()
    }
}

/// Like [`run`], but a non-zero exit is returned rather than turned into an error.
pub(crate) async fn run_raw(cmd: &Cmd, redactor: &Redactor) -> Result<Finished, SourceError> {
    let started = Instant::now();
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for k in &cmd.env_remove {
        c.env_remove(k);
    }
    for (k, v) in &cmd.env {
        c.env(k, v);
    }
    if let Some(d) = &cmd.cwd {
        c.current_dir(d);
    }
    let mut child = c.spawn().map_err(|e| {
        SourceError::io(
            format!("starting {} ({})", cmd.label, cmd.program.display()),
            e,
        )
    })?;
    let guard = GroupKill {
        pgid: child.id(),
        reaped: AtomicBool::new(false),
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = cmd.stdin.clone();
    let work = async {
        let feed = async {
            if let (Some(mut pipe), Some(data)) = (stdin, input) {
                // A tool that exits without reading its input is not our error.
                let _ = pipe.write_all(&data).await;
                let _ = pipe.shutdown().await;
            }
        };
        let wait = async {
            let status = child.wait().await;
            guard.reaped.store(true, Ordering::SeqCst);
            status
        };
        let ((), status, out, err) = tokio::join!(feed, wait, read_all(stdout), read_all(stderr));
        (status, out, err)
    };
    let result = tokio::time::timeout(cmd.timeout, work).await;
    match result {
        Ok((status, stdout, stderr)) => {
            let status =
                status.map_err(|e| SourceError::io(format!("waiting for {}", cmd.label), e))?;
            // ssh ends its lines with CRLF.
            let stderr = String::from_utf8_lossy(&stderr).replace("\r\n", "\n");
            let stderr = redactor.redact(&clip(&stderr));
            tracing::debug!(
                command = %cmd.label,
                repo = %cmd.repo,
                status = ?status.code(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "ran"
            );
            Ok(Finished {
                status,
                stdout,
                stderr,
            })
        }
        Err(_) => {
            guard.kill();
            let _ = child.wait().await;
            guard.reaped.store(true, Ordering::SeqCst);
            tracing::warn!(command = %cmd.label, repo = %cmd.repo, timeout_s = cmd.timeout.as_secs(), "timed out");
            Err(SourceError::Timeout {
                command: cmd.label.clone(),
                repo: cmd.repo.clone(),
                seconds: cmd.timeout.as_secs(),
                message: String::new(),
            })
        }
    }
}

/// Keeps the end of long output, where tools put the reason they failed.
fn clip(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut start = s.len() - MAX_MESSAGE;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let marker = std::env::temp_dir().join(format!("ferry-exec-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut cmd = Cmd::new(
            Path::new("/bin/sh"),
            "sh",
            "test",
            Duration::from_millis(300),
        );
        cmd.arg("-c")
            .arg(format!("(sleep 2; touch {}) & sleep 5", marker.display()));
        let started = Instant::now();
        let err = run(&cmd, &Redactor::default()).await.err().unwrap();
        assert!(matches!(err, SourceError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }

    #[tokio::test]
    async fn failure_carries_redacted_stderr() {
        let mut cmd = Cmd::new(
            Path::new("/bin/sh"),
            "sh",
            "https://u:pw@h/r",
            Duration::from_secs(5),
        );
        cmd.arg("-c")
            .arg("echo 'fatal: bad hunter2 at https://u:pw@h/r' >&2; exit 3");
        let err = run(&cmd, &Redactor::new(vec!["hunter2".into()]))
            .await
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "`sh` for https://h/r failed: fatal: bad *** at https://h/r"
        );
    }

    #[tokio::test]
    async fn feeds_stdin() {
        let mut cmd = Cmd::new(Path::new("/bin/cat"), "cat", "x", Duration::from_secs(5));
        cmd.stdin = Some(b"hello".to_vec());
        let out = run(&cmd, &Redactor::default()).await.unwrap();
        assert_eq!(out.stdout, b"hello");
    }
}
