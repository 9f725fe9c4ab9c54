//! The device worker: one thread per device owns the executor, its cache and the models (tch
//! state is per thread and tensors are not `Sync`). Callers, async or not, send jobs over a
//! channel and receive events and the report back; nothing blocks while holding a lock.
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::cancel::CancelToken;
use crate::device_memory::MemoryReport;
use crate::events::Event;
use crate::executor::{Executor, ExecutorConfig, RunReport, RunRequest};
use crate::registry::Registry;
use crate::workflow::Workflow;

/// A run to perform.
pub struct Job {
    pub workflow: Workflow,
    pub target: Option<String>,
    pub run: Option<u64>,
    /// Where this run's output nodes write (the server gives each run its own folder);
    /// `None` keeps the worker's configured folder.
    pub output_dir: Option<std::path::PathBuf>,
    /// Other sweep cells whose variant of one node this run computes in its batch.
    pub batch: Option<crate::executor::Batch>,
    pub cancel: CancelToken,
    /// Events as they happen; a closed receiver is ignored.
    pub events: Box<dyn FnMut(&Event) + Send>,
    /// The report when the run ends.
    pub done: Box<dyn FnOnce(RunReport) + Send>,
}

enum Message {
    Run(Box<Job>),
    SetBudget(u64),
    SetPreviewEvery(u32),
    /// Drop the in-memory cache, models included (ComfyUI's `/free`).
    ClearCache,
    Stop,
}

/// How long the worker waits without a job before it returns free heap pages to the kernel.
const IDLE_BEFORE_TRIM: std::time::Duration = std::time::Duration::from_secs(2);

/// A run's report lists the cache's largest entries, at most this many (a fleet's worker
/// publishes them: a bounded list, its loaded models and conditioning first)...
const CACHE_HOLDS_LIMIT: usize = 64;
/// ...of at least this size (scalars and strings say nothing about what is worth routing to).
const CACHE_HOLDS_MIN_BYTES: u64 = 1024;

pub struct DeviceWorker {
    sender: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl DeviceWorker {
    /// Starts the worker thread, which owns an executor built from `config`.
    pub fn start(registry: Arc<Registry>, config: ExecutorConfig) -> Self {
        let (sender, receiver) = mpsc::channel::<Message>();
        let thread = std::thread::Builder::new()
            .name(format!("weft-device-{:?}", config.device))
            .spawn(move || {
                if let Some(threads) = config.cpu_threads {
                    tch::set_num_threads(threads.max(1));
                }
                let mut executor = Executor::new(registry, config);
                // Free heap pages go back to the kernel once the worker has been idle for a
                // moment, not after every run: back-to-back runs reuse them without faulting.
                let mut freed_since_trim = false;
                loop {
                    let message = match receiver.recv_timeout(IDLE_BEFORE_TRIM) {
                        Ok(message) => message,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if std::mem::take(&mut freed_since_trim) {
                                crate::host_memory::release_free_memory();
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    match message {
                        Message::Run(job) => {
                            let Job {
                                workflow,
                                target,
                                run,
                                output_dir,
                                batch,
                                cancel,
                                mut events,
                                done,
                            } = *job;
                            let previous_dir = output_dir.map(|dir| executor.set_output_dir(dir));
                            let request = RunRequest {
                                workflow: &workflow,
                                target: target.as_deref(),
                                run,
                                batch: batch.as_ref(),
                            };
                            let device = executor.device();
                            crate::device_memory::start_peaks(device);
                            let mut report = executor.run(request, &cancel, &mut *events);
                            let cache = executor.cache_stats();
                            report.memory = Some(MemoryReport {
                                cache_entries: cache.entries,
                                cache_bytes: cache.bytes,
                                cache_budget: cache.budget,
                                device: crate::device_memory::device_memory(device),
                            });
                            report.cache_holds = executor
                                .cache_largest_keys(CACHE_HOLDS_MIN_BYTES, CACHE_HOLDS_LIMIT);
                            if let Some(dir) = previous_dir {
                                executor.set_output_dir(dir);
                            }
                            freed_since_trim = true;
                            done(report);
                        }
                        Message::SetBudget(bytes) => executor.set_cache_budget(bytes),
                        Message::SetPreviewEvery(steps) => executor.set_preview_every(steps),
                        Message::ClearCache => {
                            executor.clear_cache();
                            crate::host_memory::release_free_memory();
                        }
                        Message::Stop => break,
                    }
                }
            })
            .expect("spawning the device worker thread");
        Self {
            sender,
            thread: Some(thread),
        }
    }

    /// Queues a job; false if the worker has stopped.
    pub fn submit(&self, job: Job) -> bool {
        self.sender.send(Message::Run(Box::new(job))).is_ok()
    }

    /// Runs a workflow and waits for its report, forwarding events to `on_event`.
    pub fn run_blocking(
        &self,
        workflow: Workflow,
        target: Option<String>,
        cancel: CancelToken,
        on_event: impl FnMut(&Event) + Send + 'static,
    ) -> Option<RunReport> {
        self.run_blocking_batched(workflow, target, None, cancel, on_event)
    }

    /// As [`DeviceWorker::run_blocking`], computing `batch`'s other variants of one node in
    /// the run's batch (a sweep's cells that differ only in a sampler's seed).
    pub fn run_blocking_batched(
        &self,
        workflow: Workflow,
        target: Option<String>,
        batch: Option<crate::executor::Batch>,
        cancel: CancelToken,
        on_event: impl FnMut(&Event) + Send + 'static,
    ) -> Option<RunReport> {
        let (tx, rx) = mpsc::channel();
        let job = Job {
            workflow,
            target,
            run: None,
            output_dir: None,
            batch,
            cancel,
            events: Box::new(on_event),
            done: Box::new(move |report| {
                let _ = tx.send(report);
            }),
        };
        if !self.submit(job) {
            return None;
        }
        rx.recv().ok()
    }

    /// Long nodes send a preview with their progress every `steps` steps (0: never, the default).
    pub fn set_preview_every(&self, steps: u32) {
        let _ = self.sender.send(Message::SetPreviewEvery(steps));
    }

    pub fn set_cache_budget(&self, bytes: u64) {
        let _ = self.sender.send(Message::SetBudget(bytes));
    }

    /// A handle that reaches this worker from other threads (the worker itself is owned by
    /// whoever runs jobs on it).
    pub fn remote(&self) -> WorkerRemote {
        WorkerRemote {
            sender: self.sender.clone(),
        }
    }
}

/// Reaches a [`DeviceWorker`] for requests that are not runs.
#[derive(Clone)]
pub struct WorkerRemote {
    sender: mpsc::Sender<Message>,
}

impl WorkerRemote {
    /// Drops everything the worker's in-memory cache holds (loaded models, conditioning,
    /// latents) once the run in progress, if any, has ended; the next run loads what it needs
    /// again. The disk cache tier is kept. False if the worker has stopped.
    pub fn clear_cache(&self) -> bool {
        self.sender.send(Message::ClearCache).is_ok()
    }
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
