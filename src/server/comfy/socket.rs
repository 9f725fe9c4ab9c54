//! `/ws?clientId=`: ComfyUI's socket; `status` with the `sid` first, then the messages of the
//! prompts of that client and every `status`.
use super::*;

/// Subscribes before answering the upgrade, so a prompt posted right after the handshake
/// cannot start before this client hears of it.
pub fn ws_upgrade(state: AppState, ws: WebSocketUpgrade, client_id: String) -> Response {
    let messages = state.comfy.out.subscribe();
    ws.max_message_size(64 << 10)
        .on_upgrade(move |socket| ws_client(state, socket, client_id, messages))
}

pub(super) async fn ws_client(
    state: AppState,
    mut socket: WebSocket,
    sid: String,
    mut messages: Subscriber<Arc<Outgoing>>,
) {
    let hello = json!({"type": "status", "data": {"status": exec_info(&state), "sid": sid}});
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let now = state.comfy.executing.lock().ok().and_then(|e| e.clone());
    if let Some((client, prompt_id, node)) = now {
        if client == sid {
            let m = json!({"type": "executing", "data": {"node": node, "display_node": node, "prompt_id": prompt_id}});
            if socket
                .send(Message::Text(m.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let bound = state.config.client_bytes as u64;
    loop {
        let frame = tokio::select! {
            message = messages.recv() => match message {
                Ok(m) => {
                    if m.to.as_deref().is_some_and(|to| to != sid) {
                        continue;
                    }
                    match &m.frame {
                        Frame::Text(t) => Message::Text(t.as_ref().into()),
                        Frame::Binary(b) => Message::Binary(b.clone()),
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    return close_too_slow(&mut socket, &format!("{missed} messages behind"), "").await;
                }
                Err(RecvError::Closed) => return,
            },
            // ComfyUI clients may announce feature flags; weft needs none of them.
            incoming = socket.recv() => {
                if client_left(incoming) {
                    return;
                }
                continue;
            }
        };
        match deliver(&mut socket, vec![frame], || messages.bytes_behind(), bound).await {
            Delivery::Sent => {}
            Delivery::Gone => return,
            Delivery::TooFarBehind(bytes) => {
                return close_too_slow(&mut socket, &format!("{bytes} bytes behind"), "").await;
            }
        }
    }
}

/// `/comfy/ws`, the socket of ComfyUI's frontend: with `?clientId=` (a page reconnecting) the
/// client keeps its id, else it is given one, sent as the `sid` of the first `status`.
pub(super) async fn frontend_socket(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    connection: Option<axum::Extension<crate::server::listen::ConnectionSocket>>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(axum::Extension(socket)) = connection {
        if let Err(e) = socket.limit_send_buffer(crate::server::ws_send::SEND_BUFFER) {
            eprintln!("weft serve: cannot bound a WebSocket's send buffer: {e}");
        }
    }
    let sid = query
        .get("clientId")
        .filter(|c| !c.is_empty() && c.len() <= 200)
        .cloned()
        .unwrap_or_else(uuid4);
    ws_upgrade(state, ws, sid)
}
