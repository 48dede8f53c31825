//! The service world (ABI 1 of `gateway:service`): a plugin mounted
//! at `/v1/services/{id}/...`, called after the gateway authenticated the
//! caller, with the host capabilities its manifest grants.

#[doc(hidden)]
pub mod __private {
    //! Generated bindings; not part of the SDK's API.
    #![allow(missing_docs, unsafe_code, clippy::all)]
    wit_bindgen::generate!({
        world: "service",
        path: "wit/service-v1",
        pub_export_macro: true,
        export_macro_name: "__export_service_world",
        default_bindings_module: "::plugin_sdk::service::__private",
    });
}

pub use self::__private::gateway::service::types::{
    BlobEvent, BlobEventKind, Caller, Description, Header, PublicRoute, Request, Response,
};
pub use self::__private::gateway::service::{
    blobs, clock, config, devices, events, kv, log, media, timers,
};

/// The operator's `config` of this service (the manifest's), read into
/// `T`; every service may read it.
///
/// ```ignore
/// #[derive(serde::Deserialize, Default)]
/// struct Settings { offer_ttl_secs: Option<u64> }
/// let ttl = plugin_sdk::service::config_as::<Settings>().unwrap_or_default().offer_ttl_secs;
/// ```
pub fn config_as<T: serde::de::DeserializeOwned>() -> Result<T, serde_json::Error> {
    serde_json::from_str(&config::get())
}

/// The service ABI this SDK builds (the `gateway-service-abi` section
/// [`export_service!`](crate::export_service) writes; the gateway refuses
/// versions it does not load).
pub const ABI_VERSION: u32 = 1;

/// A service plugin. `handle` answers every request routed to it.
pub trait Service {
    /// Public routes (answered without a token) and blob routes (whose
    /// request body the gateway stores as a blob before `handle` runs).
    fn describe() -> Description {
        Description {
            public_routes: Vec::new(),
            blob_routes: Vec::new(),
        }
    }

    /// Answers one request.
    fn handle(request: Request) -> Response;

    /// A timer set with [`timers::schedule`] is due.
    fn on_timer(user_id: String, name: String) {
        let _ = (user_id, name);
    }

    /// Something happened to a blob of the user's (grant `blobs`): an
    /// upload was created (return an error to refuse it: the text is the
    /// client's answer), started, stored, interrupted, completed, expired
    /// or terminated; a download started, finished or broke.
    fn on_blob(user_id: String, event: BlobEvent) -> Result<(), String> {
        let _ = (user_id, event);
        Ok(())
    }
}

/// Exports a [`Service`] implementation as the plugin's entry points.
#[macro_export]
macro_rules! export_service {
    ($service:ty) => {
        #[doc(hidden)]
        pub struct __GatewayServiceExport;

        impl $crate::service::__private::Guest for __GatewayServiceExport {
            fn describe() -> $crate::service::Description {
                <$service as $crate::service::Service>::describe()
            }
            fn handle(request: $crate::service::Request) -> $crate::service::Response {
                <$service as $crate::service::Service>::handle(request)
            }
            fn on_timer(user_id: String, name: String) {
                <$service as $crate::service::Service>::on_timer(user_id, name)
            }
            fn on_blob(user_id: String, event: $crate::service::BlobEvent) -> Result<(), String> {
                <$service as $crate::service::Service>::on_blob(user_id, event)
            }
        }

        $crate::service::__private::__export_service_world!(__GatewayServiceExport);

        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "gateway-service-abi")]
        pub static __GATEWAY_SERVICE_ABI_VERSION: [u8; 4] =
            $crate::service::ABI_VERSION.to_le_bytes();
    };
}

pub mod kit {
    //! Small helpers most services write: JSON answers and errors in the
    //! gateway's error shape, typed reads and writes of the key-value
    //! store (one key or a whole prefix), answers that send a blob, the
    //! query string, RFC 3339 times.

    use super::{kv, Header, Request, Response};
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::{json, Value};

    /// A JSON answer.
    pub fn answer(status: u16, body: &Value) -> Response {
        Response {
            status,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.to_string().into_bytes(),
        }
    }

    /// An answer with no body (`204`).
    pub fn no_content() -> Response {
        Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// An answer whose bytes are blob `id`, sent by the gateway with
    /// `content_type` (grant `blobs`; `Range` is honoured).
    pub fn blob(status: u16, id: &str, content_type: &str) -> Response {
        Response {
            status,
            headers: vec![
                Header {
                    name: "gateway-blob".into(),
                    value: id.into(),
                },
                Header {
                    name: "content-type".into(),
                    value: content_type.into(),
                },
            ],
            body: Vec::new(),
        }
    }

    /// An error answer in the gateway's shape:
    /// `{"error": {"code", "message"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        answer(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    }

    /// A stored value with the version it was read at (for
    /// compare-and-swap).
    pub struct Read<T> {
        /// The value.
        pub value: T,
        /// Its version.
        pub version: u64,
    }

    /// Reads a JSON value; a store failure or a value that is not `T` is
    /// an error answer.
    pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<Read<T>>, Response> {
        match kv::get(key) {
            Ok(Some(e)) => serde_json::from_slice(&e.value)
                .map(|value| {
                    Some(Read {
                        value,
                        version: e.version,
                    })
                })
                .map_err(|e| error(500, "corrupt", &e.to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// Every value under `prefix` that reads as `T`, in key order, read in
    /// pages of 500; values that do not are skipped.
    pub fn scan_all<T: DeserializeOwned>(prefix: &str) -> Result<Vec<T>, Response> {
        let mut found = Vec::new();
        let mut after = prefix.to_owned();
        loop {
            let page = kv::scan(prefix, &after, 500).map_err(|e| store_error(&e))?;
            found.extend(
                page.iter()
                    .filter_map(|entry| serde_json::from_slice::<T>(&entry.value).ok()),
            );
            match page.last() {
                Some(last) if page.len() == 500 => after = last.key.clone(),
                _ => return Ok(found),
            }
        }
    }

    /// A write of `value` as JSON that requires version `expect` (0: the
    /// key must not exist).
    pub fn put<T: Serialize>(key: &str, value: &T, expect: u64) -> kv::Write {
        kv::Write {
            key: key.into(),
            value: Some(serde_json::to_vec(value).unwrap_or_default()),
            expect: Some(expect),
        }
    }

    /// A delete that requires version `expect`.
    pub fn remove(key: &str, expect: u64) -> kv::Write {
        kv::Write {
            key: key.into(),
            value: None,
            expect: Some(expect),
        }
    }

    /// The answer to a failed store call: a lost compare-and-swap is
    /// `409 concurrent_change`, anything else `503 store_failed`.
    pub fn store_error(e: &kv::KvError) -> Response {
        match e {
            kv::KvError::Conflict(_) => error(
                409,
                "concurrent_change",
                "another request changed this at the same time; read it again and retry",
            ),
            kv::KvError::TooLarge(why) => error(413, "store_full", why),
            e => error(503, "store_failed", &format!("{e:?}")),
        }
    }

    /// Commits `writes` atomically.
    pub fn commit(writes: Vec<kv::Write>) -> Result<(), Response> {
        kv::commit(&writes).map(|_| ()).map_err(|e| store_error(&e))
    }

    /// The JSON body as `T` (an empty body is `T::default()`), else
    /// `422 invalid_body`.
    pub fn body<T: DeserializeOwned + Default>(request: &Request) -> Result<T, Response> {
        if request.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&request.body)
            .map_err(|e| error(422, "invalid_body", &e.to_string()))
    }

    /// A query parameter, as sent.
    pub fn query(request: &Request, name: &str) -> Option<String> {
        request.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }

    /// A request header (case-insensitive name).
    pub fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Milliseconds since the epoch as RFC 3339 (`2026-12-03T08:05:27.000Z`).
    pub fn iso(ms: u64) -> String {
        // Days from the epoch to a civil date, without a date library.
        let secs = ms / 1000;
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60,
            ms % 1000
        )
    }
}

pub mod http {
    //! Outbound HTTP through the gateway (grant `"http"` in the service's
    //! manifest): only to `scheme://host:port` origins in its
    //! `allowed_hosts`, within the call's deadline. The same shapes as the
    //! connectors' `http`.
    //!
    //! Build a [`Request`] with [`request`] and its builder methods and send
    //! it with [`send`].

    pub use super::__private::gateway::service::http::{Header, HttpError, Request, Response};

    /// Sends a request and waits for the whole answer (redirects within the
    /// grant are followed, up to 5).
    ///
    /// - [`HttpError::Denied`]: the origin is not in the service's
    ///   `allowed_hosts`; the text names the origin only.
    /// - [`HttpError::TooLarge`]: above the gateway's answer cap (16 MiB
    ///   by default).
    /// - [`HttpError::Failed`]: connection refused, DNS, TLS.
    /// - A server that does not answer before the call's deadline: the
    ///   gateway ends the whole call there (its caller is told the service
    ///   failed) and `send` does not return.
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        super::__private::gateway::service::http::send(request)
    }

    /// A request with no headers and no body; add them with the builder
    /// methods of [`Request`].
    pub fn request(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    impl Request {
        /// Adds a header.
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push(Header {
                name: name.to_owned(),
                value: value.to_owned(),
            });
            self
        }

        /// Sets a JSON body (and its content type).
        pub fn json(self, body: impl Into<Vec<u8>>) -> Self {
            let mut with = self.header("content-type", "application/json");
            with.body = body.into();
            with
        }

        /// Adds `Authorization: Basic` for a user and password.
        pub fn basic_auth(self, user: &str, password: &str) -> Self {
            let token = crate::base64(format!("{user}:{password}").as_bytes());
            self.header("authorization", &format!("Basic {token}"))
        }

        /// Adds `Authorization: Bearer`.
        pub fn bearer(self, token: &str) -> Self {
            self.header("authorization", &format!("Bearer {token}"))
        }

        /// Sets a raw body with its content type.
        pub fn body(self, content_type: &str, body: Vec<u8>) -> Self {
            let mut with = self.header("content-type", content_type);
            with.body = body;
            with
        }
    }

    impl Response {
        /// The first header of that name (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str())
        }

        /// True for 2xx.
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }
    }
}
