//! The web console (`web/` at the workspace root), served at `/console/`
//! from files embedded in the binary at build time (`build.rs`). The
//! console holds no data: every API call it makes carries the user's token,
//! so its files are open like `/healthz`.
//!
//! Paths that name no file get `index.html` (the console routes in the
//! browser), except under `assets/`, where a missing file is a 404 rather
//! than a page the browser would try to run. Vite names the files under
//! `assets/` by their content's hash: they are cached for a year; everything
//! else is revalidated by its ETag on every load.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rust_embed::RustEmbed;

use crate::api::ApiError;

#[derive(RustEmbed)]
#[folder = "$INVENTORY_CONSOLE_DIR"]
struct Files;

const HASHED: &str = "assets/";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";
/// Scripts and styles only from the service itself; API calls only to it.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                      object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Console not built</title></head><body style=\"font-family:sans-serif;max-width:40rem;margin:3rem auto\">\
<h1>The console is not built into this binary</h1>\
<p>inventoryd embeds the console from <code>web/dist</code> when it is compiled. This binary was built \
without it (npm was not found, or <code>INVENTORY_CONSOLE=skip</code> was set).</p>\
<p>Install Node.js 20.19 or later with npm, then build again: \
<code>cargo build --release -p inventory-gateway</code> runs <code>npm ci</code> and \
<code>npm run build</code> in <code>web/</code> itself. The API is unaffected.</p></body></html>";

/// `GET /console`: the console lives under `/console/`.
pub async fn root() -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, HeaderValue::from_static("/console/"));
    response
}

/// `GET /console/`.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /console/{*path}`.
pub async fn file(headers: HeaderMap, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(path) = path.map_err(|_| ApiError::invalid("the console path is not UTF-8"))?;
    if Files::get(&path).is_some() {
        return Ok(serve(&path, &headers));
    }
    if path.starts_with(HASHED) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no console file {path}")));
    }
    Ok(serve("index.html", &headers))
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Files::get(path) else {
        let mut response =
            page(StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT.as_bytes().to_vec(), "text/html; charset=utf-8");
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = if path.starts_with(HASHED) { IMMUTABLE } else { REVALIDATE };
    let matched = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matched {
        page(StatusCode::NOT_MODIFIED, Vec::new(), content_type(path))
    } else {
        page(StatusCode::OK, file.data.into_owned(), content_type(path))
    };
    let h = response.headers_mut();
    h.insert(ETAG, HeaderValue::from_str(&etag).expect("hex"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn page(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}

/// The content type of the kinds of file a Vite build makes.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_files_get_their_content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/index-3f2a.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("assets/index-3f2a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
