//! The WASI a connector gets: only the interfaces a Rust `wasm32-wasip2`
//! component imports (`wasi:io`, `wasi:clocks`, `wasi:random`, `wasi:cli`;
//! no filesystem, no sockets), with every blocking operation cut at the call's
//! deadline.
//!
//! The epoch deadline only interrupts wasm code: a plugin waiting inside a
//! host function (a `monotonic-clock` sleep through `poll`, a blocking stream
//! read or write) would keep its thread and its instance slot for as long as
//! it asked. So `wasi:io/poll` and `wasi:io/streams` are linked through
//! [`BoundedIo`], which waits at most until the deadline and then traps with
//! [`DeadlineReached`]; the non-blocking interfaces are wasmtime-wasi's own.

use super::CallState;
use std::future::Future;
use std::time::Instant;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::io as async_io;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::bindings::{cli, clocks, random};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::runtime::in_tokio;

/// The trap of a blocking WASI call still waiting when the call's deadline
/// came; the host reports it as a timeout, like the epoch interrupt.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed while the plugin waited in a host call")]
pub(super) struct DeadlineReached;

/// Links the WASI interfaces connectors import, blocking ones bounded.
pub(super) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let l = linker;
    async_io::error::add_to_linker::<CallState, Table>(l, |s| &mut s.table)?;
    poll::add_to_linker::<CallState, Bounded>(l, BoundedIo::of)?;
    streams::add_to_linker::<CallState, Bounded>(l, BoundedIo::of)?;
    clocks::wall_clock::add_to_linker::<CallState, WasiClocks>(l, CallState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<CallState, WasiClocks>(l, CallState::clocks)?;
    random::random::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
    // Rust's std imports all of wasi:cli for its start-up and stdio even when
    // a connector never prints: stdin is empty and stdout/stderr discard.
    cli::exit::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    Ok(())
}

/// The linker's refusal of an import the plugin was not granted, said
/// plainly: which interface, and what plugins get instead. Other link errors
/// come back as they are.
pub(super) fn import_error(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let name = text
        .split("imports instance `")
        .nth(1)
        .and_then(|rest| rest.split('`').next());
    match name {
        Some(name) if name.starts_with("wasi:") => format!(
            "the plugin imports {name}, which no plugin is granted: plugins get wasi:io, \
             wasi:clocks, wasi:random and wasi:cli (empty stdin and environment, output \
             discarded), and reach networks only through the gateway's own imports ({text})"
        ),
        _ => text,
    }
}

/// `wasi:io/error` needs only the resource table.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// `wasi:io/poll` and `wasi:io/streams` under the call's deadline.
struct Bounded;

impl HasData for Bounded {
    type Data<'a> = BoundedIo<'a>;
}

/// The call's resource table and deadline, for the bounded I/O imports.
pub(super) struct BoundedIo<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

impl BoundedIo<'_> {
    fn of(state: &mut CallState) -> BoundedIo<'_> {
        BoundedIo {
            deadline: state.deadline,
            table: &mut state.table,
        }
    }
}

/// Runs a WASI future to completion, but no longer than until `deadline`.
fn until<F: Future>(deadline: Instant, future: F) -> Result<F::Output, DeadlineReached> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(DeadlineReached);
    }
    in_tokio(tokio::time::timeout(left, future)).map_err(|_| DeadlineReached)
}

/// [`until`] for the calls that answer `wasmtime::Result`.
fn bounded<T>(
    deadline: Instant,
    future: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    until(deadline, future)?
}

/// [`until`] for the stream calls, whose traps travel in `StreamError`.
fn bounded_stream<T>(
    deadline: Instant,
    future: impl Future<Output = Result<T, StreamError>>,
) -> Result<T, StreamError> {
    until(deadline, future).map_err(|e| StreamError::Trap(e.into()))?
}

impl poll::Host for BoundedIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        bounded(
            self.deadline,
            async_io::poll::Host::poll(self.table, pollables),
        )
    }
}

impl poll::HostPollable for BoundedIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Polls once without waiting; it still needs the runtime's context.
        in_tokio(async_io::poll::HostPollable::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        bounded(
            self.deadline,
            async_io::poll::HostPollable::block(self.table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_io::poll::HostPollable::drop(self.table, pollable)
    }
}

impl streams::Host for BoundedIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.table, err)
    }
}

use async_io::streams::{HostInputStream as AsyncInput, HostOutputStream as AsyncOutput};

impl streams::HostOutputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        // Dropping waits for buffered output to be written.
        bounded(self.deadline, AsyncOutput::drop(self.table, stream))
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> Result<u64, StreamError> {
        AsyncOutput::check_write(self.table, stream)
    }

    fn write(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> Result<(), StreamError> {
        AsyncOutput::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> Result<(), StreamError> {
        let write = AsyncOutput::blocking_write_and_flush(self.table, stream, bytes);
        bounded_stream(self.deadline, write)
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> Result<(), StreamError> {
        let write = AsyncOutput::blocking_write_zeroes_and_flush(self.table, stream, len);
        bounded_stream(self.deadline, write)
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncOutput::subscribe(self.table, stream)
    }

    fn write_zeroes(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> Result<(), StreamError> {
        AsyncOutput::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> Result<(), StreamError> {
        AsyncOutput::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> Result<(), StreamError> {
        bounded_stream(
            self.deadline,
            AsyncOutput::blocking_flush(self.table, stream),
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> Result<u64, StreamError> {
        AsyncOutput::splice(self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> Result<u64, StreamError> {
        let splice = AsyncOutput::blocking_splice(self.table, dst, src, len);
        bounded_stream(self.deadline, splice)
    }
}

impl streams::HostInputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        bounded(self.deadline, AsyncInput::drop(self.table, stream))
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> Result<Vec<u8>, StreamError> {
        AsyncInput::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> Result<Vec<u8>, StreamError> {
        bounded_stream(
            self.deadline,
            AsyncInput::blocking_read(self.table, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> Result<u64, StreamError> {
        AsyncInput::skip(self.table, stream, len)
    }

    fn blocking_skip(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> Result<u64, StreamError> {
        bounded_stream(
            self.deadline,
            AsyncInput::blocking_skip(self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncInput::subscribe(self.table, stream)
    }
}
