//! `monitor report` and `monitor status`: a change goes through the on-disk
//! queue (so nothing is lost while the gateway is unreachable, and queued
//! reports go out in the order they were made), then its delivery is followed
//! per network on the change's event stream.

use crate::client::{Client, ClientError};
use crate::store::{QueuedImage, QueuedReport, Sending, Store};
use crate::{Context, MonitorError, Outcome};
use futures::StreamExt;
use gateway_api::{
    ChangeEvent, ChangeStatus, ChangeView, Receipt, Settings, TargetStatus, TargetView,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The network where the change was made (a bound module id).
    #[arg(long)]
    module: String,
    /// Your account on it, when several of that module are bound.
    #[arg(long)]
    account: Option<String>,
    /// New signature (status text).
    #[arg(long)]
    signature: Option<String>,
    /// New mood.
    #[arg(long)]
    mood: Option<String>,
    /// New avatar: a PNG, JPEG, GIF or WebP file.
    #[arg(long)]
    avatar: Option<PathBuf>,
    /// Seconds to follow the delivery before leaving it to `monitor status`.
    #[arg(long, default_value_t = 120)]
    wait: u64,
}

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A change id; without it, the recent changes.
    change: Option<String>,
    /// How many recent changes.
    #[arg(long, default_value_t = 10)]
    limit: u32,
}

/// Checks that `path` holds an image the gateway accepts; returns its MIME type.
pub fn image_type(path: &Path, bytes: &[u8]) -> Result<&'static str, MonitorError> {
    let not_image = |reason: String| MonitorError::File {
        path: path.display().to_string(),
        reason,
    };
    let format = image::guess_format(bytes)
        .map_err(|_| not_image("not an image (PNG, JPEG, GIF or WebP expected)".into()))?;
    let content_type = match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::Jpeg => "image/jpeg",
        image::ImageFormat::Gif => "image/gif",
        image::ImageFormat::WebP => "image/webp",
        other => {
            return Err(not_image(format!(
                "{other:?} images are not accepted (PNG, JPEG, GIF or WebP expected)"
            )))
        }
    };
    image::load_from_memory_with_format(bytes, format)
        .map_err(|e| not_image(format!("not a readable {content_type} image: {e}")))?;
    Ok(content_type)
}

/// Copies an avatar (`bytes`, read from `path`) into the queue folder,
/// durably, after checking it is an image.
pub fn queue_avatar(
    store: &Store,
    path: &Path,
    bytes: &[u8],
    key: &str,
) -> Result<QueuedImage, MonitorError> {
    let content_type = image_type(path, bytes)?;
    let file = store.queue_image(key, bytes)?;
    Ok(QueuedImage {
        file,
        content_type: content_type.to_owned(),
    })
}

/// What became of one queued report.
#[derive(Debug)]
pub enum Sent {
    /// The gateway took it.
    Accepted(QueuedReport, Receipt),
    /// The gateway refused it for good; it was moved to `rejected/`.
    Rejected(QueuedReport, ClientError),
}

/// Sends one queued report, uploading its avatar copy first. The outer error
/// is a local file problem; the inner one is the gateway's answer.
async fn send(
    client: &Client,
    report: &QueuedReport,
) -> Result<Result<Receipt, ClientError>, MonitorError> {
    let mut settings = report.settings.clone();
    if let Some(image) = &report.avatar {
        let bytes = MonitorError::read(&image.file)?;
        let media = match client.upload_media(&image.content_type, bytes).await {
            Ok(media) => media,
            Err(e) => return Ok(Err(e)),
        };
        settings.avatar = Some(media.id);
    }
    let account = report.account.as_deref();
    Ok(client
        .report(
            &report.module,
            account,
            &settings,
            report.from_local_client,
            &report.idempotency_key,
        )
        .await)
}

/// Sends the queued reports, oldest first. Stops at the first one that
/// cannot be sent now (gateway unreachable, overloaded, session expired),
/// keeping it and the ones after it for later, in order. `_sending` is the
/// proof that no other monitor process sends the queue meanwhile (see
/// [`Store::lock_sending`]): while it is held, no one else removes or
/// sends what this listing holds, and others only add newer reports.
pub async fn flush(
    store: &Store,
    client: &Client,
    _sending: &Sending,
) -> Result<Vec<Sent>, MonitorError> {
    let mut sent = Vec::new();
    for (_, path, report) in store.queued()? {
        match send(client, &report).await? {
            Ok(receipt) => {
                store.dequeue(&path)?;
                if let Some(image) = &report.avatar {
                    let _ = std::fs::remove_file(&image.file);
                }
                sent.push(Sent::Accepted(report, receipt));
            }
            Err(e) if e.is_transient() || matches!(e, ClientError::SessionExpired { .. }) => {
                return Err(e.into())
            }
            Err(e) => {
                store.reject(&path, &e.to_string())?;
                sent.push(Sent::Rejected(report, e));
            }
        }
    }
    Ok(sent)
}

/// `monitor report`.
pub async fn report(ctx: &Context, args: &ReportArgs) -> Result<Outcome, MonitorError> {
    if args.signature.is_none() && args.mood.is_none() && args.avatar.is_none() {
        return Err(MonitorError::Usage(
            "nothing to report: give --signature, --mood and/or --avatar".into(),
        ));
    }
    let client = ctx.client()?;
    // Online, a module that is not bound is refused before anything is queued.
    match ctx.sync_bindings(&client).await {
        Ok(bindings) if !bindings.iter().any(|b| b.module == args.module) => {
            return Err(ctx.unbound_module(&client, &args.module).await);
        }
        Ok(_) => {}
        Err(MonitorError::Client(e)) if e.is_transient() => {}
        Err(e) => return Err(e),
    }
    let key = uuid::Uuid::new_v4().to_string();
    let settings = Settings {
        avatar: None,
        signature: args.signature.clone(),
        mood: args.mood.clone(),
    };
    // Our turn to send is taken before the report is queued, so no other
    // monitor (a `watch`) sends it in between: this command must see its
    // own receipt to follow the delivery.
    let sending = match ctx.store.try_lock_sending()? {
        Some(sending) => sending,
        None => {
            eprintln!("another monitor is sending the queued reports; waiting for it to finish");
            ctx.store.lock_sending()?
        }
    };
    let avatar = match &args.avatar {
        Some(path) => Some(queue_avatar(
            &ctx.store,
            path,
            &MonitorError::read(path)?,
            &key,
        )?),
        None => None,
    };
    ctx.store.enqueue(&QueuedReport {
        module: args.module.clone(),
        account: args.account.clone(),
        settings,
        avatar,
        idempotency_key: key.clone(),
        source: "monitor report".into(),
        from_local_client: false,
    })?;
    let flushed = flush(&ctx.store, &client, &sending).await;
    // Released before following the delivery, which may take minutes.
    drop(sending);
    let sent = match flushed {
        Ok(sent) => sent,
        Err(MonitorError::Client(e)) if e.is_transient() => {
            let waiting = ctx.store.waiting()?.len();
            eprintln!(
                "{e}\nthe report is kept on disk ({waiting} waiting) and sent, in order, \
                 by the next `monitor report` or `monitor watch`"
            );
            return Ok(Outcome::Queued);
        }
        Err(e) => return Err(e),
    };
    let mut ours = None;
    for outcome in sent {
        match outcome {
            Sent::Accepted(report, receipt) if report.idempotency_key == key => {
                ours = Some(receipt)
            }
            Sent::Accepted(report, receipt) => eprintln!(
                "sent an earlier queued report from {}: change {}",
                report.module, receipt.id
            ),
            Sent::Rejected(report, e) if report.idempotency_key == key => return Err(e.into()),
            Sent::Rejected(report, e) => eprintln!(
                "an earlier queued report from {} was refused and moved to {}: {e}",
                report.module,
                ctx.store.dir().join("rejected").display()
            ),
        }
    }
    let Some(receipt) = ours else {
        return Err(MonitorError::Usage("the report was not sent".into()));
    };
    if receipt.status == ChangeStatus::Suppressed {
        println!(
            "nothing to do: these settings are the ones the gateway itself last applied to {} (an echo)",
            args.module
        );
        return Ok(Outcome::Done);
    }
    let change = client.change(&receipt.id).await?;
    follow(&client, &change, Duration::from_secs(args.wait)).await
}

fn describe(target: &TargetView) -> String {
    let mut text = match target.status {
        TargetStatus::Delivered => format!("delivered: {}", fields(&target.applied_fields)),
        TargetStatus::Retrying => format!(
            "retrying after attempt {}{}",
            target.attempts,
            target
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        TargetStatus::Failed => format!(
            "failed: {}",
            target.last_error.as_deref().unwrap_or("no reason given")
        ),
        TargetStatus::Superseded => "superseded by a newer change".to_owned(),
        TargetStatus::Delivering => format!("delivering (attempt {})", target.attempts.max(1)),
        TargetStatus::Pending => "pending".to_owned(),
    };
    if !target.truncated_fields.is_empty() {
        text.push_str(&format!(
            " (shortened to fit: {})",
            target.truncated_fields.join(", ")
        ));
    }
    text
}

fn fields(list: &[String]) -> String {
    if list.is_empty() {
        "nothing this network can hold".into()
    } else {
        list.join(", ")
    }
}

/// One progress line per target network, fed by the change's event stream,
/// until every target is final or `wait` runs out.
async fn follow(
    client: &Client,
    change: &ChangeView,
    wait: Duration,
) -> Result<Outcome, MonitorError> {
    if change.targets.is_empty() {
        println!(
            "change {}: no other network is bound, nothing to deliver",
            change.id
        );
        return Ok(Outcome::Done);
    }
    println!(
        "change {} from {}: {} target network(s)",
        change.id,
        change.module,
        change.targets.len()
    );
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let width = change
        .targets
        .iter()
        .map(|t| t.module.len() + t.account.len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut lines: BTreeMap<String, (ProgressBar, TargetView)> = BTreeMap::new();
    for target in &change.targets {
        let bar = bars.add(ProgressBar::new_spinner());
        bar.set_style(style.clone());
        bar.set_prefix(format!(
            "{:<width$}",
            format!("{} {}", target.module, target.account)
        ));
        bar.set_message(describe(target));
        bar.enable_steady_tick(Duration::from_millis(120));
        lines.insert(target.binding_id.clone(), (bar, target.clone()));
    }
    let plain = bars.is_hidden();
    let deadline = tokio::time::Instant::now() + wait;
    let mut done = false;
    while !done && tokio::time::Instant::now() < deadline {
        let mut events = match client.events(&change.id).await {
            Ok(events) => Box::pin(events),
            Err(e) if e.is_transient() => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let next = tokio::time::timeout_at(deadline, events.next()).await;
            match next {
                Ok(Some(ChangeEvent::Target(target))) => {
                    if let Some((bar, last)) = lines.get_mut(&target.binding_id) {
                        if plain && last.status != target.status {
                            eprintln!(
                                "{} {}: {}",
                                target.module,
                                target.account,
                                describe(&target)
                            );
                        }
                        bar.set_message(describe(&target));
                        if target.status.is_final() {
                            // Not `finish()`: a finished bar stays on screen
                            // above the summary printed below, a duplicate.
                            bar.disable_steady_tick();
                        }
                        *last = *target;
                    }
                }
                Ok(Some(ChangeEvent::Done(_))) => {
                    done = true;
                    break;
                }
                Ok(Some(ChangeEvent::Error(_))) | Ok(None) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    let _ = bars.clear();
    let mut delivered_everywhere = true;
    let mut pending = false;
    for (bar, target) in lines.values() {
        bar.finish_and_clear();
        let delivered = matches!(
            target.status,
            TargetStatus::Delivered | TargetStatus::Superseded
        );
        let mark = match target.status {
            _ if delivered => "ok",
            TargetStatus::Failed => "FAILED",
            _ => "pending",
        };
        delivered_everywhere &= delivered;
        pending |= !target.status.is_final();
        println!(
            "{mark:<7} {:<width$} {}",
            format!("{} {}", target.module, target.account),
            describe(target)
        );
    }
    Ok(if pending {
        println!(
            "still in progress: `monitor status {}` follows it",
            change.id
        );
        Outcome::StillPending
    } else if delivered_everywhere {
        Outcome::Done
    } else {
        Outcome::NotDelivered
    })
}

/// The settings as a person reads them: texts quoted, an avatar as such
/// (its media id means nothing to the user).
pub fn settings_text(settings: &Settings) -> String {
    settings
        .fields()
        .map(|(field, value)| match field {
            "avatar" => "a new avatar".to_owned(),
            _ => format!("{field} {value:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_change(change: &ChangeView) {
    let delivered = change
        .targets
        .iter()
        .filter(|t| t.status == TargetStatus::Delivered)
        .count();
    println!(
        "{}  {}  from {:<10} {:<10} delivered to {delivered}/{}  {}",
        change.created_at,
        change.id,
        change.module,
        change.status,
        change.targets.len(),
        settings_text(&change.settings)
    );
    for target in &change.targets {
        println!(
            "    {} {}: {}",
            target.module,
            target.account,
            describe(target)
        );
    }
}

/// `monitor status`.
pub async fn status(ctx: &Context, args: &StatusArgs) -> Result<Outcome, MonitorError> {
    let queued = ctx.store.queued()?;
    if !queued.is_empty() {
        println!("{} report(s) waiting to be sent:", queued.len());
        for (seq, _, report) in &queued {
            let mut settings = report.settings.clone();
            if report.avatar.is_some() {
                settings.avatar = Some(String::new());
            }
            println!(
                "    #{seq} from {}: {}",
                report.module,
                settings_text(&settings)
            );
        }
    }
    let client = ctx.client()?;
    match &args.change {
        Some(id) => print_change(&client.change(id).await?),
        None => {
            let changes = client.changes(args.limit).await?;
            if changes.is_empty() {
                println!("no changes reported yet");
            }
            changes.iter().for_each(print_change);
        }
    }
    Ok(Outcome::Done)
}
