//! The `gateway serve` command as operators run it: first line is the bound
//! address, secrets are generated with private permissions, SIGTERM exits 0.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn serve_prints_its_address_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .env_remove("GATEWAY_MASTER_KEY")
        .env_remove("GATEWAY_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(!base.ends_with(":0"), "a real port was picked: {base}");

    let client = reqwest::Client::new();
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            healthy = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "healthz answered");

    // The generated admin token works and its file is private.
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a new data dir is private");
    }
    #[cfg(unix)]
    for file in ["admin-token", "master-key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} mode");
    }
    let r = client
        .delete(format!("{base}/v1/admin/modules/none"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "admin token accepted (module unknown)");
    assert!(
        data.join("gateway.db").exists(),
        "SQLite database in the data dir"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            exit = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = exit.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("gateway did not stop within 5 s of SIGTERM")
    });
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn a_bad_master_key_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("GATEWAY_MASTER_KEY", "too-short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key"), "{err}");
}

#[test]
fn an_unsupported_database_url_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", "mysql://root:hunter2@localhost/db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

/// `gateway serve` with `args` and `envs` that must refuse to start: its
/// exit status and what it printed on stderr.
fn refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .env_remove("GATEWAY_MASTER_KEY")
        .env_remove("GATEWAY_DATABASE_URL")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_short_admin_token_is_refused() {
    let said = refused(&[], &[("GATEWAY_ADMIN_TOKEN", "hunter2")]);
    assert!(said.contains("at least 32 characters"), "{said}");
}

#[test]
fn a_lease_shorter_than_the_plugin_deadline_is_refused() {
    let said = refused(&["--delivery-lease-secs", "0"], &[]);
    assert!(
        said.contains("must be longer than the plugin call deadline"),
        "{said}"
    );
}

#[test]
fn too_few_database_connections_are_refused() {
    let said = refused(&["--database-connections", "2"], &[]);
    assert!(
        said.contains("--database-connections") && said.contains("4..=1000"),
        "{said}"
    );
}

#[test]
fn a_trusted_proxy_must_be_an_address_or_a_block() {
    let said = refused(&["--trusted-proxy", "proxy.example"], &[]);
    assert!(
        said.contains("neither an IP address nor a CIDR block"),
        "{said}"
    );
}

#[test]
fn a_module_to_install_must_name_a_manifest_and_a_plugin_that_exist() {
    let said = refused(&["--install-module", "webhook.json"], &[]);
    assert!(
        said.contains("--install-module webhook.json: expected MANIFEST.json=PLUGIN.wasm"),
        "{said}"
    );
    let said = refused(&["--install-module", "no-such.json=no-such.wasm"], &[]);
    assert!(
        said.contains("--install-module: reading no-such.json"),
        "{said}"
    );
}

#[test]
fn a_service_to_install_must_name_a_manifest_and_a_plugin_that_exist() {
    let said = refused(&["--install-service", "plugins/files/manifest.json"], &[]);
    assert!(
        said.contains("expected MANIFEST.json=PLUGIN.wasm"),
        "{said}"
    );
    let said = refused(
        &["--install-service", "no-such-manifest.json=no-such.wasm"],
        &[],
    );
    assert!(
        said.contains("--install-service: reading no-such-manifest.json"),
        "{said}"
    );
}
