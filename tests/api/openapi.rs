//! `GET /openapi.json` and `GET /docs`: the document lists every route and every status
//! of the contract with the JSON error schema, its examples are the samples and are
//! accepted, and the page is served from the binary without reaching another origin.
//! (scripts/api-check.sh validates the document, runs schemathesis and headless Chromium.)

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, sample, spawn_app};

async fn document(app: &TestApp) -> Value {
    let reply = app
        .request(Method::GET, "/openapi.json", &[], "", StatusCode::OK)
        .await;
    assert_eq!(reply.headers["content-type"], "application/json");
    reply.json()
}

fn statuses(doc: &Value, path: &str, method: &str) -> BTreeSet<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("no responses for {method} {path}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document_of_every_route() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "sensor-stats");
    let operations: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{m} {path}"))
        })
        .collect();
    assert_eq!(
        operations,
        set(&[
            "post /data",
            "get /statistics/{sensor}",
            "delete /statistics/{sensor}",
            "get /healthz",
            "get /livez",
            "get /metrics",
            "get /openapi.json",
            "get /docs",
            "get /docs/{file}",
        ])
    );
}

#[tokio::test]
async fn every_status_of_the_contract_is_documented_with_the_error_schema() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let expected = [
        (
            "/data",
            "post",
            &[
                "204", "400", "401", "403", "408", "409", "413", "415", "422", "503", "507",
            ][..],
        ),
        (
            "/statistics/{sensor}",
            "get",
            &["200", "400", "401", "403", "503"],
        ),
        (
            "/statistics/{sensor}",
            "delete",
            &["204", "400", "401", "403", "503"],
        ),
        ("/healthz", "get", &["204", "503"]),
        ("/livez", "get", &["204"]),
        ("/metrics", "get", &["200", "401", "403"]),
        ("/docs/{file}", "get", &["200", "404", "503"]),
    ];
    for (path, method, codes) in expected {
        assert_eq!(statuses(&doc, path, method), set(codes), "{method} {path}");
        for code in codes.iter().filter(|c| c.starts_with('4') || c.starts_with('5')) {
            let response = &doc["paths"][path][method]["responses"][code];
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{method} {path} {code}"
            );
            if *code == "503" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path} 503"
                );
            }
        }
    }
    for name in ["NotFound", "MethodNotAllowed"] {
        let response = &doc["components"]["responses"][name];
        assert_eq!(
            response["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }
    assert!(doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"].is_object());
    // API keys: optional bearer auth with the route's scope, 401 with WWW-Authenticate.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, method, scope) in [
        ("/data", "post", "ingest"),
        ("/statistics/{sensor}", "get", "read"),
        ("/statistics/{sensor}", "delete", "delete"),
        ("/metrics", "get", "metrics"),
    ] {
        let operation = &doc["paths"][path][method];
        assert_eq!(
            operation["security"],
            serde_json::json!([{ "bearer": [scope] }, {}]),
            "{method} {path}"
        );
        assert!(operation["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
    }
    for path in ["/healthz", "/livez", "/openapi.json", "/docs", "/docs/{file}"] {
        assert!(doc["paths"][path]["get"]["security"].is_null(), "{path} is open");
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error", "index"]));
    assert_eq!(
        error["properties"]["index"]["type"],
        serde_json::json!(["integer", "null"])
    );
}

#[tokio::test]
async fn the_idempotency_key_header_and_the_replay_header_are_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let post = &doc["paths"]["/data"]["post"];
    let params = post["parameters"].as_array().unwrap();
    let key = params
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("Idempotency-Key parameter");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    assert_eq!(key["schema"]["maxLength"], 255);
    assert!(post["responses"]["204"]["headers"]["Idempotent-Replayed"].is_object());
}

#[tokio::test]
async fn the_examples_are_the_samples_and_the_server_accepts_them() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let body = &doc["paths"]["/data"]["post"]["requestBody"]["content"]["application/json"];
    let examples: Vec<Value> = body["examples"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| e["value"].clone())
        .collect();
    for name in ["post_data_ex1.json", "post_data_ex2.json", "post_data_ex3.json"] {
        let sample: Value = serde_json::from_str(&sample(name)).unwrap();
        assert!(examples.contains(&sample), "{name} is not an example");
    }
    for example in &examples {
        app.post_data(example.to_string(), StatusCode::NO_CONTENT).await;
    }
    let read =
        &doc["paths"]["/statistics/{sensor}"]["get"]["responses"]["200"]["content"]["application/json"];
    let reads: Vec<Value> = read["examples"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| e["value"].clone())
        .collect();
    for name in ["get_statistics_ex1.json", "get_statistics_ex2.json"] {
        let sample: Value = serde_json::from_str(&sample(name)).unwrap();
        assert!(reads.contains(&sample), "{name} is not an example");
    }
}

#[tokio::test]
async fn the_documented_400_examples_are_what_the_server_answers() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let examples =
        &doc["paths"]["/data"]["post"]["responses"]["400"]["content"]["application/json"]["examples"];
    let reply = app
        .post_data(
            r#"[{"sensor":"a","timestamp":"2021-11-08T21:38:09Z","value":1},
                {"sensor":"b","timestamp":"2021-02-30T00:00:00Z","value":1}]"#,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(reply.json(), examples["invalid_measurement"]["value"]);
}

/// The stores keep a sum per sensor; values near f64::MAX overflow it, and the document
/// says `avg` is then `null` (until the sensor is deleted).
#[tokio::test]
async fn avg_is_null_as_documented_when_the_sum_overflows() {
    let app = spawn_app().await;
    let body = format!(
        "[{},{}]",
        crate::helpers::measurement("huge", "2021-01-01T00:00:00Z", 1e308),
        crate::helpers::measurement("huge", "2021-01-01T00:00:01Z", 1e308)
    );
    app.post_data(body, StatusCode::NO_CONTENT).await;
    let stats = app.statistics("huge").await;
    assert_eq!(stats["count"], 2);
    assert!(stats["avg"].is_null(), "{stats}");
    let doc = document(&app).await;
    let avg = &doc["components"]["schemas"]["Statistics"]["properties"]["avg"];
    assert_eq!(avg["type"], serde_json::json!(["number", "null"]));
}

#[tokio::test]
async fn docs_page_and_its_files_come_from_the_binary_and_name_no_other_origin() {
    let app = spawn_app().await;
    let page = app.request(Method::GET, "/docs", &[], "", StatusCode::OK).await;
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = String::from_utf8(page.body).unwrap();
    let links: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with('/') || s.contains("://"))
        .collect();
    assert!(!links.is_empty());
    for link in links {
        assert!(
            link.starts_with('/') && !link.starts_with("//"),
            "{link} leaves the origin"
        );
    }

    let root = env!("CARGO_MANIFEST_DIR");
    for (file, content_type, on_disk) in [
        ("swagger-ui.css", "text/css", "assets/swagger-ui/swagger-ui.css"),
        (
            "swagger-ui-bundle.js",
            "text/javascript",
            "assets/swagger-ui/swagger-ui-bundle.js",
        ),
        (
            "swagger-initializer.js",
            "text/javascript",
            "src/http/docs/swagger-initializer.js",
        ),
        (
            "favicon-32x32.png",
            "image/png",
            "assets/swagger-ui/favicon-32x32.png",
        ),
    ] {
        let reply = app
            .request(Method::GET, &format!("/docs/{file}"), &[], "", StatusCode::OK)
            .await;
        assert!(
            reply.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{file}"
        );
        assert_eq!(
            reply.body,
            std::fs::read(format!("{root}/{on_disk}")).unwrap(),
            "{file}"
        );
    }
    let initializer =
        std::fs::read_to_string(format!("{root}/src/http/docs/swagger-initializer.js")).unwrap();
    assert!(initializer.contains("url: \"/openapi.json\""));
    assert!(initializer.contains("validatorUrl: null"));

    let missing = app
        .request(Method::GET, "/docs/index.html", &[], "", StatusCode::NOT_FOUND)
        .await;
    missing.error();
}
