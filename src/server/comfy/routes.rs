//! Where ComfyUI's routes are: each at `/x` and `/api/x`, as ComfyUI serves them, and again
//! under `/comfy/` for ComfyUI's frontend served there (frontend.rs), with the routes only the
//! frontend calls.
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use super::{files, frontend, history, object_info, prompt, queue, socket, userdata};
use crate::server::AppState;

/// ComfyUI's routes, at `/x` and `/api/x` as ComfyUI serves them, and under `/comfy/`.
const API_PREFIXES: [&str; 4] = ["", "/api", "/comfy", "/comfy/api"];

pub fn routes(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for prefix in API_PREFIXES {
        router = router
            .route(
                &format!("{prefix}/prompt"),
                get(prompt::get_prompt).post(prompt::post_prompt),
            )
            .route(
                &format!("{prefix}/object_info"),
                get(object_info::get_object_info),
            )
            .route(
                &format!("{prefix}/object_info/{{class}}"),
                get(object_info::get_object_info_one),
            )
            .route(&format!("{prefix}/history"), get(history::history))
            .route(
                &format!("{prefix}/history/{{prompt_id}}"),
                get(history::history_one),
            )
            .route(&format!("{prefix}/view"), get(files::view))
            .route(
                &format!("{prefix}/queue"),
                get(queue::get_queue).post(queue::post_queue),
            )
            .route(&format!("{prefix}/interrupt"), post(queue::post_interrupt))
            .route(
                &format!("{prefix}/system_stats"),
                get(object_info::system_stats),
            );
    }
    let router = router.layer(DefaultBodyLimit::max(state.config.body_limit));
    let mut uploads = Router::new();
    for prefix in API_PREFIXES {
        uploads = uploads.route(&format!("{prefix}/upload/image"), post(files::upload_image));
    }
    for prefix in ["/comfy", "/comfy/api"] {
        uploads = uploads.route(&format!("{prefix}/upload/mask"), post(files::upload_mask));
    }
    router
        .merge(frontend_routes().layer(DefaultBodyLimit::max(state.config.body_limit)))
        .merge(uploads.layer(DefaultBodyLimit::max(state.config.upload_limit)))
}

/// The routes only ComfyUI's frontend calls, under `/comfy/api/` (and `/comfy/`, as ComfyUI
/// answers both), its socket and its static files.
fn frontend_routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/comfy", get(frontend::redirect))
        .route("/comfy/", get(frontend::asset))
        .route("/comfy/{*path}", get(frontend::asset))
        .route("/comfy/ws", get(socket::frontend_socket))
        .route(
            &format!("/comfy{}", frontend::FOLLOW_YAML_EXTENSION),
            get(frontend::follow_yaml_extension),
        )
        .route("/comfy/internal/folder_paths", get(frontend::folder_paths))
        .route(
            "/comfy/internal/files/{kind}",
            get(frontend::internal_files),
        )
        .route(
            "/comfy/templates/index.json",
            get(frontend::templates_index),
        )
        .route("/comfy/templates/{file}", get(frontend::template));
    for prefix in ["/comfy", "/comfy/api"] {
        let at = |path: &str| format!("{prefix}{path}");
        router = router
            .route(&at("/extensions"), get(frontend::extensions))
            .route(&at("/users"), get(frontend::users))
            .route(
                &at("/settings"),
                get(frontend::get_settings).post(frontend::post_settings),
            )
            .route(
                &at("/settings/{id}"),
                get(frontend::get_setting).post(frontend::post_setting),
            )
            .route(&at("/userdata"), get(userdata::list))
            .route(&at("/v2/userdata"), get(userdata::list_v2))
            .route(
                &at("/userdata/{file}"),
                get(userdata::get)
                    .post(userdata::post)
                    .delete(userdata::delete),
            )
            .route(
                &at("/userdata/{file}/move/{dest}"),
                post(userdata::move_file),
            )
            .route(&at("/i18n"), get(frontend::i18n))
            .route(&at("/global_subgraphs"), get(frontend::empty_object))
            .route(&at("/workflow_templates"), get(frontend::empty_object))
            .route(&at("/node_replacements"), get(frontend::empty_object))
            .route(&at("/embeddings"), get(frontend::empty_list))
            .route(&at("/features"), get(frontend::features))
            .route(&at("/models"), get(frontend::model_kinds))
            .route(&at("/models/{folder}"), get(frontend::model_names))
            .route(&at("/experiment/models"), get(frontend::experiment_models))
            .route(
                &at("/experiment/models/{folder}"),
                get(frontend::experiment_model_files),
            )
            .route(&at("/view_metadata/{folder}"), get(frontend::view_metadata))
            .route(&at("/free"), post(frontend::free))
            .route(&at("/jobs"), get(history::jobs))
            .route(&at("/jobs/{id}"), get(history::job_one))
            .route(&at("/jobs/{id}/cancel"), post(history::job_cancel));
    }
    router
}
