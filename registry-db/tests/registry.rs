//! The registry's behaviour, checked on SQLite always and on PostgreSQL when
//! `TEST_DATABASE_URL` is set (mandatory under `CI=true`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::on_every_backend;
use registry_db::{AuditEvent, NewBinding, NewModule, Registry, RegistryError, SealedCredentials};
use serde_json::json;

fn module(id: &str, plugin: &[u8]) -> NewModule {
    NewModule {
        id: id.into(),
        name: format!("{id} network"),
        plugin: plugin.to_vec(),
        plugin_digest: format!("digest-of-{}", plugin.len()),
        manifest: json!({"id": id, "allowed_hosts": ["http://127.0.0.1:1"]}),
        description: None,
    }
}

#[tokio::test]
async fn migrations_leave_the_registry_ready_and_reopening_is_harmless() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let first = Registry::connect(&url).await.expect("first open");
    first.ready().await.expect("ready after migrations");
    first
        .create_user("u1", "alice", "hash", Utc::now())
        .await
        .expect("user");
    first.close().await;
    let second = Registry::connect(&url).await.expect("second open");
    second.ready().await.expect("still ready");
    assert_eq!(
        second
            .user_credentials("alice")
            .await
            .expect("kept")
            .user
            .id,
        "u1"
    );
}

#[tokio::test]
async fn users_are_unique_by_name() {
    on_every_backend(async |reg| {
        let now = Utc::now();
        let alice = reg
            .create_user("u1", "alice", "h1", now)
            .await
            .expect("create");
        assert_eq!(alice.username, "alice");
        match reg.create_user("u2", "alice", "h2", now).await {
            Err(RegistryError::Conflict { constraint }) => {
                assert_eq!(constraint, "users_username_key")
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        let creds = reg.user_credentials("alice").await.expect("found");
        assert_eq!(creds.password_hash, "h1");
        assert!(
            !format!("{creds:?}").contains("h1"),
            "hash must not be in Debug"
        );
        assert!(matches!(
            reg.user_credentials("bob").await,
            Err(RegistryError::NotFound)
        ));
    })
    .await;
}

#[tokio::test]
async fn sessions_expire_and_can_be_ended() {
    on_every_backend(async |reg| {
        let now = Utc::now();
        reg.create_user("u1", "alice", "h", now)
            .await
            .expect("user");
        reg.create_session("live", "u1", now, now + Duration::hours(1))
            .await
            .expect("live session");
        reg.create_session(
            "old",
            "u1",
            now - Duration::hours(2),
            now - Duration::hours(1),
        )
        .await
        .expect("old session");
        assert_eq!(reg.session_user("live", now).await.expect("live").id, "u1");
        assert!(matches!(
            reg.session_user("old", now).await,
            Err(RegistryError::NotFound)
        ));
        assert_eq!(reg.purge_expired_sessions(now).await.expect("purge"), 1);
        reg.delete_session("live").await.expect("logout");
        assert!(matches!(
            reg.session_user("live", now).await,
            Err(RegistryError::NotFound)
        ));
        assert!(matches!(
            reg.delete_session("live").await,
            Err(RegistryError::NotFound)
        ));
    })
    .await;
}

#[tokio::test]
async fn module_uploads_bump_the_version_and_removal_keeps_history() {
    on_every_backend(async |reg| {
        let now = Utc::now();
        let m1 = reg
            .upsert_module(module("matrix", b"one"), now)
            .await
            .expect("first");
        assert_eq!((m1.version, m1.enabled), (1, true));
        assert_eq!(m1.manifest["allowed_hosts"][0], "http://127.0.0.1:1");
        let mut next = module("matrix", b"second");
        next.description = Some(json!({"fields": ["signature"]}));
        let m2 = reg.upsert_module(next, now).await.expect("second");
        assert_eq!(m2.version, 2);
        assert_eq!(m2.description, Some(json!({"fields": ["signature"]})));
        assert_eq!(
            reg.module_plugin("matrix").await.expect("plugin"),
            (2, b"second".to_vec())
        );
        reg.upsert_module(module("xmpp", b"x"), now)
            .await
            .expect("xmpp");
        let ids: Vec<_> = reg
            .list_modules(false)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["matrix", "xmpp"]);

        reg.disable_module("matrix", now).await.expect("disable");
        assert!(matches!(
            reg.disable_module("matrix", now).await,
            Err(RegistryError::NotFound)
        ));
        let supported = reg.list_modules(false).await.expect("list");
        assert_eq!(supported.len(), 1);
        assert_eq!(reg.list_modules(true).await.expect("all").len(), 2);
        assert!(!reg.module("matrix").await.expect("still stored").enabled);

        let back = reg
            .upsert_module(module("matrix", b"third"), now)
            .await
            .expect("re-upload");
        assert_eq!((back.version, back.enabled), (3, true));
    })
    .await;
}

#[tokio::test]
async fn bindings_belong_to_one_user_and_are_unique_per_account() {
    on_every_backend(async |reg| {
        let now = Utc::now();
        reg.create_user("u1", "alice", "h", now)
            .await
            .expect("alice");
        reg.create_user("u2", "bob", "h", now).await.expect("bob");
        reg.upsert_module(module("matrix", b"m"), now)
            .await
            .expect("module");
        let sealed = SealedCredentials(vec![1, 2, 3, 0, 255]);
        let new = |id: &str, user: &str| NewBinding {
            id: id.into(),
            user_id: user.into(),
            module_id: "matrix".into(),
            account: "@alice:localhost".into(),
            credentials: sealed.clone(),
        };
        reg.create_binding(new("b1", "u1"), now)
            .await
            .expect("bind");
        // Both constraints hold here; the backend names either.
        match reg.create_binding(new("b2", "u1"), now).await {
            Err(RegistryError::Conflict { constraint }) => assert!(
                constraint == "bindings_user_module_account_key"
                    || constraint == "bindings_module_account_key",
                "{constraint}"
            ),
            other => panic!("expected conflict, got {other:?}"),
        }
        // One account of a module belongs to one user: bob cannot bind it.
        match reg.create_binding(new("b3", "u2"), now).await {
            Err(RegistryError::Conflict { constraint }) => {
                assert_eq!(constraint, "bindings_module_account_key")
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        assert!(reg.list_bindings("u2").await.expect("list").is_empty());

        let list = reg.list_bindings("u1").await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].credentials, sealed, "credential bytes round-trip");
        assert_eq!(list[0].last_applied, None);
        assert!(matches!(
            reg.binding("u2", "b1").await,
            Err(RegistryError::NotFound)
        ));

        let applied = json!({"signature": "héllo ✓"});
        reg.set_last_applied("b1", &applied).await.expect("applied");
        assert_eq!(
            reg.binding("u1", "b1").await.expect("get").last_applied,
            Some(applied)
        );

        assert!(matches!(
            reg.delete_binding("u2", "b1").await,
            Err(RegistryError::NotFound)
        ));
        reg.delete_binding("u1", "b1").await.expect("unbind");
        assert!(reg.list_bindings("u1").await.expect("list").is_empty());
    })
    .await;
}

#[tokio::test]
async fn audit_events_are_kept_newest_first() {
    on_every_backend(async |reg| {
        for (i, action) in ["user.create", "module.upload", "binding.create"]
            .iter()
            .enumerate()
        {
            reg.record_audit(&AuditEvent {
                at: Utc::now(),
                actor: "admin".into(),
                action: (*action).into(),
                subject: format!("s{i}"),
                detail: json!({"n": i}),
            })
            .await
            .expect("record");
        }
        let events = reg.audit_events(2).await.expect("read");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].action, "binding.create");
        assert_eq!(events[1].detail, json!({"n": 1}));
    })
    .await;
}

/// Before migration 6 two users could hold one account of a module: the
/// migration keeps the oldest binding and removes the later ones, each with
/// an audit event.
#[tokio::test]
async fn migration_6_keeps_the_oldest_holder_of_an_account() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("r.db").display());
    let scratch = match common::postgres_admin_url() {
        Some(admin) => Some(
            registry_db::scratch::ScratchDatabase::create(&admin, "migration6")
                .await
                .expect("scratch"),
        ),
        None => None,
    };
    let urls = std::iter::once(sqlite.clone()).chain(scratch.as_ref().map(|s| s.url().to_owned()));
    for url in urls {
        let reg = Registry::connect(&url).await.expect("open");
        let now = Utc::now();
        for (id, name) in [("u1", "alice"), ("u2", "mallory")] {
            reg.create_user(id, name, "h", now).await.expect("user");
        }
        reg.upsert_module(module("hook", b"w"), now)
            .await
            .expect("module");
        reg.close().await;

        // The schema as it was before migration 6, with two holders.
        let raw = sqlx::AnyPool::connect(&url).await.expect("raw");
        for sql in [
            "DROP INDEX bindings_module_account_key",
            "DELETE FROM _sqlx_migrations WHERE version = 6",
        ] {
            sqlx::query(sql).execute(&raw).await.expect(sql);
        }
        for (id, user, account, at) in [
            ("first", "u1", "alice", 1000),
            ("later", "u2", "alice", 2000),
            ("own", "u2", "mallory", 3000),
        ] {
            sqlx::query(
                "INSERT INTO bindings (id, user_id, module_id, account, credentials, created_at) \
                 VALUES ($1, $2, 'hook', $3, $4, $5)",
            )
            .bind(id)
            .bind(user)
            .bind(account)
            .bind(vec![1u8])
            .bind(at as i64)
            .execute(&raw)
            .await
            .expect("old binding");
        }
        raw.close().await;

        let reg = Registry::connect(&url).await.expect("migrate");
        let ids =
            |list: Vec<registry_db::Binding>| list.into_iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(ids(reg.list_bindings("u1").await.expect("u1")), ["first"]);
        assert_eq!(ids(reg.list_bindings("u2").await.expect("u2")), ["own"]);
        let removed: Vec<AuditEvent> = reg
            .audit_events(10)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == "binding.delete")
            .collect();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].subject, "later");
        assert_eq!(removed[0].detail["user"], "u2");
        assert_eq!(removed[0].detail["account"], "alice");
        reg.close().await;
    }
    if let Some(scratch) = scratch {
        scratch.drop_now().await.expect("drop");
    }
}
