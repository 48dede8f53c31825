//! The `monitor` command line.

use crate::client::ClientError;
use crate::store::Store;
use crate::{
    account, device, files, handoff, report, scan, service, tasks, watch, Context, MonitorError,
    Outcome, EXIT_ERROR,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The monitor app: binds your IM accounts to the federation gateway and
/// reports your avatar, signature and mood changes to it.
#[derive(Debug, Parser)]
#[command(name = "monitor", version)]
pub struct Cli {
    /// Gateway URL (for `login`/`register`; later commands use the session's).
    #[arg(long, global = true, env = "MONITOR_SERVER")]
    server: Option<String>,
    /// Where the session, the local bindings and the report queue live.
    #[arg(long, global = true, env = "MONITOR_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a user on the gateway and log in. Password from
    /// MONITOR_PASSWORD or asked without echo.
    Register(account::LoginArgs),
    /// Log in; the token is kept in the config dir (mode 0600).
    Login(account::LoginArgs),
    /// End the session on the gateway and forget the token.
    Logout,
    /// List the IM networks this gateway supports.
    Modules,
    /// Bind an IM account. Credentials from --credentials (JSON, or - for
    /// stdin), MONITOR_CREDENTIALS, or asked field by field as the module
    /// lists them (secrets without echo; a password when it lists none).
    Bind(account::BindArgs),
    /// List your bound accounts (kept locally too).
    Bindings,
    /// Remove a binding: `unbind MODULE [ACCOUNT]` or `unbind BINDING_ID`.
    Unbind(account::UnbindArgs),
    /// Report a settings change made on one network and follow its delivery
    /// to every other one.
    Report(report::ReportArgs),
    /// Keep watching: poll each bound account's settings through the
    /// gateway and a local profile file, and report what changed.
    Watch(watch::WatchArgs),
    /// Look for IM clients installed on this device and offer to bind them.
    Scan(scan::ScanArgs),
    /// Recent changes and their status per network, or one change.
    Status(report::StatusArgs),
    /// This terminal as one of your devices: `device register`, `device list`.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// The control list: your devices, active or silent, with their last
    /// address and port (the same as `device list`).
    Devices,
    /// Files shared between your devices (the gateway's files service;
    /// needs `monitor device register` first).
    #[command(subcommand)]
    Files(files::FilesCommand),
    /// Hand an application session from one terminal to another (the
    /// gateway's handoff service; needs `monitor device register` first).
    #[command(subcommand)]
    Handoff(handoff::HandoffCommand),
    /// The preset client the gateway offers this terminal (the tasks
    /// service): where it stands, or `request`, `accept`, `decline`.
    Offer(tasks::OfferArgs),
    /// Back up this terminal's private data (contacts, messages or
    /// photos: a JSON file or an archive) to the tasks service.
    Backup(tasks::BackupArgs),
    /// Restore a backup of yours (made on this or another of your
    /// terminals), or `--list` them.
    Restore(tasks::RestoreArgs),
    /// Share a file by a link anyone holding it may fetch, until it
    /// expires or you `--revoke` it.
    Share(tasks::ShareArgs),
    /// Have the gateway process a file (thumbnail, convert, resize,
    /// markdown-to-html) and fetch the result, showing the job's progress.
    Process(tasks::ProcessArgs),
    /// Run `watch` as a background service started at login (a systemd
    /// user unit): `service install`, `service uninstall`, `service status`.
    #[command(subcommand)]
    Service(service::ServiceCommand),
}

/// Runs the monitor with the process's arguments; the exit code says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("monitor: cannot start: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(run(cli));
    // A question still waiting for a line of stdin (`handoff inbox` asks on
    // a thread of its own) must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(e) => {
            eprintln!("monitor: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Carries out one parsed command.
pub async fn run(cli: Cli) -> Result<Outcome, MonitorError> {
    let dir = match cli.config_dir.clone() {
        Some(dir) => dir,
        None => dirs::config_dir()
            .map(|d| d.join("presence-monitor"))
            .ok_or_else(|| {
                MonitorError::Usage("no config dir known: pass --config-dir DIR".into())
            })?,
    };
    let ctx = Context {
        store: Store::open(dir)?,
        server: cli.server.clone(),
    };
    match dispatch(&ctx, &cli.command).await {
        // An expired session: log in again with the saved user name when a
        // password is at hand (MONITOR_PASSWORD or a person at the terminal),
        // then carry out the command once more.
        Err(MonitorError::Client(ClientError::SessionExpired { server }))
            if account::can_log_in_again() =>
        {
            eprintln!("your session at {server} has expired; logging in again");
            account::log_in_again(&ctx).await?;
            dispatch(&ctx, &cli.command).await
        }
        other => other,
    }
}

async fn dispatch(ctx: &Context, command: &Command) -> Result<Outcome, MonitorError> {
    match command {
        Command::Register(args) => account::register(ctx, args).await,
        Command::Login(args) => account::login(ctx, args).await,
        Command::Logout => account::logout(ctx).await,
        Command::Modules => account::modules(ctx).await,
        Command::Bind(args) => account::bind(ctx, args).await,
        Command::Bindings => account::bindings(ctx).await,
        Command::Unbind(args) => account::unbind(ctx, args).await,
        Command::Report(args) => report::report(ctx, args).await,
        Command::Watch(args) => watch::watch(ctx, args).await,
        Command::Scan(args) => scan::scan(ctx, args).await,
        Command::Status(args) => report::status(ctx, args).await,
        Command::Device(command) => device::device(ctx, command).await,
        Command::Devices => device::list(ctx).await,
        Command::Files(command) => files::files(ctx, command).await,
        Command::Handoff(command) => handoff::handoff(ctx, command).await,
        Command::Offer(args) => tasks::offer(ctx, args).await,
        Command::Backup(args) => tasks::backup(ctx, args).await,
        Command::Restore(args) => tasks::restore(ctx, args).await,
        Command::Share(args) => tasks::share(ctx, args).await,
        Command::Process(args) => tasks::process(ctx, args).await,
        Command::Service(command) => service::service(ctx, command).await,
    }
}
