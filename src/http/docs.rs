//! `GET /openapi.json` (the document) and `GET /docs` (Swagger UI showing it), served
//! from files embedded in the binary: the page works offline and behind a firewall, and
//! its Content-Security-Policy lets the browser load nothing from another origin.
//!
//! The Swagger UI files are those of the npm package `swagger-ui-dist`, pinned in
//! `assets/swagger-ui/VERSION` and replaced by `scripts/update-swagger-ui.sh`.

use axum::{
    extract::{Path, rejection::PathRejection},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::http::{error::error_response, openapi};

/// One embedded file of the page.
pub struct DocsFile {
    /// Its name under `/docs/`.
    pub name: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// The files `/docs/{file}` serves.
pub const FILES: &[DocsFile] = &[
    DocsFile {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    },
    DocsFile {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    DocsFile {
        name: "swagger-initializer.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("docs/swagger-initializer.js"),
    },
    DocsFile {
        name: "favicon-32x32.png",
        content_type: "image/png",
        bytes: include_bytes!("../../assets/swagger-ui/favicon-32x32.png"),
    },
];

/// The page: our HTML around the embedded Swagger UI.
const PAGE: &str = include_str!("docs/index.html");

/// Same origin only. Swagger UI sets inline styles and uses data: URIs for its icons;
/// scripts come only from the files above (no inline script, no eval).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The files change only with the binary; an hour spares reloads without pinning an old
/// copy in a browser for long after an upgrade.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// Serves the OpenAPI 3.1 document of every route.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documentation",
    operation_id = "get_openapi",
    summary = "The OpenAPI 3.1 document",
    description = "This document: every route, its parameters, bodies and responses.",
    responses(openapi::OpenApiResponses)
)]
pub async fn get_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::json()).into_response()
}

/// Serves the documentation page.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "documentation",
    operation_id = "get_docs",
    summary = "Browsable documentation",
    description = "Swagger UI over `/openapi.json`, served from the binary; \"Try it out\" sends \
                   requests to this server.",
    responses(openapi::DocsResponses)
)]
pub async fn get_docs() -> Response {
    page_headers(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response())
}

/// Serves one file of the documentation page.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "documentation",
    operation_id = "get_docs_file",
    summary = "A file of the documentation page",
    params(openapi::DocsFileParam),
    responses(openapi::DocsFileResponses)
)]
pub async fn get_docs_file(file: Result<Path<String>, PathRejection>) -> Response {
    let found = file
        .ok()
        .and_then(|Path(name)| FILES.iter().find(|f| f.name == name));
    let Some(file) = found else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file under /docs",
            None,
        );
    };
    page_headers(
        (
            [
                (header::CONTENT_TYPE, file.content_type),
                (header::CACHE_CONTROL, CACHE_CONTROL),
            ],
            file.bytes,
        )
            .into_response(),
    )
}

fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    /// The embedded Swagger UI files are the ones `scripts/update-swagger-ui.sh` took from
    /// the npm package (checked against the registry's integrity hash then).
    #[test]
    fn embedded_swagger_ui_files_match_their_recorded_checksums() {
        let sums = include_str!("../../assets/swagger-ui/SHA256SUMS");
        let mut checked = 0;
        for file in FILES.iter().filter(|f| f.name != "swagger-initializer.js") {
            let line = sums
                .lines()
                .find(|l| l.ends_with(&format!("  {}", file.name)))
                .unwrap_or_else(|| panic!("{} is not in SHA256SUMS", file.name));
            let digest: String = Sha256::digest(file.bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(&line[..64], digest, "{}", file.name);
            checked += 1;
        }
        assert_eq!(checked, 3);
        assert!(include_str!("../../assets/swagger-ui/VERSION").starts_with("swagger-ui-dist "));
    }
}
