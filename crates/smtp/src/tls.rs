//! STARTTLS on outbound connections: the rustls client configurations
//! (one that checks nothing but the handshake itself, for `may` and
//! `encrypt`; one that checks the certificate, for `verify`), the
//! handshake with its own time limit, and the per-destination policy.
//!
//! Decisions:
//! - rustls with the `ring` provider; TLS 1.2 and 1.3.
//! - Trust anchors for `verify`: the system's store (`/etc/ssl/certs`
//!   through `rustls-native-certs`, read once at start), so that the
//!   distribution's `ca-certificates` updates apply without a rebuild,
//!   plus the PEM file `smtp.tls_ca_file` if set (a private CA, tests).
//! - `verify` checks that the certificate chains to a trust anchor and
//!   is valid for the host name connected to (`route::Host::name`: the
//!   MX name, or the name in a `[bracketed]` route). A next hop given as
//!   an IP literal is checked against an IP SAN. Failure defers `4.7.5`
//!   (RFC 3463: cryptographic failure).
//! - `may` and `encrypt` do not check the certificate: opportunistic TLS
//!   protects against passive listeners only, as in Postfix.
//! - The handshake is bounded by `smtp.tls_timeout` as a whole: the
//!   socket's read and write timeouts are set to the time left before each
//!   step, so a peer that never answers the ClientHello costs at most
//!   that long (deferred `4.4.2`).
//!
//! # Must never
//! Block without a deadline; treat a certificate as verified under
//! `verify` unless rustls's WebPKI verifier accepted it for the name.
//!
//! # Security
//! The peer is hostile: everything it sends goes through rustls. The CA
//! file is the operator's.
//!
//! # Errors
//! An unreadable `smtp.tls_ca_file` is fatal at start (the operator asked
//! for it). A failed handshake is a [`Failure`] for the session, which
//! defers its recipients.

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use sluice_config::TlsPolicy;
use sluice_proto::reply::Enhanced;

/// A TLS stream over TCP.
pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The client configurations, made once at start.
#[derive(Debug, Clone)]
pub(crate) struct Contexts {
    /// For `may` and `encrypt`: any certificate.
    unverified: Arc<ClientConfig>,
    /// For `verify`: WebPKI against the trust anchors; none when there is
    /// no trust anchor at all (an empty system store and no
    /// `smtp.tls_ca_file`): then `verify` hops defer, and `may` and
    /// `encrypt` hops are still served.
    verified: Option<Arc<ClientConfig>>,
}

/// Why a handshake did not give a usable session.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `4.7.5` (certificate or protocol) or `4.4.2` (timeout, lost).
    pub(crate) dsn: Enhanced,
    /// For the log and the recipients' reason.
    pub(crate) text: String,
}

/// What a successful handshake gave, for the log.
#[derive(Debug, Clone)]
pub(crate) struct Established {
    /// `Verified` or `Untrusted`.
    pub(crate) trust: &'static str,
    /// `TLSv1.3`.
    pub(crate) version: String,
    /// `TLS13_AES_256_GCM_SHA384`.
    pub(crate) cipher: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

impl Contexts {
    /// Builds both configurations: the system's trust anchors plus those
    /// in `ca_file` (PEM) unless it is empty.
    pub(crate) fn new(ca_file: &Path) -> anyhow::Result<Contexts> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            log::warn!("reading the system's trusted certificates: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            log::debug!("{ignored} system certificates ignored, {added} trusted");
        }
        if !ca_file.as_os_str().is_empty() {
            let certs = CertificateDer::pem_file_iter(ca_file)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading smtp.tls_ca_file {}", ca_file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!(
                    "smtp.tls_ca_file {}: no usable CA certificate",
                    ca_file.display()
                );
            }
        }
        Contexts::with_roots(roots)
    }

    /// Both configurations over the trust anchors `roots`.
    fn with_roots(roots: RootCertStore) -> anyhow::Result<Contexts> {
        let provider = provider();
        let verified = if roots.is_empty() {
            log::warn!(
                "no trusted CA certificates (the system store is empty and smtp.tls_ca_file is unset): next hops with the verify TLS policy are deferred"
            );
            None
        } else {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("building the certificate verifier")?;
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_webpki_verifier(verifier)
                .with_no_client_auth();
            Some(Arc::new(config))
        };
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Contexts {
            unverified: Arc::new(unverified),
            verified,
        })
    }

    /// Runs the handshake over `tcp` for `host` within `limit`. With
    /// `verify` the certificate must be valid for `host`.
    pub(crate) fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        verify: bool,
        limit: Duration,
    ) -> Result<(TlsStream, Established), Failure> {
        let fail = |dsn: Enhanced, text: String| Failure { dsn, text };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            fail(
                Enhanced::new(4, 7, 5),
                format!("cannot check a certificate for {host:?}: {e}"),
            )
        })?;
        let config = if verify {
            self.verified.clone().ok_or_else(|| {
                fail(
                    Enhanced::new(4, 7, 5),
                    "cannot verify a certificate: no trusted CA certificates".to_owned(),
                )
            })?
        } else {
            Arc::clone(&self.unverified)
        };
        let mut conn = ClientConnection::new(config, name)
            .map_err(|e| fail(Enhanced::new(4, 7, 5), format!("TLS set-up: {e}")))?;
        let mut tcp = tcp;
        let deadline = Instant::now() + limit;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out(limit));
            }
            let set = tcp
                .set_read_timeout(Some(left))
                .and_then(|()| tcp.set_write_timeout(Some(left)));
            if let Err(e) = set {
                return Err(fail(Enhanced::new(4, 4, 2), format!("TLS handshake: {e}")));
            }
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(fail(
                        Enhanced::new(4, 4, 2),
                        "lost connection during the TLS handshake".to_owned(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out(limit));
                }
                Err(e) => {
                    let dsn = if e.kind() == io::ErrorKind::InvalidData {
                        Enhanced::new(4, 7, 5)
                    } else {
                        Enhanced::new(4, 4, 2)
                    };
                    return Err(fail(dsn, format!("TLS handshake failed: {e}")));
                }
            }
        }
        let version = conn
            .protocol_version()
            .map(|v| match v {
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "unknown".to_owned());
        let established = Established {
            trust: if verify { "Verified" } else { "Untrusted" },
            version,
            cipher,
        };
        Ok((StreamOwned::new(conn, tcp), established))
    }
}

fn timed_out(limit: Duration) -> Failure {
    Failure {
        dsn: Enhanced::new(4, 4, 2),
        text: format!(
            "TLS handshake timed out after {}",
            sluice_config::format_duration(limit)
        ),
    }
}

/// The policy for a job's next hop: the exact next hop in
/// `smtp.tls_policies`, else its bare host, else `smtp.tls`.
pub(crate) fn policy_for(smtp: &sluice_config::Smtp, next_hop: &str) -> TlsPolicy {
    let hop = next_hop.to_ascii_lowercase();
    if let Some(p) = smtp.tls_policies.get(&hop) {
        return *p;
    }
    let host = match hop.parse::<sluice_config::NextHop>() {
        Ok(sluice_config::NextHop::Smtp { host, .. })
        | Ok(sluice_config::NextHop::LmtpInet { host, .. }) => host.to_ascii_lowercase(),
        _ => return smtp.tls,
    };
    smtp.tls_policies.get(&host).copied().unwrap_or(smtp.tls)
}

/// Accepts any certificate, but checks the handshake's signatures with the
/// provider's algorithms (the session is still encrypted to whoever holds
/// the certificate's key). For `may` and `encrypt`.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        crypto::verify_tls12_signature(
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
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lookup_prefers_the_exact_next_hop_then_the_host() {
        let mut smtp = sluice_config::Smtp::default();
        smtp.tls_policies
            .insert("[mx.example]:2525".into(), TlsPolicy::Verify);
        smtp.tls_policies
            .insert("mx.example".into(), TlsPolicy::Encrypt);
        smtp.tls_policies
            .insert("plain.example".into(), TlsPolicy::None);
        assert_eq!(policy_for(&smtp, "[MX.example]:2525"), TlsPolicy::Verify);
        assert_eq!(policy_for(&smtp, "[mx.example]:25"), TlsPolicy::Encrypt);
        assert_eq!(policy_for(&smtp, "mx.example"), TlsPolicy::Encrypt);
        assert_eq!(policy_for(&smtp, "plain.example"), TlsPolicy::None);
        assert_eq!(policy_for(&smtp, "other.example"), TlsPolicy::May);
        assert_eq!(policy_for(&smtp, "lmtp:unix:/x"), TlsPolicy::May);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(Contexts::new(&empty).is_err());
        assert!(Contexts::new(&dir.path().join("missing.pem")).is_err());
        assert!(Contexts::new(Path::new("")).is_ok());
    }

    #[test]
    fn without_trust_anchors_only_verify_hops_fail() {
        let contexts = Contexts::with_roots(RootCertStore::empty()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let failure = contexts
            .handshake(tcp, "mx.example", true, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(failure.dsn, Enhanced::new(4, 7, 5));
        assert!(
            failure.text.contains("no trusted CA certificates"),
            "{}",
            failure.text
        );
        assert!(contexts.verified.is_none());
    }
}
