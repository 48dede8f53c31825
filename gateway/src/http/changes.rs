//! Change reports and their delivery (S4-S6): `POST/GET /v1/changes`,
//! `GET /v1/changes/{id}`, its SSE stream `GET /v1/changes/{id}/events`,
//! and `GET /v1/profile`.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, AuthUser};
use super::openapi::{JsonBody, PathId, QueryString, UserAuth};
use super::sessions::rfc3339;
use super::AppState;
use crate::federation::{self, Report, ReportError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use gateway_api::{
    ChangeEvent, ChangeList, ChangeRequest, ChangeView, DoneEvent, ProfileView, Receipt,
    StreamError, TargetStatus, TargetView,
};
use registry_db::{Change, Delivery, DeliveryStatus};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/changes", post(create_change).get(list_changes))
        .route("/v1/changes/{id}", get(get_change))
        .route("/v1/changes/{id}/events", get(change_events))
        .route("/v1/profile", get(profile))
}

/// Longest text field accepted in a report (networks cut further).
const MAX_TEXT_CHARS: usize = 4096;
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A target as its owner sees it.
pub fn target_view(d: &Delivery) -> TargetView {
    TargetView {
        binding_id: d.binding_id.clone(),
        module: d.module_id.clone(),
        account: d.account.clone(),
        status: target_status(d.status),
        attempts: d.attempts,
        last_error: d.last_error.clone(),
        applied_fields: d.applied_fields.clone(),
        truncated_fields: d.truncated_fields.clone(),
        delivered_at: d.delivered_at.map(rfc3339),
        superseded_by: d.superseded_by.clone(),
        next_attempt_at: (d.status == DeliveryStatus::Retrying).then(|| rfc3339(d.next_attempt_at)),
        dead_letter: d.dead,
    }
}

fn target_status(status: DeliveryStatus) -> TargetStatus {
    match status {
        DeliveryStatus::Pending => TargetStatus::Pending,
        DeliveryStatus::Delivering => TargetStatus::Delivering,
        DeliveryStatus::Delivered => TargetStatus::Delivered,
        DeliveryStatus::Retrying => TargetStatus::Retrying,
        DeliveryStatus::Failed => TargetStatus::Failed,
        DeliveryStatus::Superseded => TargetStatus::Superseded,
    }
}

/// A change with its targets.
pub fn change_view(c: &Change) -> ChangeView {
    ChangeView {
        id: c.id.clone(),
        module: c.module_id.clone(),
        settings: federation::settings_of(&c.settings),
        created_at: rfc3339(c.created_at),
        status: federation::change_status(c),
        targets: c.targets.iter().map(target_view).collect(),
    }
}

/// Reports a change; one delivery per other binding.
#[utoipa::path(post, path = "/v1/changes", tag = "changes", request_body = ChangeRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "repeat-safe key: 1-255 visible ASCII characters, per user",
        min_length = 1, max_length = 255, pattern = r"^[\t -~]*[!-~][\t -~]*$")),
    security(("bearer" = [])), responses(
    UserAuth, JsonBody,
    (status = 202, description = "accepted", body = Receipt),
    (status = 200, description = "an echo of what the gateway applied: suppressed", body = Receipt),
    (status = 422, description = "empty_change, not_bound, unknown_media, \
        invalid_idempotency_key, invalid_body (wrong JSON types, missing or unknown fields, \
        text over 4096 characters)", body = ErrorBody)))]
pub async fn create_change(
    State(state): State<AppState>,
    auth: AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChangeRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => {
                Some(k.trim().to_owned())
            }
            _ => {
                return Err(ApiError::unprocessable(
                    "invalid_idempotency_key",
                    format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                    ),
                ))
            }
        },
    };
    for (field, value) in [
        ("signature", &body.settings.signature),
        ("mood", &body.settings.mood),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(ApiError::unprocessable(
                "invalid_body",
                format!("{field} is longer than {MAX_TEXT_CHARS} characters"),
            ));
        }
    }
    let report = Report {
        module: body.module,
        account: body.account,
        settings: body.settings,
        from_local_client: body.from_local_client,
        idempotency_key,
    };
    let reported = state
        .federation
        .report(&auth.user.id, report)
        .await
        .map_err(|e| match e {
            ReportError::Empty => ApiError::unprocessable("empty_change", e.to_string()),
            ReportError::NotBound(_) => ApiError::unprocessable("not_bound", e.to_string()),
            ReportError::UnknownMedia(_) => ApiError::unprocessable("unknown_media", e.to_string()),
            ReportError::Registry(e) => e.into(),
        })?;
    // An echo changes nothing (200); anything else was accepted for
    // delivery (202). A repeat answers as the first answer did.
    let status = match reported.receipt().status {
        gateway_api::ChangeStatus::Suppressed => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(reported.into_receipt())).into_response())
}

/// `limit` and `before` of the change list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// At most this many (default 20; clamped to 1-100).
    pub limit: Option<i64>,
    /// Only changes older than this change id.
    pub before: Option<String>,
}

/// The user's recent changes, newest first.
#[utoipa::path(get, path = "/v1/changes", tag = "changes", params(ListQuery),
    security(("bearer" = [])), responses(UserAuth, QueryString, (status = 200, body = ChangeList)))]
pub async fn list_changes(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ChangeList>, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let changes = state
        .registry
        .list_changes(&auth.user.id, query.before.as_deref(), limit)
        .await?;
    let next_before = (changes.len() as i64 == limit)
        .then(|| changes.last().map(|c| c.id.clone()))
        .flatten();
    Ok(Json(ChangeList {
        changes: changes.iter().map(change_view).collect(),
        next_before,
    }))
}

/// One change and the status of each target.
#[utoipa::path(get, path = "/v1/changes/{id}", tag = "changes",
    params(("id" = String, Path, description = "change id")),
    security(("bearer" = [])), responses(UserAuth, PathId, (status = 200, body = ChangeView)))]
pub async fn get_change(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ChangeView>, ApiError> {
    let change = state.registry.change(&auth.user.id, &id).await?;
    Ok(Json(change_view(&change)))
}

struct Watch {
    _slot: super::streams::StreamSlot,
    state: AppState,
    user_id: String,
    token_hash: String,
    change_id: String,
    updates: tokio::sync::broadcast::Receiver<String>,
    stopping: tokio::sync::watch::Receiver<bool>,
    sent: HashMap<String, TargetView>,
    queue: VecDeque<Event>,
    finished: bool,
}

fn sse(event: &ChangeEvent) -> Event {
    Event::default().event(event.name()).data(event.data())
}

impl Watch {
    /// Re-reads the change and queues an event per target that changed.
    async fn refresh(&mut self) {
        if super::streams::token_ended(&self.state, &self.token_hash).await {
            self.queue.push_back(sse(&ChangeEvent::Error(StreamError {
                message: "the session ended (logged out or expired)".into(),
            })));
            self.finished = true;
            return;
        }
        match self
            .state
            .registry
            .change(&self.user_id, &self.change_id)
            .await
        {
            Ok(change) => {
                for target in &change.targets {
                    let view = target_view(target);
                    if self.sent.get(&target.id) != Some(&view) {
                        self.queue
                            .push_back(sse(&ChangeEvent::Target(Box::new(view.clone()))));
                        self.sent.insert(target.id.clone(), view);
                    }
                }
                let status = federation::change_status(&change);
                if status.is_final() {
                    self.queue.push_back(sse(&ChangeEvent::Done(DoneEvent {
                        id: change.id,
                        status,
                    })));
                    self.finished = true;
                }
            }
            Err(e) => {
                // The database's own text stays in the log, not the stream.
                tracing::warn!(error = %e, change = %self.change_id, "change stream ended");
                let message = match e {
                    registry_db::RegistryError::NotFound => "the change is gone",
                    _ => "the gateway's database failed; reconnect to go on",
                };
                self.queue.push_back(sse(&ChangeEvent::Error(StreamError {
                    message: message.into(),
                })));
                self.finished = true;
            }
        }
    }

    /// Waits for a notice about this change, or the poll interval. At
    /// shutdown the stream ends (the client reconnects to another node or
    /// after the restart and gets the current state).
    async fn wait(&mut self) {
        if *self.stopping.borrow() {
            self.finished = true;
            return;
        }
        let deadline = tokio::time::sleep(self.state.config.delivery.stream_recheck);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = self.stopping.changed() => {
                    if changed.is_err() || *self.stopping.borrow() {
                        self.finished = true;
                        return;
                    }
                }
                notice = self.updates.recv() => match notice {
                    Ok(id) if id == self.change_id => return,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => { deadline.as_mut().await; return }
                },
                _ = &mut deadline => return,
            }
        }
    }
}

/// One server-sent event of a change's stream, as the OpenAPI document
/// describes it (the stream is written with [`ChangeEvent`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    /// The `event:` line: `target`, `done` or `error`.
    #[schema(pattern = "^(target|done|error)$")]
    event: String,
    /// The `data:` line, JSON: a `TargetView` for `target`, a `DoneEvent`
    /// for `done`, a `StreamError` for `error`.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// Target status changes as server-sent events: `target` (a target as in
/// `GET /v1/changes/{id}`), then `done` with the change status once every
/// target is final.
#[utoipa::path(get, path = "/v1/changes/{id}/events", tag = "changes",
    params(("id" = String, Path, description = "change id")),
    security(("bearer" = [])), responses(
    UserAuth, PathId,
    (status = 200, description = "`target` events, ending with `done` or `error`",
        content_type = "text/event-stream", body = StreamEvent),
    (status = 429, description = "too_many_streams: 16 open streams per user; rate_limited: \
        the user's request quota (with Retry-After)", body = ErrorBody,
        headers(("Retry-After" = u64, description = "whole seconds to wait (rate_limited only)")))))]
pub async fn change_events(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // 404 before the stream starts.
    state.registry.change(&auth.user.id, &id).await?;
    let slot = super::streams::open(&state, &auth.user.id)?;
    let watch = Watch {
        _slot: slot,
        updates: state.federation.subscribe(),
        stopping: state.stopping.clone(),
        state,
        user_id: auth.user.id,
        token_hash: auth.token_hash,
        change_id: id,
        sent: HashMap::new(),
        queue: VecDeque::new(),
        finished: false,
    };
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.queue.pop_front() {
                return Some((Ok(event), watch));
            }
            if watch.finished {
                return None;
            }
            watch.refresh().await;
            if watch.queue.is_empty() {
                watch.wait().await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The user's current federated settings.
#[utoipa::path(get, path = "/v1/profile", tag = "changes", security(("bearer" = [])),
    responses(UserAuth, (status = 200, body = ProfileView)))]
pub async fn profile(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<ProfileView>, ApiError> {
    let (settings, updated_at) = match state.registry.profile(&auth.user.id).await? {
        Some((settings, at)) => (settings, Some(rfc3339(at))),
        None => (Default::default(), None),
    };
    Ok(Json(ProfileView {
        settings: federation::settings_of(&settings),
        updated_at,
    }))
}
