//! TLS for a [`PostgresArchive`](super::PostgresArchive), with rustls, as libpq's `sslmode`
//! says.
//!
//! tokio-postgres parses `sslmode` as `disable`, `prefer` or `require` only, and knows neither
//! `verify-ca`, `verify-full` nor `sslrootcert`; [`split`] takes those out of the connection
//! string and turns them into the verifier here. The modes mean what they mean to libpq:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | no |
//! | `prefer` (the default) | when the server offers it | no |
//! | `require` | yes | no, unless a root certificate is given, then as `verify-ca` |
//! | `verify-ca` | yes | signed by the root certificate |
//! | `verify-full` | yes | signed by the root certificate, and made out to the host |
//!
//! The root certificate is the PEM file `sslrootcert` names (in the URL, or set on the
//! builder), or else `~/.postgresql/root.crt` when it exists, as with libpq.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema::refused;
use crate::error::{Error, Result};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Nothing (`disable`, `prefer`, `require` without a root certificate).
    Nothing,
    /// The chain up to the root certificate (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// The TLS settings taken out of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tls {
    pub(super) check: Check,
    pub(super) root: Option<PathBuf>,
}

/// Splits `verify-ca`/`verify-full` and `sslrootcert` out of `url` (a `postgres://` URL or a
/// `key=value` string), leaving what tokio-postgres parses (`sslmode=require` for the verifying
/// modes).
///
/// A URL whose query holds a bare `@` is refused: tokio-postgres would read everything up to it
/// as the user and password, and the rest as the host, options lost (`sslmode` with them).
pub(super) fn split(url: &str) -> Result<(String, Tls)> {
    let mut tls = Tls {
        check: Check::Nothing,
        root: None,
    };
    // `None`: the pair goes; `Some(None)`: it stays as written (still encoded, in a URL, for
    // tokio-postgres to decode once); `Some(Some(pair))`: `pair` replaces it.
    let mut take = |key: &str, value: &str| -> Option<Option<String>> {
        match (key, value) {
            ("sslrootcert", path) => {
                tls.root = Some(PathBuf::from(path));
                None
            }
            ("sslmode", "verify-ca") => {
                tls.check = Check::Chain;
                Some(Some("sslmode=require".to_owned()))
            }
            ("sslmode", "verify-full") => {
                tls.check = Check::Full;
                Some(Some("sslmode=require".to_owned()))
            }
            _ => Some(None),
        }
    };
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| is_url) {
        if query.contains('@') {
            return Err(at_in_options());
        }
        let kept: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                take(key, &percent_decoded(value))
                    .map(|kept| kept.unwrap_or_else(|| pair.to_owned()))
            })
            .collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if is_url {
        url.to_owned()
    } else {
        let kept: Vec<String> = pairs(url)
            .into_iter()
            .filter_map(|(pair, key, value)| {
                take(&key, &value).map(|kept| kept.unwrap_or_else(|| pair.to_owned()))
            })
            .collect();
        kept.join(" ")
    };
    Ok((rest, tls))
}

/// The `key=value` pairs of a libpq connection string: each as written, its key, and its value
/// unquoted. As libpq reads them, blanks may surround the `=`, and a value is either a run of
/// non-blank characters or single-quoted (so it may hold blanks), with `\\` escaping the next
/// character in both.
fn pairs(text: &str) -> Vec<(&str, String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_blanks = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_blanks(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return pairs;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_blanks(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_some() {
            skip_blanks(&mut chars);
        }
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        while let Some((_, c)) = chars.next_if(|(_, c)| quoted || !c.is_whitespace()) {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' if quoted => break,
                c => value.push(c),
            }
        }
        let end = chars.peek().map_or(text.len(), |&(at, _)| at);
        pairs.push((text[start..end].trim_end(), key, value));
    }
}

/// The error for a URL whose options hold a bare `@` (see [`split`]).
fn at_in_options() -> Error {
    let reason = "an `@` in the URL's options must be written %40".to_owned();
    refused("parse the connection URL", reason)
}

/// `value` with its `%XX` escapes decoded (a URL's query value); invalid escapes are kept.
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector for `tls`, whose root certificate is `root` when set (the builder's, which
/// wins over the URL's).
///
/// `require`: whether the connection string says `sslmode=require`, which checks the chain
/// when a root certificate is there, `~/.postgresql/root.crt` included, as libpq does.
pub(super) fn connector(
    mut tls: Tls,
    root: Option<&Path>,
    require: bool,
) -> Result<MakeRustlsConnect> {
    if let Some(root) = root {
        tls.root = Some(root.to_owned());
    }
    if tls.root.is_none() && (tls.check != Check::Nothing || require) {
        tls.root = default_root();
    }
    if tls.check == Check::Nothing && tls.root.is_some() {
        tls.check = Check::Chain;
    }
    // ring, not rustls's default aws-lc-rs, so that the feature builds no C library and needs
    // no cmake. rustls marks ring's provider deprecated because it lacks the post-quantum key
    // exchange; the classical ones it has (X25519, P-256, P-384) are what PostgreSQL servers
    // built on OpenSSL offer anyway.
    #[allow(deprecated, reason = "ring's provider, chosen above")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(err.into()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (tls.check, &tls.root) {
        (Check::Nothing, _) => Arc::new(Unchecked(provider.signature_verification_algorithms)),
        (_, None) => {
            return Err(refused(
                "set up TLS",
                "sslmode=verify-ca and verify-full need a root certificate: set sslrootcert= \
                 in the URL, or PostgresArchiveBuilder::root_certificate"
                    .to_owned(),
            ));
        }
        (check, Some(root)) => {
            let (roots, pinned) = roots(root)?;
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| tls_error(err.into()))?;
            Arc::new(Rooted {
                chain,
                pinned,
                check_name: check == Check::Full,
            })
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's default root certificate, `~/.postgresql/root.crt`, when it exists.
fn default_root() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    path.is_file().then_some(path)
}

/// Every certificate of the PEM file `path`, as a store and as they are.
fn roots(path: &Path) -> Result<(RootCertStore, Vec<CertificateDer<'static>>)> {
    let unreadable = |source: rustls::pki_types::pem::Error| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
    };
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    for cert in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
        let cert = cert.map_err(unreadable)?;
        pinned.push(cert.clone());
        roots.add(cert).map_err(|err| tls_error(err.into()))?;
    }
    if roots.is_empty() {
        return Err(refused(
            "set up TLS",
            format!(
                "the root certificate file {} holds no certificate",
                path.display()
            ),
        ));
    }
    Ok((roots, pinned))
}

fn tls_error(source: crate::error::BoxError) -> Error {
    Error::Backend {
        backend: "postgres",
        operation: "set up TLS",
        source,
    }
}

/// Accepts any certificate, as libpq's `require` does without a root certificate: the
/// connection is encrypted, but not authenticated. The handshake's signatures are still
/// checked, so the server holds the key of the certificate it sent.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The checks of `verify-ca` and `verify-full`: the chain up to the root certificates, and for
/// `verify-full` (`check_name`) the host name too.
///
/// Also a server certificate that is itself one of the root certificates, as OpenSSL (so
/// libpq) accepts: a self-signed server certificate made with `openssl req -x509`, as
/// PostgreSQL's documentation shows, is marked a CA, which webpki refuses as the end of a chain
/// (`CaUsedAsEndEntity`). Such a certificate is accepted only when the server sent it alone and
/// it is byte for byte one of the roots; webpki checked its validity period before it found it
/// a CA; with `verify-full` it must still be made out to the host.
#[derive(Debug)]
struct Rooted {
    chain: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl ServerCertVerifier for Rooted {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error as TlsError};
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            // rustls checks the name after the chain, so the chain holds here.
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(TlsError::InvalidCertificate(CertificateError::Other(other)))
                if intermediates.is_empty()
                    && self
                        .pinned
                        .iter()
                        .any(|root| root.as_ref() == end_entity.as_ref())
                    && format!("{other:?}").contains("CaUsedAsEndEntity") =>
            {
                if self.check_name {
                    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_modes_and_the_root_certificate_leave_the_url() {
        let (rest, tls) =
            split("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&x=1").unwrap();
        assert_eq!(rest, "postgres://u@h/db?sslmode=require&x=1");
        assert_eq!(tls.check, Check::Full);
        assert_eq!(tls.root.as_deref(), Some(Path::new("/tmp/ca.pem")));

        let (rest, tls) = split("host=h sslmode=verify-ca sslrootcert=/ca.pem user=u").unwrap();
        assert_eq!(rest, "host=h sslmode=require user=u");
        assert_eq!(tls.check, Check::Chain);

        let (rest, _) =
            split("postgres://u@h/db?application_name=a%26b%2520c&sslmode=verify-ca").unwrap();
        assert_eq!(
            rest, "postgres://u@h/db?application_name=a%26b%2520c&sslmode=require",
            "other values stay encoded, for tokio-postgres to decode once"
        );

        let (rest, tls) = split(
            "host=h sslrootcert = '/a b/c\\'a.pem'  application_name='x  y' sslmode=verify-ca",
        )
        .unwrap();
        assert_eq!(rest, "host=h application_name='x  y' sslmode=require");
        assert_eq!(tls.root.as_deref(), Some(Path::new("/a b/c'a.pem")));
        assert_eq!(tls.check, Check::Chain);

        let (rest, tls) = split("postgres://u@h/db?sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            (rest.as_str(), tls.check),
            ("postgres://u@h/db", Check::Nothing)
        );
    }

    #[test]
    fn an_at_sign_in_the_options_is_refused_and_key_value_strings_may_hold_a_question_mark() {
        assert!(split("postgres://u@h/db?sslmode=verify-full&application_name=svc@prod").is_err());
        let (rest, tls) = split("host=h password=a?b sslmode=verify-full").unwrap();
        assert_eq!(rest, "host=h password=a?b sslmode=require");
        assert_eq!(tls.check, Check::Full);
    }

    #[test]
    fn verifying_without_a_root_certificate_is_refused() {
        let tls = Tls {
            check: Check::Full,
            root: Some(PathBuf::from("/nonexistent/root.crt")),
        };
        assert!(matches!(connector(tls, None, false), Err(Error::Io { .. })));
    }
}
