//! `GET /`: the playground, a page for trying Steno in a browser (files through
//! `/v1/audio/transcriptions`, live captions through `/v1/realtime`). Its four files are
//! compiled into the binary (`crates/server/playground/`), so it works offline and
//! nothing is fetched from elsewhere at run time.
//!
//! The page is public, outside API-key authentication: it holds no data and no key. It
//! asks the user for the key and sends it with every API call it makes (HTTP: `Bearer`;
//! WebSocket: the `openai-insecure-api-key.` subprotocol), so the API stays as closed as
//! configured. A strict Content-Security-Policy lets it run only its own scripts and
//! talk only to this server.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// Only this origin's own scripts, styles and API (`'self'` covers `ws:`/`wss:` to the
/// same host in CSP Level 3); no inline code, no plugins, no framing, no form posts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One file of the page: its path, content type and contents.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

static ASSETS: [Asset; 4] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../playground/index.html"),
    },
    Asset {
        path: "/playground/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../playground/app.js"),
    },
    Asset {
        path: "/playground/capture.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../playground/capture.js"),
    },
    Asset {
        path: "/playground/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../playground/style.css"),
    },
];

/// The page's routes, to be merged outside authentication (see the module documentation).
pub fn router() -> Router<AppState> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || serve(asset)))
    })
}

async fn serve(asset: &'static Asset) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // The microphone for this page only (live captions), nothing else.
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
        ),
        // Revalidated each time: a new binary serves its own page at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the page loads is one of its own files: no CDN, nothing remote.
    #[test]
    fn the_page_loads_only_its_own_files() {
        let page = ASSETS[0].body;
        let links: Vec<&str> = ["src=\"", "href=\""]
            .iter()
            .flat_map(|attribute| page.split(attribute).skip(1))
            .map(|rest| rest.split('"').next().unwrap_or_default())
            .collect();
        assert_eq!(links, ["/playground/app.js", "/playground/style.css"]);
        assert!(ASSETS[1]
            .body
            .contains("addModule(\"/playground/capture.js\")"));
        for asset in &ASSETS {
            for remote in ["<script>", "url(", "@import", "import ", "cdn"] {
                assert!(!asset.body.contains(remote), "{}: {remote}", asset.path);
            }
        }
        let paths: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        assert!(paths
            .iter()
            .all(|p| *p == "/" || p.starts_with("/playground/")));
    }
}
