//! Bad input of every kind gets the documented JSON error, never plain text
//! and never a 5xx; plus health, readiness, metrics and the OpenAPI document.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{expect_error, TestGateway};
use reqwest::StatusCode;
use serde_json::Value;

async fn raw_post(
    gw: &TestGateway,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = gw.client.post(gw.url(path)).body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let gw = TestGateway::start().await;
    let json = Some("application/json");
    let cases = [
        (
            json,
            "{\"username\": \"alice\", ",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            json,
            "not json at all",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (json, "", StatusCode::BAD_REQUEST, "malformed_json"),
        (
            Some("text/plain"),
            "{\"username\":\"alice\",\"password\":\"long enough\"}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            None,
            "{\"username\":\"alice\",\"password\":\"long enough\"}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            json,
            "{\"username\":\"alice\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json,
            "{\"username\":42,\"password\":\"long enough\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json,
            "[1, 2, 3]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json,
            "{\"username\":\"alice\",\"password\":\"long enough\",\"admin\":true}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let msg = expect_error(
            raw_post(&gw, "/v1/users", content_type, body).await,
            status,
            code,
        )
        .await;
        if code == "invalid_body" {
            assert!(msg.len() > 10, "the message says what is wrong: {msg}");
        }
    }
    // Nothing was created by any of them.
    let r = gw
        .post_json(
            "/v1/sessions",
            None,
            &serde_json::json!({"username": "alice", "password": "long enough"}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let gw = TestGateway::start_with(|c| c.max_body_bytes = 1024).await;
    let token = gw.user_token("alice").await;
    let big = format!(
        "{{\"module\":\"m\",\"account\":\"a\",\"credentials\":{{\"k\":\"{}\"}}}}",
        "x".repeat(4096)
    );
    let r = gw
        .client
        .post(gw.url("/v1/bindings"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Chunked, without a Content-Length, is cut off too.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..16).map(|_| Ok("x".repeat(512))).collect();
    let r = gw
        .client
        .post(gw.url("/v1/users"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_get_json_errors() {
    let gw = TestGateway::start().await;
    expect_error(
        gw.get("/v1/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let r = gw.client.put(gw.url("/v1/users")).send().await.unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let token = gw.user_token("alice").await;
    expect_error(
        gw.delete("/v1/bindings/does-not-exist", Some(&token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let r = gw
        .client
        .get(gw.url("/v1/bindings"))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_answer() {
    let gw = TestGateway::start().await;
    assert_eq!(gw.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(gw.get("/readyz", None).await.status(), StatusCode::OK);
    gw.get("/v1/modules", None).await;
    let r = gw.get("/metrics", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            "gateway_http_requests_total{method=\"GET\",route=\"/v1/modules\",status=\"200\"} 1"
        ),
        "{text}"
    );
    let doc: Value = gw.get_json("/v1/openapi.json", None).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/users",
        "/v1/sessions",
        "/v1/sessions/current",
        "/v1/modules",
        "/v1/admin/modules",
        "/v1/admin/modules/{id}",
        "/v1/bindings",
        "/v1/bindings/{id}",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let gw = TestGateway::start().await;
    // Readiness checks that the migrations are applied: remove their record.
    drop_migrations_table(&gateway::config::default_database_url(gw.data_dir.path())).await;
    let r = gw.get("/readyz", None).await;
    let msg = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    // The database's own words (table names, hosts, users) stay in the log.
    assert!(
        !msg.contains("_sqlx_migrations") && !msg.contains("sqlite"),
        "{msg}"
    );
    assert_eq!(gw.get("/healthz", None).await.status(), StatusCode::OK);
}

async fn drop_migrations_table(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&mut conn)
        .await
        .unwrap();
}
