//! Keeps the served OpenAPI document true to what the gateway enforces, so
//! generated clients and fuzzers (`scripts/fuzz-api.sh`) agree with it: the
//! input rules are schema constraints, and every operation declares the
//! error answers its extractors give, each with the JSON error body.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{json, Value};

/// The document as `GET /v1/openapi.json` serves it.
async fn served() -> Value {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gateway::http::openapi::router::<()>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let document = reqwest::get(format!("http://{addr}/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.abort();
    document
}

fn schema<'a>(document: &'a Value, name: &str) -> &'a Value {
    &document["components"]["schemas"][name]
}

/// Every operation: (method, path, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            found.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    assert!(found.len() > 15, "only {} operations", found.len());
    found
}

fn statuses(operation: &Value) -> Vec<String> {
    operation["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn error_body_ref() -> Value {
    json!({"$ref": "#/components/schemas/ErrorBody"})
}

#[tokio::test]
async fn input_rules_are_schema_constraints() {
    let document = served().await;
    let credentials = schema(&document, "Credentials");
    let username = &credentials["properties"]["username"];
    assert_eq!(username["pattern"], "^[a-z0-9._-]{3,64}$", "{credentials}");
    assert_eq!(username["minLength"], 3);
    assert_eq!(username["maxLength"], 64);
    let password = &credentials["properties"]["password"];
    assert_eq!(password["minLength"], gateway::accounts::MIN_PASSWORD_CHARS);
    assert_eq!(password["maxLength"], gateway::accounts::MAX_PASSWORD_CHARS);

    let manifest = schema(&document, "Manifest");
    let id = &manifest["properties"]["id"];
    assert_eq!(id["pattern"], "^[a-z][a-z0-9_-]{0,31}$", "{manifest}");
    assert_eq!(id["maxLength"], 32);
    assert_eq!(manifest["properties"]["name"]["maxLength"], 100);
    let origin = &manifest["properties"]["allowed_hosts"]["items"];
    assert!(
        origin["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^https?://"),
        "allowed_hosts items: {origin}"
    );
    let rate_limit = schema(&document, "RateLimit");
    for field in ["per_second", "burst"] {
        assert_eq!(
            rate_limit["properties"][field]["minimum"], 1,
            "{rate_limit}"
        );
    }

    let binding = schema(&document, "NewBindingRequest");
    assert_eq!(
        binding["properties"]["account"]["maxLength"],
        gateway::bindings::MAX_ACCOUNT_CHARS,
        "{binding}"
    );
    assert_eq!(
        binding["properties"]["module"]["pattern"], id["pattern"],
        "a binding names a module by its id"
    );
    let settings = schema(&document, "Settings");
    for field in ["signature", "mood"] {
        assert_eq!(
            settings["properties"][field]["maxLength"], 4096,
            "{settings}"
        );
    }

    let change = &document["paths"]["/v1/changes"]["post"];
    let key = change["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("Idempotency-Key parameter");
    assert_eq!(key["schema"]["maxLength"], 255, "{key}");
}

#[tokio::test]
async fn every_operation_declares_the_errors_of_its_extractors() {
    let document = served().await;
    let mut missing = Vec::new();
    for (method, path, operation) in operations(&document) {
        let has = statuses(&operation);
        let mut expect = |status: &str, why: &str| {
            if !has.iter().any(|s| s == status) {
                missing.push(format!("{method} {path}: {status} ({why})"));
            }
        };
        if operation.get("security").is_some() {
            expect("401", "authenticated");
            expect("429", "rate limited per user");
        }
        if path.starts_with("/v1/admin/") {
            expect("403", "admin: a user session is forbidden");
        }
        let body = &operation["requestBody"]["content"];
        if body.get("application/json").is_some() {
            for status in ["400", "413", "415", "422"] {
                expect(status, "JSON body");
            }
        }
        if body.get("multipart/form-data").is_some() {
            for status in ["400", "413", "415", "422"] {
                expect(status, "multipart body");
            }
        }
        if path.contains('{') {
            expect("404", "unknown id");
        }
        if operation["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["in"] == "query"))
        {
            expect("400", "query string");
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            let error = status.starts_with('4') || status.starts_with('5');
            if error && response["content"]["application/json"]["schema"] != error_body_ref() {
                missing.push(format!("{method} {path}: {status} without the error body"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the OpenAPI document does not declare what the gateway answers:\n  {}",
        missing.join("\n  ")
    );

    // A few by name, so the rules above cannot pass vacuously.
    let bindings = &document["paths"]["/v1/bindings"];
    assert!(bindings["post"]["security"].is_array());
    assert!(bindings["get"]["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
    assert!(bindings["post"]["responses"]["415"].is_object());
    assert!(bindings["post"]["responses"]["429"]["headers"]["Retry-After"].is_object());
    let media = &document["paths"]["/v1/media"]["post"];
    assert!(
        media["security"].is_array(),
        "POST /v1/media takes a user token"
    );
    for image in ["image/png", "image/jpeg", "image/gif", "image/webp"] {
        assert!(
            media["requestBody"]["content"][image].is_object(),
            "POST /v1/media takes {image}"
        );
    }
    assert!(document["paths"]["/v1/users"]["post"]["responses"]["415"].is_object());
    assert!(document["paths"]["/v1/changes"]["get"]["responses"]["400"].is_object());
}

/// The server takes what the document's lengths allow and refuses one more,
/// counting characters as JSON Schema does (multi-byte ones too).
#[tokio::test]
async fn the_gateway_agrees_with_the_declared_lengths() {
    let document = served().await;
    let credentials = &schema(&document, "Credentials")["properties"];
    let max_name = credentials["username"]["maxLength"].as_u64().unwrap() as usize;
    let max_password = credentials["password"]["maxLength"].as_u64().unwrap() as usize;
    let gw = e2e_tests::TestGateway::start().await;
    let register = |username: String, password: String| {
        let gw = &gw;
        async move {
            let body = json!({"username": username, "password": password});
            gw.post_json("/v1/users", None, &body).await.status()
        }
    };
    let longest = "é".repeat(max_password);
    assert_eq!(
        register("a".repeat(max_name), longest.clone()).await,
        reqwest::StatusCode::CREATED
    );
    assert_eq!(
        register("b".repeat(max_name + 1), longest.clone()).await,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        register("carol".into(), format!("{longest}é")).await,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY
    );
}
