//! # plugin-sdk
//!
//! Write a connector for an IM network as one small Rust file, build it for
//! `wasm32-wasip2`, and hand the `.wasm` component to a gateway operator.
//!
//! Implement [`Connector`] and call [`export_connector!`]; talk to your network
//! with [`http`], log with [`log`]. The WIT contract is `wit/v1/connector.wit`
//! (frozen once released; v2 will go beside it). The SDK writes the ABI version
//! into the `gateway-abi` custom section, which the gateway reads before it
//! instantiates a plugin. See the README for a complete worked example.
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
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo", 3), ("hél".to_owned(), true));
        assert_eq!(truncate_chars("✓✓", 2), ("✓✓".to_owned(), false));
        assert_eq!(truncate_chars("", 0), (String::new(), false));
    }
}
