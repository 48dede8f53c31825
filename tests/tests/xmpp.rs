//! The XMPP connector against a real ejabberd on loopback: the module is
//! listed with what vCards can carry, bindings check the password with
//! ejabberd, and a push lands in the account's vCard and reads back identical
//! both through the connector and straight from ejabberd.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::ejabberd::Ejabberd;
use e2e_tests::{expect_error, plugin, TestGateway};
use gateway::host::{
    CallError, Field, Grants, HostLimits, Image, LoadedPlugin, PluginHost, PushOutcome, Settings,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

/// A 4x4 RGBA PNG, made with Python's zlib.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x08, 0x06, 0x00, 0x00, 0x00, 0xa9, 0xf1, 0x9e,
    0x7e, 0x00, 0x00, 0x00, 0x2b, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x15, 0xc8, 0x31, 0x01, 0x00,
    0x30, 0x0c, 0xc3, 0xb0, 0x00, 0x2b, 0x30, 0x03, 0x0b, 0x88, 0xb2, 0xda, 0xdc, 0x43, 0x8f, 0x92,
    0xec, 0x1b, 0xa1, 0x2a, 0x19, 0x43, 0xa8, 0x73, 0x81, 0x21, 0x54, 0x2e, 0x6a, 0x08, 0x55, 0x1f,
    0xd0, 0x88, 0x27, 0xb1, 0xfc, 0x92, 0x21, 0x4f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];
/// `PNG` in standard base64, as Python's `base64.b64encode` writes it.
const PNG_BASE64: &str = concat!(
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAYAAACp8Z5+AAAAK0lEQVR42hXIMQEAMAzDsAArMAMLiLLa3EOP",
    "kuwboSoZQ6hzgSFULmoIVR/QiCex/JIhTwAAAABJRU5ErkJggg==",
);

const SIGNATURE: &str = "Grüße aus Köln ✓ 🎉";

fn module_config(ej: &Ejabberd) -> Value {
    json!({"api": ej.api, "admin_user": ej.admin_user, "admin_password": ej.admin_password})
}

fn manifest(ej: &Ejabberd) -> Value {
    json!({
        "id": "xmpp",
        "name": "XMPP",
        "allowed_hosts": [ej.origin],
        "config": module_config(ej),
    })
}

/// A binding request for the xmpp module.
fn binding(account: &str, password: &str) -> Value {
    json!({"module": "xmpp", "account": account, "credentials": {"password": password}})
}

fn credentials(password: &str) -> String {
    json!({ "password": password }).to_string()
}

/// The connector loaded straight into a plugin host, as the delivery
/// workers use it.
struct Direct {
    host: PluginHost,
    plugin: LoadedPlugin,
    grants: Grants,
}

impl Direct {
    async fn load(ej: &Ejabberd) -> Direct {
        let grants = Grants {
            module_id: "xmpp".into(),
            allowed_origins: vec![ej.origin.clone()],
            config_json: module_config(ej).to_string(),
        };
        let host = PluginHost::new(HostLimits::default()).unwrap();
        let bytes = plugin("xmpp_connector");
        let (host, plugin, grants) = tokio::task::spawn_blocking(move || {
            let plugin = host
                .load(&bytes, grants.clone())
                .expect("xmpp plugin loads");
            (host, plugin, grants)
        })
        .await
        .unwrap();
        Direct {
            host,
            plugin,
            grants,
        }
    }

    async fn push(
        &self,
        login: &str,
        password: &str,
        settings: Settings,
    ) -> Result<PushOutcome, CallError> {
        let (host, plugin, grants) = (self.host.clone(), self.plugin.clone(), self.grants.clone());
        let (login, creds) = (login.to_owned(), credentials(password));
        tokio::task::spawn_blocking(move || {
            host.push(&plugin, Arc::new(grants), None, &login, &creds, &settings)
        })
        .await
        .unwrap()
    }

    async fn fetch(&self, login: &str, password: &str) -> Result<Settings, CallError> {
        let (host, plugin, grants) = (self.host.clone(), self.plugin.clone(), self.grants.clone());
        let (login, creds) = (login.to_owned(), credentials(password));
        tokio::task::spawn_blocking(move || {
            host.fetch(&plugin, Arc::new(grants), None, &login, &creds)
        })
        .await
        .unwrap()
    }
}

fn png() -> Image {
    Image {
        content_type: "image/png".into(),
        data: PNG.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xmpp_module_is_listed_with_what_a_vcard_can_carry() {
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    let gw = TestGateway::start().await;
    let uploaded = gw
        .upload_module(&manifest(&ej), &plugin("xmpp_connector"))
        .await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);

    let listed: Value = gw.get_json("/v1/modules", None).await;
    let xmpp = listed["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "xmpp")
        .expect("xmpp is listed");
    assert_eq!(xmpp["name"], "XMPP");
    assert_eq!(xmpp["fields"], json!(["avatar", "signature"]));
    let avatar = &xmpp["limits"]["avatar"];
    assert_eq!(avatar["formats"], json!(["image/png", "image/jpeg"]));
    assert!(avatar["max_bytes"].as_u64().unwrap() <= 256 * 1024);
    assert!(avatar["max_pixels"].as_u64().unwrap() <= 512);
    // The module config holds the ejabberd admin's password: never shown.
    assert!(!listed.to_string().contains(&ej.admin_password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_an_account_checks_its_password_with_ejabberd() {
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    ej.register("alice", "alice-xmpp-pw").await;
    let gw = TestGateway::start().await;
    let uploaded = gw
        .upload_module(&manifest(&ej), &plugin("xmpp_connector"))
        .await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let token = gw.user_token("alice").await;

    let wrong = gw
        .post_json(
            "/v1/bindings",
            Some(&token),
            &binding("alice@localhost", "nope"),
        )
        .await;
    expect_error(
        wrong,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;
    let unknown = gw
        .post_json(
            "/v1/bindings",
            Some(&token),
            &binding("nobody@localhost", "alice-xmpp-pw"),
        )
        .await;
    expect_error(
        unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;

    let right = gw
        .post_json(
            "/v1/bindings",
            Some(&token),
            &binding("alice@localhost", "alice-xmpp-pw"),
        )
        .await;
    let status = right.status();
    let body: Value = right.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["module"], "xmpp");
    assert_eq!(body["account"], "alice@localhost");
    // The user's XMPP password is not echoed back.
    assert!(!body.to_string().contains("alice-xmpp-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_lands_in_the_vcard_and_reads_back_identical() {
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    ej.register("bob", "bob-xmpp-pw").await;
    let direct = Direct::load(&ej).await;

    // A fresh account has no vCard: nothing to read back, no error.
    let empty = direct.fetch("bob@localhost", "bob-xmpp-pw").await.unwrap();
    assert_eq!(empty, Settings::default());

    let outcome = direct
        .push(
            "bob@localhost",
            "bob-xmpp-pw",
            Settings {
                avatar: Some(png()),
                signature: Some(SIGNATURE.into()),
                mood: Some("happy".into()),
            },
        )
        .await
        .unwrap();
    // Mood needs a live XMPP session: not claimed as applied.
    assert_eq!(outcome.applied, vec![Field::Signature, Field::Avatar]);
    assert!(outcome.truncated.is_empty());

    // What any XMPP client would download from the server.
    assert_eq!(
        ej.vcard("bob", "DESC", None).await.as_deref(),
        Some(SIGNATURE)
    );
    assert_eq!(
        ej.vcard("bob", "PHOTO", Some("TYPE")).await.as_deref(),
        Some("image/png")
    );
    assert_eq!(
        ej.vcard("bob", "PHOTO", Some("BINVAL")).await.as_deref(),
        Some(PNG_BASE64)
    );

    let back = direct.fetch("bob@localhost", "bob-xmpp-pw").await.unwrap();
    assert_eq!(back.signature.as_deref(), Some(SIGNATURE));
    assert_eq!(back.avatar, Some(png()));
    assert_eq!(back.mood, None);

    // A signature-only push leaves the avatar alone; a control character,
    // which would break every client's XML stream, is dropped and reported.
    let outcome = direct
        .push(
            "bob@localhost",
            "bob-xmpp-pw",
            Settings {
                signature: Some("zweite Zeile\u{7}\nline two".into()),
                ..Settings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.applied, vec![Field::Signature]);
    assert_eq!(outcome.truncated, vec![Field::Signature]);
    assert_eq!(
        ej.vcard("bob", "DESC", None).await.as_deref(),
        Some("zweite Zeile\nline two")
    );
    let back = direct.fetch("bob@localhost", "bob-xmpp-pw").await.unwrap();
    assert_eq!(back.signature.as_deref(), Some("zweite Zeile\nline two"));
    assert_eq!(back.avatar, Some(png()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_stops_pushes_with_auth_failed() {
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    ej.register("carol", "carol-old-pw").await;
    let direct = Direct::load(&ej).await;
    let settings = Settings {
        signature: Some("before".into()),
        ..Settings::default()
    };
    direct
        .push("carol@localhost", "carol-old-pw", settings)
        .await
        .unwrap();

    let args = json!({"user": "carol", "host": ej.domain, "newpass": "carol-new-pw"});
    assert_eq!(ej.call("change_password", &args).await.0, StatusCode::OK);
    let settings = Settings {
        signature: Some("after".into()),
        ..Settings::default()
    };
    match direct
        .push("carol@localhost", "carol-old-pw", settings)
        .await
    {
        Err(CallError::AuthFailed(why)) => assert!(why.contains("carol@localhost"), "{why}"),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    // The gateway's admin rights did not override the revoked credentials.
    assert_eq!(
        ej.vcard("carol", "DESC", None).await.as_deref(),
        Some("before")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_a_transient_failure_and_its_data_survives_a_restart() {
    let Some(ej) = Ejabberd::start().await else {
        return;
    };
    ej.register("dave", "dave-xmpp-pw").await;
    let direct = Direct::load(&ej).await;
    let settings = Settings {
        signature: Some("still here".into()),
        ..Settings::default()
    };
    direct
        .push("dave@localhost", "dave-xmpp-pw", settings.clone())
        .await
        .unwrap();

    tokio::task::block_in_place(|| ej.stop());
    match direct
        .push("dave@localhost", "dave-xmpp-pw", settings)
        .await
    {
        Err(CallError::Transient(_)) => {}
        other => panic!("expected a transient failure while ejabberd is down, got {other:?}"),
    }

    ej.start_again().await;
    let back = direct
        .fetch("dave@localhost", "dave-xmpp-pw")
        .await
        .unwrap();
    assert_eq!(back.signature.as_deref(), Some("still here"));
}
