//! The store in one SQLite file in the data folder: the embedded default of `weft serve`.
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde_json::Value as Json;

use super::*;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    workflow_name TEXT,
    workflow TEXT NOT NULL,
    target TEXT,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    nodes TEXT NOT NULL DEFAULT '{}',
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    queue_order INTEGER
);
CREATE INDEX IF NOT EXISTS runs_queued ON runs (status, id);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mode TEXT NOT NULL,
    axes TEXT NOT NULL,
    grid_rows TEXT NOT NULL,
    grid_columns TEXT NOT NULL,
    layout TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    grid TEXT
);
CREATE TABLE IF NOT EXISTS sweep_cells (
    run INTEGER PRIMARY KEY,
    sweep INTEGER NOT NULL,
    cell INTEGER NOT NULL,
    cell_values TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sweep_cells_sweep ON sweep_cells (sweep, cell);
CREATE TABLE IF NOT EXISTS comfy_prompts (
    run INTEGER PRIMARY KEY,
    prompt_id TEXT NOT NULL UNIQUE,
    client_id TEXT,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    ids TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comfy_outputs (
    identity TEXT PRIMARY KEY,
    images TEXT NOT NULL
);
";

const INSERT_RUN: &str = "INSERT INTO runs (status, workflow_name, workflow, target, queued_at) \
                          VALUES ('queued', ?1, ?2, ?3, ?4)";

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn run_row(row: &Row) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: row.get(0)?,
        status: row.get(1)?,
        workflow_name: row.get(2)?,
        workflow: row.get(3)?,
        target: row.get(4)?,
        queued_at: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        nodes: row.get(8)?,
        outputs: row.get(9)?,
        error: row.get(10)?,
        waiting: None,
    })
}

fn prompt_row(r: &Row) -> rusqlite::Result<PromptRow> {
    Ok(PromptRow {
        run: r.get(0)?,
        prompt_id: r.get(1)?,
        client_id: r.get(2)?,
        prompt: r.get(3)?,
        extra_data: r.get(4)?,
        ids: r.get(5)?,
        outputs: r.get(6)?,
    })
}

/// A file made before runs could be moved has no `queue_order` column: it gets one (empty:
/// every run keeps its place, its id).
fn add_queue_order(conn: &Connection) -> rusqlite::Result<()> {
    let has_it = conn
        .prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'queue_order'")?
        .exists([])?;
    if !has_it {
        conn.execute_batch("ALTER TABLE runs ADD COLUMN queue_order INTEGER")?;
    }
    Ok(())
}

/// Runs one statement from the connection's statement cache; the number of rows it changed.
fn execute(c: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

impl SqliteStore {
    /// Opens (or creates) the database file. WAL with `synchronous=NORMAL`: a commit survives
    /// the process being killed, which is the failure the queue must outlive.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let opened = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            add_queue_order(&conn)?;
            Ok(conn)
        };
        let conn = opened().map_err(|e| StoreError::Open {
            place: path.display().to_string(),
            cause: e.to_string(),
        })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self, operation: &'static str) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Poisoned { operation })
    }

    /// Runs `f` on the connection; its error is reported as `operation` on run `run`.
    fn with<T>(
        &self,
        operation: &'static str,
        run: Option<u64>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let conn = self.lock(operation)?;
        f(&conn).map_err(failed(operation, run))
    }

    /// Moves queued run `id` on: `set` are the columns it sets, with `?2` standing for `at`.
    /// False when the run is not (or no longer) queued.
    fn update_queued(
        &self,
        operation: &'static str,
        set: &str,
        id: u64,
        at: i64,
    ) -> StoreResult<bool> {
        self.with(operation, Some(id), |c| {
            execute(
                c,
                &format!("UPDATE runs SET {set} WHERE id = ?1 AND status = 'queued'"),
                params![id as i64, at],
            )
            .map(|n| n == 1)
        })
    }

    fn one_prompt(
        &self,
        operation: &'static str,
        sql: &str,
        key: impl rusqlite::ToSql,
    ) -> StoreResult<Option<ComfyPrompt>> {
        let row = self.with(operation, None, |c| {
            c.prepare_cached(sql)?
                .query_row(params![key], prompt_row)
                .optional()
        })?;
        Ok(row.map(PromptRow::into_prompt))
    }
}

impl RunStore for SqliteStore {
    fn enqueue(
        &self,
        workflow_name: Option<&str>,
        workflow: &str,
        target: Option<&str>,
        at: i64,
    ) -> StoreResult<u64> {
        self.with("queueing a run", None, |c| {
            execute(c, INSERT_RUN, params![workflow_name, workflow, target, at])?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    fn enqueue_prompt(&self, workflow: &str, at: i64, prompt: &ComfyPrompt) -> StoreResult<u64> {
        const OPERATION: &str = "queueing a ComfyUI prompt";
        let mut conn = self.lock(OPERATION)?;
        // Immediate: the write lock is taken first, so another connection to the file cannot
        // slip in between the check and the insert.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed(OPERATION, None))?;
        let taken = tx
            .prepare_cached("SELECT 1 FROM comfy_prompts WHERE prompt_id = ?1")
            .and_then(|mut s| s.exists(params![prompt.prompt_id]))
            .map_err(failed(OPERATION, None))?;
        if taken {
            return Err(StoreError::DuplicatePromptId(prompt.prompt_id.clone()));
        }
        execute(
            &tx,
            INSERT_RUN,
            params![None::<&str>, workflow, None::<&str>, at],
        )
        .map_err(failed(OPERATION, None))?;
        let run = tx.last_insert_rowid();
        let (text, extra, ids, outputs) = prompt_texts(prompt);
        execute(
            &tx,
            "INSERT INTO comfy_prompts (run, prompt_id, client_id, prompt, extra_data, ids, outputs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![run, prompt.prompt_id, prompt.client_id, text, extra, ids, outputs],
        )
        .map_err(failed(OPERATION, Some(run as u64)))?;
        tx.commit().map_err(failed(OPERATION, Some(run as u64)))?;
        Ok(run as u64)
    }

    fn get(&self, id: u64) -> StoreResult<Option<RunRecord>> {
        self.with("reading a run", Some(id), |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE id = ?1"
            ))?
            .query_row(params![id as i64], run_row)
            .optional()
        })?
        .map(RunRow::into_record)
        .transpose()
    }

    fn list(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<RunRecord>> {
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let rows = self.with("listing runs", None, |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![before, limit as i64], run_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(RunRow::into_record).collect()
    }

    fn running(&self, limit: usize) -> StoreResult<Vec<u64>> {
        self.with("reading the running runs", None, |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM runs WHERE status = 'running' ORDER BY id LIMIT ?1",
            )?;
            let ids = stmt
                .query_map(params![limit.min(i64::MAX as usize) as i64], |r| {
                    r.get::<_, i64>(0).map(|i| i as u64)
                })?
                .collect::<rusqlite::Result<Vec<u64>>>()?;
            Ok(ids)
        })
    }

    fn queued(&self, limit: usize) -> StoreResult<(Vec<u64>, usize)> {
        self.with("reading the queue", None, |c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM runs WHERE status = 'queued'")?
                .query_row([], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(concat!(
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY ",
                queue_order_key!(),
                ", id LIMIT ?1"
            ))?;
            let ids = stmt
                .query_map(params![limit as i64], |r| {
                    r.get::<_, i64>(0).map(|i| i as u64)
                })?
                .collect::<rusqlite::Result<Vec<u64>>>()?;
            Ok((ids, total as usize))
        })
    }

    fn claim_next(&self, at: i64) -> StoreResult<Option<RunRecord>> {
        // One statement: SQLite's write lock makes the pick and the update one step for every
        // connection to the file.
        self.with("claiming the next queued run", None, |c| {
            c.prepare_cached(concat!(
                "UPDATE runs SET status = 'running', started_at = ?1 WHERE id = \
                 (SELECT id FROM runs WHERE status = 'queued' ORDER BY ",
                queue_order_key!(),
                ", id LIMIT 1) RETURNING ",
                run_columns!()
            ))?
            .query_row(params![at], run_row)
            .optional()
        })?
        .map(RunRow::into_record)
        .transpose()
    }

    fn move_queued(&self, id: u64, place: QueuePlace) -> StoreResult<bool> {
        const OPERATION: &str = "moving a run in the queue";
        let mut conn = self.lock(OPERATION)?;
        let mut moved = || -> rusqlite::Result<bool> {
            // Immediate: no claim or move on another connection reads the queue in between.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let queue = tx
                .prepare_cached(concat!(
                    "SELECT id, ",
                    queue_order_key!(),
                    " FROM runs WHERE status = 'queued' ORDER BY ",
                    queue_order_key!(),
                    ", id"
                ))?
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let Some(changes) = reordered(&queue, id, place) else {
                return Ok(false);
            };
            for (run, key) in changes {
                execute(
                    &tx,
                    "UPDATE runs SET queue_order = ?2 WHERE id = ?1",
                    params![run as i64, key],
                )?;
            }
            tx.commit()?;
            Ok(true)
        };
        moved().map_err(failed(OPERATION, Some(id)))
    }

    fn finish(&self, id: u64, f: &Finished) -> StoreResult<bool> {
        let error = f.error.as_ref().map(|e| e.to_string());
        let (nodes, outputs) = (f.nodes.to_string(), f.outputs.to_string());
        let status = RunState::from(f.status).as_str();
        self.with("recording a finished run", Some(id), |c| {
            execute(
                c,
                "UPDATE runs SET status = ?2, finished_at = ?3, nodes = ?4, outputs = ?5, \
                 error = ?6 WHERE id = ?1 AND status = 'running'",
                params![id as i64, status, f.at, nodes, outputs, error],
            )
            .map(|n| n == 1)
        })
    }

    fn cancel_queued(&self, id: u64, at: i64) -> StoreResult<bool> {
        self.update_queued(
            "cancelling a run",
            "status = 'cancelled', finished_at = ?2",
            id,
            at,
        )
    }

    fn delete_queued(&self, id: u64) -> StoreResult<bool> {
        self.with("deleting a run", Some(id), |c| {
            execute(
                c,
                "DELETE FROM runs WHERE id = ?1 AND status = 'queued'",
                params![id as i64],
            )
            .map(|n| n == 1)
        })
    }

    fn interrupt_running(&self, at: i64) -> StoreResult<Vec<u64>> {
        self.with("marking interrupted runs", None, |c| {
            c.prepare_cached(
                "UPDATE runs SET status = 'interrupted', finished_at = ?1, error = ?2 \
                 WHERE status = 'running' RETURNING id",
            )?
            .query_map(params![at, INTERRUPTED_ERROR], |r| {
                r.get::<_, i64>(0).map(|i| i as u64)
            })?
            .collect::<rusqlite::Result<Vec<u64>>>()
        })
        .map(|mut ids| {
            ids.sort_unstable();
            ids
        })
    }

    fn enqueue_sweep(
        &self,
        workflow_name: Option<&str>,
        target: Option<&str>,
        sweep: &NewSweep,
        at: i64,
    ) -> StoreResult<(u64, Vec<u64>)> {
        const OPERATION: &str = "queueing a sweep";
        let mut conn = self.lock(OPERATION)?;
        let mut queued = || -> rusqlite::Result<(u64, Vec<u64>)> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO sweeps (mode, axes, grid_rows, grid_columns, layout, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    sweep.mode,
                    sweep.axes.to_string(),
                    sweep.rows.to_string(),
                    sweep.columns.to_string(),
                    sweep.layout.to_string(),
                    at
                ],
            )?;
            let sweep_id = tx.last_insert_rowid();
            let mut runs = Vec::with_capacity(sweep.cells.len());
            for (cell, (values, workflow)) in sweep.cells.iter().enumerate() {
                execute(
                    &tx,
                    INSERT_RUN,
                    params![workflow_name, workflow, target, at],
                )?;
                let run = tx.last_insert_rowid();
                execute(
                    &tx,
                    "INSERT INTO sweep_cells (run, sweep, cell, cell_values) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![run, sweep_id, cell as i64, values.to_string()],
                )?;
                runs.push(run as u64);
            }
            tx.commit()?;
            Ok((sweep_id as u64, runs))
        };
        queued().map_err(failed(OPERATION, None))
    }

    fn get_sweep(&self, id: u64) -> StoreResult<Option<SweepRecord>> {
        let found = self.with("reading a sweep", None, |c| {
            let head = c
                .prepare_cached(
                    "SELECT mode, axes, grid_rows, grid_columns, layout, grid FROM sweeps \
                     WHERE id = ?1",
                )?
                .query_row(params![id as i64], |r| {
                    Ok(SweepRecord {
                        id,
                        mode: r.get(0)?,
                        axes: json(&r.get::<_, String>(1)?),
                        rows: json(&r.get::<_, String>(2)?),
                        columns: json(&r.get::<_, String>(3)?),
                        layout: json(&r.get::<_, String>(4)?),
                        cells: Vec::new(),
                        grid: r.get(5)?,
                    })
                })
                .optional()?;
            let Some(sweep) = head else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT sweep_cells.run, sweep_cells.cell_values, runs.status, runs.outputs \
                 FROM sweep_cells LEFT JOIN runs ON runs.id = sweep_cells.run \
                 WHERE sweep_cells.sweep = ?1 ORDER BY sweep_cells.cell",
            )?;
            let cells = stmt
                .query_map(params![id as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((sweep, cells)))
        })?;
        let Some((mut sweep, cells)) = found else {
            return Ok(None);
        };
        for (run, values, status, outputs) in cells {
            sweep.cells.push(SweepCell {
                run,
                values: json(&values),
                status: cell_status(run, status)?,
                outputs: outputs.as_deref().map_or(Json::Null, json),
            });
        }
        Ok(Some(sweep))
    }

    fn sweep_of_run(&self, run: u64) -> StoreResult<Option<(u64, usize, Json)>> {
        self.with("finding a run's sweep", Some(run), |c| {
            c.prepare_cached("SELECT sweep, cell, cell_values FROM sweep_cells WHERE run = ?1")?
                .query_row(params![run as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as usize,
                        json(&r.get::<_, String>(2)?),
                    ))
                })
                .optional()
        })
    }

    fn set_sweep_grid(&self, id: u64, grid: &str) -> StoreResult<bool> {
        self.with("recording a sweep's grid", None, |c| {
            execute(
                c,
                "UPDATE sweeps SET grid = ?2 WHERE id = ?1 AND grid IS NULL",
                params![id as i64, grid],
            )
            .map(|n| n == 1)
        })
    }

    fn prompt_of_run(&self, run: u64) -> StoreResult<Option<ComfyPrompt>> {
        self.one_prompt(
            "reading a run's ComfyUI prompt",
            concat!(
                "SELECT ",
                prompt_columns!(),
                " FROM comfy_prompts WHERE run = ?1"
            ),
            run as i64,
        )
    }

    fn prompt_by_id(&self, prompt_id: &str) -> StoreResult<Option<ComfyPrompt>> {
        self.one_prompt(
            "reading a ComfyUI prompt",
            concat!(
                "SELECT ",
                prompt_columns!(),
                " FROM comfy_prompts WHERE prompt_id = ?1"
            ),
            prompt_id,
        )
    }

    fn newest_prompts(&self, limit: usize) -> StoreResult<Vec<ComfyPrompt>> {
        let rows = self.with("listing ComfyUI prompts", None, |c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                prompt_columns!(),
                " FROM comfy_prompts ORDER BY run DESC LIMIT ?1"
            ))?;
            let rows = stmt.query_map(params![limit as i64], prompt_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.into_iter().rev().map(PromptRow::into_prompt).collect())
    }

    fn remember_images(&self, identity: &str, images: &[Json]) -> StoreResult<()> {
        let text = Json::Array(images.to_vec()).to_string();
        self.with("recording an output node's images", None, |c| {
            execute(
                c,
                "INSERT INTO comfy_outputs (identity, images) VALUES (?1, ?2) \
                 ON CONFLICT (identity) DO UPDATE SET images = excluded.images",
                params![identity, text],
            )
            .map(|_| ())
        })
    }

    fn recall_images(&self, identity: &str) -> StoreResult<Option<Vec<Json>>> {
        let text: Option<String> = self.with("reading an output node's images", None, |c| {
            c.prepare_cached("SELECT images FROM comfy_outputs WHERE identity = ?1")?
                .query_row(params![identity], |r| r.get(0))
                .optional()
        })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
