//! The server's settings, from the objects Argo CD keeps them in and
//! reloaded whenever they change: `argocd-cm` (accounts, admin.enabled),
//! `argocd-rbac-cm` (policy) and `argocd-secret` (password hashes, the
//! token signing key, webhook secrets).

use crate::rbac::Policy;
use crate::webhook::WebhookSecrets;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const ARGOCD_CM: &str = "argocd-cm";
pub const RBAC_CM: &str = "argocd-rbac-cm";
pub const ARGOCD_SECRET: &str = "argocd-secret";
pub const INITIAL_ADMIN_SECRET: &str = "argocd-initial-admin-secret";

pub struct Settings {
    cm: Store<ConfigMap>,
    rbac: Store<ConfigMap>,
    secret: Store<Secret>,
    /// The parsed policy and the resourceVersion it came from.
    parsed: Mutex<Option<(String, Arc<Policy>)>>,
}

fn watch_one<K>(client: &Client, ns: &str, name: &str) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::namespaced(client.clone(), ns), cfg),
    )
    .default_backoff()
    .touched_objects();
    let task = tokio::spawn(async move {
        let mut s = stream.boxed();
        while s.next().await.is_some() {}
    });
    (store, task)
}

impl Settings {
    pub async fn start(
        client: &Client,
        ns: &str,
    ) -> Result<(Arc<Settings>, Vec<tokio::task::JoinHandle<()>>), String> {
        let (cm, t1) = watch_one::<ConfigMap>(client, ns, ARGOCD_CM);
        let (rbac, t2) = watch_one::<ConfigMap>(client, ns, RBAC_CM);
        let (secret, t3) = watch_one::<Secret>(client, ns, ARGOCD_SECRET);
        for r in [
            cm.wait_until_ready().await,
            rbac.wait_until_ready().await,
            secret.wait_until_ready().await,
        ] {
            r.map_err(|e| format!("initial list of settings failed: {e}"))?;
        }
        Ok((
            Arc::new(Settings {
                cm,
                rbac,
                secret,
                parsed: Mutex::new(None),
            }),
            vec![t1, t2, t3],
        ))
    }

    /// `argocd-cm` data.
    pub fn config(&self) -> BTreeMap<String, String> {
        self.cm
            .state()
            .first()
            .and_then(|c| c.data.clone())
            .unwrap_or_default()
    }

    /// `argocd-rbac-cm` data.
    pub fn rbac(&self) -> BTreeMap<String, String> {
        self.rbac
            .state()
            .first()
            .and_then(|c| c.data.clone())
            .unwrap_or_default()
    }

    /// `argocd-secret` data, decoded. Never logged or returned.
    pub fn secret(&self) -> BTreeMap<String, String> {
        self.secret
            .state()
            .first()
            .and_then(|s| s.data.clone())
            .map(|d| {
                d.into_iter()
                    .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|s| (k, s)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The RBAC policy, re-parsed only when `argocd-rbac-cm` changed. A
    /// broken policy denies everything rather than falling back to anything.
    pub fn policy(&self) -> Result<Arc<Policy>, String> {
        let cm = self.rbac.state().first().cloned();
        let rv = cm
            .as_ref()
            .map(|c| c.resource_version().unwrap_or_default())
            .unwrap_or_default();
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, p)) = parsed.as_ref()
            && *v == rv
        {
            return Ok(p.clone());
        }
        let data = cm.and_then(|c| c.data.clone()).unwrap_or_default();
        let policy =
            Arc::new(Policy::from_config_map(&data).map_err(|e| format!("{RBAC_CM}: {e}"))?);
        *parsed = Some((rv, policy.clone()));
        Ok(policy)
    }

    pub fn webhook_secrets(&self) -> WebhookSecrets {
        let s = self.secret();
        let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
        WebhookSecrets {
            github: get("webhook.github.secret"),
            gitlab: get("webhook.gitlab.secret"),
            gitea: get("webhook.gitea.secret"),
            gogs: get("webhook.gogs.secret"),
            bitbucket_uuid: get("webhook.bitbucket.uuid"),
            bitbucket_server: get("webhook.bitbucketserver.secret"),
        }
    }
}
