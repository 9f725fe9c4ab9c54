//! The fan-out to WebSocket clients: one bounded broadcast ring of ready-made JSON texts.
//! Sending never waits; a client that falls more than the ring's length, or more than its byte
//! bound, behind is dropped (it reconnects and re-reads state), so a slow client never slows a
//! run or grows memory. Messages stay small: a large one (a run's thousand diagnostics) goes
//! out cut short with the URL that returns it whole, so the ring holds small messages only.
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// The largest message broadcast as it is; a larger one is cut short (`shrink`).
pub const INLINE_BYTES: usize = 64 << 10;

/// The size a ring counts a message as.
pub trait Weight {
    fn bytes(&self) -> usize;
}

impl Weight for Arc<str> {
    fn bytes(&self) -> usize {
        self.len()
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
    messages: Ring<Arc<str>>,
    /// Progress events with a preview image: a client that falls behind here skips previews
    /// (they are superseded by the next one) instead of being dropped.
    previews: broadcast::Sender<Arc<str>>,
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

    pub fn send(&self, message: Arc<str>) {
        self.messages.send(shrink(message));
    }

    /// A handle that sends as [`Hub::send`] does, for threads that outlive a borrow.
    pub fn sender(&self) -> HubSender {
        HubSender(self.messages.clone())
    }

    pub fn subscribe(&self) -> Subscriber<Arc<str>> {
        self.messages.subscribe()
    }

    pub fn preview_sender(&self) -> broadcast::Sender<Arc<str>> {
        self.previews.clone()
    }

    pub fn subscribe_previews(&self) -> broadcast::Receiver<Arc<str>> {
        self.previews.subscribe()
    }
}

/// See [`Hub::sender`].
#[derive(Clone)]
pub struct HubSender(Ring<Arc<str>>);

impl HubSender {
    pub fn send(&self, message: Arc<str>) {
        self.0.send(shrink(message));
    }
}

/// Diagnostics kept in a message that was cut short.
const KEPT_DIAGNOSTICS: usize = 3;
/// Characters kept of any one text in a message that was cut short.
const KEPT_CHARS: usize = 512;

/// `message` as it is when it is at most [`INLINE_BYTES`]; else cut short: the first few
/// diagnostics of its lists, every long text cut, and `"omitted": {"bytes", "url"?}` saying
/// how large it was and where the API returns it whole (`/api/runs/{run}` for a run's
/// event, `/api/workflows/{name}` for a workflow's).
pub fn shrink(message: Arc<str>) -> Arc<str> {
    if message.len() <= INLINE_BYTES {
        return message;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&message) else {
        // Every hub message is a JSON object; anything else is not worth holding whole.
        eprintln!(
            "weft serve: dropped a {}-byte broadcast that is not a JSON object",
            message.len()
        );
        return json!({"event": "omitted", "omitted": {"bytes": message.len()}})
            .to_string()
            .into();
    };
    let url = match (object.get("run"), object.get("name")) {
        (Some(Value::Number(run)), _) => Some(format!("/api/runs/{run}")),
        (_, Some(Value::String(name))) => Some(format!("/api/workflows/{name}")),
        _ => None,
    };
    for (key, value) in object.iter_mut() {
        if key == "event" {
            continue;
        }
        cut(value, 0);
    }
    let mut omitted = json!({"bytes": message.len()});
    if let Some(url) = url {
        omitted["url"] = url.into();
    }
    object.insert("omitted".into(), omitted);
    let shrunk = Value::Object(object).to_string();
    if shrunk.len() > INLINE_BYTES {
        // Deeply nested or very wide: keep only what says what it was.
        return json!({"event": "omitted", "omitted": {"bytes": message.len()}})
            .to_string()
            .into();
    }
    shrunk.into()
}

/// Cuts long texts and long lists inside `value` (lists of objects keep their first
/// [`KEPT_DIAGNOSTICS`], with a count of all).
fn cut(value: &mut Value, depth: usize) {
    match value {
        Value::String(text) if text.len() > KEPT_CHARS => {
            let total = text.chars().count();
            let kept: String = text.chars().take(KEPT_CHARS).collect();
            *text = format!("{kept}... ({total} characters)");
        }
        Value::Array(items) => {
            items.truncate(KEPT_DIAGNOSTICS);
            for item in items {
                cut(item, depth + 1);
            }
        }
        Value::Object(fields) => {
            if depth > 4 {
                fields.clear();
                return;
            }
            for (_, field) in fields.iter_mut() {
                cut(field, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_megabyte_diagnostic_is_broadcast_by_reference() {
        let diagnostics: Vec<Value> = (0..2000)
            .map(|i| json!({"node": format!("n{i}"), "message": "x".repeat(500)}))
            .collect();
        let message = json!({"event": "invalid", "run": 7, "errors": diagnostics}).to_string();
        assert!(message.len() > 1 << 20);
        let shrunk = shrink(message.clone().into());
        assert!(shrunk.len() < 4 << 10, "{} bytes", shrunk.len());
        let v: Value = serde_json::from_str(&shrunk).unwrap();
        assert_eq!(v["event"], "invalid");
        assert_eq!(v["errors"].as_array().unwrap().len(), KEPT_DIAGNOSTICS);
        assert_eq!(v["errors"][0]["node"], "n0");
        assert_eq!(v["omitted"]["url"], "/api/runs/7");
        assert_eq!(v["omitted"]["bytes"], message.len());

        let one_huge = json!({"event": "workflow_invalid", "name": "w", "diagnostics":
            [{"message": "y".repeat(1 << 20)}]});
        let v: Value = serde_json::from_str(&shrink(one_huge.to_string().into())).unwrap();
        assert_eq!(v["omitted"]["url"], "/api/workflows/w");
        assert!(v["diagnostics"][0]["message"].as_str().unwrap().len() < 1024);

        let small: Arc<str> = json!({"event": "run_queued", "run": 1}).to_string().into();
        assert!(
            Arc::ptr_eq(&shrink(small.clone()), &small),
            "small ones pass as they are"
        );
    }

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
