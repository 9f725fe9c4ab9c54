//! `weft watch`: hot reload. Watches the file's folder (so editors that save by writing a new
//! file and renaming it over the old one are seen), debounces, re-validates and re-runs on the
//! same worker, so only changed nodes and their descendants execute. A broken save prints its
//! errors and keeps the last good graph and the cache. A workflow with a `sweep:` section re-runs
//! every cell on each save (only what the save changed executes; the rest is cached) and
//! writes a new contact sheet, as `weft run` of the file does.
//!
//! The subgraph files the workflow includes, at any depth, are watched the same way (their
//! folders), and so is the library folder (`lib/` beside the file); after each reload the set
//! is taken again from the expansion, so an include added or removed by the save is followed.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;
use weft_engine::CancelToken;

use weft::file_watch::{read_settled, watch_key};

use crate::cli_run::{execute, print_report, run_prepared, start_worker, Prepared};
use crate::RunOptions;

/// What wakes the loop: the workflow file, the files it includes, and any YAML file in the
/// library folders (a new one may be the type a broken save was missing).
#[derive(Default)]
struct Interest {
    files: HashSet<PathBuf>,
    library_dirs: HashSet<PathBuf>,
}

impl Interest {
    fn wants(&self, path: &Path) -> bool {
        self.files.contains(path)
            // The library folder itself appearing (its parent is watched): watch it from then.
            || self.library_dirs.contains(path)
            || (path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && path.parent().is_some_and(|d| self.library_dirs.contains(d)))
    }
}

/// The bytes of the workflow file and of each included file (`None`: unreadable), then the
/// names of the library folder's files (a new one can give a type the workflow names but had
/// no file for), to tell a save that changed nothing from one that did.
type Snapshot = Vec<Option<Vec<u8>>>;

fn snapshot(file: &Path, includes: &[PathBuf]) -> Snapshot {
    let library: Vec<u8> = weft_engine::subgraph::library_types(&crate::library_dirs(file))
        .into_iter()
        .flat_map(|(name, _)| name.into_bytes().into_iter().chain([b'\n']))
        .collect();
    std::iter::once(read_settled(file))
        .chain(includes.iter().map(|p| read_settled(p)))
        .chain([Some(library)])
        .collect()
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
    let interest = Arc::new(Mutex::new(Interest::default()));
    let wanted = interest.clone();
    let mut debouncer = new_debouncer(
        Duration::from_millis(120),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = result {
                let Ok(wanted) = wanted.lock() else { return };
                // Reads are not changes (and the loop's own reads would wake it again).
                let touches = events
                    .iter()
                    .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                    .flat_map(|e| e.paths.iter())
                    .any(|p| wanted.wants(p));
                if touches {
                    let _ = tx.send(Wake::Changed);
                }
            }
        },
    )
    .context("starting the file watcher")?;
    let dir = dir.canonicalize().unwrap_or(dir);
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    let mut watched_dirs: HashSet<PathBuf> = HashSet::from([dir.clone()]);
    interest
        .lock()
        .expect("the watcher does not panic")
        .files
        .insert(dir.join(&name));
    let libraries: Vec<PathBuf> = crate::library_dirs(&dir.join(&name)).into();
    // The subgraph files the last load named (canonical where they exist).
    let mut includes: Vec<PathBuf> = Vec::new();
    // Called before each load: watches the library folders that exist by now (one made after
    // the watch started counts too) and the folders of the files the workflow includes.
    let mut follow = |includes: &[PathBuf]| {
        let mut interest = interest.lock().expect("the watcher does not panic");
        for library in &libraries {
            let key = library.canonicalize().unwrap_or_else(|_| library.clone());
            if !key.is_dir() {
                // Gone (or not there yet): watched again when it is made (again).
                watched_dirs.remove(&key);
            } else if watched_dirs.insert(key.clone()) {
                // An unreadable library folder only means nothing is watched there.
                let _ = debouncer.watch(&key, RecursiveMode::NonRecursive);
            }
            interest.library_dirs.insert(key);
        }
        interest.files.retain(|p| *p == dir.join(&name));
        for include in includes {
            let key = watch_key(include);
            if let Some(parent) = key.parent() {
                if watched_dirs.insert(parent.to_path_buf()) {
                    // A folder that does not exist yet cannot be watched; its parent's own
                    // include error says what is missing.
                    let _ = debouncer.watch(parent, RecursiveMode::NonRecursive);
                }
            }
            interest.files.insert(key);
        }
    };

    eprintln!("watching {} (Ctrl-C to stop)", file.display());
    // The cache lives in the worker, so a broken save loses nothing; this only shapes the message.
    let mut had_good_run = false;
    let mut last_seen: Option<Snapshot> = None;
    let mut wake = Wake::Changed;
    loop {
        if let Wake::Quit = wake {
            eprintln!("stopped watching");
            return Ok(ExitCode::SUCCESS);
        }
        follow(&includes);
        let seen = snapshot(&file, &includes);
        // A save that leaves the bytes as they were (touch, a second event) needs no run.
        let unchanged = seen[0].is_some() && Some(&seen) == last_seen.as_ref();
        let present = seen[0].is_some();
        last_seen = Some(seen);
        match present {
            _ if unchanged => {}
            false => eprintln!("{} is gone; waiting for it to come back", file.display()),
            // A `sweep:` section re-runs every cell (the cache runs only what the save
            // changed) and recomposes the contact sheet, as `weft run` of the file would.
            true => match crate::cli_run::prepare(&file, options) {
                Err(e) => eprintln!("error: {e:#}"),
                Ok((loaded, now_included)) => {
                    if now_included != includes {
                        includes = now_included;
                        follow(&includes);
                        last_seen = Some(snapshot(&file, &includes));
                    }
                    match loaded {
                        Err(errors) => {
                            if options.json {
                                crate::cli_run::print_invalid_events(&errors);
                            }
                            crate::print_diagnostics(&file, &errors);
                            if had_good_run {
                                eprintln!("keeping the last good graph and its cache; fix the file and save again");
                            }
                        }
                        Ok(Prepared::One(workflow)) => {
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
                        Ok(sweep) => {
                            let cancel = CancelToken::new();
                            if let Ok(mut slot) = current_run.lock() {
                                *slot = cancel.clone();
                            }
                            let status = run_prepared(&file, &worker, sweep, options, cancel)?;
                            if status != weft_engine::RunStatus::Invalid {
                                had_good_run = true;
                            } else if had_good_run {
                                eprintln!("keeping the last good graph and its cache; fix the file and save again");
                            }
                        }
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
