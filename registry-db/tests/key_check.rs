//! The master key's check value: stored once, the first one stored wins, and
//! a registry from before it still offers a sample of sealed data.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::Utc;
use common::{on_every_backend, world};

#[tokio::test]
async fn the_first_check_value_stored_is_kept() {
    on_every_backend(async |reg| {
        assert_eq!(reg.key_check().await.expect("read"), None);
        let first = reg
            .init_key_check(b"sealed-by-a", Utc::now())
            .await
            .expect("store");
        assert_eq!(first, b"sealed-by-a");
        // A second node with another key does not replace it: it gets the
        // stored value back to check its own key against.
        let second = reg
            .init_key_check(b"sealed-by-b", Utc::now())
            .await
            .expect("store again");
        assert_eq!(second, b"sealed-by-a");
        assert_eq!(
            reg.key_check().await.expect("read"),
            Some(b"sealed-by-a".to_vec())
        );
    })
    .await;
}

#[tokio::test]
async fn the_oldest_binding_is_the_sample_of_sealed_credentials() {
    on_every_backend(async |reg| {
        assert!(reg.first_binding().await.expect("empty").is_none());
        world(&reg).await;
        let first = reg.first_binding().await.expect("read").expect("a binding");
        // The user's list is oldest first too (ties by id).
        let listed = reg.list_bindings("u").await.expect("list");
        assert_eq!(first.id, listed[0].id);
        assert_eq!(first.user_id, "u");
        assert_eq!(first.credentials.0, vec![1]);
    })
    .await;
}
