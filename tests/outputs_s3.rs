//! A fleet whose outputs live in an S3-compatible bucket (`--outputs s3://…`): a `weft worker`
//! and a `weft serve --queue` API server with data folders of their own, on the throwaway
//! PostgreSQL `make test` starts (scripts/postgres.sh) and a real S3 server, PyPI's moto
//! (`moto_server`, installed into .venv by scripts/setup.sh from scripts/requirements-setup.txt).
//! The worker stores each run's images in the bucket; the API server serves them from it
//! (`/api/outputs`, ComfyUI's `/view`); what an earlier try of a run left in the bucket is gone.
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{repo, urlopen, PgSchema, ServerProcess};

const BUCKET: &str = "weft-outputs-test";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft"))
}

/// A moto S3 server on a free loopback port; stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Self {
        let moto = repo().join(".venv/bin/moto_server");
        assert!(
            moto.exists(),
            "{} is missing: scripts/setup.sh installs PyPI's moto[server] into .venv \
             (scripts/requirements-setup.txt)",
            moto.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", moto.display()));
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 120 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        urlopen(self.port, method, path, body)
    }

    /// The keys under `prefix` in the bucket, from S3's ListObjectsV2.
    fn keys(&self, prefix: &str) -> BTreeSet<String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{BUCKET}?list-type=2&prefix={prefix}"),
            None,
        );
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "listing the bucket: {text}");
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tests take turns: each names its own S3 server in the environment its children inherit.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The AWS_* settings object_store reads, naming the moto server on `port`.
fn aws_environment(port: u16) {
    for (key, value) in [
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "weft-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "weft-test".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
    ] {
        std::env::set_var(key, value);
    }
}

/// This test file's schema in the test server's database.
fn own_schema() -> PgSchema {
    PgSchema::new(format!("outputs_s3_{}", std::process::id()))
}

/// `weft worker` with `args`; its stderr lines go to the returned channel. Killed by the caller.
fn worker(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .arg("worker")
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft worker starts");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

/// Lines from `lines` until one contains `wanted` (bounded); all lines seen if it never came.
fn wait_line(
    lines: &mpsc::Receiver<String>,
    wanted: &str,
    timeout: Duration,
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(wanted) {
            return Ok(());
        }
        seen.push(line);
    }
    Err(seen)
}

/// A moto server with the test bucket made, named in the AWS_* environment.
fn bucket() -> S3Server {
    let s3 = S3Server::start();
    aws_environment(s3.port);
    let (status, body) = s3.request("PUT", &format!("/{BUCKET}"), None);
    assert_eq!(
        status,
        200,
        "creating the bucket: {}",
        String::from_utf8_lossy(&body)
    );
    s3
}

/// `weft serve` as a fleet API server on `queue`, its outputs in `s3://BUCKET/prefix`, the
/// repository's models, its own data folder, then `extra`.
fn api_on_bucket(dir: &Path, queue: &str, prefix: &str, extra: &[&str]) -> ServerProcess {
    let models = repo().join("models").to_string_lossy().into_owned();
    let outputs = format!("s3://{BUCKET}/{prefix}");
    let mut args = vec![
        "--queue",
        queue,
        "--outputs",
        &outputs,
        "--data",
        "api-data",
        "--models",
        &models,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(bin(), dir, &args)
}

/// `weft worker` NAME on `queue`, its outputs in `s3://BUCKET/prefix`, its own data folder,
/// then `extra`; waits (two minutes at most) until it takes runs, and drains its log after.
fn worker_on_bucket(dir: &Path, queue: &str, prefix: &str, name: &str, extra: &[&str]) -> Child {
    let models = repo().join("models").to_string_lossy().into_owned();
    let outputs = format!("s3://{BUCKET}/{prefix}");
    let data = format!("{name}-data");
    let mut args = vec![
        "--queue",
        queue,
        "--outputs",
        &outputs,
        "--data",
        &data,
        "--models",
        &models,
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    let (mut child, log) = worker(dir, &args);
    if let Err(seen) = wait_line(&log, "takes runs from", Duration::from_secs(120)) {
        let _ = child.kill();
        panic!("weft worker {name} did not start: {seen:#?}");
    }
    // Its log keeps flowing: drained so the worker never blocks on a full pipe.
    std::thread::spawn(move || while log.recv().is_ok() {});
    child
}

/// A temp project with one small tiny-shapes workflow (64x64, 3 steps).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let base = std::fs::read_to_string(repo().join("workflows/txt2img.yaml")).unwrap();
    let few_steps = base.replace("steps: 20", "steps: 3");
    assert_ne!(few_steps, base, "txt2img.yaml has 'steps: 20'");
    std::fs::write(workflows.join("circles.yaml"), few_steps).unwrap();
    dir
}

#[test]
#[ignore = "needs PostgreSQL, moto and models/converted from set-up; `make test` runs it"]
fn a_workers_images_in_a_bucket_are_served_by_an_api_server_that_never_saw_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = own_schema();
    let s3 = bucket();
    // What a dead worker's earlier try of runs 1-3 stored: gone once the runs are claimed.
    for run in 1..=3 {
        let (status, _) = s3.request(
            "PUT",
            &format!("/{BUCKET}/fleet/{run}/left-by-a-dead-worker.png"),
            Some(b"half an image"),
        );
        assert_eq!(status, 200);
    }

    let dir = project();
    let api = api_on_bucket(dir.path(), &schema.url, "fleet", &[]);
    let mut worker_child = worker_on_bucket(dir.path(), &schema.url, "fleet", "worker", &[]);

    let http = api.http();
    let ids: Vec<u64> = (0..2)
        .map(|i| http.queue_run(&json!({"workflow": "circles", "set": {"sample.seed": 40 + i}})))
        .collect();
    assert!(
        ids.iter().all(|id| *id <= 3),
        "the fresh schema's first runs are 1-3, where the stale objects were put: {ids:?}"
    );
    for &id in &ids {
        let deadline = Instant::now() + Duration::from_secs(300);
        let run = loop {
            let run = http.get(&format!("/api/runs/{id}")).json();
            if run["status"] == "succeeded" {
                break run;
            }
            assert!(
                run["status"] == "queued" || run["status"] == "running",
                "run {id} ended: {run}"
            );
            assert!(
                Instant::now() < deadline,
                "run {id} still {run} after 300 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let urls: Vec<&str> = run["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls.len(), 1, "run {id}: {run}");
        let url = urls[0];
        let key = url.strip_prefix("/api/outputs/").unwrap();
        assert!(key.starts_with(&format!("{id}/")), "{url}");

        // In the bucket: exactly the run's image, the stale object gone.
        let keys = s3.keys(&format!("fleet/{id}/"));
        assert_eq!(keys, BTreeSet::from([format!("fleet/{key}")]), "run {id}");
        // The worker rendered it in its own folder; the API server has no copy, so what it
        // serves came from the bucket (moto refuses unsigned reads of objects).
        let local = dir.path().join("worker-data/outputs").join(key);
        let stored = std::fs::read(&local).unwrap();
        assert!(
            stored.starts_with(b"\x89PNG"),
            "{} is a PNG",
            local.display()
        );
        assert!(!dir.path().join("api-data/outputs").join(key).exists());

        // Served from the bucket: weft's route and ComfyUI's /view.
        let served = http.get(url);
        assert_eq!(served.status, 200, "{url}");
        assert_eq!(served.body, stored, "{url}");
        let (folder, name) = key.rsplit_once('/').unwrap();
        let view = http.get(&format!(
            "/view?filename={name}&subfolder={folder}&type=output"
        ));
        assert_eq!(view.status, 200, "/view of {key}");
        assert_eq!(view.body, stored);
        let stale = http.get(&format!("/api/outputs/{id}/left-by-a-dead-worker.png"));
        assert_eq!(stale.status, 404, "run {id}'s stale object is not served");
    }
    // Untouched: a run id nobody claimed keeps its object; a missing file is a 404, a
    // path out of the folder a 400.
    assert_eq!(
        s3.keys("fleet/3/").len(),
        usize::from(!ids.contains(&3)),
        "only claimed runs' folders are emptied"
    );
    assert_eq!(
        http.get(&format!("/api/outputs/{}/nope.png", ids[0]))
            .status,
        404
    );
    assert_eq!(
        http.get("/view?filename=nope.png&subfolder=1&type=output")
            .status,
        404
    );
    assert_eq!(
        http.get(&format!("/api/outputs/{}/..%2F..%2Fsecret", ids[0]))
            .status,
        400
    );

    let _ = worker_child.kill();
    let _ = worker_child.wait();
}

#[test]
#[ignore = "needs PostgreSQL, moto and models/converted from set-up; `make test` runs it"]
fn a_bucket_that_cannot_be_reached_stops_a_worker_at_start_with_its_name() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = own_schema();
    let s3 = S3Server::start();
    aws_environment(s3.port);
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let (mut child, lines) = worker(
        dir.path(),
        &[
            "--queue",
            &schema.url,
            "--outputs",
            "s3://no-such-bucket/x",
            "--models",
            &models,
        ],
    );
    let status = child.wait().unwrap();
    // The reader thread ends at the exited worker's end of stderr.
    let log: Vec<String> = lines.iter().collect();
    assert!(!status.success(), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("s3://no-such-bucket/x")),
        "the error names the bucket: {log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("takes runs from")),
        "{log:#?}"
    );

    // A lone `weft serve` has no --outputs (its worker is itself).
    let lone = Command::new(bin())
        .args([
            "serve",
            "--port",
            "0",
            "--outputs",
            "s3://b/x",
            "--models",
            &models,
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!lone.status.success());
    let text = String::from_utf8_lossy(&lone.stderr);
    assert!(text.contains("--outputs is for a fleet"), "{text}");
}

/// A multipart POST as the ComfyUI frontend's mask editor sends it: `(field, file name, bytes)`.
fn post_multipart(port: u16, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let boundary = "weft-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if let Some(file) = file {
            body.extend(format!("; filename=\"{file}\"\r\nContent-Type: image/png").bytes());
        }
        body.extend(b"\r\n\r\n");
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[..split])
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, raw[split + 4..].to_vec())
}

/// Where `cell` lies in `sheet`, pixel for pixel, if anywhere.
fn find_in(sheet: &image::RgbImage, cell: &image::RgbImage) -> Option<(u32, u32)> {
    let (w, h) = cell.dimensions();
    for y in 0..=sheet.height().saturating_sub(h) {
        for x in 0..=sheet.width().saturating_sub(w) {
            let same = (0..h).all(|dy| {
                (0..w).all(|dx| sheet.get_pixel(x + dx, y + dy) == cell.get_pixel(dx, dy))
            });
            if same {
                return Some((x, y));
            }
        }
    }
    None
}

/// What a fleet's API server serves besides a run's own images reads the bucket too, though
/// the runs were rendered by two workers that share nothing with it: a sweep's contact sheet
/// (its cells taken from the bucket, the sheet stored in it), the mask editor's upload of an
/// output, ComfyUI's output file list, and a SaveImageWebsocket image as the binary frame on
/// the API server's ComfyUI socket while its node executes.
#[test]
#[ignore = "needs PostgreSQL, moto and models/converted from set-up; `make test` runs it"]
fn a_sweeps_grid_a_mask_of_an_output_the_file_list_and_websocket_images_come_from_the_bucket() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = PgSchema::new(format!("outputs_s3_more_{}", std::process::id()));
    let s3 = bucket();

    let dir = project();
    let api = api_on_bucket(
        dir.path(),
        &schema.url,
        "fleet",
        &["--comfy-model", "v1-5-pruned-emaonly.ckpt=tiny-shapes"],
    );
    let workers: Vec<Child> = ["w-a", "w-b"]
        .into_iter()
        .map(|name| {
            worker_on_bucket(
                dir.path(),
                &schema.url,
                "fleet",
                name,
                &["--cache-affinity", "0"],
            )
        })
        .collect();
    let http = api.http();

    // 1. A sweep of four cells; its sheet is composed from the bucket and stored in it.
    let reply = http.post(
        "/api/runs",
        &json!({"workflow": "circles", "sweep": {"axes": {"sample.seed": [1, 2, 3, 4]}}}),
    );
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let sweep_id = reply.json()["sweep"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let sweep = loop {
        let sweep = http.get(&format!("/api/sweeps/{sweep_id}")).json();
        if !sweep["grid"].is_null() {
            break sweep;
        }
        assert!(Instant::now() < deadline, "no grid after 300 s: {sweep}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sweep["status"], "succeeded", "{sweep}");
    let grid_url = sweep["grid"].as_str().unwrap();
    assert_eq!(grid_url, format!("/api/outputs/sweeps/{sweep_id}/grid.png"));
    let grid = http.get(grid_url);
    assert_eq!(
        grid.status, 200,
        "the API server serves the sheet from the bucket"
    );
    assert!(s3
        .keys("fleet/sweeps/")
        .contains(&format!("fleet/sweeps/{sweep_id}/grid.png")));
    let sheet = image::load_from_memory(&grid.body).unwrap().to_rgb8();
    let mut cell_keys = Vec::new();
    for cell in sweep["cells"].as_array().unwrap() {
        let url = cell["image"].as_str().unwrap_or_else(|| panic!("{sweep}"));
        let image = http.get(url);
        assert_eq!(image.status, 200, "{url}");
        let image = image::load_from_memory(&image.body).unwrap().to_rgb8();
        assert!(
            find_in(&sheet, &image).is_some(),
            "cell {url} is drawn in the sheet (not a grey box)"
        );
        cell_keys.push(url.strip_prefix("/api/outputs/").unwrap().to_string());
    }
    for key in &cell_keys {
        assert!(
            !dir.path().join("api-data/outputs").join(key).exists(),
            "{key}"
        );
    }

    // 2. The mask editor opens an output (cell 0's image) and uploads its mask.
    let (run, file) = cell_keys[0].split_once('/').unwrap();
    let mut mask = image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 255]));
    mask.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
    let mut mask_png = Vec::new();
    mask.write_to(
        &mut std::io::Cursor::new(&mut mask_png),
        image::ImageFormat::Png,
    )
    .unwrap();
    let original = json!({"filename": file, "subfolder": run, "type": "output"}).to_string();
    let (status, reply) = post_multipart(
        api.port,
        "/comfy/api/upload/mask",
        &[
            ("image", Some("clipspace-mask.png"), &mask_png),
            ("original_ref", None, original.as_bytes()),
            ("type", None, b"input"),
            ("subfolder", None, b"clipspace"),
        ],
    );
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert_eq!(status, 200, "/upload/mask of output {run}/{file}: {reply}");
    let stored = dir
        .path()
        .join("workflows/inputs/clipspace/clipspace-mask.png");
    let stored = image::open(&stored)
        .unwrap_or_else(|e| panic!("{}: {e} ({reply})", stored.display()))
        .to_rgba8();
    let cell = image::load_from_memory(&http.get(&format!("/api/outputs/{}", cell_keys[0])).body)
        .unwrap()
        .to_rgba8();
    assert_eq!(stored.get_pixel(0, 0)[3], 0, "the mask's alpha");
    assert_eq!(
        stored.get_pixel(5, 5),
        cell.get_pixel(5, 5),
        "the output's colour"
    );

    // 3. ComfyUI's output file list names the runs' files in the bucket.
    let listed = http.get("/comfy/internal/files/output").json();
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for key in &cell_keys {
        assert!(listed.contains(&key.as_str()), "{key} in {listed:?}");
    }

    // 4. SaveImageWebsocket: the image reaches the API server's ComfyUI socket as a binary
    // frame while its node executes, though a worker made it.
    let client_id = format!("outputs-s3-{}", std::process::id());
    let (mut ws, _) = tungstenite::connect(format!(
        "ws://127.0.0.1:{}/ws?clientId={client_id}",
        api.port
    ))
    .unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let prompt = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.ckpt"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red circle"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad"}},
        "3": {"class_type": "KSampler", "inputs": {"cfg": 8, "denoise": 1,
            "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
            "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal",
            "seed": 77, "steps": 3}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "save_image_websocket_node": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
    });
    let body = json!({"prompt": prompt, "client_id": client_id}).to_string();
    let (status, reply) = urlopen(api.port, "POST", "/prompt", Some(body.as_bytes()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let prompt_id = serde_json::from_slice::<serde_json::Value>(&reply).unwrap()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut current, mut frames, mut seen) = (String::new(), Vec::new(), Vec::new());
    loop {
        assert!(
            Instant::now() < deadline,
            "the prompt did not end within 300 s: {seen:?}"
        );
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "executing"
                    && message["data"]["prompt_id"] == prompt_id.as_str()
                {
                    match message["data"]["node"].as_str() {
                        Some(node) => current = node.to_string(),
                        None => break,
                    }
                }
                seen.push(message["type"].to_string());
            }
            Ok(tungstenite::Message::Binary(frame)) => {
                if current == "save_image_websocket_node" {
                    assert_eq!(&frame[..8], &[0, 0, 0, 1, 0, 0, 0, 2]);
                    frames.push(frame[8..].to_vec());
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the ComfyUI socket: {e} (after {seen:?})"),
        }
    }
    assert_eq!(frames.len(), 1, "one image over the socket: {seen:?}");
    let sent: Vec<String> = s3
        .keys("fleet/")
        .into_iter()
        .filter(|k| k.contains("/websocket"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let stored = http.get(&format!(
        "/api/outputs/{}",
        sent[0].strip_prefix("fleet/").unwrap()
    ));
    assert_eq!(stored.status, 200);
    assert_eq!(frames[0], stored.body, "the frame holds the stored image");

    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
}

/// Median and 90th percentile of `times`, in milliseconds.
fn median_p90(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.9))
}

/// Images of a few sizes go into the bucket as a worker stores them (object_store's PUT) and
/// come back as a worker or an API server reads them (GET), and through an API server's
/// `/api/outputs` (HTTP on loopback, then the bucket): each byte for byte. Prints the
/// latencies (`-- --nocapture`): moto on loopback on this machine, not a real S3's.
#[test]
#[ignore = "needs PostgreSQL and moto from set-up; `make test` runs it"]
fn images_of_several_sizes_round_trip_through_the_bucket_and_an_api_server() {
    use weft::server::outputs::{BlockingOutputs, OutputsSetting};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = PgSchema::new(format!("outputs_s3_sizes_{}", std::process::id()));
    let _s3 = bucket();
    let setting = OutputsSetting::parse(&format!("s3://{BUCKET}/bench")).unwrap();
    let bucket = BlockingOutputs::new(std::sync::Arc::new(setting.open().unwrap())).unwrap();
    let dir = project();
    let api = api_on_bucket(dir.path(), &schema.url, "bench", &[]);
    let http = api.http();
    // PNGs do not compress further: random bytes stand for them.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    eprintln!("size KiB | PUT median/p90 ms | GET median/p90 ms | /api/outputs median/p90 ms (moto on loopback)");
    for (kib, tries) in [(64usize, 30usize), (512, 20), (2048, 10), (8192, 6)] {
        let (mut puts, mut gets, mut serves) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..tries {
            let bytes = noise(kib * 1024);
            let key = format!("900/size{kib}-{i}.png");
            let started = Instant::now();
            bucket.put(&key, bytes.clone().into()).unwrap();
            puts.push(started.elapsed());
            let started = Instant::now();
            let back = bucket.get(&key).unwrap();
            gets.push(started.elapsed());
            assert!(back == bytes, "{key} reads back as stored");
            let started = Instant::now();
            let served = http.get(&format!("/api/outputs/{key}"));
            serves.push(started.elapsed());
            assert_eq!(served.status, 200, "{key}");
            assert!(served.body == bytes, "{key} is served as stored");
        }
        let ((pm, p9), (gm, g9), (sm, s9)) =
            (median_p90(puts), median_p90(gets), median_p90(serves));
        eprintln!("{kib:8} | {pm:8.2} / {p9:6.2} | {gm:8.2} / {g9:6.2} | {sm:8.2} / {s9:6.2}");
    }
}
