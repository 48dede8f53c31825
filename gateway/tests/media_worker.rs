//! Media jobs in worker processes of the real binary (`gateway
//! media-worker`): a thumbnail comes back with its size; a decompression
//! bomb, a damaged file, a job past its deadline and one past its memory
//! cap fail with a code, a reason and help text, and the pool goes on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use gateway::processing::worker::{WorkerLimits, Workers};
use serde_json::{json, Value};
use std::io::Cursor;
use std::time::Duration;

fn workers(limits: WorkerLimits) -> Workers {
    Workers::new(env!("CARGO_BIN_EXE_gateway").into(), limits)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    png_of(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
    })
}

fn png_of(width: u32, height: u32, pixel: impl Fn(u32, u32) -> image::Rgb<u8>) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, pixel);
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[tokio::test]
async fn jobs_run_in_workers_and_fail_with_reasons_and_help() {
    let pool = workers(WorkerLimits::default());
    let out = pool
        .run(
            "thumbnail",
            &json!({"side": 100}),
            "image/png",
            png(400, 200),
        )
        .await
        .unwrap();
    assert_eq!(out.content_type, "image/png");
    let thumb = image::load_from_memory(&out.data).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (100, 50));

    // A damaged file: the worker says what was wrong and what to try.
    let mut broken = png(64, 64);
    broken.truncate(broken.len() / 2);
    let e = pool
        .run("thumbnail", &Value::Null, "image/png", broken)
        .await
        .unwrap_err();
    assert_eq!(e.code, "corrupt_input", "{e}");
    assert!(!e.help.is_empty());
    // Bad params are refused before a worker starts.
    let e = pool
        .run(
            "resize",
            &json!({"width": 0, "height": 1}),
            "image/png",
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "invalid_params", "{e}");
}

#[tokio::test]
async fn a_worker_past_its_deadline_or_memory_is_stopped_and_says_so() {
    let slow = workers(WorkerLimits {
        deadline: Duration::from_millis(1),
        ..WorkerLimits::default()
    });
    let e = slow
        .run("thumbnail", &Value::Null, "image/png", png(2000, 2000))
        .await
        .unwrap_err();
    assert_eq!(e.code, "deadline_exceeded", "{e}");

    // One colour: 4000 x 4000 in a few kilobytes that decode to 48 MB,
    // past a 40 MiB cap (the decoder's own limit would allow it).
    let small = workers(WorkerLimits {
        memory_bytes: 40 << 20,
        ..WorkerLimits::default()
    });
    let input = png_of(4000, 4000, |_, _| image::Rgb([200, 30, 30]));
    assert!(input.len() < 1 << 20);
    let e = small
        .run("thumbnail", &Value::Null, "image/png", input)
        .await
        .unwrap_err();
    assert_eq!(e.code, "memory_exceeded", "{e}");
    assert!(e.help.contains("smaller"), "{e}");
    // The pool still works for a job that fits.
    let ok = small
        .run("thumbnail", &json!({"side": 16}), "image/png", png(64, 64))
        .await
        .unwrap();
    assert_eq!(ok.content_type, "image/png");
}
