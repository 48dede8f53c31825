//! What one user's images may cost the gateway: the same bytes are stored
//! once, each user's stored images stay within a quota, images nothing
//! needs are deleted after the retention time (clock moved, not slept),
//! and an avatar fanned out to networks with the same limits is transcoded
//! once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::MockNetwork;
use e2e_tests::{expect_error, manifest, target, webhook, TestGateway};
use gateway::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Cursor;
use std::time::Duration;

/// A PNG of `width` x `height` pixels of noise from `seed` (noise does not
/// compress, so its size is predictable).
fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let image = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut out = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

async fn upload(gw: &TestGateway, token: &str, bytes: &[u8]) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/media"))
        .bearer_auth(token)
        .header("content-type", "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn uploaded(gw: &TestGateway, token: &str, bytes: &[u8]) -> String {
    let r = upload(gw, token, bytes).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_image_is_stored_once_and_each_user_has_a_quota() {
    let (first, second) = (png(40, 40, 1), png(40, 40, 2));
    let quota = (first.len() + second.len() / 2) as u64;
    let gw = TestGateway::start_with(|c| c.media.quota_bytes = quota).await;
    let alice = gw.user_token("alice").await;

    let id = uploaded(&gw, &alice, &first).await;
    // The monitor sends the same avatar again: no second copy.
    assert_eq!(uploaded(&gw, &alice, &first).await, id);
    let message = expect_error(
        upload(&gw, &alice, &second).await,
        StatusCode::CONFLICT,
        "media_quota_exceeded",
    )
    .await;
    assert!(
        message.contains(&format!("{quota}-byte quota")),
        "{message}"
    );
    // The quota is the user's own: another user is not refused.
    let bob = gw.user_token("bob").await;
    uploaded(&gw, &bob, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_are_deleted_after_the_retention_and_needed_ones_kept() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    // No delivery runs, so the change below stays open and needs its image.
    let gw = TestGateway::start_with(move |c| {
        c.clock = shared;
        c.delivery.concurrency = 0;
        c.session_ttl = Duration::from_secs(7 * 24 * 3600);
    })
    .await;
    let token = gw.user_token("alice").await;
    for id in ["alpha", "beta"] {
        assert_eq!(
            gw.upload_module(&manifest(id), &webhook()).await.status(),
            StatusCode::CREATED
        );
        let bind = json!({"module": id, "account": format!("alice@{id}"), "credentials": {}});
        let r = gw.post_json("/v1/bindings", Some(&token), &bind).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let unused = uploaded(&gw, &token, &png(8, 8, 1)).await;
    let needed = uploaded(&gw, &token, &png(8, 8, 2)).await;
    gw.report(&token, "alpha", json!({"avatar": needed})).await;

    clock.advance(Duration::from_secs(25 * 3600));
    // The next upload makes room: what nothing needs is gone.
    uploaded(&gw, &token, &png(8, 8, 3)).await;
    let r = gw
        .post_json(
            "/v1/changes",
            Some(&token),
            &json!({"module": "alpha", "settings": {"avatar": unused}}),
        )
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_media").await;
    // The avatar of the open change (and of the current profile) stays.
    gw.report(&token, "beta", json!({"avatar": needed})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avatar_sent_to_networks_with_the_same_limits_is_transcoded_once() {
    let gw = TestGateway::start_with(|c| {
        c.delivery.poll_interval = Duration::from_millis(50);
    })
    .await;
    let token = gw.user_token("alice").await;
    let mut mocks = Vec::new();
    for id in ["source", "alpha", "beta", "gamma"] {
        let mock = MockNetwork::start().await;
        let r = gw
            .upload_module(&mock.manifest(id, 100, 100), &webhook())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let bind = json!({"module": id, "account": format!("alice@{id}"), "credentials": {}});
        let r = gw.post_json("/v1/bindings", Some(&token), &bind).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        mocks.push(mock);
    }
    // Wider than the webhook connector's 1024 pixels: every network gets
    // it resized, the same way.
    let avatar = uploaded(&gw, &token, &png(1100, 20, 7)).await;
    let id = gw.report(&token, "source", json!({"avatar": avatar})).await;
    let change = gw.settled(&token, &id).await;
    for module in ["alpha", "beta", "gamma"] {
        let t = target(&change, module);
        assert_eq!(t["status"], "delivered", "{change}");
        assert_eq!(t["truncated_fields"], json!(["avatar"]), "{change}");
    }
    let pushed: Vec<Value> = mocks[1..]
        .iter()
        .map(|m| m.accepted()[0].body["settings"]["avatar"]["data"].clone())
        .collect();
    assert!(
        pushed.iter().all(|p| p == &pushed[0]),
        "one transcoded image"
    );
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("gateway_image_jobs_total{kind=\"transcode\"} 1\n"),
        "{metrics}"
    );
}
