//! TLS on the client listener: certificates generated at test time with `rcgen`
//! (a test CA and leaf certificates), a `rustls` client trusting that CA, SNI selection, hot
//! reload of the certificate files, the `ssl=yes` route condition, `X-Forwarded-Proto`, and
//! bad certificate flags (exit 64).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use testkit::{Gripmesh, Origin, OriginResponse, TempDir, http_request, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::{BIN, WAIT};

/// A test certificate authority (also used by the NATS-over-TLS test in cluster_state.rs).
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, as PEM, plus the certificate's DER.
pub(crate) struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gripmesh e2e test CA");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA certificate as PEM (what a client is given to trust).
    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names`, signed by this CA.
    pub(crate) fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns their paths.
    pub(crate) fn write(&self, dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
        // Key first: a reload racing the two writes sees a mismatch at worst, never a stale
        // certificate with a new key that happens to load.
        let key = dir.write(&format!("{name}.key"), &self.key_pem);
        let cert = dir.write(&format!("{name}.crt"), &self.cert_pem);
        (cert, key)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts only `ca`.
fn trusting(ca: &Ca) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).expect("CA into the root store");
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts any certificate (signatures are still checked), to see what the server presents
/// for a name it has no certificate for.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn accept_any() -> Arc<ClientConfig> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS handshake with `sni`.
async fn handshake(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    sni: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| format!("{sni}: {e}"))?;
    let connect = TlsConnector::from(config.clone()).connect(name, tcp);
    match tokio::time::timeout(WAIT, connect).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TLS handshake with {sni}: {e}")),
        Err(_) => Err(format!("TLS handshake with {sni}: timeout")),
    }
}

/// The certificate the server presented (DER).
fn peer_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a peer certificate")
        .to_vec()
}

/// The DNS names of a certificate.
fn dns_names(der: &[u8]) -> Vec<String> {
    let der = CertificateDer::from(der.to_vec());
    webpki::EndEntityCert::try_from(&der)
        .expect("parsable certificate")
        .valid_dns_names()
        .map(str::to_owned)
        .collect()
}

/// A response read from a TLS stream.
#[derive(Debug)]
struct TlsResponse {
    status: u16,
    head: String,
    body: String,
}

/// `GET path` over a new TLS connection (`Connection: close`) with extra header lines.
async fn tls_get(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    sni: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
) -> TlsResponse {
    let mut tls = handshake(addr, config, sni)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n");
    for (k, v) in extra_headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            if let Some(length) = length
                && buf.len() >= end + 4 + length
            {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "GET {path} over TLS: incomplete answer {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path} over TLS: no response head in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    TlsResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const NAME_A: &str = "alpha.gripmesh.test";
const NAME_B: &str = "beta.gripmesh.test";

/// A handshake with a generated certificate serves HTTP; SNI picks the certificate whose DNS
/// names match (the first for an unknown name).
#[tokio::test]
async fn tls_handshake_and_sni() {
    let ca = Ca::new();
    let alpha = ca.issue(&[NAME_A]);
    let beta = ca.issue(&[NAME_B]);
    let dir = TempDir::new();
    let (alpha_crt, alpha_key) = alpha.write(&dir, "alpha");
    let (beta_crt, beta_key) = beta.write(&dir, "beta");
    let routes = dir.write("routes", "* test\n");
    let keys = format!("{},{}", path_str(&alpha_key), path_str(&beta_key));
    let mut gm = Gripmesh::standalone(
        BIN,
        &[
            "--routes",
            path_str(&routes),
            // One repeated flag and one comma-separated list: both forms are accepted.
            "--tls-cert",
            path_str(&alpha_crt),
            "--tls-cert",
            path_str(&beta_crt),
            "--tls-key",
            &keys,
            "--routes-poll-interval",
            "1",
        ],
    )
    .await;
    let edge = gm.edge_addr();
    let trusted = trusting(&ca);

    // A verified handshake and an HTTP exchange over it.
    let resp = tls_get(edge, &trusted, NAME_A, "/", &[]).await;
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "Hello from the gripmesh test origin.\n"),
        "{}",
        resp.head
    );

    // SNI selection.
    let a = handshake(edge, &trusted, NAME_A)
        .await
        .expect("handshake alpha");
    assert_eq!(peer_cert(&a), alpha.der, "certificate for {NAME_A}");
    assert_eq!(dns_names(&peer_cert(&a)), vec![NAME_A.to_owned()]);
    let b = handshake(edge, &trusted, NAME_B)
        .await
        .expect("handshake beta");
    assert_eq!(peer_cert(&b), beta.der, "certificate for {NAME_B}");
    assert_eq!(dns_names(&peer_cert(&b)), vec![NAME_B.to_owned()]);
    let resp = tls_get(edge, &trusted, NAME_B, "/", &[]).await;
    assert_eq!(resp.status, 200);
    // An unknown name gets the first certificate, which a verifying client rejects.
    let unknown = handshake(edge, &accept_any(), "gamma.gripmesh.test")
        .await
        .expect("handshake with an unknown name");
    assert_eq!(
        peer_cert(&unknown),
        alpha.der,
        "unknown SNI ⇒ the first certificate"
    );
    let refused = handshake(edge, &trusted, "gamma.gripmesh.test").await;
    assert!(
        refused.is_err(),
        "a verifying client accepted the wrong name"
    );
    drop((a, b, unknown));

    gm.assert_running();
}

/// Two certificates (alpha first, beta) in a temporary directory.
struct TwoCerts {
    ca: Ca,
    alpha: Leaf,
    beta: Leaf,
    dir: TempDir,
    alpha_files: (PathBuf, PathBuf),
    beta_files: (PathBuf, PathBuf),
}

impl TwoCerts {
    fn new() -> TwoCerts {
        let ca = Ca::new();
        let alpha = ca.issue(&[NAME_A]);
        let beta = ca.issue(&[NAME_B]);
        let dir = TempDir::new();
        let alpha_files = alpha.write(&dir, "alpha");
        let beta_files = beta.write(&dir, "beta");
        TwoCerts {
            ca,
            alpha,
            beta,
            dir,
            alpha_files,
            beta_files,
        }
    }

    /// `--tls-cert alpha,beta --tls-key alpha,beta --routes-poll-interval 1`.
    fn flags(&self) -> Vec<String> {
        let pair = |a: &PathBuf, b: &PathBuf| format!("{},{}", path_str(a), path_str(b));
        vec![
            "--tls-cert".into(),
            pair(&self.alpha_files.0, &self.beta_files.0),
            "--tls-key".into(),
            pair(&self.alpha_files.1, &self.beta_files.1),
            "--routes-poll-interval".into(),
            "1".into(),
        ]
    }

    /// Overwrites alpha's files with a new certificate and key for the same name, then waits
    /// (8 s at most) for new handshakes to present it; beta stays as it was.
    async fn replace_alpha_and_wait(&self, edge: SocketAddr, context: &str) {
        let trusted = trusting(&self.ca);
        let before = handshake(edge, &trusted, NAME_A)
            .await
            .expect("handshake alpha");
        assert_eq!(
            peer_cert(&before),
            self.alpha.der,
            "{context}: alpha before the reload"
        );
        let alpha2 = self.ca.issue(&[NAME_A]);
        assert_ne!(alpha2.der, self.alpha.der);
        std::fs::write(&self.alpha_files.1, &alpha2.key_pem).expect("overwrite key");
        std::fs::write(&self.alpha_files.0, &alpha2.cert_pem).expect("overwrite cert");
        let written = Instant::now();
        let deadline = written + Duration::from_secs(8);
        loop {
            if let Ok(s) = handshake(edge, &trusted, NAME_A).await
                && peer_cert(&s) == alpha2.der
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: the new certificate is not served 8 s after its files changed \
                 (--routes-poll-interval 1)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "MEASURE: {context}: TLS certificate reloaded after {:?}",
            written.elapsed()
        );
        let b = handshake(edge, &trusted, NAME_B)
            .await
            .expect("handshake beta after reload");
        assert_eq!(peer_cert(&b), self.beta.der, "{context}: beta is unchanged");
        let resp = tls_get(edge, &trusted, NAME_A, "/", &[]).await;
        assert_eq!(
            resp.status, 200,
            "{context}: served with the reloaded certificate"
        );
    }
}

/// `gripmesh standalone`: overwriting a certificate's files makes new handshakes present the
/// new certificate within a few seconds, without a restart.
#[tokio::test]
async fn tls_certificate_reload_without_restart_standalone() {
    let certs = TwoCerts::new();
    let routes = certs.dir.write("routes", "* test\n");
    let mut args = vec!["--routes".to_owned(), path_str(&routes).to_owned()];
    args.extend(certs.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gm = Gripmesh::standalone(BIN, &args).await;
    certs
        .replace_alpha_and_wait(gm.edge_addr(), "standalone")
        .await;
    gm.assert_running();
}

/// `gripmesh edge`: the same hot reload on the edge tier.
#[tokio::test]
async fn tls_certificate_reload_without_restart_edge_tier() {
    let nats = testkit::NatsServer::start();
    let certs = TwoCerts::new();
    let routes = certs.dir.write("routes", "* test\n");
    let mut args = vec!["--routes".to_owned(), path_str(&routes).to_owned()];
    args.extend(certs.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gm = testkit::cluster::start_edge(BIN, &nats.url(), &args).await;
    certs
        .replace_alpha_and_wait(gm.edge_addr(), "edge tier")
        .await;
    gm.assert_running();
}

/// `ssl=yes` routes only TLS clients; the origin sees `X-Forwarded-Proto: https` for TLS
/// clients, and a client's own `X-Forwarded-Proto` is not passed through for plain clients.
#[tokio::test]
async fn tls_route_condition_and_forwarded_proto() {
    let tls_origin = Origin::start(|_| OriginResponse::text("via-tls-route\n")).await;
    let plain_origin = Origin::start(|_| OriginResponse::text("via-plain-route\n")).await;
    let ca = Ca::new();
    let leaf = ca.issue(&[NAME_A]);
    let dir = TempDir::new();
    let (crt, key) = leaf.write(&dir, "edge");
    let routes = dir.write(
        "routes",
        &format!(
            "*,ssl=yes {}\n* {}\n",
            tls_origin.target(),
            plain_origin.target()
        ),
    );
    let tls_args = [
        "--routes",
        path_str(&routes),
        "--tls-cert",
        path_str(&crt),
        "--tls-key",
        path_str(&key),
    ];
    let plain_args = ["--routes", path_str(&routes)];
    let (with_tls, plain) = tokio::join!(
        Gripmesh::standalone(BIN, &tls_args),
        Gripmesh::standalone(BIN, &plain_args),
    );

    // TLS client, claiming plain http: routed by ssl=yes, and the edge says https.
    let resp = tls_get(
        with_tls.edge_addr(),
        &trusting(&ca),
        NAME_A,
        "/secure",
        &[("X-Forwarded-Proto", "http")],
    )
    .await;
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "via-tls-route\n"),
        "{}",
        resp.head
    );
    let req = &tls_origin.wait_for_requests(1, WAIT).await[0];
    assert_eq!(req.path(), "/secure");
    assert_eq!(
        req.header_all("x-forwarded-proto"),
        vec!["https".to_owned()],
        "X-Forwarded-Proto toward the origin for a TLS client"
    );

    // Plain client, claiming https: not routed by ssl=yes, and the claim is dropped.
    let resp = http_request(
        plain.edge_addr(),
        "GET",
        "/insecure",
        &[("X-Forwarded-Proto", "https")],
        "",
    )
    .await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "via-plain-route\n")
    );
    let req = &plain_origin.wait_for_requests(1, WAIT).await[0];
    assert_eq!(req.path(), "/insecure");
    assert_eq!(
        req.header_all("x-forwarded-proto"),
        Vec::<String>::new(),
        "a plain client's X-Forwarded-Proto reached the origin"
    );
    assert_eq!(
        tls_origin.request_count(),
        1,
        "the ssl=yes route took a plain client"
    );
    assert_eq!(plain_origin.request_count(), 1);
}

/// Bad TLS flags exit 64 with one line naming the problem: a missing file, a key that does
/// not match its certificate, a certificate without a key.
#[tokio::test]
async fn tls_bad_certificate_flags_exit_64() {
    let ca = Ca::new();
    let one = ca.issue(&[NAME_A]);
    let other = ca.issue(&[NAME_B]);
    let dir = TempDir::new();
    let (one_crt, _one_key) = one.write(&dir, "one");
    let (_other_crt, other_key) = other.write(&dir, "other");
    let missing = dir.path().join("missing-edge.crt");
    let cases: [(&str, Vec<&str>, &str); 3] = [
        (
            "missing certificate file",
            vec![
                "--tls-cert",
                path_str(&missing),
                "--tls-key",
                path_str(&other_key),
            ],
            "missing-edge.crt",
        ),
        (
            "key of another certificate",
            vec![
                "--tls-cert",
                path_str(&one_crt),
                "--tls-key",
                path_str(&other_key),
            ],
            "other.key",
        ),
        (
            "certificate without a key",
            vec!["--tls-cert", path_str(&one_crt)],
            "--tls",
        ),
    ];
    for (what, flags, needle) in cases {
        let mut args: Vec<&str> = testkit::STANDALONE_ARGS.to_vec();
        args.extend(flags);
        let (status, _stdout, stderr) = run(BIN, &args).await;
        assert_eq!(
            status.code(),
            Some(64),
            "{what}: exit status; stderr:\n{stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: one line expected:\n{stderr}");
        assert!(
            lines[0].contains(needle),
            "{what}: {needle:?} not named: {}",
            lines[0]
        );
    }
}
