//! `monitor files`: this terminal as a device of the gateway's files
//! service (`/v1/services/files/...`, device token). Uploads send the
//! batch's manifest first (the files show as `01` on the other devices at
//! once), then each file with the tus protocol in 8 MiB chunks, each with its
//! sha256, resumed from the offset the gateway reports after a cut, and from
//! `uploads.json` after a restart; one progress bar per file. Downloads of
//! a file not uploaded yet wait for its `files.file.available` event and
//! resume a `.part` file with `Range`.

use crate::client::{segment, Client, ClientError, InboxItem};
use crate::store::{PendingUpload, Store};
use crate::{Context, MonitorError, Outcome};
use base64::Engine;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes per `PATCH`.
const CHUNK: usize = 8 << 20;
/// Attempts per chunk before an upload gives up (it resumes next run).
const ATTEMPTS: u32 = 6;

/// The subcommands of `files`.
#[derive(Debug, clap::Subcommand)]
pub enum FilesCommand {
    /// Upload files: their manifest first, then each file, resumable, with
    /// a progress bar per file.
    Upload(UploadArgs),
    /// Your files with their upload status (01 needs upload, 10 uploading,
    /// 11 uploaded, 00 failed).
    List(ListArgs),
    /// Download a file; one not uploaded yet is waited for.
    Get(GetArgs),
    /// Bring a folder in step with your files: upload its files the gateway
    /// lacks, download the uploaded files it lacks.
    Sync(SyncArgs),
}

/// Flags of `files upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Flags of `files list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only files with this status (01, 10, 11 or 00).
    #[arg(long)]
    status: Option<String>,
}

/// Flags of `files get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The file id (`files list` shows them).
    id: String,
    /// Where to write it; default: its name in the current folder.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Give up waiting for the upload after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    wait: u64,
}

/// Flags of `files sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The folder.
    dir: PathBuf,
    /// Sync again every this many seconds instead of once.
    #[arg(long, value_name = "SECS")]
    every: Option<u64>,
}

/// A file record of the files service. (The service is a plugin;
/// `gateway-api` has no types for it.)
#[derive(Debug, Clone, Deserialize)]
pub struct FileView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Media type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256, when known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// 2-bit upload status.
    pub status: String,
    /// Bytes uploaded.
    #[serde(default)]
    pub offset: u64,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// The device that uploads it.
    #[serde(default)]
    pub uploaded_by: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FileList {
    files: Vec<FileView>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    files: Vec<FileView>,
}

impl Client {
    fn files_path(path: &str) -> String {
        format!("/v1/services/files{path}")
    }

    /// `POST /v1/services/files/batches`.
    async fn announce(&self, files: &[Value]) -> Result<Vec<FileView>, ClientError> {
        let builder = self
            .request(reqwest::Method::POST, &Self::files_path("/batches"))
            .json(&json!({"files": files}));
        Ok(self.json::<Batch>(builder).await?.files)
    }

    /// `GET /v1/services/files/files[?status=]`.
    pub async fn files(&self, status: Option<&str>) -> Result<Vec<FileView>, ClientError> {
        let query = status
            .map(|s| format!("?status={}", segment(s)))
            .unwrap_or_default();
        let builder = self.request(
            reqwest::Method::GET,
            &Self::files_path(&format!("/files{query}")),
        );
        Ok(self.json::<FileList>(builder).await?.files)
    }

    /// `GET /v1/services/files/files/{id}`.
    pub async fn file(&self, id: &str) -> Result<FileView, ClientError> {
        let path = Self::files_path(&format!("/files/{}", segment(id)));
        self.json(self.request(reqwest::Method::GET, &path)).await
    }

    fn tus(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).header("tus-resumable", "1.0.0")
    }

    /// tus creation for a record: the upload's path.
    async fn create_upload(&self, file: &FileView) -> Result<String, ClientError> {
        let id = base64::engine::general_purpose::STANDARD.encode(&file.id);
        let builder = self
            .tus(reqwest::Method::POST, &Self::files_path("/uploads"))
            .header("upload-length", file.size.to_string())
            .header("upload-metadata", format!("file_id {id}"));
        let response = self.send(builder).await?;
        header(&response, "location").ok_or_else(|| ClientError::Protocol {
            server: self.server().to_owned(),
            reason: "no Location in the tus creation answer".into(),
        })
    }

    /// tus `HEAD`: where an upload stands.
    async fn upload_offset(&self, upload: &str) -> Result<u64, ClientError> {
        let response = self.send(self.tus(reqwest::Method::HEAD, upload)).await?;
        self.offset_of(&response)
    }

    fn offset_of(&self, response: &reqwest::Response) -> Result<u64, ClientError> {
        header(response, "upload-offset")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol {
                server: self.server().to_owned(),
                reason: "no Upload-Offset in the tus answer".into(),
            })
    }

    /// tus `PATCH` of `bytes` at `offset`, with their sha256: the new offset.
    async fn append(&self, upload: &str, offset: u64, bytes: Vec<u8>) -> Result<u64, ClientError> {
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
        let builder = self
            .tus(reqwest::Method::PATCH, upload)
            .timeout(Duration::from_secs(600))
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .header("upload-checksum", format!("sha256 {digest}"))
            .body(bytes);
        let response = self.send(builder).await?;
        self.offset_of(&response)
    }

    /// `GET .../files/{id}/content` from byte `from`.
    async fn content(&self, id: &str, from: u64) -> Result<reqwest::Response, ClientError> {
        let path = Self::files_path(&format!("/files/{}/content", segment(id)));
        let mut builder = self.untimed(reqwest::Method::GET, &path);
        if from > 0 {
            builder = builder.header("range", format!("bytes={from}-"));
        }
        self.send(builder).await
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Carries out `monitor files ...`.
pub async fn files(ctx: &Context, command: &FilesCommand) -> Result<Outcome, MonitorError> {
    let (_device, client) = ctx.device_client()?;
    match command {
        FilesCommand::Upload(args) => {
            upload(&ctx.store, &client, &args.paths).await?;
            Ok(Outcome::Done)
        }
        FilesCommand::List(args) => list(&client, args.status.as_deref()).await,
        FilesCommand::Get(args) => {
            let output = get(&client, &args.id, args.output.as_deref(), args.wait).await?;
            println!("{}", output.display());
            Ok(Outcome::Done)
        }
        FilesCommand::Sync(args) => loop {
            sync(&ctx.store, &client, &args.dir).await?;
            match args.every {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
                None => return Ok(Outcome::Done),
            }
        },
    }
}

async fn list(client: &Client, status: Option<&str>) -> Result<Outcome, MonitorError> {
    let files = client.files(status).await?;
    if files.is_empty() {
        println!("no files");
    }
    for f in files {
        let progress = match f.status.as_str() {
            "10" | "00" => format!(" {}/{} bytes", f.offset, f.size),
            _ => format!(" {} bytes", f.size),
        };
        let reason = f.reason.map(|r| format!(" ({r})")).unwrap_or_default();
        println!("{}  {}  {}{progress}{reason}", f.id, f.status, f.name);
    }
    Ok(Outcome::Done)
}

/// The media type of a file name, from its extension.
pub(crate) fn media_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" | "log" => "text/plain",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A local file to upload.
struct Local {
    path: PathBuf,
    name: String,
    size: u64,
    sha256: String,
    /// Path, size and modification time: the same file in a later run.
    key: String,
}

fn local(path: &Path) -> Result<Local, MonitorError> {
    let meta = std::fs::metadata(path).map_err(MonitorError::file(path))?;
    if !meta.is_file() {
        return Err(MonitorError::Usage(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).map_err(MonitorError::file(path))?;
    std::io::copy(&mut file, &mut hasher).map_err(MonitorError::file(path))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    Ok(Local {
        key: format!("{}|{}|{modified}", full.display(), meta.len()),
        path: path.to_owned(),
        name,
        size: meta.len(),
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Uploads `paths`: the manifest of the ones not begun in an earlier run,
/// then every file from where it stands.
pub async fn upload(
    store: &Store,
    client: &Client,
    paths: &[PathBuf],
) -> Result<Vec<String>, MonitorError> {
    let locals = paths
        .iter()
        .map(|p| local(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pending = store.uploads()?;
    pending.retain(|_, p| p.server == client.server() || p.server.is_empty());
    let fresh: Vec<&Local> = locals
        .iter()
        .filter(|l| !pending.contains_key(&l.key))
        .collect();
    if !fresh.is_empty() {
        let manifest: Vec<Value> = fresh
            .iter()
            .map(|l| json!({"name": l.name, "type": media_type(&l.path), "size": l.size, "sha256": l.sha256}))
            .collect();
        let records = client.announce(&manifest).await?;
        for (l, record) in fresh.iter().zip(&records) {
            let upload = client.create_upload(record).await?;
            pending.insert(
                l.key.clone(),
                PendingUpload {
                    server: client.server().to_owned(),
                    file_id: record.id.clone(),
                    upload,
                },
            );
        }
        store.save_uploads(&pending)?;
    }
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut ids = Vec::new();
    for l in &locals {
        let Some(mut p) = pending.get(&l.key).cloned() else {
            continue;
        };
        let bar = bars.add(ProgressBar::new(l.size));
        bar.set_style(style.clone());
        bar.set_prefix(l.name.clone());
        let offset = match client.upload_offset(&p.upload).await {
            Ok(offset) => offset,
            // Expired or removed: a new upload for the same record.
            Err(e) if matches!(e.code(), Some("unknown_upload" | "upload_expired")) => {
                let record = client.file(&p.file_id).await?;
                p.upload = client.create_upload(&record).await?;
                pending.insert(l.key.clone(), p.clone());
                store.save_uploads(&pending)?;
                0
            }
            Err(e) => return Err(e.into()),
        };
        send_from(client, l, &p.upload, offset, &bar).await?;
        bar.finish_with_message("11 uploaded");
        if bars.is_hidden() {
            println!("{} uploaded: {} ({} bytes)", l.name, p.file_id, l.size);
        }
        ids.push(p.file_id.clone());
        pending.remove(&l.key);
        store.save_uploads(&pending)?;
    }
    Ok(ids)
}

/// Sends a file from `offset` to its end in chunks; after a failed chunk,
/// asks the gateway where the upload stands and goes on from there.
async fn send_from(
    client: &Client,
    l: &Local,
    upload: &str,
    mut offset: u64,
    bar: &ProgressBar,
) -> Result<(), MonitorError> {
    let mut file = std::fs::File::open(&l.path).map_err(MonitorError::file(&l.path))?;
    let mut failures = 0;
    bar.set_position(offset);
    while offset < l.size {
        let len = usize::try_from((l.size - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut chunk = vec![0u8; len];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut chunk))
            .map_err(MonitorError::file(&l.path))?;
        match client.append(upload, offset, chunk).await {
            Ok(at) => {
                offset = at;
                failures = 0;
            }
            Err(e) if failures + 1 < ATTEMPTS && (e.is_transient() || e.code().is_some()) => {
                failures += 1;
                bar.set_message(format!("retrying: {e}"));
                tokio::time::sleep(Duration::from_millis(250 << failures)).await;
                offset = client.upload_offset(upload).await?;
            }
            Err(e) => return Err(e.into()),
        }
        bar.set_position(offset);
    }
    Ok(())
}

/// Downloads file `id` to `output` (default: its name here), waiting for
/// its upload first when it is not `11`.
pub async fn get(
    client: &Client,
    id: &str,
    output: Option<&Path>,
    wait: u64,
) -> Result<PathBuf, MonitorError> {
    let record = client.file(id).await?;
    let target = output.map_or_else(|| PathBuf::from(&record.name), Path::to_owned);
    let part = target.with_extension(match target.extension() {
        Some(e) => format!("{}.part", e.to_string_lossy()),
        None => "part".into(),
    });
    let mut from = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let response = loop {
        match client.content(id, from).await {
            Ok(response) => break response,
            Err(e) if e.code() == Some("not_uploaded") => {
                let now = client.file(id).await?;
                eprintln!(
                    "{} is {} ({} of {} bytes uploaded); waiting for it",
                    now.name, now.status, now.offset, now.size
                );
                wait_available(client, id, wait).await?;
            }
            Err(e) if e.code() == Some("range_not_satisfiable") => from = 0,
            Err(e) => return Err(e.into()),
        }
    };
    if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        from = 0;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(from > 0)
        .write(true)
        .truncate(from == 0)
        .open(&part)
        .map_err(MonitorError::file(&part))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::Unreachable {
            server: client.server().to_owned(),
            reason: format!("the download broke ({e}); run the same command to resume it"),
        })?;
        file.write_all(&chunk).map_err(MonitorError::file(&part))?;
    }
    file.sync_all().map_err(MonitorError::file(&part))?;
    drop(file);
    if let Some(expected) = &record.sha256 {
        let bytes = MonitorError::read(&part)?;
        let got = hex::encode(Sha256::digest(&bytes));
        if &got != expected {
            let _ = std::fs::remove_file(&part);
            return Err(MonitorError::File {
                path: target.display().to_string(),
                reason: format!("downloaded bytes have sha256 {got}, not {expected}; run again"),
            });
        }
    }
    std::fs::rename(&part, &target).map_err(MonitorError::file(&target))?;
    Ok(target)
}

/// Waits on the device's event stream for `files.file.available` of `id`.
async fn wait_available(client: &Client, id: &str, wait: u64) -> Result<(), MonitorError> {
    let waiting = async {
        loop {
            let mut inbox = client.inbox(None).await?;
            // The file may have become available before the stream opened.
            if client.file(id).await?.status == "11" {
                return Ok(());
            }
            while let Some(item) = inbox.next().await {
                if let InboxItem::Event { kind, data, .. } = item {
                    if kind == "files.file.available" && data["id"] == id {
                        return Ok(());
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(wait), waiting)
        .await
        .map_err(|_| MonitorError::Usage(format!("file {id} was not uploaded within {wait} s")))?
}

/// One pass of `files sync DIR`.
async fn sync(store: &Store, client: &Client, dir: &Path) -> Result<(), MonitorError> {
    std::fs::create_dir_all(dir).map_err(MonitorError::file(dir))?;
    let remote = client.files(None).await?;
    let mut names: BTreeMap<String, &FileView> = BTreeMap::new();
    for f in &remote {
        names.entry(f.name.clone()).or_insert(f);
    }
    let mut up = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(MonitorError::file(dir))? {
        let path = entry.map_err(MonitorError::file(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file() && !name.ends_with(".part") && !names.contains_key(&name) {
            up.push(path);
        }
    }
    if !up.is_empty() {
        upload(store, client, &up).await?;
    }
    for f in remote.iter().filter(|f| f.status == "11") {
        let target = dir.join(&f.name);
        if !target.exists() && !f.name.contains(['/', '\\']) {
            get(client, &f.id, Some(&target), 0).await?;
            println!("downloaded {}", target.display());
        }
    }
    Ok(())
}
