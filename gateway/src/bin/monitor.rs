//! The `monitor` binary: all logic lives in `gateway::monitor`.

fn main() -> std::process::ExitCode {
    gateway::monitor::main()
}
