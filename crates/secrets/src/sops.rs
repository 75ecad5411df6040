//! avp's `sops` backend: the path is a SOPS-encrypted YAML or JSON file (relative to the
//! directory being generated), decrypted with the `sops` binary and its own key settings
//! (`SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, ...); top-level keys are the placeholders' keys.
//! The plaintext is read from sops' stdout into memory and never written anywhere.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::backend::{Backend, BoxFuture};
use crate::placeholder::SecretRef;

pub struct Sops {
    binary: PathBuf,
    base: PathBuf,
    env: Vec<(String, String)>,
}

impl Sops {
    /// `binary`: the sops executable; `base`: what relative paths are relative to; `env`: the
    /// `SOPS_*` settings to pass on (the process environment is passed too).
    pub fn new(binary: PathBuf, base: PathBuf, env: Vec<(String, String)>) -> Sops {
        Sops { binary, base, env }
    }
}

impl Backend for Sops {
    fn name(&self) -> &'static str {
        "sops"
    }

    fn get_secrets<'a>(
        &'a self,
        r: &'a SecretRef,
    ) -> BoxFuture<'a, Result<Map<String, Value>, String>> {
        Box::pin(async move {
            let file = self.base.join(&r.path);
            let out = tokio::process::Command::new(&self.binary)
                .args([
                    "--disable-version-check",
                    "--decrypt",
                    "--output-type",
                    "json",
                ])
                .arg(&file)
                .envs(self.env.iter().cloned())
                .current_dir(&self.base)
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| {
                    format!(
                        "Could not find file {} - running {}: {e}",
                        r.path,
                        self.binary.display()
                    )
                })?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "Could not find file {} - sops exited with {}: {}",
                    r.path,
                    out.status.code().unwrap_or(-1),
                    err.trim()
                ));
            }
            let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                format!(
                    "Could not find file {} - the decrypted file is not a map: {e}",
                    r.path
                )
            })?;
            match v {
                Value::Object(m) => Ok(m),
                _ => Err(format!(
                    "Could not find file {} - the decrypted file is not a map",
                    r.path
                )),
            }
        })
    }
}
