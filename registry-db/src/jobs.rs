//! Media jobs of services, queued durably: submitted, claimed by one node
//! under a lease, finished with a result blob or a reason, and their
//! results deleted once kept long enough.

use crate::{from_millis, to_millis, Registry, RegistryError, Result};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A node runs it (under a lease).
    Running,
    /// Its result is (or was) stored.
    Done,
    /// It failed; `error` says why.
    Failed,
}

impl JobState {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            other => return Err(RegistryError::Corrupt(format!("job status {other:?}"))),
        })
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaJob {
    /// Unguessable id.
    pub id: String,
    /// The service that submitted it.
    pub service_id: String,
    /// The user it works for.
    pub user_id: String,
    /// The device that asked, if a device did.
    pub device_id: Option<String>,
    /// What it does (`thumbnail`, ...).
    pub kind: String,
    /// The input's id, as the client named it.
    pub input: String,
    /// Its parameters, JSON text.
    pub params: String,
    /// Where it stands.
    pub state: JobState,
    /// How many times a node started it.
    pub attempts: i64,
    /// Until when the node running it holds it.
    pub lease_until: Option<DateTime<Utc>>,
    /// How long its result is kept once done, in milliseconds.
    pub keep_ms: i64,
    /// The result blob (a blob of the user in the service).
    pub result_blob: Option<String>,
    /// The result's media type.
    pub result_type: Option<String>,
    /// The result's size in bytes.
    pub result_size: Option<i64>,
    /// Why it failed: `{"code", "message", "help"}` as JSON text.
    pub error: Option<String>,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// Last started.
    pub started_at: Option<DateTime<Utc>>,
    /// Done or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// Until when the result is kept.
    pub kept_until: Option<DateTime<Utc>>,
    /// When the result was deleted, its time over.
    pub gone_at: Option<DateTime<Utc>>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Its result is blob `blob`, of `content_type`, `size` bytes, kept
    /// until `kept_until`.
    Done {
        /// The result blob.
        blob: String,
        /// Its media type.
        content_type: String,
        /// Its size.
        size: i64,
        /// Kept until.
        kept_until: DateTime<Utc>,
    },
    /// It failed: the reason as JSON text.
    Failed(String),
}

const COLUMNS: &str = "id, service_id, user_id, device_id, kind, input, params, status, attempts, \
                       lease_until, keep_ms, result_blob, result_type, result_size, error, \
                       created_at, started_at, finished_at, kept_until, gone_at";

fn millis(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(from_millis)
        .transpose()
}

fn job(row: &sqlx::any::AnyRow) -> Result<MediaJob> {
    Ok(MediaJob {
        id: row.try_get("id")?,
        service_id: row.try_get("service_id")?,
        user_id: row.try_get("user_id")?,
        device_id: row.try_get("device_id")?,
        kind: row.try_get("kind")?,
        input: row.try_get("input")?,
        params: row.try_get("params")?,
        state: JobState::parse(&row.try_get::<String, _>("status")?)?,
        attempts: row.try_get("attempts")?,
        lease_until: millis(row, "lease_until")?,
        keep_ms: row.try_get("keep_ms")?,
        result_blob: row.try_get("result_blob")?,
        result_type: row.try_get("result_type")?,
        result_size: row.try_get("result_size")?,
        error: row.try_get("error")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        started_at: millis(row, "started_at")?,
        finished_at: millis(row, "finished_at")?,
        kept_until: millis(row, "kept_until")?,
        gone_at: millis(row, "gone_at")?,
    })
}

/// Claimable: queued, or running under a lease that ran out.
const CLAIMABLE: &str = "(status = 'queued' OR (status = 'running' AND lease_until <= $1))";

impl Registry {
    /// Stores a new job (durably: its `202` promises it runs).
    pub async fn insert_job(&self, job: &MediaJob) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO media_jobs ({COLUMNS}) VALUES ({})",
            crate::sql::params(1, 20)
        ))
        .bind(&job.id)
        .bind(&job.service_id)
        .bind(&job.user_id)
        .bind(&job.device_id)
        .bind(&job.kind)
        .bind(&job.input)
        .bind(&job.params)
        .bind(job.state.as_str())
        .bind(job.attempts)
        .bind(job.lease_until.map(to_millis))
        .bind(job.keep_ms)
        .bind(&job.result_blob)
        .bind(&job.result_type)
        .bind(job.result_size)
        .bind(&job.error)
        .bind(to_millis(job.created_at))
        .bind(job.started_at.map(to_millis))
        .bind(job.finished_at.map(to_millis))
        .bind(job.kept_until.map(to_millis))
        .bind(job.gone_at.map(to_millis))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A job of `user`'s in `service`; `None` when unknown (or another
    /// user's).
    pub async fn job(&self, service: &str, user: &str, id: &str) -> Result<Option<MediaJob>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM media_jobs WHERE id = $1 AND service_id = $2 AND user_id = $3"
        ))
        .bind(id)
        .bind(service)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job).transpose()
    }

    /// Takes up to `limit` claimable jobs, oldest first, each by one node
    /// only, until `lease_until`; counts the attempt. Looking costs a read:
    /// an idle queue never takes the write lock.
    pub async fn claim_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<MediaJob>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM media_jobs WHERE {CLAIMABLE} ORDER BY created_at, id LIMIT $2"
        ))
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Each claim holds only if the job is still claimable: of nodes
        // that saw the same rows, one wins each.
        let (mut tx, _guard) = self.begin_bookkeeping().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut found = job(row)?;
            let done = sqlx::query(&format!(
                "UPDATE media_jobs SET status = 'running', lease_until = $2, started_at = $3, \
                 attempts = attempts + 1 WHERE id = $4 AND {CLAIMABLE}"
            ))
            .bind(to_millis(now))
            .bind(to_millis(lease_until))
            .bind(to_millis(now))
            .bind(&found.id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                found.state = JobState::Running;
                found.lease_until = Some(lease_until);
                found.started_at = Some(now);
                found.attempts += 1;
                claimed.push(found);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records how a claimed job ended, unless another node took it over
    /// meanwhile (its lease ran out); whether it was recorded.
    pub async fn finish_job(
        &self,
        claimed: &MediaJob,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (status, blob, content_type, size, error, kept_until) = match outcome {
            JobOutcome::Done {
                blob,
                content_type,
                size,
                kept_until,
            } => (
                JobState::Done,
                Some(blob.as_str()),
                Some(content_type.as_str()),
                Some(*size),
                None,
                Some(to_millis(*kept_until)),
            ),
            JobOutcome::Failed(error) => (
                JobState::Failed,
                None,
                None,
                None,
                Some(error.as_str()),
                None,
            ),
        };
        let done = sqlx::query(
            "UPDATE media_jobs SET status = $1, result_blob = $2, result_type = $3, \
             result_size = $4, error = $5, kept_until = $6, finished_at = $7, lease_until = NULL \
             WHERE id = $8 AND status = 'running' AND lease_until = $9",
        )
        .bind(status.as_str())
        .bind(blob)
        .bind(content_type)
        .bind(size)
        .bind(error)
        .bind(kept_until)
        .bind(to_millis(now))
        .bind(&claimed.id)
        .bind(claimed.lease_until.map(to_millis))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts a claimed job back in the queue (its node is stopping).
    pub async fn release_job(&self, claimed: &MediaJob) -> Result<()> {
        sqlx::query(
            "UPDATE media_jobs SET status = 'queued', lease_until = NULL \
             WHERE id = $1 AND status = 'running' AND lease_until = $2",
        )
        .bind(&claimed.id)
        .bind(claimed.lease_until.map(to_millis))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Done jobs whose result is kept no longer, up to `limit`.
    pub async fn jobs_past_keeping(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<MediaJob>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM media_jobs WHERE kept_until <= $1 AND gone_at IS NULL \
             ORDER BY kept_until LIMIT $2"
        ))
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job).collect()
    }

    /// Records that a job's result was deleted, its time over.
    pub async fn mark_job_result_gone(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE media_jobs SET gone_at = $2 WHERE id = $1 AND gone_at IS NULL")
            .bind(id)
            .bind(to_millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many jobs of `user`'s in `service` are queued or running.
    pub async fn open_jobs(&self, service: &str, user: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM media_jobs WHERE service_id = $1 AND user_id = $2 \
             AND status IN ('queued', 'running')",
        )
        .bind(service)
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
