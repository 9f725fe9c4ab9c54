//! The prompts posted to `POST /prompt` and the images of their output nodes, read through the
//! run store (they live next to the runs; `store::ComfyPrompt`). A store error reads as "not
//! there" for ComfyUI's clients and is logged for the operator.
use super::*;

/// Logs a store error once where it is swallowed (ComfyUI's routes answer "not found").
fn logged<T>(result: Result<T, StoreError>) -> Option<T> {
    result
        .map_err(|e| eprintln!("weft serve: ComfyUI API: {e}"))
        .ok()
}

impl Comfy {
    /// The prompt of run `run`, if it was posted here.
    pub(super) fn prompt_of_run(&self, run: u64) -> Option<Arc<Prompt>> {
        if let Some(p) = self.live.lock().ok()?.get(&run) {
            return Some(p.clone());
        }
        logged(self.store.prompt_of_run(run))
            .flatten()
            .map(Arc::new)
    }

    pub(super) fn prompt_by_id(&self, prompt_id: &str) -> Option<Prompt> {
        logged(self.store.prompt_by_id(prompt_id)).flatten()
    }

    /// The newest `limit` prompts, oldest first (ComfyUI's history order).
    pub(super) fn newest(&self, limit: usize) -> Vec<Prompt> {
        logged(self.store.newest_prompts(limit)).unwrap_or_default()
    }

    pub(super) fn remember_images(&self, identity: &str, images: &[Json_]) {
        logged(self.store.remember_images(identity, images));
    }

    pub(super) fn recall_images(&self, identity: &str) -> Option<Vec<Json_>> {
        logged(self.store.recall_images(identity)).flatten()
    }
}
