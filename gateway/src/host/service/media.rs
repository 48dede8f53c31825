//! `gateway:service/media`: media jobs of the current user (grant
//! `media`), queued and run by the gateway; the plugin submits and reads
//! them, the bytes never pass through it.

use super::gateway::service::media::{Host, Job, JobError, JobRequest, JobStatus};
use super::{JobInfo, JobState, NewJob};
use crate::host::CallState;
use crate::processing;

impl From<processing::JobError> for JobError {
    fn from(e: processing::JobError) -> Self {
        JobError {
            code: e.code,
            message: e.message,
            help: e.help,
        }
    }
}

impl From<JobInfo> for Job {
    fn from(j: JobInfo) -> Self {
        Job {
            id: j.id,
            kind: j.kind,
            input: j.input,
            status: match j.state {
                JobState::Queued => JobStatus::Queued,
                JobState::Running => JobStatus::Running,
                JobState::Done => JobStatus::Done,
                JobState::Failed => JobStatus::Failed,
            },
            result_blob: j.result_blob,
            content_type: j.content_type,
            size: j.size,
            error: j.error.map(Into::into),
            created_ms: j.created_ms,
            finished_ms: j.finished_ms,
            kept_until_ms: j.kept_until_ms,
            gone_ms: j.gone_ms,
            attempts: j.attempts,
        }
    }
}

fn no_user() -> JobError {
    processing::JobError::new(
        "no_user",
        "a job is submitted for a user; this call is made for nobody",
        "submit jobs from a route called with a token",
    )
    .into()
}

impl Host for CallState {
    fn submit(&mut self, request: JobRequest) -> Result<Job, JobError> {
        let scope = self.scope().cloned().ok_or_else(no_user)?;
        let user = scope.user_id.clone().ok_or_else(no_user)?;
        let job = NewJob {
            service: scope.service_id.clone(),
            user,
            kind: request.kind,
            input: request.input,
            params: request.params,
            keep_ms: request.keep_ms,
            device: request.device,
        };
        self.block_on(scope.backend.submit_job(job))
            .ok_or_else(no_user)?
            .map(Into::into)
            .map_err(Into::into)
    }

    fn get(&mut self, id: String) -> Option<Job> {
        let scope = self.scope().cloned()?;
        let user = scope.user_id.clone()?;
        self.block_on(scope.backend.job(&scope.service_id, &user, &id))
            .flatten()
            .map(Into::into)
    }
}
