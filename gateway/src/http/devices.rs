//! Devices (H5): `POST/GET /v1/devices`, `GET /v1/devices/history`,
//! `DELETE /v1/devices/{id}` and each device's inbox,
//! `GET /v1/devices/current/events` (server-sent events, replayable).

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthDevice, AuthUser};
use super::openapi::{JsonBody, PathId, UserAuth};
use super::sessions::rfc3339;
use super::{audit, AppState};
use crate::devices::{DeviceError, Registration, Streaming};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{delete, get};
use axum::{Json, Router};
use futures::Stream;
use gateway_api::{
    DeviceHistory, DeviceHistoryView, DeviceList, DeviceRegistered, DeviceView, NewDeviceRequest,
};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/devices", get(list_devices).post(register_device))
        .route("/v1/devices/history", get(device_history))
        .route("/v1/devices/current/events", get(device_events))
        .route("/v1/devices/{id}", delete(delete_device))
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        let message = e.to_string();
        match e {
            DeviceError::Invalid(_) => ApiError::unprocessable("invalid_body", message),
            DeviceError::Taken(_) => ApiError::new(StatusCode::CONFLICT, "device_taken", message),
            DeviceError::NotFound => ApiError::not_found("device"),
            DeviceError::Registry(e) => e.into(),
        }
    }
}

fn view(d: registry_db::Device) -> DeviceView {
    DeviceView {
        id: d.id,
        name: d.name,
        platform: d.platform,
        capabilities: d.capabilities,
        state: d.state.as_str().to_owned(),
        last_seen: rfc3339(d.last_seen),
        ip: d.ip,
        port: d.port,
    }
}

/// Registers a device of the user, or registers it again (new token).
#[utoipa::path(post, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    request_body = NewDeviceRequest, responses(UserAuth, JsonBody,
        (status = 201, description = "registered", body = DeviceRegistered),
        (status = 200, description = "registered again by the same user: updated, with a new \
            token (the earlier ones end)", body = DeviceRegistered),
        (status = 409, description = "device_taken: another user registered this id", body = ErrorBody),
        (status = 422, description = "invalid_body: a field breaks its rule (id 1-128 \
            characters, name 1-100, platform at most 64, at most 64 capabilities of 1-200, \
            no control characters; port 1-65535), wrong JSON types, unknown fields",
            body = ErrorBody)))]
pub async fn register_device(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<NewDeviceRequest>,
) -> Result<(StatusCode, Json<DeviceRegistered>), ApiError> {
    let ip = auth.ip.map(|ip| ip.to_string());
    let registration = Registration {
        id: body.id,
        name: body.name,
        platform: body.platform,
        capabilities: body.capabilities,
        port: body.port,
    };
    let registered = state
        .devices
        .register(&auth.user.id, registration, ip)
        .await?;
    let device = registered.device;
    audit(
        &state,
        &format!("user:{}", auth.user.id),
        if registered.created {
            "device.register"
        } else {
            "device.reregister"
        },
        &device.id,
        serde_json::json!({"name": device.name}),
    )
    .await;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(DeviceRegistered {
            id: device.id,
            name: device.name,
            platform: device.platform,
            capabilities: device.capabilities,
            created_at: rfc3339(device.created_at),
            token: registered.token,
        }),
    ))
}

/// The control list: the user's devices with their state.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses(UserAuth, (status = 200, body = DeviceList)))]
pub async fn list_devices(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.devices.list(&auth.user.id).await?;
    Ok(Json(DeviceList {
        devices: devices.into_iter().map(view).collect(),
    }))
}

/// Joins, leaves and state changes of the user's devices, newest first.
#[utoipa::path(get, path = "/v1/devices/history", tag = "devices", security(("bearer" = [])),
    responses(UserAuth, (status = 200, body = DeviceHistory)))]
pub async fn device_history(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<DeviceHistory>, ApiError> {
    let entries = state.devices.history(&auth.user.id).await?;
    Ok(Json(DeviceHistory {
        entries: entries
            .into_iter()
            .map(|e| DeviceHistoryView {
                device: e.device_id,
                event: e.event,
                at: rfc3339(e.at),
            })
            .collect(),
    }))
}

/// Removes a device: its token ends, its inbox goes.
#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses(UserAuth, PathId, (status = 204, description = "removed")))]
pub async fn delete_device(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.devices.remove(&auth.user.id, &id).await?;
    audit(
        &state,
        &format!("user:{}", auth.user.id),
        "device.delete",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Events a stream reads from the inbox at once.
const BATCH: u32 = 100;

struct Inbox {
    _slot: super::streams::StreamSlot,
    _streaming: Streaming,
    state: AppState,
    device_id: String,
    token_hash: String,
    /// Newest event id queued.
    cursor: i64,
    /// Newest event id handed to the client, and the one recorded.
    sent: i64,
    recorded: i64,
    grew: tokio::sync::broadcast::Receiver<Arc<str>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    queue: VecDeque<(i64, Event)>,
    finished: bool,
}

impl Inbox {
    /// Ends the stream when the token ended (logout, device removed,
    /// expiry); otherwise queues the events after the cursor.
    async fn refresh(&mut self) {
        if super::streams::token_ended(&self.state, &self.token_hash).await {
            let data = serde_json::json!({"message": "the device token ended (device removed, registered again, or expired)"});
            self.queue
                .push_back((0, Event::default().event("error").data(data.to_string())));
            self.finished = true;
            return;
        }
        self.record_sent().await;
        if let Ok(events) = self
            .state
            .registry
            .device_events_after(&self.device_id, self.cursor, BATCH)
            .await
        {
            for e in events {
                self.cursor = e.seq;
                let event = Event::default()
                    .id(e.seq.to_string())
                    .event(e.kind)
                    .data(e.payload);
                self.queue.push_back((e.seq, event));
            }
        }
    }

    /// Records the newest event id handed to the client.
    async fn record_sent(&mut self) {
        if self.sent > self.recorded
            && self
                .state
                .registry
                .mark_device_delivered(&self.device_id, self.sent)
                .await
                .is_ok()
        {
            self.recorded = self.sent;
        }
    }

    /// Waits for this device's inbox to grow, a recheck or the end of the
    /// process.
    async fn wait(&mut self) {
        let recheck = tokio::time::sleep(self.state.devices.limits().stream_recheck);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                _ = self.stopping.wait_for(|s| *s) => {
                    self.finished = true;
                    return;
                }
                () = &mut recheck => return,
                grew = self.grew.recv() => match grew {
                    Ok(id) if *id == *self.device_id => return,
                    Ok(_) => {}
                    // Missed some: read the inbox to be sure.
                    Err(_) => return,
                },
            }
        }
    }
}

/// The device's inbox as server-sent events: `id:` (increasing per
/// device), `event:` (the kind) and JSON `data:`. With `Last-Event-ID` it
/// replays every later event kept; without, it starts after the last event
/// a stream sent this device. Needs a device token.
#[utoipa::path(get, path = "/v1/devices/current/events", tag = "devices",
    security(("bearer" = [])),
    params(("Last-Event-ID" = Option<u64>, Header, description = "the id of the last event received")),
    responses(UserAuth,
        (status = 200, description = "the inbox's events as they come; `error` then the end \
            when the device token ends", content_type = "text/event-stream"),
        (status = 400, description = "invalid_last_event_id: not a whole number", body = ErrorBody),
        (status = 403, description = "device_token_required: a user token, not a device's", body = ErrorBody),
        (status = 429, description = "too_many_streams: 16 open streams per user; rate_limited: \
            the user's request quota (with Retry-After)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "whole seconds to wait (rate_limited only)")))))]
pub async fn device_events(
    State(state): State<AppState>,
    auth: AuthDevice,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_last_event_id",
                        "Last-Event-ID is the id: of the last event received, a whole number",
                    )
                })?,
        ),
    };
    let slot = super::streams::open(&state, &auth.user.id)?;
    let cursor = match last {
        Some(last) => last,
        None => state.registry.device_delivered(&auth.device_id).await?,
    };
    let ip = auth.ip.map(|ip| ip.to_string());
    let streaming = state
        .devices
        .stream_opened(&auth.device_id, ip.as_deref())
        .await;
    let inbox = Inbox {
        _slot: slot,
        _streaming: streaming,
        grew: state.devices.subscribe(),
        stopping: state.stopping.clone(),
        state,
        device_id: auth.device_id,
        token_hash: auth.token_hash,
        cursor,
        sent: cursor,
        recorded: cursor,
        queue: VecDeque::new(),
        finished: false,
    };
    let stream = futures::stream::unfold(inbox, |mut inbox| async move {
        loop {
            if let Some((seq, event)) = inbox.queue.pop_front() {
                inbox.sent = inbox.sent.max(seq);
                if inbox.queue.is_empty() {
                    // The batch is going out: a reconnect without
                    // Last-Event-ID starts after it.
                    inbox.record_sent().await;
                }
                return Some((Ok(event), inbox));
            }
            if inbox.finished {
                return None;
            }
            inbox.refresh().await;
            if inbox.queue.is_empty() && !inbox.finished {
                inbox.wait().await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
