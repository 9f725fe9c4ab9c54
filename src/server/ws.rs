//! `/ws`: every message of the hub, as text frames of the JSON each event was serialised to
//! once when sent (server::events). The first frame is the current `queue`.
//! A client that falls behind the hub's ring (in messages or in bytes) is sent a close frame
//! and dropped; its kernel send buffer is bounded, so a client that never reads is found out.
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use tokio::sync::broadcast::error::RecvError;

use super::events::{Broadcast, ServerEvent};
use super::listen::ConnectionSocket;
use super::queue::queue_message;
use super::ws_send::{client_left, close_too_slow, deliver, Delivery, SEND_BUFFER};
use super::AppState;

/// The guard middleware has already checked Origin, Host and token for the upgrade request.
/// With `?clientId=` the socket speaks ComfyUI's protocol instead (server::comfy).
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
        return super::comfy::ws_upgrade(state, ws, client_id.clone());
    }
    ws.max_message_size(64 << 10)
        .on_upgrade(move |socket| client(state, socket))
}

async fn client(state: AppState, mut socket: WebSocket) {
    let mut messages = state.hub.subscribe();
    let mut previews = state.hub.subscribe_previews();
    let bound = state.config.client_bytes as u64;
    if let Some(m) = queue_message(&*state.store, &state.queue) {
        let first = Broadcast::new(m);
        if socket.send(text_frame(&first)).await.is_err() {
            return;
        }
    }
    const ADVICE: &str = "; reconnect and re-read state";
    loop {
        let frames = tokio::select! {
            // A preview is sent before whatever came after it on the main ring.
            biased;
            preview = previews.recv() => match preview {
                Ok(event) => vec![text_frame(&event)],
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            message = messages.recv() => match message {
                Ok(event) => {
                    // Whatever else is already waiting goes out in the same write.
                    let mut batch = Vec::new();
                    let mut next = Some(event);
                    while let Some(event) = next.take() {
                        if !is_internal(&event) {
                            batch.push(text_frame(&event));
                        }
                        if batch.len() < 256 {
                            next = messages.try_recv().ok();
                        }
                    }
                    if batch.is_empty() {
                        continue;
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

fn text_frame(event: &Broadcast) -> Message {
    Message::Text(event.json().as_ref().into())
}

/// Markers a process sends itself through its hub, not news for clients.
fn is_internal(event: &Broadcast) -> bool {
    matches!(event.event(), ServerEvent::FleetFlush { .. })
}
