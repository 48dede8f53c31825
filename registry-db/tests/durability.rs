//! A change report's `202` promises the report survives a power loss: the
//! transactions that record reports commit durably on every backend, while
//! delivery bookkeeping (at-least-once anyway) may skip the flush.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::{change, on_every_backend, world};
use registry_db::Backend;
use serde_json::json;

#[tokio::test]
async fn change_reports_commit_durably_and_bookkeeping_need_not() {
    on_every_backend(async |reg| {
        world(&reg).await;
        // Before and after other write transactions: each sets its own level.
        for round in 0..2 {
            let durability = reg.commit_durability().await.expect("durability");
            let (durable, relaxed) = match reg.backend() {
                // SQLite in WAL mode: FULL syncs the WAL at every commit,
                // NORMAL only at checkpoints.
                Backend::Sqlite => ("full", "normal"),
                Backend::Postgres => ("on", "off"),
            };
            assert_eq!(durability.writes, durable, "change reports");
            assert_eq!(durability.bookkeeping, relaxed, "delivery bookkeeping");
            let now = Utc::now();
            reg.record_change(
                change(&format!("c{round}"), json!({"mood": "x"}), None),
                now,
            )
            .await
            .expect("record");
            reg.claim_deliveries("w", now, now + Duration::seconds(60), 10)
                .await
                .expect("claim");
        }
    })
    .await;
}
