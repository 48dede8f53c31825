//! Gateway processes killed with SIGKILL while deliveries are in flight, on
//! SQLite (restart on the same data dir) and on PostgreSQL (two processes
//! sharing one database): no change is lost, and without a crash every
//! delivery is pushed exactly once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::crash_kit::{
    all_delivered, as_strs, envs, hex_key, pushes, report_all, start, upload, users, FLAGS, WAIT,
};
use e2e_tests::mock::{eventually, MockNetwork, Reply};
use e2e_tests::postgres_admin_url;
use e2e_tests::process::GatewayProcess;
use registry_db::scratch::ScratchDatabase;
use reqwest::Client;
use std::collections::HashMap;
use std::time::Duration;

fn delivered_by(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("gateway_deliveries_total{") && l.contains("outcome=\"delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_deliveries_in_flight_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let key = hex_key();
    let envs = envs(&key);
    let args: Vec<&str> = [&["--data-dir", dir.as_str()][..], FLAGS].concat();
    let client = Client::new();
    let (source, target) = (MockNetwork::start().await, MockNetwork::start().await);
    target.otherwise(Reply::Slow(Duration::from_millis(300)));

    let mut gw = start(&args, &envs).await;
    upload(&client, &gw, &source.manifest("source", 1000, 1000)).await;
    upload(&client, &gw, &target.manifest("target", 1000, 1000)).await;
    let tokens = users(&client, &gw, 20).await;
    let ids = report_all(&client, &gw, &tokens, "before-kill").await;
    eventually("pushes in flight", WAIT, || async {
        (target.hits().len() >= 2).then_some(())
    })
    .await;
    gw.kill();
    let pushed_before = target.hits().len();
    assert!(
        pushed_before < 20,
        "the kill came while deliveries were queued"
    );

    let gw = start(&args, &envs).await;
    all_delivered(&client, &gw, &tokens, &ids).await;
    let pushes = pushes(&target);
    for i in 0..20 {
        assert!(
            pushes.contains_key(&format!("before-kill-{i}")),
            "change of user{i} reached the network"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_postgres_share_the_queue_and_survive_a_kill() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = ScratchDatabase::create(&admin_url, "crash_test")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = hex_key();
    let envs = envs(&key);
    let args = |dir: &std::path::Path| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--data-dir".into(),
            dir.to_str().unwrap().into(),
            "--database-url".into(),
            db.url().into(),
        ];
        a.extend(FLAGS.iter().map(|s| s.to_string()));
        a
    };
    let (args_a, args_b) = (args(dirs.0.path()), args(dirs.1.path()));
    let client = Client::new();
    let (source, target) = (MockNetwork::start().await, MockNetwork::start().await);
    target.otherwise(Reply::Slow(Duration::from_millis(100)));

    let mut a = start(&as_strs(&args_a), &envs).await;
    let b = start(&as_strs(&args_b), &envs).await;
    upload(&client, &a, &source.manifest("source", 1000, 1000)).await;
    upload(&client, &a, &target.manifest("target", 1000, 1000)).await;
    let tokens = users(&client, &a, 30).await;

    // Both processes claim from one queue; no delivery is pushed twice.
    let ids = report_all(&client, &b, &tokens, "shared").await;
    all_delivered(&client, &a, &tokens, &ids).await;
    let pushes = pushes(&target);
    for i in 0..30 {
        assert_eq!(
            pushes.get(&format!("shared-{i}")),
            Some(&1),
            "user{i}: {pushes:?}"
        );
    }
    let metrics = |gw: &GatewayProcess| {
        let client = client.clone();
        let url = gw.url("/metrics");
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let (by_a, by_b) = (
        delivered_by(&metrics(&a).await),
        delivered_by(&metrics(&b).await),
    );
    assert_eq!(by_a + by_b, 30.0);
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both processes delivered: {by_a} + {by_b}"
    );

    // One process dies mid-queue; the other takes over its leases.
    let ids = report_all(&client, &a, &tokens, "after-kill").await;
    eventually("pushes in flight", WAIT, || async {
        (pushes_with(&target, "after-kill") >= 2).then_some(())
    })
    .await;
    a.kill();
    all_delivered(&client, &b, &tokens, &ids).await;
    let pushes = pushes_with_counts(&target, "after-kill");
    assert_eq!(pushes.len(), 30, "every change reached the network");
}

fn pushes_with(mock: &MockNetwork, tag: &str) -> usize {
    pushes_with_counts(mock, tag).values().sum()
}

fn pushes_with_counts(mock: &MockNetwork, tag: &str) -> HashMap<String, usize> {
    pushes(mock)
        .into_iter()
        .filter(|(s, _)| s.starts_with(tag))
        .collect()
}
