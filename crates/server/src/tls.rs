//! HTTPS as Argo CD's server does it: the certificate of the Secret `argocd-server-tls` or of
//! files when given, else a self-signed one made at start; plain HTTP only when asked for
//! (`--insecure`, behind a proxy that terminates TLS).

use crate::ServerError;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The Secret Argo CD's server reads its certificate from.
pub const SERVER_TLS_SECRET: &str = "argocd-server-tls";

#[derive(Clone, Debug, Default)]
pub enum TlsMode {
    /// Plain HTTP.
    Off,
    /// `argocd-server-tls` when it exists, else a self-signed certificate.
    #[default]
    Auto,
    /// PEM files: a certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Where the served certificate came from, for the start-up line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    Secret,
    Files,
    SelfSigned,
}

fn setup(what: impl std::fmt::Display) -> ServerError {
    ServerError::Setup(what.to_string())
}

fn parse_pem(cert: &[u8], key: &[u8], from: &str) -> Result<ServerCertificate, ServerError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| setup(format!("{from}: certificate: {e}")))?;
    if chain.is_empty() {
        return Err(setup(format!("{from}: no PEM certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| setup(format!("{from}: private key: {e}")))?;
    Ok((chain, key))
}

type ServerCertificate = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn self_signed() -> Result<ServerCertificate, ServerError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "argocd-server".to_string(),
        "ferry-server".to_string(),
    ];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| setup(format!("generating a self-signed certificate: {e}")))?;
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| setup(format!("self-signed key: {e}")))?;
    Ok((vec![made.cert.der().clone()], key))
}

/// The rustls configuration to serve with, or none for plain HTTP.
pub async fn server_config(
    client: &Client,
    ns: &str,
    mode: &TlsMode,
) -> Result<Option<(Arc<rustls::ServerConfig>, CertSource)>, ServerError> {
    let (cert, source) = match mode {
        TlsMode::Off => return Ok(None),
        TlsMode::Files { cert, key } => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| setup(format!("reading {}: {e}", p.display())))
            };
            (
                parse_pem(&read(cert)?, &read(key)?, &cert.display().to_string())?,
                CertSource::Files,
            )
        }
        TlsMode::Auto => {
            let secret = Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(SERVER_TLS_SECRET)
                .await?;
            let data = secret.and_then(|s| s.data).unwrap_or_default();
            match (data.get("tls.crt"), data.get("tls.key")) {
                (Some(c), Some(k)) if !c.0.is_empty() && !k.0.is_empty() => (
                    parse_pem(&c.0, &k.0, &format!("Secret {ns}/{SERVER_TLS_SECRET}"))?,
                    CertSource::Secret,
                ),
                _ => (self_signed()?, CertSource::SelfSigned),
            }
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(cert.0, cert.1)
        .map_err(|e| setup(format!("TLS certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((Arc::new(cfg), source)))
}

/// Serves `app` over TLS on `listener` until dropped. A client that never finishes its
/// handshake is dropped after ten seconds instead of holding a task.
pub async fn serve<S>(listener: tokio::net::TcpListener, cfg: Arc<rustls::ServerConfig>, app: S)
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move { tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await }
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
