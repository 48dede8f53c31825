//! This terminal as one of the user's devices: `monitor device register`
//! (`POST /v1/devices` with the user's session; the device token it answers
//! is kept in `device.json`, mode 0600, for the handoff commands) and
//! `monitor device list` (the control list, `GET /v1/devices`).

use crate::store::Device;
use crate::{sha256_hex, Context, MonitorError, Outcome};
use gateway_api::NewDeviceRequest;

/// Flags of `device register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The device's stable id. Default: the id this terminal registered
    /// with before, else `m-` and a hash of this machine's id
    /// (/etc/machine-id, else the host name) and your OS user name.
    #[arg(long)]
    id: Option<String>,
    /// Its name in the device list. Default: the earlier name, else the
    /// host name.
    #[arg(long)]
    name: Option<String>,
    /// Its platform. Default: the earlier one, else this system's
    /// (`linux`, `macos`, `windows`...).
    #[arg(long)]
    platform: Option<String>,
    /// An application id (or activity type) this terminal can continue;
    /// repeat for several. Default: the earlier ones. A switch without
    /// `--to` goes to an active device that can continue the session's app.
    #[arg(long = "capability", value_name = "APP")]
    capabilities: Vec<String>,
}

/// The subcommands of `device`.
#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Register this terminal as one of your devices (or register it
    /// again: a new device token, the earlier one ends). Needs a login.
    Register(RegisterArgs),
    /// Your devices, with their state (active or silent).
    List,
}

/// Carries out `monitor device ...`.
pub async fn device(ctx: &Context, command: &DeviceCommand) -> Result<Outcome, MonitorError> {
    match command {
        DeviceCommand::Register(args) => register(ctx, args).await,
        DeviceCommand::List => list(ctx).await,
    }
}

/// `monitor device register`.
pub async fn register(ctx: &Context, args: &RegisterArgs) -> Result<Outcome, MonitorError> {
    let session = ctx.session()?;
    let client = ctx.client()?;
    // The registration kept here, when it is of this user at this gateway:
    // registering again without flags updates the same device.
    let earlier = ctx
        .store
        .device()?
        .filter(|d| d.server == session.server && d.username == session.username);
    let id = match (&args.id, &earlier) {
        (Some(id), _) => id.clone(),
        (None, Some(earlier)) => earlier.id.clone(),
        (None, None) => default_id(),
    };
    // Registering the same device again keeps what it was registered with
    // unless a flag says otherwise.
    let same = earlier.as_ref().filter(|earlier| earlier.id == id);
    let name = match (&args.name, same) {
        (Some(name), _) => name.clone(),
        (None, Some(same)) => same.name.clone(),
        (None, None) => host_name().unwrap_or_else(|| id.clone()),
    };
    let platform = match (&args.platform, same) {
        (Some(platform), _) => Some(platform.clone()),
        (None, Some(same)) => same.platform.clone(),
        (None, None) => Some(std::env::consts::OS.to_owned()),
    };
    let capabilities = match same {
        Some(same) if args.capabilities.is_empty() => same.capabilities.clone(),
        _ => args.capabilities.clone(),
    };
    let request = NewDeviceRequest {
        id,
        name: name.chars().take(100).collect(),
        platform,
        capabilities,
        port: None,
    };
    let (registered, created) = client.register_device(&request).await?;
    ctx.store.save_device(&Device {
        server: session.server.clone(),
        username: session.username.clone(),
        id: registered.id.clone(),
        name: registered.name.clone(),
        platform: registered.platform.clone(),
        capabilities: registered.capabilities.clone(),
        token: registered.token,
    })?;
    let capabilities = if registered.capabilities.is_empty() {
        String::new()
    } else {
        format!("; can continue: {}", registered.capabilities.join(", "))
    };
    if created {
        println!(
            "registered this terminal as device {} ({}) of {} at {}{capabilities}",
            registered.id, registered.name, session.username, session.server
        );
    } else {
        println!(
            "registered device {} ({}) again: it has a new device token, the earlier one \
             ended{capabilities}",
            registered.id, registered.name
        );
    }
    Ok(Outcome::Done)
}

/// `monitor device list`.
pub async fn list(ctx: &Context) -> Result<Outcome, MonitorError> {
    let client = ctx.client()?;
    let this = ctx.store.device()?.map(|d| d.id);
    let devices = client.devices().await?;
    if devices.is_empty() {
        println!("no devices registered yet: `monitor device register`");
    }
    for d in devices {
        let capabilities = if d.capabilities.is_empty() {
            String::new()
        } else {
            format!(", can continue: {}", d.capabilities.join(", "))
        };
        let marker = if this.as_deref() == Some(d.id.as_str()) {
            "  (this terminal)"
        } else {
            ""
        };
        let address = match (&d.ip, d.port) {
            (Some(ip), Some(port)) => format!(" at {ip} port {port}"),
            (Some(ip), None) => format!(" at {ip}"),
            _ => String::new(),
        };
        println!(
            "{:<24} {:<6} {} ({}), last seen {}{address}{capabilities}{marker}",
            d.id,
            d.state,
            d.name,
            d.platform.as_deref().unwrap_or("unknown platform"),
            d.last_seen,
        );
    }
    Ok(Outcome::Done)
}

/// The default device id, stable for this machine and this OS user:
/// `m-` and 32 hex digits of SHA-256 over the machine id (`/etc/machine-id`,
/// else `/var/lib/dbus/machine-id`, else the host name) and the OS user
/// name. Hashed because the machine id is meant to stay on the machine;
/// with the user name, two people sharing a computer get two devices
/// (a device id belongs to one gateway user).
pub fn default_id() -> String {
    let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|path| non_empty(std::fs::read_to_string(path).ok()))
        .or_else(host_name)
        .unwrap_or_default();
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|var| non_empty(std::env::var(var).ok()))
        .unwrap_or_default();
    let digest = sha256_hex(format!("presence-monitor device\0{machine}\0{user}").as_bytes());
    format!("m-{}", &digest[..32])
}

/// This computer's host name, when it can be found.
pub fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| non_empty(std::fs::read_to_string(path).ok()))
        .or_else(|| {
            ["HOSTNAME", "COMPUTERNAME"]
                .iter()
                .find_map(|var| non_empty(std::env::var(var).ok()))
        })
        .or_else(|| {
            let out = std::process::Command::new("hostname")
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            non_empty(String::from_utf8(out.stdout).ok())
        })
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_id_is_stable_and_reveals_nothing() {
        let id = super::default_id();
        assert_eq!(id, super::default_id());
        assert_eq!(id.len(), 34, "{id}");
        assert!(id.starts_with("m-"), "{id}");
        assert!(id[2..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        if let Ok(machine) = std::fs::read_to_string("/etc/machine-id") {
            assert!(!id.contains(machine.trim()), "{id}");
        }
    }
}
