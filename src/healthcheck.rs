//! `sensor-stats healthcheck`: asks the local server's `/healthz` and reports by exit
//! code, so a container `HEALTHCHECK` needs no curl in the image.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

/// Calls `GET /healthz` on `127.0.0.1:port`; `Ok(())` when it answers 204.
///
/// # Errors
/// A sentence saying what failed: connect, timeout, or the status received.
pub fn check(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot send the request: {e}"))?;
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
