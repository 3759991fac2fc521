//! TLS with rustls: choosing a certificate by SNI, ALPN `h2` + `http/1.1`.
//!
//! Certificates are loaded while the config is validated (`config::files`), so an
//! unreadable file or a key that does not match its certificate is a config error with a
//! position, and a reload with a broken certificate keeps the running one. The SNI
//! resolver asks webpki whether each certificate is valid for the requested name
//! (wildcards included) and falls back to the first certificate, as nginx does with its
//! default server.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsSettings;

/// The crypto provider used everywhere (ring: pure build, no cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Picks the certificate for the client's SNI name.
#[derive(Debug)]
struct SniResolver {
    settings: Arc<TlsSettings>,
}

impl SniResolver {
    fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let server_name = ServerName::DnsName(DnsName::try_from(name).ok()?.to_owned());
        self.settings.certificates.iter().find_map(|loaded| {
            let end_entity = loaded.key.end_entity_cert().ok()?;
            let cert = webpki::EndEntityCert::try_from(end_entity).ok()?;
            cert.verify_is_valid_for_subject_name(&server_name)
                .ok()
                .map(|()| loaded.key.clone())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|name| self.find(name))
            .or_else(|| self.settings.certificates.first().map(|c| c.key.clone()))
    }
}

/// A server config for one listener: the listener's certificates, ALPN h2 then http/1.1.
pub(crate) fn server_config(
    settings: &Arc<TlsSettings>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            settings: settings.clone(),
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Resumption for any number of clients, from tickets (TLS 1.3 and 1.2), as nginx and
    // HAProxy resume by default. rustls alone keeps a cache of 256 sessions, two per
    // handshake: 300 clients that come back in turn resumed none (tests/data_path.rs).
    // The keys are this config's, random, rotated every 6 hours: a reload starts new ones
    // (as nginx's do), and no ticket serves on another listener.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// A client config trusting the Mozilla roots, for `https://` hooks.
pub(crate) fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}
