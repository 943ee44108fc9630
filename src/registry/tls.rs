//! Server certificate checks when the user names certificates to trust (a CA file):
//! the platform verifier with those certificates as extra roots, plus curl's leniency
//! for a self-signed certificate served as-is.
//!
//! `openssl req -x509` makes certificates with `CA:TRUE`; a registry serving one of them
//! directly gets `CaUsedAsEndEntity` from webpki, while curl (OpenSSL) accepts it when it
//! is the very certificate passed with `--cacert`. We accept it in that case only: the
//! server's certificate is byte-for-byte one the user named, webpki found nothing wrong
//! with it but the CA flag, and it is valid for the name we connected to. Everything
//! else is the platform verifier's decision.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::sync::Arc;

#[derive(Debug)]
pub struct NamedCertificates {
    inner: Arc<dyn ServerCertVerifier>,
    named: Vec<CertificateDer<'static>>,
}

/// A rustls client configuration trusting the system's roots and `named`.
pub fn client_config(named: Vec<CertificateDer<'static>>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner =
        rustls_platform_verifier::Verifier::new_with_extra_roots(named.clone(), provider.clone())?;
    let verifier = NamedCertificates {
        inner: Arc::new(inner),
        named,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether webpki's only objection is the CA flag. webpki checks the validity period
/// before the basic constraints (`check_issuer_independent_properties`), so an expired
/// or not-yet-valid certificate is reported as such, never as this.
fn only_the_ca_flag(err: &Error) -> bool {
    match err {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            )
        }
        _ => false,
    }
}

impl ServerCertVerifier for NamedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let err = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(err) => err,
        };
        if !only_the_ca_flag(&err) || !self.named.iter().any(|c| c == end_entity) {
            return Err(err);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures prove the server holds the certificate's key; they are
    // checked the same way whatever the certificate's flags.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
