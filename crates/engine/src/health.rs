//! Health of live objects, per kind, as Argo CD assesses it.

use ferry_model::HealthStatus;
use ferry_model::settings::ResourceSettings;
use serde_json::Value;

pub const HEALTHY: &str = "Healthy";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SUSPENDED: &str = "Suspended";
pub const MISSING: &str = "Missing";
pub const UNKNOWN: &str = "Unknown";

/// Argo CD's order, least to most severe; app health is the most severe child.
const ORDER: [&str; 6] = [HEALTHY, SUSPENDED, PROGRESSING, MISSING, DEGRADED, UNKNOWN];

pub fn severity(status: &str) -> usize {
    ORDER
        .iter()
        .position(|s| *s == status)
        .unwrap_or(ORDER.len())
}

/// The worst of several statuses; Healthy when there are none.
pub fn worst<'a>(statuses: impl IntoIterator<Item = &'a HealthStatus>) -> HealthStatus {
    statuses
        .into_iter()
        .max_by_key(|h| severity(&h.status))
        .cloned()
        .unwrap_or_else(|| h(HEALTHY, None))
}

fn h(status: &str, message: Option<String>) -> HealthStatus {
    HealthStatus {
        status: status.into(),
        message,
    }
}

fn i(v: &Value, path: &[&str]) -> i64 {
    get(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    get(obj, &["status", "conditions"])?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

fn cond_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some(status)
}

fn cond_msg(obj: &Value, type_: &str) -> Option<String> {
    condition(obj, type_)
        .and_then(|c| c.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Health with `argocd-cm`'s Lua customizations: a script for the object's
/// group and kind replaces the built-in assessment; a failing script makes
/// the object Unknown with the script's error, as in Argo CD.
pub fn assess_with(obj: &Value, settings: &ResourceSettings) -> Option<HealthStatus> {
    if obj.pointer("/metadata/deletionTimestamp").is_some() || settings.health.is_empty() {
        return assess(obj);
    }
    let (group, kind) = group_kind(obj);
    let Some(custom) = settings.health_script(group, kind) else {
        return assess(obj);
    };
    Some(
        crate::lua::health(&custom.script, obj, custom.use_open_libs).unwrap_or_else(|e| {
            h(
                UNKNOWN,
                Some(format!("health check {} failed: {e}", custom.key)),
            )
        }),
    )
}

/// Health of one live object, or None for kinds that have no health of their own
/// (ConfigMaps, Services of type ClusterIP, RBAC objects...), which count as Healthy.
pub fn assess(obj: &Value) -> Option<HealthStatus> {
    let (group, kind) = group_kind(obj);
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return Some(h(PROGRESSING, Some("Pending deletion".into())));
    }
    match (group, kind) {
        ("apps", "Deployment") => Some(deployment(obj)),
        ("apps", "StatefulSet") => Some(statefulset(obj)),
        ("apps", "DaemonSet") => Some(daemonset(obj)),
        ("apps", "ReplicaSet") => Some(replicaset(obj)),
        ("", "Pod") => Some(pod(obj)),
        ("", "Service") => service(obj),
        ("networking.k8s.io" | "extensions", "Ingress") => Some(ingress(obj)),
        ("batch", "Job") => Some(job(obj)),
        ("batch", "CronJob") => Some(cronjob(obj)),
        ("", "PersistentVolumeClaim") => Some(pvc(obj)),
        ("autoscaling", "HorizontalPodAutoscaler") => Some(hpa(obj)),
        ("apiregistration.k8s.io", "APIService") => Some(apiservice(obj)),
        ("argoproj.io", "Application") => application(obj),
        _ => ready_condition(obj),
    }
}

/// An object's API group (empty for core) and kind.
fn group_kind(obj: &Value) -> (&str, &str) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    (group, kind)
}

fn generation_observed(obj: &Value) -> bool {
    let gen_ = i(obj, &["metadata", "generation"]);
    let observed = i(obj, &["status", "observedGeneration"]);
    observed >= gen_
}

fn deployment(obj: &Value) -> HealthStatus {
    if get(obj, &["spec", "paused"]).and_then(Value::as_bool) == Some(true) {
        return h(SUSPENDED, Some("Deployment is paused".into()));
    }
    if !generation_observed(obj) {
        return h(PROGRESSING, Some("Waiting for rollout to finish: observed deployment generation less than desired generation".into()));
    }
    if let Some(c) = condition(obj, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return h(
            DEGRADED,
            Some(format!(
                "Deployment {name:?} exceeded its progress deadline"
            )),
        );
    }
    let replicas = get(obj, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = i(obj, &["status", "updatedReplicas"]);
    let total = i(obj, &["status", "replicas"]);
    let available = i(obj, &["status", "availableReplicas"]);
    if updated < replicas {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated..."
            )),
        );
    }
    if total > updated {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for rollout to finish: {} old replicas are pending termination...",
                total - updated
            )),
        );
    }
    if available < updated {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for rollout to finish: {available} of {updated} updated replicas are available..."
            )),
        );
    }
    h(HEALTHY, None)
}

fn statefulset(obj: &Value) -> HealthStatus {
    if !generation_observed(obj) {
        return h(
            PROGRESSING,
            Some("Waiting for statefulset spec update to be observed...".into()),
        );
    }
    let replicas = get(obj, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = i(obj, &["status", "readyReplicas"]);
    if ready < replicas {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for {replicas} pods to be ready... ({ready} ready)"
            )),
        );
    }
    let strategy = obj
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if strategy == "RollingUpdate" {
        let current = obj
            .pointer("/status/currentRevision")
            .and_then(Value::as_str);
        let update = obj
            .pointer("/status/updateRevision")
            .and_then(Value::as_str);
        if current.is_some() && update.is_some() && current != update {
            return h(
                PROGRESSING,
                Some("waiting for statefulset rolling update to complete".into()),
            );
        }
    }
    h(HEALTHY, None)
}

fn daemonset(obj: &Value) -> HealthStatus {
    if !generation_observed(obj) {
        return h(
            PROGRESSING,
            Some("Waiting for daemon set spec update to be observed...".into()),
        );
    }
    let desired = i(obj, &["status", "desiredNumberScheduled"]);
    let updated = i(obj, &["status", "updatedNumberScheduled"]);
    let available = i(obj, &["status", "numberAvailable"]);
    if updated < desired {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for daemon set rollout to finish: {updated} out of {desired} new pods have been updated..."
            )),
        );
    }
    if available < desired {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for daemon set rollout to finish: {available} of {desired} updated pods are available..."
            )),
        );
    }
    h(HEALTHY, None)
}

fn replicaset(obj: &Value) -> HealthStatus {
    if !generation_observed(obj) {
        return h(PROGRESSING, Some("Waiting for rollout to finish: observed replica set generation less than desired generation".into()));
    }
    if cond_is(obj, "ReplicaFailure", "True") {
        return h(DEGRADED, cond_msg(obj, "ReplicaFailure"));
    }
    let replicas = get(obj, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let available = i(obj, &["status", "availableReplicas"]);
    if available < replicas {
        return h(
            PROGRESSING,
            Some(format!(
                "Waiting for rollout to finish: {available} out of {replicas} new replicas are available..."
            )),
        );
    }
    h(HEALTHY, None)
}

fn pod(obj: &Value) -> HealthStatus {
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let message = obj
        .pointer("/status/message")
        .and_then(Value::as_str)
        .map(str::to_string);
    // A container waiting on a bad image or crash-looping is degraded whatever the phase.
    if let Some(statuses) = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for s in statuses {
            if let Some(reason) = s.pointer("/state/waiting/reason").and_then(Value::as_str)
                && matches!(
                    reason,
                    "CrashLoopBackOff"
                        | "ErrImagePull"
                        | "ImagePullBackOff"
                        | "CreateContainerConfigError"
                        | "InvalidImageName"
                )
            {
                let msg = s
                    .pointer("/state/waiting/message")
                    .and_then(Value::as_str)
                    .unwrap_or(reason);
                return h(DEGRADED, Some(msg.to_string()));
            }
        }
    }
    match phase {
        "Succeeded" => h(HEALTHY, message),
        "Failed" => {
            let msg = message.or_else(|| {
                obj.pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter().find_map(|s| {
                            let code = s
                                .pointer("/state/terminated/exitCode")
                                .and_then(Value::as_i64)?;
                            (code != 0).then(|| {
                                format!(
                                    "container {:?} exited with code {code}",
                                    s.get("name").and_then(Value::as_str).unwrap_or_default()
                                )
                            })
                        })
                    })
            });
            h(DEGRADED, msg)
        }
        "Running" => {
            let restart_always = obj
                .pointer("/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Always")
                == "Always";
            if !restart_always {
                // Run-to-completion pods (typically hooks) are done only when they end.
                h(
                    PROGRESSING,
                    Some(message.unwrap_or_else(|| "Pod is running".into())),
                )
            } else if cond_is(obj, "Ready", "True") {
                h(HEALTHY, message)
            } else {
                h(
                    PROGRESSING,
                    Some(message.unwrap_or_else(|| "Pod is running but not ready".into())),
                )
            }
        }
        _ => h(PROGRESSING, message),
    }
}

fn service(obj: &Value) -> Option<HealthStatus> {
    if obj.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
        return None;
    }
    let has_ingress = obj
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    Some(if has_ingress {
        h(HEALTHY, None)
    } else {
        h(
            PROGRESSING,
            Some("Waiting for the load balancer to get an address".into()),
        )
    })
}

fn ingress(obj: &Value) -> HealthStatus {
    let has_ingress = obj
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if has_ingress {
        h(HEALTHY, None)
    } else {
        h(
            PROGRESSING,
            Some("Waiting for the ingress to get an address".into()),
        )
    }
}

fn job(obj: &Value) -> HealthStatus {
    if cond_is(obj, "Failed", "True") {
        return h(
            DEGRADED,
            Some(cond_msg(obj, "Failed").unwrap_or_else(|| "Job failed".into())),
        );
    }
    if cond_is(obj, "Complete", "True") {
        return h(
            HEALTHY,
            Some(cond_msg(obj, "Complete").unwrap_or_else(|| "Job completed".into())),
        );
    }
    if get(obj, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true) {
        return h(SUSPENDED, Some("Job is suspended".into()));
    }
    h(PROGRESSING, Some("Job is running".into()))
}

fn cronjob(obj: &Value) -> HealthStatus {
    if get(obj, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true) {
        return h(SUSPENDED, Some("CronJob is suspended".into()));
    }
    h(HEALTHY, None)
}

fn pvc(obj: &Value) -> HealthStatus {
    match obj.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => h(HEALTHY, None),
        Some("Lost") => h(DEGRADED, Some("The claim lost its volume".into())),
        _ => h(
            PROGRESSING,
            Some("Waiting for the claim to be bound".into()),
        ),
    }
}

fn hpa(obj: &Value) -> HealthStatus {
    if cond_is(obj, "ScalingActive", "False") {
        return h(DEGRADED, cond_msg(obj, "ScalingActive"));
    }
    if cond_is(obj, "AbleToScale", "False") {
        return h(DEGRADED, cond_msg(obj, "AbleToScale"));
    }
    if condition(obj, "AbleToScale").is_none() && obj.pointer("/status/currentReplicas").is_none() {
        return h(
            PROGRESSING,
            Some("Waiting for the autoscaler to observe its target".into()),
        );
    }
    h(HEALTHY, None)
}

fn apiservice(obj: &Value) -> HealthStatus {
    if cond_is(obj, "Available", "True") {
        h(HEALTHY, None)
    } else {
        h(
            PROGRESSING,
            cond_msg(obj, "Available")
                .or_else(|| Some("Waiting for the API service to be available".into())),
        )
    }
}

fn application(obj: &Value) -> Option<HealthStatus> {
    let status = obj
        .pointer("/status/health/status")
        .and_then(Value::as_str)?;
    let message = obj
        .pointer("/status/health/message")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(h(status, message))
}

/// Custom resources that follow the Kubernetes convention of a `Ready` condition.
fn ready_condition(obj: &Value) -> Option<HealthStatus> {
    let c = condition(obj, "Ready")?;
    let message = c.get("message").and_then(Value::as_str).map(str::to_string);
    Some(match c.get("status").and_then(Value::as_str) {
        Some("True") => h(HEALTHY, message),
        Some("False") => {
            let stalled = cond_is(obj, "Stalled", "True")
                || c.get("reason")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.contains("Fail") || r.contains("Error"));
            if stalled {
                h(DEGRADED, message)
            } else {
                h(PROGRESSING, message)
            }
        }
        _ => h(PROGRESSING, message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(v: Value) -> String {
        assess(&v)
            .map(|h| h.status)
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn deployments() {
        let base = |gen_: i64, obs: i64, upd: i64, avail: i64| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d", "generation": gen_ },
                "spec": { "replicas": 2 },
                "status": { "observedGeneration": obs, "replicas": 2, "updatedReplicas": upd, "availableReplicas": avail }
            })
        };
        assert_eq!(st(base(2, 1, 2, 2)), PROGRESSING);
        assert_eq!(st(base(2, 2, 1, 1)), PROGRESSING);
        assert_eq!(st(base(2, 2, 2, 1)), PROGRESSING);
        assert_eq!(st(base(2, 2, 2, 2)), HEALTHY);
        let mut paused = base(2, 2, 2, 2);
        paused["spec"]["paused"] = json!(true);
        assert_eq!(st(paused), SUSPENDED);
        let mut dead = base(2, 2, 1, 1);
        dead["status"]["conditions"] = json!([{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded" }]);
        let hs = assess(&dead).unwrap();
        assert_eq!(hs.status, DEGRADED);
        assert!(hs.message.unwrap().contains("progress deadline"));
    }

    #[test]
    fn jobs_pods_and_others() {
        let job = |t: &str| {
            json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "status": { "conditions": [{ "type": t, "status": "True", "message": "BackoffLimitExceeded" }] } })
        };
        assert_eq!(st(job("Complete")), HEALTHY);
        assert_eq!(st(job("Failed")), DEGRADED);
        let pod = |phase: &str, ready: &str| {
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": ready }] } })
        };
        assert_eq!(st(pod("Running", "True")), HEALTHY);
        assert_eq!(st(pod("Running", "False")), PROGRESSING);
        assert_eq!(st(pod("Failed", "False")), DEGRADED);
        assert_eq!(st(pod("Pending", "False")), PROGRESSING);
        assert_eq!(
            st(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"} })),
            "none"
        );
        assert_eq!(
            st(
                json!({ "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"} })
            ),
            PROGRESSING
        );
        assert_eq!(
            st(
                json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "status": {"phase": "Bound"} })
            ),
            HEALTHY
        );
        assert_eq!(
            st(
                json!({ "apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"},
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] } })
            ),
            HEALTHY
        );
        assert_eq!(
            st(
                json!({ "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "a"},
            "status": { "health": { "status": "Degraded" } } })
            ),
            DEGRADED
        );
    }

    /// Fixtures in testdata/health (one file per kind, as gitops-engine keeps them): every
    /// case gets its expected status and message, and every kind `assess` knows has fixtures
    /// for at least two statuses.
    #[test]
    fn fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/health");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        let mut statuses: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        let mut wrong = Vec::new();
        let mut count = 0;
        for file in &files {
            let cases: Vec<Value> =
                serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            for case in cases {
                count += 1;
                let obj = &case["object"];
                let got = assess(obj);
                let status = got
                    .as_ref()
                    .map_or("none".to_string(), |h| h.status.clone());
                let want = case["expect"].as_str().unwrap_or_default();
                let message = got.and_then(|h| h.message).unwrap_or_default();
                let name = format!(
                    "{}: {}",
                    file.file_name().unwrap().to_string_lossy(),
                    case["name"].as_str().unwrap_or_default()
                );
                if status != want {
                    wrong.push(format!("{name}: got {status}, want {want} ({message})"));
                }
                if let Some(part) = case["message"].as_str()
                    && !message.contains(part)
                {
                    wrong.push(format!("{name}: message {message:?} lacks {part:?}"));
                }
                statuses
                    .entry(obj["kind"].as_str().unwrap_or_default().to_string())
                    .or_default()
                    .insert(status);
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Pod",
            "Service",
            "Ingress",
            "Job",
            "CronJob",
            "PersistentVolumeClaim",
            "HorizontalPodAutoscaler",
            "APIService",
            "Application",
        ] {
            let seen = statuses.get(kind).map_or(0, |s| s.len());
            assert!(seen >= 2, "{kind}: fixtures for {seen} status(es)");
        }
        assert!(count >= 40, "{count} fixtures");
    }

    #[test]
    fn worst_wins() {
        let hs = [
            h(HEALTHY, None),
            h(DEGRADED, Some("x".into())),
            h(PROGRESSING, None),
        ];
        assert_eq!(worst(hs.iter()).status, DEGRADED);
        assert_eq!(worst([].iter()).status, HEALTHY);
        assert_eq!(
            worst([h(MISSING, None), h(PROGRESSING, None)].iter()).status,
            MISSING
        );
    }
}
