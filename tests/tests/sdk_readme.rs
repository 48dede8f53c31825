//! The connector author's path: the worked example of plugin-sdk/README.md,
//! copied into a fresh crate, builds with one cargo command and loads with one
//! `POST /v1/admin/modules`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::TestGateway;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The body of the first fenced block that starts with ```` ```{lang} ````
/// after `after` in the README.
fn block(readme: &str, after: &str, lang: &str) -> String {
    let start = readme.find(after).expect("section");
    let fence = format!("```{lang}\n");
    let open = start + readme[start..].find(&fence).expect("block") + fence.len();
    let close = open + readme[open..].find("```").expect("end of block");
    readme[open..close].to_owned()
}

#[tokio::test]
async fn the_readme_example_builds_and_loads() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    let readme = std::fs::read_to_string(sdk.join("README.md")).unwrap();
    let manifest = block(&readme, "`Cargo.toml`:", "toml").replace(
        "/path/to/gateway/plugin-sdk",
        &sdk.canonicalize().unwrap().display().to_string(),
    );
    let code = block(&readme, "`src/lib.rs`:", "rust,ignore");
    let cargo_config = block(&readme, "`.cargo/config.toml`", "toml");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    // A workspace of its own, as in a separate repository.
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("{manifest}\n[workspace]\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), code).unwrap();
    std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
    std::fs::write(dir.path().join(".cargo/config.toml"), cargo_config).unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/target");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README example does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/parrot_connector.wasm")).unwrap();

    let gw = TestGateway::start().await;
    let manifest = json!({"id": "parrot", "name": "Parrot",
        "allowed_hosts": ["https://parrot.example:443"],
        "rate_limit": {"per_second": 2, "burst": 5},
        "config": {"api": "https://parrot.example"}});
    let r = gw.upload_module(&manifest, &wasm).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let module: Value = r.json().await.unwrap();
    assert_eq!(module["fields"], json!(["signature"]));
    assert_eq!(module["limits"]["max_signature_chars"], 140);
}
