//! `weft serve`: an axum app over the device worker. Handlers never touch tensors; they read and
//! write the workflows folder, the run store and the upload/output folders, enqueue runs and
//! wake the scheduler, whose thread feeds the device worker and fans its events out to `/ws`.
//! The contract is docs/api.md; ComfyUI's API beside it is `comfy` (docs/comfyui.md).
mod checking;
pub mod comfy;
pub mod error;
pub mod events;
mod files;
pub mod fleet;
mod guard;
pub mod hub;
pub mod import;
pub mod listen;
mod nodes;
pub mod outputs;
pub mod paths;
pub mod queue;
pub mod routing;
mod runs;
pub mod store;
mod sweeps;
pub mod typescript;
mod ui;
mod watcher;
mod workflows;
mod ws;
mod ws_send;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use weft_engine::worker::DeviceWorker;
use weft_engine::{ExecutorConfig, Registry};

use self::hub::Hub;
use self::paths::Roots;
use self::queue::Queue;
use self::store::{ConnectionString, PgStore, RunStore, SqliteStore};

/// Milliseconds since the Unix epoch (the API's time format).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Everything the server is configured with; `Config::new` gives the safe defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub workflows_dir: PathBuf,
    pub inputs_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The first model folder (created if missing).
    pub models_dir: PathBuf,
    /// Further model folders, looked in after `models_dir` in this order (`--models` again,
    /// `--model-paths`); links in every model folder are followed.
    pub more_models: Vec<weft_engine::ModelFolder>,
    /// Required on every route and on /ws when set.
    pub token: Option<String>,
    /// Host header values accepted (`host:port`), and so the origins `http://<host>`.
    pub allowed_hosts: Vec<String>,
    /// Largest JSON body, in bytes.
    pub body_limit: usize,
    /// Largest upload, in bytes.
    pub upload_limit: usize,
    /// Largest decoded upload, in pixels (width x height).
    pub max_pixels: u64,
    /// Messages a WebSocket client may fall behind before it is dropped.
    pub client_buffer: usize,
    /// Bytes of messages a WebSocket client may fall behind before it is dropped (what the
    /// kernel holds for it is bounded apart, see `ws_send::SEND_BUFFER`).
    pub client_bytes: usize,
    /// A connection whose request head has not fully arrived this long after it started is
    /// closed (slow-header clients would otherwise hold connections open).
    pub header_timeout: std::time::Duration,
    /// A `progress` event carries a preview image every this many steps (0: never).
    pub preview_every: u32,
    /// ComfyUI checkpoint names -> weft model names for `POST /prompt` (`*`: every name the
    /// models folder lacks).
    pub comfy_models: Vec<(String, String)>,
    /// How long a request may wait for its workflow to be parsed and validated before it is
    /// answered 503 `deadline_exceeded`.
    pub check_deadline: std::time::Duration,
    /// ComfyUI's frontend (the static folder of PyPI's comfyui-frontend-package), served at
    /// `/comfy/` when found.
    pub comfy_frontend: Option<PathBuf>,
    /// Keep the runs in this PostgreSQL database instead of `<data_dir>/runs.sqlite`.
    pub postgres: Option<ConnectionString>,
    /// An API server of a fleet: runs are enqueued into this PostgreSQL database and run by
    /// `weft worker`s (no device here); their events reach this server's clients.
    pub queue: Option<ConnectionString>,
    /// A fleet API server's outputs in an S3-compatible bucket (`--outputs`); without it they
    /// are served from `<data_dir>/outputs`.
    pub outputs: Option<outputs::OutputsSetting>,
}

impl Config {
    pub fn new(workflows_dir: PathBuf, data_dir: PathBuf, models_dir: PathBuf) -> Self {
        Self {
            inputs_dir: workflows_dir.join("inputs"),
            workflows_dir,
            data_dir,
            models_dir,
            more_models: Vec::new(),
            token: None,
            allowed_hosts: loopback_hosts(8188),
            body_limit: 4 << 20,
            upload_limit: 32 << 20,
            max_pixels: 40_000_000,
            client_buffer: 65_536,
            client_bytes: 4 << 20,
            header_timeout: std::time::Duration::from_secs(10),
            preview_every: 4,
            comfy_models: Vec::new(),
            check_deadline: std::time::Duration::from_secs(30),
            comfy_frontend: None,
            postgres: None,
            queue: None,
            outputs: None,
        }
    }
}

/// `localhost`, `127.0.0.1` and `[::1]` with the port.
pub fn loopback_hosts(port: u16) -> Vec<String> {
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect()
}

/// The shared state of every handler.
pub struct Server {
    pub config: Config,
    pub roots: Roots,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn RunStore>,
    pub hub: Arc<Hub>,
    pub queue: Arc<Queue>,
    /// Where runs' images are read from (`/api/outputs`, ComfyUI's `/view`).
    pub outputs: Arc<dyn outputs::OutputStore>,
    /// The same store for blocking code (composing a sweep's grid after a cancel).
    pub blocking_outputs: Arc<outputs::BlockingOutputs>,
    /// How the LoadImage node names a file in the inputs folder (relative to the working folder
    /// when the inputs folder is under it).
    pub inputs_ref: PathBuf,
    /// Serialises workflow file writes (revision check + rename as one step).
    pub write_lock: Mutex<()>,
    /// Parsed named workflows by file bytes (see runs::parse_named).
    pub parsed: Mutex<std::collections::HashMap<String, (Vec<u8>, weft_engine::Workflow)>>,
    /// ComfyUI's API: its prompts and its WebSocket clients.
    pub comfy: Arc<comfy::Comfy>,
    /// Workflow checks off the async threads, and the workflow list's remembered validity.
    checks: checking::Checks,
    _watcher: Option<watcher::Watcher>,
}

pub type AppState = Arc<Server>;

impl Server {
    /// Opens the store (marking runs a dead process left running as interrupted), starts the
    /// device worker, the scheduler and the workflows-folder watcher.
    pub fn start(config: Config, executor: ExecutorConfig) -> Result<AppState> {
        if let Some(url) = &config.queue {
            return Self::start_fleet(config.clone(), url.clone());
        }
        let outputs = config.data_dir.join("outputs");
        let mut models = vec![weft_engine::ModelFolder::whole(&config.models_dir)];
        models.extend(config.more_models.iter().cloned());
        let roots = Roots::new(
            &config.workflows_dir,
            &config.inputs_dir,
            &outputs,
            &weft_engine::ModelFolders::new(models),
        )
        .context("creating the server's folders")?;
        for warning in weft_nodes::model_files::shadowed_checkpoints(&roots.models) {
            eprintln!("weft serve: {warning}");
        }
        let store: Arc<dyn RunStore> = match &config.postgres {
            Some(url) => {
                let store = PgStore::open(url.reveal())?;
                eprintln!("weft serve: runs are kept in {}", store.place());
                Arc::new(store)
            }
            None => Arc::new(SqliteStore::open(&config.data_dir.join("runs.sqlite"))?),
        };
        let interrupted = store.interrupt_running(now_ms())?;
        if !interrupted.is_empty() {
            eprintln!(
                "weft serve: marked interrupted (the server stopped during them): {interrupted:?}"
            );
        }
        let registry = Arc::new(weft_nodes::registry());
        let executor = ExecutorConfig {
            output_dir: roots.outputs.clone(),
            models: roots.models.clone(),
            files: roots.files.clone(),
            ..executor
        };
        let device = match executor.device {
            tch::Device::Cuda(i) => format!("cuda:{i}"),
            tch::Device::Cpu => "cpu".to_string(),
            other => format!("{other:?}").to_lowercase(),
        };
        let worker = DeviceWorker::start(registry.clone(), executor);
        worker.set_preview_every(config.preview_every);
        let hub = Arc::new(Hub::new(config.client_buffer));
        let outputs = Arc::new(outputs::BlockingOutputs::new(Arc::new(
            outputs::FolderOutputs::new(roots.outputs.clone()),
        ))?);
        let queue = queue::start(
            store.clone(),
            hub.clone(),
            worker,
            roots.outputs.clone(),
            outputs.clone(),
        );
        Self::assemble(
            config,
            roots,
            registry,
            store,
            (hub, queue, outputs),
            device,
        )
    }

    /// An API server of a fleet: the store is the fleet's database; runs are left `running`
    /// at start (their workers hold leases), and no device worker starts here.
    fn start_fleet(config: Config, url: ConnectionString) -> Result<AppState> {
        let outputs = config.data_dir.join("outputs");
        let mut models = vec![weft_engine::ModelFolder::whole(&config.models_dir)];
        models.extend(config.more_models.iter().cloned());
        let roots = Roots::new(
            &config.workflows_dir,
            &config.inputs_dir,
            &outputs,
            &weft_engine::ModelFolders::new(models),
        )
        .context("creating the server's folders")?;
        let store = Arc::new(PgStore::open(url.reveal())?);
        eprintln!(
            "weft serve: an API server of a fleet: runs are queued in {} for `weft worker`s",
            store.place()
        );
        let registry = Arc::new(weft_nodes::registry());
        let planner =
            routing::KeyPlanner::new(registry.clone(), roots.models.clone(), roots.files.clone());
        store.set_key_planner(Box::new(move |workflow, target| {
            planner.heavy_keys(workflow, target)
        }));
        let hub = Arc::new(Hub::new(config.client_buffer));
        let queue = fleet::api_server_queue(store.clone(), hub.clone());
        fleet::relay_events(&store, hub.clone(), queue.clone())?;
        let store: Arc<dyn RunStore> = store;
        let outputs: Arc<dyn outputs::OutputStore> = match &config.outputs {
            Some(setting) => Arc::new(setting.open()?),
            None => Arc::new(outputs::FolderOutputs::new(roots.outputs.clone())),
        };
        eprintln!("weft serve: runs' images are read from {}", outputs.place());
        let outputs = Arc::new(outputs::BlockingOutputs::new(outputs)?);
        Self::assemble(
            config,
            roots,
            registry,
            store,
            (hub, queue, outputs),
            "fleet".to_string(),
        )
    }

    /// The parts every server has, around its store, hub and queue.
    fn assemble(
        config: Config,
        roots: Roots,
        registry: Arc<Registry>,
        store: Arc<dyn RunStore>,
        (hub, queue, blocking_outputs): (Arc<Hub>, Arc<Queue>, Arc<outputs::BlockingOutputs>),
        device: String,
    ) -> Result<AppState> {
        let comfy = comfy::Comfy::start(
            &config,
            blocking_outputs.clone(),
            device,
            store.clone(),
            &hub,
            queue.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        let watcher = watcher::Watcher::start(&roots.workflows, registry.clone(), hub.clone())
            .map_err(|e| eprintln!("weft serve: not watching the workflows folder: {e}"))
            .ok();
        let cwd = std::env::current_dir()
            .and_then(|d| d.canonicalize())
            .unwrap_or_default();
        let inputs_ref = roots
            .inputs
            .strip_prefix(&cwd)
            .map(PathBuf::from)
            .unwrap_or_else(|_| roots.inputs.clone());
        // Runs queued before a restart go on, in order.
        queue.wake();
        let checks = checking::Checks::new(config.check_deadline);
        Ok(Arc::new(Server {
            config,
            roots,
            registry,
            store,
            hub,
            queue,
            outputs: blocking_outputs.store().clone(),
            blocking_outputs,
            inputs_ref,
            write_lock: Mutex::new(()),
            parsed: Mutex::new(std::collections::HashMap::new()),
            comfy,
            checks,
            _watcher: watcher,
        }))
    }
}

/// The whole HTTP surface; tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/nodes", get(nodes::list))
        .route(
            "/api/workflows",
            get(workflows::list).post(workflows::create),
        )
        .route(
            "/api/workflows/{name}",
            get(workflows::get)
                .put(workflows::put)
                .delete(workflows::delete),
        )
        .route("/api/workflows/{name}/rename", post(workflows::rename))
        .route("/api/validate", post(workflows::validate))
        .route("/api/runs", get(runs::list).post(runs::create))
        .route("/api/runs/{id}", get(runs::get).delete(runs::delete))
        .route("/api/runs/{id}/cancel", post(runs::cancel))
        .route("/api/runs/{id}/move", post(runs::move_in_queue))
        .route("/api/sweeps", get(sweeps::latest))
        .route("/api/sweeps/{id}", get(sweeps::get))
        .route("/api/sweeps/{id}/cancel", post(sweeps::cancel))
        .route("/api/outputs/{run}/{*file}", get(files::output))
        .route("/api/uploads/{name}", get(files::upload_get))
        .route("/api/{*rest}", axum::routing::any(files::api_not_found))
        .layer(DefaultBodyLimit::max(state.config.body_limit));
    let uploads = Router::new()
        .route("/api/uploads", post(files::upload))
        .route("/api/import", post(import::import))
        .layer(DefaultBodyLimit::max(state.config.upload_limit));
    let weft_own = Router::new()
        .merge(api)
        .merge(uploads)
        .route("/ws", get(ws::upgrade))
        .layer(axum::middleware::from_fn(error::json_refusals));
    Router::new()
        .merge(weft_own)
        .merge(comfy::routes::routes(&state))
        .fallback(get(ui::asset))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// `weft serve` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback requires a token.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8188)]
    pub port: u16,
    /// The workflows folder (the source of truth; watched for changes).
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
    /// Uploaded images for LoadImage (default: <workflows>/inputs).
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// The run database and the outputs (one folder per run).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub models: crate::model_args::ModelArgs,
    /// Read the access token from this file (else WEFT_TOKEN, else one is generated when
    /// listening beyond loopback).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Another Host name clients use to reach this server (e.g. the machine's name).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// cpu, cuda or cuda:N (default: cuda when available, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Byte budget of the output cache, e.g. 512MB, 8GiB.
    #[arg(long, default_value = "8GiB")]
    pub cache_budget: String,
    /// CPU threads for tensor work.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Keep costly results (conditioning, latents, images) on disk across restarts, up to this
    /// size, in <data>/cache (0: off). Shared with `weft run --cache-dir <data>/cache`.
    #[arg(long, default_value = "10GiB", value_name = "SIZE")]
    pub disk_cache: String,
    /// Map a ComfyUI checkpoint name to a weft model for ComfyUI's `POST /prompt` and the
    /// editor's import (repeatable), e.g. v1-5-pruned-emaonly.ckpt=tiny-shapes; `*=tiny-shapes` maps every
    /// name the models folder lacks.
    #[arg(long = "comfy-model", value_name = "COMFYUI_NAME=WEFT_NAME")]
    pub comfy_models: Vec<String>,
    /// ComfyUI's frontend to serve at /comfy/: the static folder of PyPI's
    /// comfyui-frontend-package (default: WEFT_COMFY_FRONTEND, else the package in a .venv in
    /// the working folder or above the weft executable).
    #[arg(long, value_name = "DIR")]
    pub comfy_frontend: Option<PathBuf>,
    /// Keep the runs in PostgreSQL (postgres://USER@HOST/DB, or libpq's `host=... dbname=...`)
    /// instead of <data>/runs.sqlite; the schema is created on first use. Default: WEFT_STORE.
    /// Give a password in WEFT_STORE or ~/.pgpass, not here: other users see command lines.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Be an API server of a fleet: queue runs in this PostgreSQL database for `weft worker`s
    /// to run (nothing runs here). Default: WEFT_QUEUE. Password in WEFT_QUEUE or ~/.pgpass.
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    pub queue: Option<String>,
    /// With --queue: serve runs' images from this S3-compatible bucket (s3://BUCKET/PREFIX,
    /// AWS_* environment; docs/scaling.md), where the workers store them.
    #[arg(long, value_name = "URL")]
    pub outputs: Option<String>,
}

/// The process's arguments as `/system_stats` shows them: a `--store` or `--queue`
/// connection string (which may hold a password) is hidden.
pub fn shown_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut hide_next = false;
    args.into_iter()
        .map(|arg| {
            if std::mem::take(&mut hide_next) {
                return "<hidden>".to_string();
            }
            for flag in ["--store", "--queue"] {
                if arg == flag {
                    hide_next = true;
                } else if arg.starts_with(&format!("{flag}=")) {
                    return format!("{flag}=<hidden>");
                }
            }
            arg
        })
        .collect()
}

/// `COMFYUI_NAME=WEFT_NAME` pairs.
pub fn parse_comfy_models(pairs: &[String]) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((comfy, weft)) if !comfy.is_empty() && !weft.is_empty() => {
                Ok((comfy.to_string(), weft.to_string()))
            }
            _ => bail!("--comfy-model {p}: expected COMFYUI_NAME=WEFT_NAME, e.g. v1-5-pruned-emaonly.ckpt=tiny-shapes"),
        })
        .collect()
}

pub(crate) fn random_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn token_from(args: &ServeArgs) -> Result<Option<String>> {
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the token file {}", file.display()))?;
        let token = text.trim().to_string();
        if token.len() < 16 {
            bail!(
                "the token in {} is shorter than 16 characters",
                file.display()
            );
        }
        return Ok(Some(token));
    }
    if let Ok(token) = std::env::var("WEFT_TOKEN") {
        let token = token.trim().to_string();
        if token.len() < 16 {
            bail!("WEFT_TOKEN is shorter than 16 characters");
        }
        return Ok(Some(token));
    }
    Ok(None)
}

/// Runs the server until Ctrl-C or SIGTERM (device and cache budget parsed by the CLI).
pub fn run(args: ServeArgs, executor: ExecutorConfig) -> Result<()> {
    let mut token = token_from(&args)?;
    if !args.listen.is_loopback() && token.is_none() {
        let generated = random_token()?;
        eprintln!(
            "weft serve: listening beyond loopback needs a token; generated one (pass it as \
             'Authorization: Bearer <token>' or ?token=):\n{generated}"
        );
        token = Some(generated);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weft-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.listen, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.listen, args.port))?;
        let local = listener.local_addr()?;
        let models = args.models.folders()?;
        let (first, more) = models
            .folders()
            .split_first()
            .context("no model folder given")?;
        let mut config = Config::new(args.workflows.clone(), args.data.clone(), first.dir.clone());
        config.more_models = more.to_vec();
        if let Some(inputs) = &args.inputs {
            config.inputs_dir = inputs.clone();
        }
        config.token = token;
        config.comfy_models = parse_comfy_models(&args.comfy_models)?;
        config.comfy_frontend =
            comfy::locate_frontend(args.comfy_frontend.as_deref()).map_err(anyhow::Error::msg)?;
        config.postgres = args
            .store
            .clone()
            .or_else(|| std::env::var("WEFT_STORE").ok())
            .filter(|url| !url.trim().is_empty())
            .map(ConnectionString::new);
        config.queue = fleet::queue_url(args.queue.as_deref());
        if config.queue.is_some() {
            config.postgres = None;
        }
        if let Some(text) = args.outputs.as_deref().filter(|t| !t.trim().is_empty()) {
            if config.queue.is_none() {
                bail!(
                    "--outputs is for a fleet's API servers (with --queue) and workers; a lone \
                     weft serve keeps its runs' images in <data>/outputs"
                );
            }
            let setting = outputs::OutputsSetting::parse(text).map_err(anyhow::Error::msg)?;
            setting.open()?.check().await?;
            config.outputs = Some(setting);
        }
        config.allowed_hosts = loopback_hosts(local.port());
        let shown = listen::shown_addresses(local);
        // The addresses printed below are ones a client may then use as its Host.
        for address in shown.iter().chain([&local]) {
            let own = address.to_string();
            if !config.allowed_hosts.contains(&own) {
                config.allowed_hosts.push(own);
            }
        }
        for host in &args.allow_hosts {
            config
                .allowed_hosts
                .push(format!("{host}:{}", local.port()));
        }
        let header_timeout = config.header_timeout;
        let state = Server::start(config, executor)?;
        let urls: Vec<String> = shown.into_iter().map(listen::url).collect();
        eprintln!(
            "weft serve: listening on {} (workflows {}, data {}, models {})",
            urls.join(" "),
            state.roots.workflows.display(),
            args.data.display(),
            state.roots.models
        );
        match &state.config.comfy_frontend {
            Some(dir) => eprintln!(
                "weft serve: ComfyUI's frontend at {}comfy/ (from {})",
                urls.first().map_or("", String::as_str),
                dir.display()
            ),
            None => eprintln!(
                "weft serve: ComfyUI's frontend not found (scripts/setup.sh installs it; or \
                 --comfy-frontend DIR): /comfy/ says so"
            ),
        }
        let app = app(state);
        let serving = listen::serve(listener, app, header_timeout, shutdown_signal());
        // Open WebSockets would hold a graceful shutdown up: give connections a moment.
        let deadline = async {
            shutdown_signal().await;
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        };
        tokio::select! {
            _ = serving => {}
            _ = deadline => {}
        }
        eprintln!("weft serve: stopped (queued runs go on at the next start)");
        anyhow::Ok(())
    })?;
    // Open WebSockets and the device worker do not hold the exit up.
    std::process::exit(0);
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
