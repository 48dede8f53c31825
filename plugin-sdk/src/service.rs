//! The service world (DRAFT, ABI 1 of `gateway:service`): a plugin mounted
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
    Caller, Description, Header, PublicRoute, Request, Response,
};
pub use self::__private::gateway::service::{clock, config, devices, events, kv, log, timers};

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
    /// Public routes (answered without a token).
    fn describe() -> Description {
        Description {
            public_routes: Vec::new(),
        }
    }

    /// Answers one request.
    fn handle(request: Request) -> Response;

    /// A timer set with [`timers::schedule`] is due.
    fn on_timer(user_id: String, name: String) {
        let _ = (user_id, name);
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
        }

        $crate::service::__private::__export_service_world!(__GatewayServiceExport);

        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "gateway-service-abi")]
        pub static __GATEWAY_SERVICE_ABI_VERSION: [u8; 4] =
            $crate::service::ABI_VERSION.to_le_bytes();
    };
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
