//! A real SMTP server on loopback — aiosmtpd (PyPI), Python's asyncio SMTP server — that keeps
//! every message it accepts in a Maildir, for the notification tests. Started on demand, on a
//! port the caller may choose, so a test can start it after the messages' sender already
//! knows where to deliver (a receiver that is down, then up).

use crate::error::{Error, IoContext, Result};
use crate::prereq::cache_dir;
use crate::process::{Proc, free_port, port_open, wait_until};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The aiosmtpd release `make setup` installs.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

#[derive(Debug)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    maildir: PathBuf,
    _proc: Proc,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The raw message: headers, a blank line, the body.
    pub raw: String,
}

impl Mail {
    /// A header's value (unfolded), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\n\n").next().unwrap_or_default();
        let head = head
            .replace("\r\n", "\n")
            .replace("\n ", " ")
            .replace("\n\t", " ");
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn body(&self) -> String {
        let raw = self.raw.replace("\r\n", "\n");
        raw.split_once("\n\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

/// `$FERRY_AIOSMTPD`, else the virtualenv `make setup` makes.
pub fn locate() -> Result<PathBuf> {
    let p = std::env::var_os("FERRY_AIOSMTPD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir().join(format!("tools/aiosmtpd-{AIOSMTPD_VERSION}/bin/aiosmtpd"))
        });
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingPrerequisite {
            what: format!("`aiosmtpd` at {}", p.display()),
            hint: "run `make setup` as root; it installs aiosmtpd from PyPI into a virtualenv"
                .into(),
        })
    }
}

impl SmtpServer {
    /// Starts a server under `dir` on a free port.
    pub async fn start(dir: &Path) -> Result<SmtpServer> {
        SmtpServer::start_on(dir, free_port()?).await
    }

    /// Starts a server under `dir` on `port`.
    pub async fn start_on(dir: &Path, port: u16) -> Result<SmtpServer> {
        let program = locate()?;
        let dir = dir.join(format!("smtp-{port}"));
        // aiosmtpd's Mailbox makes the Maildir (tmp, new, cur) only if the folder is missing.
        let maildir = dir.join("maildir");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut proc = Proc::spawn(
            "aiosmtpd",
            &program,
            &[
                "--nosetuid".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--class".into(),
                "aiosmtpd.handlers.Mailbox".into(),
                maildir.display().to_string(),
            ],
            &[],
            dir.join("aiosmtpd.log"),
        )?;
        wait_until(
            &mut proc,
            "aiosmtpd to accept connections",
            Duration::from_secs(20),
            || port_open(port),
        )
        .await?;
        Ok(SmtpServer {
            host: "127.0.0.1".into(),
            port,
            maildir,
            _proc: proc,
        })
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.maildir.join(d)).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .map(|raw| Mail { raw })
            .collect()
    }
}
