//! `ferry install`: the manifest that runs Ferry in a cluster — Namespace, CRDs, ServiceAccounts,
//! RBAC with what each component needs, the controller (replicas with leader election) and the
//! API server, Services, a PodDisruptionBudget — as Argo CD ships `install.yaml` (cluster-wide)
//! and `namespace-install.yaml` (one namespace, no CRDs, no ClusterRoles).
//! `deploy/install.yaml` is this command's default output; the Helm chart in `deploy/chart`
//! renders the same objects.

use clap::Args;
use serde_json::{Value, json};

/// The uid and gid of the `ferry` user in Ferry's image.
pub const FERRY_UID: u32 = 999;
const CACHE_DIR: &str = "/home/ferry/.cache/ferry";
const CONTROLLER: &str = "ferry-controller";
const SERVER: &str = "ferry-server";

#[derive(Args, Clone, Debug)]
pub struct InstallArgs {
    /// Namespace Ferry runs in and reads Applications, AppProjects and settings from.
    #[arg(long, default_value = "argocd")]
    pub namespace: String,
    /// Ferry's container image (`make image` builds and pushes one).
    #[arg(long, default_value_t = default_image())]
    pub image: String,
    #[arg(long, default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// Controller replicas: one leads (a Lease), the others stand by.
    #[arg(long, default_value_t = 2)]
    pub controller_replicas: u32,
    /// Split the Applications into this many shards across the controller replicas (each
    /// shard a Lease; apps by a hash of the app). 1: one replica leads, the others stand by.
    #[arg(long, default_value_t = 1)]
    pub controller_shards: u32,
    #[arg(long, default_value_t = 1)]
    pub server_replicas: u32,
    /// Manage this namespace only: no CRDs (install them once with the cluster-wide manifest
    /// or `ferry install --crds-only`), Roles instead of ClusterRoles, KubeVela and image
    /// automation objects read from this namespace.
    #[arg(long)]
    pub namespaced: bool,
    /// Only the CRDs.
    #[arg(long, conflicts_with = "namespaced")]
    pub crds_only: bool,
    /// Without the CRDs: for a cluster that has Argo CD's (or Flux's, KubeVela's) already, which
    /// Ferry uses as they are (`helm install --skip-crds` for the chart).
    #[arg(long, conflicts_with = "crds_only")]
    pub no_crds: bool,
    /// Without the API server (and its Service and RBAC).
    #[arg(long)]
    pub no_server: bool,
    /// Without KubeVela's front door (core.oam.dev Applications are not served).
    #[arg(long)]
    pub no_oam: bool,
    /// Without Flux image automation.
    #[arg(long)]
    pub no_image_automation: bool,
    /// The Kubernetes version the manifest is for: before 1.21 the PodDisruptionBudget is
    /// `policy/v1beta1` (as Helm's `.Capabilities` would choose).
    #[arg(long, default_value = "1.34")]
    pub kube_version: String,
}

fn default_image() -> String {
    format!("ferry:v{}", env!("CARGO_PKG_VERSION"))
}

fn labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": "ferry",
        "app.kubernetes.io/component": component.trim_start_matches("ferry-"),
    })
}

fn meta(name: &str, namespace: Option<&str>, component: &str) -> Value {
    let mut m = json!({ "name": name, "labels": labels(component) });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn all_verbs() -> Value {
    json!(["*"])
}

/// What the controller needs in its own namespace whatever it delivers: settings and
/// credentials, its Lease, Events, and the Argo CD objects it serves.
fn controller_home_rules() -> Value {
    json!([
        { "apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch"] },
        { "apiGroups": ["argoproj.io"], "resources": ["applications", "applications/status", "appprojects", "applicationsets"], "verbs": ["get", "list", "watch", "update", "patch"] },
        // ApplicationSets' generated Applications.
        { "apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["create", "delete"] },
        { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
        { "apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "list"] },
    ])
}

/// The server's rules in its namespace: settings, accounts, credentials and the Argo CD objects
/// users create through it.
fn server_home_rules() -> Value {
    json!([
        { "apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
        { "apiGroups": ["argoproj.io"], "resources": ["applications", "appprojects", "applicationsets"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
        { "apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "list", "watch"] },
    ])
}

/// The server across the cluster: it reads what apps deployed (resource trees, diffs, live
/// manifests) and writes only Argo CD's own objects (syncs, refreshes, apps in other namespaces);
/// it never changes a deployed object — the controller does. `patch` is for the server-side
/// apply dry-runs its diffs are computed with (`dryRun=All` needs the verb, changes nothing).
fn server_cluster_rules() -> Value {
    json!([
        { "apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "patch"] },
        { "apiGroups": ["argoproj.io"], "resources": ["applications", "appprojects", "applicationsets"], "verbs": ["create", "update", "patch", "delete"] },
    ])
}

fn role(kind: &str, name: &str, ns: Option<&str>, rules: Value) -> Value {
    json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta(name, ns, name), "rules": rules })
}

fn binding(kind: &str, role_kind: &str, name: &str, ns: Option<&str>, sa_ns: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta(name, ns, name),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": sa_ns }],
    })
}

fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true, "runAsUser": FERRY_UID, "runAsGroup": FERRY_UID, "fsGroup": FERRY_UID,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The writable places on a read-only root: the Git and chart cache, and /tmp (plugins, shims).
fn writable_volumes() -> (Value, Value) {
    (
        json!([
            { "name": "cache", "emptyDir": {} },
            { "name": "tmp", "emptyDir": {} },
        ]),
        json!([
            { "name": "cache", "mountPath": "/home/ferry/.cache" },
            { "name": "tmp", "mountPath": "/tmp" },
        ]),
    )
}

/// `port` named `https` is probed over HTTPS (the kubelet does not verify the certificate).
fn http_get(path: &str, port: &str) -> Value {
    if port == "https" {
        json!({ "path": path, "port": port, "scheme": "HTTPS" })
    } else {
        json!({ "path": path, "port": port })
    }
}

fn probe(path: &str, port: &str, period: u32) -> Value {
    json!({ "httpGet": http_get(path, port), "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": 3 })
}

fn startup_probe(port: &str) -> Value {
    json!({ "httpGet": http_get("/healthz", port), "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 60 })
}

#[allow(clippy::too_many_arguments)]
fn deployment(
    a: &InstallArgs,
    name: &str,
    replicas: u32,
    args: Vec<String>,
    ports: Value,
    probe_port: &str,
    resources: Value,
) -> Value {
    let (volumes, mounts) = writable_volumes();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(name, Some(&a.namespace), name),
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": labels(name) },
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": pod_security(),
                    // Time for a running operation to finish or checkpoint and the Lease to be released.
                    "terminationGracePeriodSeconds": 30,
                    "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": { "topologyKey": "kubernetes.io/hostname", "labelSelector": { "matchLabels": { "app.kubernetes.io/name": name } } },
                    }]}},
                    "containers": [{
                        "name": name.trim_start_matches("ferry-"),
                        "image": a.image,
                        "imagePullPolicy": a.image_pull_policy,
                        "args": args,
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "HOME", "value": "/home/ferry" },
                        ],
                        "ports": ports,
                        // The server listens only once its caches are listed: liveness waits
                        // for the first answer (up to five minutes on a large cluster).
                        "startupProbe": startup_probe(probe_port),
                        "readinessProbe": probe("/readyz", probe_port, 5),
                        "livenessProbe": probe("/healthz", probe_port, 10),
                        "resources": resources,
                        "securityContext": container_security(),
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

fn service(ns: &str, name: &str, selects: &str, port: u32, target: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta(name, Some(ns), selects),
        "spec": {
            "selector": { "app.kubernetes.io/name": selects },
            "ports": [{ "name": target, "port": port, "targetPort": target, "protocol": "TCP" }],
        },
    })
}

fn kube_minor(v: &str) -> u32 {
    v.trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .unwrap_or(u32::MAX)
}

/// The install manifest's objects, in the order they are applied.
pub fn objects(a: &InstallArgs) -> Vec<Value> {
    let ns = a.namespace.as_str();
    let mut out = Vec::new();
    if a.crds_only {
        return ferry_model::crds::all();
    }
    out.push(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": { "app.kubernetes.io/part-of": "ferry" } } }));
    if !a.namespaced && !a.no_crds {
        out.extend(ferry_model::crds::all());
    }
    out.push(json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(CONTROLLER, Some(ns), CONTROLLER) }));
    if !a.no_server {
        out.push(json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(SERVER, Some(ns), SERVER) }));
    }

    // The controller delivers whatever Git holds (any kind, any namespace it is allowed), so
    // like Argo CD's it may do anything where it delivers: cluster-wide, or in its namespace.
    let deliver = json!({ "apiGroups": ["*"], "resources": ["*"], "verbs": all_verbs() });
    if a.namespaced {
        let mut rules = controller_home_rules()
            .as_array()
            .cloned()
            .unwrap_or_default();
        rules.push(deliver);
        out.push(role("Role", CONTROLLER, Some(ns), json!(rules)));
        out.push(binding("RoleBinding", "Role", CONTROLLER, Some(ns), ns));
    } else {
        out.push(role("ClusterRole", CONTROLLER, None, json!([deliver])));
        out.push(binding(
            "ClusterRoleBinding",
            "ClusterRole",
            CONTROLLER,
            None,
            ns,
        ));
    }
    if !a.no_server {
        out.push(role("Role", SERVER, Some(ns), server_home_rules()));
        out.push(binding("RoleBinding", "Role", SERVER, Some(ns), ns));
        if !a.namespaced {
            out.push(role("ClusterRole", SERVER, None, server_cluster_rules()));
            out.push(binding(
                "ClusterRoleBinding",
                "ClusterRole",
                SERVER,
                None,
                ns,
            ));
        }
    }

    let mut controller_args: Vec<String> = [
        "controller",
        "--namespace",
        ns,
        "--identity",
        "$(POD_NAME)",
        "--metrics-addr",
        "0.0.0.0:8082",
        "--cache-dir",
        CACHE_DIR,
    ]
    .map(String::from)
    .into();
    if a.controller_shards > 1 {
        controller_args.extend([
            "--shards".to_string(),
            a.controller_shards.to_string(),
            "--shard-by".to_string(),
            "app".to_string(),
        ]);
    } else if a.controller_replicas <= 1 {
        controller_args.push("--no-leader-election".into());
    }
    if a.namespaced {
        controller_args.push("--namespaced".into());
    }
    for (off, flag, scoped) in [
        (a.no_oam, "--no-oam", "--oam-namespace"),
        (
            a.no_image_automation,
            "--no-image-automation",
            "--image-namespace",
        ),
    ] {
        if off {
            controller_args.push(flag.into());
        } else if a.namespaced {
            controller_args.extend([scoped.to_string(), ns.to_string()]);
        }
    }
    out.push(deployment(
        a,
        CONTROLLER,
        a.controller_replicas,
        controller_args,
        json!([{ "name": "metrics", "containerPort": 8082, "protocol": "TCP" }]),
        "metrics",
        json!({ "requests": { "cpu": "250m", "memory": "256Mi" }, "limits": { "memory": "1Gi" } }),
    ));
    out.push(service(
        ns,
        "ferry-controller-metrics",
        CONTROLLER,
        8082,
        "metrics",
    ));
    let pdb_version = if kube_minor(&a.kube_version) < 21 {
        "policy/v1beta1"
    } else {
        "policy/v1"
    };
    out.push(json!({
        "apiVersion": pdb_version, "kind": "PodDisruptionBudget",
        "metadata": meta(CONTROLLER, Some(ns), CONTROLLER),
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": { "app.kubernetes.io/name": CONTROLLER } } },
    }));
    if !a.no_server {
        let server_args: Vec<String> = [
            "server",
            "--namespace",
            ns,
            "--listen",
            "0.0.0.0:8080",
            "--metrics-addr",
            "0.0.0.0:8083",
            "--cache-dir",
            CACHE_DIR,
        ]
        .map(String::from)
        .into();
        let mut server_args = server_args;
        if a.namespaced {
            server_args.push("--namespaced".into());
        }
        out.push(deployment(
            a,
            SERVER,
            a.server_replicas,
            server_args,
            // HTTPS with the certificate of Secret argocd-server-tls, else a self-signed one,
            // as Argo CD's server; `--insecure` in the args serves plain HTTP behind a proxy.
            json!([
                { "name": "https", "containerPort": 8080, "protocol": "TCP" },
                { "name": "metrics", "containerPort": 8083, "protocol": "TCP" },
            ]),
            "https",
            json!({ "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "512Mi" } }),
        ));
        out.push(service(ns, SERVER, SERVER, 443, "https"));
        out.push(service(ns, "ferry-server-metrics", SERVER, 8083, "metrics"));
    }
    out
}

/// The objects as one YAML stream.
pub fn manifest(a: &InstallArgs) -> anyhow::Result<String> {
    let mut out = String::from(
        "# Ferry's install manifest: `ferry install` prints it (see docs/install.md).\n",
    );
    for o in objects(a) {
        out.push_str("---\n");
        out.push_str(&crate::output::to_yaml(&o)?);
    }
    Ok(out)
}

pub fn run(a: InstallArgs) -> anyhow::Result<()> {
    print!("{}", manifest(&a)?);
    Ok(())
}
