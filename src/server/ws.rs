//! `/ws`: every message of the hub, as text frames. The first frame is the current `queue`.
//! A client that falls behind the hub's ring is sent a close frame and dropped.
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::SinkExt;
use tokio::sync::broadcast::error::RecvError;

use super::queue::queue_message;
use super::AppState;

/// The guard middleware has already checked Origin, Host and token for the upgrade request.
/// With `?clientId=` the socket speaks ComfyUI's protocol instead (comfy_api).
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(client_id) = query.get("clientId") {
        return super::comfy_api::ws_upgrade(state, ws, client_id.clone());
    }
    ws.max_message_size(64 << 10)
        .on_upgrade(move |socket| client(state, socket))
}

async fn client(state: AppState, mut socket: WebSocket) {
    let mut messages = state.hub.subscribe();
    let mut previews = state.hub.subscribe_previews();
    if let Some(m) = queue_message(&*state.store, &state.queue) {
        if socket.send(Message::Text(m.as_ref().into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            // A preview is sent before whatever came after it on the main ring.
            biased;
            preview = previews.recv() => match preview {
                Ok(text) => {
                    if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            message = messages.recv() => match message {
                Ok(text) => {
                    // Whatever else is already waiting goes out in the same write.
                    let mut batch = vec![text];
                    while batch.len() < 256 {
                        match messages.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    for text in batch {
                        if socket.feed(Message::Text(text.as_ref().into())).await.is_err() {
                            return;
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    return close_too_slow(&mut socket, missed, "; reconnect and re-read state").await;
                }
                Err(RecvError::Closed) => return,
            },
            // Clients have nothing to say yet; pings are answered by axum.
            incoming = socket.recv() => if client_left(incoming) {
                return;
            },
        }
    }
}

/// Tells a client that fell `missed` messages behind the hub why it is dropped: close code
/// 1008 with the reason "too slow: N messages behind" and `advice` after it.
pub(super) async fn close_too_slow(socket: &mut WebSocket, missed: u64, advice: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: format!("too slow: {missed} messages behind{advice}").into(),
        })))
        .await;
}

/// Whether what the client sent ends the connection: a close frame, an error or the end of
/// the stream. Anything else a client says is ignored.
pub(super) fn client_left(incoming: Option<Result<Message, axum::Error>>) -> bool {
    matches!(incoming, Some(Ok(Message::Close(_))) | None | Some(Err(_)))
}
