//! `/ws`: every message of the hub, as text frames. The first frame is the current `queue`.
//! A client that falls behind the hub's ring (in messages or in bytes) is sent a close frame
//! and dropped; its kernel send buffer is bounded, so a client that never reads is found out.
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use futures_util::SinkExt;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

use super::listen::ConnectionSocket;
use super::queue::queue_message;
use super::AppState;

/// What the kernel may hold for one WebSocket client, in bytes (Linux counts double this):
/// without a bound it grows its buffers to megabytes for a client that never reads, and the
/// server, whose writes keep succeeding, never learns the client is behind.
pub(super) const SEND_BUFFER: usize = 64 << 10;

/// How often a write stalled on a client that does not read checks how far behind it is.
const STALL_CHECK: Duration = Duration::from_millis(100);

/// The guard middleware has already checked Origin, Host and token for the upgrade request.
/// With `?clientId=` the socket speaks ComfyUI's protocol instead (comfy_api).
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    connection: Option<Extension<ConnectionSocket>>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(Extension(socket)) = connection {
        if let Err(e) = socket.limit_send_buffer(SEND_BUFFER) {
            eprintln!("weft serve: cannot bound a WebSocket's send buffer: {e}");
        }
    }
    if let Some(client_id) = query.get("clientId") {
        return super::comfy_api::ws_upgrade(state, ws, client_id.clone());
    }
    ws.max_message_size(64 << 10)
        .on_upgrade(move |socket| client(state, socket))
}

async fn client(state: AppState, mut socket: WebSocket) {
    let mut messages = state.hub.subscribe();
    let mut previews = state.hub.subscribe_previews();
    let bound = state.config.client_bytes as u64;
    if let Some(m) = queue_message(&*state.store, &state.queue) {
        if socket.send(Message::Text(m.as_ref().into())).await.is_err() {
            return;
        }
    }
    const ADVICE: &str = "; reconnect and re-read state";
    loop {
        let frames = tokio::select! {
            // A preview is sent before whatever came after it on the main ring.
            biased;
            preview = previews.recv() => match preview {
                Ok(text) => vec![Message::Text(text.as_ref().into())],
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            message = messages.recv() => match message {
                Ok(text) => {
                    // Whatever else is already waiting goes out in the same write.
                    let mut batch = vec![Message::Text(text.as_ref().into())];
                    while batch.len() < 256 {
                        match messages.try_recv() {
                            Ok(more) => batch.push(Message::Text(more.as_ref().into())),
                            Err(_) => break,
                        }
                    }
                    batch
                }
                Err(RecvError::Lagged(missed)) => {
                    return close_too_slow(&mut socket, &format!("{missed} messages behind"), ADVICE).await;
                }
                Err(RecvError::Closed) => return,
            },
            // Clients have nothing to say yet; pings are answered by axum.
            incoming = socket.recv() => {
                if client_left(incoming) {
                    return;
                }
                continue;
            }
        };
        match deliver(&mut socket, frames, || messages.bytes_behind(), bound).await {
            Delivery::Sent => {}
            Delivery::Gone => return,
            Delivery::TooFarBehind(bytes) => {
                return close_too_slow(&mut socket, &format!("{bytes} bytes behind"), ADVICE).await;
            }
        }
    }
}

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
