//! The `gateway` command line: `gateway serve` with flags and environment.

use crate::config::{Config, Quota};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Presence and settings federation gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeArgs>),
    /// Run one media job (started by the gateway itself, one process per
    /// job: input on stdin, result on stdout).
    #[command(hide = true)]
    MediaWorker(crate::processing::worker::WorkerArgs),
}

/// Flags of `gateway serve`; each also reads an environment variable.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder for the SQLite database, blobs and generated secrets.
    #[arg(long, env = "GATEWAY_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// `sqlite://FILE` or `postgres://...`; default: the SQLite file in the data dir.
    #[arg(long, env = "GATEWAY_DATABASE_URL")]
    database_url: Option<String>,
    /// Most connections this process opens to PostgreSQL (a third for write
    /// transactions; plus one per LISTEN relay). Every process's share must
    /// fit the server's `max_connections` (100 by default: five processes).
    #[arg(long, env = "GATEWAY_DATABASE_CONNECTIONS", default_value_t = registry_db::DEFAULT_POSTGRES_CONNECTIONS, value_parser = clap::value_parser!(u32).range(4..=1000))]
    database_connections: u32,
    /// Where service blobs (uploaded files) live: `file:///PATH` or
    /// `s3://BUCKET[/PREFIX]` (with the AWS_* variables of the S3 endpoint);
    /// default: the folder `blobs` of the data dir.
    #[arg(long, env = "GATEWAY_BLOB_STORE")]
    blob_store: Option<String>,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = crate::config::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Lifetime of a login session in seconds.
    #[arg(long, env = "GATEWAY_SESSION_TTL_SECS", default_value_t = 86_400)]
    session_ttl_secs: u64,
    /// Requests per second per client IP on registration and login.
    #[arg(long, env = "GATEWAY_ANON_RATE", default_value_t = 5)]
    anon_rate: u32,
    /// Burst per client IP on registration and login.
    #[arg(long, env = "GATEWAY_ANON_BURST", default_value_t = 20)]
    anon_burst: u32,
    /// Requests per second per user on authenticated endpoints.
    #[arg(long, env = "GATEWAY_USER_RATE", default_value_t = 50)]
    user_rate: u32,
    /// Burst per user on authenticated endpoints.
    #[arg(long, env = "GATEWAY_USER_BURST", default_value_t = 200)]
    user_burst: u32,
    /// Deliveries pushed at once by this process.
    #[arg(long, env = "GATEWAY_DELIVERY_CONCURRENCY", default_value_t = 32)]
    delivery_concurrency: usize,
    /// Seconds a claimed delivery stays leased (renewed every third of it
    /// while its push runs); after a crash another process takes it over
    /// once the lease runs out.
    #[arg(long, env = "GATEWAY_DELIVERY_LEASE_SECS", default_value_t = 10)]
    delivery_lease_secs: u64,
    /// Attempts before a failing delivery becomes a dead letter.
    #[arg(long, env = "GATEWAY_DELIVERY_MAX_ATTEMPTS", default_value_t = 10)]
    delivery_max_attempts: u32,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "GATEWAY_DELIVERY_BACKOFF_MS", default_value_t = 1000)]
    delivery_backoff_ms: u64,
    /// A reverse proxy (address or CIDR block) whose `Forwarded` /
    /// `X-Forwarded-For` headers name the client, for per-client limits;
    /// repeatable (or comma-separated in the environment).
    #[arg(long = "trusted-proxy", env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Let host names granted to modules resolve to private or reserved
    /// addresses (loopback, 10/8, 169.254/16, fc00::/7...). Off by default,
    /// so a name's DNS answers cannot lead a plugin into the gateway's own
    /// network; granted IP addresses are always used as written.
    #[arg(long, env = "GATEWAY_ALLOW_PRIVATE_DNS")]
    allow_private_dns: bool,
    /// Bytes of images each user may keep stored.
    #[arg(long, env = "GATEWAY_MEDIA_QUOTA_BYTES", default_value_t = crate::media::MediaLimits::default().quota_bytes)]
    media_quota_bytes: u64,
    /// Hours after which images nothing needs any more are deleted.
    #[arg(long, env = "GATEWAY_MEDIA_RETENTION_HOURS", default_value_t = 24)]
    media_retention_hours: u64,
    /// Largest uploaded file (blob) in bytes.
    #[arg(long, env = "GATEWAY_BLOB_MAX_BYTES", default_value_t = crate::blobs::BlobLimits::default().max_length)]
    blob_max_bytes: u64,
    /// Bytes of uploaded files each user may keep per service.
    #[arg(long, env = "GATEWAY_BLOB_QUOTA_BYTES", default_value_t = crate::blobs::BlobLimits::default().user_bytes)]
    blob_quota_bytes: u64,
    /// Uploaded files each user may keep per service.
    #[arg(long, env = "GATEWAY_BLOB_QUOTA_FILES", default_value_t = crate::blobs::BlobLimits::default().user_blobs)]
    blob_quota_files: u64,
    /// Event streams (device inboxes, change streams) one user may hold open
    /// at once.
    #[arg(long, env = "GATEWAY_MAX_STREAMS_PER_USER", default_value_t = crate::http::streams::MAX_STREAMS_PER_USER)]
    max_streams_per_user: usize,
    /// Hours an incomplete upload may resume; then it is removed.
    #[arg(long, env = "GATEWAY_UPLOAD_RESUME_HOURS", default_value_t = 24)]
    upload_resume_hours: u64,
    /// Media jobs this process runs at once, each in a worker process (0:
    /// it queues jobs but leaves running them to other processes; default
    /// one per core).
    #[arg(long, env = "GATEWAY_MEDIA_WORKERS")]
    media_workers: Option<usize>,
    /// Seconds a media job may run before its worker is stopped.
    #[arg(long, env = "GATEWAY_MEDIA_JOB_DEADLINE_SECS", default_value_t = 60)]
    media_job_deadline_secs: u64,
    /// Address space of a media job's worker, in MiB.
    #[arg(long, env = "GATEWAY_MEDIA_JOB_MEMORY_MIB", default_value_t = 1024)]
    media_job_memory_mib: u64,
    /// Plugin instances alive at once (connector and service calls). Each
    /// reserves address space for its memory (about 8 GiB of it, not RAM);
    /// a tool that limits address space (valgrind) needs a few only.
    #[arg(long, env = "GATEWAY_PLUGIN_INSTANCES", default_value_t = crate::host::HostLimits::default().max_instances, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    plugin_instances: u32,
    /// A service plugin to install at start, `MANIFEST.json=PLUGIN.wasm`
    /// (repeatable; comma-separated in the variable); skipped when that
    /// plugin is installed already, a new version when it changed.
    #[arg(
        long = "install-service",
        env = "GATEWAY_INSTALL_SERVICES",
        value_delimiter = ','
    )]
    install_services: Vec<String>,
    /// A connector to install at start, `MANIFEST.json=PLUGIN.wasm`
    /// (repeatable; comma-separated in the variable); skipped when that
    /// plugin is installed already (the module keeps the manifest it has,
    /// which the operator may have changed), a new version when it changed.
    #[arg(
        long = "install-module",
        env = "GATEWAY_INSTALL_MODULES",
        value_delimiter = ','
    )]
    install_modules: Vec<String>,
}

/// An address (as a /32 or /128) or a CIDR block.
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR block"))
}

/// Entry point of the `gateway` binary.
pub fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Serve(args) => *args,
        // A worker needs neither logs nor a runtime.
        Command::MediaWorker(args) => return crate::processing::worker::worker_main(&args),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let env = |name: &str| std::env::var(name).ok();
    let mut config = Config::with_secrets(
        args.data_dir.clone(),
        env("GATEWAY_ADMIN_TOKEN"),
        env("GATEWAY_MASTER_KEY"),
    )
    .context("preparing the data dir and secrets")?;
    config.database_connections = args.database_connections;
    if let Some(url) = args.database_url {
        config.database_url = url;
    }
    config.blob_store = args.blob_store;
    config.max_body_bytes = args.max_body_bytes;
    config.session_ttl = std::time::Duration::from_secs(args.session_ttl_secs);
    config.anonymous_quota = Quota {
        per_second: args.anon_rate,
        burst: args.anon_burst,
    };
    config.user_quota = Quota {
        per_second: args.user_rate,
        burst: args.user_burst,
    };
    config.delivery.concurrency = args.delivery_concurrency;
    config.delivery.lease = std::time::Duration::from_secs(args.delivery_lease_secs);
    config.delivery.max_attempts = args.delivery_max_attempts;
    config.delivery.backoff_base = std::time::Duration::from_millis(args.delivery_backoff_ms);
    config.trusted_proxies = args.trusted_proxies;
    config.host_limits.allow_private_dns = args.allow_private_dns;
    config.host_limits.max_instances = args.plugin_instances;
    config.media.quota_bytes = args.media_quota_bytes;
    config.media.retention = std::time::Duration::from_secs(args.media_retention_hours * 3600);
    config.devices.max_streams_per_user = args.max_streams_per_user;
    config.blobs.max_length = args.blob_max_bytes;
    config.blobs.user_bytes = args.blob_quota_bytes;
    config.blobs.user_blobs = args.blob_quota_files;
    config.blobs.resume_for = std::time::Duration::from_secs(args.upload_resume_hours * 3600);
    if let Some(workers) = args.media_workers {
        config.jobs.workers.concurrency = workers;
    }
    config.jobs.workers.deadline = std::time::Duration::from_secs(args.media_job_deadline_secs);
    config.jobs.workers.memory_bytes = args.media_job_memory_mib << 20;
    for pair in &args.install_services {
        config
            .bundled_services
            .push(bundled("--install-service", pair)?);
    }
    for pair in &args.install_modules {
        config
            .bundled_modules
            .push(bundled("--install-module", pair)?);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line of output is the bound address: scripts and tests read it.
    println!("listening on http://{addr}");
    tracing::info!(data_dir = %args.data_dir.display(), "gateway starting");
    crate::run(config, listener, shutdown_signal()).await?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Reads the `MANIFEST.json=PLUGIN.wasm` of `flag`.
fn bundled(flag: &str, pair: &str) -> anyhow::Result<crate::config::Bundled> {
    use anyhow::Context as _;
    let (manifest, plugin) = pair
        .split_once('=')
        .with_context(|| format!("{flag} {pair}: expected MANIFEST.json=PLUGIN.wasm"))?;
    Ok(crate::config::Bundled {
        source: pair.to_owned(),
        manifest: std::fs::read_to_string(manifest)
            .with_context(|| format!("{flag}: reading {manifest}"))?,
        plugin: std::fs::read(plugin).with_context(|| format!("{flag}: reading {plugin}"))?,
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
