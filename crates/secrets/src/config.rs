//! avp's configuration (`pkg/config/config.go`), from the same sources in the same order:
//! `ARGOCD_ENV_<KEY>` (how Argo CD passes an Application's plugin env) wins over the plain
//! environment, which wins over `-c <file>` (or, without one, the `-s [namespace:]secret`
//! Secret's keys), which win over the defaults. For the Vault client's own `VAULT_*` settings the
//! file or Secret wins over the plain environment, as avp exports them over it.

use std::collections::BTreeMap;
use std::path::Path;

/// Settings by upper-case key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct AvpConfig {
    argocd_env: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    file: BTreeMap<String, String>,
}

// Settings hold credentials: only their keys are shown.
impl std::fmt::Debug for AvpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvpConfig")
            .field("argocd_env", &self.argocd_env.keys().collect::<Vec<_>>())
            .field("file", &self.file.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AvpConfig {
    /// From an environment (`std::env::vars()` in the CLI) and the keys of `-c`/`-s`, if given.
    pub fn new(
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<BTreeMap<String, String>>,
    ) -> AvpConfig {
        let mut c = AvpConfig::default();
        for (k, v) in env {
            if let Some(key) = k.strip_prefix("ARGOCD_ENV_") {
                c.argocd_env.insert(key.to_uppercase(), v);
            } else if !v.is_empty() {
                c.env.insert(k.to_uppercase(), v);
            }
        }
        c.file = file
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_uppercase(), v))
            .collect();
        c
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_uppercase();
        if let Some(v) = self.argocd_env.get(&key) {
            return Some(v);
        }
        let sdk = ["VAULT_", "SOPS_", "AWS_", "AZURE_", "GOOGLE_"]
            .iter()
            .any(|p| key.starts_with(p));
        let (first, second) = if sdk {
            (&self.file, &self.env)
        } else {
            (&self.env, &self.file)
        };
        first
            .get(&key)
            .or_else(|| second.get(&key))
            .map(String::as_str)
            .or(match key.as_str() {
                "AVP_KV_VERSION" => Some("2"),
                "VAULT_ADDR" => Some("https://127.0.0.1:8200"),
                _ => None,
            })
    }

    /// `get` with an empty value read as unset.
    pub fn value(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }
}

/// The keys of the Secret `[namespace:]name` (namespace `argocd`, as avp's `-s`), as settings.
pub async fn read_secret(
    client: &kube::Client,
    path: &str,
) -> Result<BTreeMap<String, String>, String> {
    let (ns, name) = crate::kube_secret::split_path(path);
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), ns);
    let s = api.get(name).await.map_err(|e| match e {
        kube::Error::Api(s) => format!(
            "could not read Secret {ns}/{name}: {} ({})",
            s.message, s.code
        ),
        other => format!("could not read Secret {ns}/{name}: {other}"),
    })?;
    Ok(s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect())
}

/// Reads a `-c` file by its extension: YAML (`.yaml`, `.yml`), JSON, or `KEY=value` lines
/// (`.env`, `.envfile`, `.properties`).
pub fn read_config_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("could not read config file {}: {e}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    match ext.as_str() {
        "yaml" | "yml" | "json" => {
            let v: serde_json::Value = serde_saphyr::from_str(&text)
                .map_err(|e| format!("could not read config file {}: {e}", path.display()))?;
            let m = v
                .as_object()
                .ok_or_else(|| format!("config file {} is not a map", path.display()))?;
            Ok(m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect())
        }
        "env" | "envfile" | "properties" | "" => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().trim_start_matches("export ").to_owned(),
                    v.trim().trim_matches('"').to_owned(),
                )
            })
            .collect()),
        other => Err(format!(
            "config file {}: unsupported format `{other}` (use yaml, json or env)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_as_avp_reads_it() {
        let file: BTreeMap<String, String> = [
            ("AVP_TYPE", "sops"),
            ("avp_auth_type", "approle"),
            ("VAULT_ADDR", "http://from-file"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = AvpConfig::new(
            env(&[
                ("AVP_TYPE", "vault"),
                ("ARGOCD_ENV_AVP_AUTH_TYPE", "userpass"),
                ("VAULT_ADDR", "http://from-env"),
                ("AVP_ROLE_ID", ""),
            ]),
            Some(file),
        );
        assert_eq!(c.get("AVP_TYPE"), Some("vault"), "env over file");
        assert_eq!(
            c.get("AVP_AUTH_TYPE"),
            Some("userpass"),
            "ARGOCD_ENV_ over all"
        );
        assert_eq!(
            c.get("VAULT_ADDR"),
            Some("http://from-file"),
            "file over env for SDK vars"
        );
        assert_eq!(c.get("AVP_ROLE_ID"), None, "an empty env var is unset");
        assert_eq!(c.get("AVP_KV_VERSION"), Some("2"), "default");
    }
}
