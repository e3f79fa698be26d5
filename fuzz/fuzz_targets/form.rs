//! The multipart form layer on hostile bodies: axum's `Multipart` extractor on a request
//! with a fixed boundary, then `steno_server::form::read`, which must return a checked
//! form or an error that maps to 400/413 (404 for an impossible model name) with OpenAI's
//! envelope (never panic or hang).
//!
//! Input: the first byte picks the task and a small or large file limit; the rest is the
//! request body, whose declared boundary is `BOUNDARY`.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use steno_whisper::Task;

const BOUNDARY: &str = "steno-fuzz-boundary";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let task = if selector & 1 == 0 {
        Task::Transcribe
    } else {
        Task::Translate
    };
    let max_file_bytes = if selector & 2 == 0 { 1 << 20 } else { 64 };
    let request = Request::builder()
        .method("POST")
        .uri("/v1/audio/transcriptions")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body.to_vec()))
        .expect("request");
    runtime().block_on(async {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .expect("the content type is multipart with a boundary");
        match steno_server::form::read(&mut multipart, task, max_file_bytes).await {
            Ok(form) => {
                assert!(form.file.bytes.len() <= max_file_bytes);
                assert!(!form.model.is_empty());
                assert!(form.temperature.is_none_or(|t| t > 0.0 && t <= 1.0));
                assert!(form.prompt.as_ref().is_none_or(|p| !p.is_empty()));
                assert!((8_000..=192_000).contains(&form.sample_rate));
                if task == Task::Translate {
                    assert!(form.language.is_none());
                }
            }
            Err(error) => {
                let status = error.status();
                let body = error.body();
                // 404 only for a model name no configuration can hold (over 256 characters).
                assert!(
                    status == StatusCode::BAD_REQUEST
                        || status == StatusCode::PAYLOAD_TOO_LARGE
                        || (status == StatusCode::NOT_FOUND && body.error.param == Some("model")),
                    "status {status}"
                );
                assert!(!body.error.message.is_empty());
            }
        }
    });
});
