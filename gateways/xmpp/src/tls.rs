//! TLS for the listeners: the server certificate (from PEM files, or self-signed on first
//! start) and the channel binding data of an established connection.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbus_xmpp_auth::{ChannelBinding, ChannelBindingType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ProtocolVersion, ServerConfig};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::GatewayError;
use crate::tls_stream::{ExporterSecretLog, TlsStream};

/// Where the gateway's TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A certificate chain and its private key, both PEM files.
    Pem {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A self-signed certificate for the served domain, kept in this directory as
    /// `cert.pem` and `key.pem`. It is generated on first start (a warning names the
    /// files) and reused afterwards. Clients will not trust it without configuration:
    /// meant for evaluation and tests.
    SelfSigned {
        /// The directory holding (or receiving) the certificate and key.
        dir: PathBuf,
    },
}

/// The loaded certificate chain and key.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads (or for [`CertSource::SelfSigned`], generates once) the identity.
    pub(crate) fn load(source: &CertSource, domain: &str) -> Result<Self, GatewayError> {
        match source {
            CertSource::Pem { cert, key } => read_pem(cert, key),
            CertSource::SelfSigned { dir } => {
                let cert = dir.join("cert.pem");
                let key = dir.join("key.pem");
                if !cert.exists() || !key.exists() {
                    generate_self_signed(dir, &cert, &key, domain)?;
                    tracing::warn!(
                        certificate = %cert.display(),
                        key = %key.display(),
                        domain,
                        "generated a self-signed TLS certificate; clients will not trust it \
                         unless configured to: install a real certificate for production"
                    );
                }
                read_pem(&cert, &key)
            }
        }
    }

    /// The hash of the leaf certificate for `tls-server-end-point` (RFC 5929 §4.1): the
    /// certificate's signature hash, SHA-256 when that is MD5, SHA-1 or unknown.
    pub(crate) fn server_end_point(&self) -> Vec<u8> {
        let Some(leaf) = self.chain.first() else {
            return Vec::new();
        };
        let der = leaf.as_ref();
        match signature_hash(der) {
            SigHash::Sha384 => Sha384::digest(der).to_vec(),
            SigHash::Sha512 => Sha512::digest(der).to_vec(),
            SigHash::Sha256 => Sha256::digest(der).to_vec(),
        }
    }

    /// A rustls server configuration with this identity and the given ALPN protocols.
    pub(crate) fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, GatewayError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| GatewayError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| GatewayError::Tls(format!("certificate and key do not fit: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // The exporter secret of each TLS 1.3 handshake, for the tls-exporter channel
        // binding (kept by the connection, written nowhere).
        config.key_log = Arc::new(ExporterSecretLog);
        Ok(Arc::new(config))
    }
}

fn read_pem(cert: &Path, key: &Path) -> Result<Identity, GatewayError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| GatewayError::Certificate {
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(GatewayError::Certificate {
            path: cert.to_path_buf(),
            detail: "no certificate in the file".to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| GatewayError::Certificate {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Identity {
        chain,
        key: key_der,
    })
}

fn generate_self_signed(
    dir: &Path,
    cert: &Path,
    key: &Path,
    domain: &str,
) -> Result<(), GatewayError> {
    let io_error = |path: &Path, e: std::io::Error| GatewayError::Certificate {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let generated = self_signed_certificate(domain, std::time::SystemTime::now())
        .map_err(|e| GatewayError::Tls(format!("cannot generate a certificate: {e}")))?;
    let mut key_file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .map_err(|e| io_error(key, e))?;
    key_file
        .write_all(generated.signing_key.serialize_pem().as_bytes())
        .and_then(|()| key_file.sync_all())
        .map_err(|e| io_error(key, e))?;
    fs::write(cert, generated.cert.pem()).map_err(|e| io_error(cert, e))?;
    Ok(())
}

/// A self-signed certificate for `domain`: subject CN = the domain (also the only subject
/// alternative name), valid from the start of today (UTC) for ten years.
fn self_signed_certificate(
    domain: &str,
    now: std::time::SystemTime,
) -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, rcgen::Error> {
    let signing_key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, domain);
    name.push(rcgen::DnType::OrganizationName, "imbus self-signed");
    params.distinguished_name = name;
    let (year, month, day) = imbus_core::Timestamp::from_system_time(now).date();
    let year = i32::try_from(year).unwrap_or(1970);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + 10, month, day.min(28));
    let cert = params.self_signed(&signing_key)?;
    Ok(rcgen::CertifiedKey { cert, signing_key })
}

/// The channel bindings of an established server connection, preferred first:
/// `tls-exporter` (RFC 9266, TLS 1.3 only) and `tls-server-end-point`. The connection
/// forgets its exporter secret afterwards (it serves nothing else).
pub(crate) fn channel_bindings(
    connection: &mut TlsStream,
    server_end_point: &[u8],
) -> Vec<ChannelBinding> {
    let mut bindings = Vec::with_capacity(2);
    if connection.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
        match connection.export_keying_material(b"EXPORTER-Channel-Binding", 32) {
            Some(data) => bindings.push(ChannelBinding::new(ChannelBindingType::TlsExporter, data)),
            None => {
                tracing::warn!("no tls-exporter channel binding: the exporter secret was not seen")
            }
        }
    }
    connection.forget_exporter_secret();
    if !server_end_point.is_empty() {
        bindings.push(ChannelBinding::new(
            ChannelBindingType::TlsServerEndPoint,
            server_end_point.to_vec(),
        ));
    }
    bindings
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigHash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of a certificate's signature algorithm (`Certificate.signatureAlgorithm`,
/// the second element of the outer DER sequence).
fn signature_hash(der: &[u8]) -> SigHash {
    // OIDs (value bytes) of the SHA-384 and SHA-512 signature algorithms.
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
    ];
    let oid = (|| {
        let (_, certificate, _) = der_item(der)?;
        let (_, _tbs, rest) = der_item(certificate)?;
        let (_, algorithm, _) = der_item(rest)?;
        let (tag, oid, _) = der_item(algorithm)?;
        (tag == 0x06).then_some(oid)
    })();
    match oid {
        Some(oid) if SHA384.contains(&oid) => SigHash::Sha384,
        Some(oid) if SHA512.contains(&oid) => SigHash::Sha512,
        _ => SigHash::Sha256,
    }
}

/// One DER item: its tag, its content and the bytes after it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let mut len = 0usize;
        for byte in input.get(2..2 + count)? {
            len = (len << 8) | usize::from(*byte);
        }
        (len, 2 + count)
    };
    let content = input.get(header..header.checked_add(len)?)?;
    Some((tag, content, &input[header + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned {
            dir: dir.path().join("tls"),
        };
        let first = Identity::load(&source, "example.com").unwrap();
        let second = Identity::load(&source, "example.com").unwrap();
        assert_eq!(first.chain, second.chain);
        assert!(first.server_config(&[b"xmpp-client"]).is_ok());
        // rcgen signs with ECDSA P-256/SHA-256.
        assert_eq!(signature_hash(first.chain[0].as_ref()), SigHash::Sha256);
        assert_eq!(
            first.server_end_point(),
            Sha256::digest(first.chain[0].as_ref()).to_vec()
        );
    }

    #[test]
    fn missing_or_bad_pem_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let source = CertSource::Pem {
            cert: cert.clone(),
            key: dir.path().join("missing.pem"),
        };
        match Identity::load(&source, "example.com") {
            Err(GatewayError::Certificate { path, .. }) => assert_eq!(path, cert),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn der_items_are_bounded() {
        assert_eq!(der_item(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(der_item(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(
            der_item(&[0x06, 0x01, 7, 9]),
            Some((0x06, &[7u8][..], &[9u8][..]))
        );
    }
}
