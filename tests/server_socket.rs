//! `weft serve`'s accept loop on a real loopback socket, in-process: half-sent request heads
//! are closed after the header timeout, a request without Host cannot queue a run, a
//! WebSocket client that never reads is dropped once it is its byte bound behind, and a
//! megabyte of diagnostics is not broadcast inline.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use weft::server::events::ServerEvent;
use weft::server::{app, listen, loopback_hosts, Config};

#[allow(dead_code)] // each test file uses part of it
mod common;
use common::Fixture;

/// A server on a free loopback port (its Host names allowed beside `common::HOST`); `adjust`
/// changes the config.
async fn serving(adjust: impl FnOnce(&mut Config)) -> (Fixture, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let fixture = Fixture::start(Some("application/json"), |config| {
        config.allowed_hosts.extend(loopback_hosts(address.port()));
        std::fs::write(
            config.workflows_dir.join("chain.yaml"),
            weft_test_support::add_int_chain(&[10]),
        )
        .unwrap();
        adjust(config);
    });
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let timeout = fixture.state.config.header_timeout;
    tokio::spawn(listen::serve(
        listener,
        app(fixture.state.clone()),
        timeout,
        std::future::pending(),
    ));
    (fixture, address)
}

/// Everything the server sends until it closes, or `None` if it is still open at `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let reading = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, reading).await.ok()?;
    Some(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_heads_are_closed_after_the_header_timeout() {
    let (_f, address) = serving(|c| c.header_timeout = Duration::from_millis(300)).await;
    let host = format!("Host: {address}\r\n");
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET /api/nodes HTTP/1.1\r\n{host}X-Slow: ").as_bytes())
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    for stream in &mut slow {
        read_until_closed(stream, Duration::from_secs(5))
            .await
            .expect("a half-sent head is closed, not kept open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A whole request on a fresh connection is still served.
    let mut whole = TcpStream::connect(address).await.unwrap();
    whole
        .write_all(format!("GET /api/runs HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut whole, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_cannot_queue_a_run() {
    let (f, address) = serving(|_| {}).await;
    let body = json!({"workflow": "chain"}).to_string();
    for version in ["HTTP/1.0", "HTTP/1.1"] {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let request = format!(
            "POST /api/runs {version}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains(" 400 "), "{version}: {text}");
        let json_body: Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(json_body["error"], "bad_request", "{text}");
    }
    let (_, runs) = f.call(axum::http::Method::GET, "/api/runs", None).await;
    assert_eq!(runs["runs"], json!([]), "nothing was queued");
}

/// Opens `/ws` on a socket with a small receive buffer and reads only the 101 answer.
async fn ws_handshake(address: SocketAddr, receive_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let mut stream = socket.connect(address).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// The next text frame's payload (server frames are unmasked and, here, unfragmented).
async fn next_text(stream: &mut TcpStream) -> String {
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.unwrap();
        let length = match head[1] & 0x7f {
            126 => u64::from(stream.read_u16().await.unwrap()),
            127 => stream.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload).await.unwrap();
        if head[0] & 0x0f == 1 {
            return String::from_utf8(payload).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_never_reads_is_dropped_after_its_byte_bound() {
    let bound = 256 << 10;
    let (f, address) = serving(|c| c.client_bytes = bound).await;
    let mut stream = ws_handshake(address, Some(4096)).await;
    // The server subscribes as the connection upgrades; give it that moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let filler = "x".repeat(1000);
    let message_count = 8000;
    for i in 0..message_count {
        f.state.hub.send(ServerEvent::Notice {
            run: 1,
            node: format!("n{i}"),
            message: filler.clone(),
        });
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let sent = message_count * 1050;
    // Time for the writer to stall and see how far behind the client is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("a client that did not read is dropped, not kept with a backlog");
    eprintln!(
        "a never-reading client got {} of {sent} bytes before it was dropped",
        received.len()
    );
    assert!(
        received.len() < 2 << 20 && received.len() < sent / 4,
        "it got {} of {sent} bytes before the server closed it",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_of_workflow_diagnostics_is_not_broadcast_inline() {
    let (f, address) = serving(|_| {}).await;
    let mut stream = ws_handshake(address, None).await;
    let first: Value = serde_json::from_str(&next_text(&mut stream).await).unwrap();
    assert_eq!(first["event"], "queue");
    // 5,000 nodes of an unknown type: a diagnostic each, about a megabyte in all.
    let mut text = String::from("weft: 1\nnodes:\n");
    for i in 0..5000 {
        text.push_str(&format!("  n{i}:\n    type: NoSuchNodeTypeAnywhere\n"));
    }
    std::fs::write(f.dir.path().join("workflows/big.yaml"), text).unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = next_text(&mut stream).await;
            let v: Value = serde_json::from_str(&frame).unwrap();
            if v["event"] == "workflow_invalid" && v["name"] == "big" {
                return (frame.len(), v);
            }
        }
    })
    .await
    .expect("the watcher announces the invalid workflow");
    let (bytes, message) = announced;
    assert!(bytes <= 64 << 10, "{bytes} bytes broadcast");
    assert_eq!(message["omitted"]["url"], "/api/workflows/big", "{message}");
    assert!(message["omitted"]["bytes"].as_u64().unwrap() > 64 << 10);
    let (_, whole) = f
        .call(axum::http::Method::GET, "/api/workflows/big", None)
        .await;
    assert_eq!(whole["diagnostics"].as_array().unwrap().len(), 5000);
}
