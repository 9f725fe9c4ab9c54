//! The prompts posted to `POST /prompt` and the images of their output nodes, kept in the run
//! database next to the runs (tables `comfy_prompts`, `comfy_outputs`).
use super::*;

pub(super) const SCHEMA: &str = "
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

pub(super) fn db_err(e: rusqlite::Error) -> String {
    format!("comfy prompts: {e}")
}

pub(super) fn row(r: &rusqlite::Row) -> rusqlite::Result<Prompt> {
    let json = |t: String| serde_json::from_str(&t).unwrap_or(Json_::Null);
    let ids: Vec<(String, String)> =
        serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default();
    let outputs: Vec<String> = serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default();
    Ok(Prompt {
        run: r.get::<_, i64>(0)? as u64,
        prompt_id: r.get(1)?,
        client_id: r.get(2)?,
        prompt: json(r.get(3)?),
        extra_data: json(r.get(4)?),
        ids,
        outputs,
    })
}

pub(super) const COLUMNS: &str = "run, prompt_id, client_id, prompt, extra_data, ids, outputs";

impl Comfy {
    pub(super) fn with_db<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        let conn = self.db.lock().map_err(|_| "comfy prompts: lock poisoned")?;
        f(&conn).map_err(db_err)
    }

    /// The prompt of run `run`, if it was posted here.
    pub(super) fn prompt_of_run(&self, run: u64) -> Option<Arc<Prompt>> {
        if let Some(p) = self.live.lock().ok()?.get(&run) {
            return Some(p.clone());
        }
        self.with_db(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM comfy_prompts WHERE run = ?1"
            ))?
            .query_row(params![run as i64], row)
            .optional()
        })
        .ok()
        .flatten()
        .map(Arc::new)
    }

    pub(super) fn prompt_by_id(&self, prompt_id: &str) -> Option<Prompt> {
        self.with_db(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM comfy_prompts WHERE prompt_id = ?1"
            ))?
            .query_row(params![prompt_id], row)
            .optional()
        })
        .ok()
        .flatten()
    }

    /// The newest `limit` prompts, oldest first (ComfyUI's history order).
    pub(super) fn newest(&self, limit: usize) -> Vec<Prompt> {
        let mut rows = self
            .with_db(|c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM comfy_prompts ORDER BY run DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map(params![limit as i64], row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_default();
        rows.reverse();
        rows
    }

    pub(super) fn remember_images(&self, identity: &str, images: &[Json_]) {
        let text = Json_::Array(images.to_vec()).to_string();
        let _ = self.with_db(|c| {
            c.prepare_cached(
                "INSERT INTO comfy_outputs (identity, images) VALUES (?1, ?2) \
                 ON CONFLICT (identity) DO UPDATE SET images = excluded.images",
            )?
            .execute(params![identity, text])
        });
    }

    pub(super) fn recall_images(&self, identity: &str) -> Option<Vec<Json_>> {
        let text: Option<String> = self
            .with_db(|c| {
                c.prepare_cached("SELECT images FROM comfy_outputs WHERE identity = ?1")?
                    .query_row(params![identity], |r| r.get(0))
                    .optional()
            })
            .ok()
            .flatten();
        serde_json::from_str(&text?).ok()
    }
}
