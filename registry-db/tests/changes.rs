//! Recording and reading change reports on SQLite and PostgreSQL: batches,
//! idempotency keys and their receipts, pages of changes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::{bind, change, on_every_backend, receipt, settings, world};
use registry_db::scratch::ScratchDatabase;
use registry_db::{ChangeRecorded, DeliveryStatus, Registry, RegistryError, SettingsMap};
use serde_json::json;
use sqlx::migrate::Migrator;
use std::path::Path;

#[tokio::test]
async fn a_batch_of_reports_is_recorded_as_if_one_by_one() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        reg.create_user("v", "bob", "h", now).await.unwrap();
        bind(&reg, "v", "vsrc", "a").await;
        bind(&reg, "v", "vdst", "b").await;
        let mut bob = change("cv", json!({"signature": "bob"}), None);
        bob.user_id = "v".into();
        bob.binding_id = Some("vsrc".into());
        bob.sources = vec!["vsrc".into()];
        bob.targets[0].binding_id = "vdst".into();
        bob.targets[0].id = "cv-dst".into();
        let recorded = reg
            .record_changes(
                vec![
                    change("c1", json!({"signature": "one", "mood": "m"}), Some("k")),
                    bob,
                    change("c2", json!({"signature": "two"}), None),
                    change("c1-again", json!({"signature": "x"}), Some("k")),
                ],
                now,
            )
            .await
            .unwrap();
        assert!(matches!(recorded[0], ChangeRecorded::Created { .. }));
        assert!(matches!(recorded[1], ChangeRecorded::Created { .. }));
        assert!(matches!(recorded[2], ChangeRecorded::Created { .. }));
        assert_eq!(recorded[3], ChangeRecorded::Replayed(receipt("c1")));
        assert!(matches!(
            reg.change("u", "c1-again").await,
            Err(RegistryError::NotFound)
        ));
        let c1 = reg.change("u", "c1").await.unwrap();
        assert_eq!(c1.targets[0].status, DeliveryStatus::Superseded);
        assert_eq!(c1.targets[0].superseded_by.as_deref(), Some("c2"));
        let lease = now + Duration::seconds(30);
        let mut claimed = reg.claim_deliveries("w", now, lease, 10).await.unwrap();
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        let settings_of: Vec<(&str, &SettingsMap)> = claimed
            .iter()
            .map(|d| (d.id.as_str(), &d.settings))
            .collect();
        assert_eq!(
            settings_of,
            vec![
                (
                    "c2-dst",
                    &settings(json!({"signature": "two", "mood": "m"}))
                ),
                ("cv-dst", &settings(json!({"signature": "bob"}))),
            ]
        );
        assert_eq!(
            reg.profile("u").await.unwrap().unwrap().0,
            settings(json!({"signature": "two", "mood": "m"}))
        );
        assert_eq!(
            reg.profile("v").await.unwrap().unwrap().0,
            settings(json!({"signature": "bob"}))
        );
    })
    .await;
}

#[tokio::test]
async fn the_first_receipt_is_kept_under_its_key() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        reg.record_change(change("c1", json!({"mood": "m"}), Some("k")), now)
            .await
            .unwrap();
        assert_eq!(
            reg.idempotent_receipt("u", "k").await.unwrap(),
            Some(receipt("c1"))
        );
        assert_eq!(reg.idempotent_receipt("u", "other").await.unwrap(), None);
        reg.create_user("v", "bob", "h", now).await.unwrap();
        assert_eq!(
            reg.idempotent_receipt("v", "k").await.unwrap(),
            None,
            "keys are per user"
        );
    })
    .await;
}

#[tokio::test]
async fn a_page_of_changes_comes_back_complete_newest_first() {
    on_every_backend(async |reg| {
        world(&reg).await;
        bind(&reg, "u", "dst2", "b").await;
        let now = Utc::now();
        let to_both = |id: &str, values| {
            let mut c = change(id, values, None);
            c.targets.push(common::target(id, "dst2"));
            c
        };
        reg.record_change(to_both("c1", json!({"signature": "one"})), now)
            .await
            .unwrap();
        let mut echo = change("c2", json!({"signature": "one"}), None);
        echo.suppressed = true;
        echo.targets.clear();
        reg.record_change(echo, now).await.unwrap();
        // Another user's change in between stays out of `u`'s pages.
        reg.create_user("v", "bob", "h", now).await.unwrap();
        bind(&reg, "v", "vsrc", "a").await;
        let mut bob = change("cv", json!({"mood": "bob"}), None);
        bob.user_id = "v".into();
        bob.binding_id = Some("vsrc".into());
        bob.sources = vec!["vsrc".into()];
        bob.targets.clear();
        reg.record_change(bob, now).await.unwrap();
        reg.record_change(to_both("c3", json!({"mood": "m"})), now)
            .await
            .unwrap();
        reg.record_change(change("c4", json!({"signature": "two"}), None), now)
            .await
            .unwrap();

        let page = reg.list_changes("u", None, 10).await.unwrap();
        let shape: Vec<(&str, Vec<&str>)> = page
            .iter()
            .map(|c| {
                let targets = c.targets.iter().map(|t| t.id.as_str()).collect();
                (c.id.as_str(), targets)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("c4", vec!["c4-dst"]),
                ("c3", vec!["c3-dst", "c3-dst2"]),
                ("c2", vec![]),
                ("c1", vec!["c1-dst", "c1-dst2"]),
            ]
        );
        for listed in &page {
            assert_eq!(*listed, reg.change("u", &listed.id).await.unwrap());
        }
        assert_eq!(page[3].targets[0].status, DeliveryStatus::Superseded);
        assert_eq!(page[3].targets[0].superseded_by.as_deref(), Some("c3"));

        let ids = |changes: Vec<registry_db::Change>| -> Vec<String> {
            changes.into_iter().map(|c| c.id).collect()
        };
        assert_eq!(
            ids(reg.list_changes("u", None, 2).await.unwrap()),
            ["c4", "c3"]
        );
        let older = reg.list_changes("u", Some("c3"), 2).await.unwrap();
        assert_eq!(older, page[2..].to_vec());
        assert!(reg
            .list_changes("u", Some("c1"), 2)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(ids(reg.list_changes("v", None, 10).await.unwrap()), ["cv"]);
    })
    .await;
}

/// Applies the migrations before 0004 to the empty database at `url` and
/// stores an idempotency row the way they did: status code and response.
async fn migrate_to_0003_with_a_key(url: &str, backend: &str) {
    let all = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let before = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&path, before.path().join(name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    Migrator::new(before.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, created_at) VALUES ('u', 'alice', 'h', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, status_code, response, created_at) \
         VALUES ('u', 'k', 200, $1, 0)",
    )
    .bind(json!({"id": "c0", "status": "suppressed"}).to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// After migration 0004 the old row answers its receipt, and new keys store
/// theirs.
async fn check_stored_receipts_survive(url: &str) {
    let reg = Registry::connect(url).await.unwrap();
    reg.ready().await.unwrap();
    let old = json!({"id": "c0", "status": "suppressed"});
    assert_eq!(
        reg.idempotent_receipt("u", "k").await.unwrap(),
        Some(old.clone())
    );
    let mut again = change("c1", json!({"mood": "m"}), Some("k"));
    again.targets.clear();
    assert_eq!(
        reg.record_change(again, Utc::now()).await.unwrap(),
        ChangeRecorded::Replayed(old)
    );
    let mut fresh = change("c2", json!({"mood": "m"}), Some("k2"));
    fresh.targets.clear();
    assert!(matches!(
        reg.record_change(fresh, Utc::now()).await.unwrap(),
        ChangeRecorded::Created { .. }
    ));
    assert_eq!(
        reg.idempotent_receipt("u", "k2").await.unwrap(),
        Some(receipt("c2"))
    );
    reg.close().await;
}

#[tokio::test]
async fn migration_0004_keeps_stored_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    migrate_to_0003_with_a_key(&url, "sqlite").await;
    check_stored_receipts_survive(&url).await;
    let Some(admin_url) = common::postgres_admin_url() else {
        return;
    };
    let scratch = ScratchDatabase::create(&admin_url, "migration_test")
        .await
        .unwrap();
    migrate_to_0003_with_a_key(scratch.url(), "postgres").await;
    check_stored_receipts_survive(scratch.url()).await;
    scratch.drop_now().await.unwrap();
}
