//! Three gateway processes on one PostgreSQL: a module's rate limit holds
//! for the cluster, not per process. The mock network counts what reaches
//! it: in no second does it see more than the quota plus the burst.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::crash_kit::{
    all_delivered, as_strs, envs, hex_key, pushes, report_all, start, upload, users, FLAGS,
};
use e2e_tests::mock::MockNetwork;
use e2e_tests::postgres_admin_url;
use registry_db::scratch::ScratchDatabase;
use reqwest::Client;
use std::time::Duration;

const PER_SECOND: usize = 10;
const BURST: usize = 3;
const USERS: usize = 45;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_hold_a_modules_rate_limit_together() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = ScratchDatabase::create(&admin_url, "cluster_test")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let key = hex_key();
    let envs = envs(&key);
    let args: Vec<Vec<String>> = dirs
        .iter()
        .map(|dir| {
            let mut a: Vec<String> = vec![
                "--data-dir".into(),
                dir.path().to_str().unwrap().into(),
                "--database-url".into(),
                db.url().into(),
            ];
            a.extend(FLAGS.iter().map(|s| s.to_string()));
            a
        })
        .collect();
    let client = Client::new();
    let (source, target) = (MockNetwork::start().await, MockNetwork::start().await);
    let mut nodes = Vec::new();
    for a in &args {
        nodes.push(start(&as_strs(a), &envs).await);
    }
    upload(&client, &nodes[0], &source.manifest("source", 1000, 1000)).await;
    // Users bind at a generous limit; the tight one comes after.
    upload(&client, &nodes[0], &target.manifest("target", 1000, 1000)).await;
    let tokens = users(&client, &nodes[0], USERS).await;
    upload(
        &client,
        &nodes[0],
        &target.manifest("target", PER_SECOND as u32, BURST as u32),
    )
    .await;
    let before = target.hits().len();

    // Reported through all three; all three deliver.
    let mut ids = Vec::new();
    for (i, chunk) in tokens.chunks(USERS / 3).enumerate() {
        let node = &nodes[i % 3];
        let tag = format!("limited{i}");
        ids.push((chunk, report_all(&client, node, chunk, &tag).await));
    }
    for (chunk, ids) in &ids {
        all_delivered(&client, &nodes[1], chunk, ids).await;
    }
    let hits: Vec<_> = target.hits().split_off(before);
    assert_eq!(pushes(&target).values().filter(|&&n| n == 1).count(), USERS);
    // Every window of one second from each push: at most quota + burst.
    let worst = hits
        .iter()
        .map(|first| {
            hits.iter()
                .filter(|h| h.at >= first.at && h.at < first.at + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        worst <= PER_SECOND + BURST,
        "{worst} pushes within one second, over {PER_SECOND}/s + burst {BURST}"
    );
    // And the limit did not starve the network either: 45 pushes at 10/s
    // take about 4.2 s after the burst; three unshared limiters would be
    // three times as fast.
    let span = hits.last().unwrap().at - hits.first().unwrap().at;
    assert!(
        span >= Duration::from_secs(3),
        "{} pushes in {span:?}: faster than the quota allows",
        hits.len()
    );
    drop(nodes);
    db.drop_now().await.unwrap();
}
