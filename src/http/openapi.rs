//! The OpenAPI 3.1 document served at `GET /openapi.json`.
//!
//! Paths, methods and parameters come from the `#[utoipa::path]` attribute on each
//! handler, collected by the router itself (`utoipa_axum::routes!` in `http::routes`),
//! so a route cannot be served without being described. This module holds what a
//! handler's signature cannot carry: the schema of the hand-decoded request body, the
//! responses of each operation with the JSON error, examples (the files of `samples/`
//! and errors produced by the real decoder), and the rules JSON Schema cannot state
//! exactly, in words (`openapi.md`) and patterns.

use std::{collections::BTreeMap, sync::LazyLock};

use serde_json::{Value, json};
use utoipa::{
    IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema,
    openapi::{
        Components, Content, ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Required, Response,
        ResponseBuilder, Schema,
        example::ExampleBuilder,
        path::{Parameter, ParameterBuilder, ParameterIn},
        schema::{ArrayBuilder, SchemaType, Type},
    },
};

use crate::{
    domain::{MAX_IDEMPOTENCY_KEY_LEN, MAX_SENSOR_ID_BYTES},
    http::error::ApiError,
    ingest,
};

/// An accepted `timestamp`, calendar included: day 29 of February only in leap years
/// (every 4th, not every 100th, every 400th), 30 or 31 days by month, hours 00 to 23,
/// no leap second, fraction of 1 to 9 digits, offset hours 00 to 23. `[0-9]` rather
/// than `\d`, which some regex engines read as any Unicode digit. A unit test checks it
/// accepts exactly what `Timestamp::parse` accepts.
pub const TIMESTAMP_PATTERN: &str = concat!(
    "^(",
    "[0-9]{4}-(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])",
    "|[0-9]{4}-(0[469]|11)-(0[1-9]|[12][0-9]|30)",
    "|[0-9]{4}-02-(0[1-9]|1[0-9]|2[0-8])",
    "|([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29",
    ")[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]",
    "([.,][0-9]{1,9})?",
    "([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$"
);

/// A `last_measurement` as the service prints it: UTC, `+00:00`, no fraction, 6 or 9
/// digits. Years past 9999 or before 0000 (reachable only through an offset at the edge
/// of the calendar) print with a sign.
pub const OUTPUT_TIMESTAMP_PATTERN: &str =
    r"^([0-9]{4}|[+-][0-9]{4,})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6}|\.[0-9]{9})?\+00:00$";

/// The idempotency key: visible ASCII (0x21 to 0x7E).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

/// The base document: info, tags and the shared schemas; the routes add their paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sensor-stats",
        description = include_str!("openapi.md"),
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(Measurement, crate::http::error::ErrorBody, crate::http::statistics::StatisticsBody)),
    tags(
        (name = "ingest", description = "Sending measurements"),
        (name = "statistics", description = "Reading and forgetting a sensor's statistics"),
        (name = "operations", description = "Probes and metrics for load balancers, orchestrators and Prometheus"),
        (name = "documentation", description = "This document and the page that shows it"),
    ),
    modifiers(&Finish),
)]
pub struct ApiDoc;

/// One measurement of a `POST /data` batch. The request body is decoded by hand
/// (`ingest::decode`), so this type exists only to be described.
pub struct Measurement;

impl ToSchema for Measurement {}

impl PartialSchema for Measurement {
    fn schema() -> RefOr<Schema> {
        let sensor = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_SENSOR_ID_BYTES))
            .description(Some(format!(
                "The sensor's id: 1 to {MAX_SENSOR_ID_BYTES} bytes of UTF-8, any characters \
                 (spaces, `/`, unicode). `maxLength` counts characters, so it is exact for \
                 ASCII ids only."
            )))
            .examples(["sensor1"]);
        let timestamp = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(TIMESTAMP_PATTERN))
            .description(Some(
                "When it was measured: `YYYY-MM-DD`, `T`, `t` or a space, `HH:MM:SS`, an optional \
                 fraction of 1 to 9 digits after `.` or `,`, an optional offset `Z`, `z`, `±HH:MM`, \
                 `±HHMM` or `±HH` (none: UTC). Dates and times that do not exist are rejected.",
            ))
            .examples([
                "2021-11-08T21:38:09+00:00",
                "2021-11-08 21:38:09,5",
                "2021-11-09T21:38:09+0100",
            ]);
        let value = ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(-f64::MAX))
            .maximum(Some(f64::MAX))
            .description(Some(
                "The measured value: a JSON number, integer or float, finite as a 64-bit float \
                 (`1e400` is rejected). Strings, `null` and booleans are rejected.",
            ))
            .examples([2.1]);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("sensor", sensor)
            .required("sensor")
            .property("timestamp", timestamp)
            .required("timestamp")
            .property("value", value)
            .required("value")
            .description(Some(
                "One measurement. Other fields are ignored, whatever their type; a known field \
                 given twice is rejected.",
            ))
            .into()
    }
}

/// The documented responses of one operation, built in code.
macro_rules! responses {
    ($name:ident, $doc:literal, $build:expr) => {
        #[doc = $doc]
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                let list: Vec<(u16, Response)> = $build;
                list.into_iter()
                    .map(|(status, response)| (status.to_string(), response.into()))
                    .collect()
            }
        }
    };
}

responses!(
    PostDataResponses,
    "Responses of `POST /data`.",
    vec![
        (
            204,
            ResponseBuilder::new()
                .description("Every measurement of the batch was applied (all or nothing). No body.")
                .header(
                    "Idempotent-Replayed",
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .enum_values(Some(["true"]))
                        ))
                        .description(Some(
                            "`true` when this answers a retry of a request already applied with the \
                             same `Idempotency-Key` and body: nothing was applied a second time.",
                        ))
                        .build(),
                )
                .link(
                    "GetFirstSensor",
                    sensor_link("get_statistics", "$request.body#/0/sensor")
                )
                .link(
                    "DeleteFirstSensor",
                    sensor_link("delete_statistics", "$request.body#/0/sensor")
                )
                .build(),
        ),
        (
            400,
            error(
                "The body is not a batch (malformed JSON, not an array, nested deeper than 8 levels, \
                 a corrupt gzip/zstd body; `index` null), a measurement is invalid (`index` is its \
                 position; nothing was applied), or the `Idempotency-Key` header is not 1 to 255 \
                 visible ASCII characters.",
                &[
                    ("malformed", decode_error(b"[{\"sensor\": \"a\",")),
                    (
                        "invalid_measurement",
                        decode_error(
                            br#"[{"sensor":"a","timestamp":"2021-11-08T21:38:09Z","value":1},
                                {"sensor":"b","timestamp":"2021-02-30T00:00:00Z","value":1}]"#,
                        ),
                    ),
                    ("not_an_array", decode_error(br#"{"sensor":"a"}"#)),
                    (
                        "idempotency_key",
                        (
                            ApiError::IdempotencyKey(crate::domain::IdempotencyKeyError::Character)
                                .to_string(),
                            None
                        ),
                    ),
                ],
            ),
        ),
        (
            408,
            error(
                "The request (body upload included) took longer than the request timeout \
                 (30 s by default); nothing was applied.",
                &[(
                    "timeout",
                    ("request took too long and was cancelled".into(), None)
                )],
            ),
        ),
        (
            409,
            error(
                "A request with the same `Idempotency-Key` is still being processed (on any \
                 replica); nothing was applied. Retry after it has been answered.",
                &[("in_progress", (ApiError::IdempotencyInProgress.to_string(), None))],
            ),
        ),
        (
            413,
            error(
                "The body is over the size limit (16 MiB by default), on the wire or after \
                 decompression.",
                &[("too_large", (ApiError::TooLarge(16 << 20).to_string(), None))],
            ),
        ),
        (
            415,
            error(
                "A `Content-Type` other than `application/json`, or a `Content-Encoding` other \
                 than gzip, zstd or identity.",
                &[(
                    "content_type",
                    (
                        ApiError::UnsupportedMediaType("text/plain".into()).to_string(),
                        None
                    ),
                )],
            ),
        ),
        (
            422,
            error(
                "The `Idempotency-Key` was already used with a different body; nothing was \
                 applied. Use a new key for a new batch.",
                &[("reused", (ApiError::IdempotencyReused.to_string(), None))],
            ),
        ),
        (503, store_unavailable()),
    ]
);

responses!(
    GetStatisticsResponses,
    "Responses of `GET /statistics/{sensor}`.",
    vec![
        (
            200,
            ResponseBuilder::new()
                .description(
                    "The sensor's statistics; an unknown sensor (never seen, or deleted) reads \
                     `{\"last_measurement\": null, \"count\": 0, \"avg\": 0.0}`.",
                )
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Statistics")))
                        .examples_from_iter([
                            (
                                "unknown",
                                example("An unknown sensor", sample("get_statistics_ex1.json"))
                            ),
                            (
                                "known",
                                example("A known sensor", sample("get_statistics_ex2.json"))
                            ),
                        ])
                        .build(),
                )
                .build(),
        ),
        (400, bad_sensor_path()),
        (503, store_unavailable()),
    ]
);

responses!(
    DeleteStatisticsResponses,
    "Responses of `DELETE /statistics/{sensor}`.",
    vec![
        (
            204,
            ResponseBuilder::new()
                .description(
                    "The sensor is forgotten (known or not): `GET` now shows the unknown form, and \
                     later measurements start a fresh history. No body.",
                )
                .link("GetSensor", sensor_link("get_statistics", "$request.path.sensor"))
                .build(),
        ),
        (400, bad_sensor_path()),
        (503, store_unavailable()),
    ]
);

responses!(
    HealthzResponses,
    "Responses of `GET /healthz`.",
    vec![
        (
            204,
            ResponseBuilder::new()
                .description("Ready to take requests. No body.")
                .build()
        ),
        (
            503,
            with_retry_after(error(
                "Not ready: starting up, draining at shutdown, or the shared store cannot be \
                 reached (204 again once it is back, without a restart).",
                &[("draining", ("shutting down".into(), None))],
            )),
        ),
    ]
);

responses!(
    LivezResponses,
    "Responses of `GET /livez`.",
    vec![(
        204,
        ResponseBuilder::new()
            .description(
                "The process is up and serving HTTP, also while draining or while the store is \
                 down. No body.",
            )
            .build(),
    )]
);

responses!(
    MetricsResponses,
    "Responses of `GET /metrics`.",
    vec![(
        200,
        ResponseBuilder::new()
            .description("This replica's metrics in the Prometheus text exposition format 0.0.4.")
            .content(
                "text/plain",
                text_content("# TYPE sensor_stats_ingest_measurements_total counter\n")
            )
            .build(),
    )]
);

responses!(
    OpenApiResponses,
    "Responses of `GET /openapi.json`.",
    vec![(
        200,
        ResponseBuilder::new()
            .description("This document (OpenAPI 3.1).")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                    .build(),
            )
            .build(),
    )]
);

responses!(
    DocsResponses,
    "Responses of `GET /docs`.",
    vec![(
        200,
        ResponseBuilder::new()
            .description(
                "A page that shows this document and sends requests to this server (Swagger UI, \
                 served from the binary: no request leaves the server's origin).",
            )
            .content("text/html", text_content("<!doctype html>"))
            .build(),
    )]
);

responses!(
    DocsFileResponses,
    "Responses of `GET /docs/{file}`.",
    vec![
        (
            200,
            ResponseBuilder::new()
                .description("One file of the documentation page.")
                .content("text/css", text_content("/* stylesheet */"))
                .content("text/javascript", text_content("/* script */"))
                .content(
                    "image/png",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .build(),
        ),
        (
            404,
            error(
                "No such file.",
                &[("missing", ("no such file under /docs".into(), None))]
            ),
        ),
    ]
);

/// The optional `Idempotency-Key` request header of `POST /data`.
pub struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_IDEMPOTENCY_KEY_LEN))
            .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
            .examples(["8e0f6c1a-batch-42"]);
        vec![
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry count once (IETF draft \"The Idempotency-Key HTTP Header \
                     Field\"): 1 to 255 visible ASCII characters. The first request with a key \
                     is processed as usual and, when it succeeds, the key and the body are \
                     remembered (24 h by default): the same key with the same body answers 204 \
                     with `Idempotent-Replayed: true` and applies nothing; with another body \
                     422; while the first is still in progress 409. A request that failed \
                     leaves no key behind.",
                ))
                .schema(Some(schema))
                .build(),
        ]
    }
}

/// The `{sensor}` path segment.
pub struct SensorParam;

impl IntoParams for SensorParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_SENSOR_ID_BYTES))
            .examples(["sensor1"]);
        vec![
            ParameterBuilder::new()
                .name("sensor")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!(
                    "The sensor's id, percent-encoded as one path segment (`%2F` is a `/` inside \
                     the id): 1 to {MAX_SENSOR_ID_BYTES} bytes of UTF-8 once decoded."
                )))
                .schema(Some(schema))
                .build(),
        ]
    }
}

/// The `{file}` path segment of the documentation page's files.
pub struct DocsFileParam;

impl IntoParams for DocsFileParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let names = crate::http::docs::FILES.iter().map(|f| f.name);
        vec![
            ParameterBuilder::new()
                .name("file")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("A file of the page, as `/docs` links them."))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(names)),
                ))
                .build(),
        ]
    }
}

/// Completes the document once the routes are in: request examples from `samples/`,
/// the batch schema, and the responses every route may give.
struct Finish;

impl Modify for Finish {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components.responses.insert(
            "NotFound".into(),
            error(
                "No such route (any path the document does not list).",
                &[(
                    "not_found",
                    ("no such route; see the README for the API".into(), None),
                )],
            )
            .into(),
        );
        let mut method_not_allowed = error(
            "A known route with a method it does not serve.",
            &[(
                "method_not_allowed",
                (
                    "method not allowed on this route; the Allow header lists the allowed ones".into(),
                    None,
                ),
            )],
        );
        method_not_allowed.headers.insert(
            "Allow".into(),
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some("The methods the route serves, e.g. `GET,HEAD,DELETE`."))
                .build()
                .into(),
        );
        components
            .responses
            .insert("MethodNotAllowed".into(), method_not_allowed.into());
    }
}

/// Adds what the routes cannot: the request body examples of `POST /data`. Called after
/// the routes have been merged into the document.
pub fn finish_paths(openapi: &mut utoipa::openapi::OpenApi) {
    let Some(operation) = openapi
        .paths
        .paths
        .get_mut("/data")
        .and_then(|item| item.post.as_mut())
    else {
        return;
    };
    let body = ArrayBuilder::new()
        .items(Ref::from_schema_name("Measurement"))
        .description(Some(
            "A batch: measurements of any number of sensors, possibly none. All or nothing.",
        ));
    let content = ContentBuilder::new()
        .schema(Some(body))
        .examples_from_iter([
            (
                "two_sensors",
                example("Two sensors, one offset", sample("post_data_ex1.json")),
            ),
            (
                "one_sensor",
                example("Three measurements of one sensor", sample("post_data_ex2.json")),
            ),
            (
                "empty",
                example(
                    "The empty batch (accepted, changes nothing)",
                    sample("post_data_ex3.json"),
                ),
            ),
        ])
        .build();
    let request_body = utoipa::openapi::request_body::RequestBodyBuilder::new()
        .description(Some(
            "A JSON array of measurements, `Content-Type: application/json` or none; gzip or \
             zstd with `Content-Encoding`.",
        ))
        .content("application/json", content)
        .required(Some(Required::True))
        .build();
    operation.request_body = Some(request_body.into());
}

/// The document of `routes` (from `http::routes`), complete.
pub fn document(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    finish_paths(&mut openapi);
    add_access(&mut openapi);
    openapi
}

/// API keys (`--api-keys-file`): the bearer scheme, each operation's scope (optional:
/// without keys configured the API is open, hence the empty alternative), 401 and 403,
/// the sensor cap's 507, and the overload 503 of the documentation routes (the data
/// routes' 503 says it already; the probes and /metrics are never shed).
fn add_access(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};

    use crate::{access::Scope, metrics::AuthFailure};

    let components = openapi.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "API keys, when the server runs with `--api-keys-file`: \
                     `Authorization: Bearer <token>`. Each key has scopes: `ingest` (POST /data), \
                     `read` (GET /statistics), `delete` (DELETE /statistics), `metrics` \
                     (GET /metrics, unless `--metrics-public`). Without keys the API is open.",
                ))
                .build(),
        ),
    );
    let protected = [
        ("/data", Scope::Ingest),
        ("/statistics/{sensor}", Scope::Read),
        ("/statistics/{sensor}", Scope::Delete),
        ("/metrics", Scope::Metrics),
    ];
    for (path, scope) in protected {
        let Some(item) = openapi.paths.paths.get_mut(path) else {
            continue;
        };
        let operation = match scope {
            Scope::Ingest => item.post.as_mut(),
            Scope::Read | Scope::Metrics => item.get.as_mut(),
            Scope::Delete => item.delete.as_mut(),
        };
        let Some(operation) = operation else {
            continue;
        };
        operation.security = Some(vec![
            SecurityRequirement::new("bearer", [scope.to_string()]),
            SecurityRequirement::default(),
        ]);
        let mut unauthorized = error(
            "With API keys: no token, a malformed `Authorization` header or an unknown token. \
             Nothing was applied.",
            &[(
                "missing",
                (ApiError::Unauthorized(AuthFailure::Missing).to_string(), None),
            )],
        );
        unauthorized.headers.insert(
            "WWW-Authenticate".into(),
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(crate::http::error::WWW_AUTHENTICATE))
                .build()
                .into(),
        );
        let forbidden = error(
            "With API keys: a known key without this route's scope. Nothing was applied.",
            &[(
                "no_scope",
                (
                    ApiError::Forbidden {
                        key: "dashboard".into(),
                        scope,
                    }
                    .to_string(),
                    None,
                ),
            )],
        );
        let responses = &mut operation.responses.responses;
        responses.insert("401".into(), unauthorized.into());
        responses.insert("403".into(), forbidden.into());
        if scope == Scope::Ingest {
            let cap = crate::store::StoreError::SensorCap(1_000_000);
            responses.insert(
                "507".into(),
                error(
                    "With `--max-sensors`: the batch would make the store track more sensors \
                     than the cap; refused whole (known sensors keep taking measurements).",
                    &[("sensor_cap", (ApiError::Store(cap).to_string(), None))],
                )
                .into(),
            );
        }
    }
    for path in ["/openapi.json", "/docs", "/docs/{file}"] {
        if let Some(operation) = openapi.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) {
            let overloaded = with_retry_after(error(
                "The server is serving as many requests as `--max-in-flight` allows; retry \
                 after `Retry-After`.",
                &[("overloaded", (ApiError::Overloaded(1024).to_string(), None))],
            ));
            operation
                .responses
                .responses
                .insert("503".into(), overloaded.into());
        }
    }
}

/// A sample file as JSON; the samples are part of the source tree, so a broken one
/// fails every test that builds the document.
fn sample(name: &str) -> Value {
    let text = match name {
        "post_data_ex1.json" => include_str!("../../samples/post_data_ex1.json"),
        "post_data_ex2.json" => include_str!("../../samples/post_data_ex2.json"),
        "post_data_ex3.json" => include_str!("../../samples/post_data_ex3.json"),
        "get_statistics_ex1.json" => include_str!("../../samples/get_statistics_ex1.json"),
        "get_statistics_ex2.json" => include_str!("../../samples/get_statistics_ex2.json"),
        _ => unreachable!("no sample {name}"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("samples/{name} is not JSON: {e}"))
}

/// A link to the operation `operation_id` on the sensor that `expression` names (the
/// stateful tests of schemathesis follow these).
fn sensor_link(operation_id: &str, expression: &str) -> utoipa::openapi::link::Link {
    utoipa::openapi::link::LinkBuilder::new()
        .operation_id(operation_id)
        .parameter("sensor", expression)
        .description("The statistics of the sensor this request named.")
        .build()
}

fn example(summary: &str, value: Value) -> utoipa::openapi::example::Example {
    ExampleBuilder::new().summary(summary).value(Some(value)).build()
}

/// The message and index the real decoder gives `body`.
fn decode_error(body: &[u8]) -> (String, Option<usize>) {
    match ingest::decode(&mut body.to_vec()) {
        Ok(_) => unreachable!("example body {:?} is valid", String::from_utf8_lossy(body)),
        Err(e) => {
            let index = e.index;
            (ApiError::from(e).to_string(), index)
        }
    }
}

/// A response with the JSON error body and named examples of it.
fn error(description: &str, examples: &[(&str, (String, Option<usize>))]) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content(examples))
        .build()
}

fn error_content(examples: &[(&str, (String, Option<usize>))]) -> Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Error")))
        .examples_from_iter(examples.iter().map(|(name, (message, index))| {
            (
                *name,
                ExampleBuilder::new()
                    .value(Some(json!({ "error": message, "index": index })))
                    .build(),
            )
        }))
        .build()
}

fn text_content(example: &str) -> Content {
    ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .example(Some(Value::from(example)))
        .build()
}

fn with_retry_after(mut response: Response) -> Response {
    response.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .minimum(Some(0)),
            ))
            .description(Some("Seconds to wait before retrying."))
            .build()
            .into(),
    );
    response
}

fn store_unavailable() -> Response {
    with_retry_after(error(
        "The shared store could not be reached in time (`--store redis`): nothing was applied, \
         unless the error says the store failed while applying the batch, and a retry with \
         the same `Idempotency-Key` is always safe. Or the server is overloaded (past \
         `--max-in-flight`): refused at once, nothing applied.",
        &[(
            "unavailable",
            (
                "the statistics store is unavailable; retry after the Retry-After delay".into(),
                None,
            ),
        )],
    ))
}

fn bad_sensor_path() -> Response {
    error(
        "The sensor id in the path is over 256 bytes once decoded, or not valid \
         percent-encoded UTF-8.",
        &[(
            "too_long",
            (
                ApiError::SensorId(crate::domain::SensorIdError::TooLong(300)).to_string(),
                None,
            ),
        )],
    )
}

/// The document, serialized once per process.
pub fn json() -> &'static [u8] {
    static JSON: LazyLock<Vec<u8>> = LazyLock::new(|| {
        serde_json::to_vec(&crate::http::openapi_document()).expect("the document serializes")
    });
    &JSON
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Timestamp;

    fn pattern() -> regex::Regex {
        regex::Regex::new(TIMESTAMP_PATTERN).unwrap()
    }

    #[test]
    fn the_timestamp_pattern_matches_the_parser_on_the_edges() {
        let re = pattern();
        for text in [
            "2021-11-08T21:38:09+00:00",
            "2021-11-08 21:38:09,123456789-23:59",
            "2000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "0000-02-29T00:00:00Z",
            "2024-02-29t00:00:00+01",
            "2023-02-29T00:00:00Z",
            "2021-04-31T00:00:00Z",
            "2021-12-31T23:59:59.9+2359",
            "2021-11-08T24:00:00Z",
            "2021-11-08T23:59:60Z",
            "2021-11-08T21:38:09+24:00",
            "2021-11-08T21:38:09.1234567890Z",
            "2021-11-08T21:38:09\n",
            "２０２１-11-08T21:38:09Z",
        ] {
            assert_eq!(re.is_match(text), Timestamp::parse(text).is_ok(), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn the_timestamp_pattern_accepts_exactly_what_the_parser_accepts(
            y in "[0-9]{4}", mo in "(0[0-9]|1[0-3])", d in "([0-2][0-9]|3[0-2])", sep in "[Tt _]",
            h in "([01][0-9]|2[0-5])", mi in "[0-6][0-9]", s in "[0-6][0-9]",
            frac in "([.,][0-9]{0,10})?", off in "(|Z|z|[+-][0-2][0-9](:?[0-6][0-9])?)",
        ) {
            let text = format!("{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}");
            prop_assert_eq!(pattern().is_match(&text), Timestamp::parse(&text).is_ok(), "{}", text);
        }

        #[test]
        fn printed_timestamps_match_the_output_pattern(secs in -62_167_219_200i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = Timestamp::from_datetime(chrono::DateTime::from_timestamp(secs, nanos).unwrap());
            let re = regex::Regex::new(OUTPUT_TIMESTAMP_PATTERN).unwrap();
            prop_assert!(re.is_match(&t.to_string()), "{}", t);
        }
    }
}
