//! An OCI registry (Debian's docker-registry) with htpasswd auth over plain
//! http on loopback, and tag pushing through skopeo.

use crate::cluster::write_private;
use crate::error::{Error, IoContext, Result};
use crate::prereq::Tools;
use crate::process::{Proc, free_port, port_open, run, run_with_stdin, wait_until};
use crate::secret::Secret;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const REGISTRY_USER: &str = "ferry";

#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:<port>`, the registry part of image references.
    pub host: String,
    /// A Docker config file (`{"auths": ...}`) with this registry's credentials.
    pub auth_file: PathBuf,
    password: Secret,
    skopeo: PathBuf,
    dir: PathBuf,
    proc: std::sync::Mutex<Proc>,
}

impl Registry {
    pub async fn start(tools: &Tools, dir: &Path) -> Result<Registry> {
        let dir = dir.join("registry");
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).ctx(|| format!("creating {}", storage.display()))?;
        let password = Secret::random();
        let htpasswd = dir.join("htpasswd");
        // bcrypt (-B) is the only scheme the registry accepts.
        run_with_stdin(
            &tools.htpasswd,
            &["-i", "-c", "-B", &htpasswd.to_string_lossy(), REGISTRY_USER],
            &[],
            None,
            Some(password.expose()),
        )?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        write_private(
            &config,
            &format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n  secret: {}\n\
                 auth:\n  htpasswd:\n    realm: ferry-registry\n    path: {}\n",
                storage.display(),
                Secret::random().expose(),
                htpasswd.display()
            ),
        )?;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{REGISTRY_USER}:{}", password.expose()));
        let auth_file = dir.join("auth.json");
        write_private(
            &auth_file,
            &format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}\n"),
        )?;
        let mut proc = Proc::spawn(
            "docker-registry",
            &tools.registry,
            &["serve".into(), config.display().to_string()],
            &[],
            dir.join("registry.log"),
        )?;
        wait_until(
            &mut proc,
            "the registry to accept connections",
            Duration::from_secs(20),
            || port_open(port),
        )
        .await?;
        Ok(Registry {
            host,
            auth_file,
            password,
            skopeo: tools.skopeo.clone(),
            dir,
            proc: std::sync::Mutex::new(proc),
        })
    }

    pub fn user(&self) -> &str {
        REGISTRY_USER
    }

    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// The body of a `kubernetes.io/dockerconfigjson` Secret for this registry.
    pub fn docker_config_json(&self) -> Result<String> {
        std::fs::read_to_string(&self.auth_file)
            .ctx(|| format!("reading {}", self.auth_file.display()))
    }

    /// Pushes a tiny single-layer image as `<host>/<repo>:<tag>` and returns
    /// its manifest digest. Each tag gets a distinct image.
    pub fn push_image(&self, repo: &str, tag: &str) -> Result<String> {
        let layout = self
            .dir
            .join(format!("layout-{}", Secret::random().expose()));
        let result = (|| {
            write_oci_layout(&layout, tag)?;
            let digest_file = layout.join("pushed.digest");
            let src = format!("oci:{}:{tag}", layout.display());
            let dst = format!("docker://{}/{repo}:{tag}", self.host);
            run(
                &self.skopeo,
                &[
                    "--insecure-policy",
                    "copy",
                    "-q",
                    "--dest-tls-verify=false",
                    "--dest-authfile",
                    &self.auth_file.to_string_lossy(),
                    "--digestfile",
                    &digest_file.to_string_lossy(),
                    &src,
                    &dst,
                ],
                &[],
                None,
            )?;
            std::fs::read_to_string(&digest_file).ctx(|| "reading pushed digest".into())
        })();
        let _ = std::fs::remove_dir_all(&layout);
        result.map(|d| d.trim().to_string())
    }

    /// Packages the chart in `chart_dir` with `helm package` and pushes it to
    /// `oci://<host>/<path>` with this registry's credentials.
    pub fn push_chart(&self, helm: &Path, chart_dir: &Path, path: &str) -> Result<()> {
        let out = self
            .dir
            .join(format!("chart-{}", Secret::random().expose()));
        std::fs::create_dir_all(&out).ctx(|| format!("creating {}", out.display()))?;
        let result = (|| {
            run(
                helm,
                &[
                    "package",
                    &chart_dir.to_string_lossy(),
                    "--destination",
                    &out.to_string_lossy(),
                ],
                &[],
                None,
            )?;
            let tgz = std::fs::read_dir(&out)
                .ctx(|| format!("reading {}", out.display()))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "tgz"))
                .ok_or_else(|| Error::Command {
                    command: "helm package".into(),
                    status: "no .tgz written".into(),
                    stderr: String::new(),
                })?;
            run(
                helm,
                &[
                    "push",
                    &tgz.to_string_lossy(),
                    &format!("oci://{}/{path}", self.host),
                    "--plain-http",
                    "--registry-config",
                    &self.auth_file.to_string_lossy(),
                ],
                &[],
                None,
            )?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&out);
        result
    }

    /// Lists a repository's tags through the registry API, with credentials.
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.list_tags_inner(repo, true)
    }

    /// Lists tags without credentials: the registry must refuse.
    pub fn list_tags_anonymously(&self, repo: &str) -> Result<Vec<String>> {
        self.list_tags_inner(repo, false)
    }

    fn list_tags_inner(&self, repo: &str, with_auth: bool) -> Result<Vec<String>> {
        let auth = self.auth_file.to_string_lossy();
        let image = format!("docker://{}/{repo}", self.host);
        let mut args = vec!["--insecure-policy", "list-tags", "--tls-verify=false"];
        if with_auth {
            args.extend(["--authfile", &auth]);
        } else {
            args.push("--no-creds");
        }
        args.push(&image);
        let out = run(&self.skopeo, &args, &[], None)?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::Startup(format!("skopeo list-tags output: {e}")))?;
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        Ok(tags)
    }

    pub fn pids(&self) -> Vec<u32> {
        vec![self.proc_mut().pid()]
    }

    fn proc_mut(&self) -> std::sync::MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the registry down: its clients get "connection refused" until `start_again`.
    pub fn stop(&self) {
        self.proc_mut().stop(Duration::from_secs(3));
    }

    /// Brings the registry back with the same storage, once it accepts connections.
    pub async fn start_again(&self) -> Result<()> {
        self.proc_mut().start_again()?;
        let port: u16 = self
            .host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !port_open(port).await {
            if tokio::time::Instant::now() > deadline {
                return Err(crate::Error::Startup(
                    "the registry did not come back in 20 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an OCI image layout holding one image tagged `tag`.
fn write_oci_layout(dir: &Path, tag: &str) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).ctx(|| format!("creating {}", blobs.display()))?;
    let put = |bytes: &[u8]| -> Result<(String, usize)> {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d), bytes).ctx(|| "writing blob".into())?;
        Ok((format!("sha256:{d}"), bytes.len()))
    };
    // An empty tar archive: two zero blocks.
    let layer = vec![0u8; 1024];
    let (layer_digest, layer_size) = put(&layer)?;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { "testenv.ferry.dev/tag": tag } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())
        .ctx(|| "writing index.json".into())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .ctx(|| "writing oci-layout".into())?;
    Ok(())
}
