//! # plugin-sdk
//!
//! Write a connector for an IM network as one small Rust file, build it for
//! `wasm32-wasip2`, and hand the `.wasm` component to a gateway operator.
//!
//! - Implement [`Connector`] and call [`export_connector!`] once.
//! - Say what the connector can do in [`Connector::describe`]: the
//!   [`Field`]s it sets, the network's [`Limits`], its mood vocabulary, and
//!   the credential and config fields it needs ([`SettingField`]); the
//!   gateway checks users' credentials and the operator's config against
//!   them before your code runs, and shows users what to enter.
//! - Read them typed with [`Account::credentials_as`] and
//!   [`Account::config_as`].
//! - Talk to the network with [`http`] ([`http::request`], [`http::send`],
//!   [`http::Response::error_for_status`]); log with [`log`]; read the
//!   time with [`now_ms`].
//! - Fail with a [`ConnectorError`] that names the culprit: the user's
//!   credentials ([`ConnectorError::AuthFailed`]), the network's load
//!   ([`ConnectorError::RateLimited`], [`ConnectorError::Transient`]), the
//!   value ([`ConnectorError::Rejected`]) or the operator's setup
//!   ([`ConnectorError::Misconfigured`]).
//!
//! The WIT contract is `wit/v2/connector.wit` (ABI 2); `wit/v1` stays beside
//! it and gateways keep loading connectors built against it. The SDK writes
//! the ABI version into the `gateway-abi` custom section, which the gateway
//! reads before it instantiates a plugin. The README (plugin-sdk/README.md)
//! has two complete worked examples.
//!
//! This crate depends on no gateway crate: no tokio, axum or sqlx.

#[cfg(all(feature = "connector", feature = "service"))]
compile_error!(
    "a plugin is a connector or a service: enable one of plugin-sdk's features \
     `connector` (the default) and `service`"
);

#[cfg(feature = "connector")]
pub mod connector;
#[cfg(feature = "connector")]
pub use connector::*;

#[cfg(feature = "service")]
pub mod service;

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
