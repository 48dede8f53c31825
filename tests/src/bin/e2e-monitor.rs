//! The `monitor` binary's entry point (`monitor::main`, as in the monitor
//! crate's own `main.rs`), built as a binary of this package so that the
//! end-to-end tests drive a fresh build of it beside a real gateway.

fn main() -> std::process::ExitCode {
    monitor::main()
}
