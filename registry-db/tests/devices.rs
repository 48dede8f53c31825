//! Devices and their inboxes, on SQLite always and on PostgreSQL when
//! `TEST_DATABASE_URL` is set (mandatory under `CI=true`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::on_every_backend;
use registry_db::{DeviceState, NewDevice, RegistryError};

fn device(id: &str, user: &str) -> NewDevice {
    NewDevice {
        id: id.into(),
        user_id: user.into(),
        name: format!("{id} name"),
        platform: Some("linux".into()),
        capabilities: vec!["org.example.editor".into()],
        ip: Some("192.0.2.7".into()),
        port: Some(47000),
    }
}

#[tokio::test]
async fn a_device_id_has_one_owner_and_its_inbox_counts_up() {
    on_every_backend(async |reg| {
        let now = Utc::now();
        let later = now + Duration::days(30);
        reg.create_user("u1", "alice", "h", now).await.unwrap();
        reg.create_user("u2", "bob", "h", now).await.unwrap();
        let (phone, created) = reg
            .register_device(&device("phone", "u1"), "t1", now, later)
            .await
            .unwrap();
        assert!(created);
        assert_eq!(phone.port, Some(47000));
        assert_eq!(phone.state, DeviceState::Active);
        let (_, created) = reg
            .register_device(&device("phone", "u1"), "t2", now, later)
            .await
            .unwrap();
        assert!(!created, "registered again");
        // The first token ended with the second registration.
        assert!(matches!(
            reg.session_owner("t1", now).await,
            Err(RegistryError::NotFound)
        ));
        let owner = reg.session_owner("t2", now).await.unwrap();
        assert_eq!(owner.device_id.as_deref(), Some("phone"));
        match reg
            .register_device(&device("phone", "u2"), "t3", now, later)
            .await
        {
            Err(RegistryError::Conflict { constraint }) => assert_eq!(constraint, "devices_pkey"),
            other => panic!("expected a conflict, got {other:?}"),
        }

        let published = reg
            .publish_device_events(&["phone", "nowhere", "phone"], "ping", "{}", now)
            .await
            .unwrap();
        assert_eq!(
            published,
            [("phone".to_owned(), 1), ("phone".to_owned(), 2)]
        );
        let events = reg.device_events_after("phone", 0, 10).await.unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            reg.device_events_after("phone", 1, 10).await.unwrap().len(),
            1
        );
        reg.mark_device_delivered("phone", 2).await.unwrap();
        reg.mark_device_delivered("phone", 1).await.unwrap();
        assert_eq!(
            reg.device_delivered("phone").await.unwrap(),
            2,
            "never backwards"
        );

        // Delivered events go after a day, undelivered ones after a week.
        reg.publish_device_events(&["phone"], "ping", "{}", now)
            .await
            .unwrap();
        let purged = reg
            .purge_device_events(now - Duration::days(7), now + Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(purged, 2);
        assert_eq!(
            reg.device_events_after("phone", 0, 10).await.unwrap().len(),
            1
        );

        // Silent when unseen; active again when seen, each in the history.
        let silent = reg
            .mark_silent_devices(now + Duration::seconds(1), now)
            .await
            .unwrap();
        assert_eq!(silent, ["phone"]);
        reg.touch_device("phone", None, now).await.unwrap();
        let history: Vec<String> = reg
            .device_history("u1", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(history, ["active", "silent", "updated", "joined"]);
        assert!(reg.device_history("u2", 10).await.unwrap().is_empty());

        // Removing it ends its token and its inbox.
        assert!(matches!(
            reg.delete_device("u2", "phone", now).await,
            Err(RegistryError::NotFound)
        ));
        reg.delete_device("u1", "phone", now).await.unwrap();
        assert!(matches!(
            reg.session_owner("t2", now).await,
            Err(RegistryError::NotFound)
        ));
        assert!(reg
            .device_events_after("phone", 0, 10)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}
