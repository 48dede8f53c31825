//! The gateway's tasks service from this terminal (its device token):
//! `monitor offer`, its answer to the preset client offered (T1;
//! `handoff inbox` answers the `tasks.offer` events the same way);
//! `monitor backup` and `restore` (T2, checked against the backup's
//! sha256); `monitor share` (a link anyone holding it may fetch until it
//! expires or is revoked); `monitor process` (a media job: the input up,
//! the job's progress shown, the result down).

use crate::client::{Client, ClientError};
use crate::{Context, MonitorError, Outcome};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// What `offer` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OfferAction {
    /// Ask for the client now (even after declining it).
    Request,
    /// Take the offered client.
    Accept,
    /// Say no: it is offered again after the operator's period.
    Decline,
}

impl OfferAction {
    fn path(self) -> &'static str {
        match self {
            OfferAction::Request => "/offer/request",
            OfferAction::Accept => "/offer/accept",
            OfferAction::Decline => "/offer/decline",
        }
    }
}

/// Flags of `offer`.
#[derive(Debug, clap::Args)]
pub struct OfferArgs {
    /// Without an action: where the offer stands.
    action: Option<OfferAction>,
}

/// The preset client as offered.
#[derive(Debug, Clone, Deserialize)]
pub struct PresetClient {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Where to get it.
    pub url: String,
}

/// A device's offer. (The service is a plugin; `gateway-api` has no types
/// for it.)
#[derive(Debug, Clone, Deserialize)]
pub struct OfferView {
    /// none, offered, accepted or declined.
    pub status: String,
    /// The client, unless none is offered.
    #[serde(default)]
    pub client: Option<PresetClient>,
    /// While declined: when it comes back.
    #[serde(default)]
    pub offer_again_at: Option<String>,
}

impl Client {
    /// `GET /v1/services/tasks/offer`, or one of its `POST` actions.
    pub async fn offer(&self, action: Option<OfferAction>) -> Result<OfferView, ClientError> {
        let builder = match action {
            None => self.request(reqwest::Method::GET, "/v1/services/tasks/offer"),
            Some(a) => self.request(
                reqwest::Method::POST,
                &format!("/v1/services/tasks{}", a.path()),
            ),
        };
        self.json(builder).await
    }
}

/// One line saying where an offer stands.
pub fn describe(offer: &OfferView) -> String {
    let client = offer
        .client
        .as_ref()
        .map(|c| format!("{} {} ({})", c.name, c.version, c.url))
        .unwrap_or_default();
    match offer.status.as_str() {
        "none" => "the gateway offers no preset client".to_owned(),
        "offered" => format!(
            "the gateway offers {client}: `monitor offer accept` or `monitor offer decline`"
        ),
        "accepted" => format!("accepted {client}; get it from its address"),
        "declined" => format!(
            "declined {client}; offered again after {}",
            offer.offer_again_at.as_deref().unwrap_or("?")
        ),
        other => format!("{other} {client}"),
    }
}

/// Carries out `monitor offer [ACTION]`.
pub async fn offer(ctx: &Context, args: &OfferArgs) -> Result<Outcome, MonitorError> {
    let (_device, client) = ctx.device_client()?;
    let seen = client.offer(args.action).await?;
    println!("{}", describe(&seen));
    Ok(Outcome::Done)
}

// T2 and T3: backups, shares and media jobs of the tasks service, each
// acting as this terminal (its device token).

/// Flags of `backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// What it holds: contacts, messages or photos.
    kind: String,
    /// The file to back up (JSON, or an archive of files).
    file: PathBuf,
    /// Its media type (default: from its extension).
    #[arg(long = "type")]
    content_type: Option<String>,
}

/// Flags of `restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup; default the newest one matching `--kind` and
    /// `--from-device`.
    id: Option<String>,
    /// Only backups of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only backups made by this device (default: any of yours).
    #[arg(long)]
    from_device: Option<String>,
    /// List the matching backups instead of restoring one.
    #[arg(long)]
    list: bool,
    /// Where to write it (default: `<kind>-<id>` with an extension for its
    /// type).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Flags of `share`.
#[derive(Debug, clap::Args)]
pub struct ShareArgs {
    /// The file to share; its link works for anyone holding it.
    file: Option<PathBuf>,
    /// Seconds until the link stops working (default a week).
    #[arg(long)]
    expires_in: Option<u64>,
    /// End a share now (its id).
    #[arg(long, conflicts_with = "file")]
    revoke: Option<String>,
    /// List your shares.
    #[arg(long, conflicts_with_all = ["file", "revoke"])]
    list: bool,
}

/// Flags of `process`.
#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// thumbnail, convert, resize or markdown-to-html.
    kind: String,
    /// The input file.
    file: PathBuf,
    /// A parameter as NAME=VALUE (`side=256`, `to=image/png`, `width=640`);
    /// repeatable.
    #[arg(short, long = "param")]
    params: Vec<String>,
    /// Where to write the result (default: next to the input, named after
    /// the job kind).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Seconds to wait for the job.
    #[arg(long, default_value_t = 300)]
    wait: u64,
}

/// A backup as the service shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct BackupView {
    /// Id.
    pub id: String,
    /// contacts, messages or photos.
    pub kind: String,
    /// The device that made it.
    pub device: String,
    /// Bytes.
    pub size: u64,
    /// Media type.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Hex sha256.
    pub sha256: String,
    /// When.
    pub created_at: String,
}

/// A share as the service shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct ShareView {
    /// The unguessable id.
    pub share_id: String,
    /// Until when it is served.
    pub expires_at: String,
    /// active, expired or revoked (in lists).
    #[serde(default)]
    pub state: Option<String>,
    /// Bytes (in lists).
    #[serde(default)]
    pub size: Option<u64>,
}

/// Why a job failed.
#[derive(Debug, Clone, Deserialize)]
pub struct JobFailure {
    /// Stable code.
    pub code: String,
    /// What was wrong.
    pub message: String,
    /// What to try.
    pub help: String,
}

/// A job's result.
#[derive(Debug, Clone, Deserialize)]
pub struct JobResult {
    /// Media type.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
}

/// A media job as the service shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct JobView {
    /// Id.
    pub job_id: String,
    /// queued, running, done or failed.
    pub status: String,
    /// Times a worker started it.
    #[serde(default)]
    pub attempts: u32,
    /// Once done.
    #[serde(default)]
    pub result: Option<JobResult>,
    /// Once failed.
    #[serde(default)]
    pub error: Option<JobFailure>,
}

const TASKS: &str = "/v1/services/tasks";

impl Client {
    /// `PUT /backups/{kind}` with the raw bytes.
    pub async fn backup(
        &self,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<BackupView, ClientError> {
        let builder = self
            .untimed(reqwest::Method::PUT, &format!("{TASKS}/backups/{kind}"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        self.json(builder).await
    }

    /// `GET /backups[?device=&kind=]`, newest first.
    pub async fn backups(
        &self,
        device: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Vec<BackupView>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            backups: Vec<BackupView>,
        }
        let mut query = Vec::new();
        if let Some(d) = device {
            query.push(("device", d));
        }
        if let Some(k) = kind {
            query.push(("kind", k));
        }
        let builder = self
            .request(reqwest::Method::GET, &format!("{TASKS}/backups"))
            .query(&query);
        Ok(self.json::<Page>(builder).await?.backups)
    }

    /// `GET /backups/{id}/content`, or a job's result: the whole answer.
    async fn bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let response = self.send(self.untimed(reqwest::Method::GET, path)).await?;
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Protocol {
                server: self.server().to_owned(),
                reason: e.to_string(),
            })
    }

    /// `POST /shares[?expires_in=]` with the raw bytes.
    pub async fn share(
        &self,
        content_type: &str,
        bytes: Vec<u8>,
        expires_in: Option<u64>,
    ) -> Result<ShareView, ClientError> {
        let path = match expires_in {
            Some(secs) => format!("{TASKS}/shares?expires_in={secs}"),
            None => format!("{TASKS}/shares"),
        };
        let builder = self
            .untimed(reqwest::Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        self.json(builder).await
    }

    /// `GET /shares`.
    pub async fn shares(&self) -> Result<Vec<ShareView>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            shares: Vec<ShareView>,
        }
        let builder = self.request(reqwest::Method::GET, &format!("{TASKS}/shares"));
        Ok(self.json::<Page>(builder).await?.shares)
    }

    /// `DELETE /shares/{id}`.
    pub async fn revoke_share(&self, id: &str) -> Result<(), ClientError> {
        let builder = self.request(reqwest::Method::DELETE, &format!("{TASKS}/shares/{id}"));
        self.send(builder).await.map(|_| ())
    }

    /// `POST /inputs` with the raw bytes: the input's id.
    pub async fn job_input(
        &self,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Made {
            input: String,
        }
        let builder = self
            .untimed(reqwest::Method::POST, &format!("{TASKS}/inputs"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        Ok(self.json::<Made>(builder).await?.input)
    }

    /// `DELETE /inputs/{id}`.
    pub async fn delete_job_input(&self, id: &str) -> Result<(), ClientError> {
        let builder = self.request(reqwest::Method::DELETE, &format!("{TASKS}/inputs/{id}"));
        self.send(builder).await.map(|_| ())
    }

    /// `POST /jobs`.
    pub async fn submit_job(&self, job: &Value) -> Result<JobView, ClientError> {
        let builder = self
            .request(reqwest::Method::POST, &format!("{TASKS}/jobs"))
            .json(job);
        self.json(builder).await
    }

    /// `GET /jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.json(self.request(reqwest::Method::GET, &format!("{TASKS}/jobs/{id}")))
            .await
    }
}

/// An extension for a media type, for file names the monitor makes.
fn extension(content_type: &str) -> &'static str {
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json" => "json",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "text/html" => "html",
        "text/plain" | "text/markdown" => "txt",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// Carries out `monitor backup KIND FILE`.
pub async fn backup(ctx: &Context, args: &BackupArgs) -> Result<Outcome, MonitorError> {
    let (_device, client) = ctx.device_client()?;
    let bytes = MonitorError::read(&args.file)?;
    let content_type = args
        .content_type
        .clone()
        .unwrap_or_else(|| crate::files::media_type(&args.file).to_owned());
    let made = client.backup(&args.kind, &content_type, bytes).await?;
    println!(
        "backed up {} as {} {} ({} bytes, sha256 {})",
        args.file.display(),
        made.kind,
        made.id,
        made.size,
        made.sha256
    );
    Ok(Outcome::Done)
}

/// Carries out `monitor restore [ID]`.
pub async fn restore(ctx: &Context, args: &RestoreArgs) -> Result<Outcome, MonitorError> {
    let (_device, client) = ctx.device_client()?;
    let found = client
        .backups(args.from_device.as_deref(), args.kind.as_deref())
        .await?;
    if args.list {
        for b in &found {
            println!(
                "{}  {}  from {}  {} bytes  {}",
                b.id, b.kind, b.device, b.size, b.created_at
            );
        }
        return Ok(Outcome::Done);
    }
    let chosen = match &args.id {
        Some(id) => found.iter().find(|b| &b.id == id),
        None => found.first(),
    }
    .ok_or_else(|| {
        MonitorError::Usage(match &args.id {
            Some(id) => {
                format!("no backup {id} of yours matches; `monitor restore --list` shows them")
            }
            None => "no backup of yours matches; `monitor restore --list` shows them".into(),
        })
    })?;
    let bytes = client
        .bytes(&format!("{TASKS}/backups/{}/content", chosen.id))
        .await?;
    let got = crate::sha256_hex(&bytes);
    if got != chosen.sha256 {
        return Err(MonitorError::Usage(format!(
            "the restored bytes have sha256 {got}, not the backup's {}; run again",
            chosen.sha256
        )));
    }
    let target = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}.{}",
            chosen.kind,
            chosen.id,
            extension(&chosen.content_type)
        ))
    });
    std::fs::write(&target, &bytes).map_err(MonitorError::file(&target))?;
    println!(
        "restored {} {} from {} ({} bytes) to {}",
        chosen.kind,
        chosen.id,
        chosen.device,
        bytes.len(),
        target.display()
    );
    Ok(Outcome::Done)
}

/// Carries out `monitor share`.
pub async fn share(ctx: &Context, args: &ShareArgs) -> Result<Outcome, MonitorError> {
    let (_device, client) = ctx.device_client()?;
    if let Some(id) = &args.revoke {
        client.revoke_share(id).await?;
        println!("share {id} revoked: its link answers 410 from now on");
        return Ok(Outcome::Done);
    }
    if args.list {
        for s in client.shares().await? {
            println!(
                "{}  {}  {} bytes  until {}",
                s.share_id,
                s.state.as_deref().unwrap_or("?"),
                s.size.unwrap_or(0),
                s.expires_at
            );
        }
        return Ok(Outcome::Done);
    }
    let file = args.file.as_ref().ok_or_else(|| {
        MonitorError::Usage("name a file to share, or --list or --revoke ID".into())
    })?;
    let bytes = MonitorError::read(file)?;
    let made = client
        .share(crate::files::media_type(file), bytes, args.expires_in)
        .await?;
    println!("{}{TASKS}/shares/{}", client.server(), made.share_id);
    eprintln!(
        "anyone with this link can fetch {} until {}; `monitor share --revoke {}` ends it",
        file.display(),
        made.expires_at,
        made.share_id
    );
    Ok(Outcome::Done)
}

/// `NAME=VALUE` flags as a JSON object; a value that reads as JSON (a
/// number) is taken as such.
fn params(pairs: &[String]) -> Result<Value, MonitorError> {
    let mut object = serde_json::Map::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| MonitorError::Usage(format!("--param {pair:?}: write NAME=VALUE")))?;
        let value = serde_json::from_str::<Value>(value)
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(value.to_owned()));
        object.insert(name.to_owned(), value);
    }
    Ok(Value::Object(object))
}

/// Carries out `monitor process KIND FILE`: the file goes up as the job's
/// input, the job's progress shows until it ends, the result comes down.
pub async fn process(ctx: &Context, args: &ProcessArgs) -> Result<Outcome, MonitorError> {
    use indicatif::{ProgressBar, ProgressStyle};
    let (_device, client) = ctx.device_client()?;
    let params = params(&args.params)?;
    let bytes = MonitorError::read(&args.file)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(format!("{} {}", args.kind, args.file.display()));
    bar.enable_steady_tick(Duration::from_millis(120));
    // Each step once, as a line when stderr is not a terminal.
    let mut last = String::new();
    let mut step = |text: String| {
        if bar.is_hidden() && text != last {
            eprintln!("{text}");
        }
        bar.set_message(text.clone());
        last = text;
    };
    step(format!("uploading {} bytes", bytes.len()));
    let input = client
        .job_input(crate::files::media_type(&args.file), bytes)
        .await?;
    let job = client
        .submit_job(&json!({"kind": args.kind, "input": input, "params": params}))
        .await;
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            let _ = client.delete_job_input(&input).await;
            bar.finish_and_clear();
            return Err(e.into());
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let ended = loop {
        let seen = client.job(&job.job_id).await?;
        match seen.status.as_str() {
            "done" | "failed" => break seen,
            "running" if seen.attempts > 1 => step(format!("running (attempt {})", seen.attempts)),
            status => step(status.to_owned()),
        }
        if tokio::time::Instant::now() >= deadline {
            bar.finish_and_clear();
            return Err(MonitorError::Usage(format!(
                "job {} did not end within {} s; `monitor process` again later, or raise --wait",
                job.job_id, args.wait
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = client.delete_job_input(&input).await;
    if let Some(e) = &ended.error {
        bar.finish_and_clear();
        return Err(MonitorError::Usage(format!(
            "job {} failed ({}): {}\nwhat to try: {}",
            ended.job_id, e.code, e.message, e.help
        )));
    }
    let result = ended.result.clone().ok_or_else(|| {
        MonitorError::Usage(format!("job {} ended without a result", ended.job_id))
    })?;
    step(format!("fetching {} bytes", result.size));
    let bytes = client
        .bytes(&format!("{TASKS}/jobs/{}/result", ended.job_id))
        .await?;
    let target = args.output.clone().unwrap_or_else(|| {
        let stem = args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "result".into());
        args.file.with_file_name(format!(
            "{stem}.{}.{}",
            args.kind,
            extension(&result.content_type)
        ))
    });
    std::fs::write(&target, &bytes).map_err(MonitorError::file(&target))?;
    bar.finish_and_clear();
    println!(
        "{} done: {} ({}, {} bytes)",
        args.kind,
        target.display(),
        result.content_type,
        bytes.len()
    );
    Ok(Outcome::Done)
}
