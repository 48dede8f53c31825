//! The connector world (ABI 2): what an IM network's connector implements
//! and may call. Re-exported at the crate root.

#[doc(hidden)]
pub mod __private {
    //! Generated bindings; not part of the SDK's API.
    #![allow(missing_docs, unsafe_code, clippy::all)]
    wit_bindgen::generate!({
        world: "connector",
        path: "wit/v2",
        pub_export_macro: true,
        export_macro_name: "__export_connector_world",
        default_bindings_module: "::plugin_sdk::connector::__private",
    });
}

pub use self::__private::gateway::connector::types::{
    Account, AvatarLimits, ConnectorError, Description, Field, Image, Limits, PushOutcome,
    SettingField, SettingKind, Settings,
};

/// The ABI version this SDK writes into plugins.
pub const ABI_VERSION: u32 = 2;

/// Name of the custom section holding the ABI version (4 bytes, little endian).
pub const ABI_SECTION: &str = "gateway-abi";

impl Description {
    /// A description of a connector that sets `fields`, with no limits, free
    /// mood text, and credentials and config it checks itself (any JSON
    /// object). Chain the other methods to say more.
    ///
    /// ```
    /// use plugin_sdk::{Description, Field, Limits, SettingField};
    ///
    /// let description = Description::new(vec![Field::Signature, Field::Mood])
    ///     .limits(Limits { max_signature_chars: Some(140), max_mood_chars: None, avatar: None })
    ///     .moods(&["Happy", "Away"])
    ///     .credentials(vec![SettingField::secret("token", "API token")])
    ///     .config(vec![SettingField::url("api", "API base URL")]);
    /// assert_eq!(description.moods, ["Happy", "Away"]);
    /// assert_eq!(description.credentials.unwrap()[0].name, "token");
    /// ```
    pub fn new(fields: Vec<Field>) -> Self {
        Description {
            fields,
            limits: Limits {
                max_signature_chars: None,
                max_mood_chars: None,
                avatar: None,
            },
            moods: Vec::new(),
            credentials: None,
            config: None,
        }
    }

    /// The network's limits; the gateway cuts and transcodes to them before
    /// [`Connector::push`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A closed mood vocabulary, in the network's spelling. The gateway maps
    /// a reported mood to it case-insensitively and does not send moods
    /// outside it (the user sees why).
    pub fn moods(mut self, moods: &[&str]) -> Self {
        self.moods = moods.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    /// The fields of a user's credentials. The gateway refuses a binding
    /// that misses a required one, holds one of the wrong kind or one not
    /// listed, naming the field, before [`Connector::verify`] runs; users
    /// see the list in `GET /v1/modules`. An empty list: no credentials.
    pub fn credentials(mut self, fields: Vec<SettingField>) -> Self {
        self.credentials = Some(fields);
        self
    }

    /// The fields of the operator's module config, checked the same way
    /// when the operator uploads the module.
    pub fn config(mut self, fields: Vec<SettingField>) -> Self {
        self.config = Some(fields);
        self
    }
}

impl SettingField {
    fn of(kind: SettingKind, name: &str, label: &str) -> Self {
        SettingField {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            required: true,
            help: String::new(),
        }
    }

    /// A required non-empty string. Names are 1-64 characters of `a-z`,
    /// `0-9` and `_`, starting with a letter; labels 1-100 characters.
    pub fn text(name: &str, label: &str) -> Self {
        Self::of(SettingKind::Text, name, label)
    }

    /// A required non-empty string to keep hidden (password, token).
    pub fn secret(name: &str, label: &str) -> Self {
        Self::of(SettingKind::Secret, name, label)
    }

    /// A required absolute `http://` or `https://` URL.
    pub fn url(name: &str, label: &str) -> Self {
        Self::of(SettingKind::Url, name, label)
    }

    /// A required integer.
    pub fn integer(name: &str, label: &str) -> Self {
        Self::of(SettingKind::Integer, name, label)
    }

    /// A required `true` or `false`.
    pub fn boolean(name: &str, label: &str) -> Self {
        Self::of(SettingKind::Boolean, name, label)
    }

    /// The same field, which may be left out.
    ///
    /// ```
    /// use plugin_sdk::SettingField;
    ///
    /// let token = SettingField::secret("access_token", "Access token")
    ///     .optional()
    ///     .help("instead of the password");
    /// assert!(!token.required);
    /// ```
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    /// One line of help shown beside the field (at most 500 characters).
    pub fn help(mut self, help: &str) -> Self {
        self.help = help.to_owned();
        self
    }
}

impl Account {
    /// The user's credentials as your own type. Declare the fields in
    /// [`Description::credentials`] and the gateway has checked them before
    /// this call; a value that still does not fit becomes
    /// [`ConnectorError::AuthFailed`] (the user's to fix).
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Credentials {
    ///     token: String,
    /// }
    ///
    /// let account = plugin_sdk::Account {
    ///     login: "alice".into(),
    ///     credentials: r#"{"token":"t0k"}"#.into(),
    ///     config: "{}".into(),
    /// };
    /// let credentials: Credentials = account.credentials_as()?;
    /// assert_eq!(credentials.token, "t0k");
    /// # Ok::<(), plugin_sdk::ConnectorError>(())
    /// ```
    pub fn credentials_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_str(&self.credentials).map_err(|e| {
            ConnectorError::AuthFailed(format!("the credentials do not fit this network: {e}"))
        })
    }

    /// The module's operator config as your own type; a value that does not
    /// fit becomes [`ConnectorError::Misconfigured`] (the operator's to fix).
    pub fn config_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_str(&self.config).map_err(|e| {
            ConnectorError::Misconfigured(format!("the module config does not fit: {e}"))
        })
    }
}

/// A connector to one IM network. Only [`Connector::describe`] and
/// [`Connector::push`] are required.
///
/// Each call runs in a fresh instance: nothing survives between calls, so a
/// connector that logs in does so in every call that needs a session.
pub trait Connector {
    /// Fields, limits, mood vocabulary and the credential and config fields
    /// of the network. Called once when the operator uploads the module.
    fn describe() -> Description;

    /// Checks the account's credentials when a user binds it; the default
    /// accepts them. Prove the account where the network lets you (log in,
    /// or ask who the token belongs to and compare with `account.login`):
    /// a gateway binds an account of a module to one user only.
    /// [`ConnectorError::AuthFailed`] answers the user
    /// `422 invalid_credentials` with your text.
    fn verify(account: &Account) -> Result<(), ConnectorError> {
        let _ = account;
        Ok(())
    }

    /// Applies the present fields of `settings` to the account and says
    /// which ones the network now holds (and which of those you had to
    /// shorten or convert). Fields you cannot set are simply left out of
    /// `applied`. Values are already within your [`Limits`] and moods.
    fn push(account: &Account, settings: &Settings) -> Result<PushOutcome, ConnectorError>;

    /// Reads the account's current settings back (the monitor compares them
    /// with what it last reported, to notice changes made elsewhere); the
    /// default says it cannot. Return the fields you can read and leave the
    /// others `None`.
    ///
    /// ```no_run
    /// use plugin_sdk::{http, Account, ConnectorError, Settings};
    ///
    /// fn fetch(account: &Account) -> Result<Settings, ConnectorError> {
    ///     let url = format!("https://parrot.example/api/users/{}", http::encode_segment(&account.login));
    ///     let response = http::send(&http::request("GET", &url))?;
    ///     response.error_for_status()?;
    ///     let profile: serde_json::Value = response.json()?;
    ///     Ok(Settings {
    ///         avatar: None,
    ///         signature: profile["status"].as_str().map(str::to_owned),
    ///         mood: None,
    ///     })
    /// }
    /// ```
    fn fetch(account: &Account) -> Result<Settings, ConnectorError> {
        let _ = account;
        Err(ConnectorError::Rejected(
            "this connector cannot read settings back".into(),
        ))
    }
}

/// Exports a [`Connector`] implementation as the plugin's entry points and
/// writes the ABI version section. Use it once per plugin crate.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[doc(hidden)]
        pub struct __GatewayConnectorExport;

        impl $crate::connector::__private::Guest for __GatewayConnectorExport {
            fn describe() -> $crate::Description {
                <$connector as $crate::Connector>::describe()
            }
            fn verify(account: $crate::Account) -> Result<(), $crate::ConnectorError> {
                <$connector as $crate::Connector>::verify(&account)
            }
            fn push(
                account: $crate::Account,
                settings: $crate::Settings,
            ) -> Result<$crate::PushOutcome, $crate::ConnectorError> {
                <$connector as $crate::Connector>::push(&account, &settings)
            }
            fn fetch(account: $crate::Account) -> Result<$crate::Settings, $crate::ConnectorError> {
                <$connector as $crate::Connector>::fetch(&account)
            }
        }

        $crate::connector::__private::__export_connector_world!(__GatewayConnectorExport);

        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "gateway-abi")]
        pub static __GATEWAY_ABI_VERSION: [u8; 4] = $crate::ABI_VERSION.to_le_bytes();
    };
}

pub mod http {
    //! Outbound HTTP through the gateway: only to `scheme://host:port` origins the
    //! operator granted in the module's `allowed_hosts`, within the call's
    //! deadline and the module's rate limit.
    //!
    //! Build a [`Request`] with [`request`] and its builder methods, send it
    //! with [`send`], and turn the answer into a typed error with
    //! [`Response::error_for_status`]. `?` converts an [`HttpError`] into a
    //! [`ConnectorError`](crate::ConnectorError).

    pub use crate::connector::__private::gateway::connector::http::{
        Header, HttpError, Request, Response,
    };

    /// Sends a request and waits for the whole answer (redirects within the
    /// grant are followed, up to 5).
    ///
    /// - [`HttpError::Denied`]: the origin is not granted; `?` makes it
    ///   [`ConnectorError::Misconfigured`](crate::ConnectorError::Misconfigured),
    ///   and the gateway treats the call as the operator's to fix whatever
    ///   you return.
    /// - [`HttpError::RateLimited`]: the module's own outbound rate limit;
    ///   `?` makes it [`ConnectorError::RateLimited`](crate::ConnectorError::RateLimited).
    /// - [`HttpError::Timeout`], [`HttpError::TooLarge`] (above the
    ///   gateway's answer cap, 16 MiB by default), [`HttpError::Failed`]
    ///   (connection refused, DNS, TLS): `?` makes them
    ///   [`ConnectorError::Transient`](crate::ConnectorError::Transient).
    ///
    /// ```no_run
    /// use plugin_sdk::http;
    ///
    /// let response = http::send(&http::request("GET", "https://parrot.example/api/me").bearer("t0k"))?;
    /// response.error_for_status()?;
    /// let me: serde_json::Value = response.json()?;
    /// # Ok::<(), plugin_sdk::ConnectorError>(())
    /// ```
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        crate::connector::__private::gateway::connector::http::send(request)
    }

    /// A request with no headers and no body; add them with the builder
    /// methods of [`Request`].
    ///
    /// ```
    /// use plugin_sdk::http;
    ///
    /// let put = http::request("PUT", "https://parrot.example/api/users/alice/status")
    ///     .bearer("t0k")
    ///     .json(r#"{"text":"on holiday"}"#);
    /// assert_eq!(put.method, "PUT");
    /// assert_eq!(put.headers[0].value, "Bearer t0k");
    /// assert_eq!(put.headers[1].value, "application/json");
    /// ```
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

    impl From<HttpError> for crate::ConnectorError {
        fn from(e: HttpError) -> Self {
            use crate::ConnectorError as E;
            match e {
                HttpError::RateLimited(secs) => E::RateLimited(secs),
                HttpError::Denied(why) => E::Misconfigured(format!("host not granted: {why}")),
                HttpError::Timeout => E::Transient("the server did not answer in time".into()),
                HttpError::TooLarge => E::Transient("the server's answer was too large".into()),
                HttpError::Failed(why) => E::Transient(why),
            }
        }
    }

    /// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
    pub fn encode_segment(segment: &str) -> String {
        let mut out = String::with_capacity(segment.len());
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    impl Response {
        /// `Ok` for 2xx; otherwise the usual meaning of the status as a typed
        /// error:
        ///
        /// | status | error |
        /// |---|---|
        /// | 401, 403 | `AuthFailed("HTTP 401: <body>")`: the user's credentials |
        /// | 429 | `RateLimited(n)`: `Retry-After` in seconds (1 when absent or a date) |
        /// | 408, 500-599 | `Transient("HTTP 503: <body>")`: retried with backoff |
        /// | other (1xx, 3xx, 4xx) | `Rejected("HTTP 404: <body>")`: permanent |
        ///
        /// The text quotes the first 300 characters of the answer's body and
        /// users see it: when the URL itself is secret (a hook token in the
        /// path), keep the status and drop the text, as error pages often
        /// quote the path they were asked for. Map statuses yourself before
        /// calling it where your network means something else by them (a
        /// Matrix 429 carries `retry_after_ms` in its body, for one).
        ///
        /// ```
        /// use plugin_sdk::http::{Header, Response};
        /// use plugin_sdk::ConnectorError;
        ///
        /// let busy = Response {
        ///     status: 429,
        ///     headers: vec![Header { name: "retry-after".into(), value: "30".into() }],
        ///     body: vec![],
        /// };
        /// assert!(matches!(busy.error_for_status(), Err(ConnectorError::RateLimited(30))));
        ///
        /// let refused = Response { status: 401, headers: vec![], body: b"bad token".to_vec() };
        /// assert!(matches!(refused.error_for_status(), Err(ConnectorError::AuthFailed(t)) if t == "HTTP 401: bad token"));
        /// ```
        pub fn error_for_status(&self) -> Result<(), crate::ConnectorError> {
            use crate::ConnectorError as E;
            let text: String = String::from_utf8_lossy(&self.body)
                .chars()
                .take(300)
                .collect();
            match self.status {
                200..=299 => Ok(()),
                401 | 403 => Err(E::AuthFailed(format!("HTTP {}: {text}", self.status))),
                429 => Err(E::RateLimited(
                    self.header("retry-after")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(1),
                )),
                408 | 500..=599 => Err(E::Transient(format!("HTTP {}: {text}", self.status))),
                _ => Err(E::Rejected(format!("HTTP {}: {text}", self.status))),
            }
        }

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

        /// The body as JSON of your own type; a body that is not becomes
        /// [`ConnectorError::Transient`](crate::ConnectorError::Transient)
        /// (a proxy's error page in place of the API's answer, most often).
        ///
        /// ```
        /// use plugin_sdk::http::Response;
        ///
        /// let answer = Response { status: 200, headers: vec![], body: br#"{"status":"hi"}"#.to_vec() };
        /// let value: serde_json::Value = answer.json()?;
        /// assert_eq!(value["status"], "hi");
        /// # Ok::<(), plugin_sdk::ConnectorError>(())
        /// ```
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::ConnectorError> {
            serde_json::from_slice(&self.body).map_err(|e| {
                crate::ConnectorError::Transient(format!(
                    "the answer (HTTP {}) is not the JSON expected: {e}",
                    self.status
                ))
            })
        }
    }
}

/// Logging into the gateway's log, tagged with the module id.
pub mod log {
    use crate::connector::__private::gateway::connector::log::{write, Level};

    /// Debug message.
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    /// Informational message.
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    /// Warning.
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    /// Error.
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

/// Milliseconds since the Unix epoch, from the gateway.
pub fn now_ms() -> u64 {
    __private::gateway::connector::clock::now_ms()
}
