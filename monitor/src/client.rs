//! A typed client of the gateway's public API, using the wire types of
//! `gateway-api` that the server answers with.

use futures::{Stream, StreamExt};
use gateway_api::{
    BindingList, BindingView, ChangeEvent, ChangeList, ChangeRequest, ChangeView, Credentials,
    CurrentSettings, DeviceList, DeviceRegistered, DeviceView, ErrorBody, MediaView, ModuleList,
    ModuleView, NewBindingRequest, NewDeviceRequest, Receipt, Redacted, SessionView, Settings,
    StreamError, UserView,
};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Why a call to the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the server URL (down, wrong address, network).
    #[error("cannot reach the gateway at {server}: {reason}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The session token is missing, expired or was revoked.
    #[error("your session at {server} has expired or was revoked: run `monitor login` again")]
    SessionExpired {
        /// The server URL.
        server: String,
    },
    /// The device token is unknown, expired or ended (the device was
    /// removed, or registered again by another terminal).
    #[error(
        "the device token of this terminal at {server} is no longer valid (the device was \
         removed, registered again elsewhere, or the token expired): run `monitor device \
         register` again"
    )]
    DeviceTokenEnded {
        /// The server URL.
        server: String,
    },
    /// The gateway answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's snake_case error code.
        code: String,
        /// The API's human message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the gateway at {server}: {reason}")]
    Protocol {
        /// The server URL.
        server: String,
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    /// Worth trying again later: the gateway was unreachable, overloaded,
    /// failed on its side or answered garbled (the request itself was fine).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Protocol { .. } => true,
            ClientError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The API error code, when the gateway answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one gateway, with or without a session token.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    token: Option<String>,
    /// The token is a device token (a `401` means the device's token ended,
    /// which logging in again does not mend).
    device: bool,
    http: reqwest::Client,
}

/// How long one ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// A client of the gateway at `server` (e.g. `http://127.0.0.1:8080`).
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client {
            server: server.trim_end_matches('/').to_owned(),
            token,
            device: false,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// A client acting as one of the user's devices, with its device token.
    pub fn device(server: &str, token: String) -> Client {
        Client {
            device: true,
            ..Client::new(server, Some(token))
        }
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A request with the session token and no overall time limit (for
    /// event streams, which last as long as the delivery).
    pub(crate) fn untimed(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.server));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.untimed(method, path).timeout(REQUEST_TIMEOUT)
    }

    pub(crate) async fn send(
        &self,
        builder: RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = builder.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.json::<ErrorBody>().await.ok().map(|b| b.error);
        let code = body.as_ref().map(|e| e.code.as_str());
        if status == StatusCode::UNAUTHORIZED && code != Some("invalid_credentials") {
            if self.device {
                return Err(ClientError::DeviceTokenEnded {
                    server: self.server.clone(),
                });
            }
            return Err(ClientError::SessionExpired {
                server: self.server.clone(),
            });
        }
        Err(match body {
            Some(error) => ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            },
            None => ClientError::Api {
                status: status.as_u16(),
                code: "http_error".into(),
                message: format!("HTTP {status}"),
            },
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            reason = inner.to_string();
            source = inner.source();
        }
        ClientError::Unreachable {
            server: self.server.clone(),
            reason,
        }
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(builder).await?;
        response.json().await.map_err(|e| ClientError::Protocol {
            server: self.server.clone(),
            reason: e.to_string(),
        })
    }

    /// `POST /v1/users`.
    pub async fn register(&self, username: &str, password: &str) -> Result<UserView, ClientError> {
        let body = credentials(username, password);
        self.json(self.request(reqwest::Method::POST, "/v1/users").json(&body))
            .await
    }

    /// `POST /v1/sessions`.
    pub async fn login(&self, username: &str, password: &str) -> Result<SessionView, ClientError> {
        let body = credentials(username, password);
        self.json(
            self.request(reqwest::Method::POST, "/v1/sessions")
                .json(&body),
        )
        .await
    }

    /// `DELETE /v1/sessions/current`.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.send(self.request(reqwest::Method::DELETE, "/v1/sessions/current"))
            .await
            .map(drop)
    }

    /// `GET /v1/modules`.
    pub async fn modules(&self) -> Result<Vec<ModuleView>, ClientError> {
        let list: ModuleList = self
            .json(self.request(reqwest::Method::GET, "/v1/modules"))
            .await?;
        Ok(list.modules)
    }

    /// `GET /v1/bindings`.
    pub async fn bindings(&self) -> Result<Vec<BindingView>, ClientError> {
        let list: BindingList = self
            .json(self.request(reqwest::Method::GET, "/v1/bindings"))
            .await?;
        Ok(list.bindings)
    }

    /// `POST /v1/bindings`.
    pub async fn bind(
        &self,
        module: &str,
        account: &str,
        credentials: &Map<String, Value>,
    ) -> Result<BindingView, ClientError> {
        let body = NewBindingRequest {
            module: module.to_owned(),
            account: account.to_owned(),
            credentials: Redacted::new(credentials.clone()),
        };
        self.json(
            self.request(reqwest::Method::POST, "/v1/bindings")
                .json(&body),
        )
        .await
    }

    /// `DELETE /v1/bindings/{id}`.
    pub async fn unbind(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/bindings/{}", segment(id));
        self.send(self.request(reqwest::Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// `GET /v1/bindings/{id}/settings`: what the account holds on its network.
    pub async fn current_settings(&self, id: &str) -> Result<CurrentSettings, ClientError> {
        let path = format!("/v1/bindings/{}/settings", segment(id));
        self.json(self.request(reqwest::Method::GET, &path)).await
    }

    /// `POST /v1/media` with an image.
    pub async fn upload_media(
        &self,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaView, ClientError> {
        let builder = self
            .request(reqwest::Method::POST, "/v1/media")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        self.json(builder).await
    }

    /// `POST /v1/changes` with an `Idempotency-Key`: a repeat with the same key
    /// returns the first answer, so a report can be sent again safely.
    pub async fn report(
        &self,
        module: &str,
        account: Option<&str>,
        settings: &Settings,
        from_local_client: bool,
        idempotency_key: &str,
    ) -> Result<Receipt, ClientError> {
        let body = ChangeRequest {
            module: module.to_owned(),
            account: account.map(str::to_owned),
            settings: settings.clone(),
            from_local_client,
        };
        let builder = self
            .request(reqwest::Method::POST, "/v1/changes")
            .header("idempotency-key", idempotency_key)
            .json(&body);
        self.json(builder).await
    }

    /// `GET /v1/changes/{id}`.
    pub async fn change(&self, id: &str) -> Result<ChangeView, ClientError> {
        let path = format!("/v1/changes/{}", segment(id));
        self.json(self.request(reqwest::Method::GET, &path)).await
    }

    /// `GET /v1/changes?limit=`: recent changes, newest first.
    pub async fn changes(&self, limit: u32) -> Result<Vec<ChangeView>, ClientError> {
        let path = format!("/v1/changes?limit={limit}");
        let list: ChangeList = self.json(self.request(reqwest::Method::GET, &path)).await?;
        Ok(list.changes)
    }

    /// `GET /v1/changes/{id}/events`: target updates until every target is final.
    pub async fn events(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = ChangeEvent> + use<>, ClientError> {
        use eventsource_stream::Eventsource;
        let path = format!("/v1/changes/{}/events", segment(id));
        let response = self.send(self.untimed(reqwest::Method::GET, &path)).await?;
        Ok(response.bytes_stream().eventsource().map(|event| {
            let parsed = event
                .map_err(|e| e.to_string())
                .and_then(|e| ChangeEvent::parse(&e.event, &e.data).map_err(|e| e.to_string()));
            parsed.unwrap_or_else(|message| ChangeEvent::Error(StreamError { message }))
        }))
    }
}

impl Client {
    /// `POST /v1/devices`: registers this terminal (or registers it again);
    /// `true` when it was new.
    pub async fn register_device(
        &self,
        request: &NewDeviceRequest,
    ) -> Result<(DeviceRegistered, bool), ClientError> {
        let builder = self
            .request(reqwest::Method::POST, "/v1/devices")
            .json(request);
        let response = self.send(builder).await?;
        let created = response.status() == StatusCode::CREATED;
        let registered = response.json().await.map_err(|e| self.protocol(e))?;
        Ok((registered, created))
    }

    /// `GET /v1/devices`: the user's devices with their state.
    pub async fn devices(&self) -> Result<Vec<DeviceView>, ClientError> {
        let list: DeviceList = self
            .json(self.request(reqwest::Method::GET, "/v1/devices"))
            .await?;
        Ok(list.devices)
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            server: self.server.clone(),
            reason: e.to_string(),
        }
    }

    /// A call to the handoff service, `/v1/services/handoff{path}`.
    async fn handoff<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let post = method == reqwest::Method::POST;
        let mut builder = self.request(method, &format!("/v1/services/handoff{path}"));
        if post {
            // A retry of this call (after a lost answer) is the same request.
            builder = builder.header("idempotency-key", uuid::Uuid::new_v4().to_string());
        }
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        self.json(builder).await
    }

    /// `POST /v1/services/handoff/sessions`: a new session held by this device.
    pub async fn open_session(
        &self,
        app: &str,
        state: &Value,
    ) -> Result<HandoffSession, ClientError> {
        let body = serde_json::json!({"app": app, "state": state});
        self.handoff(reqwest::Method::POST, "/sessions", Some(body))
            .await
    }

    /// `GET /v1/services/handoff/sessions/{id}`.
    pub async fn session(&self, id: &str) -> Result<HandoffSession, ClientError> {
        let path = format!("/sessions/{}", segment(id));
        self.handoff(reqwest::Method::GET, &path, None).await
    }

    /// `PUT /v1/services/handoff/sessions/{id}`: progress based on `version`.
    pub async fn push_session(
        &self,
        id: &str,
        version: u64,
        state: &Value,
    ) -> Result<HandoffSession, ClientError> {
        let path = format!("/sessions/{}", segment(id));
        let body = serde_json::json!({"version": version, "state": state});
        self.handoff(reqwest::Method::PUT, &path, Some(body)).await
    }

    /// `POST /v1/services/handoff/sessions/{id}/switch`.
    pub async fn switch_session(
        &self,
        id: &str,
        to: Option<&str>,
    ) -> Result<SwitchAsked, ClientError> {
        let path = format!("/sessions/{}/switch", segment(id));
        let body = match to {
            Some(to) => serde_json::json!({"to": to}),
            None => serde_json::json!({}),
        };
        self.handoff(reqwest::Method::POST, &path, Some(body)).await
    }

    /// `GET /v1/services/handoff/sessions/{id}/log`, every page.
    pub async fn session_log(&self, id: &str) -> Result<Vec<Map<String, Value>>, ClientError> {
        let mut entries = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/sessions/{}/log", segment(id));
            if let Some(after) = &after {
                path.push_str(&format!("?after={}", segment(after)));
            }
            let page: HandoffLog = self.handoff(reqwest::Method::GET, &path, None).await?;
            entries.extend(page.entries);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(entries),
            }
        }
    }

    /// `GET /v1/services/handoff/switches/{id}`.
    pub async fn switch(&self, id: &str) -> Result<SwitchView, ClientError> {
        let path = format!("/switches/{}", segment(id));
        self.handoff(reqwest::Method::GET, &path, None).await
    }

    /// `POST /v1/services/handoff/switches/{id}/accept`.
    pub async fn accept_switch(&self, id: &str) -> Result<SwitchView, ClientError> {
        let path = format!("/switches/{}/accept", segment(id));
        self.handoff(reqwest::Method::POST, &path, Some(serde_json::json!({})))
            .await
    }

    /// `POST /v1/services/handoff/switches/{id}/decline` with a reason.
    pub async fn decline_switch(&self, id: &str, reason: &str) -> Result<SwitchView, ClientError> {
        let path = format!("/switches/{}/decline", segment(id));
        let body = serde_json::json!({"reason": reason});
        self.handoff(reqwest::Method::POST, &path, Some(body)).await
    }

    /// `GET /v1/devices/current/events` (device token): the device's inbox,
    /// after `last_event_id` when given (`Last-Event-ID`), else after the
    /// last event a stream sent this device. The stream ends when the
    /// connection does.
    pub async fn inbox(
        &self,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = InboxItem> + use<>, ClientError> {
        use eventsource_stream::Eventsource;
        let mut builder = self.untimed(reqwest::Method::GET, "/v1/devices/current/events");
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id.to_string());
        }
        let response = self.send(builder).await?;
        Ok(response
            .bytes_stream()
            .eventsource()
            .map(|event| match event {
                Ok(e) => InboxItem::Event {
                    id: e.id.trim().parse().ok(),
                    data: serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
                    kind: e.event,
                },
                Err(e) => InboxItem::Broken(e.to_string()),
            }))
    }
}

/// One item of a device's event stream.
#[derive(Debug, Clone)]
pub enum InboxItem {
    /// An event: its `id:` (when it has one), `event:` and JSON `data:`.
    Event {
        /// The event id, increasing per device.
        id: Option<u64>,
        /// Its kind, e.g. `handoff.offer`.
        kind: String,
        /// Its data (a string when it is not JSON).
        data: Value,
    },
    /// The connection broke mid-stream.
    Broken(String),
}

/// A handoff session as the handoff service shows it. (The service is a
/// plugin; `gateway-api` has no types for it.)
#[derive(Debug, Clone, Deserialize)]
pub struct HandoffSession {
    /// Session id.
    pub id: String,
    /// Application id or URL.
    pub app: String,
    /// The device that holds it.
    pub holder: String,
    /// Increases with every progress update; starts at 1.
    pub version: u64,
    /// The application's state.
    pub state: Value,
}

/// The answer to a switch request.
#[derive(Debug, Clone, Deserialize)]
pub struct SwitchAsked {
    /// Switch id.
    pub switch_id: String,
    /// `offered`.
    pub status: String,
    /// The device it is offered to.
    pub to: Option<String>,
}

/// A switch after an answer.
#[derive(Debug, Clone, Deserialize)]
pub struct SwitchView {
    /// Switch id.
    pub switch_id: String,
    /// The session.
    pub session_id: String,
    /// `offered`, `accepted` or `unplaced`.
    pub status: String,
    /// The device offered to now (the last one, once it ended).
    pub to: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HandoffLog {
    entries: Vec<Map<String, Value>>,
    /// Where the next page starts; none on the last.
    #[serde(default)]
    next_after: Option<String>,
}

fn credentials(username: &str, password: &str) -> Credentials {
    Credentials {
        username: username.to_owned(),
        password: Redacted::new(password.to_owned()),
    }
}

/// Percent-encodes a path segment (ids are opaque strings).
pub(crate) fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
