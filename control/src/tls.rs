//! TLS for the control plane: the PEM files the controller serves with,
//! the files a client (of the controller or of etcd) trusts and presents,
//! and the TLS reason behind a failed connection, found for the message.
//!
//! rustls with the ring provider, named explicitly wherever a config is
//! built, so that no process-wide default provider is needed (and
//! aws-lc-rs, which needs cmake and nasm to build, is not linked).
//!
//! What it must not do: read the system's trust store. A client trusts
//! exactly the CA file it is given, as flannel does with `-etcd-cafile`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files a client uses for TLS, named after flannel's
/// `-etcd-cafile`, `-etcd-certfile` and `-etcd-keyfile`. All optional; a
/// certificate and its key go together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA (PEM, one or more certificates) that signed the server's
    /// certificate: the only root trusted.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for a server that asks for
    /// one.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// A [`ClientTls`]'s files, read and checked.
pub(crate) struct ClientPem {
    /// The CA file's text.
    pub(crate) ca: Option<Vec<u8>>,
    /// The certificate file's text and the key file's.
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientPem {
    /// Without the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPem")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClientTls {
    /// Whether no file is given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Reads the files and checks that each holds what it must (so that a
    /// wrong file is named now, not as a handshake failure later).
    pub(crate) fn load(&self) -> Result<ClientPem, TlsError> {
        let ca = match &self.ca_file {
            Some(path) => {
                let text = read("CA file", path)?;
                certs("CA file", path, &text)?;
                Some(text)
            }
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(_), None) => return Err(TlsError::Pair("a certificate file", "its key file")),
            (None, Some(_)) => return Err(TlsError::Pair("a key file", "its certificate file")),
            (Some(cert), Some(key)) => {
                let cert_text = read("certificate file", cert)?;
                certs("certificate file", cert, &cert_text)?;
                let key_text = read("key file", key)?;
                private_key(key, &key_text)?;
                Some((cert_text, key_text))
            }
        };
        Ok(ClientPem { ca, identity })
    }
}

/// What the controller serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Its certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM).
    pub key_file: PathBuf,
    /// When given, every client must present a certificate signed by this
    /// CA (PEM); without it, none is asked for.
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTls {
    /// The rustls config: the files read, the key checked against the
    /// certificate, HTTP/1.1 offered by ALPN.
    pub(crate) fn config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = certs(
            "certificate file",
            &self.cert_file,
            &read("certificate file", &self.cert_file)?,
        )?;
        let key = private_key(&self.key_file, &read("key file", &self.key_file)?)?;
        let provider = ring();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs("client CA file", path, &read("client CA file", path)?)? {
                    roots.add(c).map_err(|e| TlsError::Pem {
                        what: "client CA file",
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Pem {
                    what: "client CA file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
            TlsError::Setup(format!(
                "the certificate {} and the key {} do not go together: {e}",
                self.cert_file.display(),
                self.key_file.display()
            ))
        })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Why TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read the TLS {what} {}: {error}", path.display())]
    Io {
        /// Which file it is (`CA file`, `certificate file` …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A file does not hold what it must.
    #[error("the TLS {what} {}: {reason}", path.display())]
    Pem {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One of a certificate and its key is given without the other.
    #[error("{0} is given without {1}: give both or neither")]
    Pair(&'static str, &'static str),
    /// rustls refused the combination.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The ring provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange (aws-lc-rs has it); we keep ring on purpose, for
/// a build without cmake and nasm, as tonic and reqwest do with their `ring`
/// features.
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Io {
        what,
        path: path.to_owned(),
        error,
    })
}

/// The certificates of a PEM text: at least one.
fn certs(
    what: &'static str,
    path: &Path,
    text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (want PEM: BEGIN CERTIFICATE)".into()
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path, text: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(text).map_err(|e| TlsError::Pem {
        what: "key file",
        path: path.to_owned(),
        reason: format!("holds no private key (want PEM: PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

impl ClientPem {
    /// A rustls client config trusting only the CA, with the client
    /// certificate if any, offering `alpn`.
    fn rustls_config(&self, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.ca {
            for c in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut cfg = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Ok(cfg)
    }
}

/// What [`probe`] says to an HTTP/2 server (gRPC: etcd): the client
/// preface and an empty SETTINGS frame, which the server answers at once.
pub(crate) const H2_HELLO: (&[u8], &[u8]) = (
    b"h2",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
);

/// What [`probe`] says to an HTTP/1.1 server (the controller): a request
/// without a token, which is answered 401 at once.
pub(crate) const H1_HELLO: (&[u8], &[u8]) = (
    b"http/1.1",
    b"GET /v1/config HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n",
);

/// Finds out whether TLS is why the server at `url` closed our connection:
/// with TLS 1.3 a server checks the client certificate after the client's
/// handshake is done, so a refused (or missing) one reaches the client as
/// an alert on its next read, which an HTTP client in the middle of a
/// request reports as no more than "connection closed". This handshakes as
/// `pem` says, with the ALPN protocol and the greeting of `hello` (an
/// [`H2_HELLO`] or [`H1_HELLO`]), and reads the server's first answer: the
/// alert, if any, is the TLS error returned.
pub(crate) async fn probe(
    url: &str,
    pem: &ClientPem,
    hello: (&[u8], &[u8]),
    timeout: std::time::Duration,
) -> Option<rustls::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url.strip_prefix("https://")?.split('/').next()?.to_owned();
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h,
        None => authority.as_str(),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).ok()?;
    let (alpn, hello) = hello;
    let cfg = pem.rustls_config(alpn).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .ok()?;
        let mut s = match tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
        {
            Ok(s) => s,
            Err(e) => return tls_reason(&e).cloned(),
        };
        if let Err(e) = s.write_all(hello).await {
            return tls_reason(&e).cloned();
        }
        let _ = s.flush().await;
        let mut buf = [0u8; 64];
        match s.read(&mut buf).await {
            Err(e) => tls_reason(&e).cloned(),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// The rustls error somewhere in `e`'s causes: hyper and tonic wrap it in
/// `io::Error`s, whose `source()` skips the error they carry, so those are
/// opened too.
pub(crate) fn tls_reason<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(r) = tls_reason(inner) {
                return Some(r);
            }
        }
        cur = c.source();
    }
    None
}

/// What a TLS failure with `peer` means, and what to check.
pub(crate) fn explain(peer: &str, e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "{peer}'s certificate is not signed by a CA we trust ({e}): \
             check that cafile is the CA that signed it"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "{peer}'s certificate is not for the host in its URL ({e}): \
             use a name or address its certificate lists"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("{peer}'s certificate has expired ({e})")
        }
        E::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::HandshakeFailure
            | A::DecryptError,
        ) => format!(
            "{peer} refused our client certificate, or its absence ({e}): \
             check certfile and keyfile, and that {peer} trusts the CA that signed them"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("{peer} does not speak TLS ({e}): is it serving plain http://?")
        }
        e => format!("with {peer}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_found_inside_io_errors() {
        let r = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(r);
        let outer = std::io::Error::other(io);
        let found = tls_reason(&outer);
        assert!(matches!(
            found,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ));
        assert!(explain("the controller", found.unwrap()).contains("cafile"));
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let tls = ClientTls {
            cert_file: Some("c.pem".into()),
            ..ClientTls::default()
        };
        assert!(matches!(tls.load(), Err(TlsError::Pair(..))));
    }

    #[test]
    fn a_missing_file_is_named() {
        let tls = ClientTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ClientTls::default()
        };
        let e = tls.load().unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("CA file"),
            "{e}"
        );
    }
}
