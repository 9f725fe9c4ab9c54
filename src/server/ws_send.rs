//! Writing to a WebSocket client that may not keep up, shared by weft's socket (ws.rs) and
//! ComfyUI's (comfy/socket.rs): a bounded delivery and the close frame that says why.
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use std::time::Duration;

/// What the kernel may hold for one WebSocket client, in bytes (Linux counts double this):
/// without a bound it grows its buffers to megabytes for a client that never reads, and the
/// server, whose writes keep succeeding, never learns the client is behind.
pub(super) const SEND_BUFFER: usize = 64 << 10;

/// How often a write stalled on a client that does not read checks how far behind it is.
const STALL_CHECK: Duration = Duration::from_millis(100);

/// How a [`deliver`] ended.
pub(super) enum Delivery {
    Sent,
    /// The connection failed or closed.
    Gone,
    /// The client fell this many bytes behind its ring, over its bound.
    TooFarBehind(u64),
}

/// Writes `frames` and flushes them, unless the client is, or falls while the write waits,
/// more than `bound` bytes behind (`behind` tells): a client that does not read stalls the
/// write, and the ring moving on meanwhile is what shows it is not keeping up.
pub(super) async fn deliver(
    socket: &mut WebSocket,
    frames: Vec<Message>,
    behind: impl Fn() -> u64,
    bound: u64,
) -> Delivery {
    let over = |bytes: u64| (bytes > bound).then_some(Delivery::TooFarBehind(bytes));
    if let Some(dropped) = over(behind()) {
        return dropped;
    }
    let writing = async {
        for frame in frames {
            socket.feed(frame).await?;
        }
        socket.flush().await
    };
    tokio::pin!(writing);
    let mut check = tokio::time::interval(STALL_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            written = &mut writing => {
                return if written.is_ok() { Delivery::Sent } else { Delivery::Gone };
            }
            _ = check.tick() => {
                if let Some(dropped) = over(behind()) {
                    return dropped;
                }
            }
        }
    }
}

/// Tells a client that fell `how_far` behind why it is dropped: close code 1008 with the reason
/// "too slow: <how_far>" and `advice` after it. A client that reads nothing never takes the
/// frame: it gets a moment, then the connection is dropped all the same.
pub(super) async fn close_too_slow(socket: &mut WebSocket, how_far: &str, advice: &str) {
    eprintln!("weft serve: dropped a WebSocket client {how_far}");
    let close = socket.send(Message::Close(Some(CloseFrame {
        code: 1008,
        reason: format!("too slow: {how_far}{advice}").into(),
    })));
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}

/// Whether what the client sent ends the connection: a close frame, an error or the end of
/// the stream. Anything else a client says is ignored.
pub(super) fn client_left(incoming: Option<Result<Message, axum::Error>>) -> bool {
    matches!(incoming, Some(Ok(Message::Close(_))) | None | Some(Err(_)))
}
