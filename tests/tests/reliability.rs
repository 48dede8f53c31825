//! The standing reliability suite: faults repeated many times while a client
//! keeps reporting changes, then a check that nothing was lost and little
//! was repeated.
//!
//! - SQLite: a gateway process killed with SIGKILL 50 times at random
//!   moments, restarted on the same data dir each time.
//! - PostgreSQL: two processes sharing one database, killed one at a time
//!   (alternately), 50 kills in all.
//! - The monitor's on-disk queue: reports made while the gateway is down, or
//!   while it is being killed, all reach the gateway exactly once, in order,
//!   and are delivered.
//! - A PostgreSQL outage (connections refused and the gateway's sessions
//!   terminated): `/readyz` says 503 meanwhile, and afterwards the same
//!   process is ready again and delivers every change, without a restart.
//!
//! What is proven after each fault loop: every change that got its `202`
//! ends `delivered` (each target `delivered`, or `superseded` by a newer
//! change of the same user that carried its values on); each `delivered`
//! target's value reached the network; the network holds each user's latest
//! value last; nothing reached it that was not reported; and pushes were
//! repeated (the same value pushed again) at most as often as deliveries can
//! have been in flight at the faults: [`CONCURRENCY`] per kill, or for the
//! outage. The kill moments come from a seeded generator
//! (`RELIABILITY_SEED` replays another run); the counts are printed
//! (`cargo test -p e2e-tests --test reliability -- --nocapture`).
//!
//! PostgreSQL tests run against `TEST_DATABASE_URL`; without it they are
//! skipped with a note, except under `CI=true`, where they fail.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::crash_kit::{
    as_strs, delivered, envs, hex_key, pushes, start, start_listening, upload, users, CONCURRENCY,
    FLAGS, WAIT,
};
use e2e_tests::mock::{eventually, MockNetwork, Reply};
use e2e_tests::monitor::Monitor;
use e2e_tests::postgres_admin_url;
use e2e_tests::process::GatewayProcess;
use registry_db::scratch::ScratchDatabase;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SIGKILLs per kill loop.
const KILLS: usize = 50;
/// Users the reporter takes turns with.
const USERS: usize = 24;
/// Default seed of the kill moments.
const SEED: u64 = 0x5eed_0fc0_ffee;
/// Per-user limits the reporter and the final checks never reach.
const USER_LIMITS: &[&str] = &["--user-rate", "1000", "--user-burst", "1000"];
/// The reporter's pause between two reports.
const PACE: Duration = Duration::from_millis(25);
/// How long the network takes to answer a push (so that kills find pushes
/// in flight).
const PUSH_TIME: Duration = Duration::from_millis(300);

/// A seeded xorshift generator for the moments of the faults.
struct Jitter(u64);

impl Jitter {
    /// Seeded from `RELIABILITY_SEED` or [`SEED`]; prints the seed.
    fn new(test: &str) -> Jitter {
        let seed = std::env::var("RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(SEED);
        println!("{test}: seed {seed} (RELIABILITY_SEED={seed} replays it)");
        Jitter(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Between `low` and `high` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

/// The base URL of each gateway node as clients see it: a restarted
/// process listens on a new port.
#[derive(Clone)]
struct Nodes(Arc<Mutex<Vec<String>>>);

impl Nodes {
    fn new(bases: Vec<String>) -> Nodes {
        Nodes(Arc::new(Mutex::new(bases)))
    }

    fn set(&self, node: usize, base: String) {
        self.0.lock().unwrap()[node] = base;
    }

    /// The `n`th node, round robin.
    fn pick(&self, n: usize) -> String {
        let bases = self.0.lock().unwrap();
        bases[n % bases.len()].clone()
    }
}

/// A change that got its `202`.
#[derive(Debug, Clone)]
struct Accepted {
    user: usize,
    id: String,
    signature: String,
}

/// A client that keeps reporting changes, the users taking turns, each
/// signature unique and used as the report's `Idempotency-Key`. A report
/// that fails (process down, database down) is sent again, to any node,
/// until it gets its `202`, as the monitor does: so the changes the
/// gateway holds are exactly the accepted ones.
struct Reporter {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    /// Answers the number of failed sends.
    task: tokio::task::JoinHandle<usize>,
}

impl Reporter {
    fn start(nodes: Nodes, tokens: Vec<String>, tag: &'static str) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(report_until_stopped(
            nodes,
            tokens,
            tag,
            stop.clone(),
            accepted.clone(),
        ));
        Reporter {
            stop,
            accepted,
            task,
        }
    }

    fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Panics if the reporter gave up (its panic says why).
    fn assert_running(&self) {
        assert!(!self.task.is_finished(), "the reporter stopped early");
    }

    /// Waits until `n` changes in all were accepted.
    async fn accepted_at_least(&self, n: usize) {
        eventually(&format!("{n} changes accepted"), WAIT, || async {
            self.assert_running();
            (self.count() >= n).then_some(())
        })
        .await;
    }

    /// Stops after the report under way got its `202`; answers the accepted
    /// changes and the number of failed sends.
    async fn stop(self) -> (Vec<Accepted>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let failed = self.task.await.expect("the reporter panicked");
        let accepted = self.accepted.lock().unwrap().clone();
        (accepted, failed)
    }
}

async fn report_until_stopped(
    nodes: Nodes,
    tokens: Vec<String>,
    tag: &'static str,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Accepted>>>,
) -> usize {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut failed = 0;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let user = n % tokens.len();
        let signature = format!("{tag}-u{user}-{n}");
        let mut attempt = 0;
        let id = loop {
            let base = nodes.pick(n + attempt);
            let sent = client
                .post(format!("{base}/v1/changes"))
                .bearer_auth(&tokens[user])
                .header("Idempotency-Key", &signature)
                .json(&json!({"module": "source", "settings": {"signature": signature}}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    // The body can be lost too, with a process killed
                    // right after the headers: then ask again.
                    if let Ok(receipt) = r.json::<Value>().await {
                        break receipt["id"].as_str().unwrap().to_owned();
                    }
                }
                Ok(r) if r.status().is_server_error() => {}
                Ok(r) => panic!(
                    "report {signature}: unexpected {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                // Not reachable: the process is down.
                Err(_) => {}
            }
            attempt += 1;
            failed += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        accepted.lock().unwrap().push(Accepted {
            user,
            id,
            signature,
        });
        n += 1;
        tokio::time::sleep(PACE).await;
    }
    failed
}

/// One gateway process and how to start it again.
struct Node {
    args: Vec<String>,
    process: GatewayProcess,
}

/// `KILLS` SIGKILLs at random moments, 100-600 ms apart, of the nodes in
/// turn, each restarted at once on its own data dir (and database); the
/// reporter learns the new address. Answers when each kill came.
async fn kill_loop(
    nodes: &mut [Node],
    bases: &Nodes,
    envs: &[(&'static str, String)],
    reporter: &Reporter,
    jitter: &mut Jitter,
) -> Vec<Instant> {
    let mut kills = Vec::new();
    for kill in 0..KILLS {
        tokio::time::sleep(jitter.millis(100, 600)).await;
        reporter.assert_running();
        let i = kill % nodes.len();
        kills.push(Instant::now());
        nodes[i].process.kill();
        nodes[i].process = start(&as_strs(&nodes[i].args), envs).await;
        bases.set(i, nodes[i].process.base.clone());
    }
    kills
}

/// How many pushes the network was still answering when a process was
/// killed: the faults did hit deliveries in flight. Those of the killed
/// process lost their answers and go out again (with two nodes, some were
/// the other node's); pushes answered but not yet recorded go out again
/// too, unseen here.
fn answering_at(network: &MockNetwork, kills: &[Instant]) -> usize {
    network
        .hits()
        .iter()
        .filter(|h| {
            h.body["settings"]["signature"].is_string()
                && kills.iter().any(|&k| h.at <= k && k < h.at + PUSH_TIME)
        })
        .count()
}

/// What the checks counted.
#[derive(Default)]
struct Tally {
    changes: usize,
    delivered: usize,
    superseded: usize,
    pushes: usize,
    duplicates: usize,
    /// See [`answering_at`]; `None` without kills.
    answering_at_kills: Option<usize>,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changes accepted ({} delivered, {} superseded by a newer one), \
             {} pushes, {} repeated",
            self.changes, self.delivered, self.superseded, self.pushes, self.duplicates
        )?;
        if let Some(answering) = self.answering_at_kills {
            write!(f, " ({answering} pushes were being answered at a kill)")?;
        }
        Ok(())
    }
}

/// Checks the accepted changes against the gateway at `base` and what
/// `target` received (see the top of this file); `in_flight_bound` is how
/// many pushes may have been repeated, `kills` when processes were killed.
async fn check(
    client: &Client,
    base: &str,
    tokens: &[String],
    accepted: &[Accepted],
    target: &MockNetwork,
    in_flight_bound: usize,
    kills: &[Instant],
) -> Tally {
    let mut tally = Tally {
        changes: accepted.len(),
        answering_at_kills: (!kills.is_empty()).then(|| answering_at(target, kills)),
        ..Tally::default()
    };
    // Where each change stands in report order.
    let order: HashMap<&str, usize> = accepted
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.as_str(), i))
        .collect();
    assert_eq!(
        order.len(),
        accepted.len(),
        "one change per accepted report"
    );
    let mut changes = Vec::new();
    for a in accepted {
        changes.push(delivered(client, base, &tokens[a.user], &a.id).await);
    }
    // Every push is in: each change is final, and none was in flight.
    let received = pushes(target);
    for (i, (a, change)) in accepted.iter().zip(changes).enumerate() {
        assert_eq!(change["settings"]["signature"], a.signature, "{change}");
        let targets = change["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "{change}");
        match targets[0]["status"].as_str().unwrap() {
            "delivered" => {
                tally.delivered += 1;
                assert!(
                    received.contains_key(&a.signature),
                    "{} is delivered but never reached the network: {change}; \
                     the network got for user{}: {:?}",
                    a.signature,
                    a.user,
                    pushed_to(target, &format!("user{}@target", a.user))
                );
            }
            "superseded" => {
                tally.superseded += 1;
                let by = targets[0]["superseded_by"].as_str().unwrap_or_default();
                assert!(
                    order
                        .get(by)
                        .is_some_and(|&j| j > i && accepted[j].user == a.user),
                    "{} superseded by {by:?}, not a newer change of user{}: {change}",
                    a.signature,
                    a.user
                );
            }
            other => panic!("target {other} in a delivered change: {change}"),
        }
    }
    let reported: HashSet<&str> = accepted.iter().map(|a| a.signature.as_str()).collect();
    for signature in received.keys() {
        assert!(
            reported.contains(signature.as_str()),
            "{signature} reached the network but was never accepted"
        );
    }
    // Each user's latest value is delivered, and is what the network holds.
    let mut latest: BTreeMap<usize, &Accepted> = BTreeMap::new();
    for a in accepted {
        latest.insert(a.user, a);
    }
    let hits = target.accepted();
    for (user, a) in latest {
        let account = format!("user{user}@target");
        let last = hits
            .iter()
            .rev()
            .find(|h| h.body["account"] == account.as_str())
            .unwrap_or_else(|| panic!("nothing reached {account}"));
        assert_eq!(
            last.body["settings"]["signature"], a.signature,
            "{account} holds the latest value"
        );
    }
    tally.pushes = received.values().sum();
    tally.duplicates = received.values().map(|n| n - 1).sum();
    assert!(
        tally.duplicates <= in_flight_bound,
        "{} repeated pushes, more than the {in_flight_bound} that can be in flight: {tally}",
        tally.duplicates
    );
    tally
}

/// The signatures pushed to `account`, in order.
fn pushed_to(network: &MockNetwork, account: &str) -> Vec<String> {
    network
        .hits()
        .iter()
        .filter(|h| h.body["account"] == account)
        .map(|h| h.body["settings"]["signature"].to_string())
        .collect()
}

/// Source and target networks: the target answers each push after
/// [`PUSH_TIME`].
async fn networks() -> (MockNetwork, MockNetwork) {
    let (source, target) = (MockNetwork::start().await, MockNetwork::start().await);
    target.otherwise(Reply::Slow(PUSH_TIME));
    (source, target)
}

/// Uploads both modules through `gw`.
async fn modules(client: &Client, gw: &GatewayProcess, source: &MockNetwork, target: &MockNetwork) {
    upload(client, gw, &source.manifest("source", 1000, 1000)).await;
    upload(client, gw, &target.manifest("target", 1000, 1000)).await;
}

/// Gateway flags: [`FLAGS`], [`USER_LIMITS`] and `extra`.
fn flags(extra: &[&str]) -> Vec<String> {
    [extra, FLAGS, USER_LIMITS]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// One SQLite gateway killed 50 times while the reporter reports; each
/// restart on the same data dir carries on with what the last one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sigkills_on_sqlite_lose_no_change() {
    let started = Instant::now();
    let mut jitter = Jitter::new("sqlite kill loop");
    let data = tempfile::tempdir().unwrap();
    let key = hex_key();
    let envs = envs(&key);
    let args = flags(&["--data-dir", data.path().to_str().unwrap()]);
    let client = Client::new();
    let (source, target) = networks().await;

    let gw = start(&as_strs(&args), &envs).await;
    modules(&client, &gw, &source, &target).await;
    let tokens = users(&client, &gw, USERS).await;
    let bases = Nodes::new(vec![gw.base.clone()]);
    let mut nodes = [Node { args, process: gw }];
    let reporter = Reporter::start(bases.clone(), tokens.clone(), "sqlite");
    reporter.accepted_at_least(USERS).await;

    let kills = kill_loop(&mut nodes, &bases, &envs, &reporter, &mut jitter).await;
    let (accepted, failed) = reporter.stop().await;
    let tally = check(
        &client,
        &nodes[0].process.base,
        &tokens,
        &accepted,
        &target,
        kills.len() * CONCURRENCY,
        &kills,
    )
    .await;
    println!(
        "sqlite kill loop: {} kills, {failed} failed sends retried, {tally}, {:.1} s",
        kills.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Two nodes on one PostgreSQL database, killed in turn (one is always
/// up): the survivor takes the reports and, once the leases run out, the
/// dead one's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sigkills_of_two_postgres_nodes_lose_no_change() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let started = Instant::now();
    let mut jitter = Jitter::new("postgres kill loop");
    let db = ScratchDatabase::create(&admin_url, "reliability_kills")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let key = hex_key();
    let envs = envs(&key);
    let client = Client::new();
    let (source, target) = networks().await;

    let mut nodes = Vec::new();
    for dir in &dirs {
        let args = flags(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--database-url",
            db.url(),
        ]);
        let process = start(&as_strs(&args), &envs).await;
        nodes.push(Node { args, process });
    }
    modules(&client, &nodes[0].process, &source, &target).await;
    let tokens = users(&client, &nodes[0].process, USERS).await;
    let bases = Nodes::new(nodes.iter().map(|n| n.process.base.clone()).collect());
    let reporter = Reporter::start(bases.clone(), tokens.clone(), "postgres");
    reporter.accepted_at_least(USERS).await;

    let kills = kill_loop(&mut nodes, &bases, &envs, &reporter, &mut jitter).await;
    let (accepted, failed) = reporter.stop().await;
    let tally = check(
        &client,
        &nodes[1].process.base,
        &tokens,
        &accepted,
        &target,
        kills.len() * CONCURRENCY,
        &kills,
    )
    .await;
    println!(
        "postgres kill loop (2 nodes): {} kills, {failed} failed sends retried, {tally}, {:.1} s",
        kills.len(),
        started.elapsed().as_secs_f64()
    );
    drop(nodes);
    let _ = db.drop_now().await;
}

/// Rounds of the monitor test.
const ROUNDS: usize = 6;
/// Monitors (users) in the monitor test.
const MONITORS: usize = 3;
/// Reports per monitor and phase of a round.
const PER_PHASE: usize = 2;

/// `monitor report` of `signature` from `source`, not following the
/// delivery; answers the exit code.
async fn monitor_report(monitor: &Monitor, signature: &str) -> i32 {
    let ran = monitor
        .run(
            &[
                "report",
                "--module",
                "source",
                "--signature",
                signature,
                "--wait",
                "0",
            ],
            &[],
        )
        .await;
    // 0 delivered, 4 still pending (not followed), 3 queued (gateway down);
    // 1 when the gateway went away after taking the report, while its
    // status was read.
    assert!(
        matches!(ran.code, 0 | 1 | 3 | 4),
        "monitor report {signature}: {ran:#?}"
    );
    if ran.code == 1 {
        assert!(
            ran.stderr.contains("cannot reach the gateway")
                || ran.stderr.contains("unexpected answer from the gateway"),
            "monitor report {signature}: {ran:#?}"
        );
    }
    ran.code
}

/// Three users' monitors report while their gateway is killed (some
/// reports are taken, some queued, some taken without the monitor knowing),
/// then while it is down (all queued), for several rounds; the gateway comes
/// back at the same address each time. In the end every monitor's queue is
/// empty, nothing was refused, and the gateway holds each report exactly
/// once, in the order it was made, delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitors_queue_loses_nothing_while_the_gateway_dies_and_comes_back() {
    let started = Instant::now();
    let mut jitter = Jitter::new("monitor queue");
    let data = tempfile::tempdir().unwrap();
    let key = hex_key();
    let envs = envs(&key);
    let args = flags(&["--data-dir", data.path().to_str().unwrap()]);
    let client = Client::new();
    let (source, target) = networks().await;

    let mut gw = start(&as_strs(&args), &envs).await;
    // Restarted at the same address: the monitors' sessions name it.
    let addr = gw.addr().to_owned();
    modules(&client, &gw, &source, &target).await;
    let monitors: Vec<Monitor> = (0..MONITORS).map(|_| Monitor::new()).collect();
    for (u, m) in monitors.iter().enumerate() {
        m.register(&gw.base, &format!("mon{u}")).await;
        for module in ["source", "target"] {
            m.run(
                &["bind", module, &format!("mon{u}@{module}")],
                &[("MONITOR_CREDENTIALS", "{}")],
            )
            .await
            .ok();
        }
    }

    let mut reported: Vec<Vec<String>> = vec![Vec::new(); MONITORS];
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        // The gateway dies while the monitors report (and send what they
        // queued in the round before).
        let racing = futures::future::join_all(monitors.iter().enumerate().map(|(u, m)| {
            let signatures: Vec<String> = (0..PER_PHASE)
                .map(|j| format!("mon{u}-r{round}-racing{j}"))
                .collect();
            async move {
                let mut codes = Vec::new();
                for signature in &signatures {
                    codes.push(monitor_report(m, signature).await);
                }
                (signatures, codes)
            }
        }));
        let pause = jitter.millis(0, 600);
        let kill = async {
            tokio::time::sleep(pause).await;
            let at = Instant::now();
            gw.kill();
            at
        };
        let (done, killed_at) = tokio::join!(racing, kill);
        kills.push(killed_at);
        for (u, (signatures, ran)) in done.into_iter().enumerate() {
            reported[u].extend(signatures);
            for code in ran {
                *codes.entry(code).or_default() += 1;
            }
        }
        // While it is down, reports wait on disk.
        for (u, m) in monitors.iter().enumerate() {
            for j in 0..PER_PHASE {
                let signature = format!("mon{u}-r{round}-down{j}");
                assert_eq!(monitor_report(m, &signature).await, 3, "{signature} queued");
                reported[u].push(signature);
            }
        }
        gw = start_listening(&addr, &as_strs(&args), &envs).await;
    }
    // A last report sends everything still queued first, in order.
    for (u, m) in monitors.iter().enumerate() {
        let signature = format!("mon{u}-last");
        m.run(
            &[
                "report",
                "--module",
                "source",
                "--signature",
                &signature,
                "--wait",
                "90",
            ],
            &[],
        )
        .await
        .ok()
        .says("sent an earlier queued report from source");
        reported[u].push(signature);
    }

    let mut changes = Vec::new();
    for (u, m) in monitors.iter().enumerate() {
        for folder in ["queue", "rejected"] {
            let left = std::fs::read_dir(m.file(folder))
                .map(|d| d.count())
                .unwrap_or(0);
            assert_eq!(left, 0, "mon{u}: {folder}/ is not empty");
        }
        // Exactly the reports made, each once, in the order they were made.
        let token = m.token();
        let listed: Value = client
            .get(gw.url("/v1/changes?limit=100"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listed = listed["changes"].as_array().unwrap();
        let signatures: Vec<&str> = listed
            .iter()
            .rev()
            .map(|c| c["settings"]["signature"].as_str().unwrap())
            .collect();
        assert_eq!(signatures, reported[u], "mon{u}'s changes on the gateway");
        for change in listed {
            let id = change["id"].as_str().unwrap();
            changes.push(delivered(&client, &gw.base, &token, id).await);
        }
    }
    // Every push is in: each change is final.
    let received = pushes(&target);
    let mut superseded = 0;
    for change in &changes {
        let signature = change["settings"]["signature"].as_str().unwrap();
        match change["targets"][0]["status"].as_str().unwrap() {
            "delivered" => assert!(received.contains_key(signature), "{change}"),
            "superseded" => superseded += 1,
            other => panic!("target {other}: {change}"),
        }
    }
    let all: HashSet<&String> = reported.iter().flatten().collect();
    for signature in received.keys() {
        assert!(all.contains(signature), "{signature} was never reported");
    }
    for u in 0..MONITORS {
        let got = pushed_to(&target, &format!("mon{u}@target"));
        assert_eq!(
            got.last(),
            Some(&format!("\"mon{u}-last\"")),
            "mon{u}'s latest value is what the network holds"
        );
    }
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    assert!(duplicates <= ROUNDS * CONCURRENCY, "{received:?}");
    println!(
        "monitor queue: {ROUNDS} kills, {} changes from {MONITORS} monitors ({superseded} \
         superseded by a newer one), exit codes {codes:?}, {} pushes, {duplicates} repeated \
         ({} pushes were being answered at a kill), {:.1} s",
        changes.len(),
        received.values().sum::<usize>(),
        answering_at(&target, &kills),
        started.elapsed().as_secs_f64()
    );
}

/// `GET /readyz`'s status and body, or `None` when the process does not
/// answer.
async fn readiness(client: &Client, gw: &GatewayProcess) -> Option<(StatusCode, String)> {
    let r = client
        .get(gw.url("/readyz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    let status = r.status();
    Some((status, r.text().await.ok()?))
}

/// Users of the outage test.
const OUTAGE_USERS: usize = 8;

/// The database name in a PostgreSQL URL.
fn database_name(url: &str) -> &str {
    let path = url.split('?').next().unwrap();
    &path[path.rfind('/').unwrap() + 1..]
}

/// PostgreSQL refuses connections and the gateway's sessions are ended
/// while the reporter reports: `/readyz` answers 503 `not_ready` (and
/// `/healthz` 200) meanwhile; afterwards the same process, never restarted,
/// is ready again, takes reports and delivers every accepted change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_shows_in_readiness_and_the_gateway_recovers_by_itself() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let started = Instant::now();
    let db = ScratchDatabase::create(&admin_url, "reliability_outage")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} unusable: {e}"));
    let name = database_name(db.url()).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let key = hex_key();
    let envs = envs(&key);
    let args = flags(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        db.url(),
    ]);
    let client = Client::new();
    let (source, target) = networks().await;
    let gw = start(&as_strs(&args), &envs).await;
    modules(&client, &gw, &source, &target).await;
    // Fewer users: no kills here, so fewer values are superseded.
    let tokens = users(&client, &gw, OUTAGE_USERS).await;
    let reporter = Reporter::start(Nodes::new(vec![gw.base.clone()]), tokens.clone(), "outage");
    reporter.accepted_at_least(100).await;

    // The outage: no new connections, and the gateway's own ones ended,
    // a few times over two seconds.
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    admin
        .execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false").as_str())
        .await
        .unwrap();
    let outage = Instant::now();
    let mut terminated = 0;
    for _ in 0..4 {
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        terminated += ended.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(terminated > 0, "the gateway had connections to end");
    let body = eventually("readyz 503 during the outage", WAIT, || async {
        let (status, body) = readiness(&client, &gw).await?;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let healthz = client.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK, "alive during the outage");
    let during = reporter.count();
    reporter.assert_running();

    // Back: the same process reconnects by itself.
    admin
        .execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();
    let outage = outage.elapsed();
    let back = Instant::now();
    eventually("readyz 200 after the outage", WAIT, || async {
        let (status, _) = readiness(&client, &gw).await?;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let ready_after = back.elapsed();
    reporter.accepted_at_least(during + 100).await;
    let (accepted, failed) = reporter.stop().await;
    // Pushes in flight when the connections ended may go out again once.
    let tally = check(
        &client,
        &gw.base,
        &tokens,
        &accepted,
        &target,
        CONCURRENCY,
        &[],
    )
    .await;
    println!(
        "postgres outage: {:.1} s, {terminated} sessions ended, ready again {:.1} s later, \
         {failed} failed sends retried, {tally}, {:.1} s",
        outage.as_secs_f64(),
        ready_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(gw);
    let _ = db.drop_now().await;
}
