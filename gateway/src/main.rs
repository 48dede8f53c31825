//! The `gateway` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
