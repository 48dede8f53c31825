//! `gateway:service/http`: outbound HTTP of a service, through the
//! connectors' machinery ([`CallState::send_http`]): only to the origins of
//! the manifest's `allowed_hosts`, redirects re-checked, the guarded DNS
//! resolver, the response cap, errors naming the origin only.
//!
//! The call's deadline bounds the wait: a request still unanswered when it
//! passes ends the whole call there (a trap the host reports as
//! `CallError::Timeout`, like a blocking WASI call), so a server that never
//! answers holds no worker thread and no instance beyond the deadline, and
//! the service's caller gets one clear outcome instead of a race between
//! the plugin's own answer and the epoch interrupt.

use super::gateway::service::http::{Header, Host, HttpError, Request, Response};
use crate::host::types::{HttpFailure, HttpRequest};
use crate::host::wasi::DeadlineReached;
use crate::host::CallState;
use std::time::Instant;

impl Host for CallState {
    fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: request.body,
        };
        Ok(match self.send_http(request) {
            Ok(response) => Ok(Response {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
                body: response.body,
            }),
            Err(HttpFailure::Timeout) if Instant::now() >= self.deadline => {
                return Err(DeadlineReached.into());
            }
            Err(HttpFailure::Timeout) => Err(HttpError::Timeout),
            Err(HttpFailure::Denied(why)) => {
                tracing::warn!(
                    service = %self.grants.module_id,
                    "{why}: grant it in the service's allowed_hosts"
                );
                Err(HttpError::Denied(why))
            }
            Err(HttpFailure::TooLarge) => Err(HttpError::TooLarge),
            Err(HttpFailure::RateLimited(secs)) => Err(HttpError::RateLimited(secs)),
            Err(HttpFailure::Failed(why)) => Err(HttpError::Failed(why)),
        })
    }
}
