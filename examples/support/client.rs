//! Shared by the load test and the HTTP profile: one keep-alive HTTP/1.1 client
//! connection (hyper, on a `LocalSet`) and a free port on 127.0.0.1. Also included by
//! `tests/allocations.rs`; each includer uses part of it.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode, client::conn::http1, header::HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    /// Sent as `authorization` with every request (the load test's `+keys` stores).
    authorization: Option<HeaderValue>,
}

impl Client {
    /// Connects; the connection task runs on the current `LocalSet`.
    pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        Self::connect_with(addr, None).await
    }

    /// [`Client::connect`], sending `authorization` with every request when given.
    pub(crate) async fn connect_with(
        addr: SocketAddr,
        authorization: Option<HeaderValue>,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authorization,
        })
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(&mut self, mut req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
        if let Some(value) = &self.authorization {
            req.headers_mut()
                .insert(hyper::header::AUTHORIZATION, value.clone());
        }
        self.sender.ready().await.expect("connection usable");
        let resp = self.sender.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    /// `POST /data` with a JSON body.
    pub(crate) async fn post(&mut self, body: Bytes) -> StatusCode {
        self.post_to("/data", body).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post_to(&mut self, path: &str, body: Bytes) -> StatusCode {
        let req = Request::post(path)
            .header("host", "loadtest")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        self.send(req).await.0
    }

    /// `GET path`.
    pub(crate) async fn get(&mut self, path: &str) -> (StatusCode, Bytes) {
        let req = Request::get(path)
            .header("host", "loadtest")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }

    /// The `count` of a sensor's statistics.
    pub(crate) async fn count(&mut self, sensor: &str) -> u64 {
        let (status, body) = self.get(&format!("/statistics/{sensor}")).await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["count"].as_u64().unwrap()
    }
}
