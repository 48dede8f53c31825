//! Media jobs: thumbnails of 12-megapixel JPEGs (4000 x 3000) per second
//! through the worker processes (`Workers`: a process per job, address
//! space capped, one job per core at once) against the same thumbnail made
//! directly with the same crate on as many threads in one process. The
//! ratio is what isolation costs. `BENCH_JOBS` jobs (default 24).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use gateway::media::codec::DecodeLimits;
use gateway::processing::worker::{WorkerLimits, Workers};
use gateway::processing::{run, Operation};
use serde_json::json;
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn jpeg_12mp() -> Vec<u8> {
    // A photo-like gradient with texture, so the JPEG is not trivially
    // small (about what a phone camera makes).
    let image = image::RgbImage::from_fn(4000, 3000, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 27;
        image::Rgb([
            ((x / 16) % 256) as u8 ^ n as u8,
            ((y / 12) % 256) as u8,
            ((x + y) / 28 % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

fn main() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let input = Arc::new(jpeg_12mp());
    let params = json!({"side": 256});
    println!(
        "media jobs: {jobs} thumbnails (256 px) of a 4000x3000 JPEG of {:.1} MiB, {cores} at once",
        input.len() as f64 / f64::from(1 << 20)
    );

    // Directly, in this process, `cores` threads taking jobs in turn.
    let op = Operation::parse("thumbnail", &params).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let (input, op, next) = (input.clone(), op.clone(), next.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    let out = run(&op, &input, "image/jpeg", &DecodeLimits::default()).unwrap();
                    assert!(!out.data.is_empty());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let direct = jobs as f64 / started.elapsed().as_secs_f64();

    // Through the worker processes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let workers = Arc::new(Workers::new(
        env!("CARGO_BIN_EXE_gateway").into(),
        WorkerLimits::default(),
    ));
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..jobs)
            .map(|_| {
                let (workers, input, params) = (workers.clone(), input.clone(), params.clone());
                tokio::spawn(async move {
                    let out = workers
                        .run("thumbnail", &params, "image/jpeg", input.to_vec())
                        .await
                        .unwrap();
                    assert!(!out.data.is_empty());
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let isolated = jobs as f64 / started.elapsed().as_secs_f64();
    println!(
        "  worker processes {isolated:.2} jobs/s; directly in one process {direct:.2} jobs/s; ratio {:.2}",
        isolated / direct
    );
}
