//! avp's `kubernetessecret` backend: the path is `[namespace:]name` of a Secret (namespace
//! `argocd` when not given, as avp), its keys the placeholders' keys, values decoded to text.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Map, Value};

use crate::backend::{Backend, BoxFuture};
use crate::placeholder::SecretRef;

pub struct KubeSecret {
    client: kube::Client,
}

impl KubeSecret {
    pub fn new(client: kube::Client) -> KubeSecret {
        KubeSecret { client }
    }
}

/// `ns:name` or `name` (namespace `argocd`).
pub fn split_path(path: &str) -> (&str, &str) {
    match path.split(':').collect::<Vec<_>>().as_slice() {
        [ns, name] => (ns, name),
        _ => ("argocd", path),
    }
}

impl Backend for KubeSecret {
    fn name(&self) -> &'static str {
        "kubernetessecret"
    }

    fn get_secrets<'a>(
        &'a self,
        r: &'a SecretRef,
    ) -> BoxFuture<'a, Result<Map<String, Value>, String>> {
        Box::pin(async move {
            let (ns, name) = split_path(&r.path);
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            let s = api.get(name).await.map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 => {
                    format!("secrets \"{name}\" not found in namespace {ns}")
                }
                kube::Error::Api(s) => {
                    format!("reading Secret {ns}/{name}: {} ({})", s.message, s.code)
                }
                other => format!("reading Secret {ns}/{name}: {other}"),
            })?;
            Ok(s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Value::String(String::from_utf8_lossy(&v.0).into_owned())))
                .collect())
        })
    }
}
