//! Plugin call overhead, excluding the network: instantiate the webhook
//! connector from its `InstancePre` and `push` into it, with its HTTP import
//! answered in-process; the same connector logic compiled natively for the
//! ratio; committed memory per instance with 100 calls in flight; and how
//! fast the host stops hostile plugins (an endless loop at the deadline, a
//! 100 MiB answer at the response cap).
//!
//! Run: `cargo bench -p gateway --bench host_call` (builds the plugin first).
//! `BENCH_ONLY=push` measures the calls only, on a pool of 2 instances, so
//! the bench runs under `valgrind --tool=callgrind` (which refuses the
//! address space 256 instances reserve).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use common::{hostile_wasm, percentiles, rss_bytes, webhook_wasm};
use gateway::host::{Grants, HostLimits, HttpRequest, HttpResponse, PluginHost, Settings};
use std::sync::{Arc, Barrier};
use std::time::Instant;

const CALLS: usize = 10_000;

/// `BENCH_CALLS` overrides [`CALLS`] (e.g. many more under a profiler).
fn calls() -> usize {
    std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CALLS)
}
const IN_FLIGHT: usize = 100;

/// A receiver answering 200, echoing a verification's challenge.
fn ok_response(request: &HttpRequest) -> HttpResponse {
    let challenge = serde_json::from_slice::<serde_json::Value>(&request.body)
        .ok()
        .and_then(|v| v["challenge"].as_str().map(str::to_owned));
    let body = match challenge {
        Some(challenge) => serde_json::json!({ "challenge": challenge })
            .to_string()
            .into_bytes(),
        None => b"ok".to_vec(),
    };
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    }
}

fn main() {
    let wasm = webhook_wasm();
    let grants = Grants {
        module_id: "webhook".into(),
        allowed_origins: vec!["http://127.0.0.1:9".into()],
        config_json: r#"{"url":"http://127.0.0.1:9/hook","secret":"bench-secret"}"#.into(),
    };
    let settings = Settings {
        avatar: None,
        signature: Some("Benchmarking the plugin host ✓".into()),
        mood: Some("focused".into()),
    };
    let creds = r#"{"token":"unused"}"#;
    let push_only = std::env::var("BENCH_ONLY").is_ok_and(|only| only == "push");
    let host = PluginHost::new(HostLimits {
        max_instances: if push_only { 2 } else { 256 },
        ..HostLimits::default()
    })
    .expect("host")
    .with_in_process_http(Arc::new(ok_response));
    let plugin = host.load(&wasm, grants.clone()).expect("load");
    let grants = Arc::new(grants);

    // Warm-up, then the measured calls.
    for _ in 0..500 {
        host.push(&plugin, grants.clone(), None, "alice", creds, &settings)
            .expect("push");
    }
    let mut wasm_samples = Vec::with_capacity(calls());
    for _ in 0..calls() {
        let started = Instant::now();
        let outcome = host.push(&plugin, grants.clone(), None, "alice", creds, &settings);
        wasm_samples.push(started.elapsed());
        assert!(outcome.is_ok());
    }
    let (w50, w99, wmean) = percentiles(wasm_samples);

    // Instantiation plus a call that does almost nothing (`verify` only
    // parses the module config): the fixed cost inside the push figure.
    let mut verify_samples = Vec::with_capacity(calls());
    for _ in 0..calls() {
        let started = Instant::now();
        let outcome = host.verify(&plugin, grants.clone(), None, "alice", creds);
        verify_samples.push(started.elapsed());
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    let (v50, v99, vmean) = percentiles(verify_samples);

    // The same connector logic compiled natively.
    let native_settings = plugin_sdk::Settings {
        avatar: None,
        signature: settings.signature.clone(),
        mood: settings.mood.clone(),
    };
    let mut native_samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 500 {
        let started = Instant::now();
        let config: serde_json::Value = serde_json::from_str(&grants.config_json).expect("config");
        let secret = config["secret"].as_str().expect("secret");
        let body = webhook_connector::body("alice", &native_settings);
        let signature = webhook_connector::signature(secret, &body);
        let response = ok_response(&HttpRequest {
            method: "POST".into(),
            url: config["url"].as_str().expect("url").into(),
            headers: vec![("x-signature-256".into(), signature)],
            body,
        });
        assert_eq!(response.status, 200);
        if i >= 500 {
            native_samples.push(started.elapsed());
        }
    }
    let (n50, n99, nmean) = percentiles(native_samples);

    println!(
        "host call overhead, webhook push, HTTP answered in-process, {} calls:",
        calls()
    );
    println!("  wasm   p50 {w50:>10.2?}  p99 {w99:>10.2?}  mean {wmean:>10.2?}");
    println!("  native p50 {n50:>10.2?}  p99 {n99:>10.2?}  mean {nmean:>10.2?}");
    println!("  verify p50 {v50:>10.2?}  p99 {v99:>10.2?}  mean {vmean:>10.2?}  (instantiate + near-empty call)");
    println!(
        "  ratio wasm/native: p50 {:.1}x, mean {:.1}x",
        w50.as_secs_f64() / n50.as_secs_f64(),
        wmean.as_secs_f64() / nmean.as_secs_f64()
    );

    if push_only {
        return;
    }
    // Memory: IN_FLIGHT calls parked inside their HTTP import at once.
    let entered = Arc::new(Barrier::new(IN_FLIGHT + 1));
    let release = Arc::new(Barrier::new(IN_FLIGHT + 1));
    let parked = {
        let (entered, release) = (entered.clone(), release.clone());
        host.clone()
            .with_in_process_http(Arc::new(move |r: &HttpRequest| {
                entered.wait();
                release.wait();
                ok_response(r)
            }))
    };
    let plugin = parked.load(&wasm, (*grants).clone()).expect("load");
    let before = rss_bytes("self");
    let threads: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (host, plugin, grants, settings) = (
                parked.clone(),
                plugin.clone(),
                grants.clone(),
                settings.clone(),
            );
            std::thread::spawn(move || {
                host.push(&plugin, grants, None, "alice", creds, &settings)
                    .expect("push")
            })
        })
        .collect();
    entered.wait();
    let during = rss_bytes("self");
    release.wait();
    for t in threads {
        t.join().expect("thread");
    }
    let per = during.saturating_sub(before) as f64 / IN_FLIGHT as f64;
    println!(
        "committed memory with {IN_FLIGHT} instances in flight: RSS {:.1} MiB -> {:.1} MiB, \
         {:.2} MiB per instance (thread stacks included)",
        before as f64 / 1048576.0,
        during as f64 / 1048576.0,
        per / 1048576.0
    );
    hostile();
}

/// Time from call to typed error for the hostile plugin's endless loop and
/// for an answer far above the response cap, served on loopback.
fn hostile() {
    use std::io::{Read, Write};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut sock in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = sock.read(&mut request);
                let size = 100usize << 20;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                let chunk = vec![b'x'; 64 << 10];
                if sock.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..size / chunk.len() {
                    if sock.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let limits = HostLimits::default();
    let (deadline, cap) = (limits.call_timeout, limits.max_response_bytes);
    let host = runtime.block_on(async { PluginHost::new(limits).expect("host") });
    let grants = Grants {
        module_id: "hostile".into(),
        allowed_origins: vec![origin.clone()],
        config_json: "{}".into(),
    };
    let plugin = host.load(&hostile_wasm(), grants.clone()).expect("load");
    let grants = Arc::new(grants);
    let timed = |login: String| {
        let (host, plugin, grants) = (host.clone(), plugin.clone(), grants.clone());
        runtime.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let result = host.verify(&plugin, grants, None, &login, "{}");
                (started.elapsed(), result)
            })
            .await
            .expect("join")
        })
    };
    let (took, result) = timed("loop".into());
    println!(
        "hostile plugin: endless loop stopped after {took:.2?} (deadline {deadline:?}): {result:?}"
    );
    let (took, result) = timed(format!("fetch:{origin}/huge"));
    println!(
        "hostile plugin: 100 MiB answer cut off after {took:.2?} (cap {} MiB): {}",
        cap >> 20,
        match result {
            Err(e) => e.to_string(),
            Ok(()) => "not cut off".into(),
        }
    );
}
