//! Media jobs run in worker processes: the gateway's own binary started as
//! `gateway media-worker`, which caps its address space before it reads a
//! byte of input, decodes within the codec's limits, and is killed when it
//! runs past the deadline. A bounded number run at once. A job that takes
//! down its worker (a decoder bug, memory exhausted) takes down nothing
//! else.

use super::{JobError, Operation, Output};
use crate::media::codec::DecodeLimits;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The exit code of a worker that ran the job and reports why it failed
/// (its stderr is the [`JobError`] as JSON).
const EXIT_JOB_FAILED: u8 = 3;

/// What bounds each worker and the pool.
#[derive(Debug, Clone)]
pub struct WorkerLimits {
    /// Wall time per job, including the worker's start.
    pub deadline: Duration,
    /// The worker's address-space cap, in bytes.
    pub memory_bytes: u64,
    /// Decoding limits inside the worker.
    pub decode: DecodeLimits,
    /// Jobs running at once.
    pub concurrency: usize,
}

impl Default for WorkerLimits {
    /// 60 s, 1 GiB, the codec's decode limits, one job per core.
    fn default() -> Self {
        WorkerLimits {
            deadline: Duration::from_secs(60),
            memory_bytes: 1 << 30,
            decode: DecodeLimits::default(),
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// The pool of worker processes.
#[derive(Debug)]
pub struct Workers {
    program: PathBuf,
    limits: WorkerLimits,
    permits: tokio::sync::Semaphore,
}

impl Workers {
    /// Workers started from `program` (the gateway binary: it must answer
    /// `media-worker`).
    pub fn new(program: PathBuf, limits: WorkerLimits) -> Self {
        let permits = tokio::sync::Semaphore::new(limits.concurrency.max(1));
        Workers {
            program,
            limits,
            permits,
        }
    }

    /// Runs job `kind` with `params` on `input` (of `content_type`) in a
    /// worker of its own, waiting for a free one first.
    pub async fn run(
        &self,
        kind: &str,
        params: &Value,
        content_type: &str,
        input: Vec<u8>,
    ) -> Result<Output, JobError> {
        // Refused before any process starts.
        Operation::parse(kind, params)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| worker_failed("the worker pool is closed"))?;
        let limits = &self.limits;
        let mut child = tokio::process::Command::new(&self.program)
            .arg("media-worker")
            .args(["--kind", kind, "--type", content_type])
            .args(["--params", &params.to_string()])
            .args(["--memory-bytes", &limits.memory_bytes.to_string()])
            .args(["--max-side", &limits.decode.max_pixels_side.to_string()])
            .args(["--max-alloc", &limits.decode.max_alloc_bytes.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| worker_failed(&format!("cannot start a worker: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| worker_failed("the worker has no stdin"))?;
        let feed = tokio::spawn(async move {
            // A worker that dies early closes the pipe: its exit says why.
            let _ = stdin.write_all(&input).await;
        });
        let done = tokio::time::timeout(limits.deadline, child.wait_with_output()).await;
        feed.abort();
        let output = match done {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(worker_failed(&format!("the worker broke: {e}"))),
            // Dropping the wait dropped the child: it is killed.
            Err(_) => {
                return Err(JobError::new(
                    "deadline_exceeded",
                    format!(
                        "the job ran longer than {} s and was stopped",
                        limits.deadline.as_secs_f64()
                    ),
                    "send a smaller input or ask for a smaller output",
                ))
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {
                let content_type = serde_json::from_str::<Value>(stderr.trim())
                    .ok()
                    .and_then(|v| v["content_type"].as_str().map(str::to_owned))
                    .ok_or_else(|| worker_failed("the worker did not say what it made"))?;
                Ok(Output {
                    content_type,
                    data: output.stdout,
                })
            }
            Some(code) if code == i32::from(EXIT_JOB_FAILED) => {
                Err(serde_json::from_str(stderr.trim())
                    .unwrap_or_else(|_| worker_failed("the worker failed without saying why")))
            }
            _ if stderr.contains("memory allocation of") => {
                Err(memory_exceeded(limits.memory_bytes))
            }
            _ => Err(worker_failed(&format!(
                "the worker ended with {}",
                output.status
            ))),
        }
    }
}

fn memory_exceeded(cap: u64) -> JobError {
    JobError::new(
        "memory_exceeded",
        format!(
            "the job needed more than the {} MiB a job may use",
            cap >> 20
        ),
        "send a smaller input or ask for a smaller output",
    )
}

fn worker_failed(why: &str) -> JobError {
    JobError::new(
        "worker_failed",
        why,
        "try again later; if it keeps failing, tell the operator",
    )
}

/// Flags of `gateway media-worker` (started by the gateway, not by people).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The job kind.
    #[arg(long)]
    kind: String,
    /// The job's params, JSON.
    #[arg(long, default_value = "{}")]
    params: String,
    /// The input's media type.
    #[arg(long = "type")]
    content_type: String,
    /// Address-space cap, set before any input is read.
    #[arg(long)]
    memory_bytes: u64,
    /// Decode limit: pixels a side.
    #[arg(long)]
    max_side: u32,
    /// Decode limit: bytes the decoder may allocate.
    #[arg(long)]
    max_alloc: u64,
}

/// `gateway media-worker`: caps its own memory, reads the input from stdin,
/// writes the result to stdout and `{"content_type"}` to stderr (exit 0),
/// or the [`JobError`] as JSON to stderr (exit 3).
pub fn worker_main(args: &WorkerArgs) -> ExitCode {
    let fail = |e: JobError| {
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            serde_json::to_string(&e).unwrap_or_default()
        );
        ExitCode::from(EXIT_JOB_FAILED)
    };
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, args.memory_bytes, args.memory_bytes) {
        return fail(worker_failed(&format!(
            "cannot cap the worker's memory: {e}"
        )));
    }
    let params: Value = match serde_json::from_str(&args.params) {
        Ok(p) => p,
        Err(e) => return fail(JobError::new("invalid_params", e.to_string(), "send JSON")),
    };
    let op = match Operation::parse(&args.kind, &params) {
        Ok(op) => op,
        Err(e) => return fail(e),
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return fail(match e.kind() {
            std::io::ErrorKind::OutOfMemory => memory_exceeded(args.memory_bytes),
            _ => worker_failed(&format!("cannot read the input: {e}")),
        });
    }
    let limits = DecodeLimits {
        max_pixels_side: args.max_side,
        max_alloc_bytes: args.max_alloc,
    };
    match super::run(&op, &input, &args.content_type, &limits) {
        Ok(out) => {
            let said = serde_json::json!({"content_type": out.content_type}).to_string();
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&out.data)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            let _ = writeln!(std::io::stderr(), "{said}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
