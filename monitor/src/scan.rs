//! `monitor scan` (S7): looks for IM clients installed on this device using
//! each module's `detect` hints from `GET /v1/modules`, and offers to bind
//! the networks not bound yet. A decline is remembered.
//!
//! Hints, in a module's manifest:
//!
//! ```json
//! {"clients": [{"name": "Element",
//!               "config_dirs": ["~/.config/Element"],
//!               "desktop_entries": ["element-desktop.desktop"],
//!               "executables": ["element-desktop"]}]}
//! ```
//!
//! A flat object with the three lists is one client named after the module.

use crate::account::bind_account;
use crate::{prompt, Context, MonitorError, Outcome};
use gateway_api::ClientHints;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Flags of `scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Register without asking the clients whose account --account names;
    /// report the others as found (for scripts: never prompts).
    #[arg(long)]
    yes: bool,
    /// Ask again about networks declined before.
    #[arg(long)]
    ask_again: bool,
    /// The account to bind for a module, as MODULE=ACCOUNT (repeatable).
    #[arg(long, value_name = "MODULE=ACCOUNT")]
    account: Vec<String>,
    /// Home folder to look in (default: yours).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Look only under the home folder (not system folders nor PATH).
    #[arg(long)]
    only_home: bool,
}

/// Where to look.
pub struct Places {
    home: PathBuf,
    application_dirs: Vec<PathBuf>,
    path_dirs: Vec<PathBuf>,
}

impl Places {
    /// The home folder's places, plus the system's unless `only_home`.
    pub fn new(home: PathBuf, only_home: bool) -> Places {
        let mut application_dirs = vec![
            home.join(".local/share/applications"),
            home.join(".local/share/flatpak/exports/share/applications"),
        ];
        let mut path_dirs = Vec::new();
        if !only_home {
            let data_dirs = std::env::var("XDG_DATA_DIRS")
                .unwrap_or_else(|_| "/usr/local/share:/usr/share".into());
            application_dirs.extend(
                data_dirs
                    .split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| Path::new(d).join("applications")),
            );
            application_dirs.push("/var/lib/flatpak/exports/share/applications".into());
            path_dirs = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
        }
        Places {
            home,
            application_dirs,
            path_dirs,
        }
    }

    fn expand(&self, dir: &str) -> PathBuf {
        match dir.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None if Path::new(dir).is_absolute() => PathBuf::from(dir),
            None => self.home.join(dir),
        }
    }

    /// The home folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The first client of `module` installed here, with its sign.
    pub fn installed(&self, module: &gateway_api::ModuleView) -> Option<(ClientHints, PathBuf)> {
        module
            .detect
            .named_clients(&module.name)
            .into_iter()
            .find_map(|c| self.find(&c).map(|e| (c, e)))
    }

    /// The folders whose changes may mean a client of `modules` was
    /// installed: the nearest existing folder of each config folder (up to
    /// the home folder) and the application folders that exist.
    pub fn watched(&self, modules: &[gateway_api::ModuleView]) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for module in modules {
            for client in module.detect.named_clients(&module.name) {
                for dir in &client.config_dirs {
                    let mut at = self.expand(dir);
                    while !at.is_dir() && at != self.home {
                        match at.parent() {
                            Some(parent) => at = parent.to_owned(),
                            None => break,
                        }
                    }
                    if at.is_dir() {
                        dirs.push(at);
                    }
                }
            }
        }
        dirs.extend(self.application_dirs.iter().filter(|d| d.is_dir()).cloned());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// The first sign of `client` on this device, as a path.
    pub fn find(&self, client: &ClientHints) -> Option<PathBuf> {
        let config = client
            .config_dirs
            .iter()
            .map(|d| self.expand(d))
            .find(|d| d.is_dir());
        let desktop = || {
            first_in(
                &self.application_dirs,
                &client.desktop_entries,
                Path::is_file,
            )
        };
        let executable = || first_in(&self.path_dirs, &client.executables, is_executable);
        config.or_else(desktop).or_else(executable)
    }
}

/// The first `dir/name` (in `dirs` order) that passes `found`.
fn first_in(dirs: &[PathBuf], names: &[String], found: fn(&Path) -> bool) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|path| found(path))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

fn credentials() -> Result<Option<Map<String, Value>>, MonitorError> {
    match std::env::var("MONITOR_CREDENTIALS") {
        Ok(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
            MonitorError::Usage(format!("MONITOR_CREDENTIALS must be a JSON object: {e}"))
        }),
        Err(_) => Ok(None),
    }
}

/// Binds `module` after a yes: the account (`given`, or asked), its
/// credentials (MONITOR_CREDENTIALS, or asked); a decline before is
/// forgotten.
pub(crate) async fn register(
    ctx: &Context,
    client: &crate::client::Client,
    module: &gateway_api::ModuleView,
    given: Option<&str>,
    state: &mut crate::store::State,
) -> Result<(), MonitorError> {
    let account = match given {
        Some(account) => account.to_owned(),
        None => prompt::text(&format!("your {} account:", module.name))?,
    };
    let credentials = match credentials()? {
        Some(credentials) => credentials,
        None => crate::account::ask_credentials(Some(module), &module.id, &account)?,
    };
    bind_account(ctx, client, &module.id, &account, &credentials).await?;
    state.declined.remove(&module.id);
    ctx.store.save_state(state)?;
    Ok(())
}

/// `monitor scan`.
pub async fn scan(ctx: &Context, args: &ScanArgs) -> Result<Outcome, MonitorError> {
    let client = ctx.client()?;
    let home = match &args.home {
        Some(home) => home.clone(),
        None => dirs::home_dir()
            .ok_or_else(|| MonitorError::Usage("no home folder known: pass --home DIR".into()))?,
    };
    let places = Places::new(home, args.only_home);
    let modules = client.modules().await?;
    let bindings = ctx.sync_bindings(&client).await?;
    let mut state = ctx.store.state()?;
    let mut found = 0;
    let mut failed = None;
    for module in &modules {
        let Some((hints, evidence)) = places.installed(module) else {
            continue;
        };
        found += 1;
        let what = format!("{} ({})", hints.name, module.name);
        if let Some(bound) = bindings.iter().find(|b| b.module == module.id) {
            println!("{what}: already bound as {}", bound.account);
            continue;
        }
        if state.declined.contains(&module.id) && !args.ask_again {
            println!(
                "{what}: you declined before (`monitor scan --ask-again` asks again, \
                 `monitor bind {} ACCOUNT` binds it)",
                module.id
            );
            continue;
        }
        let given = args
            .account
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{}=", module.id)));
        if args.yes && given.is_none() {
            // A script said yes to the accounts it named, not to questions.
            println!(
                "{what}: found at {}; not registered (no --account {}=ACCOUNT given)",
                evidence.display(),
                module.id
            );
            continue;
        }
        let question = format!(
            "found {what} at {}. Register {} for sync?",
            evidence.display(),
            hints.name
        );
        if !(args.yes || prompt::confirm(&question)?) {
            state.declined.insert(module.id.clone());
            ctx.store.save_state(&state)?;
            println!("{what}: not registered; it will not be offered again");
            continue;
        }
        if let Err(e) = register(ctx, &client, module, given, &mut state).await {
            eprintln!("{what}: not bound: {e}");
            failed = Some(e);
        }
    }
    if found == 0 {
        println!("no IM client of a supported network found on this device");
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Outcome::Done),
    }
}
