//! The fan-out to WebSocket clients: one bounded broadcast ring of typed events, each with its
//! JSON text made once when sent (server::events). Sending never waits; a client that falls
//! more than the ring's length, or more than its byte bound, behind is dropped (it reconnects
//! and re-reads state), so a slow client never slows a run or grows memory. Messages stay
//! small: a large one (a run's thousand diagnostics) goes out cut short with the URL that
//! returns it whole, so the ring holds small messages only.
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

pub use super::events::INLINE_BYTES;
use super::events::{Broadcast, ServerEvent};

/// The size a ring counts a message as.
pub trait Weight {
    fn bytes(&self) -> usize;
}

impl Weight for Arc<str> {
    fn bytes(&self) -> usize {
        self.len()
    }
}

/// An event weighs its JSON text, the bytes a /ws client is sent.
impl Weight for Arc<Broadcast> {
    fn bytes(&self) -> usize {
        self.json().len()
    }
}

/// A broadcast ring that counts the bytes sent through it, so each subscriber knows how many
/// bytes it is behind (a message count alone lets a client of large messages hold megabytes).
pub struct Ring<T> {
    sender: broadcast::Sender<T>,
    /// Bytes ever sent; locked around each send and subscribe so a subscriber's start is exact.
    sent: Arc<Mutex<u64>>,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            sent: self.sent.clone(),
        }
    }
}

impl<T: Weight + Clone> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(16));
        Self {
            sender,
            sent: Arc::new(Mutex::new(0)),
        }
    }

    pub fn send(&self, message: T) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        *sent += message.bytes() as u64;
        // No receiver (no client connected) is not an error.
        let _ = self.sender.send(message);
    }

    pub fn subscribe(&self) -> Subscriber<T> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        Subscriber {
            receiver: self.sender.subscribe(),
            sent: self.sent.clone(),
            taken: *sent,
        }
    }
}

/// One client's place in a [`Ring`].
pub struct Subscriber<T> {
    receiver: broadcast::Receiver<T>,
    sent: Arc<Mutex<u64>>,
    /// Bytes sent before this subscriber joined plus the bytes it has received.
    taken: u64,
}

impl<T: Weight + Clone> Subscriber<T> {
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        let received = self.receiver.recv().await;
        self.count(received)
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.receiver.try_recv() {
            Ok(message) => {
                self.taken += message.bytes() as u64;
                Ok(message)
            }
            Err(TryRecvError::Lagged(n)) => {
                self.catch_up();
                Err(TryRecvError::Lagged(n))
            }
            Err(e) => Err(e),
        }
    }

    pub fn blocking_recv(&mut self) -> Result<T, RecvError> {
        let received = self.receiver.blocking_recv();
        self.count(received)
    }

    /// Bytes sent into the ring that this subscriber has not received yet.
    pub fn bytes_behind(&self) -> u64 {
        let sent = *self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.saturating_sub(self.taken)
    }

    fn count(&mut self, received: Result<T, RecvError>) -> Result<T, RecvError> {
        match received {
            Ok(message) => {
                self.taken += message.bytes() as u64;
                Ok(message)
            }
            Err(RecvError::Lagged(n)) => {
                self.catch_up();
                Err(RecvError::Lagged(n))
            }
            Err(e) => Err(e),
        }
    }

    /// After a lag the ring skipped messages of unknown size: count from what is left in it.
    fn catch_up(&mut self) {
        let sent = *self.sent.lock().unwrap_or_else(|e| e.into_inner());
        self.taken = sent;
    }
}

pub struct Hub {
    messages: Ring<Arc<Broadcast>>,
    /// Progress events with a preview image: a client that falls behind here skips previews
    /// (they are superseded by the next one) instead of being dropped.
    previews: broadcast::Sender<Arc<Broadcast>>,
}

/// Previews a client may fall behind before it skips some.
pub const PREVIEWS_KEPT: usize = 16;

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let (previews, _) = broadcast::channel(PREVIEWS_KEPT);
        Self {
            messages: Ring::new(capacity),
            previews,
        }
    }

    pub fn send(&self, event: ServerEvent) {
        self.messages.send(Broadcast::new(event));
    }

    /// Sends a message already made (one relayed from another machine).
    pub fn send_broadcast(&self, message: Arc<Broadcast>) {
        self.messages.send(message);
    }

    /// A handle that sends as [`Hub::send`] does, for threads that outlive a borrow.
    pub fn sender(&self) -> HubSender {
        HubSender(self.messages.clone())
    }

    pub fn subscribe(&self) -> Subscriber<Arc<Broadcast>> {
        self.messages.subscribe()
    }

    pub fn preview_sender(&self) -> broadcast::Sender<Arc<Broadcast>> {
        self.previews.clone()
    }

    pub fn subscribe_previews(&self) -> broadcast::Receiver<Arc<Broadcast>> {
        self.previews.subscribe()
    }
}

/// See [`Hub::sender`].
#[derive(Clone)]
pub struct HubSender(Ring<Arc<Broadcast>>);

impl HubSender {
    pub fn send(&self, event: ServerEvent) {
        self.0.send(Broadcast::new(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_knows_how_many_bytes_it_is_behind() {
        let ring: Ring<Arc<str>> = Ring::new(64);
        ring.send("before".into());
        let mut late = ring.subscribe();
        assert_eq!(
            late.bytes_behind(),
            0,
            "what came before joining does not count"
        );
        ring.send("12345".into());
        ring.send("123".into());
        assert_eq!(late.bytes_behind(), 8);
        assert_eq!(&*late.try_recv().unwrap(), "12345");
        assert_eq!(late.bytes_behind(), 3);
    }
}
