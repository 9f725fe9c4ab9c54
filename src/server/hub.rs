//! The fan-out to WebSocket clients: one bounded broadcast ring of ready-made JSON texts.
//! Sending never waits; a client that falls more than the ring's length behind is dropped
//! (it reconnects and re-reads state), so a slow client never slows a run or grows memory.
use std::sync::Arc;

use tokio::sync::broadcast;

pub struct Hub {
    sender: broadcast::Sender<Arc<str>>,
    /// Progress events with a preview image: a client that falls behind here skips previews
    /// (they are superseded by the next one) instead of being dropped.
    previews: broadcast::Sender<Arc<str>>,
}

/// Previews a client may fall behind before it skips some.
pub const PREVIEWS_KEPT: usize = 16;

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(16));
        let (previews, _) = broadcast::channel(PREVIEWS_KEPT);
        Self { sender, previews }
    }

    pub fn send(&self, message: Arc<str>) {
        // No receiver (no client connected) is not an error.
        let _ = self.sender.send(message);
    }

    pub fn sender(&self) -> broadcast::Sender<Arc<str>> {
        self.sender.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.sender.subscribe()
    }

    pub fn preview_sender(&self) -> broadcast::Sender<Arc<str>> {
        self.previews.clone()
    }

    pub fn subscribe_previews(&self) -> broadcast::Receiver<Arc<str>> {
        self.previews.subscribe()
    }
}
