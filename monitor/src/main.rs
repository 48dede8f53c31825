//! The `monitor` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    monitor::main()
}
