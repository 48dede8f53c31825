//! Federation against real servers: one change reported from a webhook module
//! lands on a real Synapse (presence `status_msg`, profile avatar), a real
//! ejabberd (vCard `DESC`, `PHOTO`) and another webhook network, and reads
//! back from each server as sent; an oversized avatar is shrunk to what each
//! network takes and still shows on both servers; a change waits out a
//! stopped ejabberd and lands once it is back.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use e2e_tests::ejabberd::Ejabberd;
use e2e_tests::mock::{eventually, MockNetwork};
use e2e_tests::synapse::Synapse;
use e2e_tests::{plugin, target, webhook, TestGateway};
use image::{ImageFormat, RgbImage};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Cursor;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
const SIGNATURE: &str = "Grüße aus Köln ✓ 🎉";
const MATRIX_USER: &str = "@alice:localhost";
const MATRIX_PASSWORD: &str = "alice-matrix-pw";
const XMPP_USER: &str = "alice@localhost";
const XMPP_PASSWORD: &str = "alice-xmpp-pw";

async fn gateway(max_attempts: u32, backoff_max: Duration) -> TestGateway {
    TestGateway::start_with(|c| {
        c.delivery.backoff_base = Duration::from_millis(200);
        c.delivery.backoff_max = backoff_max;
        c.delivery.poll_interval = Duration::from_millis(100);
        c.delivery.max_attempts = max_attempts;
    })
    .await
}

async fn upload(gw: &TestGateway, manifest: &Value, plugin: &[u8]) {
    let r = gw.upload_module(manifest, plugin).await;
    let status = r.status();
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
}

async fn upload_matrix(gw: &TestGateway, synapse: &Synapse) {
    upload(gw, &synapse.manifest(), &plugin("matrix_connector")).await;
}

async fn upload_xmpp(gw: &TestGateway, ej: &Ejabberd) {
    upload(gw, &ej.manifest(), &plugin("xmpp_connector")).await;
}

/// Uploads a webhook module `id` posting to a new mock network.
async fn upload_webhook(gw: &TestGateway, id: &str) -> MockNetwork {
    let mock = MockNetwork::start().await;
    upload(gw, &mock.manifest(id, 100, 100), &webhook()).await;
    mock
}

async fn bind(gw: &TestGateway, token: &str, module: &str, account: &str, credentials: Value) {
    let body = json!({"module": module, "account": account, "credentials": credentials});
    let r = gw.post_json("/v1/bindings", Some(token), &body).await;
    let status = r.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "bind {module}: {}",
        r.text().await.unwrap()
    );
}

/// Reports `settings` as changed on `module`; returns the 202 receipt.
async fn report(gw: &TestGateway, token: &str, module: &str, settings: Value) -> Value {
    let body = json!({"module": module, "settings": settings});
    let r = gw.post_json("/v1/changes", Some(token), &body).await;
    let status = r.status();
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    receipt
}

/// The change once every target is final.
async fn settled(gw: &TestGateway, token: &str, receipt: &Value) -> Value {
    gw.settled(token, receipt["id"].as_str().unwrap()).await
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The largest avatar side a module describes in `GET /v1/modules`.
async fn max_pixels(gw: &TestGateway, module: &str) -> u32 {
    let listed = gw.get_json("/v1/modules", None).await;
    let found = listed["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == module)
        .unwrap_or_else(|| panic!("{module} not listed: {listed}"));
    u32::try_from(found["limits"]["avatar"]["max_pixels"].as_u64().unwrap()).unwrap()
}

/// A `side`x`side` PNG with a colour gradient (a photo-like avatar).
fn gradient_png(side: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(side, side, |x, y| {
        let (x, y) = ((x * 255 / side) as u8, (y * 255 / side) as u8);
        image::Rgb([x, y, x ^ y])
    });
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    png
}

/// Decodes an avatar as a client would: its type (from the bytes) and sides.
fn decode(bytes: &[u8], whose: &str) -> (&'static str, u32, u32) {
    let format = image::guess_format(bytes).unwrap_or_else(|e| panic!("{whose}: {e}"));
    let image = image::load_from_memory(bytes).unwrap_or_else(|e| panic!("{whose}: {e}"));
    (format.to_mime_type(), image.width(), image.height())
}

/// Checks a square avatar stayed square and fits in `max` pixels a side.
fn assert_fits((width, height): (u32, u32), max: u32, whose: &str) {
    assert!(
        width > 0 && width <= max,
        "{whose}: {width}x{height} exceeds {max} a side"
    );
    assert_eq!(width, height, "{whose}: the square avatar kept its shape");
}

/// Alice's accounts on a real Synapse and a real ejabberd, bound in a
/// gateway together with `phone`, the webhook module her changes come from.
struct World {
    synapse: Synapse,
    ej: Ejabberd,
    gw: TestGateway,
    token: String,
    phone: MockNetwork,
}

impl World {
    /// `None` only outside CI when a server is not installed.
    async fn start() -> Option<World> {
        let synapse = Synapse::start().await?;
        let ej = Ejabberd::start().await?;
        synapse.register("alice", MATRIX_PASSWORD);
        ej.register("alice", XMPP_PASSWORD).await;
        let gw = gateway(10, Duration::from_secs(2)).await;
        upload_matrix(&gw, &synapse).await;
        upload_xmpp(&gw, &ej).await;
        let phone = upload_webhook(&gw, "phone").await;
        let token = gw.user_token("alice").await;
        let matrix = json!({"password": MATRIX_PASSWORD});
        bind(&gw, &token, "matrix", MATRIX_USER, matrix).await;
        let xmpp = json!({"password": XMPP_PASSWORD});
        bind(&gw, &token, "xmpp", XMPP_USER, xmpp).await;
        bind(&gw, &token, "phone", "alice@phone", json!({"token": "t"})).await;
        Some(World {
            synapse,
            ej,
            gw,
            token,
            phone,
        })
    }

    /// Reports a change from the phone and waits until it settles.
    async fn federate(&self, settings: Value, targets: usize) -> Value {
        let receipt = report(&self.gw, &self.token, "phone", settings).await;
        assert_eq!(
            receipt["targets"].as_array().unwrap().len(),
            targets,
            "one target per other binding: {receipt}"
        );
        let change = settled(&self.gw, &self.token, &receipt).await;
        assert_eq!(change["status"], "delivered", "{change}");
        change
    }

    async fn matrix_token(&self) -> String {
        self.synapse.login("alice", MATRIX_PASSWORD).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_lands_on_matrix_xmpp_and_a_webhook_and_reads_back() {
    let Some(w) = World::start().await else {
        return;
    };
    let hook = upload_webhook(&w.gw, "hook").await;
    bind(&w.gw, &w.token, "hook", "alice@hook", json!({"token": "t"})).await;

    let change = w.federate(json!({"signature": SIGNATURE}), 3).await;
    for module in ["matrix", "xmpp", "hook"] {
        let t = target(&change, module);
        assert_eq!(t["status"], "delivered", "{module}: {change}");
        assert!(
            names(&t["applied_fields"]).contains(&"signature"),
            "{module}: {t}"
        );
    }

    // What each network's own clients now see.
    let matrix_token = w.matrix_token().await;
    assert_eq!(
        w.synapse
            .status_msg(&matrix_token, MATRIX_USER)
            .await
            .as_deref(),
        Some(SIGNATURE)
    );
    assert_eq!(
        w.ej.vcard("alice", "DESC", None).await.as_deref(),
        Some(SIGNATURE)
    );
    let pushes = hook.accepted();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].body["account"], "alice@hook");
    assert_eq!(pushes[0].body["settings"]["signature"], SIGNATURE);
    assert!(
        w.phone.hits().is_empty(),
        "nothing is pushed back to the source"
    );

    let bindings = w.gw.get_json("/v1/bindings", Some(&w.token)).await;
    for module in ["matrix", "xmpp"] {
        let binding = bindings["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["module"] == module)
            .unwrap_or_else(|| panic!("no {module} binding: {bindings}"));
        assert_eq!(binding["last_applied"]["signature"], SIGNATURE, "{binding}");
        // Read back through the connector, as a polling monitor does: the
        // value is there and marked as the gateway's own (not a new change).
        let id = binding["id"].as_str().unwrap();
        let current =
            w.gw.get_json(&format!("/v1/bindings/{id}/settings"), Some(&w.token))
                .await;
        assert_eq!(current["signature"], SIGNATURE, "{module}: {current}");
        assert_eq!(
            current["applied_by_gateway"],
            json!(["signature"]),
            "{module}: {current}"
        );
    }
    // Changed by hand on Matrix: no longer the gateway's value.
    w.synapse
        .set_status_msg(&matrix_token, MATRIX_USER, "typed in Element")
        .await;
    let matrix_id = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["module"] == "matrix")
        .and_then(|b| b["id"].as_str())
        .unwrap()
        .to_owned();
    let current =
        w.gw.get_json(
            &format!("/v1/bindings/{matrix_id}/settings"),
            Some(&w.token),
        )
        .await;
    assert_eq!(current["signature"], "typed in Element", "{current}");
    assert_eq!(current["applied_by_gateway"], json!([]), "{current}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avatar_is_transcoded_and_visible_on_both_servers() {
    let Some(w) = World::start().await else {
        return;
    };
    let matrix_token = w.matrix_token().await;
    let before = w.synapse.avatar_url(&matrix_token, MATRIX_USER).await;
    let (matrix_max, xmpp_max) = (
        max_pixels(&w.gw, "matrix").await,
        max_pixels(&w.gw, "xmpp").await,
    );
    let side = 2048;
    assert!(side > matrix_max && side > xmpp_max, "too small to shrink");

    let r =
        w.gw.client
            .post(w.gw.url("/v1/media"))
            .bearer_auth(&w.token)
            .header("content-type", "image/png")
            .body(gradient_png(side))
            .send()
            .await
            .unwrap();
    let status = r.status();
    let media: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{media}");
    assert_eq!(media["width"], side);

    let change = w.federate(json!({"avatar": media["id"]}), 2).await;
    for module in ["matrix", "xmpp"] {
        let t = target(&change, module);
        assert_eq!(t["status"], "delivered", "{module}: {change}");
        assert!(names(&t["applied_fields"]).contains(&"avatar"), "{t}");
        // Both limits are below 2048 pixels, so both copies were shrunk.
        assert!(names(&t["truncated_fields"]).contains(&"avatar"), "{t}");
    }

    // Matrix: a new avatar_url whose media is the shrunk image.
    let mxc = w
        .synapse
        .avatar_url(&matrix_token, MATRIX_USER)
        .await
        .expect("an avatar on Matrix");
    assert!(mxc.starts_with("mxc://"), "{mxc}");
    assert_ne!(Some(&mxc), before.as_ref(), "the Matrix avatar changed");
    let bytes = w.synapse.download(&matrix_token, &mxc).await;
    let (_, width, height) = decode(&bytes, "Matrix");
    assert_fits((width, height), matrix_max, "Matrix");

    // XMPP: the vCard PHOTO, as a client decodes it.
    let kind = w.ej.vcard("alice", "PHOTO", Some("TYPE")).await;
    let kind = kind.expect("a vCard PHOTO TYPE");
    let binval = w.ej.vcard("alice", "PHOTO", Some("BINVAL")).await;
    let binval: String = binval
        .expect("a vCard PHOTO BINVAL")
        .split_whitespace()
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(binval)
        .expect("BINVAL is base64");
    let (format, width, height) = decode(&bytes, "XMPP");
    assert_eq!(kind, format, "PHOTO TYPE names the image's format");
    assert_fits((width, height), xmpp_max, "XMPP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waits_out_a_stopped_xmpp_server() {
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    ej.register("alice", XMPP_PASSWORD).await;
    let gw = gateway(50, Duration::from_secs(5)).await;
    upload_xmpp(&gw, &ej).await;
    let _phone = upload_webhook(&gw, "phone").await;
    let token = gw.user_token("alice").await;
    let xmpp = json!({"password": XMPP_PASSWORD});
    bind(&gw, &token, "xmpp", XMPP_USER, xmpp).await;
    bind(&gw, &token, "phone", "alice@phone", json!({"token": "t"})).await;

    tokio::task::block_in_place(|| ej.stop());
    let stopped = Instant::now();
    let signature = "Zurück nach dem Ausfall ⚡";
    let receipt = report(&gw, &token, "phone", json!({"signature": signature})).await;
    let path = format!("/v1/changes/{}", receipt["id"].as_str().unwrap());
    let waiting = eventually("the xmpp target to be retrying", WAIT, || async {
        let change = gw.get_json(&path, Some(&token)).await;
        let t = target(&change, "xmpp").clone();
        (t["status"] == "retrying" && t["last_error"].is_string()).then_some(t)
    })
    .await;
    assert!(
        !waiting["last_error"].as_str().unwrap().is_empty(),
        "{waiting}"
    );

    // A minute of outage: the gateway keeps trying instead of giving up.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(stopped.elapsed())).await;
    let change = gw.get_json(&path, Some(&token)).await;
    assert_eq!(change["status"], "pending", "{change}");
    let t = target(&change, "xmpp");
    assert!(
        ["retrying", "delivering"].contains(&t["status"].as_str().unwrap()),
        "{change}"
    );

    ej.start_again().await;
    let change = settled(&gw, &token, &receipt).await;
    assert_eq!(change["status"], "delivered", "{change}");
    let t = target(&change, "xmpp");
    assert_eq!(t["status"], "delivered", "{change}");
    assert!(t["attempts"].as_u64().unwrap() > 1, "{t}");
    assert_eq!(
        ej.vcard("alice", "DESC", None).await.as_deref(),
        Some(signature)
    );
}
