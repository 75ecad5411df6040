//! Certificates and keys for one environment, made with the `openssl` CLI.

use crate::error::Result;
use crate::process::run;
use std::path::{Path, PathBuf};

/// A CA plus a serving certificate for 127.0.0.1/localhost, and the service
/// account signing key pair.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl Pki {
    pub fn generate(openssl: &Path, dir: &Path) -> Result<Pki> {
        let p = |n: &str| dir.join(n);
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let pki = Pki {
            ca_cert: p("ca.crt"),
            ca_key: p("ca.key"),
            serving_cert: p("serving.crt"),
            serving_key: p("serving.key"),
            sa_key: p("sa.key"),
            sa_pub: p("sa.pub"),
        };
        let ext = p("serving.ext");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n",
        )
        .map_err(|source| crate::Error::Io {
            context: format!("writing {}", ext.display()),
            source,
        })?;
        let csr = p("serving.csr");
        #[rustfmt::skip]
        let steps: Vec<Vec<String>> = vec![
            vec!["req".into(), "-x509".into(), "-newkey".into(), "ec".into(), "-pkeyopt".into(), "ec_paramgen_curve:prime256v1".into(),
                 "-nodes".into(), "-keyout".into(), s(&pki.ca_key), "-out".into(), s(&pki.ca_cert), "-days".into(), "3650".into(),
                 "-subj".into(), "/CN=ferry-testenv-ca".into()],
            vec!["req".into(), "-newkey".into(), "ec".into(), "-pkeyopt".into(), "ec_paramgen_curve:prime256v1".into(), "-nodes".into(),
                 "-keyout".into(), s(&pki.serving_key), "-out".into(), s(&csr), "-subj".into(), "/CN=127.0.0.1".into()],
            vec!["x509".into(), "-req".into(), "-in".into(), s(&csr), "-CA".into(), s(&pki.ca_cert), "-CAkey".into(), s(&pki.ca_key),
                 "-CAcreateserial".into(), "-out".into(), s(&pki.serving_cert), "-days".into(), "3650".into(), "-extfile".into(), s(&ext)],
            // RSA: the service account token signer of every Kubernetes version accepts it.
            vec!["genrsa".into(), "-out".into(), s(&pki.sa_key), "2048".into()],
            vec!["rsa".into(), "-in".into(), s(&pki.sa_key), "-pubout".into(), "-out".into(), s(&pki.sa_pub)],
        ];
        for args in steps {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(openssl, &args, &[], None)?;
        }
        Ok(pki)
    }
}
