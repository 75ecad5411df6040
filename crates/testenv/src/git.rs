//! A Git server: http with basic auth (nginx + fcgiwrap + git-http-backend),
//! ssh with key auth (sshd, restricted to git-shell), and file://.

use crate::cluster::write_private;
use crate::error::{IoContext, Result};
use crate::prereq::Tools;
use crate::process::{Proc, free_port, port_open, run, run_with_stdin, wait_until};
use crate::secret::Secret;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const GIT_USER: &str = "ferry";

#[derive(Debug)]
pub struct GitServer {
    /// Directory holding the bare repositories (`<name>.git`).
    pub root: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub http_base: String,
    pub ssh_port: u16,
    /// The local account ssh logs in as.
    pub ssh_user: String,
    /// Private key accepted by the ssh server (no passphrase).
    pub ssh_private_key: PathBuf,
    /// A known_hosts file naming the ssh server's host key.
    pub known_hosts: PathBuf,
    password: Secret,
    git: PathBuf,
    ssh: PathBuf,
    dir: PathBuf,
    /// fcgiwrap, nginx (http), sshd.
    procs: std::sync::Mutex<Vec<Proc>>,
}

impl GitServer {
    pub async fn start(tools: &Tools, dir: &Path) -> Result<GitServer> {
        let dir = dir.join("git");
        let root = dir.join("repos");
        for d in [&root, &dir.join("nginx-tmp")] {
            std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
        }
        let password = Secret::random();
        let htpasswd = dir.join("htpasswd");
        // apr1 (-m): the hash nginx understands; the password goes in on stdin.
        run_with_stdin(
            &tools.htpasswd,
            &["-i", "-c", "-m", &htpasswd.to_string_lossy(), GIT_USER],
            &[],
            None,
            Some(password.expose()),
        )?;
        let mut procs = Vec::new();

        // http
        let sock = dir.join("fcgiwrap.sock");
        let mut fcgi = Proc::spawn(
            "fcgiwrap",
            &tools.fcgiwrap,
            &[
                "-c".into(),
                "4".into(),
                "-s".into(),
                format!("unix:{}", sock.display()),
            ],
            &[],
            dir.join("fcgiwrap.log"),
        )?;
        let sock_check = sock.clone();
        wait_until(
            &mut fcgi,
            "fcgiwrap socket",
            Duration::from_secs(10),
            || {
                let exists = sock_check.exists();
                async move { exists }
            },
        )
        .await?;
        procs.push(fcgi);
        let http_port = free_port()?;
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root root;"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                r#"{user}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/nginx-tmp/body;
  proxy_temp_path {d}/nginx-tmp/proxy;
  fastcgi_temp_path {d}/nginx-tmp/fastcgi;
  uwsgi_temp_path {d}/nginx-tmp/uwsgi;
  scgi_temp_path {d}/nginx-tmp/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{http_port};
    location / {{
      auth_basic "ferry git";
      auth_basic_user_file {htpasswd};
      fastcgi_pass unix:{sock};
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param GIT_PROJECT_ROOT {root};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param HTTP_GIT_PROTOCOL $http_git_protocol;
    }}
  }}
}}
"#,
                htpasswd = htpasswd.display(),
                sock = sock.display(),
                backend = tools.git_http_backend.display(),
                root = root.display(),
            ),
        )
        .ctx(|| format!("writing {}", conf.display()))?;
        let mut nginx = Proc::spawn(
            "nginx",
            &tools.nginx,
            &[
                "-p".into(),
                dir.display().to_string(),
                "-e".into(),
                dir.join("nginx-error.log").display().to_string(),
                "-c".into(),
                conf.display().to_string(),
            ],
            &[],
            dir.join("nginx.log"),
        )?;
        wait_until(
            &mut nginx,
            "nginx to accept connections",
            Duration::from_secs(10),
            || port_open(http_port),
        )
        .await?;
        procs.push(nginx);

        // ssh
        let host_key = dir.join("ssh_host_ed25519_key");
        let client_key = dir.join("id_ed25519");
        for (key, comment) in [
            (&host_key, "ferry-git-host"),
            (&client_key, "ferry-git-client"),
        ] {
            run(
                &tools.ssh_keygen,
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    comment,
                    "-f",
                    &key.to_string_lossy(),
                ],
                &[],
                None,
            )?;
        }
        let read =
            |p: PathBuf| std::fs::read_to_string(&p).ctx(|| format!("reading {}", p.display()));
        let client_pub = read(dir.join("id_ed25519.pub"))?;
        let host_pub = read(dir.join("ssh_host_ed25519_key.pub"))?;
        let authorized = dir.join("authorized_keys");
        write_private(
            &authorized,
            &format!(
                "command=\"{} -c \\\"$SSH_ORIGINAL_COMMAND\\\"\",restrict {}",
                tools.git_shell.display(),
                client_pub.trim()
            ),
        )?;
        let ssh_port = free_port()?;
        let known_hosts = dir.join("known_hosts");
        let mut host_fields = host_pub.split_whitespace();
        let (kt, kb) = (
            host_fields.next().unwrap_or_default(),
            host_fields.next().unwrap_or_default(),
        );
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{ssh_port} {kt} {kb}\n"))
            .ctx(|| format!("writing {}", known_hosts.display()))?;
        let ssh_user = current_user();
        let sshd_conf = dir.join("sshd_config");
        std::fs::write(
            &sshd_conf,
            format!(
                "ListenAddress 127.0.0.1:{ssh_port}\nHostKey {}\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {}\nAuthenticationMethods publickey\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nAllowUsers {ssh_user}\n\
                 PrintMotd no\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display(),
            ),
        )
        .ctx(|| format!("writing {}", sshd_conf.display()))?;
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut sshd = Proc::spawn(
            "sshd",
            &tools.sshd,
            &[
                "-D".into(),
                "-e".into(),
                "-f".into(),
                sshd_conf.display().to_string(),
            ],
            &[],
            dir.join("sshd.log"),
        )?;
        wait_until(
            &mut sshd,
            "sshd to accept connections",
            Duration::from_secs(10),
            || port_open(ssh_port),
        )
        .await?;
        procs.push(sshd);

        Ok(GitServer {
            root,
            http_base: format!("http://127.0.0.1:{http_port}"),
            ssh_port,
            ssh_user,
            ssh_private_key: client_key,
            known_hosts,
            password,
            git: tools.git.clone(),
            ssh: tools.ssh.clone(),
            dir,
            procs: std::sync::Mutex::new(procs),
        })
    }

    /// The http basic-auth user.
    pub fn user(&self) -> &str {
        GIT_USER
    }

    /// The http basic-auth password.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// Creates an empty bare repository `<name>.git` whose default branch is `main`.
    pub fn create_repo(&self, name: &str) -> Result<PathBuf> {
        let path = self.root.join(format!("{name}.git"));
        run(
            &self.git,
            &[
                "init",
                "-q",
                "--bare",
                "--initial-branch=main",
                &path.to_string_lossy(),
            ],
            &[],
            None,
        )?;
        Ok(path)
    }

    pub fn http_url(&self, repo: &str) -> String {
        format!("{}/{repo}.git", self.http_base)
    }

    pub fn ssh_url(&self, repo: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.ssh_user,
            self.ssh_port,
            self.root.join(format!("{repo}.git")).display()
        )
    }

    pub fn file_url(&self, repo: &str) -> String {
        format!("file://{}", self.root.join(format!("{repo}.git")).display())
    }

    /// The `GIT_SSH_COMMAND` that uses the accepted key and checks the host key.
    pub fn git_ssh_command(&self) -> String {
        format!(
            "{} -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            self.ssh.display(),
            self.ssh_private_key.display(),
            self.known_hosts.display()
        )
    }

    /// Commits the contents of `src` (exactly: files absent from `src` are
    /// removed) as a new commit on `main` of `repo`, and returns its hash.
    pub fn commit_dir(&self, repo: &str, src: &Path, message: &str) -> Result<String> {
        let work = self
            .dir
            .join(format!("work-{repo}-{}", Secret::random().expose()));
        let git_dir = work.join(".git");
        let g = |args: &[&str]| -> Result<String> {
            let mut full = vec!["--git-dir", git_dir.to_str().unwrap_or_default()];
            full.extend_from_slice(args);
            run(&self.git, &full, &GIT_IDENTITY, None)
        };
        let result = (|| {
            run(
                &self.git,
                &[
                    "clone",
                    "-q",
                    "--no-checkout",
                    &self.file_url(repo),
                    work.to_str().unwrap_or_default(),
                ],
                &GIT_IDENTITY,
                None,
            )?;
            g(&[
                "--work-tree",
                src.to_str().unwrap_or_default(),
                "add",
                "-A",
                ".",
            ])?;
            g(&["commit", "-q", "--allow-empty", "-m", message])?;
            g(&["push", "-q", "origin", "HEAD:refs/heads/main"])?;
            Ok(g(&["rev-parse", "HEAD"])?.trim().to_string())
        })();
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// Makes the next push to `repo` race with another writer: a one-shot
    /// pre-receive hook moves `main` to a new commit by "someone" (message
    /// "concurrent") before the pushed update lands, as a concurrent pusher
    /// would between a client's fetch and its push. The hook lets the push
    /// proceed; git's receive-pack then refuses it itself, since `main` is no
    /// longer where the pusher said.
    pub fn move_main_during_next_push(&self, repo: &str) -> Result<()> {
        let git_dir = self.root.join(format!("{repo}.git"));
        let hook = git_dir.join("hooks/pre-receive");
        let hooks = git_dir.join("hooks");
        std::fs::create_dir_all(&hooks).ctx(|| format!("creating {}", hooks.display()))?;
        let script = format!(
            r#"#!/bin/sh
set -e
once="{dir}/race-once"
[ -e "$once" ] || exit 0
rm -f "$once"
# Outside the push's quarantine, as a concurrent pusher would be.
env -i PATH="$PATH" HOME=/nonexistent GIT_DIR="{dir}" \
  GIT_AUTHOR_NAME=someone GIT_AUTHOR_EMAIL=s@x GIT_COMMITTER_NAME=someone GIT_COMMITTER_EMAIL=s@x \
  sh -c 'tree=$(git rev-parse main^{{tree}}); c=$(echo concurrent | git commit-tree -p main "$tree"); git update-ref refs/heads/main "$c"'
exit 0
"#,
            dir = git_dir.display()
        );
        std::fs::write(&hook, script).ctx(|| format!("writing {}", hook.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .ctx(|| format!("making {} executable", hook.display()))?;
        let once = git_dir.join("race-once");
        std::fs::write(&once, "").ctx(|| format!("writing {}", once.display()))
    }

    /// The commit `main` of `repo` points at.
    pub fn head(&self, repo: &str) -> Result<String> {
        let path = self.root.join(format!("{repo}.git"));
        Ok(run(
            &self.git,
            &[
                "--git-dir",
                path.to_str().unwrap_or_default(),
                "rev-parse",
                "main",
            ],
            &[],
            None,
        )?
        .trim()
        .to_string())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs_mut().iter().map(Proc::pid).collect()
    }

    fn procs_mut(&self) -> std::sync::MutexGuard<'_, Vec<Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the http server down: clones and fetches over http get "connection refused".
    pub fn stop_http(&self) {
        if let Some(nginx) = self.procs_mut().get_mut(1) {
            nginx.stop(Duration::from_secs(3));
        }
    }

    /// Brings the http server back, as it was, once it accepts connections.
    pub async fn start_http(&self) -> Result<()> {
        if let Some(nginx) = self.procs_mut().get_mut(1) {
            nginx.start_again()?;
        }
        let port: u16 = self
            .http_base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !crate::process::port_open(port).await {
            if tokio::time::Instant::now() > deadline {
                return Err(crate::Error::Startup(
                    "nginx did not come back in 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let mut procs = self.procs_mut();
        while let Some(mut p) = procs.pop() {
            p.stop(Duration::from_secs(3));
        }
    }
}

/// Author and committer for commits the environment itself makes.
pub const GIT_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "Ferry Testenv"),
    ("GIT_AUTHOR_EMAIL", "testenv@ferry.invalid"),
    ("GIT_COMMITTER_NAME", "Ferry Testenv"),
    ("GIT_COMMITTER_EMAIL", "testenv@ferry.invalid"),
];

fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; it is
    // read at once and copied.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}
