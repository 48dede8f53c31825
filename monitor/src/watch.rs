//! `monitor watch`: notices changes by itself. Each round it (a) reads every
//! bound account's current settings through the gateway (connector `fetch`)
//! and reports what differs from the last look, never the gateway's own
//! pushes (`applied_by_gateway`); (b) reads the profile file; then sends the
//! queued reports in order. A gateway that is unreachable only delays them.
//! It also notices IM clients installed while it runs ([`crate::detect`]):
//! at once when a watched folder changes, else at the next round.

use crate::client::{Client, ClientError};
use crate::detect::Detector;
use crate::report::{flush, queue_avatar, Sent};
use crate::store::{LocalBinding, QueuedImage, QueuedReport, Seen, State};
use crate::{profile, sha256_hex, Context, MonitorError, Outcome};
use gateway_api::{ModuleView, Settings};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of `watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Seconds between two rounds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// A TOML profile file other tools may edit (tables like `[matrix]`
    /// with `signature`, `mood`, `avatar`).
    #[arg(long, env = "MONITOR_PROFILE")]
    profile: Option<PathBuf>,
    /// One round, then exit (for scripts and cron).
    #[arg(long)]
    once: bool,
    /// Do not look for IM clients installed while watching.
    #[arg(long)]
    no_detect: bool,
    /// Ask again about networks whose client you declined before.
    #[arg(long)]
    ask_again: bool,
    /// Home folder to look for IM clients in (default: yours).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Look for IM clients only under the home folder.
    #[arg(long)]
    only_home: bool,
}

/// Noticing new IM clients, once the modules' hints are known.
struct Detection {
    places: Option<crate::scan::Places>,
    ask_again: bool,
    detector: Option<Detector>,
}

/// The home folder the watch looks in.
fn home(args: &WatchArgs) -> Option<PathBuf> {
    args.home.clone().or_else(dirs::home_dir)
}

impl Detection {
    fn new(args: &WatchArgs) -> Detection {
        Detection {
            places: home(args)
                .filter(|_| !args.no_detect)
                .map(|h| crate::scan::Places::new(h, args.only_home)),
            ask_again: args.ask_again,
            detector: None,
        }
    }

    /// Checks for new clients of `modules`.
    async fn check(
        &mut self,
        ctx: &Context,
        client: &Client,
        modules: &[ModuleView],
        bound: &[LocalBinding],
    ) -> Result<(), MonitorError> {
        match &mut self.detector {
            Some(detector) => detector.update(modules),
            None => {
                let Some(places) = self.places.take() else {
                    return Ok(());
                };
                self.detector = Some(Detector::new(places, modules.to_vec(), self.ask_again));
            }
        }
        let mut state = ctx.store.state()?;
        if let Some(detector) = &mut self.detector {
            detector.check(ctx, client, bound, &mut state).await?;
        }
        Ok(())
    }

    async fn changed(&mut self) {
        match &mut self.detector {
            Some(detector) => detector.changed().await,
            None => std::future::pending().await,
        }
    }
}

/// Messages shown once per watch, not every round.
#[derive(Default)]
struct Notes(BTreeSet<String>);

impl Notes {
    fn once(&mut self, message: String) {
        if self.0.insert(message.clone()) {
            eprintln!("{message}");
        }
    }
}

/// `monitor watch`.
pub async fn watch(ctx: &Context, args: &WatchArgs) -> Result<Outcome, MonitorError> {
    let client = ctx.client()?;
    let mut notes = Notes::default();
    eprintln!(
        "watching {} every {} s{}",
        client.server(),
        args.interval,
        args.profile
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    let mut detection = Detection::new(args);
    let mut modules: Option<Vec<ModuleView>> = None;
    loop {
        // Each round: an operator may upload a module while this runs.
        match client.modules().await {
            Ok(found) => modules = Some(found),
            Err(e) => transient_or(e.into(), &mut notes)?,
        }
        let known = modules.as_deref().unwrap_or_default();
        let bound = round(ctx, &client, args, known, &mut notes).await?;
        detection.check(ctx, &client, known, &bound).await?;
        if args.once {
            return Ok(Outcome::Done);
        }
        // Until the next round: a report waiting in the queue (this watch's,
        // or one `monitor report` left while the gateway was down) is sent
        // again with backoff, so it goes out soon after the gateway answers.
        let next_round = tokio::time::Instant::now() + Duration::from_secs(args.interval.max(1));
        let mut retry = RETRY_FIRST;
        let mut retry_at = tokio::time::Instant::now() + retry;
        loop {
            let wake = next_round.min(tokio::time::Instant::now() + QUEUE_LOOK);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                () = detection.changed() => break,
                _ = tokio::signal::ctrl_c() => return Ok(Outcome::Done),
            }
            let now = tokio::time::Instant::now();
            if now >= next_round {
                break;
            }
            if ctx.store.waiting()?.is_empty() {
                retry = RETRY_FIRST;
                retry_at = now;
                continue;
            }
            if now < retry_at {
                continue;
            }
            if send_queued(ctx, &client, &mut notes, false).await? {
                retry = RETRY_FIRST;
            } else {
                retry = (retry * 2).min(RETRY_MAX);
            }
            retry_at = now + retry;
        }
    }
}

/// How often a watch looks at the queue between rounds.
const QUEUE_LOOK: Duration = Duration::from_secs(1);
/// The first retry of a queue the gateway did not take, doubling up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Sends the queued reports in order, printing what became of each;
/// whether the queue was emptied. `wait` waits for another process that
/// is sending; without it, that process's turn is left alone.
async fn send_queued(
    ctx: &Context,
    client: &Client,
    notes: &mut Notes,
    wait: bool,
) -> Result<bool, MonitorError> {
    let sending = if wait {
        ctx.store.lock_sending()?
    } else {
        match ctx.store.try_lock_sending()? {
            Some(sending) => sending,
            None => return Ok(false),
        }
    };
    match flush(&ctx.store, client, &sending).await {
        Ok(sent) => {
            for outcome in sent {
                match outcome {
                    Sent::Accepted(report, receipt) => println!(
                        "reported {} from {}: change {} {} ({} target(s))",
                        crate::report::settings_text(&report.settings),
                        report.module,
                        receipt.id,
                        receipt.status,
                        receipt.targets.len()
                    ),
                    Sent::Rejected(report, e) => eprintln!(
                        "the gateway refused a report from {} (moved to rejected/): {e}",
                        report.module
                    ),
                }
            }
            notes.0.retain(|n| !n.starts_with("cannot reach"));
            Ok(true)
        }
        Err(e) => transient_or(e, notes).map(|()| false),
    }
}

fn transient_or(e: MonitorError, notes: &mut Notes) -> Result<(), MonitorError> {
    match e {
        MonitorError::Client(e) if e.is_transient() => {
            notes.once(format!("{e}; retrying until it answers"));
            Ok(())
        }
        other => Err(other),
    }
}

async fn round(
    ctx: &Context,
    client: &Client,
    args: &WatchArgs,
    modules: &[ModuleView],
    notes: &mut Notes,
) -> Result<Vec<LocalBinding>, MonitorError> {
    let mut state = ctx.store.state()?;
    let bound = match ctx.sync_bindings(client).await {
        Ok(bindings) => {
            notes.0.retain(|n| !n.starts_with("cannot reach"));
            poll(ctx, client, &bindings, &mut state, notes).await?;
            bindings
        }
        Err(e) => {
            transient_or(e, notes)?;
            // Offline: the profile file still counts against the local copy.
            ctx.store.bindings()?
        }
    };
    if let Some(path) = &args.profile {
        match read_profile(ctx, path, &bound, &mut state, notes) {
            Err(MonitorError::File { path, reason }) => notes.once(format!("{path}: {reason}")),
            other => other?,
        }
    }
    if let Some(home) = home(args) {
        read_clients(ctx, &home, modules, &bound, &mut state, notes)?;
    }
    ctx.store.save_state(&state)?;
    send_queued(ctx, client, notes, true).await?;
    Ok(bound)
}

/// Reports what the user changed in a local IM client of a bound network,
/// as that network's change: the client's files, read as its module's
/// `reader` declares. The first read is the baseline; a value the network
/// already holds (the gateway's own push, or the client's sync) is not
/// reported; a file the reader does not understand is said once.
fn read_clients(
    ctx: &Context,
    home: &Path,
    modules: &[ModuleView],
    bound: &[LocalBinding],
    state: &mut State,
    notes: &mut Notes,
) -> Result<(), MonitorError> {
    for module in modules {
        let Some(binding) = bound.iter().find(|b| b.module == module.id) else {
            continue;
        };
        for hints in module.detect.named_clients(&module.name) {
            let Some(reader) = &hints.reader else {
                continue;
            };
            let read = match crate::readers::read(reader, home) {
                Ok(Some(read)) => read,
                Ok(None) => continue,
                Err(e) => {
                    notes.once(format!("{}: {e}; its changes are not read", hints.name));
                    continue;
                }
            };
            let avatar = match &read.avatar {
                Some(path) => match MonitorError::read(path) {
                    Ok(bytes) => Some((path.clone(), bytes)),
                    Err(e) => {
                        notes.once(format!("{}: its avatar: {e}", hints.name));
                        None
                    }
                },
                None => None,
            };
            let now = Seen {
                signature: read.signature.clone(),
                mood: read.mood.clone(),
                avatar_sha256: avatar.as_ref().map(|(_, bytes)| sha256_hex(bytes)),
            };
            let key = format!("{}/{}", module.id, hints.name);
            let Some(before) = state.local.insert(key, now.clone()) else {
                continue;
            };
            let network = state.seen.get(&binding.id);
            let fresh =
                |new: &Option<String>, old: &Option<String>, there: Option<&Option<String>>| {
                    new.clone().filter(|n| {
                        Some(n) != old.as_ref() && there.is_none_or(|t| t.as_ref() != Some(n))
                    })
                };
            let settings = Settings {
                avatar: None,
                signature: fresh(
                    &now.signature,
                    &before.signature,
                    network.map(|s| &s.signature),
                ),
                mood: fresh(&now.mood, &before.mood, network.map(|s| &s.mood)),
            };
            let report_key = uuid::Uuid::new_v4().to_string();
            let avatar = match avatar {
                Some((path, bytes)) if now.avatar_sha256 != before.avatar_sha256 => {
                    Some(queue_avatar(&ctx.store, &path, &bytes, &report_key)?)
                }
                _ => None,
            };
            if !settings.is_empty() || avatar.is_some() {
                let source = format!("{} on this device", hints.name);
                enqueue(ctx, binding, settings, avatar, source, report_key, true)?;
            }
        }
    }
    Ok(())
}

fn enqueue(
    ctx: &Context,
    binding: &LocalBinding,
    settings: Settings,
    avatar: Option<QueuedImage>,
    source: String,
    key: String,
    from_local_client: bool,
) -> Result<(), MonitorError> {
    let mut shown = settings.clone();
    if avatar.is_some() {
        shown.avatar = Some(String::new());
    }
    println!(
        "noticed on {} {}: {}",
        binding.module,
        binding.account,
        crate::report::settings_text(&shown)
    );
    ctx.store.enqueue(&QueuedReport {
        module: binding.module.clone(),
        account: Some(binding.account.clone()),
        settings,
        avatar,
        idempotency_key: key,
        source,
        from_local_client,
    })?;
    Ok(())
}

/// Reads each account's settings through the gateway; the first look at an
/// account is its baseline, later differences are reported.
async fn poll(
    ctx: &Context,
    client: &Client,
    bindings: &[LocalBinding],
    state: &mut State,
    notes: &mut Notes,
) -> Result<(), MonitorError> {
    state
        .seen
        .retain(|id, _| bindings.iter().any(|b| &b.id == id));
    for binding in bindings {
        let current = match client.current_settings(&binding.id).await {
            Ok(current) => current,
            Err(e) if e.code() == Some("fetch_unsupported") => {
                notes.once(format!(
                    "{} {}: its connector cannot read settings back; only reports, the \
                     profile file and local clients' files carry its changes",
                    binding.module, binding.account
                ));
                continue;
            }
            Err(e @ ClientError::SessionExpired { .. }) => return Err(e.into()),
            Err(e) => {
                notes.once(format!("{} {}: {e}", binding.module, binding.account));
                continue;
            }
        };
        let now = Seen {
            signature: current.signature.clone(),
            mood: current.mood.clone(),
            avatar_sha256: current.avatar.as_ref().map(|a| a.sha256.clone()),
        };
        if let Some(before) = state.seen.get(&binding.id) {
            let echo = |field: &str| current.applied_by_gateway.iter().any(|f| f == field);
            let changed = |field: &str, old: &Option<String>, new: &Option<String>| {
                new.clone()
                    .filter(|n| Some(n) != old.as_ref() && !echo(field))
            };
            let new_avatar = now.avatar_sha256.is_some()
                && now.avatar_sha256 != before.avatar_sha256
                && !echo("avatar");
            // The gateway kept the fetched image as a media of the user.
            let media = current.avatar.as_ref().and_then(|a| a.media_id.clone());
            let settings = Settings {
                avatar: media.filter(|_| new_avatar),
                signature: changed("signature", &before.signature, &now.signature),
                mood: changed("mood", &before.mood, &now.mood),
            };
            if new_avatar && settings.avatar.is_none() {
                notes.once(format!(
                    "{} {}: the avatar changed there, but the gateway could not keep the image \
                     (`monitor report --avatar FILE` sends one)",
                    binding.module, binding.account
                ));
            }
            if !settings.is_empty() {
                let source = format!("watch: {} {}", binding.module, binding.account);
                let key = uuid::Uuid::new_v4().to_string();
                enqueue(ctx, binding, settings, None, source, key, false)?;
            }
        }
        state.seen.insert(binding.id.clone(), now);
    }
    Ok(())
}

/// Reports each bound network's table of the profile file that differs from
/// the last read. Unlike an account's first look, the file's first read is
/// reported: the file says what the user wants set.
fn read_profile(
    ctx: &Context,
    path: &Path,
    bound: &[LocalBinding],
    state: &mut State,
    notes: &mut Notes,
) -> Result<(), MonitorError> {
    for (module, entry) in profile::read(path)? {
        let Some(binding) = bound.iter().find(|b| b.module == module) else {
            notes.once(format!(
                "{}: [{module}] is not a bound network; its changes are not reported",
                path.display()
            ));
            continue;
        };
        let avatar = match entry.avatar.as_deref() {
            Some(path) => Some((path, MonitorError::read(path)?)),
            None => None,
        };
        let now = Seen {
            signature: entry.signature.clone(),
            mood: entry.mood.clone(),
            avatar_sha256: avatar.as_ref().map(|(_, bytes)| sha256_hex(bytes)),
        };
        let before = state.profile.get(&module).cloned().unwrap_or_default();
        let key = uuid::Uuid::new_v4().to_string();
        let settings = Settings {
            avatar: None,
            signature: now
                .signature
                .clone()
                .filter(|_| now.signature != before.signature),
            mood: now.mood.clone().filter(|_| now.mood != before.mood),
        };
        let avatar = match avatar {
            Some((path, bytes)) if now.avatar_sha256 != before.avatar_sha256 => {
                Some(queue_avatar(&ctx.store, path, &bytes, &key)?)
            }
            _ => None,
        };
        if !settings.is_empty() || avatar.is_some() {
            let source = format!("profile file {}", path.display());
            enqueue(ctx, binding, settings, avatar, source, key, false)?;
        }
        state.profile.insert(module, now);
    }
    Ok(())
}
