//! Shared rate limits on SQLite and PostgreSQL: a burst at one instant, the
//! sustained rate over time, and several registries (as several gateway
//! processes) drawing from one budget at once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{on_every_backend, on_every_database};
use registry_db::{RateQuota, Registry};

const QUOTA: RateQuota = RateQuota {
    per_second: 10,
    burst: 5,
};

#[tokio::test]
async fn a_burst_then_one_token_per_interval() {
    on_every_backend(async |reg| {
        let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        for i in 0..5 {
            let taken = reg.take_rate_token("m", QUOTA, t0).await.unwrap();
            assert_eq!(taken, Ok(()), "take {i} of the burst");
        }
        let refused = reg.take_rate_token("m", QUOTA, t0).await.unwrap();
        assert_eq!(refused, Err(std::time::Duration::from_millis(100)));
        // Another key has its own budget.
        assert_eq!(
            reg.take_rate_token("other", QUOTA, t0).await.unwrap(),
            Ok(())
        );
        // 100 ms later exactly one more.
        let t1 = t0 + Duration::milliseconds(100);
        assert_eq!(reg.take_rate_token("m", QUOTA, t1).await.unwrap(), Ok(()));
        assert!(reg.take_rate_token("m", QUOTA, t1).await.unwrap().is_err());
        // Takes every millisecond up to t0 + 2.099 s: in all (with the six
        // above) the burst plus 10 per second, no more: 5 + 20.
        let mut granted = 6;
        for ms in 0..2_000 {
            let now = t1 + Duration::milliseconds(ms);
            if reg.take_rate_token("m", QUOTA, now).await.unwrap().is_ok() {
                granted += 1;
            }
        }
        assert_eq!(granted, 25, "burst 5 + 10 per second for 2.099 s");
    })
    .await;
}

/// Several registries on one database (as several gateway processes), all
/// taking at once at one instant: the burst is granted once in all.
#[tokio::test]
async fn processes_sharing_a_database_share_the_budget() {
    on_every_database(async |url, _| {
        let mut nodes = Vec::new();
        for _ in 0..4 {
            nodes.push(Registry::connect(url).await.unwrap());
        }
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let mut running = tokio::task::JoinSet::new();
        for node in &nodes {
            for _ in 0..25 {
                let node = node.clone();
                running.spawn(
                    async move { node.take_rate_token("shared", QUOTA, now).await.unwrap() },
                );
            }
        }
        let granted = running
            .join_all()
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(granted, 5);
        for node in &nodes {
            node.close().await;
        }
    })
    .await;
}

/// Several tokens in one statement: as many as fit, never more than the
/// one-by-one takes would have got.
#[tokio::test]
async fn a_batch_gets_what_fits() {
    on_every_backend(async |reg| {
        let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        assert_eq!(
            reg.take_rate_tokens("b", QUOTA, t0, 3).await.unwrap(),
            Ok(3)
        );
        // Two of the burst are left.
        assert_eq!(
            reg.take_rate_tokens("b", QUOTA, t0, 3).await.unwrap(),
            Ok(2)
        );
        assert!(reg
            .take_rate_tokens("b", QUOTA, t0, 3)
            .await
            .unwrap()
            .is_err());
        // 350 ms later three more intervals have passed.
        let later = t0 + Duration::milliseconds(350);
        assert_eq!(
            reg.take_rate_tokens("b", QUOTA, later, 10).await.unwrap(),
            Ok(3)
        );
        assert_eq!(
            reg.take_rate_token("b", QUOTA, later).await.unwrap(),
            Err(std::time::Duration::from_millis(50))
        );
        // A fresh key grants at most its burst at once.
        assert_eq!(
            reg.take_rate_tokens("fresh", QUOTA, t0, 64).await.unwrap(),
            Ok(5)
        );
    })
    .await;
}
