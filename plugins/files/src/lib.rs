//! File sync (F1-F8, R1-R3), the reference service plugin for blobs: the
//! records of a user's files and their 2-bit upload statuses (`machine`),
//! kept in the host's key-value store; the bytes never pass through here.
//! The gateway stores and streams them (tus uploads at `/uploads`, ranged
//! downloads when an answer names a blob) and tells `on_blob` what happened,
//! and this plugin decides statuses and who hears of them.

pub mod machine;

#[cfg(target_arch = "wasm32")]
mod glue {
    use crate::machine::{
        check_batch, check_name, describe, same_network, Announced, Download, FileRecord, Refusal,
        Status,
    };
    use plugin_sdk::service::kit::{self, answer, error, get, put, remove, Read};
    use plugin_sdk::service::{
        blobs, devices, events, BlobEvent, BlobEventKind, Header, Request, Response, Service,
    };
    use serde::Deserialize;
    use serde_json::{json, Value};

    struct Files;

    fn id() -> String {
        let mut bytes = [0u8; 12];
        let _ = getrandom::fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn now() -> u64 {
        plugin_sdk::service::clock::now_ms()
    }

    fn view(r: &FileRecord) -> Value {
        json!({"id": r.id, "name": r.name, "type": r.kind, "size": r.size, "sha256": r.sha256,
            "batch_id": r.batch_id, "batch_count": r.batch_count, "status": r.status.code(),
            "offset": r.offset, "reason": r.reason, "uploaded_by": r.uploaded_by,
            "updated_at": kit::iso(r.updated_at), "downloads": r.downloads})
    }

    fn refusal(r: Refusal) -> Response {
        match r {
            Refusal::Invalid(m) => error(422, "invalid_body", &m),
            Refusal::NotExpected(m) => error(409, "not_expected", &m),
            Refusal::NotUploaded {
                status,
                offset,
                size,
            } => answer(
                409,
                &json!({"error": {"code": "not_uploaded", "message": format!(
                    "the file is {} ({}): {offset} of {size} bytes stored; you will get file.available once it is uploaded",
                    status.code(), describe(status))},
                    "status": status.code(), "offset": offset, "size": size}),
            ),
        }
    }

    /// Every device of the user.
    fn everyone() -> Vec<String> {
        devices::all().into_iter().map(|d| d.id).collect()
    }

    fn tell(devices: &[String], kind: &str, payload: &Value) {
        if devices.is_empty() {
            return;
        }
        if let Err(e) = events::publish(devices, kind, &payload.to_string()) {
            plugin_sdk::service::log::write(
                plugin_sdk::service::log::Level::Warn,
                &format!("{kind} not published: {e}"),
            );
        }
    }

    fn updated(r: &FileRecord) {
        tell(&everyone(), "file.updated", &view(r));
    }

    fn record(file: &str) -> Result<Read<FileRecord>, Response> {
        get::<FileRecord>(&format!("file/{file}"))?
            .ok_or_else(|| error(404, "unknown_file", "no such file"))
    }

    fn save(r: &Read<FileRecord>) -> Result<(), Response> {
        kit::commit(vec![put(
            &format!("file/{}", r.value.id),
            &r.value,
            r.version,
        )])
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        files: Vec<Announced>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Order {
        device: String,
        paths: Vec<String>,
    }

    fn handle(request: Request) -> Result<Response, Response> {
        let caller = request
            .caller
            .clone()
            .ok_or_else(|| error(401, "missing_token", "a token is required"))?;
        let device = caller.device_id.clone();
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        match (request.method.as_str(), segments.as_slice()) {
            ("POST", ["batches"]) => {
                let batch: Batch = kit::body(&request)?;
                check_batch(&batch.files).map_err(refusal)?;
                let batch_id = id();
                let count = batch.files.len() as u32;
                let records: Vec<FileRecord> = batch
                    .files
                    .into_iter()
                    .map(|f| {
                        FileRecord::announced(id(), f, &batch_id, count, device.clone(), now())
                    })
                    .collect();
                kit::commit(
                    records
                        .iter()
                        .map(|r| put(&format!("file/{}", r.id), r, 0))
                        .collect(),
                )?;
                for r in &records {
                    updated(r);
                }
                Ok(answer(
                    201,
                    &json!({"batch_id": batch_id, "files": records.iter().map(view).collect::<Vec<_>>()}),
                ))
            }
            ("GET", ["files"]) => {
                let only = match kit::query(&request, "status") {
                    Some(code) => Some(Status::parse(&code).ok_or_else(|| {
                        error(422, "invalid_query", "status is one of 01, 10, 11, 00")
                    })?),
                    None => None,
                };
                let files: Vec<Value> = kit::scan_all::<FileRecord>("file/")?
                    .iter()
                    .filter(|r| only.is_none_or(|s| s == r.status))
                    .map(view)
                    .collect();
                Ok(answer(200, &json!({"files": files})))
            }
            ("GET", ["files", file]) => Ok(answer(200, &view(&record(file)?.value))),
            ("GET", ["files", file, "content"]) => {
                let mut r = record(file)?;
                match r.value.download(device.as_deref()) {
                    Ok(()) => {
                        let blob = r.value.upload_id.clone().unwrap_or_default();
                        let mut sent = kit::blob(200, &blob, &r.value.kind);
                        sent.headers.push(Header {
                            name: "content-disposition".into(),
                            value: format!(
                                "attachment; filename=\"{}\"",
                                r.value.name.replace(['"', '\\'], "_")
                            ),
                        });
                        Ok(sent)
                    }
                    Err(refused) => {
                        save(&r)?;
                        Err(refusal(refused))
                    }
                }
            }
            ("DELETE", ["files", file]) => {
                let r = record(file)?;
                let mut writes = vec![remove(&format!("file/{file}"), r.version)];
                if let Some(upload) = &r.value.upload_id {
                    writes.push(plugin_sdk::service::kv::Write {
                        key: format!("upload/{upload}"),
                        value: None,
                        expect: None,
                    });
                }
                kit::commit(writes)?;
                if let Some(upload) = &r.value.upload_id {
                    blobs::delete(upload);
                }
                tell(&everyone(), "file.deleted", &json!({"id": file}));
                Ok(kit::no_content())
            }
            ("POST", ["files", file, "reupload"]) => {
                let mut r = record(file)?;
                let old = r.value.reupload(now());
                save(&r)?;
                if let Some(upload) = old {
                    blobs::delete(&upload);
                }
                updated(&r.value);
                if let Some(uploader) = &r.value.uploaded_by {
                    tell(
                        std::slice::from_ref(uploader),
                        "file.reupload",
                        &view(&r.value),
                    );
                }
                Ok(answer(200, &view(&r.value)))
            }
            ("POST", ["files", file, "redownload"]) => {
                let mut r = record(file)?;
                let Some(device) = device else {
                    return Err(error(
                        403,
                        "device_token_required",
                        "downloads are per device: use a device token",
                    ));
                };
                r.value.downloads.insert(device.clone(), Download::None);
                let ready = r.value.status == Status::Succeeded;
                if !ready && !r.value.waiting.contains(&device) {
                    r.value.waiting.push(device.clone());
                }
                save(&r)?;
                if ready {
                    tell(
                        std::slice::from_ref(&device),
                        "file.available",
                        &view(&r.value),
                    );
                }
                Ok(answer(200, &view(&r.value)))
            }
            ("POST", ["orders"]) => {
                let order: Order = kit::body(&request)?;
                let Some(from) = device else {
                    return Err(error(
                        403,
                        "device_token_required",
                        "an upload order comes from a device: use a device token",
                    ));
                };
                if order.paths.is_empty() || order.paths.len() > 1000 {
                    return Err(error(422, "invalid_body", "paths holds 1 to 1000 paths"));
                }
                for path in &order.paths {
                    if path.is_empty() || path.len() > 4096 || path.chars().any(char::is_control) {
                        return Err(error(422, "invalid_body", &format!("bad path {path:?}")));
                    }
                }
                let all = devices::all();
                let target = all.iter().find(|d| d.id == order.device).ok_or_else(|| {
                    error(
                        422,
                        "unknown_device",
                        &format!("{:?} is not one of your devices", order.device),
                    )
                })?;
                let source = all.iter().find(|d| d.id == from);
                let direct = match (source.and_then(|d| d.ip.as_deref()), target.ip.as_deref()) {
                    (Some(a), Some(b)) => same_network(a, b),
                    _ => false,
                };
                let order_id = id();
                let mut reply = json!({"order_id": order_id, "route": if direct { "direct" } else { "relay" },
                    "from": from, "device": target.id, "paths": order.paths});
                if direct {
                    reply["target"] = json!({"ip": target.ip, "port": target.port});
                }
                kit::commit(vec![put(&format!("order/{order_id}"), &reply, 0)])?;
                tell(std::slice::from_ref(&target.id), "upload.order", &reply);
                Ok(answer(202, &reply))
            }
            ("GET", ["orders", order]) => {
                let o = get::<Value>(&format!("order/{order}"))?
                    .ok_or_else(|| error(404, "unknown_order", "no such order"))?;
                Ok(answer(200, &o.value))
            }
            _ => Err(error(404, "not_found", "no such route")),
        }
    }

    fn metadata<'a>(event: &'a BlobEvent, key: &str) -> Option<&'a str> {
        event
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The record an upload belongs to.
    fn uploaded(upload: &str) -> Result<Option<Read<FileRecord>>, Response> {
        let Some(file) = get::<String>(&format!("upload/{upload}"))? else {
            return Ok(None);
        };
        get::<FileRecord>(&format!("file/{}", file.value))
    }

    /// A new upload: for a record of a batch (`file_id`) or a new record
    /// (`filename`, with `filetype` and `sha256` when given).
    fn created(event: &BlobEvent) -> Result<(), String> {
        let text = |r: Response| {
            serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "refused".to_owned())
        };
        if let Some(file) = metadata(event, "file_id") {
            let mut r = record(file).map_err(text)?;
            r.value
                .expect_upload(
                    &event.upload_id,
                    event.length,
                    event.device_id.clone(),
                    now(),
                )
                .map_err(|e| text(refusal(e)))?;
            let link = put(&format!("upload/{}", event.upload_id), &r.value.id, 0);
            // No news for the devices: the status moves when bytes arrive.
            kit::commit(vec![
                put(&format!("file/{file}"), &r.value, r.version),
                link,
            ])
            .map_err(text)?;
            return Ok(());
        }
        let name = metadata(event, "filename")
            .or_else(|| metadata(event, "name"))
            .ok_or("Upload-Metadata needs file_id (a file of a batch) or filename (a new file)")?;
        check_name(name).map_err(|e| text(refusal(e)))?;
        let kind = metadata(event, "filetype")
            .or_else(|| metadata(event, "type"))
            .filter(|t| t.contains('/'))
            .unwrap_or("application/octet-stream");
        let sha256 = metadata(event, "sha256").map(str::to_owned);
        let file = Announced {
            name: name.to_owned(),
            kind: kind.to_owned(),
            size: event.length,
            sha256,
        };
        check_batch(std::slice::from_ref(&file)).map_err(|e| text(refusal(e)))?;
        let batch = id();
        let mut r = FileRecord::announced(id(), file, &batch, 1, event.device_id.clone(), now());
        r.expect_upload(
            &event.upload_id,
            event.length,
            event.device_id.clone(),
            now(),
        )
        .map_err(|e| text(refusal(e)))?;
        kit::commit(vec![
            put(&format!("file/{}", r.id), &r, 0),
            put(&format!("upload/{}", event.upload_id), &r.id, 0),
        ])
        .map_err(text)?;
        updated(&r);
        Ok(())
    }

    fn on_blob(event: BlobEvent) -> Result<(), String> {
        if event.kind == BlobEventKind::Created {
            return created(&event);
        }
        // A request of a device (a refused download) may change the record
        // at the same time: read it again and reapply.
        for _ in 0..5 {
            match apply(&event) {
                Err(Retry) => continue,
                Ok(()) => return Ok(()),
            }
        }
        Err("the record kept changing; the event was not applied".to_owned())
    }

    struct Retry;

    /// Applies a blob event to its record, once.
    fn apply(event: &BlobEvent) -> Result<(), Retry> {
        let Ok(Some(mut r)) = uploaded(&event.upload_id) else {
            return Ok(());
        };
        // An old upload of a record that moved on to another one.
        if r.value.upload_id.as_deref() != Some(event.upload_id.as_str()) {
            return Ok(());
        }
        let at = now();
        let (notify, available) = match event.kind {
            BlobEventKind::Created => (false, Vec::new()),
            BlobEventKind::Started => (r.value.started(event.offset, at), Vec::new()),
            BlobEventKind::Stored => {
                r.value.stored(event.offset, at);
                (false, Vec::new())
            }
            BlobEventKind::Interrupted => {
                r.value.stopped(
                    event.offset,
                    format!(
                        "the upload stopped at {} of {} bytes; resume it",
                        event.offset, event.length
                    ),
                    at,
                );
                (true, Vec::new())
            }
            BlobEventKind::Expired | BlobEventKind::Terminated => {
                let why = if event.kind == BlobEventKind::Expired {
                    "the upload was not resumed in time and was removed; upload it again"
                } else {
                    "the uploader ended the upload; upload it again"
                };
                r.value.stopped(event.offset, why.to_owned(), at);
                r.value.upload_id = None;
                (true, Vec::new())
            }
            BlobEventKind::Completed => {
                let sha = event.sha256.clone().unwrap_or_default();
                let waiting = r.value.completed(&sha, at);
                (true, waiting)
            }
            BlobEventKind::DownloadStarted
            | BlobEventKind::DownloadDone
            | BlobEventKind::DownloadBroken => {
                let state = match event.kind {
                    BlobEventKind::DownloadStarted => Download::Downloading,
                    BlobEventKind::DownloadDone => Download::Done,
                    _ => Download::Failed,
                };
                match &event.device_id {
                    Some(device) => {
                        r.value.downloads.insert(device.clone(), state);
                        (true, Vec::new())
                    }
                    None => return Ok(()),
                }
            }
        };
        save(&r).map_err(|_| Retry)?;
        if notify {
            updated(&r.value);
        }
        if !available.is_empty() {
            tell(&available, "file.available", &view(&r.value));
        }
        Ok(())
    }

    impl Service for Files {
        fn handle(request: Request) -> Response {
            handle(request).unwrap_or_else(|e| e)
        }

        fn on_blob(_user_id: String, event: BlobEvent) -> Result<(), String> {
            on_blob(event)
        }
    }

    plugin_sdk::export_service!(Files);
}
