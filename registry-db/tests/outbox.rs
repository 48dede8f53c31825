//! The outbox on SQLite and PostgreSQL: a change and its deliveries in one
//! transaction, leases, one open delivery per binding in order, latest-wins,
//! retries folded into newer deliveries, redrive.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::{Duration, Utc};
use common::{bind, change, on_every_backend, receipt, reported_by_dst, settings, world};
use registry_db::{
    AttemptOutcome, AttemptRecorded, ChangeRecorded, DeliveryStatus, NewDelivery, RegistryError,
};
use serde_json::json;

#[tokio::test]
async fn a_change_and_its_deliveries_are_claimed_once_and_recorded() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        let recorded = reg
            .record_change(change("c1", json!({"signature": "hi"}), Some("k")), now)
            .await
            .unwrap();
        assert!(matches!(recorded, ChangeRecorded::Created { .. }));
        // The same key again: the first receipt, nothing new.
        let again = reg
            .record_change(
                change("c1-again", json!({"signature": "x"}), Some("k")),
                now,
            )
            .await
            .unwrap();
        assert_eq!(again, ChangeRecorded::Replayed(receipt("c1")));
        assert!(matches!(
            reg.change("u", "c1-again").await,
            Err(RegistryError::NotFound)
        ));

        let lease = now + Duration::seconds(30);
        let claimed = reg.claim_deliveries("w1", now, lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempts, 1);
        assert!(reg
            .claim_deliveries("w2", now, lease, 10)
            .await
            .unwrap()
            .is_empty());
        // A lease that ran out is claimed again by another worker.
        let later = lease + Duration::seconds(1);
        let reclaimed = reg
            .claim_deliveries("w2", later, later + Duration::seconds(30), 10)
            .await
            .unwrap();
        assert_eq!(reclaimed.len(), 1);
        assert_eq!(reclaimed[0].attempts, 2);
        let outcome = AttemptOutcome::Delivered {
            applied: vec!["signature".into()],
            truncated: vec![],
            applied_settings: settings(json!({"signature": "hi"})),
            note: None,
        };
        assert_eq!(
            reg.finish_attempt("c1-dst", "w1", outcome.clone(), later)
                .await
                .unwrap(),
            AttemptRecorded::LeaseLost
        );
        assert_eq!(
            reg.finish_attempt("c1-dst", "w2", outcome, later)
                .await
                .unwrap(),
            AttemptRecorded::Stored
        );
        let c1 = reg.change("u", "c1").await.unwrap();
        assert_eq!(c1.targets[0].status, DeliveryStatus::Delivered);
        assert!(
            c1.targets
                .iter()
                .all(|t| t.status == DeliveryStatus::Delivered),
            "{c1:?}"
        );
        let dst = reg.binding("u", "dst").await.unwrap();
        assert_eq!(dst.last_applied, Some(json!({"signature": "hi"})));
        assert_eq!(
            reg.profile("u").await.unwrap().unwrap().0,
            settings(json!({"signature": "hi"}))
        );
    })
    .await;
}

#[tokio::test]
async fn newer_values_supersede_older_pending_ones_and_retries_fold_into_them() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        let lease = now + Duration::seconds(30);
        reg.record_change(
            change("c1", json!({"signature": "one", "mood": "m"}), None),
            now,
        )
        .await
        .unwrap();
        reg.record_change(change("c2", json!({"signature": "two"}), None), now)
            .await
            .unwrap();
        let c1 = reg.change("u", "c1").await.unwrap();
        assert_eq!(c1.targets[0].status, DeliveryStatus::Superseded);
        assert_eq!(c1.targets[0].superseded_by.as_deref(), Some("c2"));
        let claimed = reg.claim_deliveries("w", now, lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            claimed[0].settings,
            settings(json!({"signature": "two", "mood": "m"})),
            "the older mood rides along, the newer signature wins"
        );
        // While c2 is in flight, c3 arrives: it must wait for c2.
        reg.record_change(change("c3", json!({"signature": "three"}), None), now)
            .await
            .unwrap();
        assert!(reg
            .claim_deliveries("w", now, lease, 10)
            .await
            .unwrap()
            .is_empty());
        // c2 fails for now: it folds into c3 instead of retrying after it.
        let retry = AttemptOutcome::Retry {
            error: "busy".into(),
            at: now + Duration::seconds(60),
            pause_module_until: None,
        };
        assert_eq!(
            reg.finish_attempt("c2-dst", "w", retry, now).await.unwrap(),
            AttemptRecorded::Superseded
        );
        let claimed = reg.claim_deliveries("w", now, lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, "c3-dst");
        assert_eq!(
            claimed[0].settings,
            settings(json!({"signature": "three", "mood": "m"}))
        );
    })
    .await;
}

#[tokio::test]
async fn a_paused_module_waits_and_dead_letters_can_be_redriven() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        let lease = now + Duration::seconds(30);
        reg.record_change(change("c1", json!({"signature": "s"}), None), now)
            .await
            .unwrap();
        reg.claim_deliveries("w", now, lease, 10).await.unwrap();
        let until = now + Duration::seconds(5);
        reg.finish_attempt(
            "c1-dst",
            "w",
            AttemptOutcome::Retry {
                error: "429".into(),
                at: until,
                pause_module_until: Some(until),
            },
            now,
        )
        .await
        .unwrap();
        let paused = reg.module_paused_until("b", now).await.unwrap().unwrap();
        assert_eq!(paused.timestamp_millis(), until.timestamp_millis());
        assert!(reg
            .claim_deliveries("w", until - Duration::seconds(1), lease, 10)
            .await
            .unwrap()
            .is_empty());
        let after = until + Duration::milliseconds(1);
        assert_eq!(
            reg.claim_deliveries("w", after, lease, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        reg.finish_attempt(
            "c1-dst",
            "w",
            AttemptOutcome::Failed {
                error: "gave up".into(),
                dead: true,
            },
            after,
        )
        .await
        .unwrap();
        assert_eq!(reg.dead_letters(10).await.unwrap().len(), 1);
        assert_eq!(reg.open_deliveries().await.unwrap(), 0);
        let redriven = reg.redrive("c1-dst", after).await.unwrap();
        assert_eq!(redriven.status, DeliveryStatus::Pending);
        assert!(reg.dead_letters(10).await.unwrap().is_empty());
        assert!(matches!(
            reg.redrive("c1-dst", after).await,
            Err(RegistryError::State(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_deferred_claim_is_uncounted_pauses_the_module_and_yields_to_newer_values() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        let lease = now + Duration::seconds(30);
        reg.record_change(change("c1", json!({"signature": "one"}), None), now)
            .await
            .unwrap();
        reg.claim_deliveries("w", now, lease, 10).await.unwrap();
        let until = now + Duration::seconds(1);
        assert_eq!(
            reg.finish_attempts(
                "w",
                vec![(
                    "c1-dst".into(),
                    AttemptOutcome::Deferred {
                        until,
                        reason: None
                    }
                )],
                now
            )
            .await
            .unwrap(),
            vec![AttemptRecorded::Stored]
        );
        let c1 = reg.change("u", "c1").await.unwrap();
        assert_eq!(c1.targets[0].status, DeliveryStatus::Pending);
        assert_eq!(c1.targets[0].attempts, 0, "a deferral is not an attempt");
        assert_eq!(c1.targets[0].last_error, None);
        assert!(reg.module_paused_until("b", now).await.unwrap().is_some());
        // Still unclaimed: a newer value replaces it rather than queueing.
        reg.record_change(change("c2", json!({"mood": "m"}), None), now)
            .await
            .unwrap();
        assert_eq!(
            reg.change("u", "c1").await.unwrap().targets[0].status,
            DeliveryStatus::Superseded
        );
        let after = until + Duration::milliseconds(1);
        let claimed = reg.claim_deliveries("w", after, lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            claimed[0].settings,
            settings(json!({"signature": "one", "mood": "m"}))
        );
    })
    .await;
}

#[tokio::test]
async fn outcomes_stored_in_one_batch_update_last_applied_and_a_report_forgets_it() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        bind(&reg, "u", "dst2", "b").await;
        let lease = now + Duration::seconds(30);
        let mut c1 = change("c1", json!({"signature": "s1", "mood": "m1"}), None);
        c1.targets.push(NewDelivery {
            id: "c1-dst2".into(),
            binding_id: "dst2".into(),
            module_id: "b".into(),
            account: "dst2@b".into(),
        });
        reg.record_change(c1, now).await.unwrap();
        assert_eq!(
            reg.claim_deliveries("w", now, lease, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        let delivered = AttemptOutcome::Delivered {
            applied: vec!["signature".into(), "mood".into()],
            truncated: vec![],
            applied_settings: settings(json!({"signature": "s1", "mood": "m1"})),
            note: None,
        };
        let recorded = reg
            .finish_attempts(
                "w",
                vec![
                    ("c1-dst".into(), delivered.clone()),
                    ("no-such-delivery".into(), delivered),
                    (
                        "c1-dst2".into(),
                        AttemptOutcome::Delivered {
                            applied: vec!["signature".into()],
                            truncated: vec!["signature".into()],
                            applied_settings: settings(json!({"signature": "s"})),
                            note: Some("mood not applied".into()),
                        },
                    ),
                ],
                now,
            )
            .await
            .unwrap();
        assert_eq!(
            recorded,
            vec![
                AttemptRecorded::Stored,
                AttemptRecorded::LeaseLost,
                AttemptRecorded::Stored
            ]
        );
        assert_eq!(
            reg.binding("u", "dst2").await.unwrap().last_applied,
            Some(json!({"signature": "s"}))
        );
        let c1 = reg.change("u", "c1").await.unwrap();
        assert_eq!(c1.targets[1].truncated_fields, vec!["signature".to_owned()]);
        // A delivered target keeps why a field was not sent.
        assert_eq!(
            c1.targets[1].last_error.as_deref(),
            Some("mood not applied")
        );
        assert_eq!(c1.targets[0].last_error, None);
        assert!(
            c1.targets
                .iter()
                .all(|t| t.status == DeliveryStatus::Delivered),
            "{c1:?}"
        );
        assert_eq!(
            reg.binding("u", "dst").await.unwrap().last_applied,
            Some(json!({"signature": "s1", "mood": "m1"}))
        );
        // The network of `dst` now reports a signature itself: what the
        // gateway applied there no longer holds for that field.
        let own = reported_by_dst("c2", json!({"signature": "mine"}));
        reg.record_change(own, now).await.unwrap();
        assert_eq!(
            reg.binding("u", "dst").await.unwrap().last_applied,
            Some(json!({"mood": "m1"}))
        );
        let again = reported_by_dst("c3", json!({"mood": "mine"}));
        reg.record_change(again, now).await.unwrap();
        assert_eq!(reg.binding("u", "dst").await.unwrap().last_applied, None);
        assert_eq!(
            reg.profile("u").await.unwrap().unwrap().0,
            settings(json!({"signature": "mine", "mood": "mine"}))
        );
    })
    .await;
}

#[tokio::test]
async fn a_renewed_lease_holds_and_only_its_worker_renews_it() {
    on_every_backend(async |reg| {
        world(&reg).await;
        let now = Utc::now();
        reg.record_change(change("c1", json!({"signature": "hi"}), None), now)
            .await
            .unwrap();
        let lease = now + Duration::seconds(10);
        let claimed = reg.claim_deliveries("w1", now, lease, 10).await.unwrap();
        let ids: Vec<String> = claimed.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), 1);
        // Another worker cannot renew (or steal) it.
        assert_eq!(
            reg.renew_claims("w2", &ids, now + Duration::seconds(60))
                .await
                .unwrap(),
            0
        );
        // Its worker renews it before it runs out: past the first lease it
        // is still held.
        let renewed_until = now + Duration::seconds(20);
        assert_eq!(
            reg.renew_claims("w1", &ids, renewed_until).await.unwrap(),
            1
        );
        let after_first = lease + Duration::seconds(1);
        assert!(reg
            .claim_deliveries("w2", after_first, after_first + Duration::seconds(10), 10)
            .await
            .unwrap()
            .is_empty());
        // Once renewals stop (the worker died), the next worker takes over.
        let after_renewed = renewed_until + Duration::seconds(1);
        let taken = reg
            .claim_deliveries(
                "w2",
                after_renewed,
                after_renewed + Duration::seconds(10),
                10,
            )
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        // The dead worker's late renewal changes nothing.
        assert_eq!(
            reg.renew_claims("w1", &ids, after_renewed + Duration::seconds(60))
                .await
                .unwrap(),
            0
        );
    })
    .await;
}
