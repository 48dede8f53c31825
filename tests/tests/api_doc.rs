//! Keeps `docs/API.md`, the public HTTP contract, true to the gateway: every
//! route the document names as `` `METHOD /path` `` exists in the gateway's
//! OpenAPI document with that method, and every route of the OpenAPI document
//! is written in `docs/API.md`. Routes listed under "Not implemented yet" are
//! plans and are not checked. Routes below `/v1/services/{service}/` are
//! answered by service plugins, not by the gateway's own handlers: their
//! plugins' tests (`handoff.rs`, ...) check them.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Methods a route line may start with.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Keys of an OpenAPI path item that are operations.
const OPERATIONS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The heading of the section whose routes are plans, not checked.
const NOT_IMPLEMENTED: &str = "Not implemented yet";

/// Where the routes of service plugins start.
const SERVICE_ROUTES: &str = "/v1/services/";

/// Routes the gateway serves that its OpenAPI document does not list: the
/// document itself. `the_openapi_route_serves_the_document` checks it.
const OUTSIDE_THE_DOCUMENT: [(&str, &str); 1] = [("GET", "/v1/openapi.json")];

/// The end users' web page: served by the gateway but not part of the JSON
/// API, so not in the OpenAPI document. `web_assets.rs` checks it.
const THE_WEB_PAGE: [(&str, &str); 1] = [("GET", "/")];

/// A route: upper-case method and path as in the OpenAPI document.
type Route = (String, String);

/// A documented route and the line (1-based) that first names it.
#[derive(Debug)]
struct Documented {
    route: Route,
    line: usize,
}

fn api_md_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md")
}

fn read_api_md() -> String {
    let path = api_md_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `METHOD /path` from the text of one code span, without the query string.
fn route_of(span: &str) -> Option<Route> {
    let (method, rest) = span.trim().split_once(' ')?;
    if !METHODS.contains(&method) {
        return None;
    }
    let rest = rest.trim();
    let path = rest.split_once('?').map_or(rest, |(path, _query)| path);
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return None;
    }
    Some((method.to_owned(), path.to_owned()))
}

/// The heading level and title of a Markdown ATX heading line.
fn heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &trimmed[level..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((level, rest.trim().trim_end_matches('#').trim()))
}

/// Every backticked `` `METHOD /path` `` of the document, outside fenced
/// blocks and outside the "Not implemented yet" section. Code spans may run
/// over a line break, as in Markdown; a run of N backticks closes a span
/// opened by N backticks.
fn documented_routes(markdown: &str) -> Vec<Documented> {
    let mut found = Vec::new();
    let mut skipping = false;
    let mut in_fence = false;
    // An open code span: its backtick count, text so far and first line.
    let mut open: Option<(usize, String, usize)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            open = None;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some((level, title)) = heading(line) {
            open = None;
            if level <= 2 {
                skipping = title.eq_ignore_ascii_case(NOT_IMPLEMENTED);
            }
            continue;
        }
        if skipping {
            continue;
        }
        if line.trim().is_empty() {
            // A blank line ends the paragraph: an unclosed span was text.
            open = None;
            continue;
        }
        if let Some((_, text, _)) = open.as_mut() {
            text.push(' ');
        }
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '`' {
                if let Some((_, text, _)) = open.as_mut() {
                    text.push(c);
                }
                continue;
            }
            let mut run = 1;
            while chars.peek() == Some(&'`') {
                chars.next();
                run += 1;
            }
            match open.take() {
                None => open = Some((run, String::new(), number)),
                Some((ticks, text, first)) if ticks == run => {
                    if let Some(route) = route_of(&text) {
                        found.push(Documented { route, line: first });
                    }
                }
                Some((ticks, mut text, first)) => {
                    text.push_str(&"`".repeat(run));
                    open = Some((ticks, text, first));
                }
            }
        }
    }
    found
}

/// Every `(METHOD, path)` of the gateway's OpenAPI document.
fn openapi_routes() -> BTreeSet<Route> {
    let document = serde_json::to_value(gateway::http::openapi::document())
        .expect("the OpenAPI document serializes");
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .expect("the OpenAPI document has paths");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item.keys().filter(|k| OPERATIONS.contains(&k.as_str())) {
            routes.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    routes
}

fn outside_the_document() -> BTreeSet<Route> {
    OUTSIDE_THE_DOCUMENT
        .iter()
        .chain(&THE_WEB_PAGE)
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

fn list(routes: &[String]) -> String {
    routes
        .iter()
        .map(|r| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_documented_route_is_in_the_openapi_document() {
    let documented = documented_routes(&read_api_md());
    assert!(
        documented.len() > 10,
        "docs/API.md names only {} routes as `METHOD /path`; is the parser broken?",
        documented.len()
    );
    let served = openapi_routes();
    let outside = outside_the_document();
    let missing: Vec<String> = documented
        .iter()
        .filter(|d| !served.contains(&d.route) && !outside.contains(&d.route))
        .filter(|d| !d.route.1.starts_with(SERVICE_ROUTES))
        .map(|d| format!("{} {} (docs/API.md line {})", d.route.0, d.route.1, d.line))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/API.md documents routes the gateway's OpenAPI document does not have \
         (fix the document, or move them under \"{NOT_IMPLEMENTED}\"):\n{}",
        list(&missing)
    );
}

#[test]
fn every_openapi_route_is_documented() {
    let documented: BTreeSet<Route> = documented_routes(&read_api_md())
        .into_iter()
        .map(|d| d.route)
        .collect();
    let undocumented: Vec<String> = openapi_routes()
        .into_iter()
        .chain(outside_the_document())
        .filter(|route| !documented.contains(route))
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes of the gateway missing from docs/API.md (write each as `METHOD /path` \
         outside \"{NOT_IMPLEMENTED}\"):\n{}",
        list(&undocumented)
    );
}

/// `GET /v1/openapi.json` is documented but not in the document it serves:
/// check that the gateway's route really serves that document.
#[tokio::test]
async fn the_openapi_route_serves_the_document() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gateway::http::openapi::router::<()>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    for (method, path) in OUTSIDE_THE_DOCUMENT {
        assert_eq!(method, "GET");
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "{method} {path}"
        );
        let served: Value = response.json().await.unwrap();
        let expected = serde_json::to_value(gateway::http::openapi::document()).unwrap();
        assert_eq!(
            served, expected,
            "{method} {path} does not serve the OpenAPI document"
        );
    }
    server.abort();
}

#[test]
fn the_parser_reads_route_spans_and_skips_plans() {
    let markdown = "# Title\n\
        - `GET /a/{id}` and `POST /b?x=1&y=` -> `201 {\"id\"}`\n\
        - ``DELETE /c`` and `PUT\n/d` but not `get /e` nor `GET e`\n\
        ```sh\ncurl `GET /fenced`\n```\n\
        ## Not implemented yet\n- `GET /planned`\n\
        ## Later\n- `PATCH /f`\n";
    let routes: Vec<String> = documented_routes(markdown)
        .into_iter()
        .map(|d| format!("{} {}@{}", d.route.0, d.route.1, d.line))
        .collect();
    assert_eq!(
        routes,
        [
            "GET /a/{id}@2",
            "POST /b@2",
            "DELETE /c@3",
            "PUT /d@3",
            "PATCH /f@11"
        ]
    );
}
