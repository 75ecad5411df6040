//! Running external tools: own process group, clean environment, captured
//! output, and a hard deadline that kills the whole group.

use crate::RenderError;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of a tool's stderr ends up in an error message.
const STDERR_TAIL: usize = 4096;
/// How much stderr is kept in memory while the tool runs.
const STDERR_KEEP: usize = 64 * 1024;
/// Rendered output larger than this is refused rather than risking the controller's memory
/// (Argo CD bounds its repo server the same way, with --max-combined-directory-manifests-size).
/// A tool that writes more is killed at once, not at its timeout.
pub(crate) const OUTPUT_MAX: usize = 64 * 1024 * 1024;
/// After the main process exits, how long to wait for its pipes to close.
const PIPE_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Cmd {
    /// Short name for messages, e.g. `helm template`.
    pub label: String,
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The complete environment: nothing is inherited.
    pub env: Vec<(OsString, OsString)>,
    /// Strings to blank out of any error text (plugin env values).
    pub secrets: Vec<String>,
}

impl Cmd {
    pub fn new(label: impl Into<String>, program: impl Into<OsString>, cwd: &Path) -> Cmd {
        Cmd {
            label: label.into(),
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.to_path_buf(),
            env: Vec::new(),
            secrets: Vec::new(),
        }
    }

    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Cmd {
        self.args.push(a.into());
        self
    }

    pub fn env(&mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> &mut Cmd {
        self.env.push((k.into(), v.into()));
        self
    }
}

pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs the command and returns its stdout, or a `Tool` error carrying the
/// tail of its stderr when it exits non-zero.
pub(crate) fn run_checked(cmd: &Cmd, timeout: Duration) -> Result<Vec<u8>, RenderError> {
    let out = run(cmd, timeout)?;
    if out.status.success() {
        if !out.stderr.is_empty() {
            tracing::debug!(tool = %cmd.label, stderr = %redact(&tail(&out.stderr), &cmd.secrets), "tool wrote to stderr");
        }
        return Ok(out.stdout);
    }
    Err(RenderError::Tool {
        tool: cmd.label.clone(),
        message: failure_message(&out, &cmd.secrets),
    })
}

pub(crate) fn failure_message(out: &Output, secrets: &[String]) -> String {
    let status = describe_status(out.status);
    let err = tail(&out.stderr);
    if err.is_empty() {
        format!("{status} with no error output")
    } else {
        redact(&err, secrets)
    }
}

fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited abnormally".to_string(),
    }
}

/// Runs the command to completion or until `timeout`, when its whole process
/// group is killed.
pub(crate) fn run(cmd: &Cmd, timeout: Duration) -> Result<Output, RenderError> {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .current_dir(&cmd.cwd)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own so that a timeout also kills whatever the tool
        // started (helm plugins, shells in CMP scripts), not just the tool.
        .process_group(0);
    let mut child = c.spawn().map_err(|e| {
        RenderError::io(
            format!(
                "starting `{}` ({})",
                cmd.label,
                Path::new(&cmd.program).display()
            ),
            e,
        )
    })?;
    let pid = child.id() as libc::pid_t;

    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over_flag = over.clone();
    let readers = spawn_reader(stdout_pipe, move |mut so| {
        let _ = tx_out.send(read_capped(&mut so, OUTPUT_MAX, &over_flag));
    })
    .and_then(|()| {
        spawn_reader(stderr_pipe, move |mut se| {
            let _ = tx_err.send(read_tail(&mut se, STDERR_KEEP));
        })
    });
    if let Err(e) = readers {
        kill_group(pid);
        let _ = child.wait();
        return Err(RenderError::io(format!("running `{}`", cmd.label), e));
    }

    // A timeout too large to represent means no deadline.
    let deadline = Instant::now().checked_add(timeout);
    let mut timed_out = false;
    let mut too_much = false;
    let mut pause = Duration::from_millis(2);
    loop {
        if over.load(std::sync::atomic::Ordering::Relaxed) {
            too_much = true;
            break;
        }
        match exited_without_reaping(pid) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(RenderError::io(format!("waiting for `{}`", cmd.label), e));
            }
        }
        let now = Instant::now();
        let left = deadline.map_or(pause, |d| d.saturating_duration_since(now));
        if left.is_zero() {
            timed_out = true;
            break;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    // The child is still unreaped here, so its pid (and with it the group id)
    // cannot have been reused: killing the group cannot hit a stranger. This
    // also clears out background processes that would keep the pipes open.
    kill_group(pid);
    let status = child
        .wait()
        .map_err(|e| RenderError::io(format!("waiting for `{}`", cmd.label), e))?;
    if too_much {
        return Err(RenderError::Tool {
            tool: cmd.label.clone(),
            message: format!("output exceeds {} MiB", OUTPUT_MAX / (1024 * 1024)),
        });
    }
    if timed_out {
        return Err(RenderError::Timeout {
            tool: cmd.label.clone(),
            secs: timeout.as_secs_f64().ceil() as u64,
        });
    }

    let grace = Instant::now() + PIPE_GRACE;
    let held_open = || RenderError::Tool {
        tool: cmd.label.clone(),
        message: "exited, but a process it started in another session kept its output open".into(),
    };
    let stdout = match rx_out.recv_timeout(grace.saturating_duration_since(Instant::now())) {
        Ok(Ok(v)) => v,
        Ok(Err(())) => {
            return Err(RenderError::Tool {
                tool: cmd.label.clone(),
                message: format!("output exceeds {} MiB", OUTPUT_MAX / (1024 * 1024)),
            });
        }
        Err(mpsc::RecvTimeoutError::Timeout) => return Err(held_open()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
    };
    let stderr = match rx_err.recv_timeout(grace.saturating_duration_since(Instant::now())) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => return Err(held_open()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn spawn_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    f: impl FnOnce(R) + Send + 'static,
) -> std::io::Result<()> {
    let Some(pipe) = pipe else { return Ok(()) };
    std::thread::Builder::new()
        .name("ferry-render-pipe".into())
        .spawn(move || f(pipe))
        .map(|_| ())
}

/// Whether `pid` has exited, leaving it a zombie so its id stays reserved.
fn exited_without_reaping(pid: libc::pid_t) -> std::io::Result<bool> {
    // SAFETY: siginfo_t is plain old data, zero is a valid bit pattern, and
    // waitid only writes into the struct we own.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    // SAFETY: waitid succeeded, so si_pid is initialised (0 when the child
    // has not changed state yet).
    Ok(unsafe { info.si_pid() } != 0)
}

fn kill_group(pid: libc::pid_t) {
    // SAFETY: plain syscall; a negative pid addresses the process group the
    // child leads. ESRCH (group already gone) is fine.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Reads up to `max` bytes; past that, raises `over` (the runner then kills the tool) and
/// drains the rest without keeping it, so the tool never blocks on a full pipe.
fn read_capped(
    r: &mut impl Read,
    max: usize,
    over_flag: &std::sync::atomic::AtomicBool,
) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut over = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.len() + n > max {
                    if !over {
                        over = true;
                        out = Vec::new();
                        over_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                } else if !over {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if over { Err(()) } else { Ok(out) }
}

fn read_tail(r: &mut impl Read, keep: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 2 * keep {
                    out.drain(..out.len() - keep);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if out.len() > keep {
        out.drain(..out.len() - keep);
    }
    out
}

/// The trimmed last few KB of a tool's error output, cut at a character
/// boundary.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= STDERR_TAIL {
        return text.to_string();
    }
    let mut start = text.len() - STDERR_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", text[start..].trim_start())
}

/// Replaces every occurrence of a secret with `***`. Very short values are
/// left alone: blanking every `1` or `on` would garble messages without
/// protecting anything.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// `$PATH` of this process, or a conventional default.
pub(crate) fn search_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cmd {
        let mut c = Cmd::new("test script", "sh", Path::new("/"));
        c.arg("-c").arg(script).env("PATH", search_path());
        c
    }

    #[test]
    fn captures_stdout_and_accepts_an_unbounded_timeout() {
        let out = run_checked(
            &sh("echo \"$HOME|$PATH\" | cut -c1-1; echo noise >&2"),
            Duration::MAX,
        )
        .unwrap();
        // HOME is not inherited: the environment is exactly what was set.
        assert_eq!(String::from_utf8(out).unwrap(), "|\n");
    }

    #[test]
    fn failures_carry_stderr_or_the_exit_status() {
        let err = run_checked(
            &sh("echo out; echo 'bad thing' >&2; exit 3"),
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`test script` failed: bad thing");
        let err = run_checked(&sh("exit 7"), Duration::from_secs(30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`test script` failed: exited with status 7 with no error output"
        );
        let mut missing = Cmd::new("nothing", "/nonexistent/tool", Path::new("/"));
        missing.arg("x");
        let err = run(&missing, Duration::from_secs(5))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("starting `nothing` (/nonexistent/tool): "),
            "{err}"
        );
    }

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        let long = format!("{}é{}", "x".repeat(10_000), "é".repeat(3000));
        let t = tail(long.as_bytes());
        assert!(t.starts_with("...") && t.ends_with('é'));
        assert!(t.len() <= STDERR_TAIL + 3);
        assert_eq!(
            redact("token abcd and ab", &["abcd".into(), "ab".into()]),
            "token *** and ab"
        );
    }
}
