//! The Matrix reference connector against a real Synapse on loopback:
//! credentials checked at binding time, pushes land and read back identical.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::synapse::Synapse;
use e2e_tests::{expect_error, plugin, TestGateway, TINY_PNG};
use gateway::host::{Grants, HostLimits, Image, LoadedPlugin, PluginHost, Settings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

fn manifest(synapse: &Synapse) -> Value {
    json!({
        "id": "matrix",
        "name": "Matrix",
        "allowed_hosts": [synapse.origin],
        "rate_limit": {"per_second": 20, "burst": 20},
        "config": {"homeserver": synapse.base},
        "detect": {"config_dirs": ["~/.config/Element"]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_checked_against_the_real_homeserver() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    synapse.register("alice", "alice-password");
    let gw = TestGateway::start().await;
    let r = gw
        .upload_module(&manifest(&synapse), &plugin("matrix_connector"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let module: Value = r.json().await.unwrap();
    assert_eq!(module["fields"], json!(["avatar", "signature"]));

    let token = gw.user_token("alice").await;
    let wrong = json!({"module": "matrix", "account": "@alice:localhost",
                       "credentials": {"password": "not-her-password"}});
    let msg = expect_error(
        gw.post_json("/v1/bindings", Some(&token), &wrong).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_credentials",
    )
    .await;
    assert!(msg.contains("M_FORBIDDEN"), "{msg}");
    let right = json!({"module": "matrix", "account": "@alice:localhost",
                       "credentials": {"password": "alice-password"}});
    let r = gw.post_json("/v1/bindings", Some(&token), &right).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let bound = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An access token works as credentials too; but one Matrix account
    // belongs to one gateway user, even for someone who holds its token.
    let access = synapse.login("alice", "alice-password").await;
    let by_token = json!({"module": "matrix", "account": "@alice:localhost",
                          "credentials": {"access_token": access}});
    let bob = gw.user_token("bob").await;
    expect_error(
        gw.post_json("/v1/bindings", Some(&bob), &by_token).await,
        StatusCode::CONFLICT,
        "account_taken",
    )
    .await;
    let r = gw
        .delete(&format!("/v1/bindings/{bound}"), Some(&token))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        gw.post_json("/v1/bindings", Some(&token), &by_token)
            .await
            .status(),
        StatusCode::CREATED
    );
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_lands_on_synapse_and_reads_back_identical() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let user_id = synapse.register("carol", "carol-password");
    let host = PluginHost::new(HostLimits::default()).unwrap();
    let grants = Grants {
        module_id: "matrix".into(),
        allowed_origins: vec![synapse.origin.clone()],
        config_json: json!({"homeserver": synapse.base}).to_string(),
    };
    let loaded: LoadedPlugin = {
        let (host, grants) = (host.clone(), grants.clone());
        blocking(move || host.load(&plugin("matrix_connector"), grants).unwrap()).await
    };
    let creds = json!({"password": "carol-password"}).to_string();
    let signature = "Grüße aus Köln ✓ 🎉 — 状态";
    let settings = Settings {
        avatar: Some(Image {
            content_type: "image/png".into(),
            data: TINY_PNG.to_vec(),
        }),
        signature: Some(signature.into()),
        mood: Some("happy".into()),
    };
    let outcome = {
        let (host, plugin, grants, creds, settings, user) = (
            host.clone(),
            loaded.clone(),
            grants.clone(),
            creds.clone(),
            settings.clone(),
            user_id.clone(),
        );
        blocking(move || host.push(&plugin, Arc::new(grants), None, &user, &creds, &settings)).await
    }
    .expect("push succeeds");
    use gateway::host::Field;
    assert_eq!(outcome.applied, [Field::Signature, Field::Avatar]);
    assert!(
        !outcome.applied.contains(&Field::Mood),
        "mood is not a Matrix field"
    );

    // Read back independently through the client-server API.
    let token = synapse.login("carol", "carol-password").await;
    let client = reqwest::Client::new();
    let enc = user_id.replace('@', "%40").replace(':', "%3A");
    let read = |path: String| {
        let request = client
            .get(format!("{}{path}", synapse.base))
            .bearer_auth(&token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let presence = read(format!("/_matrix/client/v3/presence/{enc}/status")).await;
    assert_eq!(presence["status_msg"], signature);
    let profile = read(format!("/_matrix/client/v3/profile/{enc}")).await;
    let mxc = profile["avatar_url"]
        .as_str()
        .expect("avatar set")
        .to_owned();
    let media = mxc.strip_prefix("mxc://").unwrap();
    let bytes = client
        .get(format!(
            "{}/_matrix/client/v1/media/download/{media}",
            synapse.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), TINY_PNG, "the avatar's bytes are intact");

    // And through the connector's own read-back.
    let fetched = {
        let (host, plugin, creds, user) =
            (host.clone(), loaded.clone(), creds.clone(), user_id.clone());
        blocking(move || host.fetch(&plugin, Arc::new(grants), None, &user, &creds)).await
    }
    .expect("fetch succeeds");
    assert_eq!(fetched.signature.as_deref(), Some(signature));
    assert_eq!(fetched.avatar.map(|a| a.data), Some(TINY_PNG.to_vec()));
}
