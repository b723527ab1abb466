//! The dashboard: its static assets, embedded in the binary and served on the gRPC port beside
//! the services, so `cargo build` needs no Node and the dashboard is where the API is.
//!
//! The assets are `ui/dist/` (built from `ui/src/` by `ui/build.sh`, committed, and checked in CI
//! to be what the build makes). The page talks to the same gRPC services as every client, through
//! gRPC-web (`server.rs` wraps the two services with `tonic_web`), so it has no backdoor: the
//! tokens and roles of the API apply to it as they do to anyone. The assets themselves carry no
//! data and are served without a token.
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's script, style and
//! calls; no inline script, no frames, no plugins): together with the page rendering payloads,
//! results and errors as text (never as HTML), a job's content cannot run in an operator's
//! browser. Only GET and HEAD of the three asset paths are answered; a gRPC request for a service
//! that does not exist still gets gRPC's UNIMPLEMENTED.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header},
};

/// The policy every answer carries (see the module doc).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_bytes!("../ui/dist/index.html") },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/dist/app.js"),
    },
    Asset { path: "/app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../ui/dist/app.css") },
];

/// Whether `path` is one of the assets: not a method, so the auth layer lets it pass.
pub(crate) fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// The router the gRPC services are added to: it answers what is not theirs.
pub(crate) fn router() -> axum::Router {
    axum::Router::new().fallback(answer)
}

async fn answer(request: Request<Body>) -> Response<Body> {
    if is_grpc(request.headers()) {
        return tonic::Status::unimplemented("").into_http();
    }
    let asset = ASSETS.iter().find(|a| a.path == request.uri().path());
    let head = request.method() == Method::HEAD;
    let (status, content_type, body) = match asset {
        _ if !matches!(*request.method(), Method::GET | Method::HEAD) => {
            (StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", &b"method not allowed\n"[..])
        }
        Some(asset) => (StatusCode::OK, asset.content_type, asset.body),
        None => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", &b"not found\n"[..]),
    };
    let mut response = Response::new(if head { Body::empty() } else { Body::from(body) });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The assets change with the binary only; revalidating a few small files costs nothing.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}
