//! Helpers of the registry tests: every backend, a small world of
//! one user and two bindings, and change reports to record.
// Each test crate including this module uses only some of the helpers.
#![allow(dead_code)]

use chrono::Utc;
use registry_db::scratch::ScratchDatabase;
use registry_db::{
    Backend, NewBinding, NewChange, NewDelivery, NewModule, Registry, SealedCredentials,
    SettingsMap,
};
use serde_json::{json, Value};

/// The PostgreSQL server of `TEST_DATABASE_URL`, if set (mandatory under
/// `CI=true`).
pub fn postgres_admin_url() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires TEST_DATABASE_URL (a PostgreSQL server) for the registry tests"
        );
        eprintln!("TEST_DATABASE_URL unset: PostgreSQL run skipped (outside CI only)");
    }
    url
}

/// Runs `check` against a fresh SQLite file and, when configured, a fresh
/// PostgreSQL database.
pub async fn on_every_backend(check: impl AsyncFn(Registry)) {
    on_every_database(async |url, backend| {
        let registry = Registry::connect(url).await.expect("open the registry");
        assert_eq!(registry.backend(), backend);
        check(registry.clone()).await;
        registry.close().await;
    })
    .await;
}

/// Runs `check` with the URL of a fresh SQLite file and, when configured,
/// of a fresh PostgreSQL database (for tests that open several registries
/// on one database, as several processes do).
pub async fn on_every_database(check: impl AsyncFn(&str, Backend)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    check(&url, Backend::Sqlite).await;
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let scratch = ScratchDatabase::create(&admin_url, "registry_test")
        .await
        .unwrap_or_else(|e| panic!("cannot create a PostgreSQL test database at {admin_url}: {e}"));
    check(scratch.url(), Backend::Postgres).await;
    scratch.drop_now().await.expect("drop scratch database");
}

/// The JSON object `value` as settings.
pub fn settings(value: Value) -> SettingsMap {
    value.as_object().unwrap().clone()
}

/// User `u` with bindings `src` (module a) and `dst` (module b).
pub async fn world(reg: &Registry) {
    let now = Utc::now();
    reg.create_user("u", "alice", "h", now).await.unwrap();
    for id in ["a", "b"] {
        reg.upsert_module(
            NewModule {
                id: id.into(),
                name: id.into(),
                plugin: vec![0],
                plugin_digest: "d".into(),
                manifest: json!({}),
                description: None,
            },
            now,
        )
        .await
        .unwrap();
    }
    bind(reg, "u", "src", "a").await;
    bind(reg, "u", "dst", "b").await;
}

/// Binding `id` of `user` on `module`, account `{id}@{module}`.
pub async fn bind(reg: &Registry, user: &str, id: &str, module: &str) {
    let binding = NewBinding {
        id: id.into(),
        user_id: user.into(),
        module_id: module.into(),
        account: format!("{id}@{module}"),
        credentials: SealedCredentials(vec![1]),
    };
    reg.create_binding(binding, Utc::now()).await.unwrap();
}

/// A change `dst`'s own network reports (module b), with no targets.
pub fn reported_by_dst(id: &str, value: Value) -> NewChange {
    let mut own = change(id, value, None);
    own.module_id = "b".into();
    own.binding_id = Some("dst".into());
    own.sources = vec!["dst".into()];
    own.targets = vec![];
    own
}

/// A target of change `change_id`: binding `binding` on module b.
pub fn target(change_id: &str, binding: &str) -> NewDelivery {
    NewDelivery {
        id: format!("{change_id}-{binding}"),
        binding_id: binding.into(),
        module_id: "b".into(),
        account: format!("{binding}@b"),
    }
}

/// The receipt the gateway stores with change `id` under an idempotency key.
pub fn receipt(id: &str) -> Value {
    json!({"id": id, "status": "pending"})
}

/// A change from `src` to `dst`, with [`receipt`] under `key` if given.
pub fn change(id: &str, values: Value, key: Option<&str>) -> NewChange {
    NewChange {
        id: id.into(),
        user_id: "u".into(),
        module_id: "a".into(),
        binding_id: Some("src".into()),
        settings: settings(values),
        suppressed: false,
        targets: vec![target(id, "dst")],
        sources: vec!["src".into()],
        idempotency: key.map(|k| (k.to_owned(), receipt(id))),
    }
}
