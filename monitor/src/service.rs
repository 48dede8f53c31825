//! `monitor service`: `watch` as a background service of the user, started
//! at login. On Linux a systemd user unit in `~/.config/systemd/user`
//! (`$XDG_CONFIG_HOME/systemd/user`), enabled and started with `systemctl
//! --user`; `uninstall` stops and removes it. Without systemd the unit is
//! still written, and the monitor says how to start it.

use crate::{Context, MonitorError, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit's name.
pub const UNIT: &str = "presence-monitor.service";

/// `monitor service ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Install `watch` as a service started at login, and start it now.
    Install(InstallArgs),
    /// Stop the service and remove it.
    Uninstall,
    /// Whether it is installed and running.
    Status,
}

/// Flags of `service install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Seconds between two rounds of the watch.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// A profile file the watch reads (see `watch --profile`).
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// The folder of the user's systemd units.
fn unit_dir() -> Result<PathBuf, MonitorError> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|h| h.join(".config")))
        .map(|c| c.join("systemd/user"))
        .ok_or_else(|| MonitorError::Usage("no home folder known".into()))
}

/// Quotes a path for an `ExecStart=` line (systemd's quoting rules).
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    format!(
        "\"{}\"",
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
    )
}

/// The unit file for this monitor.
fn unit(program: &Path, config_dir: &Path, args: &InstallArgs) -> String {
    let mut exec = format!(
        "{} --config-dir {} watch --interval {}",
        quoted(program),
        quoted(config_dir),
        args.interval.max(1)
    );
    if let Some(profile) = &args.profile {
        exec.push_str(&format!(" --profile {}", quoted(profile)));
    }
    format!(
        "[Unit]\n\
         Description=Presence monitor: reports your IM settings changes to the federation gateway\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// Runs `systemctl --user ARGS`; `None` when there is no systemctl.
fn systemctl(args: &[&str]) -> Option<Result<(), String>> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .ok()?;
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    })
}

/// Carries out `monitor service ...`.
pub async fn service(ctx: &Context, command: &ServiceCommand) -> Result<Outcome, MonitorError> {
    let dir = unit_dir()?;
    let file = dir.join(UNIT);
    match command {
        ServiceCommand::Install(args) => {
            // A watch needs a session: refuse before installing one that
            // would fail at every start.
            ctx.client()?;
            let program = std::env::current_exe().map_err(|e| MonitorError::File {
                path: "the monitor program".into(),
                reason: e.to_string(),
            })?;
            let config_dir = std::fs::canonicalize(ctx.store.dir())
                .map_err(MonitorError::file(ctx.store.dir()))?;
            std::fs::create_dir_all(&dir).map_err(MonitorError::file(&dir))?;
            std::fs::write(&file, unit(&program, &config_dir, args))
                .map_err(MonitorError::file(&file))?;
            println!("wrote {}", file.display());
            let started = systemctl(&["daemon-reload"])
                .and_then(|r| r.ok().and_then(|()| systemctl(&["enable", "--now", UNIT])));
            match started {
                Some(Ok(())) => println!(
                    "enabled and started {UNIT}: `monitor watch` runs now and at every login \
                     (`journalctl --user -u {UNIT}` shows what it does)"
                ),
                Some(Err(e)) => println!(
                    "systemd did not start it ({e}); start it with `systemctl --user enable \
                     --now {UNIT}`"
                ),
                None => println!(
                    "no systemctl here: start `monitor watch` at login another way, or install \
                     systemd and run `systemctl --user enable --now {UNIT}`"
                ),
            }
            println!(
                "to remove it: `monitor service uninstall` (or `systemctl --user disable --now \
                 {UNIT}` and delete {})",
                file.display()
            );
        }
        ServiceCommand::Uninstall => {
            if !file.exists() {
                println!(
                    "{UNIT} is not installed ({} does not exist)",
                    file.display()
                );
                return Ok(Outcome::Done);
            }
            if let Some(Err(e)) = systemctl(&["disable", "--now", UNIT]) {
                eprintln!("systemd said: {e}");
            }
            std::fs::remove_file(&file).map_err(MonitorError::file(&file))?;
            let _ = systemctl(&["daemon-reload"]);
            println!("stopped and removed {UNIT} ({})", file.display());
        }
        ServiceCommand::Status => {
            if !file.exists() {
                println!("{UNIT} is not installed: `monitor service install` installs it");
                return Ok(Outcome::Done);
            }
            let running = Command::new("systemctl")
                .args(["--user", "is-active", UNIT])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|_| "unknown (no systemctl)".into());
            println!("{UNIT} is installed ({}); state: {running}", file.display());
        }
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_this_monitor_with_its_config_quoted() {
        let args = InstallArgs {
            interval: 30,
            profile: Some(PathBuf::from("/home/a b/profile.toml")),
        };
        let text = unit(
            Path::new("/opt/mon/monitor"),
            Path::new("/home/a b/.config/pm"),
            &args,
        );
        assert!(text.contains(
            "ExecStart=\"/opt/mon/monitor\" --config-dir \"/home/a b/.config/pm\" watch \
             --interval 30 --profile \"/home/a b/profile.toml\"\n"
        ));
        assert!(text.contains("WantedBy=default.target"));
        assert_eq!(quoted(Path::new("/x/100%\"q")), "\"/x/100%%\\\"q\"");
    }
}
