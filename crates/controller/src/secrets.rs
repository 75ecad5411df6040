//! argocd-vault-plugin served natively: an Application that names one of avp's standard
//! plugins (`argocd-vault-plugin`, `-helm`, `-kustomize`) that no ConfigMap or plugin directory
//! defines is rendered by Ferry's own renderer (directory, Helm or Kustomize, by detection, as
//! those plugins' first stage does) and its placeholders are resolved here, after the render
//! cache and before compare, with no plugin process. Resolved values live in this process's
//! memory (a TTL cache per store identity) and in the objects compared and applied only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_model::ApplicationSource;
use ferry_secrets::{AvpConfig, Resolver};
use serde_json::Value;

/// avp's standard plugin names: the ones Ferry serves itself when nothing else defines them.
pub const NATIVE_PLUGINS: &[&str] = &[
    "argocd-vault-plugin",
    "argocd-vault-plugin-helm",
    "argocd-vault-plugin-kustomize",
];

/// How long resolved values are reused before the store is read again, unless
/// `FERRY_SECRETS_TTL` says otherwise (a hard refresh reads it at once).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Whether `source` is served natively: it names a standard avp plugin no plugin defines.
pub fn is_native(source: &ApplicationSource, plugins: &[ferry_render::PluginConfig]) -> bool {
    let Some(p) = &source.plugin else {
        return false;
    };
    let Some(name) = p.name.as_deref() else {
        return false;
    };
    NATIVE_PLUGINS.contains(&name)
        && !plugins
            .iter()
            .any(|d| d.name == name || d.full_name() == name)
}

/// The source as Ferry renders it natively: no plugin, so the type is detected (a
/// kustomization, a chart, or a directory of manifests).
pub fn without_plugin(source: &ApplicationSource) -> ApplicationSource {
    let mut s = source.clone();
    s.plugin = None;
    s
}

/// Resolvers by store identity (a hash of the settings), so apps that share a store share its
/// session and cache.
/// A settings Secret's keys.
type Settings = BTreeMap<String, String>;

#[derive(Default)]
pub struct Resolvers {
    by_config: Mutex<HashMap<u64, Arc<Resolver>>>,
    /// `AVP_SECRET` Secrets' keys, read at most once per [`DEFAULT_TTL`] (or on a hard
    /// refresh), so a steady pass costs no API request.
    settings: Mutex<HashMap<String, (Instant, Settings)>>,
}

impl Resolvers {
    async fn settings_secret(
        &self,
        client: &kube::Client,
        name: &str,
        refresh: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        let cached = self
            .settings
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
            .filter(|(at, _)| !refresh && at.elapsed() < DEFAULT_TTL);
        if let Some((_, keys)) = cached {
            return Ok(keys);
        }
        let keys = ferry_secrets::config::read_secret(client, name)
            .await
            .map_err(|e| format!("AVP_SECRET: {e}"))?;
        if let Ok(mut m) = self.settings.lock() {
            m.insert(name.to_string(), (Instant::now(), keys.clone()));
        }
        Ok(keys)
    }

    /// The settings of `source`'s app: the controller's environment, the plugin env as Argo CD
    /// passes it (`ARGOCD_ENV_<name>`), and the keys of the Secret `AVP_SECRET` names
    /// (`[namespace:]name`, `-s`), read with `client`.
    pub async fn config(
        &self,
        client: &kube::Client,
        source: &ApplicationSource,
        refresh: bool,
    ) -> Result<AvpConfig, String> {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        let mut secret_name = None;
        if let Some(p) = &source.plugin {
            for e in &p.env {
                if e.name == "AVP_SECRET" {
                    secret_name = Some(e.value.clone());
                }
                env.push((format!("ARGOCD_ENV_{}", e.name), e.value.clone()));
            }
        }
        let file = match secret_name.filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some(self.settings_secret(client, &name, refresh).await?),
        };
        Ok(AvpConfig::new(env, file))
    }

    /// The resolver for `config` (made on first use).
    pub fn get(
        &self,
        config: &AvpConfig,
        client: &kube::Client,
        base: &Path,
    ) -> Result<Arc<Resolver>, String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        config.hash(&mut h);
        // Only sops reads files relative to the app's checkout; every other store is shared by
        // all apps with the same settings, with one session and one cache.
        if config.value("AVP_TYPE").as_deref() == Some("sops") {
            base.hash(&mut h);
        }
        let key = h.finish();
        // Held while a resolver is made, so apps starting together share one.
        let mut by_config = self
            .by_config
            .lock()
            .map_err(|_| "secrets: resolver table poisoned".to_string())?;
        if let Some(r) = by_config.get(&key) {
            return Ok(r.clone());
        }
        let sops = std::env::var_os("FERRY_SOPS")
            .map(Into::into)
            .unwrap_or_else(|| "sops".into());
        let backend = ferry_secrets::backend_from_config(
            config,
            Some(client.clone()),
            base.to_path_buf(),
            sops,
        )?;
        // `FERRY_SECRETS_TTL` (a duration such as `2m`, in the plugin env or the controller's):
        // how long values are reused before the store is read again.
        let ttl = match config.value("FERRY_SECRETS_TTL") {
            None => DEFAULT_TTL,
            Some(t) => ferry_model::parse_go_duration(&t)
                .ok_or_else(|| format!("FERRY_SECRETS_TTL: invalid duration `{t}`"))?,
        };
        let r = Arc::new(Resolver::new(backend, ttl));
        by_config.insert(key, r.clone());
        Ok(r)
    }
}

/// Resolves `objects`; the first failure names the object and what the store answered. Also
/// gives the store's values the objects may now hold, for views to mask.
pub async fn resolve(
    resolver: &Resolver,
    config: &AvpConfig,
    objects: &[Value],
    refresh: bool,
) -> Result<(Vec<Value>, Vec<String>), String> {
    if refresh {
        resolver.forget().await;
    }
    let settings = ferry_secrets::settings_from_config(config)?;
    let (results, values) = resolver.resolve_with_values(objects, &settings).await?;
    let resolved = objects
        .iter()
        .zip(results)
        .map(|(o, r)| {
            r.map_err(|e| {
                format!(
                    "{} {}: {}",
                    o["kind"].as_str().unwrap_or("object"),
                    o.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    e.0
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((resolved, values))
}

/// Replaces every occurrence of a store value in the strings of `v` with a mask (`++++++++`):
/// views of natively resolved apps show that a value is there, never what it is.
pub fn mask_values(v: &mut Value, values: &[String]) {
    match v {
        Value::String(s) => {
            for secret in values {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "++++++++");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask_values(x, values)),
        Value::Object(m) => m.values_mut().for_each(|x| mask_values(x, values)),
        _ => {}
    }
}
