//! # plugin-sdk
//!
//! Write a connector for an IM network as one small Rust file, build it for
//! `wasm32-wasip2`, and hand the `.wasm` component to a gateway operator.
//!
//! Implement [`Connector`] and call [`export_connector!`]; talk to your network
//! with [`http`], log with [`log`]. The WIT contract is `wit/v1/connector.wit`
//! (frozen once released; v2 will go beside it). The SDK writes the ABI version
//! into the `gateway-abi` custom section, which the gateway reads before it
//! instantiates a plugin. The README (plugin-sdk/README.md) has a complete
//! worked example.
//!
//! This crate depends on no gateway crate: no tokio, axum or sqlx.

#[doc(hidden)]
pub mod __private {
    //! Generated bindings; not part of the SDK's API.
    #![allow(missing_docs, unsafe_code, clippy::all)]
    wit_bindgen::generate!({
        world: "connector",
        path: "wit/v1",
        pub_export_macro: true,
        export_macro_name: "__export_connector_world",
        default_bindings_module: "::plugin_sdk::__private",
    });
}

pub use __private::gateway::connector::types::{
    Account, AvatarLimits, ConnectorError, Description, Field, Image, Limits, PushOutcome, Settings,
};

/// The ABI version this SDK writes into plugins.
pub const ABI_VERSION: u32 = 1;

/// Name of the custom section holding the ABI version (4 bytes, little endian).
pub const ABI_SECTION: &str = "gateway-abi";

/// A connector to one IM network. Only [`Connector::describe`] and
/// [`Connector::push`] are required.
pub trait Connector {
    /// Fields, limits and mood vocabulary of the network.
    fn describe() -> Description;

    /// Checks the account's credentials; the default accepts them.
    fn verify(account: &Account) -> Result<(), ConnectorError> {
        let _ = account;
        Ok(())
    }

    /// Applies `settings` to the account and says what was applied.
    fn push(account: &Account, settings: &Settings) -> Result<PushOutcome, ConnectorError>;

    /// Reads the account's current settings; the default says it cannot.
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

        impl $crate::__private::Guest for __GatewayConnectorExport {
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

        $crate::__private::__export_connector_world!(__GatewayConnectorExport);

        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = "gateway-abi")]
        pub static __GATEWAY_ABI_VERSION: [u8; 4] = $crate::ABI_VERSION.to_le_bytes();
    };
}

/// Outbound HTTP through the gateway: only to `scheme://host:port` origins the
/// module declares and the operator granted, within the call's deadline.
pub mod http {
    pub use crate::__private::gateway::connector::http::{Header, HttpError, Request, Response};

    /// Sends a request and waits for the whole answer.
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        crate::__private::gateway::connector::http::send(request)
    }

    /// A request with no body.
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
                HttpError::Denied(why) => E::Rejected(format!("host not granted: {why}")),
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
        /// error: 401/403 auth-failed, 429 rate-limited (Retry-After seconds),
        /// 408/5xx transient, other 4xx rejected. The text quotes the start of
        /// the answer's body and users see it: when the URL itself is secret
        /// (a hook token in the path), keep the status and drop the text, as
        /// error pages often quote the path they were asked for.
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
    }
}

/// Logging into the gateway's log, tagged with the module id.
pub mod log {
    use crate::__private::gateway::connector::log::{write, Level};

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

/// Standard base64 with padding (for basic auth and binary fields).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Shortens `text` to at most `max` characters; true if it had to.
pub fn truncate_chars(text: &str, max: u32) -> (String, bool) {
    let max = max as usize;
    match text.char_indices().nth(max) {
        Some((cut, _)) => (text[..cut].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_segments_encode_like_the_standards() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            http::encode_segment("@alice:localhost"),
            "%40alice%3Alocalhost"
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo", 3), ("hél".to_owned(), true));
        assert_eq!(truncate_chars("✓✓", 2), ("✓✓".to_owned(), false));
        assert_eq!(truncate_chars("", 0), (String::new(), false));
    }
}
