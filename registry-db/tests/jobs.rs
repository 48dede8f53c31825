//! The media job queue, on SQLite always and on PostgreSQL when
//! `TEST_DATABASE_URL` is set (mandatory under `CI=true`): a job is claimed
//! by one node at a time, claimed again once a dead node's lease ran out,
//! and the dead node's late answer is not recorded; a kept result's time
//! runs out once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::on_every_backend;
use registry_db::{JobOutcome, JobState, MediaJob};

fn job(id: &str, user: &str, at: chrono::DateTime<Utc>) -> MediaJob {
    MediaJob {
        id: id.into(),
        service_id: "tasks".into(),
        user_id: user.into(),
        device_id: None,
        kind: "thumbnail".into(),
        input: "photo".into(),
        params: "{}".into(),
        state: JobState::Queued,
        attempts: 0,
        lease_until: None,
        keep_ms: 60_000,
        result_blob: None,
        result_type: None,
        result_size: None,
        error: None,
        created_at: at,
        started_at: None,
        finished_at: None,
        kept_until: None,
        gone_at: None,
    }
}

#[tokio::test]
async fn a_job_is_claimed_once_reclaimed_after_its_lease_and_kept_for_its_time() {
    on_every_backend(async |reg| {
        let t0 = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        reg.create_user("u1", "alice", "h", t0).await.unwrap();
        reg.create_user("u2", "bob", "h", t0).await.unwrap();
        reg.insert_job(&job("j1", "u1", t0)).await.unwrap();
        reg.insert_job(&job("j2", "u1", t0 + Duration::seconds(1)))
            .await
            .unwrap();
        assert_eq!(reg.open_jobs("tasks", "u1").await.unwrap(), 2);
        // Another user's id is unknown.
        assert!(reg.job("tasks", "u2", "j1").await.unwrap().is_none());

        // Oldest first, one at a time.
        let lease = t0 + Duration::seconds(90);
        let first = reg.claim_jobs(t0, lease, 1).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].id.as_str(), first[0].attempts), ("j1", 1));
        // Held by its node: another node gets only j2.
        let second = reg.claim_jobs(t0, lease, 5).await.unwrap();
        assert_eq!(
            second.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["j2"]
        );
        assert!(reg
            .claim_jobs(t0 + Duration::seconds(89), lease, 5)
            .await
            .unwrap()
            .is_empty());

        // The first node died: past its lease, j1 is claimed again.
        let later = t0 + Duration::seconds(91);
        let again = reg
            .claim_jobs(later, later + Duration::seconds(90), 5)
            .await
            .unwrap();
        assert_eq!(again.len(), 2, "both leases ran out");
        let j1 = again.iter().find(|j| j.id == "j1").unwrap();
        assert_eq!(j1.attempts, 2);
        // The dead node's late answer is not recorded; the new one is.
        let done = JobOutcome::Done {
            blob: "b1".into(),
            content_type: "image/png".into(),
            size: 10,
            kept_until: later + Duration::seconds(60),
        };
        assert!(!reg.finish_job(&first[0], &done, later).await.unwrap());
        assert!(reg.finish_job(j1, &done, later).await.unwrap());
        let j2 = again.iter().find(|j| j.id == "j2").unwrap();
        reg.release_job(j2).await.unwrap();
        let stored = reg.job("tasks", "u1", "j2").await.unwrap().unwrap();
        assert_eq!((stored.state, stored.lease_until), (JobState::Queued, None));
        assert_eq!(reg.open_jobs("tasks", "u1").await.unwrap(), 1);

        let stored = reg.job("tasks", "u1", "j1").await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Done);
        assert_eq!(stored.result_blob.as_deref(), Some("b1"));
        // Its keep time runs out once.
        assert!(reg
            .jobs_past_keeping(later + Duration::seconds(59), 10)
            .await
            .unwrap()
            .is_empty());
        let past = reg
            .jobs_past_keeping(later + Duration::seconds(60), 10)
            .await
            .unwrap();
        assert_eq!(past.len(), 1);
        reg.mark_job_result_gone("j1", later + Duration::seconds(60))
            .await
            .unwrap();
        assert!(reg
            .jobs_past_keeping(later + Duration::seconds(600), 10)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}
