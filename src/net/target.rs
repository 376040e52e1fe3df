//! Where a client connection goes and how it gets there: the URL,
//! `--resolve`, the TLS trust (`--ca`, `--insecure`, or the system's roots),
//! and one stream type for WebSocket sessions and HTTP requests alike.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::NetError;

/// Which certificates a TLS target may present.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The operating system's roots.
    System,
    /// The CA certificates in this PEM file (a local CA, Pebble's root).
    File(PathBuf),
    /// Anything: for testing only.
    Insecure,
}

pub struct TlsTarget {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    /// Host header value (with port when not the default).
    pub host_header: String,
    /// Where to connect.
    pub addr: SocketAddr,
    pub tls: Option<Arc<TlsTarget>>,
}

impl Target {
    pub fn parse(url: &str, host: Option<&str>, resolve: &[String], trust: &Trust) -> Result<Target, NetError> {
        let uri: hyper::Uri = url.parse().map_err(|_| NetError::Url { url: url.into() })?;
        let (secure, default_port) = match uri.scheme_str() {
            Some("http") | Some("ws") => (false, 80),
            Some("https") | Some("wss") => (true, 443),
            _ => return Err(NetError::Scheme { url: url.into() }),
        };
        let name = uri
            .host()
            .ok_or_else(|| NetError::Url { url: url.into() })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        let host_header = match host {
            Some(h) => h.to_string(),
            None if port == default_port => name.clone(),
            None => uri.authority().map(|a| a.to_string()).unwrap_or_else(|| name.clone()),
        };
        let addr = match resolved(resolve, &name, port)? {
            Some(addr) => addr,
            None => (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|source| NetError::Resolve {
                    name: name.clone(),
                    port,
                    source,
                })?
                .next()
                .ok_or_else(|| NetError::NoAddress { name: name.clone() })?,
        };
        let tls = if secure {
            let server_name =
                ServerName::try_from(name.clone()).map_err(|_| NetError::ServerName { name: name.clone() })?;
            Some(Arc::new(TlsTarget {
                connector: TlsConnector::from(client_config(trust)?),
                server_name,
            }))
        } else {
            None
        };
        Ok(Target { host_header, addr, tls })
    }
}

/// The address `--resolve HOST:PORT:ADDR` gives for this host and port.
fn resolved(entries: &[String], host: &str, port: u16) -> Result<Option<SocketAddr>, NetError> {
    for entry in entries {
        let bad = |reason: String| NetError::ResolveEntry {
            entry: entry.clone(),
            reason,
        };
        let mut parts = entry.splitn(3, ':');
        let (Some(h), Some(p), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                "it must look like HOST:PORT:ADDR, e.g. flow.example.com:443:127.0.0.1".into(),
            ));
        };
        let p: u16 = p.parse().map_err(|_| bad(format!("'{p}' is not a port")))?;
        if h.eq_ignore_ascii_case(host) && p == port {
            let ip: IpAddr = a
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad(format!("'{a}' is not an IP address")))?;
            return Ok(Some(SocketAddr::new(ip, port)));
        }
    }
    Ok(None)
}

fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, NetError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(NetError::Tls)?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        Trust::File(path) => {
            use rustls::pki_types::pem::PemObject;
            let bad = |reason: String| NetError::Ca {
                path: path.clone(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("cannot read it: {e}")))? {
                let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("it holds no certificate".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(NetError::NoSystemRoots);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    // Flow's WebSocket and the HTTP load both speak HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any certificate, still checking the handshake's signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to the target, with or without TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connects to the target (from `source` when given) and does the TLS
/// handshake when the target needs one.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> io::Result<Stream> {
    let tcp = tcp_connect(target.addr, source).await?;
    match &target.tls {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => {
            let stream = tls.connector.connect(tls.server_name.clone(), tcp).await?;
            Ok(Stream::Tls(Box::new(stream)))
        }
    }
}

async fn tcp_connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        return Ok(stream);
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Choose the source port at connect time (not bind time), so ports are
    // unique per destination rather than per source address.
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A source address for session `index`: 127.0.0.1 + (index mod n) toward a
/// loopback IPv4 target, the system's choice otherwise.
pub fn source_address(target: SocketAddr, index: usize, spread: u8) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && spread > 1 => Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (index % spread as usize) as u8,
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_resolve_and_host_overrides() {
        let resolve = ["flow.example.com:8080:127.0.0.5".to_string()];
        let t = Target::parse("http://flow.example.com:8080/x", None, &resolve, &Trust::System).unwrap();
        assert_eq!(t.addr, "127.0.0.5:8080".parse().unwrap());
        assert_eq!(t.host_header, "flow.example.com:8080");
        assert!(t.tls.is_none());
        let t = Target::parse("ws://127.0.0.1", Some("flow.example.com"), &[], &Trust::System).unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.host_header, "flow.example.com");
        let resolve = ["flow.example.com:443:127.0.0.1".to_string()];
        let t = Target::parse("wss://flow.example.com", None, &resolve, &Trust::Insecure).unwrap();
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        assert!(t.tls.is_some());
        assert!(Target::parse("ftp://x", None, &[], &Trust::System).is_err());
        assert!(Target::parse("http://x:1", None, &["bad".into()], &Trust::System).is_err());
        let missing = Target::parse("https://127.0.0.1", None, &[], &Trust::File("/nonexistent.pem".into()));
        assert!(missing.err().unwrap().to_string().contains("--ca"));
    }

    #[test]
    fn source_addresses_spread_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(source_address(lo, 17, 16), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_address("10.0.0.1:80".parse().unwrap(), 3, 16), None);
    }
}
