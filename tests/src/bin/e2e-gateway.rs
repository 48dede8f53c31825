//! The `gateway` binary's entry point, built as a binary of this package so
//! that the tests run a fresh build of it (Cargo builds a package's binaries
//! before its tests) without running cargo themselves.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
