//! # plugin-sdk
//!
//! The API boundary for third-party connector authors. It will own the WIT
//! package in `wit/v1/` (component model, built for `wasm32-wasip2`), a
//! `Connector` trait with defaults and an export macro so that a connector is
//! one small file, and the ABI version written into a custom section that the
//! gateway reads before instantiating a plugin. It depends on no gateway crate
//! (no tokio, axum or sqlx): authors build against it alone.

/// The plugin ABI version this SDK produces. The gateway refuses plugins with
/// an ABI it does not know.
pub const ABI_VERSION: u32 = 1;
