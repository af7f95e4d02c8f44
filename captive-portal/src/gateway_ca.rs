//! `captive-portal gateway-ca`: the gateway's own certificate authority, for the destinations whose
//! TLS the gateway terminates to decide on operations (README, "HTTPS through the gateway").
//!
//! `init` writes `ca.pem` (what agents trust: `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//! `NODE_EXTRA_CA_CERTS`) and `ca.key.pem` (mode 0600, never overwritten); `issue --host H` writes
//! `H.pem` and `H.key.pem`, the files an Envoy filter chain for `H` names. Certificates are made by
//! `rcgen` (ECDSA P-256); nothing here writes ASN.1 by hand.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::cli::GatewayCaCommand;

/// Subject of the CA. `issue` rebuilds the issuer from it and the CA key, so it never changes.
const CA_NAME: &str = "missiongate gateway CA";
/// Validity of the CA.
const CA_DAYS: i64 = 3650;

/// Run a `gateway-ca` command.
pub fn run(cmd: GatewayCaCommand) -> Result<(), String> {
    match cmd {
        GatewayCaCommand::Init { dir } => init(&dir),
        GatewayCaCommand::Issue { dir, hosts, days } => {
            for h in &hosts {
                issue(&dir, h, days)?;
            }
            Ok(())
        }
    }
}

fn ca_params() -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // `issue` rebuilds this issuer from the CA key: a leaf takes only its subject and key identifier,
    // both the same as those of `ca.pem`.
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(CA_DAYS);
    Ok(p)
}

fn write(path: &Path, text: &str, mode: u32, overwrite: bool) -> Result<(), String> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(mode);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Create `ca.pem` and `ca.key.pem` in `dir`; refuses to replace an existing CA.
pub fn init(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key.pem"));
    if cert_path.exists() || key_path.exists() {
        return Err(format!("{} already holds a gateway CA: not replaced", dir.display()));
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = ca_params()?.self_signed(&key).map_err(|e| e.to_string())?;
    write(&key_path, &key.serialize_pem(), 0o600, false)?;
    write(&cert_path, &cert.pem(), 0o644, false)?;
    println!("{}", cert_path.display());
    Ok(())
}

/// A DNS host name as a certificate names it: lower-case labels of letters, digits and hyphens.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Issue `<host>.pem` and `<host>.key.pem` in `dir`, signed by the CA there.
pub fn issue(dir: &Path, host: &str, days: u32) -> Result<(), String> {
    if !valid_host(host) {
        return Err(format!("--host {host:?}: a lower-case DNS host name is required"));
    }
    let key_pem = std::fs::read_to_string(dir.join("ca.key.pem"))
        .map_err(|e| format!("{}: {e} (run `gateway-ca init` first)", dir.join("ca.key.pem").display()))?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| format!("ca.key.pem: {e}"))?;
    let ca = ca_params()?.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, host);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(i64::from(days));
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = p.signed_by(&key, &ca, &ca_key).map_err(|e| e.to_string())?;
    write(&dir.join(format!("{host}.key.pem")), &key.serialize_pem(), 0o600, true)?;
    write(&dir.join(format!("{host}.pem")), &cert.pem(), 0o644, true)?;
    println!("{}", dir.join(format!("{host}.pem")).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn host_names_are_checked() {
        assert!(valid_host("api.partner.example"));
        assert!(!valid_host("API.partner.example"));
        assert!(!valid_host("a..b"));
        assert!(!valid_host("-a.example"));
        assert!(!valid_host("../etc/passwd"));
        assert!(!valid_host(""));
    }
}
