//! A `weft serve` process on a free loopback port and small blocking clients for it (HTTP/1.1
//! over a TcpStream, WebSocket with tungstenite), shared by the server tests, the load test
//! and the benchmark.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    pub token: Option<String>,
    pub log: Receiver<String>,
}

impl ServerProcess {
    /// Starts `bin serve --port 0 <args>` in `cwd` and waits for its "listening on" line.
    pub fn start(bin: &Path, cwd: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .arg("serve")
            .args(["--port", "0", "--device", "cpu"])
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weft serve starts");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = log.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weft serve did not start: {seen:#?}");
            };
            if line.len() == 48 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                token = Some(line.clone());
            }
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split('/').next().unwrap();
                let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                return Self {
                    child,
                    port,
                    token,
                    log,
                };
            }
            seen.push(line);
        }
    }

    pub fn http(&self) -> Http {
        Http {
            port: self.port,
            token: self.token.clone(),
        }
    }

    pub fn ws(&self) -> Ws {
        Ws::connect(self.port, self.token.as_deref())
    }

    /// Resident memory now and at its peak, in KiB (from /proc).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone)]
pub struct Http {
    pub port: u16,
    pub token: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Http {
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Reply { status, body }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(body))
    }

    /// POST /api/runs, which must answer 202 (the reply's body in the panic if not); the
    /// queued run's id.
    pub fn queue_run(&self, body: &Value) -> u64 {
        let reply = self.post("/api/runs", body);
        assert_eq!(
            reply.status,
            202,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()["id"].as_u64().unwrap()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
    out
}

pub struct Ws {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub fn connect(port: u16, token: Option<&str>) -> Self {
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        let (socket, _) =
            tungstenite::connect(format!("ws://127.0.0.1:{port}/ws{query}")).expect("ws connect");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_nodelay(true).unwrap();
        }
        Self { socket }
    }

    /// The next JSON message, or None when `timeout` passes first.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.next_text(timeout)
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// The next text frame as it came, or None when `timeout` passes first.
    pub fn next_text(&mut self, timeout: Duration) -> Option<String> {
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = self.socket.get_ref() {
            s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                .unwrap();
        }
        loop {
            match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => return Some(text.to_string()),
                Ok(tungstenite::Message::Close(frame)) => {
                    panic!("the server closed the socket: {frame:?}")
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("websocket: {e}"),
            }
        }
    }

    /// Messages until `stop` says so (included), failing after `timeout`.
    pub fn until(&mut self, timeout: Duration, mut stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out; saw {} messages, the last: {:#?}",
                    seen.len(),
                    seen.iter().rev().take(5).collect::<Vec<_>>()
                );
            }
            if let Some(m) = self.next(left) {
                let done = stop(&m);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
    }

    /// Events of run `id` up to its `run_finished`.
    pub fn run(&mut self, id: u64, timeout: Duration) -> Vec<Value> {
        self.until(timeout, |m| m["event"] == "run_finished" && m["run"] == id)
            .into_iter()
            .filter(|m| m["run"] == id)
            .collect()
    }
}

/// The repository root (models, workflows).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A chain of `n` trivial nodes: n0 (Int) -> n1 .. n{n-2} (AddInt) -> show (ShowInt).
pub fn chain_yaml(n: usize) -> String {
    let mut s = String::from("weft: 1\nnodes:\n  n0:\n    type: Int\n    value: 0\n");
    for i in 1..n - 1 {
        let from = if i == 1 {
            "$n0.value".to_string()
        } else {
            format!("$n{}.sum", i - 1)
        };
        s.push_str(&format!(
            "  n{i}:\n    type: AddInt\n    a: {from}\n    b: 1\n"
        ));
    }
    s.push_str(&format!(
        "  show:\n    type: ShowInt\n    value: $n{}.sum\n",
        n - 2
    ));
    s
}

/// `urllib.request.urlopen`: one connection per request; a body goes with urllib's default
/// content type.
pub fn urlopen(port: u16, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Python-urllib/3.12\r\nConnection: close\r\n");
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(b) = body {
        stream.write_all(b).unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut data = &body[..];
        while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend(&data[end + 2..end + 2 + size]);
            data = &data[end + 4 + size..];
        }
        body = out;
    }
    (status, body)
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `weft serve` (the binary `bin`) on the repository's models in `dir` (two CPU threads), with
/// ComfyUI checkpoint names mapped by `comfy_model` (`NAME=WEFT`, or `*=WEFT` for every name).
pub fn start_comfy_server(bin: &Path, dir: &Path, comfy_model: &str) -> ServerProcess {
    let models = repo().join("models").to_string_lossy().into_owned();
    ServerProcess::start(
        bin,
        dir,
        &[
            "--models",
            &models,
            "--threads",
            "2",
            "--comfy-model",
            comfy_model,
        ],
    )
}

/// The test PostgreSQL server (WEFT_TEST_POSTGRES, set by scripts/postgres.sh, which `make
/// test` runs), or a panic saying how to get one.
pub fn test_postgres() -> String {
    std::env::var("WEFT_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| {
            panic!("WEFT_TEST_POSTGRES is not set: this test needs a PostgreSQL server; `make test` (scripts/test.sh) starts a throwaway one with scripts/postgres.sh")
        })
}

/// `admin`'s connection string with every connection working in `schema` (libpq's `options`),
/// in either spelling libpq takes (URL or `key=value`).
pub fn postgres_url_in_schema(admin: &str, schema: &str) -> String {
    let options = format!("-c search_path={schema}");
    if admin.contains("://") {
        let join = if admin.contains('?') { '&' } else { '?' };
        format!(
            "{admin}{join}options={}",
            options.replace(' ', "%20").replace('=', "%3D")
        )
    } else {
        format!("{admin} options='{options}'")
    }
}

/// A schema of its own in the test server's database (so tests sharing the server do not see
/// each other's runs), dropped afterwards.
pub struct PgSchema {
    /// The connection string that works in this schema.
    pub url: String,
    pub name: String,
    /// The server's own connection string (outside the schema).
    pub admin: String,
}

impl PgSchema {
    /// `name` must be a plain identifier, unique among the tests running at once.
    pub fn new(name: String) -> Self {
        let admin = test_postgres();
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to WEFT_TEST_POSTGRES ({admin}): {e}"));
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .unwrap();
        Self {
            url: postgres_url_in_schema(&admin, &name),
            admin,
            name,
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

/// A started `weft worker` and the stderr lines it has written so far.
pub type WorkerLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts `bin worker ARGS` in `dir` and waits (two minutes at most) until it says it takes
/// runs; panics with its log if it does not. Its stderr lines keep arriving in the log.
pub fn start_worker<S: AsRef<std::ffi::OsStr>>(
    bin: &Path,
    dir: &Path,
    args: impl IntoIterator<Item = S>,
) -> (Child, WorkerLog) {
    let mut child = Command::new(bin)
        .arg("worker")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft worker starts");
    let log = WorkerLog::default();
    let (ready_tx, ready) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("takes runs from") {
                let _ = ready_tx.send(());
            }
            lines.lock().unwrap().push(line);
        }
    });
    if ready.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = child.kill();
        panic!("weft worker did not start: {:#?}", log.lock().unwrap());
    }
    (child, log)
}
