//! `monitor handoff`: this terminal as a terminal of the handoff service
//! (`/v1/services/handoff/...`). Every call uses the device token that
//! `monitor device register` keeps, so the service sees this device:
//! open a session, push its progress, hand it to another terminal, and on
//! the other terminal take it over from the device's event stream
//! (`GET /v1/devices/current/events`, resumed with `Last-Event-ID` from
//! `inbox.json`).

use crate::client::{Client, ClientError, InboxItem};
use crate::store::{Device, InboxCursor};
use crate::{prompt, Context, MonitorError, Outcome};
use futures::StreamExt;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The subcommands of `handoff`.
#[derive(Debug, clap::Subcommand)]
pub enum HandoffCommand {
    /// Open an application session held by this terminal.
    Open(OpenArgs),
    /// Save the session's progress: the new state, based on the version
    /// this terminal last saw (refused when the session moved on).
    Push(PushArgs),
    /// Hand the session to another terminal: it is offered there, and moves
    /// once that terminal accepts.
    Switch(SwitchArgs),
    /// Follow this terminal's events and answer what is offered to it:
    /// sessions, upload orders of your other devices, the preset client.
    Inbox(InboxArgs),
    /// A session's history: opened, progress, offered, accepted, moved...
    Log(SessionArg),
    /// A session: its app, the terminal holding it, its version and state.
    Show(SessionArg),
    /// Take over a session offered to this terminal (the switch id that
    /// `inbox` printed).
    Accept(AcceptArgs),
    /// Refuse a session offered to this terminal; it is offered to the next
    /// terminal, if any.
    Decline(DeclineArgs),
}

/// The application state of `open` and `push`.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The application's state as JSON, e.g. '{"line": 7}'.
    #[arg(long, value_name = "JSON", conflicts_with = "state_file")]
    state: Option<String>,
    /// The state from a JSON file (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
}

impl StateArgs {
    /// The state given, if any.
    fn value(&self) -> Result<Option<Value>, MonitorError> {
        let (text, what) = match (&self.state, &self.state_file) {
            (Some(json), _) => (json.clone(), "--state".to_owned()),
            (None, Some(path)) if path.as_os_str() == "-" => (
                std::io::read_to_string(std::io::stdin())
                    .map_err(MonitorError::file(std::path::Path::new("stdin")))?,
                "the state on stdin".to_owned(),
            ),
            (None, Some(path)) => (
                String::from_utf8_lossy(&MonitorError::read(path)?).into_owned(),
                path.display().to_string(),
            ),
            (None, None) => return Ok(None),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| MonitorError::Usage(format!("{what} is not JSON: {e}")))
    }
}

/// Flags of `handoff open`.
#[derive(Debug, clap::Args)]
pub struct OpenArgs {
    /// The application's id or URL, e.g. org.example.editor.
    #[arg(long)]
    app: String,
    #[command(flatten)]
    state: StateArgs,
}

/// Flags of `handoff push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The session id.
    session: String,
    /// The version the new state is based on (what `open`, `push`, `show`
    /// or an accepted offer printed last).
    #[arg(long)]
    version: u64,
    #[command(flatten)]
    state: StateArgs,
}

/// Flags of `handoff switch`.
#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// The session id.
    session: String,
    /// The device to hand it to. Default, on the terminal holding it: the
    /// next one of the pairing chain, else an active device that can
    /// continue the session's app; on another terminal: this one (a pull).
    #[arg(long, value_name = "DEVICE")]
    to: Option<String>,
}

/// A session id.
#[derive(Debug, clap::Args)]
pub struct SessionArg {
    /// The session id.
    session: String,
}

/// Flags of `handoff accept`.
#[derive(Debug, clap::Args)]
pub struct AcceptArgs {
    /// The switch id.
    switch: String,
}

/// Flags of `handoff decline`.
#[derive(Debug, clap::Args)]
pub struct DeclineArgs {
    /// The switch id.
    switch: String,
    /// Why, shown in the session's log.
    #[arg(long, default_value = "declined")]
    reason: String,
}

/// Flags of `handoff inbox`.
#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    /// Accept every session offered to this terminal (and upload orders,
    /// and the preset client).
    #[arg(long, group = "answer")]
    accept: bool,
    /// Decline every session offered, with this reason (and the preset
    /// client; upload orders are then only printed).
    #[arg(long, value_name = "REASON", group = "answer")]
    decline: Option<String>,
    /// Ask for each offer (the default when stdin is a terminal; otherwise
    /// offers are only printed, to answer with `handoff accept|decline`).
    #[arg(long, group = "answer")]
    ask: bool,
    /// Exit after the first offer (once answered).
    #[arg(long)]
    once: bool,
}

/// How `inbox` answers offers.
#[derive(Debug, Clone, Copy)]
enum Answer<'a> {
    Accept,
    Decline(&'a str),
    Ask,
    /// Print only.
    Leave,
}

/// Carries out `monitor handoff ...`.
pub async fn handoff(ctx: &Context, command: &HandoffCommand) -> Result<Outcome, MonitorError> {
    let (device, client) = ctx.device_client()?;
    match command {
        HandoffCommand::Open(args) => open(&device, &client, args).await,
        HandoffCommand::Push(args) => push(&client, args).await,
        HandoffCommand::Switch(args) => switch(&client, args).await,
        HandoffCommand::Inbox(args) => inbox(ctx, &device, &client, args).await,
        HandoffCommand::Log(args) => log(&client, &args.session).await,
        HandoffCommand::Show(args) => show(&device, &client, &args.session).await,
        HandoffCommand::Accept(args) => {
            accept(&device, &client, &args.switch).await?;
            Ok(Outcome::Done)
        }
        HandoffCommand::Decline(args) => {
            decline(&client, &args.switch, &args.reason).await?;
            Ok(Outcome::Done)
        }
    }
}

async fn open(device: &Device, client: &Client, args: &OpenArgs) -> Result<Outcome, MonitorError> {
    let state = args
        .state
        .value()?
        .unwrap_or_else(|| Value::Object(Map::new()));
    let session = client.open_session(&args.app, &state).await?;
    println!(
        "opened session {} ({}) at version {}, held by this terminal ({})",
        session.id, session.app, session.version, device.id
    );
    Ok(Outcome::Done)
}

async fn push(client: &Client, args: &PushArgs) -> Result<Outcome, MonitorError> {
    let state = args.state.value()?.ok_or_else(|| {
        MonitorError::Usage("give the new state: --state JSON or --state-file FILE".into())
    })?;
    match client
        .push_session(&args.session, args.version, &state)
        .await
    {
        Ok(session) => {
            println!("session {} is at version {}", session.id, session.version);
            Ok(Outcome::Done)
        }
        Err(e) if e.code() == Some("stale_version") => {
            eprintln!(
                "version {} of session {} is not the latest: `monitor handoff show {}` shows \
                 the session as it is now",
                args.version, args.session, args.session
            );
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn switch(client: &Client, args: &SwitchArgs) -> Result<Outcome, MonitorError> {
    let asked = client
        .switch_session(&args.session, args.to.as_deref())
        .await?;
    println!(
        "switch {}: session {} {} to {}; it moves once that terminal accepts",
        asked.switch_id,
        args.session,
        asked.status,
        asked.to.as_deref().unwrap_or("(no device)")
    );
    Ok(Outcome::Done)
}

async fn show(device: &Device, client: &Client, session: &str) -> Result<Outcome, MonitorError> {
    let s = client.session(session).await?;
    let here = if s.holder == device.id {
        " (this terminal)"
    } else {
        ""
    };
    println!("session {} ({})", s.id, s.app);
    println!("held by {}{here}", s.holder);
    println!("version {}", s.version);
    println!("state   {}", s.state);
    Ok(Outcome::Done)
}

async fn log(client: &Client, session: &str) -> Result<Outcome, MonitorError> {
    let entries = client.session_log(session).await?;
    if entries.is_empty() {
        println!("session {session} has no history yet");
    }
    let width = entries
        .iter()
        .filter_map(|e| e.get("device").and_then(Value::as_str))
        .map(|d| d.chars().count())
        .max()
        .unwrap_or(0);
    for entry in entries {
        let text = |key: &str| {
            entry
                .get(key)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default()
        };
        let details: Vec<String> = entry
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "at" | "device" | "event"))
            .map(|(key, value)| match value {
                Value::String(s) => format!("{key}={s}"),
                other => format!("{key}={other}"),
            })
            .collect();
        println!(
            "{}  {:<width$}  {:<9} {}",
            text("at"),
            text("device"),
            text("event"),
            details.join(" ")
        );
    }
    Ok(Outcome::Done)
}

/// Accepts switch `id`; prints the session as this terminal now holds it.
async fn accept(device: &Device, client: &Client, id: &str) -> Result<(), ClientError> {
    let switch = client.accept_switch(id).await?;
    let session = client.session(&switch.session_id).await?;
    println!(
        "accepted switch {}: session {} ({}) is now held by this terminal ({}) at version {}",
        switch.switch_id, session.id, session.app, device.id, session.version
    );
    println!("state {}", session.state);
    Ok(())
}

async fn decline(client: &Client, id: &str, reason: &str) -> Result<(), ClientError> {
    let switch = client.decline_switch(id, reason).await?;
    let next = match (switch.status.as_str(), &switch.to) {
        ("offered", Some(to)) => format!("offered to {to} next"),
        ("unplaced", _) => "no other terminal takes it; its holder keeps it".to_owned(),
        (status, _) => status.to_owned(),
    };
    println!(
        "declined switch {} of session {} ({reason}): {next}",
        switch.switch_id, switch.session_id
    );
    Ok(())
}

/// A string field of an event's data.
fn field<'a>(data: &'a Value, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// One event as a line a person reads.
fn describe(kind: &str, data: &Value) -> String {
    match kind {
        "handoff.offer" => format!(
            "switch {} offers session {} ({}, version {}) from {}{}",
            field(data, "switch_id"),
            field(data, "session_id"),
            field(data, "app"),
            data.get("version").unwrap_or(&Value::Null),
            field(data, "from"),
            data.get("expires_at")
                .and_then(Value::as_str)
                .map(|at| format!(", open until {at}"))
                .unwrap_or_default(),
        ),
        "handoff.moved" => format!(
            "session {} moved to {}; this terminal no longer holds it",
            field(data, "session_id"),
            field(data, "to"),
        ),
        "handoff.failed" => format!(
            "switch {} of session {} failed: no terminal took it, this terminal keeps it",
            field(data, "switch_id"),
            field(data, "session_id"),
        ),
        "device.joined" => format!(
            "{} ({}, {}) joined your devices",
            field(data, "device"),
            field(data, "name"),
            data.get("platform")
                .and_then(Value::as_str)
                .unwrap_or("unknown platform"),
        ),
        "device.left" => format!("{} was removed from your devices", field(data, "device")),
        "files.upload.order" => format!(
            "upload order {} from {}: {} ({})",
            field(data, "order_id"),
            field(data, "from"),
            data.get("paths")
                .and_then(Value::as_array)
                .map(|p| p
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            match (field(data, "route"), data.get("target")) {
                ("direct", Some(t)) => format!(
                    "direct: both on one network, this device at {} port {}",
                    t.get("ip").and_then(Value::as_str).unwrap_or("?"),
                    t.get("port").unwrap_or(&Value::Null)
                ),
                _ => "relayed through the gateway".to_owned(),
            }
        ),
        "files.file.updated" => format!(
            "{} ({}) is {}",
            field(data, "name"),
            field(data, "id"),
            field(data, "status")
        ),
        "files.file.available" => format!(
            "{} is uploaded: `monitor files get {}`",
            field(data, "name"),
            field(data, "id")
        ),
        "files.file.reupload" => format!(
            "{} ({}) is to be uploaded again",
            field(data, "name"),
            field(data, "id")
        ),
        "files.file.deleted" => format!("file {} was deleted", field(data, "id")),
        "tasks.offer" => match serde_json::from_value::<crate::tasks::OfferView>(data.clone()) {
            Ok(offer) => crate::tasks::describe(&offer),
            Err(_) => data.to_string(),
        },
        _ => data.to_string(),
    }
}

/// What became of one event.
enum Handled {
    /// Printed (and, for an offer, answered).
    Done {
        /// It was an offer.
        offer: bool,
    },
    /// The gateway could not be reached to answer: read it again after
    /// reconnecting.
    Retry(ClientError),
    /// Ctrl-C while asking.
    Stop,
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    store: &crate::store::Store,
    device: &Device,
    client: &Client,
    answer: Answer<'_>,
    once: bool,
    id: Option<u64>,
    kind: &str,
    data: &Value,
) -> Result<Handled, MonitorError> {
    let number = id.map(|id| format!("#{id} ")).unwrap_or_default();
    println!("{number}{kind}: {}", describe(kind, data));
    if kind == "files.upload.order" {
        return upload_order(store, client, answer, data).await;
    }
    if kind == "tasks.offer" {
        return client_offer(client, answer).await;
    }
    if kind != "handoff.offer" {
        return Ok(Handled::Done { offer: false });
    }
    let switch = field(data, "switch_id");
    // An offer read late (the terminal was off, or it was answered with
    // `handoff accept` meanwhile) may be over: say so instead of answering.
    match client.switch(switch).await {
        Ok(w) if w.status == "offered" && w.to.as_deref() == Some(device.id.as_str()) => {}
        Ok(w) => {
            let now = match (w.status.as_str(), w.to.as_deref()) {
                ("accepted", Some(to)) if to == device.id => "this terminal accepted it".to_owned(),
                ("accepted", Some(to)) => format!("{to} accepted it"),
                ("offered", Some(to)) => format!("it is offered to {to} now"),
                ("unplaced", _) => "no terminal took it".to_owned(),
                (status, _) => status.to_owned(),
            };
            println!("switch {switch} is no longer open here: {now}");
            return Ok(Handled::Done { offer: false });
        }
        Err(e) if e.is_transient() => return Ok(Handled::Retry(e)),
        Err(e @ ClientError::DeviceTokenEnded { .. }) => return Err(e.into()),
        // Answering says what is wrong, if anything.
        Err(_) => {}
    }
    println!("state {}", data.get("state").unwrap_or(&Value::Null));
    let answer = match answer {
        Answer::Ask => {
            let question = format!(
                "take over session {} ({}) from {}?",
                field(data, "session_id"),
                field(data, "app"),
                field(data, "from")
            );
            // Asked on a thread of its own, so Ctrl-C still ends the inbox.
            let asked = tokio::task::spawn_blocking(move || prompt::confirm(&question));
            let yes = tokio::select! {
                joined = asked => joined.map_err(|e| MonitorError::Usage(e.to_string()))??,
                _ = tokio::signal::ctrl_c() => return Ok(Handled::Stop),
            };
            if yes {
                Answer::Accept
            } else {
                Answer::Decline("declined")
            }
        }
        other => other,
    };
    let answered = match answer {
        Answer::Accept => accept(device, client, switch).await,
        Answer::Decline(reason) => decline(client, switch, reason).await,
        Answer::Ask | Answer::Leave => {
            println!(
                "answer with `monitor handoff accept {switch}` or `monitor handoff decline \
                 {switch} --reason TEXT`"
            );
            Ok(())
        }
    };
    match answered {
        Ok(()) => Ok(Handled::Done { offer: true }),
        Err(e) if e.is_transient() => Ok(Handled::Retry(e)),
        // The offer is gone (answered elsewhere, expired) or the token
        // ended: with --once that is the end; otherwise keep listening,
        // unless this device can no longer act.
        Err(e @ ClientError::DeviceTokenEnded { .. }) => Err(e.into()),
        Err(e) if once => Err(e.into()),
        Err(e) => {
            eprintln!("could not answer switch {switch}: {e}");
            Ok(Handled::Done { offer: true })
        }
    }
}

/// Answers an upload order (R2): with `--accept` (or yes when asked) the
/// ordered files of this device go up through the gateway, like `files
/// upload`; the ordering device sees them in its list (R3).
async fn upload_order(
    store: &crate::store::Store,
    client: &Client,
    answer: Answer<'_>,
    data: &Value,
) -> Result<Handled, MonitorError> {
    let paths: Vec<PathBuf> = data
        .get("paths")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let go = match answer {
        Answer::Accept => true,
        Answer::Decline(_) | Answer::Leave => {
            println!(
                "upload them with `monitor files upload {}`",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            false
        }
        Answer::Ask => {
            let question = format!(
                "upload the {} file(s) {} asked for?",
                paths.len(),
                field(data, "from")
            );
            let asked = tokio::task::spawn_blocking(move || prompt::confirm(&question));
            tokio::select! {
                joined = asked => joined.map_err(|e| MonitorError::Usage(e.to_string()))??,
                _ = tokio::signal::ctrl_c() => return Ok(Handled::Stop),
            }
        }
    };
    if go {
        match crate::files::upload(store, client, &paths).await {
            Ok(ids) => println!(
                "order {}: uploaded {} file(s)",
                field(data, "order_id"),
                ids.len()
            ),
            Err(MonitorError::Client(e)) if e.is_transient() => return Ok(Handled::Retry(e)),
            Err(e) => eprintln!("order {}: {e}", field(data, "order_id")),
        }
    }
    Ok(Handled::Done { offer: true })
}

/// Answers the preset client's offer (T1): accepted or declined as the
/// inbox was told, or asked; an offer answered meanwhile is left alone.
async fn client_offer(client: &Client, answer: Answer<'_>) -> Result<Handled, MonitorError> {
    use crate::tasks::OfferAction;
    let current = match client.offer(None).await {
        Ok(current) => current,
        Err(e) if e.is_transient() => return Ok(Handled::Retry(e)),
        Err(e) => return Err(e.into()),
    };
    if current.status != "offered" {
        println!(
            "the offer is answered already: {}",
            crate::tasks::describe(&current)
        );
        return Ok(Handled::Done { offer: false });
    }
    let action = match answer {
        Answer::Accept => Some(OfferAction::Accept),
        Answer::Decline(_) => Some(OfferAction::Decline),
        Answer::Leave => None,
        Answer::Ask => {
            let question = match &current.client {
                Some(c) => format!("install {} {} from {}?", c.name, c.version, c.url),
                None => "install the preset client?".to_owned(),
            };
            let asked = tokio::task::spawn_blocking(move || prompt::confirm(&question));
            let yes = tokio::select! {
                joined = asked => joined.map_err(|e| MonitorError::Usage(e.to_string()))??,
                _ = tokio::signal::ctrl_c() => return Ok(Handled::Stop),
            };
            Some(if yes {
                OfferAction::Accept
            } else {
                OfferAction::Decline
            })
        }
    };
    if let Some(action) = action {
        match client.offer(Some(action)).await {
            Ok(answered) => println!("{}", crate::tasks::describe(&answered)),
            Err(e) if e.is_transient() => return Ok(Handled::Retry(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Handled::Done { offer: true })
}

/// Moves the inbox position forward to `handled` (kept in `inbox.json`).
fn save_cursor(
    ctx: &Context,
    device: &Device,
    cursor: &mut Option<u64>,
    handled: Option<u64>,
) -> Result<(), MonitorError> {
    if let Some(id) = handled.filter(|id| cursor.is_none_or(|c| *id > c)) {
        *cursor = Some(id);
        ctx.store.save_inbox_cursor(&InboxCursor {
            server: device.server.clone(),
            device: device.id.clone(),
            last_event_id: id,
        })?;
    }
    Ok(())
}

/// Waits `delay` unless Ctrl-C comes first (`false` then).
async fn pause(delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = tokio::signal::ctrl_c() => false,
    }
}

/// `monitor handoff inbox`. When the device token ends because this
/// terminal was registered again (`device register` in another shell), it
/// goes on with the new registration.
async fn inbox(
    ctx: &Context,
    device: &Device,
    client: &Client,
    args: &InboxArgs,
) -> Result<Outcome, MonitorError> {
    let (mut device, mut client) = (device.clone(), client.clone());
    loop {
        match listen(ctx, &device, &client, args).await {
            Err(MonitorError::Client(ClientError::DeviceTokenEnded { server })) => {
                match ctx.store.device()? {
                    Some(fresh) if fresh.server == device.server && fresh.token != device.token => {
                        eprintln!(
                            "this terminal was registered again (device {}); listening with \
                             its new token",
                            fresh.id
                        );
                        client = Client::device(&fresh.server, fresh.token.clone());
                        device = fresh;
                    }
                    _ => return Err(ClientError::DeviceTokenEnded { server }.into()),
                }
            }
            other => return other,
        }
    }
}

/// Follows the device's event stream, printing every event and answering
/// offers; reconnects (resuming after the last event handled) when the
/// gateway goes away.
async fn listen(
    ctx: &Context,
    device: &Device,
    client: &Client,
    args: &InboxArgs,
) -> Result<Outcome, MonitorError> {
    let answer = match (&args.decline, args.accept, args.ask) {
        (Some(reason), _, _) => Answer::Decline(reason),
        (None, true, _) => Answer::Accept,
        (None, false, true) => Answer::Ask,
        (None, false, false) if prompt::interactive() => Answer::Ask,
        (None, false, false) => Answer::Leave,
    };
    let mut cursor = ctx.store.inbox_cursor(&device.server, &device.id)?;
    let mut delay = Duration::from_secs(1);
    loop {
        let stream = match client.inbox(cursor).await {
            Ok(stream) => stream,
            Err(e) if e.is_transient() => {
                eprintln!("{e}; trying again in {} s", delay.as_secs());
                if !pause(delay).await {
                    return Ok(Outcome::Done);
                }
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        delay = Duration::from_secs(1);
        eprintln!(
            "listening for the events of device {} at {} ({}; Ctrl-C stops)",
            device.id,
            device.server,
            match answer {
                Answer::Accept => "accepting offers".to_owned(),
                Answer::Decline(reason) => format!("declining offers: {reason}"),
                Answer::Ask => "asking about each offer".to_owned(),
                Answer::Leave => "printing offers".to_owned(),
            }
        );
        let mut stream = std::pin::pin!(stream);
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tokio::signal::ctrl_c() => return Ok(Outcome::Done),
            };
            let (id, kind, data) = match item {
                Some(InboxItem::Event { id, kind, data }) => (id, kind, data),
                Some(InboxItem::Broken(reason)) => {
                    eprintln!("the event stream broke ({reason}); reconnecting");
                    break;
                }
                None => {
                    eprintln!("the event stream ended; reconnecting");
                    break;
                }
            };
            if kind == "error" {
                // Sent when the device token ends (the device was removed
                // or registered again): this terminal can no longer listen.
                eprintln!(
                    "the gateway ended the event stream: {}",
                    field(&data, "message")
                );
                return Err(ClientError::DeviceTokenEnded {
                    server: device.server.clone(),
                }
                .into());
            }
            // Every event before this one was handled.
            let (handled, reconnect) = match handle(
                &ctx.store, device, client, answer, args.once, id, &kind, &data,
            )
            .await?
            {
                Handled::Stop => return Ok(Outcome::Done),
                Handled::Retry(e) => {
                    eprintln!("{e}; the offer is read again once the gateway answers");
                    (id.map(|id| id.saturating_sub(1)), true)
                }
                Handled::Done { offer } if offer && args.once => {
                    save_cursor(ctx, device, &mut cursor, id)?;
                    return Ok(Outcome::Done);
                }
                Handled::Done { .. } => (id, false),
            };
            save_cursor(ctx, device, &mut cursor, handled)?;
            if reconnect {
                break;
            }
        }
        if !pause(delay).await {
            return Ok(Outcome::Done);
        }
    }
}
