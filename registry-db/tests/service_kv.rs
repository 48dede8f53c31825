//! The services' key-value store, on SQLite always and on PostgreSQL when
//! `TEST_DATABASE_URL` is set (mandatory under `CI=true`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chrono::Utc;
use common::on_every_backend;
use registry_db::{KvError, KvWrite};

const NO_CAP: i64 = i64::MAX;

fn put(key: &str, value: &str, expect: Option<i64>) -> KvWrite {
    KvWrite {
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
        expect,
    }
}

#[tokio::test]
async fn commits_are_atomic_and_compare_and_swap_holds_under_concurrency() {
    on_every_backend(async |reg| {
        reg.create_user("u1", "alice", "h", Utc::now())
            .await
            .unwrap();
        reg.create_user("u2", "bob", "h", Utc::now()).await.unwrap();
        assert_eq!(
            reg.kv_commit(
                "handoff",
                "u1",
                &[put("a", "1", Some(0)), put("b", "1", None)],
                NO_CAP,
            )
            .await
            .unwrap(),
            [1, 1]
        );
        // The second write's expectation fails: the first is not applied.
        match reg
            .kv_commit(
                "handoff",
                "u1",
                &[put("a", "2", Some(1)), put("b", "2", Some(0))],
                NO_CAP,
            )
            .await
        {
            Err(KvError::Conflict(key)) => assert_eq!(key, "b"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let a = reg.kv_get("handoff", "u1", "a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.version), (b"1".as_slice(), 1));
        // Scoped: another user and another service see nothing.
        assert!(reg.kv_get("handoff", "u2", "a").await.unwrap().is_none());
        assert!(reg.kv_get("files", "u1", "a").await.unwrap().is_none());

        // 16 writers each add one to a counter with compare-and-swap retries.
        reg.kv_commit("handoff", "u1", &[put("n", "0", Some(0))], NO_CAP)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let reg = reg.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let e = reg.kv_get("handoff", "u1", "n").await.unwrap().unwrap();
                    let n: i64 = String::from_utf8(e.value).unwrap().parse().unwrap();
                    let next = (n + 1).to_string();
                    match reg
                        .kv_commit("handoff", "u1", &[put("n", &next, Some(e.version))], NO_CAP)
                        .await
                    {
                        Ok(_) => return,
                        Err(KvError::Conflict(_)) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = reg.kv_get("handoff", "u1", "n").await.unwrap().unwrap();
        assert_eq!(n.value, b"16");
        assert_eq!(n.version, 17);

        // Listing by prefix, in key order, with paging and deletes.
        reg.kv_commit(
            "handoff",
            "u1",
            &[
                put("s/2", "x", None),
                put("s/1", "x", None),
                put("s%", "x", None),
            ],
            NO_CAP,
        )
        .await
        .unwrap();
        let keys = |entries: Vec<registry_db::KvEntry>| {
            entries.into_iter().map(|e| e.key).collect::<Vec<_>>()
        };
        assert_eq!(
            keys(reg.kv_list("handoff", "u1", "s/", "", 10).await.unwrap()),
            ["s/1", "s/2"]
        );
        assert_eq!(
            keys(reg.kv_list("handoff", "u1", "s/", "s/1", 10).await.unwrap()),
            ["s/2"]
        );
        reg.kv_commit(
            "handoff",
            "u1",
            &[KvWrite {
                key: "s/1".into(),
                value: None,
                expect: Some(1),
            }],
            NO_CAP,
        )
        .await
        .unwrap();
        assert_eq!(
            keys(reg.kv_list("handoff", "u1", "s/", "", 10).await.unwrap()),
            ["s/2"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_commit_past_the_key_cap_writes_nothing_and_updates_still_pass() {
    on_every_backend(async |reg| {
        reg.create_user("u1", "alice", "h", Utc::now())
            .await
            .unwrap();
        reg.kv_commit(
            "files",
            "u1",
            &[put("a", "1", None), put("b", "1", None)],
            3,
        )
        .await
        .unwrap();
        // Two new keys would make four: refused whole.
        match reg
            .kv_commit(
                "files",
                "u1",
                &[put("c", "1", None), put("d", "1", None)],
                3,
            )
            .await
        {
            Err(KvError::Full(3)) => {}
            other => panic!("expected the cap, got {other:?}"),
        }
        assert!(reg.kv_get("files", "u1", "c").await.unwrap().is_none());
        // At the cap, changing and replacing keys still works.
        reg.kv_commit("files", "u1", &[put("c", "1", None)], 3)
            .await
            .unwrap();
        reg.kv_commit("files", "u1", &[put("a", "2", Some(1))], 3)
            .await
            .unwrap();
        let delete_b = KvWrite {
            key: "b".into(),
            value: None,
            expect: None,
        };
        reg.kv_commit("files", "u1", &[delete_b, put("e", "1", None)], 3)
            .await
            .unwrap();
        // The cap is per service: another service of the same user is empty.
        reg.kv_commit("handoff", "u1", &[put("a", "1", None)], 1)
            .await
            .unwrap();
        // Found by key across users, in its service only.
        reg.create_user("u2", "bob", "h", Utc::now()).await.unwrap();
        reg.kv_commit("files", "u2", &[put("share/x", "bob's", None)], 3)
            .await
            .unwrap();
        let (user, entry) = reg.kv_find("files", "share/x").await.unwrap().unwrap();
        assert_eq!(
            (user.as_str(), entry.value.as_slice()),
            ("u2", b"bob's".as_slice())
        );
        assert!(reg.kv_find("handoff", "share/x").await.unwrap().is_none());
        assert!(reg.kv_find("files", "share/y").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn due_timers_run_at_least_once_under_a_lease() {
    on_every_backend(async |reg| {
        let t0 = Utc::now();
        let secs = chrono::Duration::seconds;
        reg.create_user("u1", "alice", "h", t0).await.unwrap();
        reg.schedule_timer("handoff", "u1", "a", t0).await.unwrap();
        reg.schedule_timer("handoff", "u1", "later", t0 + secs(60))
            .await
            .unwrap();
        let taken = reg.take_due_timers(t0, t0 + secs(30), 10).await.unwrap();
        assert_eq!(
            taken.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        // Held: nobody takes it again within the lease...
        assert!(reg
            .take_due_timers(t0 + secs(29), t0 + secs(59), 10)
            .await
            .unwrap()
            .is_empty());
        // ...but a process that died holding it leaves it due after.
        let again = reg
            .take_due_timers(t0 + secs(30), t0 + secs(60), 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        // A plugin that set the timer again while it ran keeps it.
        reg.schedule_timer("handoff", "u1", "a", t0 + secs(40))
            .await
            .unwrap();
        reg.finish_timer(&again[0]).await.unwrap();
        let due = reg
            .take_due_timers(t0 + secs(40), t0 + secs(70), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "the new due time survives the old run");
        reg.finish_timer(&due[0]).await.unwrap();
        let rest = reg
            .take_due_timers(t0 + secs(100), t0 + secs(130), 10)
            .await
            .unwrap();
        assert_eq!(
            rest.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["later"],
            "a finished timer does not come back"
        );
    })
    .await;
}
