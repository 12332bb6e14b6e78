//! `--web.config.file`: TLS and basic authentication in the format of the Prometheus
//! exporter-toolkit, so one file serves node_exporter and aifb alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: ca.crt
//! basic_auth_users:
//!   prometheus: $2y$10$...                            # bcrypt hash
//! ```
//!
//! Keys of the toolkit that aifb does not implement are rejected by name rather than
//! silently ignored.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The file's content.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// TLS settings.
    #[serde(default)]
    pub tls_server_config: Option<TlsConfig>,
    /// User name → bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

/// TLS settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server key (PEM).
    pub key_file: PathBuf,
    /// `NoClientCert` (default), `RequireAndVerifyClientCert`, `VerifyClientCertIfGiven`.
    #[serde(default)]
    pub client_auth_type: Option<String>,
    /// CA bundle for client certificates (PEM).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Loads and checks a web config file; relative paths are relative to the file.
pub fn load(path: &Path) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<BasicAuth>), String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let cfg: WebConfig = yaml_serde::from_str(&text).map_err(|e| format!("{shown}: {e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = cfg
        .tls_server_config
        .map(|t| tls(&t, base).map_err(|e| format!("{shown}: {e}")))
        .transpose()?;
    for (user, hash) in &cfg.basic_auth_users {
        if !hash.starts_with("$2") {
            return Err(format!(
                "{shown}: basic_auth_users.{user}: not a bcrypt hash"
            ));
        }
    }
    let auth = (!cfg.basic_auth_users.is_empty()).then(|| BasicAuth {
        users: cfg.basic_auth_users,
        verified: Mutex::default(),
    });
    Ok((tls.map(Arc::new), auth))
}

fn tls(t: &TlsConfig, base: &Path) -> Result<rustls::ServerConfig, String> {
    let at = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let (cert_path, key_path) = (at(&t.cert_file), at(&t.key_file));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mode = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match mode {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca = t.client_ca_file.as_ref().ok_or_else(|| {
                format!("tls_server_config.client_ca_file is required for {mode}")
            })?;
            let ca = at(ca);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca)
                .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?
            {
                roots
                    .add(cert.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if mode == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other:?} is not supported (NoClientCert, RequireAndVerifyClientCert, VerifyClientCertIfGiven)"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Basic authentication against bcrypt hashes. A successful check is remembered, so only
/// the first scrape with given credentials pays bcrypt's (deliberate) cost.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<(String, String)>>,
}

impl BasicAuth {
    /// True when the `Authorization` header value carries valid credentials.
    pub fn check(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        let key = (user.to_string(), pass.to_string());
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(pass, hash).unwrap_or(false));
        if ok && let Ok(mut v) = self.verified.lock() {
            v.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn basic_auth_checks_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth {
            users: BTreeMap::from([("prom".into(), hash)]),
            verified: Mutex::default(),
        };
        assert!(auth.check(Some(&header("prom", "s3cret"))));
        assert!(auth.check(Some(&header("prom", "s3cret"))), "cached");
        assert!(!auth.check(Some(&header("prom", "wrong"))));
        assert!(!auth.check(Some(&header("other", "s3cret"))));
        assert!(!auth.check(Some("Basic !!!")));
        assert!(!auth.check(None));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, "http_server_config:\n  http2: false\n").unwrap();
        assert!(
            load(&p)
                .unwrap_err()
                .contains("unknown field `http_server_config`")
        );
        std::fs::write(&p, "basic_auth_users:\n  u: plaintext\n").unwrap();
        assert!(load(&p).unwrap_err().contains("not a bcrypt hash"));
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
        )
        .unwrap();
        assert!(load(&p).unwrap_err().contains("cert_file"));
    }
}
