//! The admin API, on its own listener (`[listeners] admin`), every call authenticated with
//! the bearer token from `admin_token_file`.
//!
//! | call | body | what |
//! | --- | --- | --- |
//! | `GET /admin/mode` | | `{"mode": "normal", "pinned": false}` |
//! | `PUT /admin/mode` | `{"mode": "surge"}` or `{"mode": "auto"}` | pins a mode, or returns to automatic switching |
//! | `POST /admin/reload` | | reloads the config file, as SIGHUP does; a bad config is refused and the node keeps serving the old one |
//! | `GET /admin/threshold?route=R` | | `{"route": "R", "threshold": 0.9, "pinned": false}`: the `normal` threshold in force |
//! | `PUT /admin/threshold` | `{"route": "R", "threshold": 0.9}` or `{"route": "R", "threshold": "auto"}` | pins the route's `normal` threshold, or leaves it to the auto-threshold again |
//!
//! Errors are `{"error": "..."}`: 401 without the right token, 400 for a bad body or config.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cascade_runtime::Mode;
use cascade_runtime::config;
use serde_json::{Value, json};

use cascade_runtime::CurrentNode;

use super::live::Live;

/// Shortest token accepted: guessable tokens defeat the point of a separate listener.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone)]
struct Admin {
    current: CurrentNode,
    /// Reads the token in force (a reload may replace it) and reloads.
    live: Live,
}

/// Reads and checks the token file's contents (surrounding whitespace ignored).
pub fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("listeners.admin_token_file: cannot read {}: {e}", file.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
        anyhow::bail!(
            "listeners.admin_token_file: {} must hold one token of at least {MIN_TOKEN_LEN} characters \
             without spaces (for example the output of `openssl rand -hex 32`)",
            file.display()
        );
    }
    Ok(token.to_owned())
}

/// The admin router for the node `live` holds, under the token `live` holds.
pub(crate) fn router(live: Live) -> Router {
    let admin = Admin { current: live.current.clone(), live };
    Router::new()
        .route("/admin/mode", get(get_mode).put(put_mode))
        .route("/admin/reload", post(reload))
        .route("/admin/threshold", get(get_threshold).put(put_threshold))
        .layer(middleware::from_fn_with_state(admin.clone(), authenticate))
        .with_state(admin)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same(token.as_bytes(), admin.live.admin_token().as_bytes()) => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong admin token"),
        None => error(StatusCode::UNAUTHORIZED, "admin calls need `Authorization: Bearer <token>`"),
    }
}

fn mode_body(admin: &Admin) -> Value {
    let node = admin.current.get();
    json!({ "mode": node.mode().name(), "pinned": node.pinned_mode().is_some() })
}

async fn get_mode(State(admin): State<Admin>) -> Response {
    axum::Json(mode_body(&admin)).into_response()
}

async fn put_mode(State(admin): State<Admin>, body: Bytes) -> Response {
    let wanted = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("mode").and_then(Value::as_str).map(str::to_owned));
    let Some(wanted) = wanted else {
        return error(StatusCode::BAD_REQUEST, "body must be {\"mode\": \"normal|surge|emergency|auto\"}");
    };
    let pin = match wanted.as_str() {
        "auto" => None,
        name => match Mode::ALL.into_iter().find(|m| m.name() == name) {
            Some(m) => Some(m),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("mode: unknown mode `{name}`; valid: normal, surge, emergency, auto"),
                );
            }
        },
    };
    tracing::info!(mode = %wanted, "admin call: mode");
    admin.current.get().pin_mode(pin);
    axum::Json(mode_body(&admin)).into_response()
}

fn threshold_body(admin: &Admin, route: &str) -> Response {
    let node = admin.current.get();
    match node.route(route) {
        Some(r) => axum::Json(json!({
            "route": route,
            "threshold": r.threshold(Mode::Normal),
            "pinned": r.threshold_pinned(),
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("route: no route `{route}`")),
    }
}

async fn get_threshold(State(admin): State<Admin>, Query(query): Query<RouteQuery>) -> Response {
    threshold_body(&admin, &query.route)
}

/// `?route=R`.
#[derive(serde::Deserialize)]
struct RouteQuery {
    route: String,
}

async fn put_threshold(State(admin): State<Admin>, body: Bytes) -> Response {
    const USAGE: &str = "body must be {\"route\": \"<route>\", \"threshold\": <0..1> or \"auto\"}";
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, USAGE);
    };
    let Some(route) = body.get("route").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, USAGE);
    };
    let pin = match body.get("threshold") {
        Some(Value::String(s)) if s == "auto" => None,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => Some(t),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("threshold: {v} is not in [0, 1] or \"auto\""),
                );
            }
        },
        None => return error(StatusCode::BAD_REQUEST, USAGE),
    };
    let node = admin.current.get();
    let Some(r) = node.route(route) else {
        return error(StatusCode::NOT_FOUND, format!("route: no route `{route}`"));
    };
    tracing::info!(route, threshold = ?pin, "admin call: threshold");
    r.pin_threshold(pin);
    threshold_body(&admin, route)
}

async fn reload(State(admin): State<Admin>) -> Response {
    let file = admin.current.get().config().file.clone();
    tracing::info!(file = %file.display(), "admin call: reload");
    let loaded = config::load(&file).and_then(|c| c.resolve());
    let result = match loaded {
        Ok(config) => admin.live.reload(config).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => axum::Json(json!({ "reloaded": file.display().to_string() })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reload refused; still serving the old config");
            error(StatusCode::BAD_REQUEST, format!("{e:#}; still serving the old config"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeX"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "short\n").unwrap();
        assert!(read_token(&file).unwrap_err().to_string().contains("at least 16"));
        std::fs::write(&file, "0123456789 abcdef\n").unwrap();
        assert!(read_token(&file).is_err());
        std::fs::write(&file, "  0123456789abcdef\n").unwrap();
        assert_eq!(read_token(&file).unwrap(), "0123456789abcdef");
        assert!(read_token(&dir.path().join("missing")).unwrap_err().to_string().contains("cannot read"));
    }
}
