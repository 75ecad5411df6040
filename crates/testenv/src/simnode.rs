//! A kubelet stand-in: a registered Node whose pods are reported as running.
//!
//! It runs no containers. It exists so that the real controllers
//! (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job) see pods become
//! Running and Ready, or Succeeded for run-to-completion pods, and so reach
//! their real available/complete status. It also finishes graceful pod
//! deletions, which a kubelet would otherwise confirm.
//!
//! Pod annotations steer it, for tests of failure paths:
//! - `testenv.ferry.dev/exit-code: "N"` — a run-to-completion pod ends with
//!   exit code N (non-zero: phase Failed);
//! - `testenv.ferry.dev/run-seconds: "N"` — it runs N seconds before ending;
//! - `testenv.ferry.dev/not-ready: "true"` — a long-running pod stays unready.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const NODE_NAME: &str = "ferry-sim-node";
pub const ANNOTATION_EXIT_CODE: &str = "testenv.ferry.dev/exit-code";
pub const ANNOTATION_RUN_SECONDS: &str = "testenv.ferry.dev/run-seconds";
pub const ANNOTATION_NOT_READY: &str = "testenv.ferry.dev/not-ready";
const MANAGER: &str = "ferry-sim-node";

/// Registers the node and marks it Ready.
pub async fn register(client: &Client) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "testenv.ferry.dev/simulated": "true",
            },
        },
    });
    let pp = PatchParams::apply(MANAGER).force();
    nodes.patch(NODE_NAME, &pp, &Patch::Apply(&node)).await?;
    let now = now();
    let status = json!({
        "status": {
            "capacity": { "cpu": "64", "memory": "256Gi", "pods": "500", "ephemeral-storage": "1Ti" },
            "allocatable": { "cpu": "64", "memory": "256Gi", "pods": "500", "ephemeral-storage": "1Ti" },
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "ferry simulated node (runs no containers)",
                  "lastHeartbeatTime": now, "lastTransitionTime": now },
                { "type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                  "lastHeartbeatTime": now, "lastTransitionTime": now },
                { "type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                  "lastHeartbeatTime": now, "lastTransitionTime": now },
                { "type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                  "lastHeartbeatTime": now, "lastTransitionTime": now },
            ],
            // TEST-NET-1: documentation addresses, never routed; nothing connects to them.
            "addresses": [
                { "type": "InternalIP", "address": "192.0.2.10" },
                { "type": "Hostname", "address": NODE_NAME },
            ],
            "nodeInfo": {
                "machineID": "ferry-sim", "systemUUID": "ferry-sim", "bootID": "ferry-sim",
                "kernelVersion": "simulated", "osImage": "ferry simulated node",
                "containerRuntimeVersion": "sim://0", "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    nodes
        .patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    // Admission taints every new node not-ready; the node lifecycle
    // controller, which would lift it, is off (see cluster.rs).
    let untaint = json!({ "spec": { "taints": null } });
    nodes
        .patch(NODE_NAME, &PatchParams::default(), &Patch::Merge(&untaint))
        .await?;
    Ok(())
}

/// Watches the node's pods forever, moving each through its life.
pub async fn run(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let ips = Arc::new(AtomicU32::new(0));
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={NODE_NAME}"));
    let mut stream = watcher(pods, cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(pod) => {
                let client = client.clone();
                let ips = ips.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(client, pod, ips).await {
                        tracing::debug!(error = %e, "simulated node: pod update failed (will see it again)");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "simulated node: pod watch error"),
        }
    }
}

async fn handle(client: Client, pod: Pod, ips: Arc<AtomicU32>) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        // A kubelet confirms a graceful deletion once containers stop; ours stop at once.
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        return match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase != "Pending" && !phase.is_empty() {
        return Ok(());
    }
    let annotations = pod.annotations();
    let runs_to_completion = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_some_and(|p| p != "Always");
    let exit_code: i32 = annotations
        .get(ANNOTATION_EXIT_CODE)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let run_seconds: u64 = annotations
        .get(ANNOTATION_RUN_SECONDS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ready = annotations.get(ANNOTATION_NOT_READY).map(String::as_str) != Some("true");

    let n = ips.fetch_add(1, Ordering::Relaxed);
    let pod_ip = format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2);
    let started = now();
    let pp = PatchParams::default();

    if runs_to_completion && run_seconds == 0 {
        let status = status_json(&pod, &pod_ip, &started, Lifecycle::Ended(exit_code));
        api.patch_status(&name, &pp, &Patch::Merge(&status)).await?;
        return Ok(());
    }
    let status = status_json(&pod, &pod_ip, &started, Lifecycle::Running { ready });
    api.patch_status(&name, &pp, &Patch::Merge(&status)).await?;
    if runs_to_completion {
        tokio::time::sleep(Duration::from_secs(run_seconds)).await;
        let status = status_json(&pod, &pod_ip, &started, Lifecycle::Ended(exit_code));
        api.patch_status(&name, &pp, &Patch::Merge(&status)).await?;
    }
    Ok(())
}

enum Lifecycle {
    Running { ready: bool },
    Ended(i32),
}

fn status_json(pod: &Pod, pod_ip: &str, started: &Value, life: Lifecycle) -> Value {
    let now = now();
    let (phase, ready, state) = match life {
        Lifecycle::Running { ready } => (
            "Running",
            ready,
            json!({ "running": { "startedAt": started } }),
        ),
        Lifecycle::Ended(code) => (
            if code == 0 { "Succeeded" } else { "Failed" },
            false,
            json!({ "terminated": {
                "exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": started, "finishedAt": now,
            }}),
        ),
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("sim://{uid}/{}", c.name),
                "ready": ready,
                "started": matches!(phase, "Running"),
                "restartCount": 0,
                "state": state,
            })
        })
        .collect();
    let init: Vec<Value> = spec
        .init_containers
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("sim://{uid}/{}", c.name),
                "ready": true, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "reason": "Completed",
                                           "startedAt": started, "finishedAt": started } },
            })
        })
        .collect();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        let mut c = json!({ "type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now });
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        c
    };
    let not_ready_reason = if phase == "Running" {
        "ContainersNotReady"
    } else {
        "PodCompleted"
    };
    json!({
        "status": {
            "phase": phase,
            "hostIP": "192.0.2.10",
            "podIP": pod_ip,
            "podIPs": [{ "ip": pod_ip }],
            "startTime": started,
            "conditions": [
                cond("Initialized", true, None),
                cond("Ready", ready, (!ready).then_some(not_ready_reason)),
                cond("ContainersReady", ready, (!ready).then_some(not_ready_reason)),
                cond("PodScheduled", true, None),
            ],
            "containerStatuses": containers,
            "initContainerStatuses": init,
        }
    })
}

fn now() -> Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null)
}
