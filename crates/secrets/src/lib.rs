//! secrets: resolves argocd-vault-plugin placeholders in rendered manifests from secret stores (Vault/OpenBao, Kubernetes Secrets, SOPS).
//!
//! [`placeholder`] finds and replaces avp's placeholders (pure); [`modifiers`] and [`jsonpath`]
//! are its `| modifier` stages; [`config`] reads avp's settings from the same sources; a
//! [`Backend`] reads whole secrets from a store ([`vault`], [`kube_secret`], [`sops`]).
//! [`Resolver`] ties them together: it collects every secret a set of manifests needs, reads
//! each (path, version) once, keeps values in memory for a TTL, and replaces. Resolved values
//! exist only in memory and in the manifests it returns.

pub mod backend;
pub mod config;
pub mod jsonpath;
pub mod kube_secret;
pub mod modifiers;
pub mod placeholder;
pub mod sops;
pub mod vault;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Mutex;

pub use backend::Backend;
pub use config::AvpConfig;
pub use placeholder::{Fetched, ManifestError, SecretRef, Settings};

pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // reqwest is built without a bundled provider; ring is the workspace's. An Err only means
    // another part of the process installed one first.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The backend `AVP_TYPE` names. `kube` is needed for `kubernetessecret`; `base` is what a
/// sops path is relative to; `sops` is the sops binary.
pub fn backend_from_config(
    c: &AvpConfig,
    kube: Option<kube::Client>,
    base: PathBuf,
    sops: PathBuf,
) -> Result<Arc<dyn Backend>, String> {
    match c.value("AVP_TYPE").as_deref() {
        Some("vault") => Ok(Arc::new(vault::Vault::new(c)?)),
        Some("kubernetessecret") => match kube {
            Some(k) => Ok(Arc::new(kube_secret::KubeSecret::new(k))),
            None => Err(
                "Failed to perform login for kubernetes secret backend: no Kubernetes client"
                    .into(),
            ),
        },
        Some("sops") => {
            let env = ["SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY", "SOPS_AGE_RECIPIENTS"]
                .iter()
                .filter_map(|k| c.value(k).map(|v| (k.to_string(), v)))
                .collect();
            Ok(Arc::new(sops::Sops::new(sops, base, env)))
        }
        Some(
            t @ ("ibmsecretsmanager"
            | "awssecretsmanager"
            | "gcpsecretmanager"
            | "azurekeyvault"
            | "yandexcloudlockbox"
            | "delineasecretserver"
            | "1passwordconnect"
            | "keepersecretsmanager"),
        ) => Err(format!(
            "AVP_TYPE {t} is an avp backend Ferry does not serve (it serves vault, kubernetessecret and sops)"
        )),
        other => Err(format!(
            "Must provide a supported Vault Type, received {}",
            other.unwrap_or("")
        )),
    }
}

/// `AVP_PATH_VALIDATION` compiled, as avp compiles it.
pub fn settings_from_config(c: &AvpConfig) -> Result<Settings, String> {
    let path_validation = match c.value("AVP_PATH_VALIDATION") {
        Some(re) => Some(
            regex::Regex::new(&re)
                .map_err(|e| format!("{re} is not a valid regular expression: {e}"))?,
        ),
        None => None,
    };
    Ok(Settings { path_validation })
}

type Cached = (Instant, Arc<Map<String, Value>>);

/// One secret's cache entry. Its own lock makes reads single-flight: when many apps need the
/// same secret at once (a cold start), one reads the store and the others wait for its answer.
type Slot = Arc<Mutex<Option<Cached>>>;

/// Reads secrets for many manifests: each (path, version) once per pass, values kept in memory
/// for `ttl` (errors are not kept: the next pass asks again).
pub struct Resolver {
    backend: Arc<dyn Backend>,
    ttl: Duration,
    logged_in: Mutex<bool>,
    cache: Mutex<HashMap<SecretRef, Slot>>,
    /// Reads made (cache misses), for tests and benchmarks.
    reads: std::sync::atomic::AtomicU64,
}

impl Resolver {
    pub fn new(backend: Arc<dyn Backend>, ttl: Duration) -> Resolver {
        Resolver {
            backend,
            ttl,
            logged_in: Mutex::new(false),
            cache: Mutex::new(HashMap::new()),
            reads: Default::default(),
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// How many secrets were read from the store so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs in if not yet done; avp logs in before the first manifest, placeholders or not.
    pub async fn login(&self) -> Result<(), String> {
        let mut done = self.logged_in.lock().await;
        if !*done {
            self.backend.login().await?;
            *done = true;
        }
        Ok(())
    }

    /// Forgets cached values so the next pass reads the store again (a forced refresh).
    pub async fn forget(&self) {
        self.cache.lock().await.clear();
    }

    /// Every secret in `wanted`, from the cache when fresh, else read once.
    pub async fn fetch(
        &self,
        wanted: impl IntoIterator<Item = SecretRef>,
    ) -> Result<Fetched, String> {
        self.login().await?;
        let mut out = BTreeMap::new();
        for r in wanted {
            let slot = self
                .cache
                .lock()
                .await
                .entry(r.clone())
                .or_default()
                .clone();
            let mut entry = slot.lock().await;
            let fresh = entry
                .as_ref()
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, v)| v.clone());
            let v = match fresh {
                Some(v) => Ok(v),
                None => {
                    self.reads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Errors are not kept: the next pass asks the store again.
                    let v = self.backend.get_secrets(&r).await.map(Arc::new);
                    if let Ok(v) = &v {
                        *entry = Some((Instant::now(), v.clone()));
                    }
                    v
                }
            };
            out.insert(r, v);
        }
        Ok(Fetched(out))
    }

    /// Resolves `manifests` (each on its own: one's error does not stop the others).
    pub async fn resolve(
        &self,
        manifests: &[Value],
        settings: &Settings,
    ) -> Result<Vec<Result<Value, ManifestError>>, String> {
        Ok(self.resolve_with_values(manifests, settings).await?.0)
    }

    /// [`Resolver::resolve`], and every text value the secrets read hold: what views of the
    /// manifests must mask wherever it appears.
    pub async fn resolve_with_values(
        &self,
        manifests: &[Value],
        settings: &Settings,
    ) -> Result<(Vec<Result<Value, ManifestError>>, Vec<String>), String> {
        let wanted = placeholder::needed_by_all(manifests, settings);
        let mut fetched = self.fetch(wanted).await?;
        let mut values = Vec::new();
        for m in fetched.0.values().flatten() {
            for v in m.values() {
                collect_text(v, &mut values);
            }
        }
        values.sort();
        values.dedup();
        let out = manifests
            .iter()
            .map(|m| placeholder::replace(m, settings, &mut fetched))
            .collect();
        Ok((out, values))
    }
}

/// Every string (and number) inside `v`, as text, that is long enough to mean something: the
/// values a mask looks for. Short ones (`1`, `true`) would mask half of any manifest.
fn collect_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.len() >= 4 => {
            out.push(s.clone());
            // A value stored as JSON or YAML text reaches manifests through jsonPath/yamlParse.
            if let Ok(inner) = serde_json::from_str::<Value>(s)
                && (inner.is_object() || inner.is_array())
            {
                collect_text(&inner, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_text(x, out)),
        _ => {}
    }
}

impl Resolver {
    /// How long values are reused.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Whether a manifest could hold placeholders: a cheap test before any parsing.
pub fn mentions_placeholders(manifest: &Value) -> bool {
    let text = manifest.to_string();
    text.contains("<path:") || text.contains(placeholder::ANNOTATION_PATH) || {
        // A Secret's base64 values can hide them.
        manifest.get("kind").and_then(Value::as_str) == Some("Secret")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that answers slowly and counts what it was asked.
    struct Slow(AtomicUsize);

    impl Backend for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn get_secrets<'a>(
            &'a self,
            r: &'a SecretRef,
        ) -> BoxFuture<'a, Result<Map<String, Value>, String>> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut m = Map::new();
                m.insert("key".into(), Value::String(r.path.clone()));
                Ok(m)
            })
        }
    }

    #[tokio::test]
    async fn apps_asking_for_the_same_secret_at_once_cause_one_read() {
        let store = Arc::new(Slow(AtomicUsize::new(0)));
        let resolver = Arc::new(Resolver::new(store.clone(), Duration::from_secs(60)));
        let secret = |p: &str| SecretRef {
            path: p.into(),
            version: None,
            kv_version: None,
        };
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (resolver, wanted) = (
                    resolver.clone(),
                    vec![secret("kv/data/a"), secret(&format!("kv/data/b{}", i % 4))],
                );
                tokio::spawn(async move { resolver.fetch(wanted).await.map(|f| f.0.len()) })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 2);
        }
        assert_eq!(
            store.0.load(Ordering::SeqCst),
            5,
            "one read per distinct path"
        );
        assert_eq!(resolver.reads(), 5);
        resolver.forget().await;
        resolver.fetch(vec![secret("kv/data/a")]).await.unwrap();
        assert_eq!(
            store.0.load(Ordering::SeqCst),
            6,
            "a forced refresh reads again"
        );
    }
}
