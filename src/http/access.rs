//! Who may do what, at the HTTP edge: load shedding (`--max-in-flight`) and API keys
//! (`Authorization: Bearer`), checked by [`admit`] before a request reaches its handler.
//! A refused request is answered from here, so nothing of it is applied.
//!
//! Which scope each route needs (CONTRACT.md, "Access control and overload"):
//!
//! | route | method | scope |
//! | --- | --- | --- |
//! | `/data` | POST | `ingest` |
//! | `/statistics/{sensor}` | GET, HEAD | `read` |
//! | `/statistics/{sensor}` | DELETE | `delete` |
//! | `/metrics` | GET, HEAD | `metrics` (none with `--metrics-public`) |
//! | `/healthz`, `/livez` | any | none, ever |
//! | anything else | any | any valid key (then 404 or 405): routes are not revealed to strangers |

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, Method},
};

use crate::{
    access::{ApiKey, Keyring, Scope},
    http::error::ApiError,
    limits::Permit,
    metrics::AuthFailure,
    state::AppState,
};

/// The API key a request was authenticated with (a request extension; absent when
/// access control is off). Handlers use its name to keep clients' idempotency keys apart.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<ApiKey>);

/// The longest token we hash; longer `Authorization` values are malformed.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: health probes (and `/metrics` when public).
    Open,
    /// A valid key with this scope.
    Scope(Scope),
    /// A valid key, whatever its scopes (unknown routes and methods).
    AnyKey,
}

/// What `route` (a matched template from `metrics::route_label`) with `method` needs.
pub fn requirement(route: &str, method: &Method, metrics_public: bool) -> Requirement {
    let read = *method == Method::GET || *method == Method::HEAD;
    match route {
        "/healthz" | "/livez" => Requirement::Open,
        // The API's description and the page showing it hold no data, and a browser
        // cannot send a bearer token when it loads a page.
        "/openapi.json" | "/docs" | "/docs/{file}" => Requirement::Open,
        "/metrics" if metrics_public => Requirement::Open,
        "/metrics" if read => Requirement::Scope(Scope::Metrics),
        "/data" if *method == Method::POST => Requirement::Scope(Scope::Ingest),
        "/statistics/{sensor}" if read => Requirement::Scope(Scope::Read),
        "/statistics/{sensor}" if *method == Method::DELETE => Requirement::Scope(Scope::Delete),
        _ => Requirement::AnyKey,
    }
}

/// Whether `route` is served whatever the load: probes and the scrape must keep working
/// when the service is busiest, which is when they matter.
fn never_shed(route: &str) -> bool {
    matches!(route, "/healthz" | "/livez" | "/metrics")
}

/// Lets a request in, or says why not: 503 when `--max-in-flight` requests are in
/// flight (the permit holds its slot until dropped), 401/403 from the API keys. Counts
/// each refusal. With keys, puts the [`Caller`] into the request's extensions.
///
/// # Errors
/// The [`ApiError`] to answer with.
pub fn admit<'s>(
    state: &'s AppState,
    route: &'static str,
    request: &mut Request,
) -> Result<Option<Permit<'s>>, ApiError> {
    let (permit, caller) = admit_parts(state, route, request.method(), request.headers())?;
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    Ok(permit)
}

/// [`admit`] on a request's method and headers: the permit, and the [`Caller`] when API
/// keys are on and the route needs one.
///
/// # Errors
/// The [`ApiError`] to answer with.
pub fn admit_parts<'s>(
    state: &'s AppState,
    route: &'static str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Option<Permit<'s>>, Option<Caller>), ApiError> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION);
    admit_raw(state, route, method, authorization.map(HeaderValue::as_bytes))
}

/// [`admit_parts`] on the raw `Authorization` header (the HTTP/1 loop of
/// [`super::h1`] has no header map).
///
/// # Errors
/// The [`ApiError`] to answer with.
pub fn admit_raw<'s>(
    state: &'s AppState,
    route: &'static str,
    method: &Method,
    authorization: Option<&[u8]>,
) -> Result<(Option<Permit<'s>>, Option<Caller>), ApiError> {
    let permit = if never_shed(route) {
        None
    } else if let Some(permit) = state.in_flight_limit.try_acquire() {
        Some(permit)
    } else {
        state.metrics.shed();
        return Err(ApiError::Overloaded(state.in_flight_limit.max()));
    };
    let Some(keys) = &state.keys else {
        return Ok((permit, None));
    };
    let need = requirement(route, method, state.metrics_public);
    if need == Requirement::Open {
        return Ok((permit, None));
    }
    let caller = authenticate(keys, authorization).inspect_err(|e| {
        if let ApiError::Unauthorized(reason) = e {
            state.metrics.auth_failure(*reason);
        }
    })?;
    if let Requirement::Scope(scope) = need
        && !caller.scopes.contains(scope)
    {
        state.metrics.auth_failure(AuthFailure::Forbidden);
        return Err(ApiError::Forbidden {
            key: caller.name.clone(),
            scope,
        });
    }
    Ok((permit, Some(Caller(caller))))
}

fn authenticate(keys: &Keyring, authorization: Option<&[u8]>) -> Result<Arc<ApiKey>, ApiError> {
    let header = authorization.ok_or(ApiError::Unauthorized(AuthFailure::Missing))?;
    let token = bearer_token(header).ok_or(ApiError::Unauthorized(AuthFailure::Malformed))?;
    keys.authenticate(token)
        .ok_or(ApiError::Unauthorized(AuthFailure::Unknown))
}

/// The token of `Bearer <token>` (RFC 6750: the scheme in any case, then one or more
/// spaces, then a b64token); `None` for anything else.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    let b64token = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b);
    (!token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.iter().all(b64token)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_and_anything_else_is_malformed() {
        assert_eq!(bearer_token(b"Bearer sst_abc"), Some(&b"sst_abc"[..]));
        assert_eq!(
            bearer_token(b"bearer   a.b-c~d+e/f=="),
            Some(&b"a.b-c~d+e/f=="[..])
        );
        assert_eq!(bearer_token(b"BEARER x "), Some(&b"x"[..]));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer    ",
            b"Basic dXNlcjpwYXNz",
            b"Bearertoken",
            b"Bearer two tokens",
            b"Bearer caf\xc3\xa9",
            b"sst_abc",
        ] {
            assert_eq!(bearer_token(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer_token(long.as_bytes()), None);
    }

    #[test]
    fn every_route_needs_its_scope_and_probes_need_nothing() {
        use Requirement::*;
        let cases = [
            ("/data", Method::POST, false, Scope(crate::access::Scope::Ingest)),
            (
                "/statistics/{sensor}",
                Method::GET,
                false,
                Scope(crate::access::Scope::Read),
            ),
            (
                "/statistics/{sensor}",
                Method::HEAD,
                false,
                Scope(crate::access::Scope::Read),
            ),
            (
                "/statistics/{sensor}",
                Method::DELETE,
                false,
                Scope(crate::access::Scope::Delete),
            ),
            (
                "/metrics",
                Method::GET,
                false,
                Scope(crate::access::Scope::Metrics),
            ),
            ("/metrics", Method::GET, true, Open),
            ("/healthz", Method::GET, false, Open),
            ("/livez", Method::POST, false, Open),
            ("/statistics/{sensor}", Method::PUT, false, AnyKey),
            ("/data", Method::GET, false, AnyKey),
            ("unmatched", Method::GET, false, AnyKey),
        ];
        for (route, method, public, want) in cases {
            assert_eq!(requirement(route, &method, public), want, "{method} {route}");
        }
    }
}
