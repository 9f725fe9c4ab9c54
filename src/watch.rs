//! `weft watch`: hot reload. Watches the file's folder (so editors that save by writing a new
//! file and renaming it over the old one are seen), debounces, re-validates and re-runs on the
//! same worker, so only changed nodes and their descendants execute. A broken save prints its
//! errors and keeps the last good graph and the cache.
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;
use weft_engine::CancelToken;

use crate::cli_run::{execute, print_report, start_worker};
use crate::RunOptions;

/// The file's bytes once two reads a moment apart agree: an editor that truncates and then
/// writes in place can wake us between the two, and an empty file is not what was saved.
fn read_settled(file: &Path) -> Option<Vec<u8>> {
    let mut previous = std::fs::read(file).ok();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(25));
        let current = std::fs::read(file).ok();
        if current == previous {
            return current;
        }
        previous = current;
    }
    previous
}

enum Wake {
    Changed,
    Quit,
}

pub fn watch(file: &Path, options: &RunOptions) -> Result<ExitCode> {
    let file =
        std::path::absolute(file).with_context(|| format!("cannot resolve {}", file.display()))?;
    let dir = file
        .parent()
        .context("the file has no folder")?
        .to_path_buf();
    let name = file.file_name().context("not a file name")?.to_owned();
    let worker = start_worker(options)?;

    let (tx, rx) = mpsc::channel::<Wake>();
    let quit_tx = tx.clone();
    // Ctrl-C also cancels the run in flight, so a long sampler does not hold the exit up.
    let current_run = std::sync::Arc::new(std::sync::Mutex::new(CancelToken::new()));
    let handler_run = current_run.clone();
    ctrlc::set_handler(move || {
        if let Ok(token) = handler_run.lock() {
            token.cancel();
        }
        let _ = quit_tx.send(Wake::Quit);
    })
    .context("installing the Ctrl-C handler")?;
    let watched_name = name.clone();
    let mut debouncer = new_debouncer(
        Duration::from_millis(120),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = result {
                let touches_file = events
                    .iter()
                    .flat_map(|e| e.paths.iter())
                    .any(|p| p.file_name() == Some(watched_name.as_os_str()));
                if touches_file {
                    let _ = tx.send(Wake::Changed);
                }
            }
        },
    )
    .context("starting the file watcher")?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;

    eprintln!("watching {} (Ctrl-C to stop)", file.display());
    // The cache lives in the worker, so a broken save loses nothing; this only shapes the message.
    let mut had_good_run = false;
    let mut last_seen: Option<Vec<u8>> = None;
    let mut wake = Wake::Changed;
    loop {
        if let Wake::Quit = wake {
            eprintln!("stopped watching");
            return Ok(ExitCode::SUCCESS);
        }
        let content = read_settled(&file);
        // A save that leaves the bytes as they were (touch, a second event) needs no run.
        let unchanged = content.is_some() && content == last_seen;
        last_seen.clone_from(&content);
        match content {
            _ if unchanged => {}
            None => eprintln!("{} is gone; waiting for it to come back", file.display()),
            Some(_) => match crate::load_workflow(&file, &options.sets) {
                Err(e) => eprintln!("error: {e:#}"),
                Ok(Err(errors)) => {
                    if options.json {
                        crate::cli_run::print_invalid_events(&errors);
                    }
                    crate::print_diagnostics(&file, &errors);
                    if had_good_run {
                        eprintln!("keeping the last good graph and its cache; fix the file and save again");
                    }
                }
                Ok(Ok(workflow)) => {
                    let cancel = CancelToken::new();
                    if let Ok(mut slot) = current_run.lock() {
                        *slot = cancel.clone();
                    }
                    let report = execute(&worker, workflow, options, cancel)?;
                    print_report(&file, &report, options.json, options.why);
                    if report.status != weft_engine::RunStatus::Invalid {
                        had_good_run = true;
                    } else if had_good_run {
                        eprintln!("keeping the last good graph and its cache; fix the file and save again");
                    }
                }
            },
        }
        if !unchanged {
            eprintln!("waiting for changes to {}", name.to_string_lossy());
        }
        wake = rx.recv().unwrap_or(Wake::Quit);
        // Coalesce a burst of saves into one run.
        while let Ok(next) = rx.try_recv() {
            if let Wake::Quit = next {
                wake = Wake::Quit;
            }
        }
    }
}
