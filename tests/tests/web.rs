//! The end users' web page in a real browser: Playwright (web/tests,
//! from npm) drives Debian's Chromium against this gateway, a real Synapse
//! and a webhook receiver. The browser side registers, binds both networks,
//! changes the signature and the avatar once, follows a file upload from a
//! second browser and reads a handoff log; this side then checks that the
//! networks themselves got what the page showed as delivered. Screenshots
//! of every page, desktop and phone sized, are left in
//! `target/web-screenshots/`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::{MockNetwork, Reply};
use e2e_tests::synapse::Synapse;
use e2e_tests::{service_plugin, webhook, TestGateway};
use image::{ImageBuffer, Rgb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MATRIX_PASSWORD: &str = "alice-matrix-pw";
const SIGNATURE: &str = "Changed once, from the web page";

/// Where the page's sources and its npm tools are.
fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

/// The browser and Playwright, or why they cannot run: a panic under
/// `CI=true`, where the test scripts install them.
fn browser() -> Option<PathBuf> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    let playwright = web_dir().join("node_modules/.bin/playwright");
    let missing = if !chromium.exists() {
        Some(format!(
            "{} missing: apt-get install chromium",
            chromium.display()
        ))
    } else if !playwright.exists() {
        Some("web/node_modules missing: run ./scripts/build-web.sh".to_owned())
    } else {
        None
    };
    match missing {
        None => Some(chromium),
        Some(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the browser tests cannot run: {why}"
            );
            eprintln!("browser tests skipped (outside CI only): {why}");
            None
        }
    }
}

/// A photo-like PNG above every reference connector's avatar limits:
/// 1600x1200 pixels (limit 1024) and several MiB (the webhook's limit is 1
/// MiB), of a smooth gradient with grain so that it compresses as a photo.
fn big_avatar(dir: &Path) -> PathBuf {
    let mut seed = 0x2545_f491_u32;
    let image = ImageBuffer::from_fn(1600, 1200, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let grain = (seed % 24) as u8;
        Rgb([
            (x * 200 / 1600) as u8 + grain,
            (y * 200 / 1200) as u8 + grain,
            120 + grain,
        ])
    });
    let path = dir.join("big-avatar.png");
    image.save(&path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 1024 * 1024);
    path
}

/// An upload the gateway must accept.
async fn created(r: reqwest::Response) {
    let status = r.status();
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
}

async fn upload_service(gw: &TestGateway, manifest: Value, dir: &str) {
    created(gw.upload_service(&manifest, &service_plugin(dir)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_does_everything_from_the_web_page_in_a_real_browser() {
    let Some(chromium) = browser() else {
        return;
    };
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    synapse.register("alice", MATRIX_PASSWORD);
    let gw = TestGateway::start_with(|c| {
        c.delivery.backoff_base = Duration::from_millis(200);
        c.delivery.poll_interval = Duration::from_millis(100);
        c.delivery.max_attempts = 3;
    })
    .await;
    created(
        gw.upload_module(&synapse.manifest(), &e2e_tests::plugin("matrix_connector"))
            .await,
    )
    .await;
    let phone = MockNetwork::start().await;
    created(
        gw.upload_module(&phone.manifest("phone", 100, 100), &webhook())
            .await,
    )
    .await;
    // A network that asks to wait once, then fails every push.
    let flaky = MockNetwork::start().await;
    flaky.then([Reply::RetryAfter(3)]);
    flaky.otherwise(Reply::Status(500));
    created(
        gw.upload_module(&flaky.manifest("flaky", 100, 100), &webhook())
            .await,
    )
    .await;
    upload_service(
        &gw,
        json!({"id": "files", "name": "Files",
               "grants": ["kv", "devices", "events", "clock", "log", "blobs"]}),
        "files",
    )
    .await;
    upload_service(
        &gw,
        json!({"id": "handoff", "name": "Handoff",
               "grants": ["kv", "devices", "events", "timers", "clock"]}),
        "handoff",
    )
    .await;

    let scratch = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-screenshots");
    let output = tokio::process::Command::new(web_dir().join("node_modules/.bin/playwright"))
        .arg("test")
        .current_dir(web_dir())
        .env("CHROMIUM", &chromium)
        .env("GATEWAY_URL", &gw.base)
        .env("MATRIX_ACCOUNT", "@alice:localhost")
        .env("MATRIX_PASSWORD", MATRIX_PASSWORD)
        .env("WEBHOOK_MODULE", "phone")
        .env("WEBHOOK_NAME", "phone network")
        .env("FLAKY_MODULE", "flaky")
        .env("FLAKY_NAME", "flaky network")
        .env("SIGNATURE", SIGNATURE)
        .env("BIG_AVATAR", big_avatar(scratch.path()))
        .env("SCREENSHOT_DIR", &shots)
        .env("PLAYWRIGHT_OUTPUT", scratch.path().join("results"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run playwright");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "the browser tests failed:\n{report}"
    );
    assert!(report.contains("11 passed"), "{report}");

    // What the page showed as delivered is on the networks themselves.
    let matrix_token = synapse.login("alice", MATRIX_PASSWORD).await;
    assert_eq!(
        synapse
            .status_msg(&matrix_token, "@alice:localhost")
            .await
            .as_deref(),
        Some(SIGNATURE)
    );
    let mxc = synapse
        .avatar_url(&matrix_token, "@alice:localhost")
        .await
        .expect("the avatar reached Synapse");
    let avatar = image::load_from_memory(&synapse.download(&matrix_token, &mxc).await).unwrap();
    assert_eq!((avatar.width(), avatar.height()), (1024, 768));
    let pushes = phone.accepted();
    assert!(
        pushes
            .iter()
            .any(|hit| hit.body["settings"]["signature"] == SIGNATURE),
        "{pushes:?}"
    );
    for name in [
        "login", "networks", "change", "avatar", "retrying", "devices", "files", "handoff",
    ] {
        for size in ["desktop", "phone"] {
            let shot = shots.join(format!("{name}-{size}.png"));
            assert!(shot.exists(), "{} missing", shot.display());
        }
    }
}
