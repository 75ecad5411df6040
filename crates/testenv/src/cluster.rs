//! etcd plus, per cluster, kube-apiserver, kube-controller-manager and kube-scheduler.

use crate::error::{Error, IoContext, Result};
use crate::pki::Pki;
use crate::prereq::Tools;
use crate::process::{Proc, free_port, port_open, wait_until};
use crate::secret::Secret;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The admin user (group `system:masters`).
pub const ADMIN_USER: &str = "ferry-admin";
/// A user with no rights beyond what RBAC grants `system:authenticated`.
pub const RESTRICTED_USER: &str = "ferry-restricted";

/// One etcd, shared by both clusters under different key prefixes.
#[derive(Debug)]
pub struct Etcd {
    pub url: String,
    proc: Proc,
}

impl Etcd {
    pub async fn start(tools: &Tools, dir: &Path) -> Result<Etcd> {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let data = dir.join("etcd");
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=ferry".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=ferry={peer}"),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
            "--log-level=warn".into(),
        ];
        let mut proc = Proc::spawn("etcd", &tools.etcd, &args, &[], dir.join("etcd.log"))?;
        wait_until(
            &mut proc,
            "etcd to accept connections",
            Duration::from_secs(30),
            || port_open(client_port),
        )
        .await?;
        Ok(Etcd { url, proc })
    }

    pub fn pids(&self) -> Vec<u32> {
        vec![self.proc.pid()]
    }

    /// Freezes etcd (SIGSTOP): the API servers' requests hang until `resume`.
    pub fn pause(&self) {
        self.proc.pause();
    }

    pub fn resume(&self) {
        self.proc.cont();
    }
}

/// One Kubernetes cluster: its API server and controllers.
#[derive(Debug)]
pub struct Cluster {
    /// A short name, `cluster1` or `cluster2`.
    pub name: String,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// PEM of the CA that signed the API server's certificate.
    pub ca_pem: String,
    /// Kubeconfig of the admin user.
    pub kubeconfig: PathBuf,
    /// Kubeconfig of the restricted user.
    pub restricted_kubeconfig: PathBuf,
    /// The API server's audit log, when `Options::audit_log` asked for one.
    pub audit_log: Option<PathBuf>,
    admin_token: Secret,
    restricted_token: Secret,
    // Stopped in reverse order of start; the API server first, which a fault test may
    // stop and start again.
    procs: std::sync::Mutex<Vec<Proc>>,
}

impl Cluster {
    pub async fn start(
        name: &str,
        tools: &Tools,
        pki: &Pki,
        etcd: &Etcd,
        dir: &Path,
        audit: bool,
    ) -> Result<Cluster> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let ca_pem = std::fs::read_to_string(&pki.ca_cert)
            .ctx(|| format!("reading {}", pki.ca_cert.display()))?;
        let admin_token = Secret::random();
        let restricted_token = Secret::random();
        let tokens = dir.join("tokens.csv");
        write_private(
            &tokens,
            &format!(
                "{},{ADMIN_USER},1,\"system:masters\"\n{},{RESTRICTED_USER},2\n",
                admin_token.expose(),
                restricted_token.expose()
            ),
        )?;
        let kubeconfig = dir.join("kubeconfig");
        let restricted_kubeconfig = dir.join("restricted.kubeconfig");
        write_private(
            &kubeconfig,
            &kubeconfig_yaml(name, &server, &ca_pem, ADMIN_USER, &admin_token),
        )?;
        write_private(
            &restricted_kubeconfig,
            &kubeconfig_yaml(name, &server, &ca_pem, RESTRICTED_USER, &restricted_token),
        )?;

        let p = |x: &Path| x.display().to_string();
        let mut apiserver_args = vec![
            format!("--etcd-servers={}", etcd.url),
            format!("--etcd-prefix=/{name}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--tls-cert-file={}", p(&pki.serving_cert)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
            format!("--client-ca-file={}", p(&pki.ca_cert)),
            format!("--token-auth-file={}", p(&tokens)),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            // The `kubernetes` Service would point at 127.0.0.1, which
            // Endpoints reject; nothing here needs in-cluster access to it.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        let audit_log = audit.then(|| dir.join("audit.log"));
        if let Some(log) = &audit_log {
            // Every request, once, when its response is complete: verb, resource, user agent.
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(
                &policy,
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n",
            )
            .ctx(|| format!("writing {}", policy.display()))?;
            apiserver_args.push(format!("--audit-policy-file={}", p(&policy)));
            apiserver_args.push(format!("--audit-log-path={}", p(log)));
            apiserver_args.push("--audit-log-maxsize=0".into());
        }
        let mut procs = Vec::new();
        let mut apiserver = Proc::spawn(
            &format!("{name}/kube-apiserver"),
            &tools.kube_apiserver,
            &apiserver_args,
            &[],
            dir.join("kube-apiserver.log"),
        )?;
        let client = client_from(&kubeconfig).await?;
        wait_until(
            &mut apiserver,
            &format!("{name} API server /readyz"),
            Duration::from_secs(90),
            || {
                let client = client.clone();
                async move { readyz(&client).await }
            },
        )
        .await?;
        procs.push(apiserver);

        let controller_args = vec![
            format!("--kubeconfig={}", p(&kubeconfig)),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
            format!("--service-account-private-key-file={}", p(&pki.sa_key)),
            format!("--root-ca-file={}", p(&pki.ca_cert)),
            // The simulated node sends no heartbeats; node lifecycle would
            // otherwise taint it and evict every pod after 40 seconds.
            "--controllers=*,-nodelifecycle".into(),
            "--v=0".into(),
        ];
        procs.push(Proc::spawn(
            &format!("{name}/kube-controller-manager"),
            &tools.kube_controller_manager,
            &controller_args,
            &[],
            dir.join("kube-controller-manager.log"),
        )?);
        let scheduler_args = vec![
            format!("--kubeconfig={}", p(&kubeconfig)),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
            "--v=0".into(),
        ];
        procs.push(Proc::spawn(
            &format!("{name}/kube-scheduler"),
            &tools.kube_scheduler,
            &scheduler_args,
            &[],
            dir.join("kube-scheduler.log"),
        )?);

        let cluster = Cluster {
            name: name.to_string(),
            server,
            ca_pem,
            kubeconfig,
            restricted_kubeconfig,
            audit_log,
            admin_token,
            restricted_token,
            procs: std::sync::Mutex::new(procs),
        };
        // The service account controller creating `default` proves the
        // controller manager is up and can write.
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            for p in cluster.procs_mut().iter_mut() {
                p.check_running()?;
            }
            if sa.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let log = cluster.procs_mut()[1].log.clone();
                return Err(Error::Timeout {
                    what: format!("{name} controller manager to create the default ServiceAccount"),
                    secs: 60,
                    tail: crate::process::log_tail(&log),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(cluster)
    }

    /// A new admin client. Each call builds its own, so that callers on
    /// different runtimes (one per `#[tokio::test]`) never share one.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// A client for the restricted user.
    pub async fn restricted_client(&self) -> Result<Client> {
        client_from(&self.restricted_kubeconfig).await
    }

    /// The admin bearer token, for building cluster Secrets in tests.
    pub fn admin_token(&self) -> &Secret {
        &self.admin_token
    }

    /// The restricted user's bearer token.
    pub fn restricted_token(&self) -> &Secret {
        &self.restricted_token
    }

    /// Creates a namespace with a unique name starting with `prefix` and
    /// waits until pods can be created in it (its `default` ServiceAccount exists).
    pub async fn create_namespace(&self, client: &Client, prefix: &str) -> Result<String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let ns: Api<Namespace> = Api::all(client.clone());
        let obj: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
        }))
        .map_err(|e| Error::Startup(e.to_string()))?;
        ns.create(&PostParams::default(), &obj).await?;
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        for _ in 0..300 {
            if sa.get_opt("default").await?.is_some() {
                return Ok(name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Startup(format!(
            "namespace {name} got no default ServiceAccount in 30s"
        )))
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs_mut().iter().map(Proc::pid).collect()
    }

    fn procs_mut(&self) -> std::sync::MutexGuard<'_, Vec<Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the API server (SIGTERM); clients get "connection refused" until
    /// `start_apiserver`.
    pub fn stop_apiserver(&self) {
        if let Some(p) = self.procs_mut().first_mut() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Starts the API server again, as it was (same port, certificates and etcd), and
    /// returns once it is ready.
    pub async fn start_apiserver(&self) -> Result<()> {
        if let Some(p) = self.procs_mut().first_mut() {
            p.start_again()?;
        }
        let client = client_from(&self.kubeconfig).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !readyz(&client).await {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Startup(format!(
                    "{} API server not ready 90 s after its restart",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

impl Cluster {
    /// Stops the scheduler, controller manager and API server, in that order.
    pub fn stop(&mut self) {
        let mut procs = self.procs_mut();
        while let Some(mut p) = procs.pop() {
            p.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(client: &Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

/// Builds a client from a kubeconfig file, as any user of the environment would.
pub async fn client_from(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Client::try_from(config)?)
}

fn kubeconfig_yaml(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &Secret,
) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {cluster}\n",
        token = token.expose()
    )
}

/// Writes a file only its owner can read: these hold tokens and keys.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .ctx(|| format!("writing {}", path.display()))
}
