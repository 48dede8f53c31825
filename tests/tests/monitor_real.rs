//! The monitor against real servers, as a new user tries it: register, bind
//! a Matrix account (real Synapse) and an XMPP account (real ejabberd),
//! `monitor report` a new signature and see both networks' lines complete;
//! then `monitor watch` picks up a signature set directly on Synapse and
//! ejabberd follows, without the gateway's own push bouncing back; an
//! avatar set on Synapse reaches the XMPP vCard; a status chosen in Pidgin
//! (its files) lands on both servers, once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::ejabberd::Ejabberd;
use e2e_tests::mock::{eventually, MockNetwork};
use e2e_tests::monitor::{pidgin_files, Monitor};
use e2e_tests::synapse::Synapse;
use e2e_tests::{webhook, TestGateway};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const MATRIX_USER: &str = "@alice:localhost";
const MATRIX_PASSWORD: &str = "alice-matrix-pw";
const XMPP_USER: &str = "alice@localhost";
const XMPP_PASSWORD: &str = "alice-xmpp-pw";

async fn upload(gw: &TestGateway, manifest: &Value, plugin: &[u8]) {
    let r = gw.upload_module(manifest, plugin).await;
    let status = r.status();
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
}

fn password(password: &str) -> (&'static str, String) {
    (
        "MONITOR_CREDENTIALS",
        json!({"password": password}).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_binds_reports_and_watches_real_matrix_and_xmpp_accounts() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    synapse.register("alice", MATRIX_PASSWORD);
    ej.register("alice", XMPP_PASSWORD).await;
    let gw = TestGateway::start_with(|c| {
        c.delivery.backoff_base = Duration::from_millis(200);
        c.delivery.poll_interval = Duration::from_millis(100);
    })
    .await;
    upload(
        &gw,
        &synapse.manifest(),
        &e2e_tests::plugin("matrix_connector"),
    )
    .await;
    // The reference hints: Pidgin's files are read as XMPP's client.
    let mut xmpp = ej.manifest();
    xmpp["detect"] = e2e_tests::detect_hints("xmpp");
    upload(&gw, &xmpp, &e2e_tests::plugin("xmpp_connector")).await;
    let phone = MockNetwork::start().await;
    upload(&gw, &phone.manifest("phone", 100, 100), &webhook()).await;

    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    let (var, wrong) = password("not her password");
    m.run(&["bind", "xmpp", XMPP_USER], &[(var, &wrong)])
        .await
        .code(1)
        .says("invalid_credentials");
    let (var, matrix) = password(MATRIX_PASSWORD);
    m.run(&["bind", "matrix", MATRIX_USER], &[(var, &matrix)])
        .await
        .ok();
    let (var, xmpp) = password(XMPP_PASSWORD);
    m.run(&["bind", "xmpp", XMPP_USER], &[(var, &xmpp)])
        .await
        .ok();
    m.run(
        &["bind", "phone", "alice@phone"],
        &[("MONITOR_CREDENTIALS", "{}")],
    )
    .await
    .ok();

    // A signature changed on the phone reaches both real servers.
    let signature = "Grüße aus Köln ✓";
    let ran = m
        .run(
            &["report", "--module", "phone", "--signature", signature],
            &[],
        )
        .await
        .ok()
        .says("2 target network(s)");
    for account in [format!("matrix {MATRIX_USER}"), format!("xmpp {XMPP_USER}")] {
        let line = ran
            .stdout
            .lines()
            .find(|l| l.contains(&account))
            .unwrap_or_else(|| panic!("no line for {account}: {ran:?}"));
        assert!(
            line.starts_with("ok") && line.contains("delivered: signature"),
            "{ran:?}"
        );
    }
    let matrix_token = synapse.login("alice", MATRIX_PASSWORD).await;
    assert_eq!(
        synapse
            .status_msg(&matrix_token, MATRIX_USER)
            .await
            .as_deref(),
        Some(signature)
    );
    assert_eq!(
        ej.vcard("alice", "DESC", None).await.as_deref(),
        Some(signature)
    );

    // watch: its first round is the baseline of both readable accounts.
    let mut watcher = m.spawn(&["watch", "--interval", "1"], &[]);
    let state = m.file("state.json");
    eventually(
        "the watch's first look at both accounts",
        Duration::from_secs(60),
        || {
            let state = state.clone();
            async move {
                let text = std::fs::read_to_string(&state).ok()?;
                let seen = serde_json::from_str::<Value>(&text).ok()?["seen"]
                    .as_object()?
                    .len();
                (seen == 2).then_some(())
            }
        },
    )
    .await;

    // A new status typed in a Matrix client: XMPP follows.
    let typed = "Changed in Element";
    synapse
        .set_status_msg(&matrix_token, MATRIX_USER, typed)
        .await;
    eventually(
        "ejabberd to follow Synapse",
        Duration::from_secs(120),
        || async {
            (ej.vcard("alice", "DESC", None).await.as_deref() == Some(typed)).then_some(())
        },
    )
    .await;
    // A new avatar chosen in a Matrix client: the watch reports the image
    // the gateway kept, and the XMPP vCard gets a PHOTO.
    let before = ej.vcard("alice", "PHOTO", Some("BINVAL")).await;
    synapse
        .set_avatar(&matrix_token, MATRIX_USER, avatar_png())
        .await;
    eventually(
        "ejabberd's vCard PHOTO to follow the Matrix avatar",
        Duration::from_secs(120),
        || async {
            let now = ej.vcard("alice", "PHOTO", Some("BINVAL")).await;
            (now.is_some() && now != before).then_some(())
        },
    )
    .await;
    // The XMPP account now shows the gateway's own pushes: a few more
    // rounds must not report them back as changes of the user's.
    tokio::time::sleep(Duration::from_secs(4)).await;
    watcher.start_kill().unwrap();
    let out = watcher.wait_with_output().await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("noticed on matrix {MATRIX_USER}")),
        "{printed}"
    );
    let changes = gw.get_json("/v1/changes", Some(&m.token())).await;
    let modules: Vec<&str> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["module"].as_str().unwrap())
        .collect();
    // Newest first: the avatar, the status message, the phone's report;
    // nothing reported back from XMPP.
    assert_eq!(
        modules,
        ["matrix", "matrix", "phone"],
        "{changes}\n{printed}"
    );
    assert!(
        changes["changes"][0]["settings"]["avatar"].is_string(),
        "{changes}"
    );

    // A status chosen in Pidgin while offline: read from its files, it
    // lands on Synapse and on the XMPP account itself, once.
    let home = m.home.path();
    let watch = ["watch", "--once", "--no-detect"];
    pidgin_files(home, 1, &[(1, "Back at noon")], "");
    m.run(&watch, &[]).await.ok();
    let icon = home.join("pidgin-icon.png");
    std::fs::write(&icon, pidgin_icon()).unwrap();
    let matrix_avatar = synapse.avatar_url(&matrix_token, MATRIX_USER).await;
    let xmpp_photo = ej.vcard("alice", "PHOTO", Some("BINVAL")).await;
    pidgin_files(
        home,
        2,
        &[(1, "Back at noon"), (2, "On a train")],
        icon.to_str().unwrap(),
    );
    m.run(&watch, &[])
        .await
        .ok()
        .says("noticed on xmpp alice@localhost: a new avatar, signature \"On a train\"");
    eventually(
        "Pidgin's status and icon on Synapse and in the XMPP vCard",
        Duration::from_secs(120),
        || async {
            let matrix = synapse.status_msg(&matrix_token, MATRIX_USER).await;
            let xmpp = ej.vcard("alice", "DESC", None).await;
            let avatar = synapse.avatar_url(&matrix_token, MATRIX_USER).await;
            let photo = ej.vcard("alice", "PHOTO", Some("BINVAL")).await;
            (matrix.as_deref() == Some("On a train")
                && xmpp.as_deref() == Some("On a train")
                && avatar != matrix_avatar
                && photo != xmpp_photo)
                .then_some(())
        },
    )
    .await;
    // Both networks now hold the gateway's push: nothing reported back.
    let again = m.run(&watch, &[]).await.ok();
    assert!(!again.output().contains("noticed"), "{again:?}");
    assert!(
        phone
            .accepted()
            .iter()
            .any(|h| h.body["settings"]["signature"] == typed),
        "the phone's network got the Matrix change too"
    );
}

/// Another PNG, chosen as Pidgin's buddy icon.
fn pidgin_icon() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 60]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A 48x48 PNG standing for a photo chosen as avatar.
fn avatar_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(48, 48, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 5) as u8, 90])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}
