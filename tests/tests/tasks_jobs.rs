//! Cloud tasks T2 media jobs and T3 kept results through the real gateway,
//! the `tasks` plugin and worker processes of the real binary: a PNG
//! thumbnail of the expected size, fetched twice while kept and `410`
//! after its keep time (the clock moved, not slept), its bytes deleted; a
//! decompression bomb and a damaged file fail with a reason and help
//! text; bad requests are refused at once; another user sees nothing; a
//! job queued before a SIGKILL completes after the restart; a file of the
//! files service is an input once uploaded, and says why before.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::{crash_kit, expect_error, service_plugin, TestGateway};
use gateway::clock::ManualClock;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
/// The operator's keep time in these tests.
const KEEP_SECS: u64 = 3600;

fn manifest() -> Value {
    json!({"id": "tasks", "name": "Cloud tasks",
        "grants": ["kv", "events", "timers", "clock", "log", "blobs", "media"],
        "config": {"result_keep_secs": KEEP_SECS}})
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A 1x1 PNG whose header claims `side` x `side` pixels (CRC fixed up):
/// decoding it as announced would need gigabytes.
fn png_bomb(side: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..24].copy_from_slice(&[side.to_be_bytes(); 2].concat());
    let mut crc = !0u32;
    for &byte in &bytes[12..29] {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
    bytes
}

/// `POST /inputs` of `body` as `content_type` on the gateway at `base`:
/// the input's id.
async fn input(
    client: &Client,
    base: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> String {
    let r = client
        .post(format!("{base}/v1/services/tasks/inputs"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let made: Value = r.json().await.unwrap();
    made["input"].as_str().unwrap().to_owned()
}

/// `POST /jobs`: the answer's status and body.
async fn submit(client: &Client, base: &str, token: &str, job: &Value) -> (StatusCode, Value) {
    let r = client
        .post(format!("{base}/v1/services/tasks/jobs"))
        .bearer_auth(token)
        .json(job)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// The job once it is done or failed.
async fn ended(client: &Client, base: &str, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let job: Value = client
            .get(format!("{base}/v1/services/tasks/jobs/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "done" || job["status"] == "failed" {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never ended: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn result(gw: &TestGateway, token: &str, id: &str) -> reqwest::Response {
    gw.get(&format!("/v1/services/tasks/jobs/{id}/result"), Some(token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbnail_job_is_fetched_while_kept_then_answers_410_and_its_bytes_go() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    let gw = TestGateway::start_with(move |c| {
        c.clock = shared;
        c.blobs.sweep_every = Duration::from_millis(100);
    })
    .await;
    let r = gw
        .upload_service(&manifest(), &service_plugin("tasks"))
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let alice = gw.user_token("alice").await;
    let phone = gw.device_token(&alice, "alice-phone").await;
    let mut inbox = gw.inbox(&phone).await;
    let client = &gw.client;

    let photo = input(client, &gw.base, &phone, "image/png", png(400, 200)).await;
    let (status, job) = submit(
        client,
        &gw.base,
        &phone,
        &json!({"kind": "thumbnail", "input": photo, "params": {"side": 100}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "queued");
    let id = job["job_id"].as_str().unwrap().to_owned();

    let done = ended(client, &gw.base, &phone, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["result"]["content_type"], "image/png");
    assert_eq!(done["result"]["state"], "kept");
    // The device that asked hears that it ended.
    let event = inbox.next_of("tasks.job", WAIT).await.expect("job event");
    assert_eq!(event.data["job_id"], id.as_str());
    assert_eq!(event.data["status"], "done");

    // Fetched twice within its lifetime (a delivery that failed is sent
    // again), the same bytes, 100x50.
    let mut fetched = Vec::new();
    for _ in 0..2 {
        let r = result(&gw, &phone, &id).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "image/png");
        fetched.push(r.bytes().await.unwrap());
    }
    assert_eq!(fetched[0], fetched[1]);
    assert_eq!(
        fetched[0].len() as u64,
        done["result"]["size"].as_u64().unwrap()
    );
    let thumb = image::load_from_memory(&fetched[0]).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (100, 50));

    // Another user knows neither the job nor its result.
    let bob = gw.user_token("bob").await;
    let r = gw
        .get(&format!("/v1/services/tasks/jobs/{id}"), Some(&bob))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_job").await;
    let r = result(&gw, &bob, &id).await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_job").await;
    // Nor may bob run a job on alice's input.
    let (status, theirs) = submit(
        client,
        &gw.base,
        &bob,
        &json!({"kind": "thumbnail", "input": photo}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let theirs = ended(client, &gw.base, &bob, theirs["job_id"].as_str().unwrap()).await;
    assert_eq!(theirs["error"]["code"], "unknown_input", "{theirs}");

    // Past its keep time: 410 with the reason, and the bytes deleted.
    clock.advance(Duration::from_secs(KEEP_SECS + 1));
    let r = result(&gw, &phone, &id).await;
    let message = expect_error(r, StatusCode::GONE, "result_expired").await;
    assert!(message.contains("kept until"), "{message}");
    let seen = gw
        .get_json(&format!("/v1/services/tasks/jobs/{id}"), Some(&phone))
        .await;
    assert_eq!(seen["result"]["state"], "expired");
    let folder = gw.data_dir.path().join("blobs").join("tasks");
    let deadline = tokio::time::Instant::now() + WAIT;
    let blob_count = || std::fs::read_dir(&folder).map_or(0, |d| d.count());
    // The input stays (alice's own upload); the result goes.
    while blob_count() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the result was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = gw.get_json("/v1/services/tasks/jobs", Some(&phone)).await;
    assert_eq!(listed["jobs"][0]["job_id"], id.as_str());
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_and_a_damaged_file_fail_with_a_reason_and_help_and_bad_jobs_are_refused() {
    let gw = TestGateway::start().await;
    let r = gw
        .upload_service(&manifest(), &service_plugin("tasks"))
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let alice = gw.user_token("alice").await;
    let client = &gw.client;
    let base = gw.base.as_str();

    let bomb = input(client, base, &alice, "image/png", png_bomb(100_000)).await;
    let mut damaged = png(64, 64);
    damaged.truncate(damaged.len() / 2);
    let damaged = input(client, base, &alice, "image/png", damaged).await;
    let notes = input(
        client,
        base,
        &alice,
        "text/markdown",
        b"# Notes\n\n*done* <script>x</script>".to_vec(),
    )
    .await;
    let mut ids = Vec::new();
    for job in [
        json!({"kind": "thumbnail", "input": bomb}),
        json!({"kind": "convert", "input": damaged, "params": {"to": "image/jpeg"}}),
        json!({"kind": "markdown-to-html", "input": notes}),
    ] {
        let (status, made) = submit(client, base, &alice, &job).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{made}");
        ids.push(made["job_id"].as_str().unwrap().to_owned());
    }
    let bombed = ended(client, base, &alice, &ids[0]).await;
    assert_eq!(bombed["status"], "failed");
    assert_eq!(bombed["error"]["code"], "input_too_large", "{bombed}");
    assert!(
        bombed["error"]["help"].as_str().unwrap().contains("pixels"),
        "{bombed}"
    );
    let broken = ended(client, base, &alice, &ids[1]).await;
    assert_eq!(broken["error"]["code"], "corrupt_input", "{broken}");
    assert!(!broken["error"]["message"].as_str().unwrap().is_empty());
    assert!(!broken["error"]["help"].as_str().unwrap().is_empty());
    // A failed job has no result, and says why.
    let r = result(&gw, &alice, &ids[1]).await;
    let message = expect_error(r, StatusCode::CONFLICT, "job_failed").await;
    assert!(message.contains("failed"), "{message}");
    // The document operation: HTML, the raw HTML escaped.
    let html = ended(client, base, &alice, &ids[2]).await;
    assert_eq!(html["status"], "done", "{html}");
    let page = result(&gw, &alice, &ids[2]).await.text().await.unwrap();
    assert!(
        page.contains("<h1>Notes</h1>") && page.contains("<em>done</em>"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");

    // Refused at once, with the reason and what to try.
    let (status, refused) = submit(
        client,
        base,
        &alice,
        &json!({"kind": "thumbnail", "input": bomb, "params": {"side": 100_000}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_params");
    assert!(
        refused["error"]["help"].as_str().unwrap().contains("4096"),
        "{refused}"
    );
    let (status, refused) = submit(
        client,
        base,
        &alice,
        &json!({"kind": "sharpen", "input": bomb}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["error"]["help"]
            .as_str()
            .unwrap()
            .contains("thumbnail"),
        "{refused}"
    );
    let (status, refused) = submit(
        client,
        base,
        &alice,
        &json!({"kind": "thumbnail", "input": "../../etc/passwd"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    assert_eq!(refused["error"]["code"], "unknown_input");
    let (status, refused) = submit(client, base, &alice, &json!({"kind": 7, "input": bomb})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_body");
    let r = result(&gw, &alice, "0123456789abcdef0123456789abcdef").await;
    expect_error(r, StatusCode::NOT_FOUND, "unknown_job").await;
    // A job on a media id of the user (an avatar upload) works too.
    let r = gw
        .client
        .post(gw.url("/v1/media"))
        .bearer_auth(&alice)
        .header("content-type", "image/png")
        .body(png(300, 300))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let media: Value = r.json().await.unwrap();
    let (status, made) = submit(
        client,
        base,
        &alice,
        &json!({"kind": "resize", "input": media["id"], "params": {"width": 30, "height": 20}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{made}");
    let resized = ended(client, base, &alice, made["job_id"].as_str().unwrap()).await;
    assert_eq!(resized["status"], "done", "{resized}");
    let bytes = result(&gw, &alice, made["job_id"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    let image = image::load_from_memory(&bytes).unwrap();
    assert_eq!((image.width(), image.height()), (30, 20));
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_before_a_sigkill_completes_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let envs = crash_kit::envs(&crash_kit::hex_key());
    let client = Client::new();
    // A process that queues jobs but runs none: the job is surely still
    // queued when the process dies.
    let queuing = ["--data-dir", dir.as_str(), "--media-workers", "0"];
    let mut gw = crash_kit::start(&queuing, &envs).await;
    crash_kit::upload_service(&client, &gw, &manifest(), &service_plugin("tasks")).await;
    let token = crash_kit::user(&client, &gw, "alice").await;
    let photo = input(&client, &gw.base, &token, "image/png", png(640, 480)).await;
    let (status, job) = submit(
        &client,
        &gw.base,
        &token,
        &json!({"kind": "thumbnail", "input": photo, "params": {"side": 64}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job_id"].as_str().unwrap().to_owned();
    let addr = gw.addr().to_owned();
    gw.kill();

    let running = ["--data-dir", dir.as_str(), "--media-workers", "2"];
    let gw = crash_kit::start_listening(&addr, &running, &envs).await;
    let done = ended(&client, &gw.base, &token, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    let bytes = client
        .get(gw.url(&format!("/v1/services/tasks/jobs/{id}/result")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let thumb = image::load_from_memory(&bytes).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (64, 48));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_the_files_service_is_a_job_input_once_uploaded() {
    use base64::Engine;
    let gw = TestGateway::start().await;
    let r = gw
        .upload_service(&manifest(), &service_plugin("tasks"))
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let files = json!({"id": "files", "name": "Files",
        "grants": ["kv", "devices", "events", "clock", "log", "blobs"]});
    let r = gw.upload_service(&files, &service_plugin("files")).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let alice = gw.user_token("alice").await;
    let laptop = gw.device_token(&alice, "alice-laptop").await;
    let client = &gw.client;
    let picture = png(200, 100);

    // Announced and half uploaded: not an input yet, and the job says why.
    let batch: Value = gw
        .post_json(
            "/v1/services/files/batches",
            Some(&laptop),
            &json!({"files": [{"name": "p.png", "type": "image/png", "size": picture.len()}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let file = batch["files"][0]["id"].as_str().unwrap().to_owned();
    let r = client
        .post(gw.url("/v1/services/files/uploads"))
        .bearer_auth(&laptop)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", picture.len().to_string())
        .header(
            "Upload-Metadata",
            format!(
                "file_id {}",
                base64::engine::general_purpose::STANDARD.encode(&file)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let at = r.headers()["location"].to_str().unwrap().to_owned();
    let patch = |offset: usize, bytes: Vec<u8>| {
        client
            .patch(gw.url(&at))
            .bearer_auth(&laptop)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(bytes)
            .send()
    };
    let half = picture.len() / 2;
    assert_eq!(
        patch(0, picture[..half].to_vec()).await.unwrap().status(),
        204
    );
    let job = json!({"kind": "thumbnail", "input": file, "params": {"side": 50}});
    let (_, early) = submit(client, &gw.base, &alice, &job).await;
    let early = ended(client, &gw.base, &alice, early["job_id"].as_str().unwrap()).await;
    assert_eq!(early["error"]["code"], "input_not_ready", "{early}");

    // Uploaded: the same job works on it.
    assert_eq!(
        patch(half, picture[half..].to_vec())
            .await
            .unwrap()
            .status(),
        204
    );
    let (_, made) = submit(client, &gw.base, &alice, &job).await;
    let id = made["job_id"].as_str().unwrap().to_owned();
    let done = ended(client, &gw.base, &alice, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    let bytes = result(&gw, &alice, &id).await.bytes().await.unwrap();
    let thumb = image::load_from_memory(&bytes).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (50, 25));
    // Another user cannot name it.
    let bob = gw.user_token("bob").await;
    let (_, theirs) = submit(client, &gw.base, &bob, &job).await;
    let theirs = ended(client, &gw.base, &bob, theirs["job_id"].as_str().unwrap()).await;
    assert_eq!(theirs["error"]["code"], "unknown_input", "{theirs}");
    gw.stop().await.unwrap();
}
