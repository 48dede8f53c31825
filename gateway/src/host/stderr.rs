//! A plugin's standard error, kept for one call: the last few KiB, never
//! refusing a write. Rust's panic hook writes the panic message there, so a
//! trapped call can say why it panicked instead of showing only the wasm
//! backtrace; everything else a plugin prints to stderr is dropped with the
//! call.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of stderr kept per call (the latest ones).
const KEPT: usize = 4096;

/// The tail of one call's stderr.
#[derive(Clone, Default)]
pub(super) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn append(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(bytes.iter().rev().take(KEPT).rev());
        let extra = kept.len().saturating_sub(KEPT);
        kept.drain(..extra);
    }

    /// What was written, as text.
    pub(super) fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = kept.as_slices();
        let mut bytes = Vec::with_capacity(kept.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(KEPT)
    }
}

#[async_trait::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Why a trapped call stopped, for people: the panic message Rust's hook
/// wrote to stderr (`panicked at src/lib.rs:3:5: the message`), then the
/// connector's own frames of the wasm backtrace (the standard library's and
/// the bindings' frames left out). Without a panic message, the trap itself.
pub(super) fn trap_text(stderr: &str, trap: &str) -> String {
    let panic = stderr.rfind("panicked at ").map(|at| {
        let mut lines = stderr[at..].lines();
        let place = lines.next().unwrap_or_default().trim_end_matches(':');
        let message: Vec<&str> = lines
            .take_while(|l| !l.starts_with("note: "))
            .filter(|l| !l.trim().is_empty())
            .collect();
        format!("{place}: {}", message.join(" "))
    });
    let frames: Vec<&str> = trap
        .lines()
        .filter_map(|line| line.trim().split_once(" - ").map(|(_, f)| f))
        .map(|frame| frame.split_once('!').map_or(frame, |(_, symbol)| symbol))
        .filter(|symbol| own_frame(symbol))
        .take(8)
        .collect();
    let what = panic.unwrap_or_else(|| {
        trap.lines()
            .next()
            .unwrap_or("the plugin trapped")
            .to_owned()
    });
    let text = if frames.is_empty() {
        what
    } else {
        format!("{what} (at {})", frames.join(" < "))
    };
    text.chars().take(1000).collect()
}

/// Whether a backtrace symbol is the connector's own code: not the
/// standard library's, the bindings' or the SDK's (crate names may carry a
/// `[hash]`, as in `std[d123b7a1a2ed1472]::process::abort`).
fn own_frame(symbol: &str) -> bool {
    const NOT_OURS: &[&str] = &[
        "std",
        "core",
        "alloc",
        "wit_bindgen",
        "wit_bindgen_rt",
        "plugin_sdk",
        "wasi",
        "compiler_builtins",
        "dlmalloc",
    ];
    let krate = symbol
        .trim_start_matches('<')
        .split([':', '['])
        .next()
        .unwrap_or_default();
    !symbol.is_empty()
        && !NOT_OURS.contains(&krate)
        && !["__", "_start", "abort", "rust_", "cabi_", "<unknown>"]
            .iter()
            .any(|p| symbol.starts_with(p))
        && !symbol.contains("::__private::")
        && !symbol.contains("_GatewayConnectorExport")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_reads_as_its_message_and_the_connectors_own_frames() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:42:9:\nthe server sent no token\n\
                      note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let trap = "error while executing at wasm backtrace:\n    \
                    0: 0x17cfa - chirp_connector.wasm!abort\n    \
                    1: 0x1a2b3 - chirp_connector.wasm!std[d123b7a1a2ed1472]::process::abort\n    \
                    1: 0x1a2b4 - chirp_connector.wasm!core[6d9e98711c484d2e]::panicking::panic_fmt\n    \
                    2: 0x1a400 - chirp_connector.wasm!chirp_connector::login\n    \
                    3: 0x1a500 - chirp_connector.wasm!<chirp_connector::Chirp as plugin_sdk::Connector>::push\n    \
                    4: 0x1a600 - chirp_connector.wasm!chirp_connector::__GatewayConnectorExport::push\n\
                    wasm trap: wasm `unreachable` instruction executed";
        let text = trap_text(stderr, trap);
        assert_eq!(
            text,
            "panicked at src/lib.rs:42:9: the server sent no token \
             (at chirp_connector::login < <chirp_connector::Chirp as plugin_sdk::Connector>::push)"
        );
    }

    #[test]
    fn a_trap_without_a_panic_says_what_trapped() {
        let text = trap_text("", "wasm trap: integer divide by zero");
        assert_eq!(text, "wasm trap: integer divide by zero");
    }

    #[test]
    fn only_the_latest_output_is_kept() {
        let tail = StderrTail::default();
        tail.append(&vec![b'x'; 10_000]);
        tail.append(b"panicked at the end");
        let text = tail.text();
        assert_eq!(text.len(), KEPT);
        assert!(text.ends_with("panicked at the end"));
    }
}
