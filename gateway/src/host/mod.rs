//! The plugin host: one wasmtime `Engine` shared by every plugin.
//!
//! This module knows nothing of HTTP (no axum here); the `http` layer calls it
//! with bytes and gets typed results back.

use std::sync::Arc;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Why an uploaded plugin was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPlugin {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary (missing the \\0asm magic number)")]
    NotWasm,
    /// A core module where a component is required.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (cargo build --target wasm32-wasip2) so it is a component"
    )]
    CoreModule,
    /// A WebAssembly binary of an unknown encoding version or layer.
    #[error("unsupported WebAssembly encoding (version {version}, layer {layer})")]
    UnknownEncoding {
        /// Encoding version field.
        version: u16,
        /// Layer field (0 core, 1 component).
        layer: u16,
    },
    /// The component does not compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
}

/// Errors creating the host.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure the WebAssembly engine: {0}")]
pub struct HostError(String);

/// The shared engine and everything compiled with it.
#[derive(Clone)]
pub struct PluginHost {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Creates the engine.
    pub fn new() -> Result<Self, HostError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| HostError(e.to_string()))?;
        Ok(PluginHost {
            engine: Arc::new(engine),
        })
    }

    /// Checks that `bytes` are a WebAssembly component that compiles.
    /// CPU-heavy: call it from a blocking thread.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), InvalidPlugin> {
        check_header(bytes)?;
        Component::from_binary(&self.engine, bytes)
            .map(|_| ())
            .map_err(|e| InvalidPlugin::Compile(format!("{e:#}")))
    }
}

fn check_header(bytes: &[u8]) -> Result<(), InvalidPlugin> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(InvalidPlugin::NotWasm);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (version, layer) {
        (1, 0) => Err(InvalidPlugin::CoreModule),
        (_, 1) => Ok(()),
        _ => Err(InvalidPlugin::UnknownEncoding { version, layer }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(InvalidPlugin::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(InvalidPlugin::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn an_empty_component_compiles_and_a_truncated_one_does_not() {
        let host = PluginHost::new().unwrap();
        host.validate(b"\0asm\x0d\0\x01\0").unwrap();
        assert!(matches!(
            host.validate(b"\0asm\x0d\0\x01\0\x01\xff"),
            Err(InvalidPlugin::Compile(_))
        ));
    }
}
