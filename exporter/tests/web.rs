//! The exporter binary over TLS with basic authentication and client certificates,
//! configured with an exporter-toolkit web config file.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{Running, start_exporter};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn start(web_config: &Path) -> (Running, u16) {
    let (running, url) =
        start_exporter(&["--web.config.file".into(), web_config.display().to_string()]);
    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    (running, port)
}

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(vec!["127.0.0.1".into()]),
        client: leaf(vec!["prometheus".into()]),
    }
}

fn get(
    port: u16,
    ca_pem: &str,
    client: Option<&(String, String)>,
    auth: Option<(&str, &str)>,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".to_string();
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    match tls.read_to_end(&mut resp) {
        Ok(_) => {}
        // The server closes without close_notify after the response; keep what was read.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    if resp.is_empty() {
        return Err("connection closed without a response".into());
    }
    Ok(String::from_utf8_lossy(&resp).into_owned())
}

#[test]
fn tls_with_basic_auth_refuses_wrong_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    std::fs::write(dir.path().join("ca.crt"), &p.ca_pem).unwrap();
    std::fs::write(dir.path().join("server.crt"), &p.server.0).unwrap();
    std::fs::write(dir.path().join("server.key"), &p.server.1).unwrap();
    let hash = bcrypt::hash("right-password", 4).unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(
        &cfg,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"),
    )
    .unwrap();
    let (_exporter, port) = start(&cfg);
    let none = get(port, &p.ca_pem, None, None).unwrap();
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(none.to_lowercase().contains("www-authenticate: basic"));
    let wrong = get(port, &p.ca_pem, None, Some(("prometheus", "wrong"))).unwrap();
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let right = get(
        port,
        &p.ca_pem,
        None,
        Some(("prometheus", "right-password")),
    )
    .unwrap();
    assert!(
        right.starts_with("HTTP/1.1 200") && right.contains("aifb_node_cpu_seconds_total"),
        "{right}"
    );
    // Plain HTTP to the TLS port gets no metrics.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("aifb_node"));
}

#[test]
fn client_certificates_are_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    std::fs::write(dir.path().join("ca.crt"), &p.ca_pem).unwrap();
    std::fs::write(dir.path().join("server.crt"), &p.server.0).unwrap();
    std::fs::write(dir.path().join("server.key"), &p.server.1).unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();
    let (_exporter, port) = start(&cfg);
    assert!(
        get(port, &p.ca_pem, None, None).is_err(),
        "a client without a certificate must be refused"
    );
    let with = get(port, &p.ca_pem, Some(&p.client), None).unwrap();
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
}

#[test]
fn a_bad_web_config_is_a_one_line_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(&cfg, "basic_auth_users:\n  prometheus: hunter2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_exporter"))
        .args(["--web.listen-address", "127.0.0.1:0", "--web.config.file"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("exporter: error:"))
        .unwrap();
    assert!(
        line.contains("web.yml") && line.contains("basic_auth_users.prometheus: not a bcrypt hash"),
        "{line}"
    );
}
