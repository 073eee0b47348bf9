//! `sensor-stats healthcheck`: asks the local server's `/healthz` and reports by exit
//! code, so a container `HEALTHCHECK` needs no curl in the image.
//!
//! With TLS on (`--tls-cert` set), it speaks TLS to 127.0.0.1 without verifying the
//! certificate: it only ever connects to the loopback address of its own container, where
//! nobody can sit in between, and the certificate names the service's public host, not
//! 127.0.0.1, so verifying it would need the CA and a name override for nothing.
//! `/healthz` needs no token, so the probe needs no API key either.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// Calls `GET /healthz` on `127.0.0.1:port` over plain HTTP; `Ok(())` when it answers 204.
///
/// # Errors
/// A sentence saying what failed: connect, timeout, or the status received.
pub fn check(port: u16, timeout: Duration) -> Result<(), String> {
    let (stream, addr) = connect(port, timeout)?;
    ask(stream, addr)
}

/// Like [`check`], over TLS, without verifying the server's certificate (see the module
/// docs for why that is safe here).
///
/// # Errors
/// A sentence saying what failed: connect, handshake, timeout, or the status received.
pub fn check_tls(port: u16, timeout: Duration) -> Result<(), String> {
    let (stream, addr) = connect(port, timeout)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(LoopbackOnly(provider.signature_verification_algorithms));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let connection = ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS client: {e}"))?;
    ask(StreamOwned::new(connection, stream), addr)
}

fn connect(port: u16, timeout: Duration) -> Result<(TcpStream, SocketAddr), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    Ok((stream, addr))
}

fn ask(mut stream: impl Read + Write, addr: SocketAddr) -> Result<(), String> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .and_then(|()| stream.flush())
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let status = &head[9..12];
    if head.starts_with(b"HTTP/1.") && status == b"204" {
        Ok(())
    } else {
        Err(format!("/healthz answered {}", String::from_utf8_lossy(status)))
    }
}

/// Accepts any certificate (the peer is our own process on loopback), but still checks
/// the handshake signatures, so the TLS session itself is sound.
#[derive(Debug)]
struct LoopbackOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for LoopbackOnly {
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
