//! The `monitor` binary driven end to end against a gateway started through
//! `run()`, with mock networks (webhook connector) as the other end: login
//! and the private token file, bindings kept locally, `report` with its
//! per-network lines and exit codes, the on-disk queue while the gateway is
//! down and a running `watch` sending it once the gateway is back, the
//! profile file of `watch`, `scan` over a fake home folder and `watch`
//! asking once about a client installed while it runs, Pidgin's own files
//! read by `watch`, `service install` writing a systemd user unit, and the
//! clear errors.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use e2e_tests::mock::{eventually, MockNetwork, Reply};
use e2e_tests::monitor::{pidgin_files, Monitor};
use e2e_tests::{detect_hints, webhook, TestGateway, TINY_PNG};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const NO_CREDENTIALS: (&str, &str) = ("MONITOR_CREDENTIALS", "{}");

async fn gateway() -> TestGateway {
    TestGateway::start_with(|c| {
        c.delivery.backoff_base = Duration::from_millis(100);
        c.delivery.poll_interval = Duration::from_millis(50);
    })
    .await
}

/// Uploads a webhook module `id` posting to a new mock network, with `detect` hints.
async fn network(gw: &TestGateway, id: &str, detect: Value) -> MockNetwork {
    let mock = MockNetwork::start().await;
    let mut manifest = mock.manifest(id, 100, 100);
    manifest["detect"] = detect;
    let r = gw.upload_module(&manifest, &webhook()).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    mock
}

/// The settings of every push a mock network accepted, oldest first.
fn received(mock: &MockNetwork) -> Vec<Value> {
    mock.accepted()
        .into_iter()
        .map(|h| h.body["settings"].clone())
        .collect()
}

async fn wait_for(mock: &MockNetwork, what: &str, check: impl Fn(&[Value]) -> bool) {
    eventually(what, Duration::from_secs(60), || async {
        check(&received(mock)).then_some(())
    })
    .await
}

#[tokio::test]
async fn login_keeps_a_private_token_and_bindings_are_kept_locally() {
    let gw = gateway().await;
    network(&gw, "alpha", json!({})).await;
    network(&gw, "beta", json!({})).await;
    let m = Monitor::new();
    m.register(&gw.base, "alice").await.says("registered alice");

    let session = std::fs::read_to_string(m.file("session.json")).unwrap();
    assert!(session.contains("\"token\""), "{session}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&m.file("session.json")),
            0o600,
            "token file readable by others"
        );
    }

    let secret = ("MONITOR_CREDENTIALS", r#"{"token": "s3cr3t-alpha"}"#);
    m.run(&["bind", "alpha", "alice-a"], &[secret])
        .await
        .ok()
        .says("bound alice-a on alpha");
    m.run(&["bind", "beta", "alice-b"], &[NO_CREDENTIALS])
        .await
        .ok();
    let listed = m.run(&["bindings"], &[]).await.ok();
    assert!(
        listed.stdout.contains("alice-a") && listed.stdout.contains("alice-b"),
        "{listed:?}"
    );
    let local = std::fs::read_to_string(m.file("bindings.json")).unwrap();
    assert!(
        local.contains("alice-a") && local.contains("alice-b"),
        "{local}"
    );
    assert!(
        !local.contains("s3cr3t"),
        "credentials must not be kept locally: {local}"
    );

    // An unsupported module names the supported ones; a repeat is a conflict.
    m.run(&["bind", "icq", "12345"], &[NO_CREDENTIALS])
        .await
        .code(1)
        .says("module \"icq\" is not supported by this gateway; supported modules: alpha, beta");
    m.run(&["bind", "alpha", "alice-a"], &[NO_CREDENTIALS])
        .await
        .code(1)
        .says("already_bound");
    m.run(
        &["bind", "alpha", "alice-x"],
        &[("MONITOR_CREDENTIALS", "not json")],
    )
    .await
    .code(1)
    .says("credentials must be a JSON object");

    m.run(&["unbind", "beta"], &[])
        .await
        .ok()
        .says("unbound alice-b on beta");
    let local = std::fs::read_to_string(m.file("bindings.json")).unwrap();
    assert!(!local.contains("alice-b"), "{local}");
    let token = m.token();
    let on_server = gw.get_json("/v1/bindings", Some(&token)).await;
    assert_eq!(
        on_server["bindings"].as_array().unwrap().len(),
        1,
        "{on_server}"
    );

    m.run(&["logout"], &[]).await.ok();
    assert!(!m.file("session.json").exists());
    assert_eq!(
        gw.get("/v1/bindings", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    m.run(&["bindings"], &[])
        .await
        .code(1)
        .says("not logged in");
    m.run(
        &["--server", &gw.base, "login", "--username", "alice"],
        &[("MONITOR_PASSWORD", "wrong password")],
    )
    .await
    .code(1)
    .says("invalid_credentials");
    // The password can also come on stdin (no terminal).
    m.run_with(
        &["--server", &gw.base, "login", "-u", "alice"],
        &[],
        "correct horse battery\n",
    )
    .await
    .ok()
    .says("logged in as alice");
}

#[tokio::test]
async fn report_shows_each_network_and_its_exit_code_says_whether_all_arrived() {
    let gw = gateway().await;
    network(&gw, "alpha", json!({})).await;
    let beta = network(&gw, "beta", json!({})).await;
    let gamma = network(&gw, "gamma", json!({})).await;
    gamma.otherwise(Reply::Status(400));
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    for (module, account) in [
        ("alpha", "alice-a"),
        ("beta", "alice-b"),
        ("gamma", "alice-g"),
    ] {
        m.run(&["bind", module, account], &[NO_CREDENTIALS])
            .await
            .ok();
    }

    let ran = m
        .run(
            &["report", "--module", "alpha", "--signature", "Hello"],
            &[],
        )
        .await
        .code(2);
    assert!(ran.stdout.contains("2 target network(s)"), "{ran:?}");
    let line = |module: &str| {
        ran.stdout
            .lines()
            .find(|l| l.contains(&format!("{module} alice-")))
            .unwrap_or_else(|| panic!("no line for {module}: {ran:?}"))
            .to_owned()
    };
    assert!(
        line("beta").starts_with("ok") && line("beta").contains("delivered: signature"),
        "{ran:?}"
    );
    assert!(
        line("gamma").starts_with("FAILED") && line("gamma").contains("HTTP 400"),
        "{ran:?}"
    );
    assert_eq!(received(&beta), vec![json!({"signature": "Hello"})]);

    m.run(&["unbind", "gamma"], &[]).await.ok();
    m.run(
        &[
            "report",
            "--module",
            "alpha",
            "--signature",
            "Hi",
            "--mood",
            "calm",
        ],
        &[],
    )
    .await
    .ok()
    .says("delivered: signature, mood");
    // The gateway applied "Hi" to beta: the same report from beta is an echo.
    m.run(&["report", "--module", "beta", "--signature", "Hi"], &[])
        .await
        .ok()
        .says("an echo");
    assert_eq!(received(&beta).len(), 2);

    // An avatar is checked locally, uploaded, and pushed.
    let not_image = m.home.path().join("avatar.png");
    std::fs::write(&not_image, b"just text").unwrap();
    m.run(
        &[
            "report",
            "--module",
            "alpha",
            "--avatar",
            not_image.to_str().unwrap(),
        ],
        &[],
    )
    .await
    .code(1)
    .says("not an image");
    let png = m.home.path().join("me.png");
    std::fs::write(&png, TINY_PNG).unwrap();
    m.run(
        &[
            "report",
            "--module",
            "alpha",
            "--avatar",
            png.to_str().unwrap(),
        ],
        &[],
    )
    .await
    .ok()
    .says("delivered: avatar");
    assert!(
        received(&beta)[2]["avatar"]["data"].is_string(),
        "{:?}",
        received(&beta)
    );

    // Clear errors, and nothing is left queued by them.
    m.run(&["report", "--module", "alpha"], &[])
        .await
        .code(1)
        .says("nothing to report");
    m.run(&["report", "--module", "icq", "--signature", "x"], &[])
        .await
        .code(1)
        .says("supported modules: alpha, beta, gamma");
    m.run(&["report", "--module", "gamma", "--signature", "x"], &[])
        .await
        .code(1)
        .says("you have no gamma account bound");
    let status = m.run(&["status"], &[]).await.ok();
    assert!(!status.stdout.contains("waiting"), "{status:?}");
    assert!(
        status.stdout.contains("partial") && status.stdout.contains("delivered to 1/2"),
        "{status:?}"
    );
    assert_eq!(status.stdout.matches("from alpha").count(), 3, "{status:?}");
}

/// Alice's monitor with accounts on two mock networks, `alpha` and `beta`;
/// returns the gateway, beta's network and the monitor.
async fn alice_on_alpha_and_beta() -> (TestGateway, MockNetwork, Monitor) {
    let gw = gateway().await;
    network(&gw, "alpha", json!({})).await;
    let beta = network(&gw, "beta", json!({})).await;
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    for (module, account) in [("alpha", "alice-a"), ("beta", "alice-b")] {
        m.run(&["bind", module, account], &[NO_CREDENTIALS])
            .await
            .ok();
    }
    (gw, beta, m)
}

#[tokio::test]
async fn reports_made_while_the_gateway_is_down_wait_on_disk_and_go_out_in_order() {
    let (gw, beta, m) = alice_on_alpha_and_beta().await;

    let base = gw.base.clone();
    let stopped = gw.stop_keeping_data().await;
    for text in ["one", "two"] {
        m.run(&["report", "--module", "alpha", "--signature", text], &[])
            .await
            .code(3)
            .says(&format!("cannot reach the gateway at {base}"))
            .says("kept on disk");
    }
    m.run(&["status"], &[])
        .await
        .code(1)
        .says("2 report(s) waiting");
    let gw = TestGateway::start_again(stopped).await;

    m.run(
        &["report", "--module", "alpha", "--signature", "three"],
        &[],
    )
    .await
    .ok()
    .says("sent an earlier queued report from alpha");
    let token = m.token();
    let listed = gw.get_json("/v1/changes?limit=10", Some(&token)).await;
    let signatures: Vec<&str> = listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|c| c["settings"]["signature"].as_str().unwrap())
        .collect();
    assert_eq!(signatures, ["one", "two", "three"], "{listed}");
    wait_for(&beta, "beta to hold three", |got| {
        got.last() == Some(&json!({"signature": "three"}))
    })
    .await;
    assert!(
        std::fs::read_dir(m.file("queue")).unwrap().next().is_none(),
        "queue not empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_watch_sends_a_waiting_report_once_the_gateway_is_back() {
    let (gw, beta, m) = alice_on_alpha_and_beta().await;
    // Rounds an hour apart: only the queue's retries can send it.
    let watch = m.talk(&["watch", "--interval", "3600", "--no-detect"], &[]);
    watch.wait_for("watching", 1, Duration::from_secs(30)).await;
    let stopped = gw.stop_keeping_data().await;
    m.run(
        &["report", "--module", "alpha", "--signature", "while down"],
        &[],
    )
    .await
    .code(3)
    .says("kept on disk");
    let gw = TestGateway::start_again(stopped).await;
    // No further command: the watch sends it.
    watch
        .wait_for("reported signature", 1, Duration::from_secs(30))
        .await;
    wait_for(&beta, "beta to hold the waiting report", |got| {
        got.last() == Some(&json!({"signature": "while down"}))
    })
    .await;
    let listed = gw.get_json("/v1/changes", Some(&m.token())).await;
    assert_eq!(
        listed["changes"][0]["settings"]["signature"], "while down",
        "{listed}"
    );
    assert!(
        std::fs::read_dir(m.file("queue")).unwrap().next().is_none(),
        "queue not empty"
    );
    watch.stop().await;
}

#[tokio::test]
async fn service_install_writes_a_user_unit_running_watch_and_enables_it() {
    let (_gw, _beta, m) = alice_on_alpha_and_beta().await;
    // A systemctl that notes how it was called.
    let bin = m.home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = m.home.path().join("systemctl.log");
    let fake = bin.join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let env = [("PATH", path.as_str())];

    m.run(&["service", "install", "--interval", "5"], &env)
        .await
        .ok()
        .says("enabled and started presence-monitor.service")
        .says("monitor service uninstall");
    let unit_file = m
        .home
        .path()
        .join(".config/systemd/user/presence-monitor.service");
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    let config = std::fs::canonicalize(m.config.path()).unwrap();
    assert!(
        unit.contains(&format!(
            "--config-dir \"{}\" watch --interval 5",
            config.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("WantedBy=default.target"), "{unit}");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains("--user daemon-reload")
            && log.contains("--user enable --now presence-monitor.service"),
        "{log}"
    );
    m.run(&["service", "uninstall"], &env)
        .await
        .ok()
        .says("stopped and removed");
    assert!(!unit_file.exists());
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains("--user disable --now presence-monitor.service"),
        "{log}"
    );
}

#[tokio::test]
async fn watch_reports_what_the_user_set_in_pidgin_once() {
    let gw = gateway().await;
    let xmpp = network(&gw, "xmpp", detect_hints("xmpp")).await;
    let beta = network(&gw, "beta", json!({})).await;
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    for (module, account) in [("xmpp", "alice@localhost"), ("beta", "alice-b")] {
        m.run(&["bind", module, account], &[NO_CREDENTIALS])
            .await
            .ok();
    }
    let home = m.home.path();
    let icon = home.join("me.png");
    std::fs::write(&icon, TINY_PNG).unwrap();
    let watch = ["watch", "--once", "--no-detect"];

    // The first read is the baseline: nothing reported.
    pidgin_files(home, 1, &[(1, "at home")], icon.to_str().unwrap());
    let first = m.run(&watch, &[]).await.ok();
    assert!(!first.output().contains("noticed"), "{first:?}");

    // A new saved status chosen and a new buddy icon: reported once, as
    // xmpp's change, and beta gets both.
    let new_icon = home.join("new.png");
    std::fs::write(&new_icon, image_png(32)).unwrap();
    pidgin_files(
        home,
        2,
        &[(1, "at home"), (2, "in a meeting")],
        new_icon.to_str().unwrap(),
    );
    m.run(&watch, &[])
        .await
        .ok()
        .says("noticed on xmpp alice@localhost: a new avatar, signature \"in a meeting\"");
    // Set in Pidgin while offline: its own network gets it too.
    for (network, what) in [(&beta, "beta"), (&xmpp, "xmpp itself")] {
        wait_for(
            network,
            &format!("{what} to get Pidgin's status and icon"),
            |got| {
                got.iter()
                    .any(|s| s["signature"] == "in a meeting" && s.get("avatar").is_some())
            },
        )
        .await;
    }
    let again = m.run(&watch, &[]).await.ok();
    assert!(!again.output().contains("noticed"), "{again:?}");

    // A damaged prefs file: said once while watching, no crash.
    std::fs::write(
        home.join(".purple/prefs.xml"),
        "<pref version='1' name='/'><pref",
    )
    .unwrap();
    let watching = m.talk(&["watch", "--interval", "1", "--no-detect"], &[]);
    watching
        .wait_for(
            "not XML this monitor understands",
            1,
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let printed = watching.stop().await;
    assert_eq!(
        printed.matches("not XML this monitor understands").count(),
        1,
        "{printed}"
    );
}

/// A PNG of `side` x `side` pixels.
fn image_png(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        side,
        side,
        image::Rgb([9, 80, 200]),
    ))
    .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
    .unwrap();
    out
}

#[tokio::test]
async fn watch_reports_profile_file_edits_of_bound_networks_only() {
    let (gw, beta, m) = alice_on_alpha_and_beta().await;
    let profile = m.home.path().join("profile.toml");
    let watch = ["watch", "--once", "--profile", profile.to_str().unwrap()];

    std::fs::write(
        &profile,
        "[alpha]\nsignature = \"from the file\"\n[zeta]\nsignature = \"x\"\n",
    )
    .unwrap();
    m.run(&watch, &[])
        .await
        .ok()
        .says("[zeta] is not a bound network")
        .says("cannot read settings back");
    wait_for(&beta, "the file's signature on beta", |got| {
        got == [json!({"signature": "from the file"})]
    })
    .await;

    std::fs::write(
        &profile,
        "[alpha]\nsignature = \"from the file\"\nmood = \"sunny\"\n",
    )
    .unwrap();
    m.run(&watch, &[]).await.ok();
    wait_for(&beta, "only the mood, which changed", |got| {
        got.len() == 2 && got[1] == json!({"mood": "sunny"})
    })
    .await;

    // Nothing changed: nothing reported.
    m.run(&watch, &[]).await.ok();
    let token = m.token();
    let listed = gw.get_json("/v1/changes", Some(&token)).await;
    assert_eq!(listed["changes"].as_array().unwrap().len(), 2, "{listed}");

    std::fs::write(&profile, "[alpha]\nsignatur = \"typo\"\n").unwrap();
    m.run(&watch, &[]).await.ok().says("not a profile file");
}

#[tokio::test]
async fn scan_offers_clients_found_on_the_device_and_remembers_a_decline() {
    let gw = gateway().await;
    network(&gw, "matrix", detect_hints("matrix")).await;
    network(&gw, "xmpp", detect_hints("xmpp")).await;
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    let scan = ["scan", "--only-home"];

    m.run(&scan, &[])
        .await
        .ok()
        .says("no IM client of a supported network found");

    // Element's config folder: offered, declined, not asked again.
    std::fs::create_dir_all(m.home.path().join(".config/Element")).unwrap();
    m.run_with(&scan, &[], "n\n")
        .await
        .ok()
        .says("Register Element for sync? [y/N]")
        .says("not registered");
    let again = m.run(&scan, &[]).await.ok().says("you declined before");
    assert!(!again.output().contains("[y/N]"), "asked again: {again:?}");

    // --ask-again: yes, then the account and its credentials.
    m.run_with(
        &["scan", "--only-home", "--ask-again"],
        &[NO_CREDENTIALS],
        "y\n@alice:localhost\n",
    )
    .await
    .ok()
    .says("bound @alice:localhost on matrix");

    // Pidgin's desktop entry, registered without a question for scripts.
    let apps = m.home.path().join(".local/share/applications");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(
        apps.join("pidgin.desktop"),
        "[Desktop Entry]\nName=Pidgin\n",
    )
    .unwrap();
    let ran = m
        .run(
            &[
                "scan",
                "--only-home",
                "--yes",
                "--account",
                "xmpp=alice@localhost",
            ],
            &[NO_CREDENTIALS],
        )
        .await
        .ok()
        .says("bound alice@localhost on xmpp")
        .says("Element (matrix network): already bound as @alice:localhost");
    assert!(!ran.output().contains("[y/N]"), "{ran:?}");
    let local = std::fs::read_to_string(m.file("bindings.json")).unwrap();
    assert!(
        local.contains("alice@localhost") && local.contains("@alice:localhost"),
        "{local}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_asks_once_about_a_client_installed_while_it_runs() {
    let gw = gateway().await;
    network(&gw, "xmpp", detect_hints("xmpp")).await;
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    let question = "Register Gajim for sync? [y/N]";
    // Rounds an hour apart: only the folder's event can bring the question.
    let mut watch = m.talk(&["watch", "--only-home", "--interval", "3600"], &[]);
    watch.wait_for("watching", 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.printed().contains("[y/N]"), "{}", watch.printed());

    // Gajim is installed: asked at once, declined.
    std::fs::create_dir_all(m.home.path().join(".config/gajim")).unwrap();
    watch.wait_for(question, 1, Duration::from_secs(30)).await;
    watch.answer("n").await;
    watch
        .wait_for(
            "not registered; it will not be offered again",
            1,
            Duration::from_secs(30),
        )
        .await;
    // More changes in its folder ask nothing more in this run.
    std::fs::write(m.home.path().join(".config/gajim/settings.sqlite"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let printed = watch.stop().await;
    assert_eq!(printed.matches(question).count(), 1, "{printed}");

    // Remembered: the next watch does not ask; --ask-again does.
    let again = m.run(&["watch", "--only-home", "--once"], &[]).await.ok();
    assert!(!again.output().contains("[y/N]"), "{again:?}");
    m.run_with(
        &["watch", "--only-home", "--once", "--ask-again"],
        &[],
        "n\n",
    )
    .await
    .ok()
    .says(question);

    // Element is installed, but Matrix is not a module yet: once the
    // operator uploads it, the running watch asks at its next round.
    std::fs::create_dir_all(m.home.path().join(".config/Element")).unwrap();
    let mut watch = m.talk(&["watch", "--only-home", "--interval", "1"], &[]);
    watch.wait_for("watching", 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !watch.printed().contains("Register Element"),
        "{}",
        watch.printed()
    );
    network(&gw, "matrix", detect_hints("matrix")).await;
    watch
        .wait_for(
            "Register Element for sync? [y/N]",
            1,
            Duration::from_secs(30),
        )
        .await;
    watch.answer("n").await;
    watch.stop().await;
}

#[tokio::test]
async fn an_expired_session_asks_to_log_in_again_and_an_unreachable_gateway_says_so() {
    let clock = gateway::clock::ManualClock::new();
    let gw = TestGateway::start_with(|c| {
        c.session_ttl = Duration::from_secs(3600);
        c.clock = clock.shared();
    })
    .await;
    network(&gw, "alpha", json!({})).await;
    let m = Monitor::new();
    m.register(&gw.base, "alice").await;
    clock.advance(Duration::from_secs(3601));
    m.run(&["bindings"], &[])
        .await
        .code(1)
        .says("has expired or was revoked: run `monitor login` again");
    m.run(
        &["bindings"],
        &[("MONITOR_PASSWORD", "correct horse battery")],
    )
    .await
    .ok()
    .says("logging in again")
    .says("no accounts bound yet");

    let closed = "http://127.0.0.1:9";
    Monitor::new()
        .run(
            &["--server", closed, "login", "-u", "alice"],
            &[("MONITOR_PASSWORD", "x")],
        )
        .await
        .code(1)
        .says("cannot reach the gateway at http://127.0.0.1:9");
    m.run(&["--server", closed, "bindings"], &[])
        .await
        .code(1)
        .says(&format!("logged in at {}, not {closed}", gw.base));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_asks_for_the_credentials_the_module_lists() {
    let gw = gateway().await;
    let hostile = json!({"id": "hostile", "name": "Hostile"});
    let r = gw.upload_module(&hostile, &e2e_tests::hostile()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let m = Monitor::new();
    m.register(&gw.base, "alice").await.says("registered alice");
    let bind = ["bind", "hostile", "fine"];

    // Each listed field by its label, with its help; optional ones say so.
    // The answers go out under the listed names: the connector refuses the
    // password "wrong", the gateway a profile URL that is not one.
    m.run_with(&bind, &[], "wrong\n\n")
        .await
        .code(1)
        .says("Password: any, except \"wrong\"")
        .says("Password of fine on Hostile (optional, Enter skips it):")
        .says("invalid_credentials");
    m.run_with(&bind, &[], "\nnot a url\n")
        .await
        .code(1)
        .says("Profile URL of fine on Hostile (optional, Enter skips it):")
        .says("credentials.fetch: must be an absolute http:// or https:// URL");
    m.run_with(&bind, &[], "right\nhttp://127.0.0.1:9/profile\n")
        .await
        .ok()
        .says("bound fine on hostile");
}
