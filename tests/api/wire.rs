//! HTTP/1 on the wire: the hand-written loop that answers the hot requests
//! (`src/http/h1.rs`) against hyper, which takes the connection over at the first other
//! request. Raw sockets, so the bytes, their order and the connection's fate are seen.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// One response as it came off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    /// Header lines in order, names lowercase.
    headers: Vec<(String, String)>,
    body: String,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers but `date`, which may move between two answers.
    fn without_date(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect()
    }
}

/// Reads `n` responses (each with a `content-length`, or none for a 204) from `stream`.
async fn read_responses(stream: &mut TcpStream, n: usize) -> Vec<Wire> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = response.parse(&buf) {
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            if buf.len() >= head + length {
                out.push(Wire {
                    status: response.code.unwrap(),
                    headers,
                    body: String::from_utf8(buf[head..head + length].to_vec()).unwrap(),
                });
                buf.drain(..head + length);
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("answered before the test's own deadline")
            .unwrap();
        assert!(read > 0, "closed after {} of {n} answers", out.len());
        buf.extend_from_slice(&chunk[..read]);
    }
    assert!(buf.is_empty(), "bytes after the last answer: {buf:?}");
    out
}

/// Whether the server closes `stream` (EOF) within a few seconds, reading nothing more.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn post(body: &str, extra: &str) -> String {
    format!(
        "POST /data HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn one(sensor: &str, value: f64) -> String {
    format!(r#"[{{"sensor":"{sensor}","timestamp":"2021-01-01T00:00:00Z","value":{value}}}]"#)
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_handover_to_hyper() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    // Two hot requests, then one the loop hands over (`/livez`), then two hot ones that
    // hyper serves, all in one write.
    let requests = [
        post(&one("pipe", 1.0), ""),
        "GET /statistics/pipe HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
        "GET /livez HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
        post(&one("pipe", 3.0), ""),
        "GET /statistics/pipe HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
    ]
    .concat();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let answers = read_responses(&mut stream, 5).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [204, 200, 204, 204, 200]);
    assert_eq!(
        answers[1].body,
        r#"{"last_measurement":"2021-01-01T00:00:00+00:00","count":1,"avg":1.0}"#
    );
    assert_eq!(
        answers[4].body,
        r#"{"last_measurement":"2021-01-01T00:00:00+00:00","count":2,"avg":2.0}"#
    );
    // The connection stays open for more.
    stream
        .write_all(b"GET /statistics/pipe HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_responses(&mut stream, 1).await[0].status, 200);
}

#[tokio::test]
async fn the_loop_answers_byte_for_byte_as_hyper_does() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    let id = "x-request-id: same-id\r\n";
    let bad = r#"[{"sensor":"s","timestamp":"2021-02-30T00:00:00Z","value":1}]"#;
    let batch = [
        post(&one("bytes", 2.5), id),
        format!("GET /statistics/bytes HTTP/1.1\r\nhost: x\r\n{id}\r\n"),
        format!(
            "GET /statistics/{} HTTP/1.1\r\nhost: x\r\n{id}\r\n",
            "x".repeat(300)
        ),
        post(bad, id),
    ]
    .concat();
    // Served by the loop, then (after a request it hands over) by hyper.
    let sent = format!("{batch}GET /livez HTTP/1.1\r\nhost: x\r\n\r\n{batch}");
    stream.write_all(sent.as_bytes()).await.unwrap();
    let answers = read_responses(&mut stream, 9).await;
    let (by_loop, by_hyper) = (&answers[..4], &answers[5..]);
    for (ours, theirs) in by_loop.iter().zip(by_hyper) {
        assert_eq!(ours.status, theirs.status);
        assert_eq!(ours.without_date(), theirs.without_date());
        assert!(ours.header("date").is_some());
    }
    assert_eq!(
        by_loop[1].body,
        by_hyper[1].body.replace("\"count\":2", "\"count\":1")
    );
    assert_eq!(by_loop[2].body, by_hyper[2].body, "an invalid id");
    assert_eq!(by_loop[3].body, by_hyper[3].body, "an invalid batch");
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [204, 200, 400, 400, 204, 204, 200, 400, 400]);
    assert!(by_loop[3].body.contains(r#""index":0"#), "{}", by_loop[3].body);
    // Only the two good batches were applied.
    assert_eq!(app.statistics("bytes").await["count"], 2);
    assert_eq!(app.statistics("s").await["count"], 0);
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_is_read_whole_and_the_next_request_follows() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    let body = format!(
        "[{}]",
        (0..200)
            .map(|i| format!(
                r#"{{"sensor":"piece","timestamp":"2021-01-01T00:00:{:02}Z","value":{i}}}"#,
                i % 60
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let request = post(&body, "");
    let bytes = request.as_bytes();
    // The head in two pieces, the body in three; the next request right behind it.
    for piece in [
        &bytes[..10],
        &bytes[10..90],
        &bytes[90..500],
        &bytes[500..bytes.len() - 7],
    ] {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tail = format!(
        "{}GET /statistics/piece HTTP/1.1\r\nhost: x\r\n\r\n",
        &request[bytes.len() - 7..]
    );
    stream.write_all(tail.as_bytes()).await.unwrap();
    let answers = read_responses(&mut stream, 2).await;
    assert_eq!(answers[0].status, 204);
    assert!(answers[1].body.contains(r#""count":200"#), "{}", answers[1].body);
}

#[tokio::test]
async fn a_refused_post_whose_body_has_not_arrived_is_answered_and_the_connection_closed() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /data HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\ncontent-length: 500\r\n\r\n[",
        )
        .await
        .unwrap();
    let answer = read_responses(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 415);
    let error: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("text/csv"), "{error}");
    assert!(
        closes(&mut stream).await,
        "the rest of the body would be read as a request"
    );

    // With its body here, the body is skipped and the connection serves on.
    let mut stream = connect(&app).await;
    let refused = post(&one("refused", 1.0), "").replace("application/json", "text/csv");
    let next = "GET /statistics/refused HTTP/1.1\r\nhost: x\r\n\r\n";
    stream
        .write_all(format!("{refused}{next}").as_bytes())
        .await
        .unwrap();
    let answers = read_responses(&mut stream, 2).await;
    assert_eq!((answers[0].status, answers[1].status), (415, 200));
    assert!(answers[1].body.contains(r#""count":0"#), "{}", answers[1].body);
}

#[tokio::test]
async fn a_stalled_upload_is_408_and_the_connection_closed_with_nothing_applied() {
    let app = spawn_app_with(|c| c.request_timeout = Duration::from_millis(200)).await;
    let mut stream = connect(&app).await;
    let request = post(&one("stalled", 1.0), "");
    stream
        .write_all(&request.as_bytes()[..request.len() - 5])
        .await
        .unwrap();
    let answer = read_responses(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 408);
    let error: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("too long"), "{error}");
    assert!(closes(&mut stream).await);
    assert_eq!(app.statistics("stalled").await["count"], 0);
}

#[tokio::test]
async fn requests_the_loop_does_not_take_are_served_by_hyper_from_the_first_byte() {
    let app = spawn_app().await;
    // HTTP/1.0, a query, chunked: each on a fresh connection, so hyper sees it first.
    let cases = [
        ("GET /statistics/old HTTP/1.0\r\n\r\n", 200),
        ("GET /statistics/q?x=1 HTTP/1.1\r\nhost: x\r\n\r\n", 200),
        (
            "POST /data HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
            204,
        ),
    ];
    for (request, status) in cases {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_responses(&mut stream, 1).await.remove(0);
        assert_eq!(answer.status, status, "{request:?}: {answer:?}");
    }
    // Bytes that are not HTTP get hyper's 400 and a closed connection.
    let mut stream = connect(&app).await;
    stream.write_all(b"\x16\x03\x01 not http\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test]
async fn while_draining_the_loop_answers_with_connection_close_and_closes() {
    let app = spawn_app().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /statistics/d HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_responses(&mut stream, 1).await[0].header("connection"), None);
    app.lifecycle.start_draining();
    stream
        .write_all(b"GET /statistics/d HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_responses(&mut stream, 1).await.remove(0);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closes(&mut stream).await);
}
