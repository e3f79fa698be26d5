//! The OpenAPI document, derived from the route annotations and `api` types;
//! committed as `openapi/openapi.json` and checked by a test.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Steno",
        description = "OpenAI-compatible speech-to-text (Whisper on MLX). Point an OpenAI SDK's `base_url` at `http://HOST:PORT/v1`."
    ),
    paths(
        super::audio::transcriptions,
        super::audio::translations,
        super::models::list,
        super::models::retrieve,
        super::health::health,
        super::metrics::metrics,
        document,
        super::realtime::connect,
        super::realtime::client_secrets,
        super::realtime::transcription_sessions,
    ),
    components(schemas(crate::api::TextDoneEvent, crate::api::DiarizedSegment,
        crate::realtime::schema::RealtimeClientEvent, crate::realtime::schema::RealtimeServerEvent)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::ApiDoc::json(),
            "openapi/openapi.json is stale: run `make openapi` and commit it"
        );
    }
}

impl ApiDoc {
    /// The document as committed: pretty JSON with a final newline.
    pub fn json() -> String {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "This OpenAPI document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
