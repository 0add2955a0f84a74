//! A throwaway PKI for TLS tests: a CA, a server certificate for loopback (`127.0.0.1`,
//! `localhost`) and a client certificate, made at run time with rcgen (no key is committed) and
//! written as PEM files into a directory the test owns.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files of one PKI; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA's certificate (what clients and servers trust).
    pub ca_cert: PathBuf,
    /// The server's certificate (SANs `127.0.0.1`, `localhost`) and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate (CN `svcproxy`), signed by the same CA.
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it instead must fail verification.
    pub other_ca_cert: PathBuf,
}

impl TestPki {
    /// Makes the CA and the certificates and writes them under `dir`.
    ///
    /// # Panics
    ///
    /// When a certificate cannot be made or a file cannot be written.
    pub fn create(dir: &Path) -> Self {
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        let ca = new_ca("svcproxy test CA");
        let other_ca = new_ca("a CA nobody uses");
        let (server_cert, server_key) = leaf(
            &ca,
            "etcd",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(&ca, "svcproxy", &[], ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca_cert: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            other_ca_cert: write("other-ca.pem", other_ca.pem()),
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    CertifiedIssuer::self_signed(params, key).expect("CA certificate")
}

/// A certificate for `names` (IP addresses become IP SANs) signed by `ca`: (cert, key) in PEM.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("signed certificate");
    (cert.pem(), key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::TempDir;

    #[test]
    fn writes_pem_files_of_distinct_certificates() {
        let dir = TempDir::new("pki");
        let pki = TestPki::create(dir.path());
        let read = |p: &PathBuf| std::fs::read_to_string(p).expect("read");
        for cert in [
            &pki.ca_cert,
            &pki.server_cert,
            &pki.client_cert,
            &pki.other_ca_cert,
        ] {
            assert!(
                read(cert).starts_with("-----BEGIN CERTIFICATE-----"),
                "{cert:?}"
            );
        }
        for key in [&pki.server_key, &pki.client_key] {
            assert!(
                read(key).starts_with("-----BEGIN PRIVATE KEY-----"),
                "{key:?}"
            );
        }
        assert_ne!(read(&pki.ca_cert), read(&pki.other_ca_cert));
        assert_ne!(read(&pki.server_key), read(&pki.client_key));
    }
}
