//! The durable run queue and history behind a small trait: SQLite here (one file in the data
//! folder); a shared store (PostgreSQL, see docs/scaling.md) could back the same trait later.
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

pub type StoreResult<T> = Result<T, String>;

/// A run as stored: what to run, where it stands, what it did.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: u64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_name: Option<String>,
    /// The workflow document (JSON text) exactly as it will run, overrides applied.
    #[serde(skip)]
    pub workflow: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub queued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(skip)]
    pub nodes: serde_json::Value,
    #[serde(skip)]
    pub outputs: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: &'static str,
    pub at: i64,
    pub nodes: serde_json::Value,
    pub outputs: serde_json::Value,
    pub error: Option<serde_json::Value>,
}

/// A sweep to queue: its description and one workflow document per cell.
#[derive(Debug, Clone)]
pub struct NewSweep {
    pub mode: String,
    /// `{"node.input": [values]}` as expanded.
    pub axes: serde_json::Value,
    pub rows: serde_json::Value,
    pub columns: serde_json::Value,
    /// Where each cell goes in the grid and its headers (`grid::GridLayout`).
    pub layout: serde_json::Value,
    /// Each cell's values and workflow document, in cell order.
    pub cells: Vec<(serde_json::Value, String)>,
}

/// One cell of a stored sweep, with its run's status (`deleted` when the run was removed).
#[derive(Debug, Clone)]
pub struct SweepCell {
    pub run: u64,
    pub values: serde_json::Value,
    pub status: String,
    pub outputs: serde_json::Value,
}

/// A sweep as stored.
#[derive(Debug, Clone)]
pub struct SweepRecord {
    pub id: u64,
    pub mode: String,
    pub axes: serde_json::Value,
    pub rows: serde_json::Value,
    pub columns: serde_json::Value,
    pub layout: serde_json::Value,
    pub cells: Vec<SweepCell>,
    /// The grid's path under the outputs folder, once composed.
    pub grid: Option<String>,
}

pub trait RunStore: Send + Sync {
    /// Adds a queued run; returns its id (ids only grow, never reused).
    fn enqueue(
        &self,
        workflow_name: Option<&str>,
        workflow: &str,
        target: Option<&str>,
        at: i64,
    ) -> StoreResult<u64>;
    fn get(&self, id: u64) -> StoreResult<Option<RunRecord>>;
    /// Newest first, ids below `before` when given.
    fn list(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<RunRecord>>;
    /// The oldest queued run.
    fn next_queued(&self) -> StoreResult<Option<RunRecord>>;
    /// Queued ids in run order (at most `limit`) and how many are queued in all.
    fn queued(&self, limit: usize) -> StoreResult<(Vec<u64>, usize)>;
    /// queued -> running; false if it was no longer queued (cancelled or deleted meanwhile).
    fn start(&self, id: u64, at: i64) -> StoreResult<bool>;
    fn finish(&self, id: u64, finished: &Finished) -> StoreResult<()>;
    /// queued -> cancelled; false if it was not queued.
    fn cancel_queued(&self, id: u64, at: i64) -> StoreResult<bool>;
    /// Removes a queued run; false if it was not queued.
    fn delete_queued(&self, id: u64) -> StoreResult<bool>;
    /// At start-up: runs left `running` by a process that died become `interrupted`.
    fn interrupt_running(&self, at: i64) -> StoreResult<Vec<u64>>;
    /// Queues a sweep's cells as runs, in cell order, and records the sweep, in one
    /// transaction (the scheduler never sees half a sweep); the sweep's id and the runs' ids.
    fn enqueue_sweep(
        &self,
        workflow_name: Option<&str>,
        target: Option<&str>,
        sweep: &NewSweep,
        at: i64,
    ) -> StoreResult<(u64, Vec<u64>)>;
    fn get_sweep(&self, id: u64) -> StoreResult<Option<SweepRecord>>;
    /// The sweep a run is a cell of: (sweep id, cell index, the cell's values).
    fn sweep_of_run(&self, run: u64) -> StoreResult<Option<(u64, usize, serde_json::Value)>>;
    /// Records the composed grid; false when it was already recorded (composed once).
    fn set_sweep_grid(&self, id: u64, grid: &str) -> StoreResult<bool>;
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

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
    error TEXT
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
";

const COLUMNS: &str = "id, status, workflow_name, workflow, target, queued_at, started_at, \
                       finished_at, nodes, outputs, error";

fn err(e: rusqlite::Error) -> String {
    format!("run store: {e}")
}

fn record(row: &Row) -> rusqlite::Result<RunRecord> {
    let json = |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok(RunRecord {
        id: row.get::<_, i64>(0)? as u64,
        status: row.get(1)?,
        workflow_name: row.get(2)?,
        workflow: row.get(3)?,
        target: row.get(4)?,
        queued_at: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        nodes: json(row.get(8)?),
        outputs: json(row.get(9)?),
        error: row.get::<_, Option<String>>(10)?.map(json),
    })
}

impl SqliteStore {
    /// Opens (or creates) the database file. WAL with `synchronous=NORMAL`: a commit survives
    /// the process being killed, which is the failure the queue must outlive.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| "run store: lock poisoned".to_string())?;
        f(&conn).map_err(err)
    }

    /// Moves queued run `id` on: `set` are the columns it sets, with `?2` standing for `at`.
    /// False when the run is not (or no longer) queued.
    fn update_queued(&self, set: &str, id: u64, at: i64) -> StoreResult<bool> {
        self.with(|c| {
            execute(
                c,
                &format!("UPDATE runs SET {set} WHERE id = ?1 AND status = 'queued'"),
                params![id as i64, at],
            )
            .map(|n| n == 1)
        })
    }
}

/// Runs one statement from the connection's statement cache; the number of rows it changed.
pub(super) fn execute(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

impl RunStore for SqliteStore {
    fn enqueue(
        &self,
        workflow_name: Option<&str>,
        workflow: &str,
        target: Option<&str>,
        at: i64,
    ) -> StoreResult<u64> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO runs (status, workflow_name, workflow, target, queued_at) \
                 VALUES ('queued', ?1, ?2, ?3, ?4)",
            )?
            .execute(params![workflow_name, workflow, target, at])?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    fn get(&self, id: u64) -> StoreResult<Option<RunRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"))?
                .query_row(params![id as i64], record)
                .optional()
        })
    }

    fn list(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<RunRecord>> {
        self.with(|c| {
            let before = before.map_or(i64::MAX, |b| b as i64);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![before, limit as i64], record)?;
            rows.collect()
        })
    }

    fn next_queued(&self) -> StoreResult<Option<RunRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1"
            ))?
            .query_row([], record)
            .optional()
        })
    }

    fn queued(&self, limit: usize) -> StoreResult<(Vec<u64>, usize)> {
        self.with(|c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM runs WHERE status = 'queued'")?
                .query_row([], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT ?1",
            )?;
            let ids = stmt
                .query_map(params![limit as i64], |r| {
                    r.get::<_, i64>(0).map(|i| i as u64)
                })?
                .collect::<rusqlite::Result<Vec<u64>>>()?;
            Ok((ids, total as usize))
        })
    }

    fn start(&self, id: u64, at: i64) -> StoreResult<bool> {
        self.update_queued("status = 'running', started_at = ?2", id, at)
    }

    fn finish(&self, id: u64, f: &Finished) -> StoreResult<()> {
        let error = f.error.as_ref().map(|e| e.to_string());
        let (nodes, outputs) = (f.nodes.to_string(), f.outputs.to_string());
        self.with(|c| {
            execute(
                c,
                "UPDATE runs SET status = ?2, finished_at = ?3, nodes = ?4, outputs = ?5, \
                 error = ?6 WHERE id = ?1",
                params![id as i64, f.status, f.at, nodes, outputs, error],
            )
            .map(|_| ())
        })
    }

    fn cancel_queued(&self, id: u64, at: i64) -> StoreResult<bool> {
        self.update_queued("status = 'cancelled', finished_at = ?2", id, at)
    }

    fn delete_queued(&self, id: u64) -> StoreResult<bool> {
        self.with(|c| {
            execute(
                c,
                "DELETE FROM runs WHERE id = ?1 AND status = 'queued'",
                params![id as i64],
            )
            .map(|n| n == 1)
        })
    }

    fn enqueue_sweep(
        &self,
        workflow_name: Option<&str>,
        target: Option<&str>,
        sweep: &NewSweep,
        at: i64,
    ) -> StoreResult<(u64, Vec<u64>)> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| "run store: lock poisoned".to_string())?;
        let tx = conn.transaction().map_err(err)?;
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
        )
        .map_err(err)?;
        let sweep_id = tx.last_insert_rowid();
        let mut runs = Vec::with_capacity(sweep.cells.len());
        for (cell, (values, workflow)) in sweep.cells.iter().enumerate() {
            tx.prepare_cached(
                "INSERT INTO runs (status, workflow_name, workflow, target, queued_at) \
                 VALUES ('queued', ?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![workflow_name, workflow, target, at]))
            .map_err(err)?;
            let run = tx.last_insert_rowid();
            tx.prepare_cached(
                "INSERT INTO sweep_cells (run, sweep, cell, cell_values) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![run, sweep_id, cell as i64, values.to_string()]))
            .map_err(err)?;
            runs.push(run as u64);
        }
        tx.commit().map_err(err)?;
        Ok((sweep_id as u64, runs))
    }

    fn get_sweep(&self, id: u64) -> StoreResult<Option<SweepRecord>> {
        let json = |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        self.with(|c| {
            let head = c
                .prepare_cached(
                    "SELECT mode, axes, grid_rows, grid_columns, layout, grid FROM sweeps WHERE id = ?1",
                )?
                .query_row(params![id as i64], |r| {
                    Ok(SweepRecord {
                        id,
                        mode: r.get(0)?,
                        axes: json(r.get(1)?),
                        rows: json(r.get(2)?),
                        columns: json(r.get(3)?),
                        layout: json(r.get(4)?),
                        cells: Vec::new(),
                        grid: r.get(5)?,
                    })
                })
                .optional()?;
            let Some(mut sweep) = head else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT sweep_cells.run, sweep_cells.cell_values, runs.status, runs.outputs \
                 FROM sweep_cells LEFT JOIN runs ON runs.id = sweep_cells.run \
                 WHERE sweep_cells.sweep = ?1 ORDER BY sweep_cells.cell",
            )?;
            sweep.cells = stmt
                .query_map(params![id as i64], |r| {
                    Ok(SweepCell {
                        run: r.get::<_, i64>(0)? as u64,
                        values: json(r.get(1)?),
                        status: r
                            .get::<_, Option<String>>(2)?
                            .unwrap_or_else(|| "deleted".into()),
                        outputs: r
                            .get::<_, Option<String>>(3)?
                            .map_or(serde_json::Value::Null, json),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(sweep))
        })
    }

    fn sweep_of_run(&self, run: u64) -> StoreResult<Option<(u64, usize, serde_json::Value)>> {
        self.with(|c| {
            c.prepare_cached("SELECT sweep, cell, cell_values FROM sweep_cells WHERE run = ?1")?
                .query_row(params![run as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as usize,
                        serde_json::from_str(&r.get::<_, String>(2)?)
                            .unwrap_or(serde_json::Value::Null),
                    ))
                })
                .optional()
        })
    }

    fn set_sweep_grid(&self, id: u64, grid: &str) -> StoreResult<bool> {
        self.with(|c| {
            execute(
                c,
                "UPDATE sweeps SET grid = ?2 WHERE id = ?1 AND grid IS NULL",
                params![id as i64, grid],
            )
            .map(|n| n == 1)
        })
    }

    fn interrupt_running(&self, at: i64) -> StoreResult<Vec<u64>> {
        self.with(|c| {
            let ids = c
                .prepare("SELECT id FROM runs WHERE status = 'running' ORDER BY id")?
                .query_map([], |r| r.get::<_, i64>(0).map(|i| i as u64))?
                .collect::<rusqlite::Result<Vec<u64>>>()?;
            c.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?1, \
                 error = '{\"message\":\"the server stopped while this run was going\"}' \
                 WHERE status = 'running'",
                params![at],
            )?;
            Ok(ids)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_order_interrupts_and_history_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.sqlite");
        {
            let s = SqliteStore::open(&path).unwrap();
            for i in 0..4 {
                s.enqueue(Some("w"), "{}", None, i).unwrap();
            }
            assert_eq!(s.next_queued().unwrap().unwrap().id, 1);
            assert!(s.start(1, 10).unwrap());
            assert!(!s.start(1, 10).unwrap(), "a run starts once");
            assert!(s.delete_queued(4).unwrap());
            assert!(!s.delete_queued(1).unwrap(), "running runs are not deleted");
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.interrupt_running(20).unwrap(), vec![1]);
        assert_eq!(s.get(1).unwrap().unwrap().status, "interrupted");
        assert_eq!(s.queued(10).unwrap(), (vec![2, 3], 2));
        let id = s.enqueue(None, "{}", None, 30).unwrap();
        assert_eq!(id, 5, "ids are never reused, even after a delete");
        let listed: Vec<u64> = s.list(None, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(listed, vec![5, 3, 2, 1]);
        let page: Vec<u64> = s.list(Some(3), 1).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(page, vec![2]);
    }
}
