//! Starts the environment's programs so that none can outlive it.
//!
//! Every child is spawned from one long-lived thread with `PR_SET_PDEATHSIG`
//! set to SIGKILL. Linux delivers that signal when the *thread* that forked
//! the child exits, so the spawner thread never exits: children then die
//! exactly when this process dies, whether it returns, panics, or is killed.
//! An orderly stop (drop) sends SIGTERM first and SIGKILL after a grace period.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ferry-testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The channel lives in a static and is never closed, so this
                // thread (and with it every child's PDEATHSIG) lasts as long
                // as the process.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the testenv spawner thread");
        Mutex::new(tx)
    })
}

/// A running program of the environment. Dropping it stops it.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
    /// What started it, so a fault test can stop it and start it again.
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Proc {
    /// Starts `program` with `args`, stdout and stderr going to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: PathBuf,
    ) -> Result<Proc> {
        let out = File::create(&log).ctx(|| format!("creating {}", log.display()))?;
        let child = launch(name, program, args, envs, out)?;
        Ok(Proc {
            name: name.to_string(),
            log,
            child: Some(child),
            program: program.to_path_buf(),
            args: args.to_vec(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        })
    }

    /// Starts it again after `stop`, as it was started, its log appended to.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop(Duration::from_secs(5));
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .ctx(|| format!("opening {}", self.log.display()))?;
        let envs: Vec<(&str, String)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.child = Some(launch(&self.name, &self.program, &self.args, &envs, out)?);
        Ok(())
    }

    /// SIGSTOP: the process holds its sockets and answers nothing until `cont`.
    pub fn pause(&self) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGSTOP);
        }
    }

    pub fn cont(&self) {
        // SAFETY: as in `pause`.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGCONT);
        }
    }
}

/// Spawns one child from the spawner thread, output to `out`.
fn launch(
    name: &str,
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    out: File,
) -> Result<Child> {
    let err = out
        .try_clone()
        .ctx(|| format!("duplicating {name}'s log"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid, setpgid).
    unsafe {
        use std::os::unix::process::CommandExt;
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            // Own process group: a terminal's Ctrl-C reaches only Ferry,
            // which then stops the children in order.
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| Error::Startup("spawner lock poisoned".into()))?
        .send((cmd, tx))
        .map_err(|_| Error::Startup("spawner thread is gone".into()))?;
    let child = rx
        .recv()
        .map_err(|_| Error::Startup("spawner thread is gone".into()))?
        .ctx(|| format!("starting {name} ({})", program.display()))?;
    tracing::debug!(name, pid = child.id(), "started");
    Ok(child)
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Fails with the end of the log if the program has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(Error::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log),
            });
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; always reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid, which is not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // Helpers a program forked into its group (fcgiwrap's workers, sshd's
        // sessions) go with it.
        // SAFETY: kill(2) on a process group we created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        tracing::debug!(name = %self.name, "stopped");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last 30 lines of a log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs a short command to completion, failing with its stderr.
pub fn run(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    dir: Option<&Path>,
) -> Result<String> {
    run_with_stdin(program, args, envs, dir, None)
}

/// Like [`run`], feeding `stdin` to the command: how secrets are passed, so
/// they never appear in a process's command line.
pub fn run_with_stdin(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    dir: Option<&Path>,
    stdin: Option<&str>,
) -> Result<String> {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .spawn()
        .ctx(|| format!("running {}", program.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .ctx(|| format!("writing to {}", program.display()))?;
    }
    let out = child
        .wait_with_output()
        .ctx(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        return Err(Error::Command {
            // Arguments never carry secrets here (those go through stdin or files).
            command: format!("{} {}", program.display(), args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1, never one this process handed out before.
/// Binding port 0 and closing it can return the same port twice in a row
/// (two calls for etcd's client and peer ports did), so ports are remembered.
/// Another process could still take one before we bind it; ports are picked
/// right before use to keep that window small.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ctx(|| "binding 127.0.0.1:0".into())?;
        let port = l
            .local_addr()
            .ctx(|| "reading local address".into())?
            .port();
        let mut given = GIVEN
            .lock()
            .map_err(|_| Error::Startup("port registry poisoned".into()))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(Error::Startup("no unused loopback port found".into()))
}

/// Waits until `check` returns true, failing if `proc` exits or time runs out.
pub async fn wait_until<F, Fut>(
    proc: &mut Proc,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        proc.check_running()?;
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
                log: proc.log.clone(),
                tail: log_tail(&proc.log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True once something accepts connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_never_handed_out_twice() {
        let mut ports: Vec<u16> = (0..200).map(|_| super::free_port().unwrap()).collect();
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n);
    }
}
