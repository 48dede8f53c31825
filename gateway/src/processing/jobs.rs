//! The durable media job queue (grant `media`): a service submits a job
//! for its user, the registry keeps it, and a node's runner claims it
//! under a lease, fetches its input, runs it in a worker process
//! ([`Workers`]) and stores the result as a blob of the user in the
//! service, kept for the job's keep time and then deleted.
//!
//! Nothing is lost to a restart: a job waits in the registry until a node
//! claims it, a node that stops puts back what it runs, and a node killed
//! mid-job leaves a lease that runs out, after which another (or the same,
//! restarted) claims it again, at most [`JobsConfig::max_attempts`] times.

use super::worker::{WorkerLimits, Workers};
use super::{JobError, Operation};
use crate::blobs::{BlobError, Blobs, Owner};
use crate::clock::SharedClock;
use crate::devices::Devices;
use crate::host::service::{Capability, JobInfo, JobState, NewJob, ServiceRequest};
use crate::services::Services;
use registry_db::{JobOutcome, MediaJob, Registry, RegistryError};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the queue and its runner work on this node.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The worker processes' limits; `concurrency` 0 makes a node that
    /// queues jobs but runs none.
    pub workers: WorkerLimits,
    /// The program started as `<program> media-worker`: the gateway
    /// binary.
    pub program: PathBuf,
    /// How often the runner looks for claimable jobs (a submit on this
    /// node wakes it at once).
    pub poll: Duration,
    /// Times a job may start before it fails (a node killed mid-job).
    pub max_attempts: i64,
    /// Queued and running jobs one user may have in one service.
    pub max_open_per_user: i64,
    /// Largest input read, in bytes.
    pub max_input_bytes: u64,
    /// Longest a result may be kept.
    pub max_keep: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: WorkerLimits::default(),
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gateway")),
            poll: Duration::from_millis(250),
            max_attempts: 3,
            max_open_per_user: 100,
            max_input_bytes: 64 << 20,
            max_keep: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The queue and its runner.
pub struct Jobs {
    registry: Registry,
    blobs: Arc<Blobs>,
    devices: Arc<Devices>,
    clock: SharedClock,
    config: JobsConfig,
    workers: Workers,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The largest input id: media ids, blob ids and file ids are far shorter.
const MAX_INPUT_ID: usize = 128;

fn storage_failed(e: impl std::fmt::Display) -> JobError {
    JobError::new(
        "worker_failed",
        format!("the gateway's storage failed: {e}"),
        "try again later; if it keeps failing, tell the operator",
    )
}

fn unknown_input(input: &str) -> JobError {
    JobError::new(
        "unknown_input",
        format!("{input:?} is none of your media, uploads or files"),
        "upload the input first (POST /v1/media for an image, a tus upload, or a file of the \
         files service) and name its id",
    )
}

fn millis(t: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// A stored job as a service sees it.
fn info(job: MediaJob) -> JobInfo {
    JobInfo {
        state: match job.state {
            registry_db::JobState::Queued => JobState::Queued,
            registry_db::JobState::Running => JobState::Running,
            registry_db::JobState::Done => JobState::Done,
            registry_db::JobState::Failed => JobState::Failed,
        },
        result_blob: job.result_blob.filter(|_| job.gone_at.is_none()),
        size: job.result_size.and_then(|s| u64::try_from(s).ok()),
        error: job.error.map(|text| {
            serde_json::from_str(&text).unwrap_or_else(|_| {
                JobError::new(
                    "worker_failed",
                    text,
                    "try again; if it fails again, tell the operator",
                )
            })
        }),
        created_ms: millis(job.created_at),
        finished_ms: job.finished_at.map(millis),
        kept_until_ms: job.kept_until.map(millis),
        gone_ms: job.gone_at.map(millis),
        attempts: u32::try_from(job.attempts).unwrap_or(u32::MAX),
        id: job.id,
        kind: job.kind,
        input: job.input,
        content_type: job.result_type,
    }
}

impl Jobs {
    /// The queue on the registry, its results kept in `blobs`, devices told
    /// of jobs that end.
    pub fn new(
        registry: Registry,
        blobs: Arc<Blobs>,
        devices: Arc<Devices>,
        clock: SharedClock,
        config: JobsConfig,
    ) -> Self {
        let workers = Workers::new(config.program.clone(), config.workers.clone());
        Jobs {
            registry,
            blobs,
            devices,
            clock,
            config,
            workers,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Queues a job after checking its kind, params, device and the
    /// user's open jobs; its input is looked up when it runs.
    pub async fn submit(&self, job: NewJob) -> Result<JobInfo, JobError> {
        let params: Value = serde_json::from_str(&job.params).map_err(|e| {
            JobError::new(
                "invalid_params",
                format!("params are not JSON: {e}"),
                "send params as a JSON object",
            )
        })?;
        Operation::parse(&job.kind, &params)?;
        let input_ok = !job.input.is_empty()
            && job.input.len() <= MAX_INPUT_ID
            && job
                .input
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !input_ok {
            return Err(unknown_input(&job.input));
        }
        if let Some(device) = &job.device {
            let mine = self
                .devices
                .list(&job.user)
                .await
                .map_err(storage_failed)?
                .iter()
                .any(|d| &d.id == device);
            if !mine {
                return Err(JobError::new(
                    "unknown_device",
                    format!("{device:?} is not one of your devices"),
                    "name one of your devices, or none",
                ));
            }
        }
        let open = self
            .registry
            .open_jobs(&job.service, &job.user)
            .await
            .map_err(storage_failed)?;
        if open >= self.config.max_open_per_user {
            return Err(JobError::new(
                "too_many_jobs",
                format!("you have {open} jobs waiting or running, the most allowed"),
                "wait for some to finish, then send this one again",
            ));
        }
        let max_keep = u64::try_from(self.config.max_keep.as_millis()).unwrap_or(u64::MAX);
        let stored = MediaJob {
            id: uuid::Uuid::new_v4().simple().to_string(),
            service_id: job.service,
            user_id: job.user,
            device_id: job.device,
            kind: job.kind,
            input: job.input,
            params: params.to_string(),
            state: registry_db::JobState::Queued,
            attempts: 0,
            lease_until: None,
            keep_ms: i64::try_from(job.keep_ms.min(max_keep)).unwrap_or(i64::MAX),
            result_blob: None,
            result_type: None,
            result_size: None,
            error: None,
            created_at: self.clock.now(),
            started_at: None,
            finished_at: None,
            kept_until: None,
            gone_at: None,
        };
        self.registry
            .insert_job(&stored)
            .await
            .map_err(storage_failed)?;
        self.wake.notify_one();
        Ok(info(stored))
    }

    /// A job of `user`'s in `service`.
    pub async fn get(
        &self,
        service: &str,
        user: &str,
        id: &str,
    ) -> Result<Option<JobInfo>, RegistryError> {
        Ok(self.registry.job(service, user, id).await?.map(info))
    }

    /// How long a node holds a job it runs: the deadline and time to
    /// fetch the input and store the result.
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.workers.deadline + Duration::from_secs(30))
            .unwrap_or(chrono::Duration::MAX)
    }

    /// Claims and runs jobs until `stop` turns true; a job still running
    /// then goes back to the queue (its worker is killed). `services`
    /// resolves inputs that are files of the files service.
    pub async fn run(
        self: Arc<Self>,
        services: Arc<Services>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let slots = self.config.workers.concurrency;
        if slots == 0 {
            return;
        }
        let free = Arc::new(tokio::sync::Semaphore::new(slots));
        let mut running = tokio::task::JoinSet::new();
        let mut claimed = std::collections::HashMap::new();
        let mut tick = tokio::time::interval(self.config.poll);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
                Some(done) = running.join_next_with_id() => {
                    claimed.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
                    continue;
                }
            }
            let available = free.available_permits();
            if available == 0 {
                continue;
            }
            let now = self.clock.now();
            let jobs = match self
                .registry
                .claim_jobs(
                    now,
                    now + self.lease(),
                    u32::try_from(available).unwrap_or(1),
                )
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "media jobs not claimed");
                    continue;
                }
            };
            for job in jobs {
                let Ok(permit) = free.clone().try_acquire_owned() else {
                    let _ = self.registry.release_job(&job).await;
                    continue;
                };
                let this = self.clone();
                let services = services.clone();
                let kept = job.clone();
                let handle = running.spawn(async move {
                    this.execute(&services, job).await;
                    drop(permit);
                });
                claimed.insert(handle.id(), kept);
            }
        }
        // Stopping: what still runs goes back to the queue.
        running.abort_all();
        while running.join_next().await.is_some() {}
        for job in claimed.values() {
            if let Err(e) = self.registry.release_job(job).await {
                tracing::warn!(job = %job.id, error = %e, "a media job was not put back; it runs again after its lease");
            }
        }
    }

    /// Runs one claimed job to its end and records it.
    async fn execute(&self, services: &Services, job: MediaJob) {
        let outcome = if job.attempts > self.config.max_attempts {
            Err(JobError::new(
                "worker_failed",
                format!(
                    "the job was interrupted {} times (its gateway stopped while running it)",
                    job.attempts - 1
                ),
                "send it again; if it keeps failing, tell the operator",
            ))
        } else {
            self.work(services, &job).await
        };
        let now = self.clock.now();
        let outcome = match outcome {
            Ok((blob, content_type, size)) => JobOutcome::Done {
                blob,
                content_type,
                size,
                kept_until: now + chrono::Duration::milliseconds(job.keep_ms.max(0)),
            },
            Err(e) => JobOutcome::Failed(json!(e).to_string()),
        };
        let status = match &outcome {
            JobOutcome::Done { .. } => "done",
            JobOutcome::Failed(_) => "failed",
        };
        match self.registry.finish_job(&job, &outcome, now).await {
            Ok(true) => {}
            Ok(false) => {
                // Another node took it over: its result is that node's.
                if let JobOutcome::Done { blob, .. } = &outcome {
                    let _ = self
                        .blobs
                        .delete(&Owner::of(&job.service_id, &job.user_id), blob)
                        .await;
                }
                return;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "a media job's end was not recorded; it runs again after its lease");
                return;
            }
        }
        if let Some(device) = &job.device_id {
            let kind = format!("{}.job", job.service_id);
            let payload = json!({"job_id": job.id, "status": status});
            if let Err(e) = self
                .devices
                .publish_for(&job.user_id, &[device.as_str()], &kind, &payload)
                .await
            {
                tracing::debug!(job = %job.id, error = %e, "job end not told to its device");
            }
        }
    }

    /// Fetches the input, runs the job in a worker and stores the result:
    /// the result blob, its type and size.
    async fn work(
        &self,
        services: &Services,
        job: &MediaJob,
    ) -> Result<(String, String, i64), JobError> {
        let params: Value = serde_json::from_str(&job.params).unwrap_or(Value::Null);
        let (content_type, input) = self.input(services, job).await?;
        let output = self
            .workers
            .run(&job.kind, &params, &content_type, input)
            .await?;
        let size = i64::try_from(output.data.len()).unwrap_or(i64::MAX);
        let stored = self
            .blobs
            .store_whole(
                &Owner::of(&job.service_id, &job.user_id),
                &output.content_type,
                output.data,
            )
            .await
            .map_err(|e| match e {
                BlobError::Quota(why) => JobError::new(
                    "quota_exceeded",
                    format!("the result does not fit: {why}"),
                    "delete some of your files, backups or results, then send the job again",
                ),
                BlobError::TooLong { max } => JobError::new(
                    "quota_exceeded",
                    format!("the result is larger than the {max} bytes a file may have"),
                    "ask for a smaller output",
                ),
                e => storage_failed(e),
            })?;
        Ok((stored.id, output.content_type, size))
    }

    /// The input's media type and bytes: a media id of the user, a
    /// complete blob of the user in the job's service, or a file of the
    /// user in the files service.
    async fn input(
        &self,
        services: &Services,
        job: &MediaJob,
    ) -> Result<(String, Vec<u8>), JobError> {
        let max = self.config.max_input_bytes;
        match self.registry.media(&job.user_id, &job.input).await {
            Ok(media) => return Ok((media.content_type, media.data)),
            Err(RegistryError::NotFound) => {}
            Err(e) => return Err(storage_failed(e)),
        }
        let own = Owner::of(&job.service_id, &job.user_id);
        match self.blobs.read_whole(&own, &job.input, max).await {
            Ok((upload, data)) => return Ok((blob_type(&upload), data)),
            Err(BlobError::NotFound | BlobError::Expired(_)) => {}
            Err(BlobError::TooLong { .. }) => return Err(input_too_large(max)),
            Err(e) => return Err(storage_failed(e)),
        }
        self.file_input(services, job, max)
            .await?
            .ok_or_else(|| unknown_input(&job.input))
    }

    /// A file of the files service, as that service serves it to the user
    /// (so a file still uploading is refused with its reason).
    async fn file_input(
        &self,
        services: &Services,
        job: &MediaJob,
        max: u64,
    ) -> Result<Option<(String, Vec<u8>)>, JobError> {
        const FILES: &str = "files";
        let Ok(files) = services.mounted(FILES).await else {
            return Ok(None);
        };
        if !files.grants(Capability::Blobs) {
            return Ok(None);
        }
        let request = ServiceRequest {
            method: "GET".into(),
            path: format!("/files/{}/content", job.input),
            caller: Some((job.user_id.clone(), None)),
            ..ServiceRequest::default()
        };
        let answer = services
            .call(files, request)
            .await
            .map_err(storage_failed)?;
        if answer.status == 404 {
            return Ok(None);
        }
        let blob = match (answer.status, answer.named_blob()) {
            (200, Some(blob)) => blob.to_owned(),
            _ => {
                let why = serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("the files service answered {}", answer.status));
                return Err(JobError::new(
                    "input_not_ready",
                    format!("the file cannot be read yet: {why}"),
                    "wait until the file is uploaded completely, then send the job again",
                ));
            }
        };
        let declared = answer.header("content-type").map(str::to_owned);
        match self
            .blobs
            .read_whole(&Owner::of(FILES, &job.user_id), &blob, max)
            .await
        {
            Ok((upload, data)) => Ok(Some((declared.unwrap_or_else(|| blob_type(&upload)), data))),
            Err(BlobError::TooLong { .. }) => Err(input_too_large(max)),
            Err(BlobError::NotFound | BlobError::Expired(_)) => Ok(None),
            Err(e) => Err(storage_failed(e)),
        }
    }

    /// Deletes the results kept long enough; how many.
    pub async fn sweep(&self) -> Result<usize, RegistryError> {
        let now = self.clock.now();
        let past = self.registry.jobs_past_keeping(now, 100).await?;
        for job in &past {
            if let Some(blob) = &job.result_blob {
                match self
                    .blobs
                    .delete(&Owner::of(&job.service_id, &job.user_id), blob)
                    .await
                {
                    Ok(()) | Err(BlobError::NotFound) => {}
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "a kept result was not deleted");
                        continue;
                    }
                }
            }
            self.registry.mark_job_result_gone(&job.id, now).await?;
        }
        Ok(past.len())
    }
}

fn input_too_large(max: u64) -> JobError {
    JobError::new(
        "input_too_large",
        format!("the input is larger than the {max} bytes a job reads"),
        "send a smaller file",
    )
}

fn blob_type(upload: &registry_db::BlobUpload) -> String {
    crate::blobs::content_type(upload).unwrap_or_else(|| "application/octet-stream".into())
}
