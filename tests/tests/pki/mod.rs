//! Throwaway PKI for the mTLS tests, made at test time: a CA, the authority's server certificate
//! (`authority.missiongate.test`, 127.0.0.1) and the gateway's client certificate, written as PEM
//! files with the names `envoy/missiongate-mtls-status.yaml` expects.

use std::path::{Path, PathBuf};

/// The generated material.
#[allow(dead_code)]
pub struct Pki {
    /// Directory holding `authority-ca.crt`, `gateway-client.crt`, `gateway-client.key`.
    pub dir: PathBuf,
    /// CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// Server certificate (DER) and key (PKCS#8 DER).
    pub server_der: Vec<u8>,
    pub server_key_der: Vec<u8>,
}

/// Generate into a fresh directory under the system temp dir.
pub fn generate() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
    let dir = std::env::temp_dir().join(format!("missiongate-mtls-{}", missiongate_tests::rand_id("")));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "missiongate test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["authority.missiongate.test".to_owned()]).unwrap();
    sp.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["gateway.missiongate.test".to_owned()]).unwrap();
    cp.distinguished_name.push(DnType::CommonName, "missiongate gateway");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &ca_cert, &ca_key).unwrap();

    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write("authority-ca.crt", ca_cert.pem());
    write("gateway-client.crt", client.pem());
    write("gateway-client.key", client_key.serialize_pem());
    Pki {
        dir,
        ca_der: ca_cert.der().to_vec(),
        server_der: server.der().to_vec(),
        server_key_der: server_key.serialize_der(),
    }
}

/// The rendered-config replacement that points `envoy/mtls/` at `dir`.
pub fn replacement(dir: &Path) -> (String, String) {
    let from = format!("{}/envoy/mtls", missiongate_tests::repo_root().display());
    (from, dir.display().to_string())
}
